//! The backup claim and CronJob (`spec.backup`), and the on-demand Job made from it.

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::tests::{admitted, all_metadata, env_map, set_of};
use super::*;
use crate::crd::{
    BackupPvc, BackupRetention, BackupS3, BackupSpec, BackupTarget, ExternalSpec, SecretKeyRef,
};
use crate::fixtures::{full_stack, minimal_stack};

fn backup_spec() -> BackupSpec {
    BackupSpec {
        schedule: "30 5 * * *".into(),
        retention: BackupRetention { count: 4, max_age_days: Some(30) },
        target: BackupTarget {
            pvc: Some(BackupPvc { size: "20Gi".into(), storage_class_name: Some("fast".into()) }),
            s3: None,
        },
        image: None,
    }
}

fn backed_up() -> MallStack {
    let mut stack = minimal_stack();
    stack.spec.backup = Some(backup_spec());
    stack
}

fn built(stack: &MallStack) -> (PersistentVolumeClaim, CronJob) {
    let d = desired(stack, &ExistingSecrets::new());
    assert_eq!((d.persistent_volume_claims.len(), d.cron_jobs.len()), (1, 1));
    (d.persistent_volume_claims[0].clone(), d.cron_jobs[0].clone())
}

fn pod_of(cron_job: &CronJob) -> &k8s_openapi::api::core::v1::PodSpec {
    cron_job.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn no_backup_spec_no_claim_and_no_cron_job() {
    for stack in [minimal_stack(), full_stack()] {
        let d = desired(&stack, &ExistingSecrets::new());
        assert!(d.persistent_volume_claims.is_empty());
        assert!(d.cron_jobs.is_empty());
    }
    assert_eq!(pending_backup_request(&minimal_stack()), None);
}

#[test]
fn the_cron_job_runs_the_script_on_schedule_one_at_a_time() {
    let stack = backed_up();
    let (_, cron_job) = built(&stack);
    assert_eq!(cron_job.metadata.name.as_deref(), Some("shop-backup"));
    assert_eq!(cron_job.metadata.namespace.as_deref(), Some("mall"));
    let spec = cron_job.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "30 5 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!((spec.successful_jobs_history_limit, spec.failed_jobs_history_limit), (Some(3), Some(3)));
    assert_eq!(spec.starting_deadline_seconds, Some(STARTING_DEADLINE_SECONDS));
    let job = spec.job_template.spec.as_ref().unwrap();
    assert_eq!(job.backoff_limit, Some(BACKUP_BACKOFF_LIMIT));
    assert!(job.backoff_limit.unwrap() <= 3);
    assert_eq!(job.active_deadline_seconds, Some(ACTIVE_DEADLINE_SECONDS));

    let pod = pod_of(&cron_job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("mysql:8.4"), "the managed database's image by default");
    let command = c.command.as_ref().unwrap();
    assert_eq!(&command[..2], ["bash", "-c"]);
    assert_eq!(command[2], BACKUP_SCRIPT);
    assert!(BACKUP_SCRIPT.starts_with("#!/usr/bin/env bash"));
    assert!(BACKUP_SCRIPT.contains("set -euo pipefail"));

    let mut other = backed_up();
    other.spec.backup.as_mut().unwrap().image = Some("registry.example/mysql-tools:8.4".into());
    let (_, cron_job) = built(&other);
    assert_eq!(pod_of(&cron_job).containers[0].image.as_deref(), Some("registry.example/mysql-tools:8.4"));
}

#[test]
fn the_script_is_told_the_databases_retention_and_server_and_reads_root_from_the_secret() {
    let (_, cron_job) = built(&backed_up());
    let env = env_map(&pod_of(&cron_job).containers[0]);
    let plain = |name: &str| env[name].value.clone().unwrap_or_else(|| panic!("{name} is a plain value"));
    assert_eq!(
        plain("BACKUP_DATABASES"),
        "mall_auth mall_user mall_product mall_cart mall_order mall_payment mall_checkout"
    );
    assert_eq!(
        plain("BACKUP_DATABASES").split(' ').map(str::to_owned).collect::<Vec<_>>(),
        Service::ALL.map(database_user),
        "the databases the migration Jobs make"
    );
    assert_eq!(plain("BACKUP_HOST"), "shop-mysql.mall.svc.cluster.local");
    assert_eq!(plain("BACKUP_PORT"), "3306");
    assert_eq!(plain("BACKUP_USER"), "root");
    assert_eq!(plain("BACKUP_DIR"), "/backups");
    assert_eq!(plain("BACKUP_RETENTION_COUNT"), "4");
    assert_eq!(plain("BACKUP_MAX_AGE_DAYS"), "30");
    assert_eq!(plain("BACKUP_IMAGE_TAG"), "0.1.0");
    let password = env["BACKUP_PASSWORD"].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((password.name.as_str(), password.key.as_str()), ("shop-mysql", DB_ROOT_PASSWORD_KEY));
    assert!(env["BACKUP_PASSWORD"].value.is_none(), "never the password itself");

    // The default retention: seven, no age limit.
    let mut defaults = backed_up();
    defaults.spec.backup.as_mut().unwrap().retention = BackupRetention::default();
    let (_, cron_job) = built(&defaults);
    let env = env_map(&pod_of(&cron_job).containers[0]);
    assert_eq!(env["BACKUP_RETENTION_COUNT"].value.as_deref(), Some("7"));
    assert!(!env.contains_key("BACKUP_MAX_AGE_DAYS"));
}

#[test]
fn the_pod_runs_locked_down_as_mysql_and_writes_to_the_claim() {
    let (_, cron_job) = built(&backed_up());
    let pod = pod_of(&cron_job);
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        (security.run_as_user, security.run_as_group, security.fs_group),
        (Some(999), Some(999), Some(999))
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = &pod.containers[0];
    let container = c.security_context.as_ref().unwrap();
    assert_eq!(container.read_only_root_filesystem, Some(true));
    assert_eq!(container.allow_privilege_escalation, Some(false));
    assert_eq!(container.run_as_non_root, Some(true));
    assert_eq!(container.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));

    let mounts: Vec<(&str, &str)> =
        c.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
    assert_eq!(mounts, [("backups", "/backups"), ("tmp", "/tmp")]);
    let volumes = pod.volumes.as_ref().unwrap();
    let claim = volumes.iter().find(|v| v.name == "backups").unwrap();
    assert_eq!(claim.persistent_volume_claim.as_ref().unwrap().claim_name, "shop-backups");
    assert!(volumes.iter().find(|v| v.name == "tmp").unwrap().empty_dir.is_some());
}

