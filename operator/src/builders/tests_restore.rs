//! A stack started from a backup (`spec.restore`): the restore Job, and what the status says of it;
//! a service paused for maintenance (`spec.services.<name>.paused`).

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::tests::{admitted, env_map};
use super::*;
use crate::crd::{ExternalSpec, RestorePhase, RestoreSpec, RestoreStatus, SecretKeyRef};
use crate::fixtures::{all_ready, completed_job, minimal_stack, ready_stateful_set};
use crate::status::{self, Observed};

const FROM: &str = "20261206T053000Z";

fn restoring() -> MallStack {
    let mut stack = minimal_stack();
    stack.spec.restore = Some(RestoreSpec { from: FROM.into(), claim_name: None, s3: None });
    stack
}

fn job_of(stack: &MallStack) -> Job {
    desired(stack, &ExistingSecrets::new()).restore.expect("a restore Job")
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn no_restore_asked_no_job_and_nothing_waits() {
    let stack = minimal_stack();
    assert!(desired(&stack, &ExistingSecrets::new()).restore.is_none());
    assert!(restore_done(&stack));
    let status = status::compute(&stack, &Observed::default(), None, None, "t0");
    assert!(status.restore.is_none());
    assert!(status.condition(status::RESTORED).is_none());
}

#[test]
fn the_job_checks_in_the_mall_image_then_loads_in_the_mysql_image() {
    let stack = restoring();
    let job = job_of(&stack);
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("shop-restore-"), "{name}");
    assert_eq!(name, restore_job_name(&stack, stack.spec.restore.as_ref().unwrap()));
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], RESTORE_COMPONENT);
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0), "one attempt: a refusal is final, a failed load was undone");
    let pod = pod_spec(&job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let uid = pod.security_context.as_ref().unwrap().run_as_user;
    assert_eq!(uid, Some(999), "the backup's files are its user's alone");

    let check = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(check.name, RESTORE_CHECK_CONTAINER);
    assert_eq!(check.image.as_deref(), Some("ghcr.io/example/mall:0.1.0"), "the image whose schema counts");
    assert_eq!(
        check.args.as_deref().unwrap(),
        ["restore-check", "--backup", "/backups/20261206T053000Z", "--plan", "/work/plan"]
    );
    let env = env_map(check);
    let root =
        env["MALL_DATABASE_ROOT_PASSWORD"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((root.name.as_str(), root.key.as_str()), ("shop-mysql", DB_ROOT_PASSWORD_KEY));
    assert_eq!(
        env["MALL_DATABASE_ADMIN_URL"].value.as_deref(),
        Some("mysql://root:$(MALL_DATABASE_ROOT_PASSWORD)@shop-mysql.mall.svc.cluster.local:3306")
    );

    let load = &pod.containers[0];
    assert_eq!(load.name, RESTORE_LOAD_CONTAINER);
    assert_eq!(load.image.as_deref(), Some("mysql:8.4"), "the managed database's image has the client");
    let command = load.command.as_ref().unwrap();
    assert_eq!(&command[..2], ["bash", "-c"]);
    assert_eq!(command[2], RESTORE_SCRIPT);
    let env = env_map(load);
    assert_eq!(env["RESTORE_DIR"].value.as_deref(), Some("/backups/20261206T053000Z"));
    assert_eq!(env["RESTORE_PLAN"].value.as_deref(), Some("/work/plan"));
    assert_eq!(env["BACKUP_HOST"].value.as_deref(), Some("shop-mysql.mall.svc.cluster.local"));

    // The claim is read, never written.
    let volumes = pod.volumes.as_ref().unwrap();
    let claim = volumes.iter().find_map(|v| v.persistent_volume_claim.as_ref()).unwrap();
    assert_eq!(claim.claim_name, "shop-backups");
    assert_eq!(claim.read_only, Some(true));
    for c in [check, load] {
        let mounts = c.volume_mounts.as_ref().unwrap();
        let backups = mounts.iter().find(|m| m.name == "backups").unwrap();
        assert_eq!((backups.mount_path.as_str(), backups.read_only), ("/backups", Some(true)), "{}", c.name);
        assert!(mounts.iter().any(|m| m.name == "work" && m.mount_path == "/work"), "{}", c.name);
    }
}

#[test]
fn another_backup_or_claim_is_another_job() {
    let stack = restoring();
    let first = job_of(&stack).metadata.name;
    let mut other = restoring();
    other.spec.restore.as_mut().unwrap().from = "20261207T053000Z".into();
    assert_ne!(job_of(&other).metadata.name, first);
    let mut elsewhere = restoring();
    elsewhere.spec.restore.as_mut().unwrap().claim_name = Some("old-shop-backups".into());
    let job = job_of(&elsewhere);
    assert_ne!(job.metadata.name, first);
    let claim =
        pod_spec(&job).volumes.as_ref().unwrap().iter().find_map(|v| v.persistent_volume_claim.clone());
    assert_eq!(claim.unwrap().claim_name, "old-shop-backups");
}

#[test]
fn the_restore_pod_may_reach_mysql() {
    let d = desired(&restoring(), &ExistingSecrets::new());
    let (from, _) = admitted(&d, "shop-mysql");
    assert!(from.unwrap().contains(RESTORE_COMPONENT));
}

#[test]
fn a_restore_needs_the_managed_database_and_a_backup_name() {
    let mut external = restoring();
    external.spec.database.managed = None;
    external.spec.database.external =
        Some(ExternalSpec { secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() } });
    assert_eq!(external.spec.validate().unwrap_err().field, "spec.restore");
    assert!(desired(&external, &ExistingSecrets::new()).restore.is_none());
    for bad in ["latest", "2026-12-06T05:30:00Z", "20261206T053000", "20261206X053000Z", "../../etc"] {
        let mut stack = restoring();
        stack.spec.restore.as_mut().unwrap().from = bad.into();
        assert_eq!(stack.spec.validate().unwrap_err().field, "spec.restore.from", "{bad}");
    }
    restoring().spec.validate().unwrap();
}

