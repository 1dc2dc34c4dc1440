//! The reconciler: observe the stack's children, server-side apply every desired object with one field
//! manager, compute status from what the cluster reports, write it only when it changed, and publish
//! events on transitions. Failures back off per object.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service as KubeService};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::{NamespaceResourceScope, jiff};
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::builders::{
    self, Desired, ExistingSecrets, MANAGER, MigrationState, SERVICE_MONITOR_KIND, rollout_allowed,
    service_monitor_resource, stack_selector,
};
use crate::crd::{Condition, MallStack, MallStackStatus};
use crate::diagnosis;
use crate::error::{Error, Result};
use crate::metrics;
use crate::rotation;
use crate::status::{self, Failure, Observed, ServiceMonitors};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<MallStack>, u32>>,
}

impl Context {
    /// `instance` names this replica in events. Installs the metrics recorder if nothing did yet.
    pub fn new(client: Client, instance: Option<String>) -> Context {
        crate::metrics::install();
        let recorder = Recorder::new(client.clone(), Reporter { controller: MANAGER.to_owned(), instance });
        Context { client, recorder, failures: Mutex::new(HashMap::new()) }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<MallStack>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long to wait after the `failures`-th failure in a row: 5 s doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(5 * 2u64.pow(exponent)).min(Duration::from_secs(300))
}

/// Requeue a failed stack later each time it fails again.
pub fn error_policy(stack: Arc<MallStack>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from(stack.as_ref());
    let n = {
        let mut failures = ctx.failures();
        let n = failures.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    let wait = backoff(n);
    tracing::warn!(stack = %stack.name_any(), error = %error, failures = n, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// One reconcile of one stack, measured, and traced: it runs inside a span `reconcile` with the
/// stack's `stack` name and `namespace`; its `outcome` (`ok`, or the failure's condition reason such as
/// `Forbidden`) and, on failure, the `error` are recorded on it at the end. Where the spans go (an
/// OpenTelemetry collector, through the `OTEL_*` variables) is `mall_runtime::init_tracing`'s business.
pub async fn reconcile(stack: Arc<MallStack>, ctx: Arc<Context>) -> Result<Action> {
    let span = tracing::info_span!(
        "reconcile",
        stack = %stack.name_any(),
        namespace = stack.namespace().as_deref().unwrap_or_default(),
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = reconcile_stack(&stack, &ctx).instrument(span.clone()).await;
    metrics::reconciled(started.elapsed());
    match &result {
        Ok(_) => {
            span.record("outcome", "ok");
            ctx.failures().remove(&ObjectRef::from(stack.as_ref()));
        }
        Err(e) => {
            span.record("outcome", e.reason());
            span.record("error", tracing::field::display(e));
            metrics::failed(e.metric_label(), e.refusal());
        }
    }
    result
}

pub(crate) async fn list<K>(client: &Client, ns: &str, selector: &str) -> Result<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + k8s_openapi::Resource,
    K: Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::Observe { kind: <K as k8s_openapi::Resource>::KIND, source })?;
    Ok(list.items)
}

fn by_name<K: Resource>(items: Vec<K>) -> std::collections::BTreeMap<String, K> {
    items.into_iter().filter_map(|o| Some((o.meta().name.clone()?, o))).collect()
}

/// Server-side apply of `obj` with the operator's field manager; the object as stored.
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + k8s_openapi::Resource,
    K: Clone + Serialize + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await
        .map_err(|source| Error::Apply { kind: <K as k8s_openapi::Resource>::KIND, name, source })
}

async fn apply_all<K>(client: &Client, ns: &str, objects: &[K]) -> Result<Vec<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + k8s_openapi::Resource,
    K: Clone + Serialize + DeserializeOwned + Debug,
{
    let mut stored = Vec::with_capacity(objects.len());
    for obj in objects {
        stored.push(apply(client, ns, obj).await?);
    }
    Ok(stored)
}

/// Applies every child, in dependency order, recording what the API server returns in `observed`; then
/// deletes the children no longer wanted.
///
/// Migration Jobs are created only once the database takes connections (the managed MySQL's pod is
/// ready): a Job started earlier would only fail, and the back-off of its pods would hold up the first
/// install long after the database came up. The StatefulSet's status change triggers the reconcile
/// that creates them.
///
/// A migration Job that failed (its pods exhausted their backoff limit, say while the database was not
/// up yet) is deleted right away so that the next reconcile, which its deletion triggers, creates it
/// again: that new Job's own pod backoff paces the retry. Its Failed state stays in `observed`, so this
/// reconcile's status still reports the failure.
async fn apply_children(
    stack: &MallStack,
    ctx: &Context,
    ns: &str,
    existing: &ExistingSecrets,
    monitors: Option<&[DynamicObject]>,
    observed: &mut Observed,
) -> Result<()> {
    let client = &ctx.client;
    let desired = builders::desired(stack, existing);
    apply_all(client, ns, &desired.secrets).await?;
    apply_all(client, ns, &desired.config_maps).await?;
    let gateway = builders::child_name(stack, "gateway");
    for service in apply_all(client, ns, &desired.services).await? {
        if service.metadata.name.as_deref() == Some(gateway.as_str()) {
            observed.gateway_service = Some(service);
        }
    }
    for sts in apply_all(client, ns, &desired.stateful_sets).await? {
        observed.stateful_sets.insert(sts.name_any(), sts);
    }
    for deployment in apply_all(client, ns, &desired.deployments).await? {
        observed.deployments.insert(deployment.name_any(), deployment);
    }
    let database_ready = status::database_ready(stack, observed);
    if !database_ready {
        tracing::info!(stack = %stack.name_any(), "waiting for the database before running migrations");
    }
    let restored = keep_restore(stack, ctx, ns, desired.restore.as_ref(), database_ready, observed).await?;
    // Until the restore is done nothing else writes to the database: no migration, no service, no
    // backup (whose retention could prune good backups for dumps of a half-loaded database).
    let migrations = if restored { &desired.migrations[..] } else { &[] };
    for (service, job, deployment) in migrations {
        let state = if database_ready {
            let job = apply(client, ns, job).await?;
            let state = MigrationState::of(Some(&job));
            if state == MigrationState::Failed {
                retry_migration(stack, ctx, ns, *service, &job).await?;
            }
            observed.jobs.insert(job.name_any(), job);
            state
        } else {
            MigrationState::of(observed.jobs.get(&job.name_any()))
        };
        let name = deployment.name_any();
        if rollout_allowed(state, observed.deployments.get(&name), deployment) {
            let stored = apply(client, ns, deployment).await?;
            observed.deployments.insert(name, stored);
        } else {
            tracing::debug!(service = service.name(), ?state, "waiting for migrations before rolling out");
        }
    }
    apply_all(client, ns, &desired.pod_disruption_budgets).await?;
    apply_all(client, ns, &desired.autoscalers).await?;
    apply_all(client, ns, &desired.network_policies).await?;
    apply_all(client, ns, &desired.persistent_volume_claims).await?;
    let cron_jobs = if restored { &desired.cron_jobs[..] } else { &[] };
    for cron_job in apply_all(client, ns, cron_jobs).await? {
        if let Some(token) = builders::pending_backup_request(stack) {
            let job = request_backup(stack, ctx, ns, &cron_job, &token).await?;
            observed.backup_request = Some((token, job.name_any()));
            // One already there was listed with its status: kept.
            observed.jobs.entry(job.name_any()).or_insert(job);
        }
    }
    observed.service_monitors = keep_service_monitors(stack, client, ns, &desired, monitors).await?;
    prune(stack, client, ns, &desired, observed).await
}

/// Whether the restore `spec.restore` asks for is done (or none is asked for). Makes its Job once the
/// database takes connections, and tells about it in an event; a Job already there is left as it is
/// (its outcome is the status's business). Once `status.restore` says it succeeded, nothing waits for
/// it any more, even if its Job is deleted.
async fn keep_restore(
    stack: &MallStack,
    ctx: &Context,
    ns: &str,
    job: Option<&Job>,
    database_ready: bool,
    observed: &mut Observed,
) -> Result<bool> {
    let Some(job) = job else { return Ok(true) };
    if builders::restore_done(stack) {
        return Ok(true);
    }
    let name = job.name_any();
    if let Some(found) = observed.jobs.get(&name) {
        return Ok(MigrationState::of(Some(found)) == MigrationState::Succeeded);
    }
    if !database_ready {
        tracing::info!(stack = %stack.name_any(), "waiting for the database before restoring");
        return Ok(false);
    }
    let made = apply(&ctx.client, ns, job).await?;
    let from = stack.spec.restore.as_ref().map(|r| r.from.clone()).unwrap_or_default();
    tracing::info!(stack = %stack.name_any(), job = %name, backup = %from, "restore Job made");
    let event = Event {
        type_: EventType::Normal,
        reason: "RestoreStarted".to_owned(),
        note: Some(format!("restore Job {name} made for backup {from}").chars().take(1000).collect()),
        action: "Restore".to_owned(),
        secondary: Some(made.object_ref(&())),
    };
    if let Err(e) = ctx.recorder.publish(&event, &stack.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
    }
    observed.jobs.insert(name, made);
    Ok(false)
}

/// Makes the Job of the on-demand backup `token` (`mall.example.com/backup-now`) from the CronJob's
/// template, once: a Job of that name already there (made by an earlier reconcile whose status write
/// was lost) is taken as it is. Tells about it in an event on the stack.
async fn request_backup(
    stack: &MallStack,
    ctx: &Context,
    ns: &str,
    cron_job: &CronJob,
    token: &str,
) -> Result<Job> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let job = builders::backup_job(stack, cron_job, token);
    let name = job.name_any();
    let params = PostParams { field_manager: Some(MANAGER.to_owned()), ..PostParams::default() };
    let made = match api.create(&params, &job).await {
        Ok(made) => made,
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            tracing::info!(stack = %stack.name_any(), job = %name, "the backup Job asked for is there already");
            return Ok(job);
        }
        Err(source) => return Err(Error::Apply { kind: "Job", name, source }),
    };
    tracing::info!(stack = %stack.name_any(), job = %name, token, "backup asked for: Job made");
    let event = Event {
        type_: EventType::Normal,
        reason: "BackupRequested".to_owned(),
        note: Some(format!("backup Job {name} made for backup-now {token:?}").chars().take(1000).collect()),
        action: "Backup".to_owned(),
        secondary: Some(made.object_ref(&())),
    };
    if let Err(e) = ctx.recorder.publish(&event, &stack.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
    }
    Ok(made)
}

