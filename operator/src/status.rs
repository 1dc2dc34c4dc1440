//! Status from what the cluster reports: ready and desired replicas per component, migrations, the
//! database, what the diagnosis found wrong or awaited (see [`crate::diagnosis`]), and the conditions
//! derived from them. Pure, so it is compared with the current status and written only when it changed.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod, Service as KubeService};
use k8s_openapi::jiff::Timestamp;

use crate::builders::{
    BACKUP_COMPONENT, GATEWAY_PORT, MigrationState, REFUSAL_EXIT_CODE, RESTORE_CHECK_CONTAINER,
    RESTORE_COMPONENT, RESTORE_PULL_CONTAINER, RestoreSource, child_name, migration_job_name, namespace,
    restarted, restore_job_name, restore_source,
};
use crate::crd::{
    BackupFailure, BackupStatus, BackupSuccess, ComponentStatus, Condition, MallStack, MallStackStatus,
    RestorePhase, RestoreStatus, Service, ServiceType,
};
use crate::diagnosis::{self, Diagnosis, LogTail};

/// What the operator saw of the stack's children (by object name), and when.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub deployments: BTreeMap<String, Deployment>,
    pub stateful_sets: BTreeMap<String, StatefulSet>,
    pub jobs: BTreeMap<String, Job>,
    pub gateway_service: Option<KubeService>,
    /// Every pod of the stack (its workloads' and its migration Jobs').
    pub pods: Vec<Pod>,
    /// The MySQL StatefulSet's volume claims.
    pub claims: Vec<PersistentVolumeClaim>,
    /// The namespace's Warning events, read only when an object alone does not say why it is stuck.
    pub events: Vec<CoreEvent>,
    /// The last lines of failed containers, by (pod, container).
    pub logs: BTreeMap<(String, String), LogTail>,
    /// When each of the stack's generated Secrets was created.
    pub secrets_created: BTreeMap<String, Timestamp>,
    /// When this was observed (durations in messages are left out without it).
    pub time: Option<Timestamp>,
    /// What became of the ServiceMonitors asked for (unset: none asked for, or not reached this time).
    pub service_monitors: Option<ServiceMonitors>,
    /// The `backup-now` token acted on this time, and the Job made for it.
    pub backup_request: Option<(String, String)>,
}

/// What became of the ServiceMonitors `spec.observability.serviceMonitor` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMonitors {
    /// This many were applied.
    Applied(usize),
    /// The API server does not serve monitoring.coreos.com/v1 ServiceMonitors: none was made.
    CrdMissing,
}

/// A failure to report on the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const MIGRATIONS_COMPLETE: &str = "MigrationsComplete";
pub const PAUSED: &str = "Paused";
/// Only with `spec.backup`: whether the newest finished backup Job failed.
pub const BACKUP_FAILING: &str = "BackupFailing";
/// Only with `spec.restore`: whether the stack's databases were restored from the backup named there.
pub const RESTORED: &str = "Restored";
/// Only while `spec.observability.serviceMonitor` is on: whether the ServiceMonitors were made.
pub const SERVICE_MONITORS: &str = "ServiceMonitors";
/// Its message when the Prometheus Operator's CRD is missing (reason `CRDNotInstalled`).
pub const SERVICE_MONITOR_CRD_MISSING: &str = "serviceMonitor is on but the ServiceMonitor CRD \
     (monitoring.coreos.com/v1) is not installed; no ServiceMonitor made";

fn deployment_status(observed: &Observed, name: &str) -> (i32, Option<i32>) {
    let d = observed.deployments.get(name);
    let ready = d.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0);
    let spec_replicas = d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
    (ready, spec_replicas)
}

/// Whether every pod of `d` runs its current template: the controller saw this generation, and all its
/// replicas (old ones gone) are updated and available.
fn deployment_rolled_out(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else { return false };
    let seen = d.metadata.generation.is_none_or(|g| status.observed_generation.is_some_and(|o| o >= g));
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    seen && updated >= want
        && status.replicas.unwrap_or(0) == updated
        && status.available_replicas.unwrap_or(0) >= want
}

/// [`deployment_rolled_out`] for the MySQL StatefulSet: its pods are of the update revision.
fn stateful_set_rolled_out(s: &StatefulSet) -> bool {
    let Some(status) = s.status.as_ref() else { return false };
    let seen = s.metadata.generation.is_none_or(|g| status.observed_generation.is_some_and(|o| o >= g));
    seen && status.current_revision == status.update_revision && status.ready_replicas.unwrap_or(0) >= 1
}

