//! One end-to-end run on a real cluster: a fresh namespace with the operator chart installed into it, a
//! MallStack named [`STACK`] applied there, timed steps, the cluster's own account of a failure, and the
//! cleanup. The tests in `tests/` drive it; what they do in between is theirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, Resource, ResourceExt};
use mall_operator::MallStack;
use serde_json::{Value, json};

use crate::cluster::{Cluster, run, suffix};
use crate::gateway::{Gateway, PortForward};
use crate::{manifests, repo_root};

/// The operator's Helm release in the test namespace.
pub const RELEASE: &str = "mall-operator";
/// The MallStack's name: its children are `shop-<component>`.
pub const STACK: &str = "shop";
/// The field manager of what the tests apply.
pub const MANAGER: &str = "mall-e2e";
/// The mall's own components (each a Deployment `shop-<component>`), gateway first.
pub const COMPONENTS: [&str; 8] =
    ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"];

pub struct Run<'a> {
    pub c: &'a Cluster,
    pub ns: String,
    started: Instant,
    step_started: Instant,
    current: String,
    timings: Vec<(String, Duration)>,
    pv: Option<(String, std::path::PathBuf)>,
}

impl<'a> Run<'a> {
    /// A run in a new namespace `<prefix>-<random>` (created by [`Run::create_namespace`]).
    pub fn new(c: &'a Cluster, prefix: &str) -> Run<'a> {
        let run = Run {
            c,
            ns: format!("{prefix}-{}", suffix()),
            started: Instant::now(),
            step_started: Instant::now(),
            current: "start".into(),
            timings: Vec::new(),
            pv: None,
        };
        eprintln!(
            "e2e: context {} (Kubernetes {}), namespace {}, image {}:{}",
            c.context, c.version, run.ns, c.image_repository, c.image_tag
        );
        run
    }

    /// Seconds since the run started, for progress lines.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the current step (recording its time) and starts the next.
    pub fn step(&mut self, name: &str) {
        self.finish_step();
        self.current = name.to_owned();
        self.step_started = Instant::now();
        eprintln!("e2e: [{:>6.1}s] {name}", self.elapsed());
    }

    fn finish_step(&mut self) {
        if self.current != "start" && self.current != "done" {
            self.timings.push((self.current.clone(), self.step_started.elapsed()));
        }
    }

    /// Marks the steps as all done (the summary then has no step running).
    pub fn done(&mut self) {
        self.finish_step();
        self.current = "done".into();
    }

    fn summary(&self) {
        eprintln!("e2e: step timings:");
        for (name, took) in &self.timings {
            eprintln!("e2e:   {:>7.1}s  {name}", took.as_secs_f64());
        }
        eprintln!("e2e:   {:>7.1}s  total", self.elapsed());
    }

    /// Reports `result`, shows the cluster's state if it failed, cleans up (unless `MALL_E2E_KEEP=1`),
    /// and panics if either failed.
    pub async fn finish(mut self, result: Result<()>) {
        if let Err(e) = &result {
            eprintln!("e2e: FAILED at step «{}»: {e:#}", self.current);
            self.diagnostics();
        }
        let cleanup = if self.c.keep {
            eprintln!("e2e: MALL_E2E_KEEP=1: leaving namespace {} and release {RELEASE}", self.ns);
            Ok(())
        } else {
            self.cleanup().await
        };
        self.summary();
        if let Err(e) = result {
            panic!("the end-to-end run failed: {e:#}");
        }
        if let Err(e) = cleanup {
            panic!("the cleanup failed: {e:#}");
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.c.client.clone(), &self.ns)
    }

    pub fn stacks(&self) -> Api<MallStack> {
        self.api()
    }

    /// Creates the run's namespace, and warns about operators elsewhere that would reconcile it too.
    pub async fn create_namespace(&self) -> Result<()> {
        self.c.create_namespace(&self.ns).await?;
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
        Ok(())
    }

    /// Helm installs `crds/` only when the CRD is absent and never upgrades it: when it exists, apply the
    /// chart's version server-side first, as the chart README tells users to before `helm upgrade`.
    pub async fn crd_upgrade_path(&self) -> Result<()> {
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

    /// `helm install` of the operator chart with the image under test, then a check that the CRD is
    /// Established.
    pub async fn helm_install(&self) -> Result<()> {
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
        let crds: Api<CustomResourceDefinition> = Api::all(self.c.client.clone());
        let crd = crds.get(MallStack::crd_name()).await.context("the CRD after helm install")?;
        ensure!(
            crd.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True")),
            "the MallStack CRD is not Established"
        );
        Ok(())
    }

    /// `helm upgrade` of the operator to the image tag `tag`, every other value as installed.
    pub async fn helm_upgrade_operator(&self, tag: &str) -> Result<()> {
        let chart = repo_root().join("charts/mall-operator");
        let mut upgrade = self.c.helm()?;
        upgrade
            .args(["upgrade", RELEASE])
            .arg(&chart)
            .args(["--namespace", &self.ns, "--reuse-values", "--wait", "--timeout", "5m"])
            .args(["--set-string", &format!("image.tag={tag}")]);
        run(upgrade, "helm upgrade")?;
        Ok(())
    }

    /// Single-node clusters without a volume provisioner (`MALL_E2E_HOSTPATH_PV_DIR`): a hostPath volume
    /// for the MySQL claim of `stack`. Nothing to do otherwise, or when its database is external.
    pub async fn prepare_volume(&mut self, stack: &Value) -> Result<()> {
        let Some(base) = &self.c.hostpath_pv_dir else { return Ok(()) };
        if stack["spec"]["database"]["managed"].is_null() {
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

    /// The minimal example with the image under test and the MySQL and Redis settings of the
    /// environment. With `MALL_E2E_DATABASE_URL` and `allow_external`, the database becomes `external`
    /// (its Secret is created here); without `allow_external` that setting is ignored, with a note.
    pub async fn example_stack(&self, allow_external: bool) -> Result<Value> {
        let docs = manifests::read_documents(&repo_root().join("examples/mallstack.yaml"))?;
        let mut stack = docs.into_iter().next().context("examples/mallstack.yaml is empty")?;
        ensure!(stack["metadata"]["name"] == STACK, "the minimal example names its stack {STACK}");
        let spec = &mut stack["spec"];
        spec["image"]["repository"] = json!(self.c.image_repository);
        spec["image"]["tag"] = json!(self.c.image_tag);
        spec["image"]["pullPolicy"] = json!("IfNotPresent");
        match &self.c.database_url {
            Some(url) if allow_external => {
                let secret: Secret = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "mall-e2e-database"},
                    "stringData": {"url": url}
                }))?;
                self.api::<Secret>().create(&PostParams::default(), &secret).await?;
                spec["database"] =
                    json!({"external": {"secretRef": {"name": "mall-e2e-database", "key": "url"}}});
                eprintln!("e2e: MALL_E2E_DATABASE_URL: an external database instead of the managed MySQL");
            }
            url => {
                if url.is_some() {
                    eprintln!("e2e: MALL_E2E_DATABASE_URL is ignored here: this test runs the managed MySQL");
                }
                if let Some(image) = &self.c.mysql_image {
                    spec["database"]["managed"]["image"] = json!(image);
                }
                if let Some(size) = &self.c.storage_size {
                    spec["database"]["managed"]["storageSize"] = json!(size);
                }
            }
        }
        if let Some(image) = &self.c.redis_image {
            spec["redis"]["managed"]["image"] = json!(image);
        }
        Ok(stack)
    }

