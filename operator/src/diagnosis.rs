//! Why a stack is not Ready, in words an operator can act on. From what Kubernetes reports about the
//! stack's children (migration Jobs and their pods, each Deployment and its pods, the MySQL StatefulSet,
//! its pods and its volume claim, Warning events, and the last lines of a failed container's log) to one
//! finding per component: a problem (`Degraded`: a reason and a one-line cause) or what is awaited and
//! for how long (`Progressing`). Pure, apart from [`gather`], which reads what the rest needs.

#[cfg(test)]
pub(crate) mod fixtures;
mod gather;
pub mod output;
pub mod pods;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use gather::gather;

use crate::builders::{MigrationState, child_name, migration_job_name, mysql_secret_name, namespace};
use crate::crd::{MallStack, MallStackStatus, Service};
use crate::status::Observed;
use output::{Explained, Kind};
use pods::{Exit, Seen};

/// The reasons a component can be in trouble (the `Degraded` condition's reason, PascalCase).
pub mod reasons {
    /// A migration Job's container exited with a failure (or the Job gave up).
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    /// A service's container keeps exiting.
    pub const CRASH_LOOP: &str = "CrashLoop";
    /// The container cannot be created: a missing Secret or ConfigMap (key), a bad command.
    pub const CANNOT_START: &str = "CannotStart";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    pub const VOLUME_FAILED: &str = "VolumeProvisioningFailed";
    /// A ResourceQuota refuses a pod.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// Admission refuses a pod for another reason (PodSecurity, a webhook, a LimitRange).
    pub const PODS_REFUSED: &str = "PodsRefused";
    /// A Deployment's rollout stopped progressing without a cause seen on its pods.
    pub const ROLLOUT_STUCK: &str = "RolloutStuck";
    /// Not a problem: something is awaited.
    pub const WAITING: &str = "Waiting";
}

/// What one component shows: a problem or a wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub reason: String,
    /// One line, without the component's name.
    pub text: String,
    /// A problem (the stack is `Degraded`) rather than something awaited.
    pub degraded: bool,
}

impl Finding {
    pub fn problem(reason: &str, text: impl Into<String>) -> Finding {
        Finding { reason: reason.to_owned(), text: text.into(), degraded: true }
    }

    pub fn waiting(text: impl Into<String>) -> Finding {
        Finding { reason: reasons::WAITING.to_owned(), text: text.into(), degraded: false }
    }
}

/// A container's log tail as read, or why it could not be.
pub type LogTail = Result<String, String>;

/// A log the diagnosis wants: the last lines of a failed container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRequest {
    pub pod: String,
    pub container: String,
    pub previous: bool,
}

/// The findings of one stack, most upstream component first (MySQL, Redis, each service with its
/// migration, the gateway): at most one per component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    pub findings: Vec<(String, Finding)>,
}

impl Diagnosis {
    pub fn of(&self, component: &str) -> Option<&Finding> {
        self.findings.iter().find(|(c, _)| c == component).map(|(_, f)| f)
    }

    /// The first problem as `(reason, message)`: the components that share it, its cause, and how many
    /// other problems there are (each is on its component).
    pub fn degraded(&self) -> Option<(String, String)> {
        let problems: Vec<&(String, Finding)> = self.findings.iter().filter(|(_, f)| f.degraded).collect();
        let (_, first) = problems.first()?;
        let same: Vec<&str> = problems
            .iter()
            .filter(|(_, f)| f.reason == first.reason && f.text == first.text)
            .map(|(c, _)| c.as_str())
            .collect();
        let mut message = format!("{}: {}", same.join(", "), first.text);
        match problems.len() - same.len() {
            0 => {}
            1 => message.push_str(" (and 1 more problem)"),
            n => message.push_str(&format!(" (and {n} more problems)")),
        }
        Some((first.reason.clone(), message))
    }

    /// What is awaited first, and how many other components are waited for.
    pub fn waiting(&self) -> Option<String> {
        let waits: Vec<&(String, Finding)> = self.findings.iter().filter(|(_, f)| !f.degraded).collect();
        let (component, first) = waits.first()?;
        let mut message = format!("waiting for {component}: {}", first.text);
        match waits.len() - 1 {
            0 => {}
            1 => message.push_str(" (and 1 more component)"),
            n => message.push_str(&format!(" (and {n} more components)")),
        }
        Some(message)
    }
}