fn components(
    stack: &MallStack,
    observed: &Observed,
    diagnosis: &Diagnosis,
    previous: Option<&MallStackStatus>,
) -> BTreeMap<String, ComponentStatus> {
    let status = |component: &str, ready: i32, desired: i32| {
        let finding = diagnosis.of(component);
        let name = child_name(stack, component);
        // A restart is acknowledged once the pods run the template that carries its token; until the
        // rollout is done, what was acknowledged before stays.
        let (template, rolled_out) = match observed.deployments.get(&name) {
            Some(d) => (d.spec.as_ref().map(|s| &s.template), deployment_rolled_out(d)),
            None => match observed.stateful_sets.get(&name) {
                Some(s) => (s.spec.as_ref().map(|s| &s.template), stateful_set_rolled_out(s)),
                None => (None, false),
            },
        };
        let before = || previous.and_then(|p| p.components.get(component)).and_then(|c| c.restarted.clone());
        ComponentStatus {
            ready,
            desired,
            reason: finding.map(|f| f.reason.clone()),
            message: finding.map(|f| f.text.clone()),
            restarted: if rolled_out { restarted(template) } else { before() },
        }
    };
    let mut out = BTreeMap::new();
    let mut mall =
        vec![("gateway", stack.spec.gateway.replicas, stack.spec.gateway.autoscaling.as_ref(), false)];
    mall.extend(stack.spec.services.iter().map(|(n, s)| (n, s.replicas(), s.autoscaling(), s.paused)));
    for (component, replicas, autoscaling, paused) in mall {
        let (ready, observed_replicas) = deployment_status(observed, &child_name(stack, component));
        let desired = match autoscaling {
            // The autoscaler decides; until it has, its minimum.
            Some(a) => observed_replicas.unwrap_or(a.min_replicas).max(a.min_replicas),
            None => replicas,
        };
        let mut component_status = status(component, ready, desired);
        if paused && !diagnosis.of(component).is_some_and(|f| f.degraded) {
            component_status.reason = Some(PAUSED.to_owned());
            component_status.message = Some(match observed_replicas {
                Some(0) => format!("spec.services.{component}.paused: scaled to zero"),
                _ => format!("spec.services.{component}.paused: scaling to zero, {ready} pods ready"),
            });
        }
        out.insert(component.to_owned(), component_status);
    }
    if stack.spec.database.managed.is_some() {
        out.insert("mysql".to_owned(), status("mysql", mysql_ready(stack, observed), 1));
    }
    if stack.spec.redis.managed.is_some() {
        let (ready, _) = deployment_status(observed, &child_name(stack, "redis"));
        out.insert("redis".to_owned(), status("redis", ready, 1));
    }
    out
}

fn mysql_ready(stack: &MallStack, observed: &Observed) -> i32 {
    observed
        .stateful_sets
        .get(&child_name(stack, "mysql"))
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Whether the database can take connections: the managed MySQL once its pod is ready; an external
/// one is assumed to (its migration Jobs wait for it themselves).
pub fn database_ready(stack: &MallStack, observed: &Observed) -> bool {
    stack.spec.database.managed.is_none() || mysql_ready(stack, observed) >= 1
}

fn gateway_endpoint(
    stack: &MallStack,
    observed: &Observed,
    previous: Option<&MallStackStatus>,
) -> Option<String> {
    let port = observed
        .gateway_service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first());
    match stack.spec.gateway.service_type {
        ServiceType::ClusterIP => Some(format!(
            "http://{}.{}.svc.cluster.local:{GATEWAY_PORT}",
            child_name(stack, "gateway"),
            namespace(stack)
        )),
        ServiceType::NodePort => port
            .and_then(|p| p.node_port)
            .or(stack.spec.gateway.node_port)
            .map(|p| format!("http://<node-address>:{p}"))
            .or_else(|| previous.and_then(|p| p.gateway_endpoint.clone())),
        ServiceType::LoadBalancer => observed
            .gateway_service
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .map(|host| format!("http://{host}:{GATEWAY_PORT}"))
            .or_else(|| previous.and_then(|p| p.gateway_endpoint.clone())),
    }
}

