//! Backups through whole reconciles: the claim and the CronJob applied after the NetworkPolicies, an
//! on-demand backup (`mall.example.com/backup-now`) made once and acknowledged in the status, a failed
//! backup Job that makes `BackupFailing` True with its reason, a later success that clears it, and the
//! CronJob deleted once backups are turned off.

use super::*;
use crate::builders::{BACKUP_NOW_ANNOTATION, backup_job_name};
use crate::crd::{BackupRetention, BackupSpec, BackupTarget};

const CRONJOBS: &str = "/apis/batch/v1/namespaces/mall/cronjobs";

fn backed_up(token: Option<&str>) -> MallStack {
    let mut stack = minimal_stack();
    stack.spec.backup = Some(BackupSpec {
        schedule: "30 5 * * *".into(),
        retention: BackupRetention::default(),
        target: BackupTarget::default(),
        image: None,
    });
    if let Some(token) = token {
        stack.metadata.annotations = Some([(BACKUP_NOW_ANNOTATION.to_owned(), token.to_owned())].into());
    }
    stack
}

/// The applies of a settled reconcile of `stack`: everything, then the backup claim and CronJob.
fn backup_applies(stack: &MallStack) -> Vec<(String, Value)> {
    let wanted = desired(stack, &cluster_secrets());
    let mut expected = expected_applies(&wanted, true);
    assert_eq!((wanted.persistent_volume_claims.len(), wanted.cron_jobs.len()), (1, 1));
    expected.extend(wanted.persistent_volume_claims.iter().map(entry));
    expected.extend(wanted.cron_jobs.iter().map(entry));
    let tail: Vec<&str> = expected[expected.len() - 2..].iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(tail, [format!("{CLAIMS}/shop-backups"), format!("{CRONJOBS}/shop-backup")]);
    expected
}

/// The reads every reconcile starts with, with these `jobs` and `pods`.
async fn backup_reads(server: &mut ApiServerVerifier, jobs: Vec<Value>, pods: Vec<Value>) {
    server.list(SECRETS, "Secret", with_identity(vec![])).await;
    server.list(JOBS, "Job", jobs).await;
    server.list(DEPLOYMENTS, "Deployment", vec![]).await;
    server.list(STATEFULSETS, "StatefulSet", vec![]).await;
    server.list(MONITORS, "ServiceMonitor", vec![]).await;
    server.list(PODS, "Pod", pods).await;
    server.list(CLAIMS, "PersistentVolumeClaim", vec![]).await;
}

/// A backup Job of the CronJob as the cluster reports it once finished: `Complete` at `time`, or
/// `Failed` at `time` with `message`.
fn finished_job(name: &str, time: &str, failed: Option<&str>) -> Value {
    let labels = crate::builders::labels(&minimal_stack(), "backup");
    let status = match failed {
        None => json!({"succeeded": 1, "completionTime": time,
                       "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": time}]}),
        Some(message) => json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True",
                       "reason": "BackoffLimitExceeded", "message": message, "lastTransitionTime": time}]}),
    };
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "mall", "uid": format!("uid-{name}"), "labels": labels,
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "shop-backup",
                                          "uid": "uid-shop-backup", "controller": true}]},
        "spec": {"template": {"spec": {"containers": []}}},
        "status": status,
    })
}

/// A finished pod of the backup Job `job` whose termination message is the script's last line.
fn finished_pod(job: &str, backup: &str) -> Value {
    let mut labels = serde_json::to_value(crate::builders::labels(&minimal_stack(), "backup")).unwrap();
    labels["batch.kubernetes.io/job-name"] = json!(job);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job}-x7k2p"), "namespace": "mall", "labels": labels},
        "spec": {"containers": [{"name": "backup", "image": "mysql:8.4"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "backup", "image": "mysql:8.4", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "message": format!("{{\"backup\":\"{backup}\",\"bytes\":2195,\"databases\":7}}\n")}}
        }]},
    })
}