/// A ready MySQL, nothing else yet.
fn mysql_up(stack: &MallStack) -> Observed {
    let d = desired(stack, &ExistingSecrets::new());
    let mut observed = Observed::default();
    for sts in &d.stateful_sets {
        observed.stateful_sets.insert(sts.metadata.name.clone().unwrap(), ready_stateful_set(sts));
    }
    observed
}

fn failed(job: &Job) -> Job {
    Job {
        status: Some(JobStatus {
            failed: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("BackoffLimitExceeded".into()),
                message: Some("Job has reached the specified backoff limit".into()),
                last_transition_time: Some(Time("2026-12-06T06:00:00Z".parse::<Timestamp>().unwrap())),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        }),
        ..job.clone()
    }
}

fn terminated(name: &str, exit_code: i32, message: &str) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn pod_of(job: &Job, init: Vec<ContainerStatus>, main: Vec<ContainerStatus>) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(format!("{}-x1", job.metadata.name.as_deref().unwrap()));
    pod.metadata.labels =
        Some([("batch.kubernetes.io/job-name".to_owned(), job.metadata.name.clone().unwrap())].into());
    pod.status = Some(PodStatus {
        init_container_statuses: Some(init),
        container_statuses: Some(main),
        ..PodStatus::default()
    });
    pod
}

fn restore_of(stack: &MallStack, observed: &Observed) -> (RestoreStatus, crate::crd::MallStackStatus) {
    let status = status::compute(stack, observed, None, stack.status.as_ref(), "t1");
    (status.restore.clone().unwrap(), status)
}