/// The status of `stack` given what was observed and, if the reconcile failed, why. Conditions keep
/// their `lastTransitionTime` from `previous` while their status holds; `now` stamps the others.
pub fn compute(
    stack: &MallStack,
    observed: &Observed,
    failure: Option<&Failure>,
    previous: Option<&MallStackStatus>,
    now: &str,
) -> MallStackStatus {
    let generation = stack.metadata.generation;
    let diagnosis = diagnosis::diagnose(stack, observed, previous);
    let components = components(stack, observed, &diagnosis, previous);
    let ready_count = components.values().filter(|c| c.ready >= c.desired).count();
    let all_ready = ready_count == components.len();

    let migrations: Vec<(Service, MigrationState)> = Service::ALL
        .into_iter()
        .map(|s| (s, MigrationState::of(observed.jobs.get(&migration_job_name(stack, s)))))
        .collect();
    let failed: Vec<&str> =
        migrations.iter().filter(|(_, m)| *m == MigrationState::Failed).map(|(s, _)| s.name()).collect();
    let pending: Vec<&str> =
        migrations.iter().filter(|(_, m)| *m != MigrationState::Succeeded).map(|(s, _)| s.name()).collect();

    let database = if stack.spec.database.managed.is_none() {
        (true, "External", "an external database is used".to_owned())
    } else if database_ready(stack, observed) {
        (true, "MySQLReady", "the managed MySQL is ready".to_owned())
    } else {
        let why = components["mysql"].message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
        (
            false,
            "MySQLNotReady",
            format!("waiting for the managed MySQL{why} (migrations start once it is ready)"),
        )
    };

    let restore = restore_status(stack, observed, previous);
    let restoring = restore.as_ref().filter(|r| r.phase != RestorePhase::Succeeded);
    let restore_problem = restoring
        .filter(|r| matches!(r.phase, RestorePhase::Refused | RestorePhase::Failed))
        .map(|r| (format!("Restore{:?}", r.phase), format!("backup {}: {}", r.from, r.message)));
    let restore_wait = restoring.filter(|_| restore_problem.is_none()).map(|r| r.message.clone());

    let migrated = pending.is_empty();
    let migration_condition = if migrated {
        (true, "Succeeded", "every service's migrations ran for this image".to_owned())
    } else if let Some(r) = restoring {
        (false, "Pending", format!("migrations wait for the restore of backup {}", r.from))
    } else if !failed.is_empty() {
        (false, "MigrationFailed", format!("migration Jobs failed: {}", failed.join(", ")))
    } else {
        (false, "Pending", format!("waiting for migrations: {}", pending.join(", ")))
    };

    // The operator's own failure first (nothing else is current then), then the first cause found.
    let degraded = match (failure, diagnosis.degraded(), failed.is_empty()) {
        (Some(f), _, _) => (true, f.reason.clone(), f.message.clone()),
        (None, _, _) if restore_problem.is_some() => {
            let (reason, message) = restore_problem.clone().unwrap_or_default();
            (true, reason, message)
        }
        (None, Some((reason, message)), _) => (true, reason, message),
        (None, None, false) => (true, "MigrationFailed".to_owned(), migration_condition.2.clone()),
        (None, None, true) => (false, "AsExpected".to_owned(), String::new()),
    };
    let ready = all_ready && migrated && !degraded.0;
    let not_ready: Vec<&str> =
        components.iter().filter(|(_, c)| c.ready < c.desired).map(|(n, _)| n.as_str()).collect();
    let ready_condition = if ready {
        let paused: Vec<&str> = components
            .iter()
            .filter(|(_, c)| c.reason.as_deref() == Some(PAUSED))
            .map(|(n, _)| n.as_str())
            .collect();
        let also =
            if paused.is_empty() { String::new() } else { format!(" (paused: {})", paused.join(", ")) };
        (true, "AllComponentsReady", format!("{ready_count}/{} components ready{also}", components.len()))
    } else if degraded.0 {
        (false, degraded.1.as_str(), degraded.2.clone())
    } else if let Some(wait) = &restore_wait {
        (false, "Restoring", wait.clone())
    } else if !not_ready.is_empty() {
        (false, "ComponentsNotReady", format!("not ready: {}", not_ready.join(", ")))
    } else {
        (false, "MigrationsPending", migration_condition.2.clone())
    };
    let paused = stack.spec.paused;
    let progressing = !ready && !degraded.0 && !paused;
    let waiting = restore_wait.clone().or_else(|| diagnosis.waiting());
    let problem = if degraded.0 {
        Some(format!("{}: {}", degraded.1, degraded.2))
    } else if progressing {
        waiting.clone().or_else(|| Some(ready_condition.2.clone()))
    } else {
        None
    };

    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let kept = previous
            .and_then(|p| p.condition(type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time: Some(kept.unwrap_or_else(|| now.to_owned())),
            observed_generation: generation,
        }
    };
    let mut conditions = vec![
        condition(READY, ready_condition.0, ready_condition.1, ready_condition.2),
        condition(
            PROGRESSING,
            progressing,
            if progressing { "Reconciling" } else { "Idle" },
            match (progressing, waiting) {
                (true, Some(waiting)) => waiting,
                (true, None) => "rolling out the stack".to_owned(),
                (false, _) => String::new(),
            },
        ),
        condition(DEGRADED, degraded.0, &degraded.1, degraded.2),
        condition(DATABASE_READY, database.0, database.1, database.2),
        condition(MIGRATIONS_COMPLETE, migration_condition.0, migration_condition.1, migration_condition.2),
        condition(
            PAUSED,
            paused,
            if paused { "Paused" } else { "Reconciling" },
            if paused { "spec.paused is set: children are not changed".to_owned() } else { String::new() },
        ),
    ];
    // Neither makes the stack less Ready: metrics are not the shop. Not reached this time (paused, or a
    // failure came first): as it was.
    if stack.spec.service_monitor() {
        match observed.service_monitors {
            Some(ServiceMonitors::Applied(n)) => conditions.push(condition(
                SERVICE_MONITORS,
                true,
                "Applied",
                format!("{n} ServiceMonitors: /metrics of every component every 15s"),
            )),
            Some(ServiceMonitors::CrdMissing) => conditions.push(condition(
                SERVICE_MONITORS,
                false,
                "CRDNotInstalled",
                SERVICE_MONITOR_CRD_MISSING.to_owned(),
            )),
            None => conditions.extend(previous.and_then(|p| p.condition(SERVICE_MONITORS)).cloned()),
        }
    }
    if let Some(r) = &restore {
        let done = r.phase == RestorePhase::Succeeded;
        conditions.push(condition(RESTORED, done, &format!("{:?}", r.phase), r.message.clone()));
    }
    let backup = stack.spec.backup.as_ref().map(|_| backup_status(observed, previous));
    if let Some(backup) = &backup {
        let (failing, reason, message) = backup_failing(backup);
        conditions.push(condition(BACKUP_FAILING, failing, reason, message));
    }
    MallStackStatus {
        observed_generation: generation,
        conditions,
        ready_components: Some(format!("{ready_count}/{}", components.len())),
        components,
        gateway_endpoint: gateway_endpoint(stack, observed, previous),
        problem,
        // Kept as it was unless the reconciler kept the signing keys this time (see `rotation`).
        auth: previous.and_then(|p| p.auth.clone()),
        backup,
        restore,
    }
}

