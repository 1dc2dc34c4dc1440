//! The whole delivery on a real cluster (the current context of `KUBECONFIG`; settings in
//! `mall_e2e::cluster`): a fresh namespace; the operator chart installed into it and its `helm test`; the
//! minimal example applied with the image under test; Ready within a bounded time; the seed flow through
//! the gateway (register, log in, create a product as admin, add it to the cart, check out with
//! 4111 1111 1111 1111, see the order paid); a scale followed by status and back (its
//! PodDisruptionBudget comes and goes); a deleted child Deployment restored; the MallStack deleted and
//! every child collected (but the managed MySQL's Secret, kept with its volume); the release and the
//! namespace deleted.
//!
//! Without `KUBECONFIG` and `MALL_E2E_IMAGE`, or when the cluster does not answer, it says why and
//! passes (unless `MALL_E2E_REQUIRE=1`), so a plain `cargo test` costs nothing here.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, Resource, ResourceExt};
use mall_e2e::cluster::{Cluster, run, suffix, wait_for};
use mall_e2e::gateway::{Gateway, PortForward};
use mall_e2e::{manifests, repo_root, skip};
use mall_operator::MallStack;
use serde::de::DeserializeOwned;
use serde_json::json;

const RELEASE: &str = "mall-operator";
const STACK: &str = "shop";
const MANAGER: &str = "mall-e2e";
const GOOD_CARD: &str = "4111 1111 1111 1111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_on_a_real_cluster() {
    let cluster = match Cluster::from_env().await.expect("reading the e2e settings") {
        Ok(cluster) => cluster,
        Err(why) if Cluster::required() => panic!("MALL_E2E_REQUIRE=1 but the cluster cannot be used: {why}"),
        Err(why) => {
            skip("cluster end-to-end test", &why);
            return;
        }
    };
    let mut run = Run::new(&cluster);
    eprintln!(
        "e2e: context {} (Kubernetes {}), namespace {}, image {}:{}",
        cluster.context, cluster.version, run.ns, cluster.image_repository, cluster.image_tag
    );
    let result = run.steps().await;
    if let Err(e) = &result {
        eprintln!("e2e: FAILED at step «{}»: {e:#}", run.current);
        run.diagnostics();
    }
    let cleanup = if cluster.keep {
        eprintln!("e2e: MALL_E2E_KEEP=1: leaving namespace {} and release {RELEASE}", run.ns);
        Ok(())
    } else {
        run.cleanup().await
    };
    run.summary();
    if let Err(e) = result {
        panic!("the end-to-end run failed: {e:#}");
    }
    if let Err(e) = cleanup {
        panic!("the cleanup failed: {e:#}");
    }
}

struct Run<'a> {
    c: &'a Cluster,
    ns: String,
    started: Instant,
    step_started: Instant,
    current: String,
    timings: Vec<(String, Duration)>,
    pv: Option<(String, std::path::PathBuf)>,
}

impl<'a> Run<'a> {
    fn new(c: &'a Cluster) -> Run<'a> {
        Run {
            c,
            ns: format!("mall-e2e-{}", suffix()),
            started: Instant::now(),
            step_started: Instant::now(),
            current: "start".into(),
            timings: Vec::new(),
            pv: None,
        }
    }

    /// Ends the current step (recording its time) and starts the next.
    fn step(&mut self, name: &str) {
        self.finish_step();
        self.current = name.to_owned();
        self.step_started = Instant::now();
        eprintln!("e2e: [{:>6.1}s] {name}", self.started.elapsed().as_secs_f64());
    }

    fn finish_step(&mut self) {
        if self.current != "start" && self.current != "done" {
            self.timings.push((self.current.clone(), self.step_started.elapsed()));
        }
    }

    fn summary(&self) {
        eprintln!("e2e: step timings:");
        for (name, took) in &self.timings {
            eprintln!("e2e:   {:>7.1}s  {name}", took.as_secs_f64());
        }
        eprintln!("e2e:   {:>7.1}s  total", self.started.elapsed().as_secs_f64());
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.c.client.clone(), &self.ns)
    }

