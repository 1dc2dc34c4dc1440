//! A stack started from a backup, through whole reconciles: the restore Job is made once MySQL is
//! ready and before any migration Job; nothing of the services rolls out while it runs; once it
//! completed, the migrations and the services follow, and the status says it was restored.

use super::*;
use crate::builders::restore_job_name;
use crate::crd::RestoreSpec;

/// The reads every reconcile starts with, with these `jobs`.
async fn restore_reads(server: &mut ApiServerVerifier, jobs: Vec<Value>) {
    server.list(SECRETS, "Secret", with_identity(vec![])).await;
    server.list(JOBS, "Job", jobs).await;
    server.list(DEPLOYMENTS, "Deployment", vec![]).await;
    server.list(STATEFULSETS, "StatefulSet", vec![]).await;
    server.list(MONITORS, "ServiceMonitor", vec![]).await;
    server.list(PODS, "Pod", vec![]).await;
    server.list(CLAIMS, "PersistentVolumeClaim", vec![]).await;
}

#[tokio::test]
async fn the_restore_runs_first_and_holds_migrations_and_services_back_until_it_completed() {
    let mut stack = minimal_stack();
    stack.spec.restore = Some(RestoreSpec { from: "20261206T053000Z".into(), claim_name: None, s3: None });
    let wanted = desired(&stack, &cluster_secrets());
    let job = wanted.restore.clone().unwrap();
    let job_name = restore_job_name(&stack, stack.spec.restore.as_ref().unwrap());
    assert_eq!(job.metadata.name.as_deref(), Some(job_name.as_str()));

    // Everything up to the Deployments that need no migration, then (MySQL being ready) the restore
    // Job; no migration Job, no service Deployment; then the policies.
    let all = expected_applies(&wanted, true);
    let first_migration = all.iter().position(|(p, _)| p.starts_with(JOBS)).unwrap();
    let policies = all.iter().position(|(p, _)| p.starts_with(POLICIES)).unwrap();
    let before: Vec<(String, Value)> = all[..first_migration].to_vec();
    let after: Vec<(String, Value)> = all[policies..].to_vec();

    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, job, job_name) = (stack.clone(), job.clone(), job_name.clone());
        async move {
            restore_reads(&mut server, vec![]).await;
            applies(&mut server, &before, |b| settled(&stored(b))).await;
            let made = applies(&mut server, &[entry(&job)], stored).await;
            let told = event(&mut server, "Normal", "RestoreStarted").await;
            assert!(told["note"].as_str().unwrap().contains("20261206T053000Z"), "{told}");
            applies(&mut server, &after, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(status["restore"]["phase"], "Running");
            assert_eq!(status["restore"]["job"], job_name.as_str());
            assert_eq!(condition(&status, "Restored")["status"], "False");
            let ready = condition(&status, "Ready");
            assert_eq!(
                (ready["status"].as_str(), ready["reason"].as_str()),
                (Some("False"), Some("Restoring"))
            );
            assert_eq!(condition(&status, "MigrationsComplete")["status"], "False");
            tx.send((status, made[0].clone(), server)).ok();
        }
    };
    run(stack.clone(), ctx.clone(), script).await.unwrap();
    let (status, made, mut server) = rx.await.unwrap();

    // The Job completed: the migrations and services follow; the Job is kept (it is the record).
    let mut restoring = stack.clone();
    restoring.status = Some(serde_json::from_value(status).unwrap());
    let script = {
        let stack = restoring.clone();
        async move {
            restore_reads(&mut server, vec![settled(&made)]).await;
            applies(&mut server, &all, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            // No DELETE of the restore Job came before the status.
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(status["restore"]["phase"], "Succeeded");
            assert_eq!(condition(&status, "Restored")["status"], "True");
            assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            event(&mut server, "Normal", "Restored").await;
        }
    };
    run(restoring, ctx, script).await.unwrap();
}

#[tokio::test]
async fn a_stack_being_deleted_is_left_to_the_garbage_collector() {
    // `kubectl delete --cascade=foreground`: the stack stays, marked, until its children are gone. A
    // reconcile that applied them again would hold the deletion up for ever: it sends no request.
    let mut stack = minimal_stack();
    stack.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-06T07:46:52Z".parse().unwrap()));
    stack.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
    let (client, _server) = mock_client();
    let action = run(stack, context(client), async {}).await.unwrap();
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn the_restore_job_is_kept_while_spec_restore_is_there_and_pruned_once_it_is_gone() {
    // Restored earlier from the claim; backups have moved to a bucket since, so the restore Job that
    // would be made now has another name. The one that ran is the record: kept.
    let mut stack = minimal_stack();
    stack.spec.restore = Some(RestoreSpec { from: "20261206T053000Z".into(), claim_name: None, s3: None });
    let ran = settled(&stored(&desired(&stack, &cluster_secrets()).restore.unwrap()));
    stack.spec.backup = Some(crate::crd::BackupSpec {
        schedule: "30 5 * * *".into(),
        retention: crate::crd::BackupRetention::default(),
        target: crate::crd::BackupTarget {
            pvc: None,
            s3: Some(crate::crd::BackupS3 { secret_name: "bucket".into() }),
        },
        image: None,
    });
    let wanted = desired(&stack, &cluster_secrets());
    assert_ne!(wanted.restore.as_ref().unwrap().metadata.name.as_deref(), ran["metadata"]["name"].as_str());
    stack.status = Some(MallStackStatus {
        restore: Some(crate::crd::RestoreStatus {
            from: "20261206T053000Z".into(),
            phase: crate::crd::RestorePhase::Succeeded,
            job: ran["metadata"]["name"].as_str().map(str::to_owned),
            finished: Some("2026-12-06T06:00:00Z".into()),
            message: "restored 7 databases (9731 bytes compressed)".into(),
        }),
        ..MallStackStatus::default()
    });
    let mut expected = expected_applies(&wanted, true);
    expected.extend(wanted.cron_jobs.iter().map(entry));
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let script = {
        let (stack, ran) = (stack.clone(), ran.clone());
        async move {
            restore_reads(&mut server, vec![ran]).await;
            applies(&mut server, &expected, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            // No DELETE of the Job that ran: the status is next.
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(status["restore"]["phase"], "Succeeded");
        }
    };
    run(stack.clone(), ctx.clone(), script).await.unwrap();

    // spec.restore removed: the record goes.
    let mut done = stack.clone();
    done.spec.restore = None;
    let wanted = desired(&done, &cluster_secrets());
    let mut expected = expected_applies(&wanted, true);
    expected.extend(wanted.cron_jobs.iter().map(entry));
    let (client, mut server) = mock_client();
    let script = {
        let ran = ran.clone();
        async move {
            restore_reads(&mut server, vec![ran.clone()]).await;
            applies(&mut server, &expected, |b| settled(&stored(b))).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let path = format!("{JOBS}/{}", ran["metadata"]["name"].as_str().unwrap());
            deleted(deletion(&mut server, &path, &uid(&ran)).await);
            // The rest of the reconcile (its status) is not this test's business.
            let _ = server.apply(STATUS).await;
        }
    };
    let _ = run(done, context(client), script).await;
}