/// The terminated states of the containers (init containers included) of `job`'s pods, newest pod
/// first, with each container's name.
fn terminated<'a>(
    observed: &'a Observed,
    job: &'a str,
) -> impl Iterator<Item = (&'a str, &'a k8s_openapi::api::core::v1::ContainerStateTerminated)> + 'a {
    let mut pods: Vec<&Pod> = observed
        .pods
        .iter()
        .filter(move |p| {
            let labels = p.metadata.labels.as_ref();
            labels
                .and_then(|l| l.get("batch.kubernetes.io/job-name").or_else(|| l.get("job-name")))
                .map(String::as_str)
                == Some(job)
        })
        .collect();
    pods.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
    pods.into_iter()
        .flat_map(|p| {
            p.status.iter().flat_map(|s| {
                s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())
            })
        })
        .filter_map(|c| Some((c.name.as_str(), c.state.as_ref()?.terminated.as_ref()?)))
}

/// A termination message in one line (a log tail falls back to its last lines), at most 500 chars.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let text = lines[start..].join(" | ");
    if text.chars().count() > 500 { text.chars().take(497).chain("...".chars()).collect() } else { text }
}

/// `status.restore` from the restore Job and its pod (the check's refusal, the load's report) and what
/// `previous` remembered: a restore that succeeded stays so once its Job is gone.
fn restore_status(
    stack: &MallStack,
    observed: &Observed,
    previous: Option<&MallStackStatus>,
) -> Option<RestoreStatus> {
    let restore = stack.spec.restore.as_ref()?;
    let before = previous.and_then(|p| p.restore.as_ref()).filter(|r| r.from == restore.from);
    let name = restore_job_name(stack, restore);
    let status = |phase, finished: Option<String>, message: String| RestoreStatus {
        from: restore.from.clone(),
        phase,
        job: Some(name.clone()),
        finished,
        message,
    };
    let Some(job) = observed.jobs.get(&name) else {
        if let Some(done) = before.filter(|r| r.phase == RestorePhase::Succeeded) {
            return Some(done.clone());
        }
        let message = if database_ready(stack, observed) {
            format!("making the restore Job {name}")
        } else {
            "waiting for the managed MySQL before restoring".to_owned()
        };
        return Some(RestoreStatus { job: None, ..status(RestorePhase::Pending, None, message) });
    };
    let time = |type_: &str| finished(job, type_).and_then(|(t, _)| t).map(|t| t.to_string());
    Some(match MigrationState::of(Some(job)) {
        MigrationState::Succeeded => {
            let report = terminated(observed, &name).find_map(|(_, t)| {
                let line: serde_json::Value = serde_json::from_str(t.message.as_deref()?.trim()).ok()?;
                line.get("restored")?;
                Some((line.get("databases")?.as_u64()?, line.get("bytes")?.as_u64()?))
            });
            let message = match report {
                Some((n, bytes)) => format!("restored {n} databases ({bytes} bytes compressed)"),
                None => "restored".to_owned(),
            };
            match before.filter(|r| r.phase == RestorePhase::Succeeded) {
                Some(done) => done.clone(),
                None => status(RestorePhase::Succeeded, time("Complete"), message),
            }
        }
        MigrationState::Failed => {
            let failed = terminated(observed, &name).find(|(_, t)| t.exit_code != 0);
            let said = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
                t.message.as_deref().map(one_line).filter(|m| !m.is_empty())
            };
            match failed {
                Some((container, t))
                    if [RESTORE_PULL_CONTAINER, RESTORE_CHECK_CONTAINER].contains(&container)
                        && t.exit_code == REFUSAL_EXIT_CODE =>
                {
                    let why = said(t).unwrap_or_else(|| "refused (no reason left in the pod)".to_owned());
                    let why = why.strip_prefix("refused: ").unwrap_or(&why).to_owned();
                    status(
                        RestorePhase::Refused,
                        time("Failed"),
                        format!("{why}; to go on, name another backup or remove spec.restore"),
                    )
                }
                Some((container, t)) => {
                    let why = said(t).unwrap_or_else(|| format!("exit code {}", t.exit_code));
                    status(
                        RestorePhase::Failed,
                        time("Failed"),
                        format!("{container} failed: {why}; delete Job {name} to try again"),
                    )
                }
                None => {
                    let why = finished(job, "Failed").map(|(_, m)| m).unwrap_or_default();
                    status(
                        RestorePhase::Failed,
                        time("Failed"),
                        format!("{why}; delete Job {name} to try again"),
                    )
                }
            }
        }
        MigrationState::Running | MigrationState::Missing => {
            let done = |step: &str| terminated(observed, &name).any(|(c, t)| c == step && t.exit_code == 0);
            let bucket = matches!(restore_source(stack, restore), RestoreSource::Bucket(_));
            let doing = if done(RESTORE_CHECK_CONTAINER) {
                "loading the dumps"
            } else if bucket && !done(RESTORE_PULL_CONTAINER) {
                "downloading the backup"
            } else {
                "checking the backup and the database"
            };
            status(RestorePhase::Running, None, format!("{doing} (Job {name})"))
        }
    })
}

