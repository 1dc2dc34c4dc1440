//! Pure functions from a `MallStack` (and the generated secrets already in the cluster) to every object
//! the stack needs. Nothing here talks to the API server, so all of it is unit-tested.

mod auth_keys;
mod backup;
mod data;
mod identity;
mod jobs;
mod observability;
mod policy;
mod restart;
mod restore;
mod secrets;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service as KubeService};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{MallStack, Service};

pub use auth_keys::{
    AUTH_KEYS_FILE, AUTH_KEYS_FILE_ENV, AUTH_KEYS_FILE_KEY, AUTH_KEYS_MOUNT_PATH, LAST_ROTATION_ANNOTATION,
    PUBLISHED_AT_ANNOTATION, auth_keys_secret, auth_keys_secret_name, current_key_ring,
};
pub use backup::{
    ACTIVE_DEADLINE_SECONDS, BACKUP_BACKOFF_LIMIT, BACKUP_COMPONENT, BACKUP_MOUNT_PATH,
    BACKUP_NOW_ANNOTATION, BACKUP_REQUEST_ANNOTATION, BACKUP_SCRIPT, STARTING_DEADLINE_SECONDS,
    backup_claim_name, backup_cron_job_name, backup_databases, backup_job, backup_job_name,
    pending_backup_request,
};
pub use data::{SERVICE_POOL_SIZE, mysql_max_connections};
pub use identity::{
    IDENTITY_COMPONENTS, IDENTITY_KEY_ENV, IDENTITY_PEERS_ENV, Identity, identity, identity_key_name,
    identity_secret_name,
};
pub use jobs::{MIGRATION_ANNOTATION, MigrationState, migration_job, migration_job_name, rollout_allowed};
pub use observability::{
    METRICS_PATH, OTEL_ENDPOINT_ENV, OTEL_ENV, OTEL_PROTOCOL_ENV, OTEL_SAMPLER_ARG_ENV, OTEL_SAMPLER_ENV,
    OTEL_SERVICE_NAME_ENV, SCRAPE_INTERVAL, SERVICE_MONITOR_KIND, metrics_namespace_label, metrics_ports,
    otel_env, otel_service_name, service_monitor_resource,
};
pub use restart::{RESTART_ANNOTATION, RESTARTED_ANNOTATION, restart_token, restarted};
pub use restore::{
    REFUSAL_EXIT_CODE, RESTORE_CHECK_CONTAINER, RESTORE_COMPONENT, RESTORE_LOAD_CONTAINER,
    RESTORE_PULL_CONTAINER, RESTORE_SCRIPT, RestoreSource, restore_done, restore_job, restore_job_name,
    restore_source,
};
pub use secrets::{
    ADMIN_PASSWORD_KEY, DB_PASSWORD_KEY, DB_ROOT_PASSWORD_KEY, ExistingSecrets, PASSWORD_KEY,
    SIGNING_KEY_KEY, URL_KEY, admin_secret_name, database_secret_name, database_user, generated_secrets,
    mysql_secret_name, redis_secret_name, signing_key_secret_name,
};
pub use workloads::{
    CONFIG_HASH_ANNOTATION, GATEWAY_PORT, GATEWAY_PORT_NAME, GRPC_PORT, GRPC_PORT_NAME, config_map,
    config_map_name, peer_address,
};

/// The operator's name: field manager, `managed-by` label, event reporter.
pub const MANAGER: &str = "mall-operator";

/// Everything one stack needs, in apply order.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<KubeService>,
    pub stateful_sets: Vec<StatefulSet>,
    /// Deployments that may always be applied (gateway, Redis).
    pub deployments: Vec<Deployment>,
    /// Per gRPC service: its migration Job and the Deployment that waits for it.
    pub migrations: Vec<(Service, Job, Deployment)>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Prometheus Operator ServiceMonitors (applied only where that CRD is installed).
    pub service_monitors: Vec<DynamicObject>,
    /// With `spec.backup`: the claim backups are written to.
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    /// With `spec.backup`: the backup CronJob.
    pub cron_jobs: Vec<CronJob>,
    /// With `spec.restore`: the Job that restores the databases before the migrations run.
    pub restore: Option<Job>,
}