    fn stacks(&self) -> Api<MallStack> {
        self.api()
    }

    async fn steps(&mut self) -> Result<()> {
        self.step("create the namespace");
        self.c.create_namespace(&self.ns).await?;
        self.warn_about_other_operators().await;

        self.step(
            "the CRD: installed by helm, or applied server-side first when it exists (the upgrade path)",
        );
        self.crd_upgrade_path().await?;

        self.step("helm install the operator chart");
        self.helm_install()?;
        let crds: Api<CustomResourceDefinition> = Api::all(self.c.client.clone());
        let crd = crds.get(MallStack::crd_name()).await.context("the CRD after helm install")?;
        ensure!(
            crd.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True")),
            "the MallStack CRD is not Established"
        );

        self.step("helm test (the operator's /readyz through its metrics Service)");
        let mut test = self.c.helm()?;
        test.args(["test", RELEASE, "--namespace", &self.ns, "--timeout", "3m", "--logs"]);
        eprintln!("{}", run(test, "helm test")?.trim_end());

        self.step("apply the minimal example with the image under test");
        self.prepare_volume().await?;
        self.apply_example().await?;

        self.step("wait for the MallStack to be Ready");
        let ready = self.wait_ready(self.c.ready_timeout, None).await?;
        eprintln!("e2e: ready: {}", components(&ready));
        let status = ready.status.as_ref().unwrap();
        ensure!(status.ready_components.is_some(), "no readyComponents in the status");
        ensure!(
            status.condition("MigrationsComplete").is_some_and(|c| c.status == "True"),
            "MigrationsComplete is not True: {:?}",
            status.conditions
        );

        self.step("the seed flow through the gateway");
        self.seed_flow().await?;

        self.step("scale cart to 2: status follows, a PodDisruptionBudget appears");
        self.scale("cart", 2).await?;
        let pdbs: Api<PodDisruptionBudget> = self.api();
        let pdb = format!("{STACK}-cart");
        wait_for(Duration::from_secs(60), Duration::from_secs(1), || async {
            Ok(pdbs.get_opt(&pdb).await?.is_some())
        })
        .await
        .context("the PodDisruptionBudget of a 2-replica service")?;

        self.step("scale cart back to 1: status follows, the PodDisruptionBudget is pruned");
        self.scale("cart", 1).await?;
        wait_for(Duration::from_secs(60), Duration::from_secs(1), || async {
            Ok(pdbs.get_opt(&pdb).await?.is_none())
        })
        .await
        .context("the PodDisruptionBudget of a 1-replica service is deleted")?;

        self.step("delete a child Deployment: the operator restores it");
        self.delete_and_restore("product").await?;

        self.step("delete the MallStack: every child is garbage-collected");
        self.delete_stack().await?;
        self.finish_step();
        self.current = "done".into();
        Ok(())
    }

    async fn warn_about_other_operators(&self) {
        let deployments: Api<Deployment> = Api::all(self.c.client.clone());
        let params = ListParams::default().labels("app.kubernetes.io/name=mall-operator");
        if let Ok(list) = deployments.list(&params).await {
            for d in list.items {
                eprintln!(
                    "e2e: WARNING: another mall-operator runs in {}/{}; it reconciles this test's stack too",
                    d.namespace().unwrap_or_default(),
                    d.name_any()
                );
            }
        }
    }

