//! Backups of the managed MySQL on a real cluster (settings in `mall_e2e::cluster`): the minimal example
//! with `spec.backup` (a schedule that does not come during the test), Ready; then a backup asked for
//! with the `mall.example.com/backup-now` annotation must be acknowledged in `status.backup`, its Job
//! must succeed and `status.backup.lastSuccess` name it, and the Job's log must end with the script's
//! JSON line: a backup of the seven databases with more than zero bytes. `BackupFailing` is False. Then
//! `mall.example.com/restart-gateway` rolls the gateway alone, and its status acknowledges the token;
//! and an operator upgrade (a new operator image tag, the same spec) rolls no pod of the stack.
//!
//! Without `KUBECONFIG` and `MALL_E2E_IMAGE` it says why and passes (unless `MALL_E2E_REQUIRE=1`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::{Api, ListParams, LogParams, Patch, PostParams};
use mall_e2e::cluster::{Cluster, wait_for};
use mall_e2e::run::{Run, STACK, manager};
use mall_operator::builders::{
    BACKUP_NOW_ANNOTATION, RESTART_ANNOTATION, backup_databases, backup_job_name, restarted,
};
use mall_operator::status::BACKUP_FAILING;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_asked_for_is_made_and_reported() {
    let Some(cluster) = Cluster::for_test("backup end-to-end test").await else { return };
    let mut run = Run::new(&cluster, "mall-backup");
    let result = steps(&mut run).await;
    run.finish(result).await;
}