    /// Server-side applies `stack` after parsing it strictly (no unknown field) and validating it.
    pub async fn apply_stack(&self, stack: &Value) -> Result<()> {
        let typed: MallStack = manifests::strict(stack)?;
        typed.spec.validate()?;
        self.stacks()
            .patch(STACK, &PatchParams::apply(MANAGER), &Patch::Apply(stack))
            .await
            .context("applying the MallStack")?;
        Ok(())
    }

    /// Merge-patches the stack's spec.
    pub async fn patch_spec(&self, spec: Value) -> Result<MallStack> {
        let patch = json!({ "spec": spec });
        let stack = self.stacks().patch(STACK, &manager(), &Patch::Merge(&patch)).await;
        stack.context("patching the MallStack")
    }

    /// Waits until the stack is Ready for its current generation (and `check` holds, if given).
    pub async fn wait_ready(
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
                eprintln!("e2e:   [{:>6.1}s] {seen}", self.elapsed());
                last_seen = seen;
            }
            if is_ready(&stack) && check.is_none_or(|f| f(&stack)) {
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

    /// The gateway as the environment says to reach it: `MALL_E2E_GATEWAY_URL`, a pod IP
    /// (`MALL_E2E_GATEWAY=pod-ip`), else `kubectl port-forward` to its Service (kept alive by the
    /// returned guard). A port-forward pins one pod: not for a test that replaces the gateway's pods.
    pub async fn gateway(&self) -> Result<(Gateway, Option<PortForward>)> {
        if let Some(url) = &self.c.gateway_url {
            return Ok((Gateway::new(url.clone())?, None));
        }
        if self.c.gateway_by_pod_ip {
            let list = self.api::<Pod>().list(&ListParams::default().labels(&selector("gateway"))).await?;
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

    /// A new customer with `quantity` of a new product (made by the admin, `stock` in stock, at
    /// `price`) in the cart: (email, token, product id).
    pub async fn shopper_with_cart(
        &self,
        gw: &Gateway,
        product: &str,
        price: &str,
        stock: i64,
        quantity: i64,
    ) -> Result<(String, String, i64)> {
        let email = format!("e2e-{}@example.com", crate::cluster::suffix());
        let password = "correct horse battery";
        gw.register(&email, password).await?;
        let token = gw.login(&email, password).await?;
        let admin_email = self.stacks().get(STACK).await?.spec.admin.email;
        let admin_token = gw.login(&admin_email, &self.admin_password().await?).await?;
        let product = gw.create_product(&admin_token, product, price, stock).await?;
        gw.post("/cart/additem", &json!({"product_id": product, "quantity": quantity}), Some(&token))
            .await?
            .expect(200, "add to cart")?;
        Ok((email, token, product))
    }

    /// The admin's password, from the Secret the operator generated.
    pub async fn admin_password(&self) -> Result<String> {
        let secret = self.api::<Secret>().get(&format!("{STACK}-admin")).await.context("the admin Secret")?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .context("the admin Secret has no password")
    }

    /// Fails when another Service of the cluster holds `port` as a nodePort: the stack's gateway
    /// Service could not be created, and the run would only time out.
    pub async fn check_node_port_free(&self, port: i32) -> Result<()> {
        let services: Api<Service> = Api::all(self.c.client.clone());
        for service in services.list(&ListParams::default()).await?.items {
            let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
            if ports.is_some_and(|ps| ps.iter().any(|p| p.node_port == Some(port))) {
                bail!(
                    "nodePort {port} is taken by Service {}/{}: set MALL_E2E_NODE_PORT to a free port, or auto",
                    service.namespace().unwrap_or_default(),
                    service.name_any()
                );
            }
        }
        Ok(())
    }

    /// The nodePort the gateway's Service has (fixed in the spec or assigned by the API server).
    pub async fn gateway_node_port(&self) -> Result<i32> {
        let service = self.api::<Service>().get(&format!("{STACK}-gateway")).await?;
        service
            .spec
            .and_then(|s| s.ports)
            .and_then(|ports| ports.into_iter().find_map(|p| p.node_port))
            .context("the gateway Service has no nodePort (is its type NodePort?)")
    }

    /// What the migration Jobs report: one line per Job, and every sign that one of them did not get
    /// through on its first try (a failed pod, a restarted container, a `MigrationRetry` event: the
    /// operator deletes a failed Job, so only the event is left of it).
    pub async fn migration_report(&self) -> Result<MigrationReport> {
        let mut report = MigrationReport::default();
        let jobs = self.api::<Job>().list(&ListParams::default().labels(&selector("migrate"))).await?;
        for job in &jobs.items {
            let status = job.status.clone().unwrap_or_default();
            let took = match (&status.start_time, &status.completion_time) {
                (Some(start), Some(end)) => {
                    format!("{:.0} s", end.0.duration_since(start.0).as_secs_f64())
                }
                _ => "not complete".into(),
            };
            report.jobs.push(format!(
                "{} succeeded={} failed={} ({took})",
                job.name_any(),
                status.succeeded.unwrap_or(0),
                status.failed.unwrap_or(0)
            ));
            if status.succeeded.unwrap_or(0) == 0 {
                report.problems.push(format!("Job {} has not succeeded", job.name_any()));
            }
            if status.failed.unwrap_or(0) > 0 {
                report.problems.push(format!(
                    "Job {} has {} failed pods",
                    job.name_any(),
                    status.failed.unwrap_or(0)
                ));
            }
        }
        let pods = self.api::<Pod>().list(&ListParams::default().labels(&selector("migrate"))).await?;
        for pod in &pods.items {
            let status = pod.status.clone().unwrap_or_default();
            let containers = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            let restarts: i32 = containers.map(|c| c.restart_count).sum();
            if restarts > 0 {
                report.problems.push(format!("pod {} restarted {restarts} times", pod.name_any()));
            }
            if status.phase.as_deref() == Some("Failed") {
                report.problems.push(format!("pod {} failed", pod.name_any()));
            }
        }
        let events = self.api::<Event>().list(&ListParams::default()).await?;
        for event in events.items.iter().filter(|e| e.reason.as_deref() == Some("MigrationRetry")) {
            report.problems.push(format!("event MigrationRetry: {}", event.note.as_deref().unwrap_or("")));
        }
        Ok(report)
    }

    /// What the cluster says, for a failed run.
    pub fn diagnostics(&self) {
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
        let mut problems = self.c.uninstall(RELEASE, &self.ns).await;
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

    /// Waits (at most `timeout`) until nothing is moving: the stack is Ready for its generation, every
    /// Deployment of it has rolled out completely (its generation observed, every replica updated and
    /// available, no old one left), no pod of it is terminating, and `check` holds. What is still
    /// moving is printed whenever it changes.
    pub async fn wait_settled(
        &self,
        timeout: Duration,
        check: &(dyn Fn(&Settled) -> Option<String> + Sync),
    ) -> Result<()> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let moving = match self.observe().await {
                Ok(state) => {
                    let mut moving = state.moving();
                    moving.extend(check(&state));
                    moving
                }
                Err(e) => vec![format!("cannot observe the stack: {e:#}")],
            };
            if moving.is_empty() {
                return Ok(());
            }
            let now = moving.join("; ");
            if now != last {
                eprintln!("e2e:   [{:>6.1}s] waiting: {now}", started.elapsed().as_secs_f64());
                last = now;
            }
            if started.elapsed() >= timeout {
                bail!("not settled after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The stack, its Deployments and its pods, as they are now.
    pub async fn observe(&self) -> Result<Settled> {
        let instance = format!("app.kubernetes.io/instance={STACK}");
        let stack = self.stacks().get(STACK).await?;
        let deployments =
            self.api::<Deployment>().list(&ListParams::default().labels(&instance)).await?.items;
        let pods = self.api::<Pod>().list(&ListParams::default().labels(&instance)).await?.items;
        Ok(Settled { stack, deployments, pods })
    }
}

/// The labels of one component's children.
pub fn selector(component: &str) -> String {
    format!("app.kubernetes.io/instance={STACK},app.kubernetes.io/component={component}")
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Patch parameters naming the tests' field manager (for merge and strategic patches).
pub fn manager() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.to_owned()), ..PatchParams::default() }
}

/// Whether the stack is Ready for its current generation.
pub fn is_ready(stack: &MallStack) -> bool {
    let status = stack.status.as_ref();
    let ready = status.and_then(|s| s.condition("Ready")).is_some_and(|c| c.status == "True");
    ready && status.and_then(|s| s.observed_generation) == stack.metadata.generation
}

/// `Ready=… readyComponents … {component: ready/desired}` for progress lines.
pub fn components(stack: &MallStack) -> String {
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

/// Migration Jobs as [`Run::migration_report`] found them.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// One line per Job: name, succeeded and failed pods, how long it ran.
    pub jobs: Vec<String>,
    /// Every sign of a retry; empty when each migration got through on its first try.
    pub problems: Vec<String>,
}

/// One look at a stack and its workloads, for [`Run::wait_settled`].
pub struct Settled {
    pub stack: MallStack,
    pub deployments: Vec<Deployment>,
    pub pods: Vec<Pod>,
}

impl Settled {
    /// What is still moving; empty when nothing is.
    pub fn moving(&self) -> Vec<String> {
        let mut moving = Vec::new();
        if !is_ready(&self.stack) {
            moving.push(format!("stack {}", components(&self.stack)));
        }
        for d in &self.deployments {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = d.status.clone().unwrap_or_default();
            let observed = status.observed_generation >= d.metadata.generation;
            let complete = status.updated_replicas.unwrap_or(0) == want
                && status.available_replicas.unwrap_or(0) == want
                && status.ready_replicas.unwrap_or(0) == want
                && status.replicas.unwrap_or(0) == want;
            if !observed || !complete {
                moving.push(format!(
                    "{} updated/available/total {}/{}/{} of {want}",
                    d.name_any(),
                    status.updated_replicas.unwrap_or(0),
                    status.available_replicas.unwrap_or(0),
                    status.replicas.unwrap_or(0)
                ));
            }
        }
        let terminating: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .map(|p| p.name_any())
            .collect();
        if !terminating.is_empty() {
            moving.push(format!("terminating: {}", terminating.join(", ")));
        }
        // A Deployment's status can lag its pods by a moment; the pods themselves say it first.
        let unready: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.labels().get("app.kubernetes.io/component").is_none_or(|c| c != "migrate"))
            .filter(|p| !pod_ready(p))
            .map(|p| p.name_any())
            .collect();
        if !unready.is_empty() {
            moving.push(format!("not ready: {}", unready.join(", ")));
        }
        moving
    }

    /// The image of each of the mall's Deployments, by component.
    pub fn images(&self) -> BTreeMap<String, String> {
        self.deployments
            .iter()
            .filter_map(|d| {
                let component = d.labels().get("app.kubernetes.io/component")?.clone();
                let image = d.spec.as_ref()?.template.spec.as_ref()?.containers.first()?.image.clone()?;
                COMPONENTS.contains(&component.as_str()).then_some((component, image))
            })
            .collect()
    }
}