#[test]
fn while_restoring_the_stack_says_so_and_is_not_ready() {
    let stack = restoring();
    let (restore, status) = restore_of(&stack, &Observed::default());
    assert_eq!(restore.phase, RestorePhase::Pending);
    assert_eq!(restore.message, "waiting for the managed MySQL before restoring");

    let mut observed = mysql_up(&stack);
    let job = job_of(&stack);
    observed.jobs.insert(job.metadata.name.clone().unwrap(), job.clone());
    let (restore, status2) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Running);
    assert_eq!(restore.job, job.metadata.name);
    assert!(restore.message.starts_with("checking the backup"), "{}", restore.message);
    for s in [&status, &status2] {
        let ready = s.condition(status::READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(s.condition(status::RESTORED).unwrap().status, "False");
        assert_eq!(s.condition(status::DEGRADED).unwrap().status, "False", "waiting is no problem");
    }
    assert_eq!(status2.condition(status::READY).unwrap().reason, "Restoring");
    assert_eq!(status2.problem.as_deref(), Some(restore.message.as_str()));
    assert!(
        status2.condition(status::MIGRATIONS_COMPLETE).unwrap().message.contains("wait for the restore"),
        "{:?}",
        status2.condition(status::MIGRATIONS_COMPLETE)
    );

    observed.pods.push(pod_of(&job, vec![terminated(RESTORE_CHECK_CONTAINER, 0, "")], vec![]));
    let (restore, _) = restore_of(&stack, &observed);
    assert!(restore.message.starts_with("loading the dumps"), "{}", restore.message);
}

#[test]
fn a_refusal_is_told_in_status_with_the_checks_reason() {
    let stack = restoring();
    let mut observed = mysql_up(&stack);
    let job = failed(&job_of(&stack));
    let refusal =
        "refused: database mall_order already has 5 tables: a restore goes only into an empty database";
    observed.pods.push(pod_of(
        &job,
        vec![terminated(RESTORE_CHECK_CONTAINER, REFUSAL_EXIT_CODE, refusal)],
        vec![],
    ));
    observed.jobs.insert(job.metadata.name.clone().unwrap(), job);
    let (restore, status) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Refused);
    assert!(restore.message.starts_with("database mall_order already has 5 tables"), "{}", restore.message);
    assert!(
        restore.message.ends_with("to go on, name another backup or remove spec.restore"),
        "{}",
        restore.message
    );
    assert_eq!(restore.finished.as_deref(), Some("2026-12-06T06:00:00Z"));
    let degraded = status.condition(status::DEGRADED).unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "RestoreRefused"));
    assert_eq!(status.condition(status::READY).unwrap().reason, "RestoreRefused");
    let problem = status.problem.clone().unwrap();
    assert!(problem.starts_with("RestoreRefused: backup 20261206T053000Z: database mall_order"), "{problem}");
    assert_eq!(status.condition(status::RESTORED).unwrap().reason, "Refused");

    // A newer schema is a refusal too, told the same way.
    let mut observed = mysql_up(&stack);
    let job = failed(&job_of(&stack));
    let newer = "refused: backup 20261206T053000Z was made by a newer schema than this image knows";
    observed.pods.push(pod_of(
        &job,
        vec![terminated(RESTORE_CHECK_CONTAINER, REFUSAL_EXIT_CODE, newer)],
        vec![],
    ));
    observed.jobs.insert(job.metadata.name.clone().unwrap(), job);
    let (restore, _) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Refused);
    assert!(restore.message.contains("newer schema"), "{}", restore.message);
}

#[test]
fn a_failed_load_is_failed_not_refused_and_says_how_to_retry() {
    let stack = restoring();
    let mut observed = mysql_up(&stack);
    let job = failed(&job_of(&stack));
    let name = job.metadata.name.clone().unwrap();
    observed.pods.push(pod_of(
        &job,
        vec![terminated(RESTORE_CHECK_CONTAINER, 0, "")],
        vec![terminated(
            RESTORE_LOAD_CONTAINER,
            1,
            "restore: loading mall_order from mall_order.sql.gz failed",
        )],
    ));
    observed.jobs.insert(name.clone(), job);
    let (restore, status) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Failed);
    assert!(restore.message.starts_with("load failed: restore: loading mall_order"), "{}", restore.message);
    assert!(restore.message.ends_with(&format!("delete Job {name} to try again")), "{}", restore.message);
    assert_eq!(status.condition(status::DEGRADED).unwrap().reason, "RestoreFailed");
}