async fn steps(run: &mut Run<'_>) -> Result<()> {
    run.step("create the namespace, the CRD (upgrade path), helm install the operator chart");
    run.create_namespace().await?;
    run.crd_upgrade_path().await?;
    run.helm_install().await?;

    run.step("the minimal example with the managed MySQL and backups, to Ready");
    let mut stack = run.example_stack(false).await?;
    ensure!(!stack["spec"]["database"]["managed"].is_null(), "backups need the managed MySQL");
    // Once a year at 03:17 on 1 January: no scheduled run during the test.
    stack["spec"]["backup"] =
        json!({"schedule": "17 3 1 1 *", "retention": {"count": 2}, "target": {"pvc": {"size": "1Gi"}}});
    run.prepare_volume(&stack).await?;
    backup_volume(run).await?;
    run.apply_stack(&stack).await?;
    run.wait_ready(run.c.ready_timeout, None).await?;

    run.step("backup-now: one Job, acknowledged, succeeds");
    let token = format!("e2e-{}", mall_e2e::cluster::suffix());
    let patch = json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: token}}});
    run.stacks().patch(STACK, &manager(), &Patch::Merge(&patch)).await.context("annotating backup-now")?;
    let stacks = run.stacks();
    let job = backup_job_name(&stacks.get(STACK).await?, &token);
    wait_for(Duration::from_secs(300), Duration::from_secs(3), || {
        let (stacks, token, job) = (stacks.clone(), token.clone(), job.clone());
        async move {
            let stack = stacks.get(STACK).await?;
            let Some(backup) = stack.status.as_ref().and_then(|s| s.backup.clone()) else { return Ok(false) };
            if let Some(failure) = backup.last_failure.as_ref().filter(|f| f.job == job) {
                anyhow::bail!("the backup Job {job} failed: {}", failure.reason);
            }
            Ok(backup.last_request.as_deref() == Some(token.as_str())
                && backup.last_request_job.as_deref() == Some(job.as_str())
                && backup.last_success.as_ref().is_some_and(|s| s.job == job))
        }
    })
    .await
    .context("waiting for status.backup.lastSuccess of the requested backup")?;
    let stack = stacks.get(STACK).await?;
    let status = stack.status.as_ref().context("a status")?;
    let success = status.backup.as_ref().and_then(|b| b.last_success.as_ref()).context("lastSuccess")?;
    eprintln!("e2e: backup {} by Job {} at {}", success.name, success.job, success.time);
    let failing = status.condition(BACKUP_FAILING).context("the BackupFailing condition")?;
    ensure!(failing.status == "False", "BackupFailing: {failing:?}");

    run.step("the Job's log ends with the backup's JSON line");
    let pods: Api<Pod> = run.api();
    let listed =
        pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await?;
    let pod =
        listed.items.iter().find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
    let pod = pod.with_context(|| format!("a succeeded pod of {job}"))?;
    let name = pod.metadata.name.clone().context("a pod name")?;
    let log = pods.logs(&name, &LogParams::default()).await?;
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).context("an empty log")?;
    let line: Value = serde_json::from_str(last).with_context(|| format!("the last line is JSON: {last}"))?;
    eprintln!("e2e: {last}");
    ensure!(line["bytes"].as_u64().unwrap_or(0) > 0, "a backup of no bytes: {last}");
    ensure!(line["databases"].as_u64() == Some(backup_databases().len() as u64), "every database: {last}");
    ensure!(line["backup"].as_str() == Some(success.name.as_str()), "the name in the status: {last}");

    run.step("restart-gateway: only the gateway rolls, and the status acknowledges it");
    let cart_pods = pod_names(run, "cart").await?;
    let gateway_pods = pod_names(run, "gateway").await?;
    let restart = format!("r-{}", mall_e2e::cluster::suffix());
    let key = format!("{RESTART_ANNOTATION}-gateway");
    let patch = json!({"metadata": {"annotations": {key: restart}}});
    run.stacks().patch(STACK, &manager(), &Patch::Merge(&patch)).await.context("annotating restart")?;
    let started = std::time::Instant::now();
    wait_for(Duration::from_secs(180), Duration::from_secs(2), || {
        let (stacks, restart) = (stacks.clone(), restart.clone());
        async move {
            let stack = stacks.get(STACK).await?;
            let Some(status) = stack.status.as_ref() else { return Ok(false) };
            let gateway = status.components.get("gateway");
            Ok(gateway
                .is_some_and(|g| g.restarted.as_deref() == Some(restart.as_str()) && g.ready == g.desired)
                && status.condition("Ready").is_some_and(|c| c.status == "True"))
        }
    })
    .await
    .context("waiting for the gateway's restart to be acknowledged")?;
    let deployments: Api<Deployment> = run.api();
    let gateway = deployments.get(&format!("{STACK}-gateway")).await?;
    ensure!(
        restarted(gateway.spec.as_ref().map(|s| &s.template)).as_deref() == Some(restart.as_str()),
        "the gateway's pod template carries the token"
    );
    let stack = stacks.get(STACK).await?;
    let cart = stack.status.as_ref().and_then(|s| s.components.get("cart")).context("cart's status")?;
    ensure!(cart.restarted.is_none(), "cart was not asked to restart: {cart:?}");
    ensure!(pod_names(run, "cart").await? == cart_pods, "cart's pods are the same ones");
    let now = pod_names(run, "gateway").await?;
    ensure!(
        now.iter().all(|p| !gateway_pods.contains(p)),
        "the gateway's pods are new: {gateway_pods:?} → {now:?}"
    );
    eprintln!(
        "e2e: the gateway restarted and Ready again in {:.1} s; cart untouched",
        started.elapsed().as_secs_f64()
    );

    run.step("an operator upgrade (a new operator image, the same spec) rolls no pod");
    let Some(next) = run.c.image_tag_next.clone() else {
        eprintln!("e2e: no MALL_E2E_IMAGE_TAG_NEXT: the operator upgrade is not tried");
        return Ok(());
    };
    let stack_pods = || async {
        let pods = every_pod(run).await?;
        Ok::<_, anyhow::Error>(
            pods.into_iter().filter(|p| !p.starts_with("mall-operator")).collect::<Vec<_>>(),
        )
    };
    let generations = || async {
        let listed = deployments.list(&ListParams::default()).await?.items;
        let mut g: Vec<(String, Option<i64>)> = listed
            .into_iter()
            .filter_map(|d| Some((d.metadata.name?, d.metadata.generation)))
            .filter(|(n, _)| !n.starts_with("mall-operator"))
            .collect();
        g.sort();
        Ok::<_, anyhow::Error>(g)
    };
    let (pods_before, generations_before) = (stack_pods().await?, generations().await?);
    run.helm_upgrade_operator(&next).await?;
    // Time for the new operator to start, take the lease and reconcile the stack.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (pods_after, generations_after) = (stack_pods().await?, generations().await?);
    ensure!(pods_before == pods_after, "pods changed: {pods_before:?} → {pods_after:?}");
    ensure!(generations_before == generations_after, "a Deployment changed: {generations_after:?}");
    let stack = stacks.get(STACK).await?;
    ensure!(
        stack.status.as_ref().and_then(|s| s.condition("Ready")).is_some_and(|c| c.status == "True"),
        "the stack is Ready under the new operator"
    );
    eprintln!("e2e: operator upgraded to {next}: no pod of the stack rolled, no Deployment changed (30 s)");
    Ok(())
}

/// Every running pod of the namespace, sorted.
async fn every_pod(run: &Run<'_>) -> Result<Vec<String>> {
    let pods: Api<Pod> = run.api();
    let mut names: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The names of one component's running pods, sorted.
async fn pod_names(run: &Run<'_>, component: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = run.api();
    let selector = format!("app.kubernetes.io/instance={STACK},app.kubernetes.io/component={component}");
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    Ok(names)
}

/// Single-node clusters without a volume provisioner (`MALL_E2E_HOSTPATH_PV_DIR`): a hostPath volume
/// for the backup claim, beside the MySQL one. Nothing to do otherwise.
async fn backup_volume(run: &Run<'_>) -> Result<()> {
    let Some(base) = &run.c.hostpath_pv_dir else { return Ok(()) };
    let dir = std::path::Path::new(base).join(format!("{}-backups", run.ns));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The backup pods run as MySQL's uid; a hostPath volume is not chowned to fsGroup.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("{}-backups", run.ns), "labels": {"app.kubernetes.io/part-of": "mall-e2e"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": dir.to_string_lossy(), "type": "Directory"},
            "claimRef": {"namespace": run.ns, "name": format!("{STACK}-backups")}
        }
    }))?;
    let pvs: Api<PersistentVolume> = Api::all(run.c.client.clone());
    pvs.create(&PostParams::default(), &pv).await.context("creating the backup hostPath PersistentVolume")?;
    Ok(())
}
