//! MallStacks under test on a real cluster: the operator chart installed into a namespace, a stack made
//! from the minimal example with the image under test, waiting until its status says what a test
//! expects, and how `kubectl get -o wide` shows it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolume, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mall_operator::MallStack;
use mall_operator::crd::Condition;
use serde_json::{Value, json};

use crate::cluster::{Cluster, run};
use crate::{manifests, repo_root};

/// The field manager of everything the e2e tests apply.
pub const MANAGER: &str = "mall-e2e";

/// `helm install <release>` of the operator chart into `ns`, with the image under test, and waits.
pub fn install_operator(c: &Cluster, ns: &str, release: &str) -> Result<()> {
    let chart = repo_root().join("charts/mall-operator");
    let mut install = c.helm()?;
    install
        .args(["install", release])
        .arg(&chart)
        .args(["--namespace", ns, "--wait", "--timeout", "5m"])
        .args(["--set", &format!("image.repository={}", c.image_repository)])
        .args(["--set-string", &format!("image.tag={}", c.image_tag)])
        .args(["--set", "image.pullPolicy=IfNotPresent"])
        .args(["--set", "logLevel=info\\,mall_operator=debug"]);
    let out = run(install, "helm install")?;
    eprintln!("{}", out.lines().take(6).collect::<Vec<_>>().join("\n"));
    Ok(())
}

/// The minimal example named `name`, with the image under test and the cluster's MySQL, Redis and
/// volume settings; its database managed (the caller may make it external).
pub fn example(c: &Cluster, name: &str) -> Result<Value> {
    let docs = manifests::read_documents(&repo_root().join("examples/mallstack.yaml"))?;
    let mut stack = docs.into_iter().next().context("examples/mallstack.yaml is empty")?;
    stack["metadata"] = json!({"name": name});
    let spec = &mut stack["spec"];
    spec["image"]["repository"] = json!(c.image_repository);
    spec["image"]["tag"] = json!(c.image_tag);
    spec["image"]["pullPolicy"] = json!("IfNotPresent");
    // Several stacks share a namespace: only one may hold the example's node port.
    spec["gateway"] = json!({"replicas": 1, "serviceType": "ClusterIP"});
    if let Some(image) = &c.mysql_image {
        spec["database"]["managed"]["image"] = json!(image);
    }
    if let Some(size) = &c.storage_size {
        spec["database"]["managed"]["storageSize"] = json!(size);
    }
    if let Some(image) = &c.redis_image {
        spec["redis"]["managed"]["image"] = json!(image);
    }
    Ok(stack)
}

/// Makes `stack`'s database the external one at `url` (kept in Secret `<name>-database`).
pub async fn use_external_database(c: &Cluster, ns: &str, stack: &mut Value, url: &str) -> Result<()> {
    let name = format!("{}-database", stack["metadata"]["name"].as_str().context("a named stack")?);
    put_secret(c, ns, &name, "url", url).await?;
    stack["spec"]["database"] = json!({"external": {"secretRef": {"name": name, "key": "url"}}});
    Ok(())
}

/// Creates or replaces Secret `name` holding `value` under `key`.
pub async fn put_secret(c: &Cluster, ns: &str, name: &str, key: &str, value: &str) -> Result<()> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    secrets
        .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .with_context(|| format!("applying Secret {name}"))?;
    Ok(())
}

/// Server-side applies `stack` (a valid MallStack: parsed strictly and validated first).
pub async fn apply(c: &Cluster, ns: &str, stack: &Value) -> Result<()> {
    let typed: MallStack = manifests::strict(stack)?;
    typed.spec.validate()?;
    let stacks: Api<MallStack> = Api::namespaced(c.client.clone(), ns);
    stacks
        .patch(&typed.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(stack))
        .await
        .with_context(|| format!("applying MallStack {}", typed.name_any()))?;
    Ok(())
}

pub fn condition<'a>(stack: &'a MallStack, type_: &str) -> Option<&'a Condition> {
    stack.status.as_ref()?.condition(type_)
}

/// Whether the status is the current generation's and Ready.
pub fn is_ready(stack: &MallStack) -> bool {
    current(stack) && condition(stack, "Ready").is_some_and(|c| c.status == "True")
}

/// Whether the status describes the current generation.
pub fn current(stack: &MallStack) -> bool {
    stack.status.as_ref().and_then(|s| s.observed_generation) == stack.metadata.generation
}

