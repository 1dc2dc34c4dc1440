//! A stack started from a backup (`spec.restore`): one Job `<stack>-restore-<hash>` that runs before
//! any migration Job and before the services roll out (the reconciler holds them back until it
//! succeeded). Two steps, each in the image that knows its part:
//!
//! 1. `mall restore-check` (init container, the stack's Mall image): the manifest, every dump's size and
//!    sha256, a schema this image knows (no migration it lacks), every database empty or absent; writes
//!    the plan. A refusal exits 2 with `refused: …` as its termination message.
//! 2. [`RESTORE_SCRIPT`] (the MySQL image, which has the client): loads each dump of the plan; on a
//!    failure drops what it loaded.
//!
//! From a bucket (`spec.restore.s3`, or the stack's `backup.target.s3`), an init container runs `mall
//! backup-pull` first, into scratch space that the two steps then read.
//!
//! One attempt (`backoffLimit: 0`): a refusal is not cured by trying again, and a failed load has been
//! undone; deleting the Job (or naming another backup) tries again. The claim is mounted read-only.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, LocalObjectReference, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::backup::{BACKUP_MOUNT_PATH, BACKUP_UID, backup_claim_name, backups_volume, s3_env};
use super::secrets::{DB_ROOT_PASSWORD_KEY, mysql_secret_name};
use super::workloads::{
    MYSQL_PORT, container_security, from_secret, mall_container, pod_security, service_host, value,
};
use super::{child_name, labels, metadata, short_hash};
use crate::crd::{BackupS3, MallStack, RestorePhase, RestoreSpec};

/// The script of the load step (`bash -c`).
pub const RESTORE_SCRIPT: &str = concat!(include_str!("mysql_client.sh"), include_str!("restore.sh"));
/// The Job's and its pod's component label (admitted by the MySQL NetworkPolicy).
pub const RESTORE_COMPONENT: &str = "restore";
/// The init container that checks the backup and the database.
pub const RESTORE_CHECK_CONTAINER: &str = "check";
/// From a bucket: the init container that downloads the backup first.
pub const RESTORE_PULL_CONTAINER: &str = "pull";
/// The container that loads the dumps.
pub const RESTORE_LOAD_CONTAINER: &str = "load";
/// `mall restore-check`'s exit code for a refusal.
pub const REFUSAL_EXIT_CODE: i32 = 2;
/// Where the plan goes between the two steps.
const WORK_PATH: &str = "/work";
/// A restore taking longer is stopped and counts as failed.
pub const RESTORE_DEADLINE_SECONDS: i64 = 6 * 3600;

/// Where a restore reads the backup from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreSource {
    /// A claim.
    Claim(String),
    /// A bucket (its Secret): the backup is downloaded first.
    Bucket(BackupS3),
}

/// Where `restore` reads: `spec.restore.claimName` or `spec.restore.s3`, else where this stack's own
/// backups go (`backup.target.s3`, or the claim `<stack>-backups`).
pub fn restore_source(stack: &MallStack, restore: &RestoreSpec) -> RestoreSource {
    if let Some(claim) = &restore.claim_name {
        return RestoreSource::Claim(claim.clone());
    }
    let own_bucket = stack.spec.backup.as_ref().and_then(|b| b.target.s3.clone());
    match restore.s3.clone().or(own_bucket) {
        Some(bucket) => RestoreSource::Bucket(bucket),
        None => RestoreSource::Claim(backup_claim_name(stack)),
    }
}

/// `<stack>-restore-<hash of the source and backup>`: another backup asked for is another Job.
pub fn restore_job_name(stack: &MallStack, restore: &RestoreSpec) -> String {
    let source = match restore_source(stack, restore) {
        RestoreSource::Claim(claim) => claim,
        RestoreSource::Bucket(s3) => format!("s3:{}", s3.secret_name),
    };
    let key = format!("{source}/{}", restore.from);
    child_name(stack, &format!("restore-{}", &short_hash(key.as_bytes())[..10]))
}

