//! Fault drills on a real cluster (the current context of `KUBECONFIG`; settings in `mall_e2e::cluster`):
//! each drill breaks a MallStack the way clusters break them, waits at most 60 s for its `Degraded`
//! condition to name the cause, prints how `kubectl get mallstack -o wide` shows it, then repairs the
//! fault and waits for the stack to be Ready again, with no manual cleanup in between.
//!
//! 1. an image tag that does not exist (`ImagePullFailed`), then the right tag;
//! 2. a service whose configuration makes it exit at start: the user service's admin password too short
//!    (`CrashLoop`), then a long enough one;
//! 3. a ResourceQuota that forbids one more pod, then a scale-up (`QuotaExceeded`), then no quota;
//! 4. a storage class that does not exist (`VolumeProvisioningFailed`), then that class (a copy of the
//!    default one) or, with `MALL_E2E_HOSTPATH_PV_DIR`, a volume of that class;
//! 5. a wrong database password (`MigrationFailed`: `database refused the password for user …`), and
//! 6. a database that cannot be reached (`MigrationFailed`: `database unreachable at host:1 …`), both
//!    through an external database Secret at `MALL_E2E_DATABASE_URL`'s server, then the right URL.
//!
//! Drills whose prerequisites are missing say so and are skipped; without a cluster the whole test is
//! (unless `MALL_E2E_REQUIRE=1`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{PersistentVolume, Pod, ResourceQuota};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use mall_e2e::cluster::{Cluster, run, suffix, wait_for};
use mall_e2e::skip;
use mall_e2e::stacks::{
    apply, condition, current, example, host_of, hostpath_volume, install_operator, is_ready, kubectl_wide,
    put_secret, use_external_database, user_of, wait_until, with_password, with_port,
};
use mall_operator::MallStack;
use serde_json::{Value, json};

const RELEASE: &str = "mall-operator";
/// How soon a fault must be named on the stack.
const DEGRADED_WITHIN: Duration = Duration::from_secs(60);
const QUOTA: &str = "drill-pods";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drills() {
    let cluster = match Cluster::from_env().await.expect("reading the e2e settings") {
        Ok(cluster) => cluster,
        Err(why) if Cluster::required() => panic!("MALL_E2E_REQUIRE=1 but the cluster cannot be used: {why}"),
        Err(why) => {
            skip("fault drills", &why);
            return;
        }
    };
    let mut drills = Drills::new(&cluster);
    eprintln!(
        "drills: context {} (Kubernetes {}), namespace {}, image {}:{}",
        cluster.context, cluster.version, drills.ns, cluster.image_repository, cluster.image_tag
    );
    let setup = drills.setup().await;
    if let Err(e) = &setup {
        eprintln!("drills: setup failed: {e:#}");
    } else {
        drills.run_all().await;
    }
    let cleanup = if cluster.keep {
        eprintln!("drills: MALL_E2E_KEEP=1: leaving namespace {} and release {RELEASE}", drills.ns);
        Ok(())
    } else {
        drills.cleanup().await
    };
    let failed = drills.summary();
    setup.expect("the drills' namespace and operator");
    cleanup.expect("the drills' cleanup");
    assert!(failed.is_empty(), "drills failed: {}", failed.join(", "));
}

/// What a drill showed.
enum Outcome {
    Passed { degraded_after: Duration, message: String, wide: String, ready_after: Duration },
    Skipped(String),
}

struct Drills<'a> {
    c: &'a Cluster,
    ns: String,
    suffix: String,
    /// hostPath PersistentVolumes (name, directory) and StorageClasses made for the drills.
    volumes: Vec<(String, PathBuf)>,
    classes: Vec<String>,
    results: Vec<(&'static str, Result<Outcome>)>,
}