#[test]
fn backup_objects_and_pods_are_labelled_and_owned() {
    let mut stack = backed_up();
    stack.spec.database.managed.as_mut().unwrap().retain_on_delete = false;
    let (claim, cron_job) = built(&stack);
    for meta in [&claim.metadata, &cron_job.metadata] {
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "backup");
        assert_eq!(labels["app.kubernetes.io/instance"], "shop");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "mall-operator");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("MallStack", "shop", Some(true))
        );
        assert_eq!(owner.uid, "3f1c9a52-0000-4000-8000-000000000001");
    }
    // The Jobs and their pods carry the stack's labels (listed with its children) and the component.
    let spec = cron_job.spec.as_ref().unwrap();
    for labels in [
        spec.job_template.metadata.as_ref().unwrap().labels.as_ref().unwrap(),
        spec.job_template.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap(),
    ] {
        assert_eq!(labels, &super::labels(&stack, "backup"));
    }
    let without = all_metadata(&desired(&minimal_stack(), &ExistingSecrets::new())).len();
    assert_eq!(all_metadata(&desired(&stack, &ExistingSecrets::new())).len(), without + 2);

    // Kept with the database's volume: no owner, like the MySQL Secrets.
    let (claim, cron_job) = built(&backed_up());
    assert!(claim.metadata.owner_references.is_none(), "backups outlive the stack with retainOnDelete");
    assert!(cron_job.metadata.owner_references.is_some());
}