fn component_of(job: &Job) -> Option<&str> {
    job.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/component")).map(String::as_str)
}

/// Whether `job` is a backup Job (the CronJob's or an on-demand one).
pub fn is_backup_job(job: &Job) -> bool {
    component_of(job) == Some(BACKUP_COMPONENT)
}

/// Whether `job` is a restore Job.
pub fn is_restore_job(job: &Job) -> bool {
    component_of(job) == Some(RESTORE_COMPONENT)
}

/// The time and message of `job`'s condition `type_` when it is True.
fn finished(job: &Job, type_: &str) -> Option<(Option<Timestamp>, String)> {
    let status = job.status.as_ref()?;
    let condition = status.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")?;
    let time = match type_ {
        "Complete" => status.completion_time.as_ref().or(condition.last_transition_time.as_ref()),
        _ => condition.last_transition_time.as_ref(),
    };
    let message = condition.message.clone().or_else(|| condition.reason.clone()).unwrap_or_default();
    Some((time.map(|t| t.0), message))
}

/// The backup's name its pod told in its termination message (the script's last line,
/// `{"backup":"<name>",...}`), if a pod of `job` is still there to tell it.
fn backup_name(observed: &Observed, job: &str) -> Option<String> {
    terminated(observed, job).filter(|(_, t)| t.exit_code == 0).find_map(|(_, t)| {
        t.message.as_deref()?.lines().rev().find_map(|l| {
            let line: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
            line.get("backup")?.as_str().map(str::to_owned)
        })
    })
}