/// The stack's ServiceMonitors as listed, or `None` when there is no such kind to list: the API server
/// does not serve monitoring.coreos.com/v1 (the Prometheus Operator's CRD is not installed). When none
/// is wanted, a refusal to list them counts as none either (an operator without the RBAC for them made
/// none to delete), so a stack that does not ask for them never fails on them.
async fn observe_monitors(
    client: &Client,
    ns: &str,
    selector: &str,
    wanted: bool,
) -> Result<Option<Vec<DynamicObject>>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &service_monitor_resource());
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(Some(list.items)),
        // A real API server answers a group it does not serve with a plain-text `404 page not found`,
        // which kube reads as code 404 without the NotFound reason (`is_not_found` misses it).
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 404 => Ok(None),
        Err(kube::Error::Api(status)) if status.is_forbidden() && !wanted => {
            tracing::debug!(refusal = %status.message, "cannot list ServiceMonitors; none is wanted");
            Ok(None)
        }
        Err(source) => Err(Error::Observe { kind: SERVICE_MONITOR_KIND, source }),
    }
}

/// Applies the wanted ServiceMonitors and deletes the ones this stack made that are no longer wanted
/// (`serviceMonitor` turned off), where the kind exists (`found` is what [`observe_monitors`] listed).
/// What became of the wanted ones, for the status; `None` when none is wanted.
async fn keep_service_monitors(
    stack: &MallStack,
    client: &Client,
    ns: &str,
    desired: &Desired,
    found: Option<&[DynamicObject]>,
) -> Result<Option<ServiceMonitors>> {
    let wanted = stack.spec.service_monitor();
    let Some(found) = found else {
        if wanted {
            tracing::info!(
                stack = %stack.name_any(),
                "serviceMonitor is on but the ServiceMonitor CRD (monitoring.coreos.com/v1) is not installed"
            );
        }
        return Ok(wanted.then_some(ServiceMonitors::CrdMissing));
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &service_monitor_resource());
    for monitor in &desired.service_monitors {
        let name = monitor.name_any();
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(monitor))
            .await
            .map_err(|source| Error::Apply { kind: SERVICE_MONITOR_KIND, name, source })?;
    }
    let keep: BTreeSet<String> = desired.service_monitors.iter().map(ResourceExt::name_any).collect();
    for monitor in found {
        if !keep.contains(&monitor.name_any()) && controlled_by(stack, monitor) {
            delete_with(&api, SERVICE_MONITOR_KIND, monitor, "no longer wanted").await?;
        }
    }
    Ok(wanted.then_some(ServiceMonitors::Applied(desired.service_monitors.len())))
}

