//! Migrations: one Job per service and image (`mall migrate <service>`), and the rule that a service's
//! Deployment moves to a new image only once that image's migration Job has succeeded.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::workloads::{database_env, mall_container, mall_pod};
use super::{child_name, labels, metadata, short_hash};
use crate::crd::{MallStack, Service};

/// `<stack>-migrate-<service>-<hash of the image>`: a new image makes a new Job.
pub fn migration_job_name(stack: &MallStack, service: Service) -> String {
    let image = short_hash(stack.spec.image.reference().as_bytes());
    child_name(stack, &format!("migrate-{}-{}", service.name(), &image[..10]))
}

pub fn migration_job(stack: &MallStack, service: Service) -> Job {
    let mut env = database_env(stack, service);
    env.insert(
        0,
        k8s_openapi::api::core::v1::EnvVar {
            name: "MALL_LOG_FORMAT".into(),
            value: Some("json".into()),
            value_from: None,
        },
    );
    let container = mall_container(stack, "migrate", &["migrate", service.name()], env);
    let mut pod = mall_pod(stack, container, Some("OnFailure"));
    pod.enable_service_links = Some(false);
    Job {
        metadata: metadata(stack, migration_job_name(stack, service), "migrate"),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(stack, "migrate")),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
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

/// Whether the desired Deployment of a service may be applied now: once the migration Job of its image
/// has succeeded, or when the running Deployment already has that image (its migrations ran before;
/// only scale or resources change). Otherwise the running Deployment is left alone (or, on a first
/// install, not created yet).
pub fn rollout_allowed(
    migration: MigrationState,
    existing: Option<&Deployment>,
    desired: &Deployment,
) -> bool {
    if migration == MigrationState::Succeeded {
        return true;
    }
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
    };
    existing.is_some_and(|e| image(e).is_some() && image(e) == image(desired))
}