/// One workload of a component.
enum Unit {
    Mysql,
    /// A Deployment: `redis`, `gateway` or a service's.
    Deployment(&'static str),
    Migration(Service),
}

/// The workloads in the order their trouble propagates: data stores, each service's migration and
/// Deployment, the gateway.
fn units(stack: &MallStack) -> Vec<(&'static str, Unit)> {
    let mut units = Vec::new();
    if stack.spec.database.managed.is_some() {
        units.push(("mysql", Unit::Mysql));
    }
    if stack.spec.redis.managed.is_some() {
        units.push(("redis", Unit::Deployment("redis")));
    }
    for service in Service::ALL {
        units.push((service.name(), Unit::Migration(service)));
        units.push((service.name(), Unit::Deployment(service.name())));
    }
    units.push(("gateway", Unit::Deployment("gateway")));
    units
}

const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The pods of one component's long-running workload.
fn component_pods<'a>(observed: &'a Observed, component: &'a str) -> impl Iterator<Item = &'a Pod> {
    observed.pods.iter().filter(move |p| label(p, COMPONENT_LABEL) == Some(component))
}

/// The pods of the Job `job`.
fn job_pods<'a>(observed: &'a Observed, job: &'a str) -> impl Iterator<Item = &'a Pod> {
    observed.pods.iter().filter(move |p| {
        label(p, "batch.kubernetes.io/job-name") == Some(job)
            || label(p, "job-name") == Some(job)
            || p.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job" && o.name == job)
    })
}

/// ` for 20s` from `since` to `now`, or nothing when either is unknown. Coarse on purpose: the status
/// is written when it changes, so a finer clock would rewrite it at every reconcile.
pub(crate) fn for_(since: Option<&Time>, now: Option<Timestamp>) -> String {
    match (since, now) {
        (Some(Time(since)), Some(now)) => format!(" for {}", duration(now.as_second() - since.as_second())),
        _ => String::new(),
    }
}

/// `<10s`, `20s`, `3m`, `2h`.
pub(crate) fn duration(secs: i64) -> String {
    match secs {
        ..10 => "<10s".to_owned(),
        10..60 => format!("{}s", secs / 10 * 10),
        60..3600 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// The newest Warning event about `kind`/`name` with one of `reasons`.
fn warning<'a>(observed: &'a Observed, kind: &str, name: &str, reasons: &[&str]) -> Option<&'a CoreEvent> {
    let when = |e: &CoreEvent| {
        e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0))
    };
    observed
        .events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind) && e.involved_object.name.as_deref() == Some(name)
        })
        .filter(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .max_by_key(|e| when(e))
}

/// A pod refused at creation (a ReplicaSet's, Job's or StatefulSet's `FailedCreate`), from the API
/// server's message (`pods "shop-cart-…" is forbidden: exceeded quota: …`): the name of the refused pod
/// changes at every attempt, so it is left out.
fn refused(message: &str) -> Finding {
    if let Some(at) = message.find("exceeded quota") {
        return Finding::problem(
            reasons::QUOTA_EXCEEDED,
            output::shorten(&format!("cannot create a pod: {}", &message[at..])),
        );
    }
    let why = message.split_once("is forbidden: ").map_or(message, |(_, why)| why);
    Finding::problem(reasons::PODS_REFUSED, output::shorten(&format!("cannot create a pod: {why}")))
}

/// Where the managed MySQL answers, for logs that do not say.
fn managed_database(stack: &MallStack) -> Option<String> {
    stack.spec.database.managed.as_ref()?;
    Some(format!("{}.{}.svc.cluster.local:3306", child_name(stack, "mysql"), namespace(stack)))
}

/// Since when the managed MySQL's pod is ready (`None`: it is not, or the database is external).
fn mysql_ready_since(observed: &Observed) -> Option<Timestamp> {
    component_pods(observed, "mysql")
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").cloned())
        .filter(|c| c.status == "True")
        .filter_map(|c| c.last_transition_time.map(|t| t.0))
        .min()
}

/// The pods whose failed container's log explains a finding: the one pod that says the most per
/// component and migration, when a container of it exited with a failure.
pub fn logs_wanted(stack: &MallStack, observed: &Observed) -> Vec<LogRequest> {
    let mut wanted = Vec::new();
    for (_, unit) in units(stack) {
        let seen = match unit {
            Unit::Mysql => pods::worst(component_pods(observed, "mysql"), observed.time),
            Unit::Deployment(component) => pods::worst(component_pods(observed, component), observed.time),
            Unit::Migration(service) => {
                let job = migration_job_name(stack, service);
                if MigrationState::of(observed.jobs.get(&job)) == MigrationState::Succeeded {
                    continue;
                }
                pods::worst(job_pods(observed, &job), observed.time)
            }
        };
        if let Seen::Exited(exit) = seen {
            wanted.push(LogRequest { pod: exit.pod, container: exit.container, previous: exit.previous });
        }
    }
    wanted
}