#[tokio::test]
async fn backup_now_makes_one_job_from_the_cron_job_and_acknowledges_it() {
    let stack = backed_up(Some("2026-12-06T05:30:00Z"));
    let expected = backup_applies(&stack);
    let job_name = backup_job_name(&stack, "2026-12-06T05:30:00Z");
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, job_name) = (stack.clone(), expected.clone(), job_name.clone());
        async move {
            backup_reads(&mut server, vec![], vec![]).await;
            let stored = applies(&mut server, &expected, |b| settled(&stored(b))).await;
            let cron_job = stored.last().unwrap().clone();
            // The Job: the CronJob's template, controlled by it, marked with the token.
            let received = server.expect(Method::POST, JOBS).await;
            assert!(received.query.contains("fieldManager=mall-operator"), "{}", received.query);
            let job = received.body.clone();
            assert_eq!(job["metadata"]["name"], job_name.as_str());
            assert_eq!(job["spec"], cron_job["spec"]["jobTemplate"]["spec"]);
            assert_eq!(
                job["metadata"]["annotations"]["mall.example.com/backup-request"],
                "2026-12-06T05:30:00Z"
            );
            assert_eq!(job["metadata"]["labels"]["app.kubernetes.io/component"], "backup");
            let owner = &job["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["kind"].as_str(), owner["uid"].as_str()),
                (Some("CronJob"), Some("uid-shop-backup"))
            );
            let mut made = job.clone();
            made["metadata"]["uid"] = json!("uid-made");
            received.respond(StatusCode::CREATED, &made);
            let told = event(&mut server, "Normal", "BackupRequested").await;
            assert!(told["note"].as_str().unwrap().contains(&job_name), "{told}");
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(status["backup"]["lastRequest"], "2026-12-06T05:30:00Z");
            assert_eq!(status["backup"]["lastRequestJob"], job_name.as_str());
            assert!(status["backup"].get("lastSuccess").is_none(), "{status}");
            let failing = condition(&status, "BackupFailing");
            assert_eq!(
                (failing["status"].as_str(), failing["reason"].as_str()),
                (Some("False"), Some("NoBackupYet"))
            );
            assert_eq!(
                condition(&status, "Ready")["status"],
                "True",
                "backups do not make the stack unready"
            );
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            tx.send((status, made, server)).ok();
        }
    };
    run(stack.clone(), ctx.clone(), script).await.unwrap();
    let (status, made, mut server) = rx.await.unwrap();

    // The same token again (the stack now says it was acted on): no second Job.
    let mut acknowledged = stack.clone();
    acknowledged.status = Some(serde_json::from_value(status.clone()).unwrap());
    let script = {
        let acknowledged = acknowledged.clone();
        async move {
            backup_reads(&mut server, vec![made], vec![]).await;
            applies(&mut server, &expected, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            // No POST came before the lists of what might be pruned. (The status is written again only
            // because this scenario does not hand auth's key Secret back: its keys are new.)
            let again = status_patch(&mut server, &acknowledged).await;
            assert_eq!(again["backup"], status["backup"], "the request stays acknowledged");
            assert_ne!(again["auth"], status["auth"]);
        }
    };
    run(acknowledged, ctx, script).await.unwrap();
}

#[tokio::test]
async fn a_failed_backup_makes_backup_failing_true_and_a_later_success_clears_it() {
    let stack = backed_up(None);
    let expected = backup_applies(&stack);
    let failed = finished_job(
        "shop-backup-29412330",
        "2026-12-05T05:31:10Z",
        Some("Job has reached the specified backoff limit"),
    );
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, failed) = (stack.clone(), expected.clone(), failed.clone());
        async move {
            backup_reads(&mut server, vec![failed], vec![]).await;
            applies(&mut server, &expected, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let failure = &status["backup"]["lastFailure"];
            assert_eq!(failure["job"], "shop-backup-29412330");
            assert_eq!(failure["time"], "2026-12-05T05:31:10Z");
            assert_eq!(failure["reason"], "Job has reached the specified backoff limit");
            let failing = condition(&status, "BackupFailing");
            assert_eq!(
                (failing["status"].as_str(), failing["reason"].as_str()),
                (Some("True"), Some("BackupFailed"))
            );
            assert_eq!(
                failing["message"],
                "backup Job shop-backup-29412330 failed at 2026-12-05T05:31:10Z: Job has reached the specified \
                 backoff limit"
            );
            assert_eq!(condition(&status, "Ready")["status"], "True");
            assert_eq!(condition(&status, "Degraded")["status"], "False");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            let told = event(&mut server, "Warning", "BackupFailed").await;
            assert!(told["note"].as_str().unwrap().contains("backoff limit"), "{told}");
            tx.send((status, server)).ok();
        }
    };
    run(stack.clone(), ctx.clone(), script).await.unwrap();
    let (status, mut server) = rx.await.unwrap();

    // The next night's backup succeeds: cleared, with the backup's name its pod told.
    let mut failing = stack.clone();
    failing.status = Some(serde_json::from_value(status).unwrap());
    let succeeded = finished_job("shop-backup-29413770", "2026-12-06T05:30:42Z", None);
    let pod = finished_pod("shop-backup-29413770", "20261206T053001Z");
    let script = {
        let stack = failing.clone();
        async move {
            backup_reads(&mut server, vec![failed, succeeded], vec![pod]).await;
            applies(&mut server, &expected, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(
                status["backup"]["lastSuccess"],
                json!({"time": "2026-12-06T05:30:42Z", "name": "20261206T053001Z", "job": "shop-backup-29413770"})
            );
            assert_eq!(status["backup"]["lastFailure"]["job"], "shop-backup-29412330", "still told");
            let failing = condition(&status, "BackupFailing");
            assert_eq!(
                (failing["status"].as_str(), failing["reason"].as_str()),
                (Some("False"), Some("Succeeded"))
            );
            assert!(failing["message"].as_str().unwrap().contains("20261206T053001Z"), "{failing}");
            event(&mut server, "Normal", "BackupSucceeded").await;
        }
    };
    run(failing, ctx, script).await.unwrap();
}

#[tokio::test]
async fn turning_backups_off_deletes_the_cron_job_and_keeps_the_claim() {
    let mut stack = minimal_stack();
    stack.status = Some(MallStackStatus {
        backup: Some(crate::crd::BackupStatus { last_request: Some("t1".into()), ..Default::default() }),
        ..MallStackStatus::default()
    });
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            backup_reads(&mut server, vec![], vec![]).await;
            applies(&mut server, &expected, settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let received = server.expect(Method::DELETE, &format!("{CRONJOBS}/shop-backup")).await;
            assert_eq!(received.body["propagationPolicy"], "Background");
            deleted(received);
            let status = status_patch(&mut server, &stack).await;
            assert!(status.get("backup").is_none(), "{status}");
            assert!(status["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "BackupFailing"));
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
        }
    };
    run(stack, context(client), script).await.unwrap();
}