/// `status.backup` from the backup Jobs observed (the CronJob keeps only its last few) and what
/// `previous` remembered: each of the last success and failure is the newer of the two.
fn backup_status(observed: &Observed, previous: Option<&MallStackStatus>) -> BackupStatus {
    let before = previous.and_then(|p| p.backup.clone()).unwrap_or_default();
    let newer = |seen: Option<&str>, kept: Option<&str>| match (seen, kept) {
        (Some(seen), Some(kept)) => {
            seen.parse::<Timestamp>().ok() > kept.parse::<Timestamp>().ok() || seen == kept
        }
        (Some(_), None) => true,
        _ => false,
    };
    let mut last_success = before.last_success;
    let mut last_failure = before.last_failure;
    let mut jobs: Vec<&Job> = observed.jobs.values().filter(|j| is_backup_job(j)).collect();
    jobs.sort_by_key(|j| j.metadata.name.clone());
    for job in jobs {
        let name = job.metadata.name.clone().unwrap_or_default();
        if let Some((Some(time), _)) = finished(job, "Complete") {
            let time = time.to_string();
            if newer(Some(&time), last_success.as_ref().map(|s| s.time.as_str())) {
                let backup = backup_name(observed, &name)
                    .or_else(|| last_success.as_ref().filter(|s| s.job == name).map(|s| s.name.clone()))
                    .unwrap_or_else(|| name.clone());
                last_success = Some(BackupSuccess { time, name: backup, job: name });
            }
        } else if let Some((Some(time), message)) = finished(job, "Failed") {
            let time = time.to_string();
            if newer(Some(&time), last_failure.as_ref().map(|f| f.time.as_str())) {
                last_failure = Some(BackupFailure { time, job: name, reason: message });
            }
        }
    }
    let (last_request, last_request_job) = match &observed.backup_request {
        Some((token, job)) => (Some(token.clone()), Some(job.clone())),
        None => (before.last_request, before.last_request_job),
    };
    BackupStatus { last_success, last_failure, last_request, last_request_job }
}

/// `BackupFailing`: True when the newest finished backup failed.
fn backup_failing(backup: &BackupStatus) -> (bool, &'static str, String) {
    let time = |t: &str| t.parse::<Timestamp>().ok();
    match (&backup.last_success, &backup.last_failure) {
        (success, Some(f)) if success.as_ref().is_none_or(|s| time(&f.time) > time(&s.time)) => (
            true,
            "BackupFailed",
            format!("backup Job {} failed at {}: {}", f.job, f.time, f.reason)
                .trim_end_matches(": ")
                .to_owned(),
        ),
        (Some(s), _) => {
            (false, "Succeeded", format!("backup {} written by Job {} at {}", s.name, s.job, s.time))
        }
        (None, _) => (false, "NoBackupYet", "no backup has finished yet".to_owned()),
    }
}