/// Whether Warning events are needed to explain what the objects alone do not: a claim still Pending,
/// a migration Job or the MySQL StatefulSet without a pod.
pub fn needs_events(stack: &MallStack, observed: &Observed) -> bool {
    // The backup claim waits for the first backup's pod (WaitForFirstConsumer): nothing to explain.
    let pending_claim = observed
        .claims
        .iter()
        .filter(|c| {
            c.metadata.labels.as_ref().and_then(|l| l.get(COMPONENT_LABEL)).map(String::as_str)
                != Some(crate::builders::BACKUP_COMPONENT)
        })
        .any(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending"));
    let podless_job = Service::ALL.into_iter().any(|service| {
        let job = migration_job_name(stack, service);
        MigrationState::of(observed.jobs.get(&job)) == MigrationState::Running
            && job_pods(observed, &job).next().is_none()
    });
    let podless_mysql = observed.stateful_sets.get(&child_name(stack, "mysql")).is_some_and(|s| {
        s.status.as_ref().map_or(0, |st| st.replicas) == 0
            && component_pods(observed, "mysql").next().is_none()
    });
    pending_claim || podless_job || podless_mysql
}

/// The findings for `stack` given what was observed; `previous` keeps a migration's failure while its
/// Job is being run again, and the detail of an image pull error while the kubelet backs off.
pub fn diagnose(stack: &MallStack, observed: &Observed, previous: Option<&MallStackStatus>) -> Diagnosis {
    let mut per_component: Vec<(&'static str, Vec<Finding>)> = Vec::new();
    for (component, unit) in units(stack) {
        let finding = match unit {
            Unit::Mysql => mysql(stack, observed),
            Unit::Deployment(name) => deployment(stack, observed, name),
            Unit::Migration(service) => migration(stack, observed, service),
        };
        let Some(finding) = finding else { continue };
        match per_component.iter_mut().find(|(c, _)| *c == component) {
            Some((_, findings)) => findings.push(finding),
            None => per_component.push((component, vec![finding])),
        }
    }
    let mut findings = Vec::new();
    for (component, candidates) in per_component {
        let chosen = candidates.iter().find(|f| f.degraded).or(candidates.first()).cloned();
        let Some(chosen) = chosen else { continue };
        let before = previous.and_then(|p| p.components.get(component));
        findings.push((component.to_owned(), keep_what_is_known(chosen, before, observed, stack, component)));
    }
    Diagnosis { findings }
}

/// `fresh`, unless the previous status knew more about the same trouble: a migration failure while its
/// Job runs again (a failed Job is deleted and recreated), or which way an image pull failed while the
/// kubelet only says it backs off.
fn keep_what_is_known(
    fresh: Finding,
    before: Option<&crate::crd::ComponentStatus>,
    observed: &Observed,
    stack: &MallStack,
    component: &str,
) -> Finding {
    let Some((Some(reason), Some(message))) = before.map(|b| (b.reason.as_deref(), b.message.as_deref()))
    else {
        return fresh;
    };
    let migrating = Service::ALL.into_iter().find(|s| s.name() == component).is_some_and(|s| {
        MigrationState::of(observed.jobs.get(&migration_job_name(stack, s))) != MigrationState::Succeeded
    });
    if reason == reasons::MIGRATION_FAILED && migrating && !fresh.degraded {
        return Finding::problem(reason, message);
    }
    if reason == reasons::IMAGE_PULL_FAILED
        && fresh.reason == reasons::IMAGE_PULL_FAILED
        && fresh.text.ends_with("(ImagePullBackOff)")
        && let Some(image) = fresh.text.strip_suffix(" (ImagePullBackOff)")
        && message.starts_with(&format!("{image} ("))
    {
        return Finding::problem(reason, message);
    }
    fresh
}

fn mysql(stack: &MallStack, observed: &Observed) -> Option<Finding> {
    let now = observed.time;
    let mut claims: Vec<&PersistentVolumeClaim> = observed
        .claims
        .iter()
        .filter(|c| {
            c.metadata.labels.as_ref().and_then(|l| l.get(COMPONENT_LABEL)).map(String::as_str)
                == Some("mysql")
        })
        .collect();
    claims.sort_by_key(|c| c.metadata.name.clone());
    for claim in claims {
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => {}
            Some("Lost") => {
                return Some(Finding::problem(
                    reasons::VOLUME_FAILED,
                    format!("volume claim {name} lost its volume"),
                ));
            }
            _ => {
                if let Some(event) =
                    warning(observed, "PersistentVolumeClaim", name, &["ProvisioningFailed", "FailedBinding"])
                {
                    let why = event.message.as_deref().unwrap_or("no reason given");
                    return Some(Finding::problem(
                        reasons::VOLUME_FAILED,
                        output::shorten(&format!("volume claim {name} cannot be provisioned: {why}")),
                    ));
                }
                return Some(Finding::waiting(format!(
                    "volume claim {name} pending{}",
                    for_(claim.metadata.creation_timestamp.as_ref(), now)
                )));
            }
        }
    }
    let seen = pods::worst(component_pods(observed, "mysql"), now);
    if let Some(finding) = from_service_pods(seen, observed) {
        return Some(finding);
    }
    let set = child_name(stack, "mysql");
    let stateful_set = observed.stateful_sets.get(&set)?;
    let ready = stateful_set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let live = component_pods(observed, "mysql").any(|p| p.metadata.deletion_timestamp.is_none());
    if ready >= 1 || live {
        return None;
    }
    match warning(observed, "StatefulSet", &set, &["FailedCreate"]) {
        Some(event) => Some(refused(event.message.as_deref().unwrap_or_default())),
        None => Some(Finding::waiting("no pod yet")),
    }
}

/// A finding from what the pods of a long-running workload show (`None`: they are fine).
fn from_service_pods(seen: Seen, observed: &Observed) -> Option<Finding> {
    match seen {
        Seen::Fine => None,
        Seen::Waiting(text) => Some(Finding::waiting(text)),
        Seen::Problem(finding) => Some(finding),
        Seen::Exited(exit) => Some(crash(&exit, observed)),
    }
}

/// A service container that exits: how, and what its log's last words say.
fn crash(exit: &Exit, observed: &Observed) -> Finding {
    if exit.reason.as_deref() == Some("OOMKilled") {
        return Finding::problem(reasons::CRASH_LOOP, "killed for exceeding its memory limit (OOMKilled)");
    }
    let when = match exit.ran_for {
        Some(secs) if secs >= 60 => format!("exits after {}", duration(secs)),
        _ => "exits at start".to_owned(),
    };
    let mut text = format!("{when} (exit code {})", exit.code);
    match observed.logs.get(&(exit.pod.clone(), exit.container.clone())) {
        Some(Ok(tail)) => {
            if let Some(explained) = output::explain(tail, None) {
                text.push_str(": ");
                text.push_str(&explained.text);
            }
        }
        Some(Err(why)) => text.push_str(&format!(" (its log cannot be read: {why})")),
        None => {}
    }
    Finding::problem(reasons::CRASH_LOOP, text)
}

fn deployment(stack: &MallStack, observed: &Observed, component: &str) -> Option<Finding> {
    let deployment: &Deployment = observed.deployments.get(&child_name(stack, component))?;
    let conditions = deployment.status.as_ref().and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    if let Some(failure) = condition("ReplicaFailure").filter(|c| c.status == "True") {
        return Some(refused(failure.message.as_deref().unwrap_or("no reason given")));
    }
    let seen = pods::worst(component_pods(observed, component), observed.time);
    let from_pods = from_service_pods(seen, observed);
    if from_pods.as_ref().is_some_and(|f| f.degraded) {
        return from_pods;
    }
    let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.as_ref();
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    if ready >= want {
        // Enough old pods may serve while new ones are not there yet: a rollout still to watch.
        let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
        let total = status.and_then(|s| s.replicas).unwrap_or(0);
        let unseen = matches!(
            (deployment.metadata.generation, status.and_then(|s| s.observed_generation)),
            (Some(generation), Some(observed)) if observed < generation
        );
        let rolling = unseen || updated < want || total > updated;
        return rolling.then(|| Finding::waiting(format!("rolling out: {updated}/{want} pods updated")));
    }
    if let Some(stuck) = condition("Progressing")
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    {
        let why = stuck.message.as_deref().unwrap_or("ProgressDeadlineExceeded");
        return Some(Finding::problem(
            reasons::ROLLOUT_STUCK,
            output::shorten(&format!("rollout stopped: {why}")),
        ));
    }
    from_pods.or_else(|| Some(Finding::waiting(format!("{ready}/{want} pods ready"))))
}

fn migration(stack: &MallStack, observed: &Observed, service: Service) -> Option<Finding> {
    let name = migration_job_name(stack, service);
    let job: Option<&Job> = observed.jobs.get(&name);
    let state = MigrationState::of(job);
    match state {
        MigrationState::Succeeded => return None,
        // Jobs are withheld until the database answers (status::database_ready).
        MigrationState::Missing if !crate::status::database_ready(stack, observed) => {
            return Some(Finding::waiting("migration waits for the database"));
        }
        MigrationState::Missing => return Some(Finding::waiting("migration not started yet")),
        MigrationState::Running | MigrationState::Failed => {}
    }
    match pods::worst(job_pods(observed, &name), observed.time) {
        Seen::Problem(finding) => return Some(finding),
        Seen::Exited(exit) => return Some(migration_exit(stack, observed, &exit)),
        Seen::Waiting(text) => return Some(Finding::waiting(format!("migration {text}"))),
        Seen::Fine => {}
    }
    if let Some(event) = warning(observed, "Job", &name, &["FailedCreate"]) {
        return Some(refused(event.message.as_deref().unwrap_or_default()));
    }
    if state == MigrationState::Failed {
        let failed = job
            .and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
        let why = failed
            .and_then(|c| c.message.clone().or(c.reason.clone()))
            .unwrap_or_else(|| "its pods failed".to_owned());
        return Some(Finding::problem(
            reasons::MIGRATION_FAILED,
            output::shorten(&format!("migration Job failed: {why}")),
        ));
    }
    Some(Finding::waiting("migration pod not created yet"))
}

/// A migration container that exited: what the database said, or its last words. While the managed
/// MySQL is not (or was not yet) ready, failing to reach it is expected and only waited out.
fn migration_exit(stack: &MallStack, observed: &Observed, exit: &Exit) -> Finding {
    let database = managed_database(stack);
    let (explained, unread) = match observed.logs.get(&(exit.pod.clone(), exit.container.clone())) {
        Some(Ok(tail)) => (output::explain(tail, database.as_deref()), None),
        Some(Err(why)) => (None, Some(why.as_str())),
        None => (None, None),
    };
    let kind = explained.as_ref().map(|e| e.kind);
    if database.is_some() && kind != Some(Kind::PasswordRefused) && kind != Some(Kind::Other) {
        let before_ready = match (mysql_ready_since(observed), exit.finished) {
            (None, _) => true,
            (Some(ready), Some(finished)) => finished < ready,
            (Some(_), None) => false,
        };
        if before_ready {
            return Finding::waiting("migration waits for the database");
        }
    }
    let text = match (explained, unread) {
        (Some(Explained { kind: Kind::Other, text }), _) => format!("exits with code {}: {text}", exit.code),
        (Some(Explained { kind: Kind::PasswordRefused, text }), _) => {
            match earlier_install(stack, observed) {
                Some(why) => format!("{text} ({why})"),
                None => text,
            }
        }
        (Some(Explained { text, .. }), _) => text,
        (None, Some(why)) => format!("exits with code {} (its log cannot be read: {why})", exit.code),
        (None, None) => format!("exits with code {}", exit.code),
    };
    Finding::problem(reasons::MIGRATION_FAILED, text)
}

/// Why the managed MySQL may refuse the password its Secret holds: its volume claim is older than that
/// Secret, so its data (and the password set when it was initialised) come from an earlier install
/// whose Secret is gone (`helm uninstall` keeps a StatefulSet's claims).
fn earlier_install(stack: &MallStack, observed: &Observed) -> Option<String> {
    stack.spec.database.managed.as_ref()?;
    let secret = mysql_secret_name(stack);
    let secret_created = observed.secrets_created.get(&secret)?;
    let claim = observed.claims.iter().find(|c| {
        c.metadata.labels.as_ref().and_then(|l| l.get(COMPONENT_LABEL)).map(String::as_str) == Some("mysql")
    })?;
    let claim_created = claim.metadata.creation_timestamp.as_ref()?.0;
    (claim_created < *secret_created).then(|| {
        format!(
            "volume claim {} is older than Secret {secret}: MySQL keeps the password of an earlier install",
            claim.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests;
