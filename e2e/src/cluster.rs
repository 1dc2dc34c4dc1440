//! A real cluster for the end-to-end test: the current context of `KUBECONFIG`, pinned by name at the
//! start so that every API call, `helm` and `kubectl` run talk to that context and no other.
//!
//! Settings (environment):
//! - `KUBECONFIG` — required; unset: the test is skipped.
//! - `MALL_E2E_IMAGE` — the Mall image to run, `repository:tag` (required; unset: skipped, so that a
//!   developer's kubeconfig is never used by a plain `cargo test`).
//! - `MALL_E2E_REQUIRE=1` — fail instead of skipping when the cluster cannot be used (CI with a cluster).
//! - `MALL_E2E_TEST_IMAGE` — the `helm test` Pod's image (default: the chart's `busybox:1.36`).
//! - `MALL_E2E_MYSQL_IMAGE`, `MALL_E2E_REDIS_IMAGE` — managed MySQL and Redis images.
//! - `MALL_E2E_CURL_IMAGE` — the security suite's probe pod (sh, curl with HTTP/2, nc; default
//!   `curlimages/curl:8.11.1`).
//! - `MALL_E2E_STORAGE_SIZE` — the managed database's volume size (default: the example's).
//! - `MALL_E2E_DATABASE_URL` — use this MySQL server (reachable from pods) instead of the managed one:
//!   the URL goes into a Secret and the stack's `database` becomes `external` (its services then use
//!   databases `mall_<service>` on that server).
//! - `MALL_E2E_HOSTPATH_PV_DIR` — for a single-node cluster without a volume provisioner, where the test
//!   runs on the node: a hostPath PersistentVolume under this host directory, bound to the MySQL claim.
//! - `MALL_E2E_GATEWAY_URL` — reach the gateway here instead of through `kubectl port-forward`;
//!   `MALL_E2E_GATEWAY=pod-ip` — through the gateway pod's IP (the host must route to pods).
//! - `MALL_E2E_READY_TIMEOUT` — seconds to wait for the MallStack to be Ready (default 360).
//! - `MALL_E2E_KEEP=1` — leave the namespace and the release in place for inspection.
//!
//! The operations test (`tests/operations.rs`) also reads:
//! - `MALL_E2E_IMAGE_TAG_NEXT` — a second tag of the same image (loaded into the cluster too) for the
//!   rollout and rollback phases; unset: those phases are skipped with a message.
//! - `MALL_E2E_NODE_PORT` — the gateway's nodePort (default 30889, which `kind-config.yaml` publishes on
//!   the host's 8889); `auto`: the API server picks one and the test reads it from the Service.
//! - `MALL_E2E_NODE_HOST` — where NodePorts answer (default 127.0.0.1). `MALL_E2E_GATEWAY_URL`, when set,
//!   wins over both (kind: `http://127.0.0.1:8889`).
//! - `MALL_E2E_INSTALL_LIMIT` — seconds a first install may take to be Ready (default 120).
//! - `MALL_E2E_PHASE_TIMEOUT` — seconds a disruption may take to settle (default 300).
//! - `MALL_E2E_LOAD_PAUSE_MS` — each load client's pause between requests (default 100).
//!
//! The tracing test (`tests/tracing.rs`) also reads:
//! - `MALL_E2E_OTLP_IMAGE` — an image with `mall-testkit`'s `otlp-receiver` program on its `PATH`, run
//!   as the stack's OTLP endpoint; unset: that test is skipped with a note.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Everything the end-to-end test needs from its environment.
pub struct Cluster {
    pub client: Client,
    /// The context every command uses (the kubeconfig's current context when the test started).
    pub context: String,
    /// The API server's version, e.g. `v1.36.2`.
    pub version: String,
    pub image_repository: String,
    pub image_tag: String,
    pub test_image: Option<String>,
    pub mysql_image: Option<String>,
    pub redis_image: Option<String>,
    pub storage_size: Option<String>,
    pub database_url: Option<String>,
    pub hostpath_pv_dir: Option<String>,
    pub gateway_url: Option<String>,
    pub gateway_by_pod_ip: bool,
    pub ready_timeout: Duration,
    pub keep: bool,
    pub image_tag_next: Option<String>,
    /// The gateway's fixed nodePort; `None`: the API server assigns one.
    pub node_port: Option<i32>,
    pub node_host: String,
    pub install_limit: Duration,
    pub phase_timeout: Duration,
    pub load_pause: Duration,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn flag(name: &str) -> bool {
    var(name).is_some_and(|v| v == "1" || v == "true")
}

/// A whole number from the environment, or `default` when unset.
fn number(name: &str, default: u64) -> Result<u64> {
    var(name)
        .map(|s| s.trim().parse::<u64>().with_context(|| format!("{name}={s}: a whole number")))
        .transpose()
        .map(|n| n.unwrap_or(default))
}

/// `MALL_E2E_NODE_PORT`: unset 30889 (kind-config.yaml's), `auto` none, else a port in the NodePort range.
fn node_port(value: Option<&str>) -> Result<Option<i32>> {
    match value {
        None => Ok(Some(30889)),
        Some("auto") => Ok(None),
        Some(s) => match s.parse::<i32>() {
            Ok(port) if (30000..=32767).contains(&port) => Ok(Some(port)),
            _ => bail!("MALL_E2E_NODE_PORT={s}: a port within 30000-32767, or auto"),
        },
    }
}

/// `repository:tag` split at the tag's colon (a registry port is not a tag).
pub fn split_image(image: &str) -> Result<(String, String)> {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() && !tag.is_empty() => {
            if tag == "latest" {
                bail!("MALL_E2E_IMAGE={image}: pin a version, \"latest\" is refused by the CRD");
            }
            Ok((repo.to_owned(), tag.to_owned()))
        }
        _ => bail!("MALL_E2E_IMAGE={image}: expected repository:tag"),
    }
}

