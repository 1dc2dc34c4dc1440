//! Scheduled backups of the managed MySQL (`spec.backup`): the claim `<stack>-backups` they are written
//! to, and the CronJob `<stack>-backup` whose pods run [`BACKUP_SCRIPT`] (`mysqldump` of every service's
//! database, gzipped, with a `manifest.json`; see the script's header). An on-demand backup
//! (`mall.example.com/backup-now`) is a Job made from the CronJob's template ([`backup_job`]).
//!
//! The pods run as the MySQL image's `mysql` user (the default image is the managed database's, which
//! has `mysqldump`); `fsGroup` makes the claim writable to it. They carry the component `backup`, which
//! the MySQL NetworkPolicy admits.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, LocalObjectReference, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::secrets::{DB_ROOT_PASSWORD_KEY, database_user, mysql_secret_name};
use super::workloads::{
    MYSQL_PORT, container_security, from_secret, mall_container, pod_security, service_host, value,
};
use super::{child_name, labels, metadata, short_hash};
use crate::crd::{BackupS3, BackupSpec, MallStack, ManagedDatabase, Service};

/// The script each backup pod runs (`bash -c`).
pub const BACKUP_SCRIPT: &str = concat!(include_str!("mysql_client.sh"), include_str!("backup.sh"));
/// The pods' component label (admitted by the MySQL NetworkPolicy).
pub const BACKUP_COMPONENT: &str = "backup";
/// On the MallStack: a token (any string, e.g. a time); a new one asks for a backup now.
pub const BACKUP_NOW_ANNOTATION: &str = "mall.example.com/backup-now";
/// On an on-demand backup Job: the token it was made for.
pub const BACKUP_REQUEST_ANNOTATION: &str = "mall.example.com/backup-request";
/// Where the claim is mounted in the pods.
pub const BACKUP_MOUNT_PATH: &str = "/backups";
/// The uid of the `mysql` user in the official MySQL image.
pub(crate) const BACKUP_UID: i64 = 999;
/// A run not started within this long after its time is skipped (the next one comes).
pub const STARTING_DEADLINE_SECONDS: i64 = 600;
/// A run taking longer is stopped and counts as failed.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 3600;
/// Pods tried per run.
pub const BACKUP_BACKOFF_LIMIT: i32 = 2;

/// `<stack>-backups`: the claim backups are written to.
pub fn backup_claim_name(stack: &MallStack) -> String {
    child_name(stack, "backups")
}

/// `<stack>-backup`: the CronJob.
pub fn backup_cron_job_name(stack: &MallStack) -> String {
    child_name(stack, "backup")
}

/// `<stack>-backup-<hash of token>`: the Job of an on-demand backup (the same token, the same name).
pub fn backup_job_name(stack: &MallStack, token: &str) -> String {
    child_name(stack, &format!("backup-{}", &short_hash(token.as_bytes())[..10]))
}

/// The databases backed up: each service's (`mall_<service>`, made by its migration Job).
pub fn backup_databases() -> Vec<String> {
    Service::ALL.into_iter().map(database_user).collect()
}

/// The claim (none when backups go to a bucket) and the CronJob of `stack`'s backups; none without
/// `spec.backup` (or without a managed database, which the spec's validation refuses anyway).
pub(crate) fn backups(stack: &MallStack) -> Option<(Option<PersistentVolumeClaim>, CronJob)> {
    let backup = stack.spec.backup.as_ref()?;
    let db = stack.spec.database.managed.as_ref()?;
    let claim = backup.target.s3.is_none().then(|| backup_claim(stack, backup, db));
    Some((claim, backup_cron_job(stack, backup, db)))
}

/// The bucket settings `mall backup-push` and `mall backup-pull` read, from the keys of the Secret
/// `secret` (`region` and `prefix` may be left out).
pub(crate) fn s3_env(secret: &BackupS3) -> Vec<EnvVar> {
    let key = |name: &str, key: &str, optional: bool| {
        let mut var = from_secret(name, &secret.secret_name, key);
        if let Some(selector) = var.value_from.as_mut().and_then(|v| v.secret_key_ref.as_mut()) {
            selector.optional = Some(optional);
        }
        var
    };
    vec![
        key("MALL_S3_ENDPOINT", "endpoint", false),
        key("MALL_S3_BUCKET", "bucket", false),
        key("MALL_S3_ACCESS_KEY_ID", "accessKeyId", false),
        key("MALL_S3_SECRET_ACCESS_KEY", "secretAccessKey", false),
        key("MALL_S3_REGION", "region", true),
        key("MALL_S3_PREFIX", "prefix", true),
    ]
}

/// The volume backups are written to (or read from): the claim `claim`, else (a bucket) scratch space.
pub(crate) fn backups_volume(claim: Option<String>, read_only: bool) -> Volume {
    match claim {
        Some(claim_name) => Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name,
                read_only: Some(read_only),
            }),
            ..Volume::default()
        },
        None => Volume {
            name: "backups".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    }
}