impl<'a> Drills<'a> {
    fn new(c: &'a Cluster) -> Drills<'a> {
        let suffix = suffix();
        Drills {
            c,
            ns: format!("mall-drills-{suffix}"),
            suffix,
            volumes: Vec::new(),
            classes: Vec::new(),
            results: Vec::new(),
        }
    }

    async fn setup(&self) -> Result<()> {
        self.c.create_namespace(&self.ns).await?;
        install_operator(self.c, &self.ns, RELEASE)
    }

    async fn run_all(&mut self) {
        let image = self.bad_image().await;
        let base_ready = matches!(image, Ok(Outcome::Passed { .. }));
        self.record("image tag that does not exist", image);
        if base_ready {
            let crash = self.exits_at_start().await;
            self.record("service that exits at start", crash);
            let quota = self.quota().await;
            self.record("quota that forbids one more pod", quota);
        } else {
            for drill in ["service that exits at start", "quota that forbids one more pod"] {
                self.record(drill, Ok(Outcome::Skipped("the drill stack never became Ready".into())));
            }
        }
        self.delete_stack("drill").await;
        let volume = self.missing_storage_class().await;
        self.record("storage class that does not exist", volume);
        let password = self.wrong_password().await;
        self.record("wrong database password", password);
        let unreachable = self.database_unreachable().await;
        self.record("database unreachable", unreachable);
    }

    fn record(&mut self, drill: &'static str, result: Result<Outcome>) {
        match &result {
            Ok(Outcome::Passed { message, .. }) => eprintln!("drills: PASSED {drill}: {message}"),
            Ok(Outcome::Skipped(why)) => eprintln!("drills: SKIPPED {drill}: {why}"),
            Err(e) => {
                eprintln!("drills: FAILED {drill}: {e:#}");
                self.diagnostics();
            }
        }
        self.results.push((drill, result));
    }

    /// The drills' results; the names of those that failed.
    fn summary(&self) -> Vec<&'static str> {
        eprintln!("drills: summary");
        let mut failed = Vec::new();
        for (drill, result) in &self.results {
            match result {
                Ok(Outcome::Passed { degraded_after, message, wide, ready_after }) => eprintln!(
                    "  {drill}: Degraded after {:.0}s, Ready again {:.0}s after the repair\n    {message}\n{}",
                    degraded_after.as_secs_f64(),
                    ready_after.as_secs_f64(),
                    wide.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
                ),
                Ok(Outcome::Skipped(why)) => eprintln!("  {drill}: skipped ({why})"),
                Err(e) => {
                    eprintln!("  {drill}: FAILED: {e:#}");
                    failed.push(*drill);
                }
            }
        }
        failed
    }

    /// Waits (at most 60 s) until stack `name`'s current status is Degraded for `reason` with a message
    /// holding each of `fragments`; prints its `kubectl get -o wide` view.
    async fn expect_degraded(
        &self,
        name: &str,
        reason: &str,
        fragments: &[String],
    ) -> Result<(Duration, String, String)> {
        let (stack, after) = wait_until(self.c, &self.ns, name, DEGRADED_WITHIN, |s| {
            current(s)
                && condition(s, "Degraded").is_some_and(|d| {
                    d.status == "True"
                        && d.reason == reason
                        && fragments.iter().all(|f| d.message.contains(f.as_str()))
                })
        })
        .await
        .with_context(|| format!("Degraded {reason} with {fragments:?}"))?;
        let message =
            condition(&stack, "Degraded").map(|d| format!("{}: {}", d.reason, d.message)).unwrap_or_default();
        let wide = kubectl_wide(self.c, &self.ns, name)?;
        eprintln!("drills: {name} after {:.0}s:\n{wide}\n  {message}", after.as_secs_f64());
        Ok((after, message, wide))
    }

    /// Waits until stack `name` is Ready again (and `also` holds).
    async fn expect_ready(&self, name: &str, also: impl Fn(&MallStack) -> bool) -> Result<Duration> {
        let (_, after) = wait_until(self.c, &self.ns, name, self.c.ready_timeout, |s| is_ready(s) && also(s))
            .await
            .context("Ready again after the repair")?;
        Ok(after)
    }