#[test]
fn a_restore_that_succeeded_is_remembered_once_its_job_is_gone() {
    let mut stack = restoring();
    let d = desired(&stack, &ExistingSecrets::new());
    let mut observed = all_ready(&d);
    let job = completed_job(d.restore.as_ref().unwrap());
    let report = r#"{"restored":"20261206T053000Z","databases":7,"bytes":9731}"#;
    observed.pods.push(pod_of(
        &job,
        vec![terminated(RESTORE_CHECK_CONTAINER, 0, "")],
        vec![terminated(RESTORE_LOAD_CONTAINER, 0, report)],
    ));
    observed.jobs.insert(job.metadata.name.clone().unwrap(), job);
    let (restore, status) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Succeeded);
    assert_eq!(restore.message, "restored 7 databases (9731 bytes compressed)");
    assert_eq!(status.condition(status::RESTORED).unwrap().status, "True");
    assert_eq!(status.condition(status::READY).unwrap().status, "True", "{:?}", status.problem);
    assert!(!restore_done(&stack), "status not written yet: the Job tells");

    stack.status = Some(status);
    assert!(restore_done(&stack));
    let gone = all_ready(&d);
    let (kept, status) = restore_of(&stack, &gone);
    assert_eq!(kept, restore, "remembered as it was");
    assert_eq!(status.condition(status::READY).unwrap().status, "True");

    // Another backup named later is another restore (which the check will refuse: there is data).
    stack.spec.restore.as_mut().unwrap().from = "20261207T053000Z".into();
    assert!(!restore_done(&stack));
}

#[test]
fn a_paused_service_scales_to_zero_without_autoscaler_or_budget_and_says_so() {
    let mut stack = minimal_stack();
    stack.spec.services.payment.replicas = 3;
    stack.spec.services.payment.autoscaling = Some(crate::crd::AutoscalingSpec {
        min_replicas: 2,
        max_replicas: 5,
        target_cpu_utilization_percentage: 70,
    });
    let before = desired(&stack, &ExistingSecrets::new());
    assert!(before.autoscalers.iter().any(|a| a.metadata.name.as_deref() == Some("shop-payment")));
    assert!(before.pod_disruption_budgets.iter().any(|a| a.metadata.name.as_deref() == Some("shop-payment")));

    stack.spec.services.payment.paused = true;
    let d = desired(&stack, &ExistingSecrets::new());
    let (_, _, payment) = d.migrations.iter().find(|(s, _, _)| *s == Service::Payment).unwrap();
    assert_eq!(payment.spec.as_ref().unwrap().replicas, Some(0));
    assert!(d.autoscalers.iter().all(|a| a.metadata.name.as_deref() != Some("shop-payment")));
    assert!(d.pod_disruption_budgets.iter().all(|a| a.metadata.name.as_deref() != Some("shop-payment")));
    let (_, _, order) = d.migrations.iter().find(|(s, _, _)| *s == Service::Order).unwrap();
    assert_eq!(order.spec.as_ref().unwrap().replicas, Some(1), "the others run on");

    // Still scaling down: said so; then acknowledged, and the stack is Ready without it.
    let mut observed = all_ready(&d);
    let name = "shop-payment".to_owned();
    let mut running = observed.deployments[&name].clone();
    running.spec.as_mut().unwrap().replicas = Some(2);
    running.status.as_mut().unwrap().ready_replicas = Some(2);
    observed.deployments.insert(name.clone(), running);
    let status = status::compute(&stack, &observed, None, None, "t0");
    let payment = &status.components["payment"];
    assert_eq!(payment.reason.as_deref(), Some(status::PAUSED));
    assert_eq!(
        payment.message.as_deref(),
        Some("spec.services.payment.paused: scaling to zero, 2 pods ready")
    );

    let observed = all_ready(&d);
    let status = status::compute(&stack, &observed, None, None, "t0");
    let payment = &status.components["payment"];
    assert_eq!((payment.ready, payment.desired), (0, 0));
    assert_eq!(payment.message.as_deref(), Some("spec.services.payment.paused: scaled to zero"));
    let ready = status.condition(status::READY).unwrap();
    assert_eq!(ready.status, "True");
    assert!(ready.message.ends_with("(paused: payment)"), "{}", ready.message);

    stack.spec.services.payment.paused = false;
    let status =
        status::compute(&stack, &all_ready(&desired(&stack, &ExistingSecrets::new())), None, None, "t0");
    assert!(status.components["payment"].reason.is_none());
}