#[test]
fn the_claim_has_the_size_and_class_asked_for() {
    let (claim, _) = built(&backed_up());
    assert_eq!(claim.metadata.name.as_deref(), Some("shop-backups"));
    let spec = claim.spec.as_ref().unwrap();
    assert_eq!(spec.access_modes.as_deref(), Some(&["ReadWriteOnce".to_owned()][..]));
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "20Gi");

    // Defaults: 5Gi, the cluster's default class (a sparse manifest fills them in too).
    let sparse: BackupSpec = serde_json::from_value(serde_json::json!({"schedule": "0 3 * * *"})).unwrap();
    assert_eq!(sparse.retention, BackupRetention { count: 7, max_age_days: None });
    assert_eq!(sparse.target.pvc, Some(BackupPvc { size: "5Gi".into(), storage_class_name: None }));
    assert_eq!(sparse.image, None);
    let mut stack = minimal_stack();
    stack.spec.backup = Some(sparse);
    let (claim, _) = built(&stack);
    let spec = claim.spec.as_ref().unwrap();
    assert_eq!(spec.storage_class_name, None);
    assert_eq!(spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "5Gi");
    let given: BackupSpec =
        serde_json::from_value(serde_json::json!({"schedule": "0 3 * * *", "target": {"pvc": {}}})).unwrap();
    assert_eq!(given.pvc().size, "5Gi");
}

#[test]
fn mysql_admits_the_backup_pods() {
    let d = desired(&backed_up(), &ExistingSecrets::new());
    let (from, port) = admitted(&d, "shop-mysql");
    assert!(from.unwrap().is_superset(&set_of(&["backup", "migrate"])));
    assert_eq!(port, 3306);
}

#[test]
fn an_on_demand_job_is_the_cron_jobs_template_named_after_the_token() {
    let stack = backed_up();
    let (_, mut cron_job) = built(&stack);
    cron_job.metadata.uid = Some("uid-cron".into());
    let job = backup_job(&stack, &cron_job, "2026-12-06T05:30:00Z");
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("shop-backup-") && name.len() == "shop-backup-".len() + 10, "{name}");
    assert_eq!(name, backup_job_name(&stack, "2026-12-06T05:30:00Z"));
    assert_eq!(backup_job_name(&stack, "2026-12-06T05:30:00Z"), name, "the same token, the same Job");
    assert_ne!(backup_job_name(&stack, "another"), name);
    assert_eq!(job.spec, cron_job.spec.as_ref().unwrap().job_template.spec);
    assert_eq!(job.metadata.annotations.as_ref().unwrap()[BACKUP_REQUEST_ANNOTATION], "2026-12-06T05:30:00Z");
    assert_eq!(job.metadata.labels.as_ref().unwrap(), &super::labels(&stack, "backup"));
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("CronJob", "shop-backup", "uid-cron")
    );
    assert_eq!((owner.api_version.as_str(), owner.controller), ("batch/v1", Some(true)));
}

#[test]
fn a_backup_is_pending_while_the_annotation_differs_from_the_last_request() {
    let mut stack = backed_up();
    assert_eq!(pending_backup_request(&stack), None);
    stack.metadata.annotations = Some([(BACKUP_NOW_ANNOTATION.to_owned(), "t1".to_owned())].into());
    assert_eq!(pending_backup_request(&stack).as_deref(), Some("t1"));
    stack.status = Some(crate::crd::MallStackStatus {
        backup: Some(crate::crd::BackupStatus { last_request: Some("t1".into()), ..Default::default() }),
        ..Default::default()
    });
    assert_eq!(pending_backup_request(&stack), None, "acted on already");
    stack.metadata.annotations = Some([(BACKUP_NOW_ANNOTATION.to_owned(), "t2".to_owned())].into());
    assert_eq!(pending_backup_request(&stack).as_deref(), Some("t2"));
    stack.spec.backup = None;
    assert_eq!(pending_backup_request(&stack), None, "no backups without spec.backup");
}