impl Cluster {
    /// The cluster, or why the test cannot run (`Err` of the inner result: skip, or fail under
    /// `MALL_E2E_REQUIRE=1`).
    pub async fn from_env() -> Result<std::result::Result<Cluster, String>> {
        if var("KUBECONFIG").is_none() {
            return Ok(Err("KUBECONFIG is not set: no cluster to run against".into()));
        }
        let Some(image) = var("MALL_E2E_IMAGE") else {
            return Ok(Err("MALL_E2E_IMAGE is not set (the Mall image to run, repository:tag; \
                           it must be pullable by, or loaded into, the cluster)"
                .into()));
        };
        let (image_repository, image_tag) = split_image(&image)?;
        let kubeconfig = match Kubeconfig::read() {
            Ok(k) => k,
            Err(e) => return Ok(Err(format!("KUBECONFIG cannot be read: {e}"))),
        };
        let Some(context) = kubeconfig.current_context.clone().filter(|c| !c.is_empty()) else {
            return Ok(Err("KUBECONFIG names no current-context".into()));
        };
        let options = KubeConfigOptions { context: Some(context.clone()), ..KubeConfigOptions::default() };
        let mut config = match Config::from_custom_kubeconfig(kubeconfig, &options).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("context {context}: {e}"))),
        };
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(60));
        let client = Client::try_from(config)?;
        let version = match tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()).await {
            Ok(Ok(v)) => v.git_version,
            Ok(Err(e)) => return Ok(Err(format!("context {context} is unreachable: {e}"))),
            Err(_) => return Ok(Err(format!("context {context} did not answer within 15 s"))),
        };
        let ready_timeout = number("MALL_E2E_READY_TIMEOUT", 360)?;
        let image_tag_next = var("MALL_E2E_IMAGE_TAG_NEXT");
        if let Some(next) = &image_tag_next {
            let (_, next) = split_image(&format!("{image_repository}:{next}"))
                .context("MALL_E2E_IMAGE_TAG_NEXT: a tag")?;
            if next == image_tag {
                bail!("MALL_E2E_IMAGE_TAG_NEXT={next} is MALL_E2E_IMAGE's own tag: give a second tag");
            }
        }
        Ok(Ok(Cluster {
            client,
            context,
            version,
            image_repository,
            image_tag,
            test_image: var("MALL_E2E_TEST_IMAGE"),
            mysql_image: var("MALL_E2E_MYSQL_IMAGE"),
            redis_image: var("MALL_E2E_REDIS_IMAGE"),
            storage_size: var("MALL_E2E_STORAGE_SIZE"),
            database_url: var("MALL_E2E_DATABASE_URL"),
            hostpath_pv_dir: var("MALL_E2E_HOSTPATH_PV_DIR"),
            gateway_url: var("MALL_E2E_GATEWAY_URL"),
            gateway_by_pod_ip: var("MALL_E2E_GATEWAY").is_some_and(|v| v == "pod-ip"),
            ready_timeout: Duration::from_secs(ready_timeout),
            keep: flag("MALL_E2E_KEEP"),
            image_tag_next,
            node_port: node_port(var("MALL_E2E_NODE_PORT").as_deref())?,
            node_host: var("MALL_E2E_NODE_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            install_limit: Duration::from_secs(number("MALL_E2E_INSTALL_LIMIT", 120)?),
            phase_timeout: Duration::from_secs(number("MALL_E2E_PHASE_TIMEOUT", 300)?),
            load_pause: Duration::from_millis(number("MALL_E2E_LOAD_PAUSE_MS", 100)?),
        }))
    }

    /// Whether a missing cluster fails the test rather than skipping it.
    pub fn required() -> bool {
        flag("MALL_E2E_REQUIRE")
    }

    /// The cluster for `test`; `None` after saying why the test is skipped. Panics when it cannot be used
    /// under `MALL_E2E_REQUIRE=1`, or when a setting is malformed.
    pub async fn for_test(test: &str) -> Option<Cluster> {
        match Cluster::from_env().await.expect("reading the e2e settings") {
            Ok(cluster) => Some(cluster),
            Err(why) if Cluster::required() => {
                panic!("MALL_E2E_REQUIRE=1 but the cluster cannot be used: {why}")
            }
            Err(why) => {
                crate::skip(test, &why);
                None
            }
        }
    }

    /// `helm` pinned to this context.
    pub fn helm(&self) -> Result<Command> {
        let helm = crate::charts::find_helm()
            .context("no helm on PATH, in MALL_HELM or in ~/.cache/mall-tools (run ci/chart-checks.sh)")?;
        let mut command = Command::new(helm);
        command.args(["--kube-context", &self.context]);
        Ok(command)
    }

    /// The `kubectl` command line pinned to this context (program first).
    pub fn kubectl_argv(&self) -> Vec<String> {
        vec!["kubectl".into(), "--context".into(), self.context.clone()]
    }

    pub fn kubectl(&self) -> Command {
        let argv = self.kubectl_argv();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }

    /// Creates the namespace and waits for its `default` ServiceAccount (pods are refused before it).
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "mall-e2e"}}
        }))?;
        namespaces.create(&PostParams::default(), &ns).await.with_context(|| format!("creating {name}"))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        wait_for(Duration::from_secs(60), Duration::from_millis(200), || async {
            Ok(accounts.get_opt("default").await?.is_some())
        })
        .await
        .context("the namespace's default ServiceAccount")
    }

    /// `helm uninstall` of `release` from namespace `ns`, then the namespace deleted (waiting up to
    /// 5 min); what went wrong, as messages, so that a cleanup goes on after a failure.
    pub async fn uninstall(&self, release: &str, ns: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self.helm() {
            Ok(mut uninstall) => {
                uninstall.args(["uninstall", release, "--namespace", ns, "--wait", "--timeout", "3m"]);
                if let Err(e) = run(uninstall, "helm uninstall") {
                    problems.push(format!("{e:#}"));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        if let Err(e) = self.delete_namespace(ns, Duration::from_secs(300)).await {
            problems.push(format!("{e:#}"));
        }
        problems
    }

    /// Deletes the namespace and waits (at most `timeout`) until it is gone.
    pub async fn delete_namespace(&self, name: &str, timeout: Duration) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        wait_for(timeout, Duration::from_secs(1), || async { Ok(namespaces.get_opt(name).await?.is_none()) })
            .await
            .with_context(|| format!("namespace {name} still terminating"))
    }
}

/// Polls `done` every `every` until it says true, at most `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, every: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match done().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("not done after {timeout:?}")),
                None => anyhow::anyhow!("not done after {timeout:?}"),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs a command; its stdout, or an error with both streams.
pub fn run(mut command: Command, what: &str) -> Result<String> {
    let output = command.output().with_context(|| format!("{what}: cannot start {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{what} failed ({}):\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(stdout)
}

/// A short random suffix for names.
pub fn suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..6).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)])).collect()
}

#[cfg(test)]
mod tests {
    use super::{node_port, split_image};

    #[test]
    fn images_split_at_the_tag() {
        assert_eq!(split_image("lab.local/mall:0.1.0").unwrap(), ("lab.local/mall".into(), "0.1.0".into()));
        assert_eq!(
            split_image("registry:5000/mall:0.1.0").unwrap(),
            ("registry:5000/mall".into(), "0.1.0".into())
        );
        assert!(split_image("registry:5000/mall").is_err());
        assert!(split_image("mall:latest").is_err());
        assert!(split_image("mall").is_err());
    }

    #[test]
    fn node_ports_default_to_kinds_and_may_be_left_to_the_api_server() {
        assert_eq!(node_port(None).unwrap(), Some(30889));
        assert_eq!(node_port(Some("auto")).unwrap(), None);
        assert_eq!(node_port(Some("31000")).unwrap(), Some(31000));
        assert!(node_port(Some("8889")).is_err());
        assert!(node_port(Some("x")).is_err());
    }
}