/// Deletes the failed migration Job `job` of `service` so that the next reconcile creates it again, and
/// tells about it (a log line and a Warning event on the stack).
async fn retry_migration(
    stack: &MallStack,
    ctx: &Context,
    ns: &str,
    service: crate::crd::Service,
    job: &Job,
) -> Result<()> {
    let name = job.name_any();
    tracing::warn!(
        stack = %stack.name_any(),
        service = service.name(),
        job = %name,
        "migration Job failed; deleting it so that it runs again"
    );
    delete(&ctx.client, ns, job, "failed migration, to run it again").await?;
    let event = Event {
        type_: EventType::Warning,
        reason: "MigrationRetry".to_owned(),
        note: Some(format!(
            "migration Job {name} of {} failed; deleted it so that it runs again",
            service.name()
        )),
        action: "RetryMigration".to_owned(),
        secondary: Some(job.object_ref(&())),
    };
    if let Err(e) = ctx.recorder.publish(&event, &stack.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
    }
    Ok(())
}

/// Deletes the children the stack no longer wants: PodDisruptionBudgets, autoscalers and NetworkPolicies
/// not in `desired` (after scaling back to one replica, dropping autoscaling, turning policies off),
/// and, once every migration Job of the current image succeeded, the migration Jobs of earlier images.
/// Only objects this stack controls (by owner reference) are deleted.
async fn prune(
    stack: &MallStack,
    client: &Client,
    ns: &str,
    desired: &Desired,
    observed: &mut Observed,
) -> Result<()> {
    let selector = stack_selector(stack);
    prune_kind(stack, client, ns, &selector, &desired.pod_disruption_budgets).await?;
    prune_kind(stack, client, ns, &selector, &desired.autoscalers).await?;
    prune_kind(stack, client, ns, &selector, &desired.network_policies).await?;

    // Backups turned off: the CronJob goes (its Jobs with it); the claim with the backups stays.
    let had_backups = stack.status.as_ref().is_some_and(|s| s.backup.is_some());
    if desired.cron_jobs.is_empty() && had_backups {
        let api: Api<CronJob> = Api::namespaced(client.clone(), ns);
        let name = builders::backup_cron_job_name(stack);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(kind = "CronJob", name, why = "backups turned off", "deleted a child"),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(source) => return Err(Error::Prune { kind: "CronJob", name, source }),
        }
    }

    let current: BTreeSet<String> = desired.migrations.iter().map(|(_, job, _)| job.name_any()).collect();
    let migrated =
        current.iter().all(|name| MigrationState::of(observed.jobs.get(name)) == MigrationState::Succeeded);
    if migrated {
        let stale: Vec<Job> = observed
            .jobs
            .values()
            .filter(|job| {
                !current.contains(&job.name_any())
                    && !status::is_backup_job(job)
                    // The record of the restore, while `spec.restore` is there (its name may change
                    // with where backups go, after it ran).
                    && (stack.spec.restore.is_none() || !status::is_restore_job(job))
                    && controlled_by(stack, *job)
            })
            .cloned()
            .collect();
        for job in stale {
            delete(client, ns, &job, "no longer wanted").await?;
            observed.jobs.remove(&job.name_any());
        }
    }
    Ok(())
}