#[test]
fn from_a_bucket_the_backup_is_pulled_first() {
    use crate::crd::{BackupRetention, BackupS3, BackupSpec, BackupTarget};
    let mut stack = restoring();
    let claim_job = job_of(&stack).metadata.name;
    stack.spec.backup = Some(BackupSpec {
        schedule: "30 5 * * *".into(),
        retention: BackupRetention::default(),
        target: BackupTarget { pvc: None, s3: Some(BackupS3 { secret_name: "shop-bucket".into() }) },
        image: None,
    });
    let job = job_of(&stack);
    assert_ne!(job.metadata.name, claim_job, "another source, another Job");
    let pod = pod_spec(&job);
    let init = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [RESTORE_PULL_CONTAINER, RESTORE_CHECK_CONTAINER], "pulled, then checked");
    assert_eq!(init[0].args.as_deref().unwrap(), ["backup-pull", "--name", FROM, "--dir", "/backups"]);
    let bucket = env_map(&init[0])["MALL_S3_BUCKET"].value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(bucket.name, "shop-bucket");
    let backups = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "backups").unwrap();
    assert!(backups.empty_dir.is_some(), "scratch space, no claim");
    let pull_mount = init[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "backups").unwrap();
    assert_eq!(pull_mount.read_only, None, "the pull writes");

    // Another bucket named in spec.restore wins; a claim and a bucket together are refused.
    stack.spec.restore.as_mut().unwrap().s3 = Some(BackupS3 { secret_name: "old-bucket".into() });
    assert_eq!(
        restore_source(&stack, stack.spec.restore.as_ref().unwrap()),
        RestoreSource::Bucket(BackupS3 { secret_name: "old-bucket".into() })
    );
    stack.spec.restore.as_mut().unwrap().claim_name = Some("old-shop-backups".into());
    assert_eq!(stack.spec.validate().unwrap_err().field, "spec.restore");
}

#[test]
fn a_missing_backup_in_the_bucket_is_a_refusal() {
    use crate::crd::BackupS3;
    let mut stack = restoring();
    stack.spec.restore.as_mut().unwrap().s3 = Some(BackupS3 { secret_name: "shop-bucket".into() });
    let mut observed = mysql_up(&stack);
    let job = failed(&job_of(&stack));
    let refusal = "refused: no backup 20261206T053000Z in bucket shop (there: 20261205T053000Z)";
    observed.pods.push(pod_of(
        &job,
        vec![terminated(RESTORE_PULL_CONTAINER, REFUSAL_EXIT_CODE, refusal)],
        vec![],
    ));
    observed.jobs.insert(job.metadata.name.clone().unwrap(), job);
    let (restore, _) = restore_of(&stack, &observed);
    assert_eq!(restore.phase, RestorePhase::Refused);
    assert!(restore.message.starts_with("no backup 20261206T053000Z in bucket shop"), "{}", restore.message);
}

#[test]
fn a_restart_is_acknowledged_once_its_rollout_is_done() {
    let mut stack = minimal_stack();
    stack.metadata.annotations = Some([(format!("{RESTART_ANNOTATION}-gateway"), "t1".to_owned())].into());
    let d = desired(&stack, &ExistingSecrets::new());
    let mut observed = all_ready(&d);
    // The new template is applied; one new pod is up, the old one not gone yet.
    let name = "shop-gateway".to_owned();
    let mut rolling = observed.deployments[&name].clone();
    let status = rolling.status.as_mut().unwrap();
    status.replicas = Some(2);
    status.updated_replicas = Some(1);
    observed.deployments.insert(name.clone(), rolling);
    let mut previous = crate::crd::MallStackStatus::default();
    previous.components.insert(
        "gateway".into(),
        crate::crd::ComponentStatus { restarted: Some("t0".into()), ..Default::default() },
    );
    let during = status::compute(&stack, &observed, None, Some(&previous), "t1");
    assert_eq!(during.components["gateway"].restarted.as_deref(), Some("t0"), "not yet: what was before");
    let first = status::compute(&stack, &observed, None, None, "t1");
    assert_eq!(first.components["gateway"].restarted, None);

    let done = status::compute(&stack, &all_ready(&d), None, Some(&during), "t2");
    assert_eq!(done.components["gateway"].restarted.as_deref(), Some("t1"));
    assert_eq!(done.components["cart"].restarted, None, "only the gateway was asked");
}