/// Builds every desired object of `stack`. `existing` holds the data of the generated Secrets already in
/// the cluster, which are kept as they are. (Auth's key file changes as keys rotate: the reconciler
/// keeps its Secret, see `auth_keys`.)
pub fn desired(stack: &MallStack, existing: &ExistingSecrets) -> Desired {
    let mut d = Desired { secrets: generated_secrets(stack, existing), ..Desired::default() };
    let identity = identity(stack, existing);
    d.secrets.push(identity.secret.clone());
    d.config_maps.push(config_map(stack));
    if let Some(db) = &stack.spec.database.managed {
        d.services.push(data::mysql_service(stack));
        let mut mysql = data::mysql_stateful_set(stack, db);
        if let Some(spec) = mysql.spec.as_mut() {
            restart::stamp(stack, "mysql", &mut spec.template);
        }
        d.stateful_sets.push(mysql);
    }
    if let Some(redis) = &stack.spec.redis.managed {
        d.services.push(data::redis_service(stack));
        let mut deployment = data::redis_deployment(stack, redis);
        stamp_deployment(stack, "redis", &mut deployment);
        d.deployments.push(deployment);
    }
    for service in Service::ALL {
        d.services.push(workloads::service_service(stack, service));
        let job = migration_job(stack, service);
        let mut deployment = workloads::service_deployment(stack, service);
        identity::wire(stack, &mut deployment, service.name(), &identity.peers);
        if service == Service::Auth {
            auth_keys::wire(&mut deployment, stack);
        }
        observability::wire(stack, &mut deployment, service.name());
        workloads::rehash(stack, &mut deployment);
        stamp_deployment(stack, service.name(), &mut deployment);
        let deployment = jobs::gated_by(&job, deployment);
        d.migrations.push((service, job, deployment));
    }
    d.services.push(workloads::gateway_service(stack));
    let mut gateway = workloads::gateway_deployment(stack);
    identity::wire(stack, &mut gateway, "gateway", &identity.peers);
    observability::wire(stack, &mut gateway, "gateway");
    workloads::rehash(stack, &mut gateway);
    stamp_deployment(stack, "gateway", &mut gateway);
    d.deployments.push(gateway);
    d.pod_disruption_budgets = policy::pod_disruption_budgets(stack);
    d.autoscalers = policy::autoscalers(stack);
    if stack.spec.network_policies {
        d.network_policies = policy::network_policies(stack);
    }
    d.service_monitors = observability::service_monitors(stack);
    if let Some((claim, cron_job)) = backup::backups(stack) {
        d.persistent_volume_claims.extend(claim);
        d.cron_jobs.push(cron_job);
    }
    d.restore = restore_job(stack);
    d
}

fn stamp_deployment(stack: &MallStack, component: &str, deployment: &mut Deployment) {
    if let Some(spec) = deployment.spec.as_mut() {
        restart::stamp(stack, component, &mut spec.template);
    }
}

/// `<stack>-<component>`.
pub fn child_name(stack: &MallStack, component: &str) -> String {
    format!("{}-{component}", stack.name_any())
}

/// The stack's namespace (a namespaced resource always has one once stored).
pub fn namespace(stack: &MallStack) -> String {
    stack.namespace().unwrap_or_else(|| "default".to_owned())
}

/// The labels that select one component's pods.
pub fn selector_labels(stack: &MallStack, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "mall".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), stack.name_any()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
    ])
}

/// Every label the operator puts on a child.
pub fn labels(stack: &MallStack, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(stack, component);
    labels.insert("app.kubernetes.io/part-of".to_owned(), "mall".to_owned());
    labels.insert("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned());
    labels
}

/// The label selector that finds every child of `stack` (for listing what exists).
pub fn stack_selector(stack: &MallStack) -> String {
    format!("app.kubernetes.io/instance={},app.kubernetes.io/managed-by={MANAGER}", stack.name_any())
}

pub(crate) fn label_selector(stack: &MallStack, component: &str) -> LabelSelector {
    LabelSelector { match_labels: Some(selector_labels(stack, component)), ..LabelSelector::default() }
}

/// The controller reference to the stack: deleting the stack deletes the child.
pub fn owner_reference(stack: &MallStack) -> OwnerReference {
    let mut owner = stack.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: MallStack::api_version(&()).into_owned(),
        kind: MallStack::kind(&()).into_owned(),
        name: stack.name_any(),
        uid: String::new(),
        ..OwnerReference::default()
    });
    owner.controller = Some(true);
    owner.block_owner_deletion = Some(true);
    owner
}

/// Metadata of a child named `name` of `component`.
pub(crate) fn metadata(stack: &MallStack, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace(stack)),
        labels: Some(labels(stack, component)),
        owner_references: Some(vec![owner_reference(stack)]),
        ..ObjectMeta::default()
    }
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_backup;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_observability;
#[cfg(test)]
mod tests_restore;