/// Conditions whose status differs between `previous` and `next` (a missing one counts as changed
/// only when it is `True` now, or for `ServiceMonitors`, which appears when asked for), and `Degraded`
/// when its cause changed: what events are published for.
pub fn transitions<'a>(previous: Option<&MallStackStatus>, next: &'a MallStackStatus) -> Vec<&'a Condition> {
    next.conditions
        .iter()
        .filter(|c| match previous.and_then(|p| p.condition(&c.type_)) {
            Some(before)
                if (c.type_ == DEGRADED || c.type_ == BACKUP_FAILING)
                    && c.status == "True"
                    && before.status == "True" =>
            {
                before.reason != c.reason || before.message != c.message
            }
            Some(before) => before.status != c.status,
            None => c.status == "True" || c.type_ == SERVICE_MONITORS,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;
    use crate::builders::{ExistingSecrets, desired};
    use crate::fixtures::{all_ready, minimal_stack};

    #[test]
    fn fresh_stack_is_progressing() {
        let stack = minimal_stack();
        let status = compute(&stack, &Observed::default(), None, None, "t0");
        assert_eq!(status.ready_components.as_deref(), Some("0/10"));
        assert_eq!(status.condition(READY).unwrap().status, "False");
        assert_eq!(status.condition(PROGRESSING).unwrap().status, "True");
        assert_eq!(status.condition(DEGRADED).unwrap().status, "False");
        assert_eq!(status.condition(DATABASE_READY).unwrap().reason, "MySQLNotReady");
        assert_eq!(status.condition(MIGRATIONS_COMPLETE).unwrap().reason, "Pending");
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.gateway_endpoint.as_deref(),
            Some("http://shop-gateway.mall.svc.cluster.local:8889")
        );
    }

    #[test]
    fn everything_ready_is_ready_and_times_are_kept() {
        let stack = minimal_stack();
        let observed = all_ready(&desired(&stack, &ExistingSecrets::new()));
        let first = compute(&stack, &observed, None, None, "t0");
        assert_eq!(first.ready_components.as_deref(), Some("10/10"));
        assert_eq!(first.condition(READY).unwrap().status, "True");
        assert_eq!(first.condition(PROGRESSING).unwrap().status, "False");
        assert_eq!(first.condition(MIGRATIONS_COMPLETE).unwrap().status, "True");
        let again = compute(&stack, &observed, None, Some(&first), "t1");
        assert_eq!(again, first, "nothing changed: identical status, so no write");
        assert!(transitions(Some(&first), &again).is_empty());

        let mut one_down = observed.clone();
        let cart = one_down.deployments.get_mut("shop-cart").unwrap();
        cart.status = Some(DeploymentStatus { ready_replicas: Some(0), ..Default::default() });
        let degraded = compute(&stack, &one_down, None, Some(&first), "t2");
        assert_eq!(degraded.ready_components.as_deref(), Some("9/10"));
        let ready = degraded.condition(READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.as_deref()), ("False", Some("t2")));
        assert!(ready.message.contains("cart"));
        assert_eq!(degraded.condition(DATABASE_READY).unwrap().last_transition_time.as_deref(), Some("t0"));
        let changed: Vec<_> = transitions(Some(&first), &degraded).iter().map(|c| c.type_.clone()).collect();
        assert_eq!(changed, [READY, PROGRESSING]);
    }

    #[test]
    fn a_cause_degrades_names_its_components_and_is_the_problem() {
        use crate::diagnosis::fixtures::{at, crash_looping, typed, workload_pod};
        let stack = minimal_stack();
        let mut observed = all_ready(&desired(&stack, &ExistingSecrets::new()));
        observed.time = Some(at(95));
        let first = compute(&stack, &observed, None, None, "t0");
        assert_eq!(first.problem, None, "nothing to say when Ready");
        assert_eq!(first.components["cart"].message, None);

        let cart = observed.deployments.get_mut("shop-cart").unwrap();
        cart.status = Some(DeploymentStatus { ready_replicas: Some(0), ..Default::default() });
        let pod = crash_looping(workload_pod(&stack, "cart", "a"), 1, 2);
        observed.pods.push(typed(&pod));
        observed
            .logs
            .insert(("shop-cart-a".into(), "cart".into()), Ok("Error: cannot reach the cache\n".into()));
        let broken = compute(&stack, &observed, None, Some(&first), "t1");
        let degraded = broken.condition(DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str(), degraded.message.as_str()),
            ("True", "CrashLoop", "cart: exits at start (exit code 1): cannot reach the cache")
        );
        let ready = broken.condition(READY).unwrap();
        assert_eq!((ready.reason.as_str(), ready.message.as_str()), ("CrashLoop", degraded.message.as_str()));
        assert_eq!(
            broken.problem.as_deref(),
            Some("CrashLoop: cart: exits at start (exit code 1): cannot reach the cache")
        );
        let cart = &broken.components["cart"];
        assert_eq!((cart.ready, cart.desired, cart.reason.as_deref()), (0, 1, Some("CrashLoop")));
        assert_eq!(cart.message.as_deref(), Some("exits at start (exit code 1): cannot reach the cache"));
        let changed: Vec<_> = transitions(Some(&first), &broken).iter().map(|c| c.type_.clone()).collect();
        assert_eq!(changed, [READY, DEGRADED]);

        // Another cause while still Degraded: told again; the same cause again: not.
        observed.logs.insert(("shop-cart-a".into(), "cart".into()), Ok("Error: address in use\n".into()));
        let other = compute(&stack, &observed, None, Some(&broken), "t2");
        assert_eq!(
            transitions(Some(&broken), &other).iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [DEGRADED]
        );
        assert_eq!(other.condition(DEGRADED).unwrap().last_transition_time.as_deref(), Some("t1"));
        assert!(transitions(Some(&other), &compute(&stack, &observed, None, Some(&other), "t3")).is_empty());
    }

    #[test]
    fn what_is_awaited_is_progressing_and_the_problem() {
        use crate::diagnosis::fixtures::{at, running, typed, workload_pod};
        let stack = minimal_stack();
        let mut observed = Observed { time: Some(at(95)), ..Observed::default() };
        let sts = desired(&stack, &ExistingSecrets::new()).stateful_sets[0].clone();
        observed.stateful_sets.insert("shop-mysql".into(), sts);
        observed.pods.push(typed(&running(workload_pod(&stack, "mysql", "0"), false, 80)));
        let status = compute(&stack, &observed, None, None, "t0");
        let progressing = status.condition(PROGRESSING).unwrap();
        assert_eq!(progressing.status, "True");
        assert!(
            progressing.message.starts_with("waiting for mysql: pod running, not ready for 10s (and "),
            "{progressing:?}"
        );
        assert_eq!(status.problem.as_deref(), Some(progressing.message.as_str()));
        assert_eq!(
            status.condition(DATABASE_READY).unwrap().message,
            "waiting for the managed MySQL: pod running, not ready for 10s (migrations start once it is ready)"
        );
        assert_eq!(status.components["mysql"].reason.as_deref(), Some("Waiting"));
    }

    #[test]
    fn service_monitors_have_a_condition_only_when_asked_for_and_never_make_the_stack_unready() {
        let mut stack = minimal_stack();
        let mut observed = all_ready(&desired(&stack, &ExistingSecrets::new()));
        let off = compute(&stack, &observed, None, None, "t0");
        assert!(off.condition(SERVICE_MONITORS).is_none(), "not asked for: no condition");

        stack.spec.observability =
            Some(crate::crd::ObservabilitySpec { service_monitor: true, ..Default::default() });
        observed.service_monitors = Some(ServiceMonitors::CrdMissing);
        let missing = compute(&stack, &observed, None, Some(&off), "t1");
        let condition = missing.condition(SERVICE_MONITORS).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str(), condition.message.as_str()),
            ("False", "CRDNotInstalled", SERVICE_MONITOR_CRD_MISSING)
        );
        assert_eq!(missing.condition(READY).unwrap().status, "True");
        assert_eq!(missing.condition(DEGRADED).unwrap().status, "False");
        assert_eq!(missing.problem, None);
        let told: Vec<_> = transitions(Some(&off), &missing).iter().map(|c| c.type_.clone()).collect();
        assert_eq!(told, [SERVICE_MONITORS], "a missing CRD is told once, when it is first seen");

        // Not reached this time (paused, or a failure came first): as it was.
        observed.service_monitors = None;
        let kept = compute(&stack, &observed, None, Some(&missing), "t2");
        assert_eq!(kept.condition(SERVICE_MONITORS), missing.condition(SERVICE_MONITORS));

        observed.service_monitors = Some(ServiceMonitors::Applied(8));
        let applied = compute(&stack, &observed, None, Some(&missing), "t3");
        let condition = applied.condition(SERVICE_MONITORS).unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "Applied"));
        assert_eq!(condition.last_transition_time.as_deref(), Some("t3"));
        assert_eq!(transitions(Some(&missing), &applied).len(), 1);
    }

    #[test]
    fn a_failure_degrades() {
        let stack = minimal_stack();
        let failure = Failure { reason: "ApplyFailed".into(), message: "boom".into() };
        let status = compute(&stack, &Observed::default(), Some(&failure), None, "t0");
        let degraded = status.condition(DEGRADED).unwrap();
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "ApplyFailed"));
        assert_eq!(degraded.message, "boom");
        assert_eq!(status.condition(PROGRESSING).unwrap().status, "False");
    }
}