/// `Ready=… (reason) components=… problem=…`, for progress lines.
pub fn summary(stack: &MallStack) -> String {
    let Some(status) = &stack.status else { return "no status yet".into() };
    let ready = condition(stack, "Ready").map_or("?".to_owned(), |c| format!("{} ({})", c.status, c.reason));
    format!(
        "Ready={ready} components={} problem={}",
        status.ready_components.as_deref().unwrap_or("-"),
        status.problem.as_deref().unwrap_or("-")
    )
}

/// Polls stack `name` until `done` holds (at most `timeout`), printing each new summary; the stack and
/// how long it took.
pub async fn wait_until(
    c: &Cluster,
    ns: &str,
    name: &str,
    timeout: Duration,
    done: impl Fn(&MallStack) -> bool,
) -> Result<(MallStack, Duration)> {
    let stacks: Api<MallStack> = Api::namespaced(c.client.clone(), ns);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let stack = stacks.get(name).await.with_context(|| format!("reading MallStack {name}"))?;
        let seen = summary(&stack);
        if seen != last {
            eprintln!("e2e:   [{:>5.1}s] {name}: {seen}", started.elapsed().as_secs_f64());
            last = seen;
        }
        if done(&stack) {
            return Ok((stack, started.elapsed()));
        }
        if started.elapsed() > timeout {
            bail!(
                "MallStack {name}: not there after {timeout:?}; status: {}",
                serde_json::to_string_pretty(&stack.status).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `kubectl get mallstack <name> -o wide`: its header and its line.
pub fn kubectl_wide(c: &Cluster, ns: &str, name: &str) -> Result<String> {
    let mut get = c.kubectl();
    get.args(["get", "mallstack", name, "-n", ns, "-o", "wide"]);
    Ok(run(get, "kubectl get mallstack -o wide")?.trim_end().to_owned())
}

/// For a single-node cluster without a volume provisioner, where the test runs on the node: a hostPath
/// PersistentVolume under `base`, of storage class `class` (`""`: none), bound ahead to the claim `claim`
/// of `ns`. Its name and directory, to delete afterwards.
pub async fn hostpath_volume(
    c: &Cluster,
    base: &str,
    ns: &str,
    claim: &str,
    class: &str,
) -> Result<(String, std::path::PathBuf)> {
    let dir = std::path::Path::new(base).join(ns).join(claim);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // MySQL runs as its own uid; a hostPath volume is not chowned to fsGroup.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let name = format!("{ns}-{claim}");
    let size = c.storage_size.clone().unwrap_or_else(|| "10Gi".into());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "mall-e2e"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "hostPath": {"path": dir.to_string_lossy(), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": claim}
        }
    }))?;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    pvs.create(&PostParams::default(), &pv)
        .await
        .with_context(|| format!("creating PersistentVolume {name}"))?;
    Ok((name, dir))
}

/// `url` (`mysql://user[:password]@host[:port]/…`) with `password` instead of its own.
pub fn with_password(url: &str, password: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL")?;
    let (userinfo, host) = rest.split_once('@').context("the URL names no user")?;
    let user = userinfo.split(':').next().unwrap_or_default();
    ensure!(!user.is_empty(), "the URL names no user");
    Ok(format!("{scheme}://{user}:{password}@{host}"))
}

/// The user of `url`, if it names one.
pub fn user_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (userinfo, _) = rest.split_once('@')?;
    userinfo.split(':').next().filter(|u| !u.is_empty()).map(str::to_owned)
}

/// The host of `url`, without its port.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => host_port,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// `url` pointing at `port` of its host instead.
pub fn with_port(url: &str, port: u16) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let host = host_of(&format!("x://{host_port}")).context("the URL names no host")?;
    Ok(format!("{scheme}://{userinfo}{host}:{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten() {
        let url = "mysql://mall:s3cret@db.example.com:3306/mall?ssl-mode=disabled";
        assert_eq!(
            with_password(url, "wrong").unwrap(),
            "mysql://mall:wrong@db.example.com:3306/mall?ssl-mode=disabled"
        );
        assert_eq!(with_password("mysql://root@10.0.0.5/mall", "x").unwrap(), "mysql://root:x@10.0.0.5/mall");
        assert!(with_password("mysql://10.0.0.5/mall", "x").is_err());
        assert_eq!(user_of(url).as_deref(), Some("mall"));
        assert_eq!(host_of(url).as_deref(), Some("db.example.com"));
        assert_eq!(host_of("mysql://root@10.0.0.5/mall").as_deref(), Some("10.0.0.5"));
        assert_eq!(with_port(url, 1).unwrap(), "mysql://mall:s3cret@db.example.com:1/mall?ssl-mode=disabled");
        assert_eq!(with_port("mysql://root@10.0.0.5/mall", 1).unwrap(), "mysql://root@10.0.0.5:1/mall");
    }
}