/// Whether `spec.restore` is done, as `status.restore` remembers: then nothing waits for it any more,
/// even once its Job is gone.
pub fn restore_done(stack: &MallStack) -> bool {
    let Some(restore) = &stack.spec.restore else { return true };
    stack
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .is_some_and(|r| r.phase == RestorePhase::Succeeded && r.from == restore.from)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }
}

/// The restore Job of `stack`, when `spec.restore` asks for one (with a managed database, which the
/// spec's validation requires).
pub fn restore_job(stack: &MallStack) -> Option<Job> {
    let restore = stack.spec.restore.as_ref()?;
    let db = stack.spec.database.managed.as_ref()?;
    let dir = format!("{BACKUP_MOUNT_PATH}/{}", restore.from);
    let plan = format!("{WORK_PATH}/plan");
    let admin_url =
        format!("mysql://root:$(MALL_DATABASE_ROOT_PASSWORD)@{}:{MYSQL_PORT}", service_host(stack, "mysql"));

    let mut check = mall_container(
        stack,
        RESTORE_CHECK_CONTAINER,
        &["restore-check", "--backup", &dir, "--plan", &plan],
        vec![
            value("MALL_LOG_FORMAT", "json"),
            from_secret("MALL_DATABASE_ROOT_PASSWORD", &mysql_secret_name(stack), DB_ROOT_PASSWORD_KEY),
            value("MALL_DATABASE_ADMIN_URL", admin_url),
        ],
    );
    check
        .volume_mounts
        .get_or_insert_default()
        .extend([mount("backups", BACKUP_MOUNT_PATH, true), mount("work", WORK_PATH, false)]);
    check.termination_message_policy = Some("FallbackToLogsOnError".into());
    let source = restore_source(stack, restore);
    let mut init_containers = Vec::new();
    if let RestoreSource::Bucket(s3) = &source {
        let mut pull = mall_container(
            stack,
            RESTORE_PULL_CONTAINER,
            &["backup-pull", "--name", &restore.from, "--dir", BACKUP_MOUNT_PATH],
            s3_env(s3),
        );
        pull.volume_mounts.get_or_insert_default().push(mount("backups", BACKUP_MOUNT_PATH, false));
        pull.termination_message_policy = Some("FallbackToLogsOnError".into());
        init_containers.push(pull);
    }
    init_containers.push(check);

    let image = stack.spec.backup.as_ref().and_then(|b| b.image.clone()).unwrap_or_else(|| db.image.clone());
    let load = Container {
        name: RESTORE_LOAD_CONTAINER.into(),
        image: Some(image),
        command: Some(vec!["bash".into(), "-c".into(), RESTORE_SCRIPT.into(), "restore".into()]),
        env: Some(vec![
            value("RESTORE_DIR", dir),
            value("RESTORE_PLAN", plan),
            value("BACKUP_HOST", service_host(stack, "mysql")),
            value("BACKUP_PORT", MYSQL_PORT.to_string()),
            value("BACKUP_USER", "root"),
            from_secret("BACKUP_PASSWORD", &mysql_secret_name(stack), DB_ROOT_PASSWORD_KEY),
        ]),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount("backups", BACKUP_MOUNT_PATH, true),
            mount("work", WORK_PATH, true),
            mount("tmp", "/tmp", false),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let pull_secrets = &stack.spec.image.pull_secrets;
    let pod = PodSpec {
        init_containers: Some(init_containers),
        containers: vec![load],
        restart_policy: Some("Never".into()),
        // The dumps are the backup's user's alone (umask 077): the same uid reads them.
        security_context: Some(pod_security(BACKUP_UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (!pull_secrets.is_empty())
            .then(|| pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()),
        volumes: Some(vec![
            backups_volume(
                match source {
                    RestoreSource::Claim(claim) => Some(claim),
                    RestoreSource::Bucket(_) => None,
                },
                true,
            ),
            empty_dir("work"),
            empty_dir("tmp"),
        ]),
        ..PodSpec::default()
    };
    let pod_labels = labels(stack, RESTORE_COMPONENT);
    Some(Job {
        metadata: metadata(stack, restore_job_name(stack, restore), RESTORE_COMPONENT),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(RESTORE_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}