    /// The example as stack `name`, with the e2e database: external at `MALL_E2E_DATABASE_URL`, or
    /// managed (on a hostPath volume when `MALL_E2E_HOSTPATH_PV_DIR` says there is no provisioner).
    async fn stack(&mut self, name: &str) -> Result<Value> {
        let mut stack = example(self.c, name)?;
        if let Some(url) = &self.c.database_url {
            use_external_database(self.c, &self.ns, &mut stack, url).await?;
        } else if let Some(base) = &self.c.hostpath_pv_dir {
            let claim = format!("data-{name}-mysql-0");
            self.volumes.push(hostpath_volume(self.c, base, &self.ns, &claim, "").await?);
        }
        Ok(stack)
    }

    async fn bad_image(&mut self) -> Result<Outcome> {
        let mut stack = self.stack("drill").await?;
        let bad = format!("{}-no-such-tag", self.c.image_tag);
        stack["spec"]["image"]["tag"] = json!(bad);
        apply(self.c, &self.ns, &stack).await?;
        let image = format!("{}:{bad}", self.c.image_repository);
        let (degraded_after, message, wide) = self
            .expect_degraded("drill", "ImagePullFailed", &[format!("image {image} cannot be pulled (")])
            .await?;

        stack["spec"]["image"]["tag"] = json!(self.c.image_tag);
        apply(self.c, &self.ns, &stack).await?;
        let ready_after = self.expect_ready("drill", |_| true).await?;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    /// The user service seeds the admin with the configured password, and refuses one under 8
    /// characters: it exits at start.
    async fn exits_at_start(&mut self) -> Result<Outcome> {
        // A Secret of another name: the pod template changes, so the user service rolls out (a new
        // value in the same Secret would reach a pod only at its next restart).
        let short = "drill-admin-short";
        put_secret(self.c, &self.ns, short, "password", "short").await?;
        let mut stack = self.current_spec("drill").await?;
        stack["spec"]["admin"]["passwordSecretRef"] = json!({"name": short, "key": "password"});
        apply(self.c, &self.ns, &stack).await?;
        let (degraded_after, message, wide) = self
            .expect_degraded(
                "drill",
                "CrashLoop",
                &["user: exits at start (exit code 1): password must be at least 8 characters".into()],
            )
            .await?;

        // The repair: back to a good password, which rolls the crash-looping pod away.
        stack["spec"]["admin"]["passwordSecretRef"] = json!({"name": "drill-admin", "key": "password"});
        apply(self.c, &self.ns, &stack).await?;
        let ready_after = self.expect_ready("drill", |_| true).await?;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    async fn quota(&mut self) -> Result<Outcome> {
        let pods: Api<Pod> = Api::namespaced(self.c.client.clone(), &self.ns);
        let running = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
            })
            .count();
        let quotas: Api<ResourceQuota> = Api::namespaced(self.c.client.clone(), &self.ns);
        let quota: ResourceQuota = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA},
            "spec": {"hard": {"pods": running.to_string()}},
        }))?;
        quotas.create(&PostParams::default(), &quota).await.context("creating the ResourceQuota")?;
        // Until the quota controller has counted, admission refuses every pod for another reason.
        wait_for(Duration::from_secs(60), Duration::from_secs(1), || async {
            let quota = quotas.get(QUOTA).await?;
            Ok(quota.status.and_then(|s| s.used).is_some_and(|used| used.contains_key("pods")))
        })
        .await
        .context("the ResourceQuota counted")?;
        eprintln!("drills: ResourceQuota {QUOTA}: pods={running}");

        let mut stack = self.current_spec("drill").await?;
        stack["spec"]["services"]["cart"]["replicas"] = json!(2);
        apply(self.c, &self.ns, &stack).await?;
        let (degraded_after, message, wide) = self
            .expect_degraded(
                "drill",
                "QuotaExceeded",
                &[format!("cart: cannot create a pod: exceeded quota: {QUOTA}")],
            )
            .await?;

        quotas.delete(QUOTA, &DeleteParams::default()).await.context("deleting the ResourceQuota")?;
        let cart_scaled = |s: &MallStack| {
            s.status
                .as_ref()
                .and_then(|st| st.components.get("cart"))
                .is_some_and(|c| c.ready == 2 && c.desired == 2)
        };
        let ready_after = self.expect_ready("drill", cart_scaled).await?;
        stack["spec"]["services"]["cart"]["replicas"] = json!(1);
        apply(self.c, &self.ns, &stack).await?;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    async fn missing_storage_class(&mut self) -> Result<Outcome> {
        let classes: Api<StorageClass> = Api::all(self.c.client.clone());
        let default = classes.list(&ListParams::default()).await?.items.into_iter().find(|sc| {
            sc.annotations().get("storageclass.kubernetes.io/is-default-class").is_some_and(|v| v == "true")
        });
        if default.is_none() && self.c.hostpath_pv_dir.is_none() {
            return Ok(Outcome::Skipped(
                "no default StorageClass to copy and no MALL_E2E_HOSTPATH_PV_DIR: the fault could not be repaired"
                    .into(),
            ));
        }
        let name = "drill-volume";
        let class = format!("mall-e2e-missing-{}", self.suffix);
        let mut stack = example(self.c, name)?;
        stack["spec"]["database"]["managed"]["storageClassName"] = json!(class);
        apply(self.c, &self.ns, &stack).await?;
        let claim = format!("data-{name}-mysql-0");
        let (degraded_after, message, wide) = self
            .expect_degraded(
                name,
                "VolumeProvisioningFailed",
                &[format!(
                    "mysql: volume claim {claim} cannot be provisioned: storageclass.storage.k8s.io \"{class}\" not found"
                )],
            )
            .await?;

        match default {
            Some(default) => {
                let copy = StorageClass {
                    metadata: kube::api::ObjectMeta {
                        name: Some(class.clone()),
                        labels: Some(
                            [("app.kubernetes.io/part-of".to_owned(), "mall-e2e".to_owned())].into(),
                        ),
                        ..Default::default()
                    },
                    provisioner: default.provisioner.clone(),
                    parameters: default.parameters.clone(),
                    reclaim_policy: Some("Delete".into()),
                    volume_binding_mode: default.volume_binding_mode.clone(),
                    allow_volume_expansion: default.allow_volume_expansion,
                    mount_options: default.mount_options.clone(),
                    allowed_topologies: default.allowed_topologies.clone(),
                };
                classes.create(&PostParams::default(), &copy).await.context("creating the StorageClass")?;
                self.classes.push(class.clone());
                eprintln!("drills: created StorageClass {class} (a copy of {})", default.name_any());
            }
            None => {
                let base = self.c.hostpath_pv_dir.clone().unwrap_or_default();
                self.volumes.push(hostpath_volume(self.c, &base, &self.ns, &claim, &class).await?);
                eprintln!("drills: created a hostPath volume of class {class}");
            }
        }
        let ready_after = self.expect_ready(name, |_| true).await?;
        self.delete_stack(name).await;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    async fn wrong_password(&mut self) -> Result<Outcome> {
        let Some(url) = self.c.database_url.clone() else {
            return Ok(Outcome::Skipped("needs MALL_E2E_DATABASE_URL (a MySQL server pods reach)".into()));
        };
        let Some(user) = user_of(&url) else {
            return Ok(Outcome::Skipped("MALL_E2E_DATABASE_URL names no user".into()));
        };
        let name = "drill-db-password";
        let mut stack = example(self.c, name)?;
        let wrong = with_password(&url, &format!("wrong-{}", self.suffix))?;
        use_external_database(self.c, &self.ns, &mut stack, &wrong).await?;
        apply(self.c, &self.ns, &stack).await?;
        let (degraded_after, message, wide) = self
            .expect_degraded(
                name,
                "MigrationFailed",
                &[format!("database refused the password for user {user}")],
            )
            .await?;

        put_secret(self.c, &self.ns, &format!("{name}-database"), "url", &url).await?;
        let ready_after = self.expect_ready(name, |_| true).await?;
        self.delete_stack(name).await;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    async fn database_unreachable(&mut self) -> Result<Outcome> {
        let Some(url) = self.c.database_url.clone() else {
            return Ok(Outcome::Skipped("needs MALL_E2E_DATABASE_URL (a MySQL server pods reach)".into()));
        };
        let host = host_of(&url).context("MALL_E2E_DATABASE_URL names no host")?;
        let name = "drill-db-down";
        let mut stack = example(self.c, name)?;
        // Port 1: nothing listens there (a firewall that drops instead makes it "no answer").
        use_external_database(self.c, &self.ns, &mut stack, &with_port(&url, 1)?).await?;
        apply(self.c, &self.ns, &stack).await?;
        let (degraded_after, message, wide) = self
            .expect_degraded(name, "MigrationFailed", &[format!("database unreachable at {host}:1 (")])
            .await?;

        put_secret(self.c, &self.ns, &format!("{name}-database"), "url", &url).await?;
        let ready_after = self.expect_ready(name, |_| true).await?;
        self.delete_stack(name).await;
        Ok(Outcome::Passed { degraded_after, message, wide, ready_after })
    }

    /// Stack `name` as last applied by the drills (its spec only, for a server-side apply).
    async fn current_spec(&self, name: &str) -> Result<Value> {
        let stacks: Api<MallStack> = Api::namespaced(self.c.client.clone(), &self.ns);
        let stack = stacks.get(name).await?;
        Ok(json!({
            "apiVersion": "mall.example.com/v1alpha1",
            "kind": "MallStack",
            "metadata": {"name": name},
            "spec": serde_json::to_value(&stack.spec)?,
        }))
    }

    /// Deletes stack `name` (its children go with it); a failure is only reported.
    async fn delete_stack(&self, name: &str) {
        let stacks: Api<MallStack> = Api::namespaced(self.c.client.clone(), &self.ns);
        if let Err(e) = stacks.delete(name, &DeleteParams::default()).await {
            eprintln!("drills: deleting MallStack {name}: {e}");
        }
    }

    /// What the cluster says, after a drill failed.
    fn diagnostics(&self) {
        let ns = self.ns.as_str();
        for args in [
            vec!["get", "mallstacks,deployments,statefulsets,jobs,pods,pvc", "-n", ns, "-o", "wide"],
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            vec!["logs", "-n", ns, "deploy/mall-operator", "--tail=40"],
        ] {
            let mut command = self.c.kubectl();
            command.args(&args);
            match run(command, "kubectl") {
                Ok(out) => eprintln!("drills: $ kubectl {}\n{out}", args.join(" ")),
                Err(e) => eprintln!("drills: kubectl {}: {e:#}", args.join(" ")),
            }
        }
    }

    async fn cleanup(&mut self) -> Result<()> {
        let mut problems = self.c.uninstall(RELEASE, &self.ns).await;
        let classes: Api<StorageClass> = Api::all(self.c.client.clone());
        for class in self.classes.drain(..) {
            if let Err(e) = classes.delete(&class, &DeleteParams::default()).await {
                problems.push(format!("deleting StorageClass {class}: {e}"));
            }
        }
        let pvs: Api<PersistentVolume> = Api::all(self.c.client.clone());
        for (name, dir) in self.volumes.drain(..) {
            if let Err(e) = pvs.delete(&name, &DeleteParams::default()).await {
                problems.push(format!("deleting PersistentVolume {name}: {e}"));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        if !problems.is_empty() {
            bail!("cleanup: {}", problems.join("; "));
        }
        Ok(())
    }
}

#[test]
fn drills_break_stacks_the_schema_accepts() {
    // The faults are in the cluster, never in the manifest: every stack a drill applies is valid.
    let stack: MallStack = serde_json::from_value(json!({
        "apiVersion": "mall.example.com/v1alpha1", "kind": "MallStack",
        "metadata": {"name": "drill-volume"},
        "spec": {
            "image": {"repository": "lab.local/mall", "tag": "0.1.0-no-such-tag"},
            "database": {"managed": {"storageClassName": "mall-e2e-missing-abc123"}},
            "redis": {"managed": {}},
            "admin": {"passwordSecretRef": {"name": "drill-admin", "key": "password"}},
        }
    }))
    .unwrap();
    stack.spec.validate().unwrap();
    kube::core::cel::validate_cel(&stack).unwrap();
}