    /// Helm installs `crds/` only when the CRD is absent and never upgrades it: when it exists, apply the
    /// chart's version server-side first, as the chart README tells users to before `helm upgrade`.
    async fn crd_upgrade_path(&self) -> Result<()> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.c.client.clone());
        let name = MallStack::crd_name();
        if crds.get_opt(name).await?.is_none() {
            eprintln!("e2e: {name} is absent: helm install creates it from the chart's crds/");
            return Ok(());
        }
        let path = repo_root().join("charts/mall-operator/crds/mallstack.yaml");
        let docs = manifests::read_documents(&path)?;
        let crd = docs.first().context("the chart's CRD file is empty")?;
        crds.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(crd))
            .await
            .context("server-side apply of the chart's CRD")?;
        eprintln!("e2e: {name} existed: applied the chart's version server-side");
        Ok(())
    }

    fn helm_install(&self) -> Result<()> {
        let chart = repo_root().join("charts/mall-operator");
        let mut install = self.c.helm()?;
        install
            .args(["install", RELEASE])
            .arg(&chart)
            .args(["--namespace", &self.ns, "--wait", "--timeout", "5m"])
            .args(["--set", &format!("image.repository={}", self.c.image_repository)])
            .args(["--set-string", &format!("image.tag={}", self.c.image_tag)])
            .args(["--set", "image.pullPolicy=IfNotPresent"])
            .args(["--set", "logLevel=info\\,mall_operator=debug"]);
        if let Some(image) = &self.c.test_image {
            install.args(["--set", &format!("test.image={image}")]);
        }
        let out = run(install, "helm install")?;
        eprintln!("{}", out.lines().take(6).collect::<Vec<_>>().join("\n"));
        Ok(())
    }

    /// Single-node clusters without a volume provisioner: a hostPath volume for the MySQL claim.
    async fn prepare_volume(&mut self) -> Result<()> {
        let Some(base) = &self.c.hostpath_pv_dir else { return Ok(()) };
        if self.c.database_url.is_some() {
            return Ok(());
        }
        let dir = std::path::Path::new(base).join(&self.ns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // MySQL runs as its own uid; a hostPath volume is not chowned to fsGroup.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let name = format!("{}-mysql", self.ns);
        let size = self.c.storage_size.clone().unwrap_or_else(|| "10Gi".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "mall-e2e"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": dir.to_string_lossy(), "type": "Directory"},
                "claimRef": {"namespace": self.ns, "name": format!("data-{STACK}-mysql-0")}
            }
        }))?;
        let pvs: Api<PersistentVolume> = Api::all(self.c.client.clone());
        pvs.create(&PostParams::default(), &pv).await.context("creating the hostPath PersistentVolume")?;
        eprintln!("e2e: hostPath PersistentVolume {name} at {}", dir.display());
        self.pv = Some((name, dir));
        Ok(())
    }

    async fn apply_example(&self) -> Result<()> {
        let docs = manifests::read_documents(&repo_root().join("examples/mallstack.yaml"))?;
        let mut stack = docs.into_iter().next().context("examples/mallstack.yaml is empty")?;
        ensure!(stack["metadata"]["name"] == STACK, "the minimal example names its stack {STACK}");
        let spec = &mut stack["spec"];
        spec["image"]["repository"] = json!(self.c.image_repository);
        spec["image"]["tag"] = json!(self.c.image_tag);
        spec["image"]["pullPolicy"] = json!("IfNotPresent");
        if let Some(url) = &self.c.database_url {
            let secret: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "mall-e2e-database"},
                "stringData": {"url": url}
            }))?;
            self.api::<Secret>().create(&PostParams::default(), &secret).await?;
            spec["database"] =
                json!({"external": {"secretRef": {"name": "mall-e2e-database", "key": "url"}}});
            eprintln!("e2e: MALL_E2E_DATABASE_URL: an external database instead of the managed MySQL");
        } else {
            if let Some(image) = &self.c.mysql_image {
                spec["database"]["managed"]["image"] = json!(image);
            }
            if let Some(size) = &self.c.storage_size {
                spec["database"]["managed"]["storageSize"] = json!(size);
            }
        }
        if let Some(image) = &self.c.redis_image {
            spec["redis"]["managed"]["image"] = json!(image);
        }
        // Parsed strictly first: what is applied is a valid MallStack.
        let typed: MallStack = manifests::strict(&stack)?;
        typed.spec.validate()?;
        self.stacks()
            .patch(STACK, &PatchParams::apply(MANAGER), &Patch::Apply(&stack))
            .await
            .context("applying the MallStack")?;
        Ok(())
    }

    /// Waits until the stack is Ready for its current generation (and `check` holds, if given).
    async fn wait_ready(
        &self,
        timeout: Duration,
        check: Option<&(dyn Fn(&MallStack) -> bool + Sync)>,
    ) -> Result<MallStack> {
        let deadline = Instant::now() + timeout;
        let mut last_seen = String::new();
        loop {
            let stack = self.stacks().get(STACK).await?;
            let seen = components(&stack);
            if seen != last_seen {
                eprintln!("e2e:   [{:>6.1}s] {seen}", self.started.elapsed().as_secs_f64());
                last_seen = seen;
            }
            let status = stack.status.as_ref();
            let ready = status.and_then(|s| s.condition("Ready")).is_some_and(|c| c.status == "True");
            let current = status.and_then(|s| s.observed_generation) == stack.metadata.generation;
            if ready && current && check.is_none_or(|f| f(&stack)) {
                return Ok(stack);
            }
            if Instant::now() > deadline {
                bail!(
                    "not Ready after {timeout:?}; status: {}",
                    serde_json::to_string_pretty(&stack.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn gateway(&self) -> Result<(Gateway, Option<PortForward>)> {
        if let Some(url) = &self.c.gateway_url {
            return Ok((Gateway::new(url.clone())?, None));
        }
        if self.c.gateway_by_pod_ip {
            let pods: Api<Pod> = self.api();
            let selector = format!("app.kubernetes.io/instance={STACK},app.kubernetes.io/component=gateway");
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let ip = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .find_map(|p| p.status.as_ref()?.pod_ip.clone())
                .context("no gateway pod with an IP")?;
            return Ok((Gateway::new(format!("http://{ip}:8889"))?, None));
        }
        let forward =
            PortForward::start(&self.c.kubectl_argv(), &self.ns, &format!("svc/{STACK}-gateway"), 8889)?;
        Ok((Gateway::new(forward.url())?, Some(forward)))
    }

    async fn seed_flow(&self) -> Result<()> {
        let (gw, _forward) = self.gateway().await?;
        eprintln!("e2e: gateway at {}", gw.url);
        gw.wait_ready(Duration::from_secs(60)).await?;

        let email = format!("e2e-{}@example.com", suffix());
        let password = "correct horse battery";
        gw.post(
            "/register",
            &json!({"email": email, "password": password, "confirm_password": password}),
            None,
        )
        .await?
        .expect(201, "register")?;
        let login = gw.post("/login", &json!({"email": email, "password": password}), None).await?;
        let token = login.expect(200, "login")?.data()["token"].as_str().context("a token")?.to_owned();

        let secrets: Api<Secret> = self.api();
        let admin_secret =
            secrets.get(&format!("{STACK}-admin")).await.context("the generated admin Secret")?;
        let admin_password = admin_secret
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .context("the admin Secret has no password")?;
        let admin_email = self.stacks().get(STACK).await?.spec.admin.email;
        let admin = gw
            .post("/login", &json!({"email": admin_email, "password": admin_password}), None)
            .await?
            .expect(200, "admin login")?;
        let admin_token = admin.data()["token"].as_str().context("an admin token")?.to_owned();

        let created = gw
            .post(
                "/product/create",
                &json!({"name": "E2E mug", "description": "Stoneware", "price": "12.50",
                        "categories": ["Kitchen"], "stock": 10}),
                Some(&admin_token),
            )
            .await?
            .expect(201, "create a product as admin")?;
        let product = created.data()["id"].as_i64().context("a product id")?;

        gw.post("/cart/additem", &json!({"product_id": product, "quantity": 2}), Some(&token))
            .await?
            .expect(200, "add to cart")?;
        let checkout = gw
            .post(
                "/checkout",
                &json!({
                    "firstname": "Ada", "lastname": "Lovelace", "email": email,
                    "address": {"street_address": "1 Main St", "city": "Springfield", "state": "OR",
                                "country": "US", "zip_code": "97477"},
                    "credit_card": {"credit_card_number": GOOD_CARD, "credit_card_cvv": "123",
                                    "credit_card_expiration_year": 2099, "credit_card_expiration_month": 12}
                }),
                Some(&token),
            )
            .await?
            .expect(200, "checkout")?;
        let order_id = checkout.data()["order_id"].as_str().context("an order id")?.to_owned();
        ensure!(checkout.data()["total_cents"] == 2500, "total: {}", checkout.body);

        let orders = gw.get("/orders", Some(&token)).await?.expect(200, "list orders")?;
        let order = orders.data()["items"]
            .as_array()
            .and_then(|items| items.iter().find(|o| o["order_id"] == order_id.as_str()))
            .with_context(|| format!("order {order_id} not listed: {}", orders.body))?;
        ensure!(order["status"] == "paid", "order {order_id} is {}", order["status"]);
        let stock = gw.get(&format!("/products/{product}"), None).await?.expect(200, "the product")?;
        ensure!(stock.data()["stock"] == 8, "stock after buying 2 of 10: {}", stock.body);
        eprintln!("e2e: order {order_id} paid (2 × 12.50); stock 10 → 8");
        Ok(())
    }

    /// Sets one service's replicas in the spec and waits for the status to report them all ready.
    async fn scale(&self, service: &str, replicas: i32) -> Result<()> {
        let patch = json!({"spec": {"services": {service: {"replicas": replicas}}}});
        self.stacks().patch(STACK, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let service = service.to_owned();
        let check = move |s: &MallStack| {
            s.status
                .as_ref()
                .and_then(|st| st.components.get(&service))
                .is_some_and(|c| c.desired == replicas && c.ready == replicas)
        };
        let stack = self.wait_ready(Duration::from_secs(180), Some(&check)).await?;
        let deployments: Api<Deployment> = self.api();
        let deployment = deployments.get(&format!("{STACK}-cart")).await?;
        let spec_replicas = deployment.spec.and_then(|s| s.replicas);
        ensure!(spec_replicas == Some(replicas), "Deployment replicas {spec_replicas:?}, wanted {replicas}");
        eprintln!("e2e: {}", components(&stack));
        Ok(())
    }

    async fn delete_and_restore(&self, component: &str) -> Result<()> {
        let deployments: Api<Deployment> = self.api();
        let name = format!("{STACK}-{component}");
        let old = deployments.get(&name).await?.metadata.uid;
        deployments.delete(&name, &DeleteParams::default()).await?;
        wait_for(Duration::from_secs(180), Duration::from_secs(1), || async {
            let Some(d) = deployments.get_opt(&name).await? else { return Ok(false) };
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok(d.metadata.uid != old && d.metadata.deletion_timestamp.is_none() && ready >= 1)
        })
        .await
        .with_context(|| format!("Deployment {name} restored and ready"))?;
        self.wait_ready(Duration::from_secs(120), None).await?;
        Ok(())
    }

    async fn delete_stack(&self) -> Result<()> {
        self.stacks().delete(STACK, &DeleteParams::default()).await?;
        let selector =
            format!("app.kubernetes.io/instance={STACK},app.kubernetes.io/managed-by=mall-operator");
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let mut left = BTreeMap::new();
            left.insert("MallStack", usize::from(self.stacks().get_opt(STACK).await?.is_some()));
            left.insert("Deployment", self.count::<Deployment>(&selector).await?);
            left.insert("StatefulSet", self.count::<StatefulSet>(&selector).await?);
            left.insert("Job", self.count::<Job>(&selector).await?);
            left.insert("Service", self.count::<Service>(&selector).await?);
            left.insert("ConfigMap", self.count::<ConfigMap>(&selector).await?);
            // The managed MySQL's Secret stays with its volume (retainOnDelete, the default).
            let kept = format!("{STACK}-mysql");
            let secrets = self.api::<Secret>().list(&ListParams::default().labels(&selector)).await?.items;
            let managed = self.c.database_url.is_none();
            let retained = secrets.iter().filter(|s| managed && s.name_any() == kept).count();
            left.insert("Secret", secrets.len() - retained);
            left.insert("PodDisruptionBudget", self.count::<PodDisruptionBudget>(&selector).await?);
            left.insert("HorizontalPodAutoscaler", self.count::<HorizontalPodAutoscaler>(&selector).await?);
            left.insert("NetworkPolicy", self.count::<NetworkPolicy>(&selector).await?);
            left.insert("Pod", self.count::<Pod>(&selector).await?);
            left.retain(|_, n| *n > 0);
            if left.is_empty() {
                ensure!(retained == usize::from(managed), "the Secret {kept} was kept with the MySQL volume");
                return Ok(());
            }
            let now = format!("{left:?}");
            if now != last {
                eprintln!("e2e:   [{:>6.1}s] left: {now}", self.started.elapsed().as_secs_f64());
                last = now;
            }
            if Instant::now() > deadline {
                bail!("children left 240 s after the MallStack was deleted: {last}");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn count<K>(&self, selector: &str) -> Result<usize>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        Ok(self.api::<K>().list(&ListParams::default().labels(selector)).await?.items.len())
    }

    /// What the cluster says, for a failed run.
    fn diagnostics(&self) {
        let ns = self.ns.as_str();
        let commands: Vec<Vec<&str>> = vec![
            vec!["get", "mallstacks,deployments,statefulsets,jobs,pods,services,pvc", "-n", ns, "-o", "wide"],
            vec!["describe", "mallstack", STACK, "-n", ns],
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            vec!["logs", "-n", ns, "deploy/mall-operator", "--tail=80"],
        ];
        for args in commands {
            let mut command = self.c.kubectl();
            command.args(&args);
            match command.output() {
                Ok(out) => eprintln!(
                    "e2e: $ kubectl {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("e2e: kubectl {}: {e}", args.join(" ")),
            }
        }
        // The last lines of every container that is not ready.
        let mut list = self.c.kubectl();
        list.args(["get", "pods", "-n", ns, "-o"]).arg(
            "jsonpath={range .items[*]}{.metadata.name}{' '}{.status.containerStatuses[*].ready}{'\\n'}{end}",
        );
        if let Ok(out) = list.output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut parts = line.split_whitespace();
                let (Some(pod), ready) = (parts.next(), parts.next()) else { continue };
                if ready == Some("true") {
                    continue;
                }
                let mut logs = self.c.kubectl();
                logs.args(["logs", "-n", ns, pod, "--all-containers", "--tail=30"]);
                if let Ok(out) = logs.output() {
                    eprintln!(
                        "e2e: $ kubectl logs {pod}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }

    async fn cleanup(&mut self) -> Result<()> {
        self.step("cleanup: helm uninstall, delete the namespace");
        let mut problems = Vec::new();
        match self.c.helm() {
            Ok(mut uninstall) => {
                uninstall.args(["uninstall", RELEASE, "--namespace", &self.ns, "--wait", "--timeout", "3m"]);
                if let Err(e) = run(uninstall, "helm uninstall") {
                    problems.push(format!("{e:#}"));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        if let Err(e) = self.c.delete_namespace(&self.ns, Duration::from_secs(300)).await {
            problems.push(format!("{e:#}"));
        }
        if let Some((name, dir)) = self.pv.take() {
            let pvs: Api<PersistentVolume> = Api::all(self.c.client.clone());
            if let Err(e) = pvs.delete(&name, &DeleteParams::default()).await {
                problems.push(format!("deleting PersistentVolume {name}: {e}"));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.finish_step();
        if !problems.is_empty() {
            bail!("cleanup: {}", problems.join("; "));
        }
        Ok(())
    }
}

/// `Ready=… readyComponents … {component: ready/desired}` for progress lines.
fn components(stack: &MallStack) -> String {
    let Some(status) = &stack.status else { return "no status yet".into() };
    let ready = status.condition("Ready").map_or("?".to_owned(), |c| format!("{} ({})", c.status, c.reason));
    let parts: Vec<String> =
        status.components.iter().map(|(name, c)| format!("{name} {}/{}", c.ready, c.desired)).collect();
    format!(
        "Ready={ready} components={} [{}]",
        status.ready_components.as_deref().unwrap_or("-"),
        parts.join(", ")
    )
}