/// The claim: kept when the stack is deleted as long as the database's volume is (`retainOnDelete`).
fn backup_claim(stack: &MallStack, backup: &BackupSpec, db: &ManagedDatabase) -> PersistentVolumeClaim {
    let pvc = backup.pvc();
    let mut meta = metadata(stack, backup_claim_name(stack), BACKUP_COMPONENT);
    if db.retain_on_delete {
        meta.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: pvc.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(pvc.size))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn backup_env(stack: &MallStack, backup: &BackupSpec) -> Vec<EnvVar> {
    let mut env = vec![
        value("BACKUP_DATABASES", backup_databases().join(" ")),
        value("BACKUP_HOST", service_host(stack, "mysql")),
        value("BACKUP_PORT", MYSQL_PORT.to_string()),
        value("BACKUP_USER", "root"),
        from_secret("BACKUP_PASSWORD", &mysql_secret_name(stack), DB_ROOT_PASSWORD_KEY),
        value("BACKUP_DIR", BACKUP_MOUNT_PATH),
        value("BACKUP_RETENTION_COUNT", backup.retention.count.to_string()),
    ];
    if let Some(days) = backup.retention.max_age_days {
        env.push(value("BACKUP_MAX_AGE_DAYS", days.to_string()));
    }
    env.push(value("BACKUP_IMAGE_TAG", stack.spec.image.tag.clone()));
    env
}

fn backup_cron_job(stack: &MallStack, backup: &BackupSpec, db: &ManagedDatabase) -> CronJob {
    let dump = Container {
        name: BACKUP_COMPONENT.into(),
        image: Some(backup.image.clone().unwrap_or_else(|| db.image.clone())),
        command: Some(vec!["bash".into(), "-c".into(), BACKUP_SCRIPT.into(), "backup".into()]),
        env: Some(backup_env(stack, backup)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "backups".into(),
                mount_path: BACKUP_MOUNT_PATH.into(),
                ..VolumeMount::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    // To a bucket: the dump goes to scratch space in an init container, then `mall backup-push` (the
    // pod's container, whose last line names the backup) uploads it and prunes the bucket.
    let (init_containers, containers, claim) = match &backup.target.s3 {
        None => (None, vec![dump], Some(backup_claim_name(stack))),
        Some(s3) => {
            let mut args = vec!["backup-push".to_owned(), "--dir".into(), BACKUP_MOUNT_PATH.into()];
            args.extend(["--keep".to_owned(), backup.retention.count.to_string()]);
            if let Some(days) = backup.retention.max_age_days {
                args.extend(["--max-age-days".to_owned(), days.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut push = mall_container(stack, "push", &args, s3_env(s3));
            push.volume_mounts.get_or_insert_default().push(VolumeMount {
                name: "backups".into(),
                mount_path: BACKUP_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            push.termination_message_policy = Some("FallbackToLogsOnError".into());
            (Some(vec![dump]), vec![push], None)
        }
    };
    let pull_secrets = &stack.spec.image.pull_secrets;
    let pod = PodSpec {
        init_containers,
        containers,
        restart_policy: Some("Never".into()),
        security_context: Some(pod_security(BACKUP_UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (backup.target.s3.is_some() && !pull_secrets.is_empty())
            .then(|| pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()),
        volumes: Some(vec![
            backups_volume(claim, false),
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    let job_labels = labels(stack, BACKUP_COMPONENT);
    CronJob {
        metadata: metadata(stack, backup_cron_job_name(stack), BACKUP_COMPONENT),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            suspend: Some(false),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(job_labels.clone()), ..ObjectMeta::default() }),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKUP_BACKOFF_LIMIT),
                    active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta { labels: Some(job_labels), ..ObjectMeta::default() }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}

/// The Job of an on-demand backup for `token`, made from `cron_job`'s template (as `kubectl create job
/// --from=cronjob/...` does): controlled by the CronJob (so its history limits cover it, and it goes
/// with it), marked with the token.
pub fn backup_job(stack: &MallStack, cron_job: &CronJob, token: &str) -> Job {
    let template = cron_job.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let owner = OwnerReference {
        api_version: CronJob::api_version(&()).into_owned(),
        kind: CronJob::kind(&()).into_owned(),
        name: cron_job.name_any(),
        uid: cron_job.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut meta = metadata(stack, backup_job_name(stack, token), BACKUP_COMPONENT);
    meta.labels.get_or_insert_default().extend(template_meta.labels.unwrap_or_default());
    meta.annotations = Some(BTreeMap::from([
        (BACKUP_REQUEST_ANNOTATION.to_owned(), token.to_owned()),
        ("cronjob.kubernetes.io/instantiate".to_owned(), "manual".to_owned()),
    ]));
    meta.owner_references = Some(vec![owner]);
    Job { metadata: meta, spec: template.spec, status: None }
}

/// The token of a backup asked for on `stack` and not acted on yet (the annotation differs from
/// `status.backup.lastRequest`); none without `spec.backup`.
pub fn pending_backup_request(stack: &MallStack) -> Option<String> {
    stack.spec.backup.as_ref()?;
    let token = stack.annotations().get(BACKUP_NOW_ANNOTATION)?.trim();
    let done = stack.status.as_ref().and_then(|s| s.backup.as_ref()).and_then(|b| b.last_request.as_deref());
    (!token.is_empty() && done != Some(token)).then(|| token.to_owned())
}