#[test]
fn the_spec_is_refused_without_a_managed_database_a_schedule_or_with_two_targets() {
    backed_up().spec.validate().unwrap();
    let check = |edit: &dyn Fn(&mut MallStack), field: &str, says: &str| {
        let mut stack = backed_up();
        edit(&mut stack);
        let err = stack.spec.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(says), "{err}");
    };
    check(
        &|s| {
            s.spec.database.managed = None;
            s.spec.database.external =
                Some(ExternalSpec { secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() } });
        },
        "spec.backup",
        "managed",
    );
    for schedule in ["", "@daily", "30 5 * *", "30 5 * * * *", "30 5 * * mon;rm"] {
        check(&|s| s.spec.backup.as_mut().unwrap().schedule = schedule.into(), "spec.backup.schedule", "");
    }
    for good in ["*/15 * * * *", "0 3 * * 1-5", "0 0 1,15 * ?", "30 5 * * SUN"] {
        let mut stack = backed_up();
        stack.spec.backup.as_mut().unwrap().schedule = good.into();
        stack.spec.validate().unwrap();
    }
    check(&|s| s.spec.backup.as_mut().unwrap().retention.count = 0, "spec.backup.retention.count", "1-1000");
    check(
        &|s| s.spec.backup.as_mut().unwrap().retention.max_age_days = Some(0),
        "spec.backup.retention.maxAgeDays",
        "",
    );
    check(
        &|s| s.spec.backup.as_mut().unwrap().target.s3 = Some(BackupS3 { secret_name: "bucket".into() }),
        "spec.backup.target",
        "one of pvc or s3",
    );
    check(
        &|s| {
            s.spec.backup.as_mut().unwrap().target =
                BackupTarget { pvc: None, s3: Some(BackupS3 { secret_name: String::new() }) }
        },
        "spec.backup.target.s3.secretName",
        "empty",
    );
    check(&|s| s.spec.backup.as_mut().unwrap().image = Some(String::new()), "spec.backup.image", "empty");

    // The API server's CEL rules say the same.
    use kube::core::cel::validate_cel;
    assert!(validate_cel(&backed_up()).is_ok());
    let mut external = backed_up();
    external.spec.database.managed = None;
    external.spec.database.external =
        Some(ExternalSpec { secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() } });
    assert!(validate_cel(&external).is_err());
    let mut both = backed_up();
    both.spec.backup.as_mut().unwrap().target.s3 = Some(BackupS3 { secret_name: "bucket".into() });
    assert!(validate_cel(&both).is_err());
    let mut s3 = backed_up();
    s3.spec.backup.as_mut().unwrap().target =
        BackupTarget { pvc: None, s3: Some(BackupS3 { secret_name: "bucket".into() }) };
    s3.spec.validate().unwrap();
    assert!(validate_cel(&s3).is_ok());
}

fn to_bucket() -> MallStack {
    let mut stack = backed_up();
    stack.spec.backup.as_mut().unwrap().target =
        BackupTarget { pvc: None, s3: Some(BackupS3 { secret_name: "shop-bucket".into() }) };
    stack
}

#[test]
fn to_a_bucket_the_dump_goes_to_scratch_space_and_mall_backup_push_uploads_and_prunes() {
    let stack = to_bucket();
    let d = desired(&stack, &ExistingSecrets::new());
    assert!(d.persistent_volume_claims.is_empty(), "no claim for a bucket");
    let pod = pod_of(&d.cron_jobs[0]);
    let dump = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(dump.image.as_deref(), Some("mysql:8.4"));
    assert_eq!(dump.command.as_ref().unwrap()[2], BACKUP_SCRIPT);
    assert_eq!(env_map(dump)["BACKUP_DIR"].value.as_deref(), Some(BACKUP_MOUNT_PATH));
    let push = &pod.containers[0];
    assert_eq!(push.name, "push");
    assert_eq!(push.image.as_deref(), Some("ghcr.io/example/mall:0.1.0"));
    assert_eq!(
        push.args.as_deref().unwrap(),
        ["backup-push", "--dir", "/backups", "--keep", "4", "--max-age-days", "30"],
        "the retention is the bucket's; the one backup in the scratch volume is pushed"
    );
    let env = env_map(push);
    for (var, key, optional) in [
        ("MALL_S3_ENDPOINT", "endpoint", false),
        ("MALL_S3_BUCKET", "bucket", false),
        ("MALL_S3_ACCESS_KEY_ID", "accessKeyId", false),
        ("MALL_S3_SECRET_ACCESS_KEY", "secretAccessKey", false),
        ("MALL_S3_REGION", "region", true),
        ("MALL_S3_PREFIX", "prefix", true),
    ] {
        let r = env[var].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), r.optional),
            ("shop-bucket", key, Some(optional)),
            "{var}"
        );
    }
    assert!(
        !env_map(dump).contains_key("MALL_S3_SECRET_ACCESS_KEY"),
        "the dump never sees the bucket's keys"
    );
    let backups = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "backups").unwrap();
    assert!(backups.empty_dir.is_some() && backups.persistent_volume_claim.is_none());
    let mount = push.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "backups").unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(push.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));

    // An on-demand backup is the same pod.
    let job = backup_job(&stack, &d.cron_jobs[0], "t1");
    assert_eq!(job.spec.unwrap().template.spec.as_ref(), Some(pod));
}