/// Deletes the objects of one kind that the stack controls but no longer wants.
async fn prune_kind<K>(
    stack: &MallStack,
    client: &Client,
    ns: &str,
    selector: &str,
    wanted: &[K],
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + k8s_openapi::Resource,
    K: Clone + DeserializeOwned + Debug,
{
    let wanted: BTreeSet<String> = wanted.iter().map(ResourceExt::name_any).collect();
    for obj in list::<K>(client, ns, selector).await? {
        if !wanted.contains(&obj.name_any()) && controlled_by(stack, &obj) {
            delete(client, ns, &obj, "no longer wanted").await?;
        }
    }
    Ok(())
}

/// Whether `stack` is the controller of `obj` (its owner reference names the stack's uid).
fn controlled_by<K: Resource>(stack: &MallStack, obj: &K) -> bool {
    let Some(uid) = stack.meta().uid.as_deref() else { return false };
    obj.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Deletes `obj` (that very object: the uid is a precondition), its dependents in the background (a
/// Job's pods); `why` is logged. Already gone, or replaced meanwhile, is fine.
async fn delete<K>(client: &Client, ns: &str, obj: &K, why: &'static str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + k8s_openapi::Resource,
    K: Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    delete_with(&api, <K as k8s_openapi::Resource>::KIND, obj, why).await
}

/// [`delete`] through `api`, for any kind (`kind` names it in logs and errors).
async fn delete_with<K>(api: &Api<K>, kind: &'static str, obj: &K, why: &'static str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: obj
            .meta()
            .uid
            .clone()
            .map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            tracing::info!(kind, name, why, "deleted a child");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => Ok(()),
        Err(source) => Err(Error::Prune { kind, name, source }),
    }
}

async fn reconcile_stack(stack: &MallStack, ctx: &Context) -> Result<Action> {
    // Being deleted (`kubectl delete --cascade=foreground` keeps it until its children are gone): the
    // garbage collector removes the children; making them again would keep the deletion waiting forever.
    if stack.metadata.deletion_timestamp.is_some() {
        tracing::info!(stack = %stack.name_any(), "being deleted: its children are left to the garbage collector");
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = stack.namespace().ok_or(Error::MissingField("namespace"))?;
    let selector = stack_selector(stack);

    // Read first: generated secrets are kept, and status comes from what exists.
    let secrets = list::<Secret>(client, &ns, &selector).await?;
    let auth_keys_name = builders::auth_keys_secret_name(stack);
    let auth_keys = secrets.iter().find(|s| s.metadata.name.as_ref() == Some(&auth_keys_name)).cloned();
    let secrets_created = secrets
        .iter()
        .filter_map(|s| Some((s.metadata.name.clone()?, s.metadata.creation_timestamp.as_ref()?.0)))
        .collect();
    let existing: ExistingSecrets =
        secrets.into_iter().filter_map(|s| Some((s.metadata.name?, s.data.unwrap_or_default()))).collect();
    let now = jiff::Timestamp::now();
    let mut observed = Observed {
        jobs: by_name(list::<Job>(client, &ns, &selector).await?),
        deployments: by_name(list::<Deployment>(client, &ns, &selector).await?),
        stateful_sets: by_name(list::<StatefulSet>(client, &ns, &selector).await?),
        secrets_created,
        time: Some(now),
        ..Observed::default()
    };
    let monitors = observe_monitors(client, &ns, &selector, stack.spec.service_monitor()).await?;
    // Pods, claims, events and logs only explain the status: a refusal to read them is reported, and
    // the children are applied all the same.
    let unexplained = diagnosis::gather(client, &ns, &selector, stack, &mut observed).await.err();

    let mut signing_keys = None;
    let failure = match stack.spec.validate() {
        Err(invalid) => Some(Error::from(invalid)),
        Ok(()) if stack.spec.paused => None,
        Ok(()) => match keep_signing_keys(stack, ctx, &ns, auth_keys.as_ref(), &existing, now).await {
            Ok(kept) => {
                signing_keys = Some(kept);
                apply_children(stack, ctx, &ns, &existing, monitors.as_deref(), &mut observed).await.err()
            }
            Err(e) => Some(e),
        },
    };
    let failure = failure.or(unexplained);

    let reported =
        failure.as_ref().map(|e| Failure { reason: e.reason().to_owned(), message: e.to_string() });
    let mut next =
        status::compute(stack, &observed, reported.as_ref(), stack.status.as_ref(), &now.to_string());
    if let Some(kept) = &signing_keys {
        next.auth = Some(kept.status.clone());
    }
    if stack.status.as_ref() != Some(&next) {
        patch_status(client, stack, &ns, &next).await?;
        publish_transitions(ctx, stack, stack.status.as_ref(), &next).await;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    // Settled: Ready and nothing awaited on any component (a rollout whose new pods fail changes no
    // status the controller watches, so it is looked at again soon).
    let settled = next.condition(status::READY).is_some_and(|c| c.status == "True")
        && next
            .components
            .values()
            .all(|c| c.message.is_none() || c.reason.as_deref() == Some(status::PAUSED));
    let wait = if settled { Duration::from_secs(300) } else { Duration::from_secs(15) };
    // The next phase of a key rotation comes on time.
    let wait = signing_keys.and_then(|k| k.requeue_after).map_or(wait, |due| due.min(wait));
    Ok(Action::requeue(wait))
}

/// Keeps auth's key file (`<stack>-auth-keys`): reads it as the cluster holds it (`found`), or starts
/// one, carries a requested rotation on as far as is due now (see [`rotation`]), applies it, and tells
/// about each phase, and about a new problem, in an event on the stack. Key ids and times only: nothing
/// of the private keys is logged or told.
async fn keep_signing_keys(
    stack: &MallStack,
    ctx: &Context,
    ns: &str,
    found: Option<&Secret>,
    existing: &ExistingSecrets,
    now: jiff::Timestamp,
) -> Result<rotation::Outcome> {
    let (ring, unreadable) = builders::current_key_ring(stack, found, existing, now);
    let previous = stack.status.as_ref().and_then(|s| s.auth.as_ref());
    let mut kept = rotation::step(&ring, &stack.spec, previous, now);
    if !unreadable.is_empty() {
        let problems = unreadable.into_iter().chain(kept.status.problem.take());
        kept.status.problem = Some(problems.collect::<Vec<_>>().join("; "));
    }
    apply(&ctx.client, ns, &builders::auth_keys_secret(stack, &kept.ring)).await?;

    let mut events: Vec<Event> = kept
        .phases
        .iter()
        .map(|phase| {
            tracing::info!(stack = %stack.name_any(), reason = phase.reason(), "{}", phase.note());
            Event {
                type_: EventType::Normal,
                reason: phase.reason().to_owned(),
                note: Some(phase.note()),
                action: "RotateSigningKey".to_owned(),
                secondary: None,
            }
        })
        .collect();
    let problem = kept.status.problem.as_ref();
    if problem.is_some() && problem != previous.and_then(|p| p.problem.as_ref()) {
        tracing::warn!(stack = %stack.name_any(), problem = problem.map(String::as_str), "signing keys");
        events.push(Event {
            type_: EventType::Warning,
            reason: "SigningKeyProblem".to_owned(),
            note: problem.map(|p| p.chars().take(1000).collect()),
            action: "RotateSigningKey".to_owned(),
            secondary: None,
        });
    }
    let reference = stack.object_ref(&());
    for event in events {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
        }
    }
    Ok(kept)
}

async fn patch_status(client: &Client, stack: &MallStack, ns: &str, status: &MallStackStatus) -> Result<()> {
    let api: Api<MallStack> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": MallStack::api_version(&()),
        "kind": MallStack::kind(&()),
        "status": status,
    });
    api.patch_status(&stack.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// The event worth telling about a condition's transition, if any.
fn event_for(condition: &Condition) -> Option<Event> {
    let on = condition.status == "True";
    let (type_, reason) = match (condition.type_.as_str(), on) {
        (status::READY, true) => (EventType::Normal, "Ready".to_owned()),
        (status::READY, false) => (EventType::Warning, "NotReady".to_owned()),
        (status::DEGRADED, true) => (EventType::Warning, condition.reason.clone()),
        (status::DEGRADED, false) => (EventType::Normal, "Recovered".to_owned()),
        (status::MIGRATIONS_COMPLETE, true) => (EventType::Normal, "Migrated".to_owned()),
        (status::PAUSED, true) => (EventType::Normal, "Paused".to_owned()),
        (status::PAUSED, false) => (EventType::Normal, "Resumed".to_owned()),
        (status::SERVICE_MONITORS, true) => (EventType::Normal, "ServiceMonitorsApplied".to_owned()),
        (status::SERVICE_MONITORS, false) => (EventType::Warning, condition.reason.clone()),
        (status::BACKUP_FAILING, true) => (EventType::Warning, "BackupFailed".to_owned()),
        (status::BACKUP_FAILING, false) => (EventType::Normal, "BackupSucceeded".to_owned()),
        (status::RESTORED, true) => (EventType::Normal, "Restored".to_owned()),
        _ => return None,
    };
    Some(Event {
        type_,
        reason,
        note: (!condition.message.is_empty()).then(|| condition.message.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    })
}

async fn publish_transitions(
    ctx: &Context,
    stack: &MallStack,
    previous: Option<&MallStackStatus>,
    next: &MallStackStatus,
) {
    let reference = stack.object_ref(&());
    for event in status::transitions(previous, next).into_iter().filter_map(event_for) {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
        }
    }
}

/// Runs the controller until `shutdown` resolves (or a signal arrives).
/// Watches MallStacks and their children in `namespace`, or in every namespace when it is `None` (the
/// chart's `rbac.clusterWide`: a namespaced Role cannot list at the cluster scope), through
/// `watch_client` (without the read timeout of the requests' client: a watch is answered for minutes).
pub async fn run(
    ctx: Arc<Context>,
    watch_client: Client,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = watch_client;
    let ns = namespace.as_deref();
    let children = || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    // ServiceMonitors are not watched: their CRD may be missing (a watch of it would fail for good),
    // and one changed by hand is put back by the next periodic reconcile (5 minutes at most).
    Controller::new(api::<MallStack>(&client, ns), watcher::Config::default())
        .owns(api::<Deployment>(&client, ns), children())
        .owns(api::<StatefulSet>(&client, ns), children())
        .owns(api::<Job>(&client, ns), children())
        .owns(api::<KubeService>(&client, ns), children())
        .owns(api::<ConfigMap>(&client, ns), children())
        .owns(api::<Secret>(&client, ns), children())
        .owns(api::<PodDisruptionBudget>(&client, ns), children())
        .owns(api::<HorizontalPodAutoscaler>(&client, ns), children())
        .owns(api::<NetworkPolicy>(&client, ns), children())
        // Backups: the CronJob's status changes as its Jobs start and finish (they are its, not the
        // stack's).
        .owns(api::<CronJob>(&client, ns), children())
        .shutdown_on_signal()
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((stack, _)) => tracing::debug!(stack = %stack.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
