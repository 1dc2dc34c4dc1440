//! Migrations: one Job per service and pod template (`mall migrate <service>`), and the rule that a
//! service's Deployment moves to a new template only once that template's migration Job succeeded.
//!
//! On the managed MySQL the Job first runs `mall provision <service>` (an init container) as root: it
//! creates the service's database `mall_<service>` and its own user `mall_<service>`, allowed into that
//! database only, with the password of the service's Secret (`<stack>-mysql-<service>`); then `mall
//! migrate` runs as that user. Why there, rather than a MySQL init script (`docker-entrypoint-initdb.d`)
//! for a first install plus some other step for existing data:
//!
//! - One path for both: an init script runs only on an empty data directory, so an upgraded stack (or
//!   a kept volume) would need the other step anyway; that step, idempotent, covers a first install too.
//! - It runs exactly when it is needed: before each migration, which runs before the service's pods
//!   roll to a new template; a pod never starts with a user that does not exist yet. Each run also sets
//!   the password again, so a Secret and the server never disagree for long.
//! - The root password reaches only that init container: the migrate container and the service pods
//!   get their own user's URL, and the MySQL container needs no user or database variables.
//! - The statements live in the `mall` binary (`mall_storage::provision_account`), tested against
//!   MariaDB, instead of SQL with passwords spliced in by a shell.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::secrets::{DB_ROOT_PASSWORD_KEY, mysql_secret_name};
use super::workloads::{
    MYSQL_PORT, database_env, from_secret, mall_container, mall_pod, service_host, value,
};
use super::{child_name, labels, metadata, short_hash};
use crate::crd::{MallStack, Service};

/// On a service's Deployment: the name of the migration Job its pod template waits for.
pub const MIGRATION_ANNOTATION: &str = "mall.example.com/migration";

/// `<stack>-migrate-<service>-<hash of the pod template>`: a new image, or any other change to the
/// Job's pods, makes a new Job (a Job's template cannot be changed once created).
pub fn migration_job_name(stack: &MallStack, service: Service) -> String {
    migration_job(stack, service).metadata.name.unwrap_or_default()
}

fn log_format() -> EnvVar {
    value("MALL_LOG_FORMAT", "json")
}

/// `mall provision <service>` as root of the managed MySQL (see the module's comment).
fn provision_container(stack: &MallStack, service: Service) -> Container {
    let mut env = vec![
        log_format(),
        from_secret("MALL_DATABASE_ROOT_PASSWORD", &mysql_secret_name(stack), DB_ROOT_PASSWORD_KEY),
        value(
            "MALL_DATABASE_ADMIN_URL",
            format!(
                "mysql://root:$(MALL_DATABASE_ROOT_PASSWORD)@{}:{MYSQL_PORT}",
                service_host(stack, "mysql")
            ),
        ),
    ];
    env.extend(database_env(stack, service));
    mall_container(stack, "provision", &["provision", service.name()], env)
}

pub fn migration_job(stack: &MallStack, service: Service) -> Job {
    let mut env = database_env(stack, service);
    env.insert(0, log_format());
    let container = mall_container(stack, "migrate", &["migrate", service.name()], env);
    let mut pod = mall_pod(stack, container, Some("OnFailure"));
    pod.enable_service_links = Some(false);
    if stack.spec.database.managed.is_some() {
        pod.init_containers = Some(vec![provision_container(stack, service)]);
    }
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(stack, "migrate")), ..ObjectMeta::default() }),
        spec: Some(pod),
    };
    let hash = short_hash(serde_json::to_string(&template).unwrap_or_default().as_bytes());
    let name = child_name(stack, &format!("migrate-{}-{}", service.name(), &hash[..10]));
    Job {
        metadata: metadata(stack, name, "migrate"),
        spec: Some(JobSpec { backoff_limit: Some(6), template, ..JobSpec::default() }),
        status: None,
    }
}

/// `deployment` marked with the migration Job its template waits for (see [`rollout_allowed`]).
pub(crate) fn gated_by(job: &Job, mut deployment: Deployment) -> Deployment {
    let name = job.metadata.name.clone().unwrap_or_default();
    deployment.metadata.annotations.get_or_insert_default().insert(MIGRATION_ANNOTATION.to_owned(), name);
    deployment
}

/// Where a migration Job stands, from its observed status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationState {
    Missing,
    Running,
    Succeeded,
    Failed,
}

impl MigrationState {
    pub fn of(job: Option<&Job>) -> MigrationState {
        let Some(job) = job else { return MigrationState::Missing };
        let status = job.status.as_ref();
        let condition = |type_: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
        };
        if condition("Complete") || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
            MigrationState::Succeeded
        } else if condition("Failed") {
            MigrationState::Failed
        } else {
            MigrationState::Running
        }
    }
}

/// Whether the desired Deployment of a service may be applied now: once its migration Job has
/// succeeded, or when the running Deployment already waited for that same Job (its migrations and its
/// database user are there; only scale, resources or settings change). Otherwise the running Deployment
/// is left alone (or, on a first install, not created yet). A Deployment without the mark (made by an
/// earlier operator) waits for the Job.
pub fn rollout_allowed(
    migration: MigrationState,
    existing: Option<&Deployment>,
    desired: &Deployment,
) -> bool {
    if migration == MigrationState::Succeeded {
        return true;
    }
    let gate = |d: &Deployment| d.metadata.annotations.as_ref()?.get(MIGRATION_ANNOTATION).cloned();
    existing.is_some_and(|e| gate(e).is_some() && gate(e) == gate(desired))
}
