//! One pod as the kubelet and the scheduler report it: fine, waiting for something (and since when),
//! failing for a reason the status alone tells (an image that cannot be pulled, a missing Secret, no
//! node), or a container that exited badly, whose log tells the rest.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Finding, reasons};

/// What one pod shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Ready, done, or going away.
    Fine,
    /// Something is awaited: what, and for how long.
    Waiting(String),
    /// A container exited with a failure; its log says why.
    Exited(Exit),
    /// A failure the pod's status explains by itself.
    Problem(Finding),
}

impl Seen {
    /// Which of two pods of one component says more: a problem, then an exit, then a wait.
    fn weight(&self) -> u8 {
        match self {
            Seen::Fine => 0,
            Seen::Waiting(_) => 1,
            Seen::Exited(_) => 2,
            Seen::Problem(_) => 3,
        }
    }
}

/// A container that exited with a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub pod: String,
    pub container: String,
    pub code: i32,
    /// The kubelet's word for it (`Error`, `OOMKilled`).
    pub reason: Option<String>,
    /// Whether that run is the container's previous one (it has restarted or waits to), so its log is
    /// read with `previous=true`.
    pub previous: bool,
    /// How long it ran, in seconds, when known.
    pub ran_for: Option<i64>,
    pub finished: Option<Timestamp>,
}

/// How long ago a failure may have ended and still explain a container that runs again unready: more
/// than the kubelet's longest restart back-off (five minutes).
const RECENT_EXIT_SECS: i64 = 600;

const IMAGE_PULL_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RegistryUnavailable",
    "ErrImageInspect",
];
const CANNOT_START_REASONS: [&str; 3] =
    ["CreateContainerConfigError", "CreateContainerError", "RunContainerError"];

/// The pod of `pods` that says the most, and what it says (`Fine` for none).
pub fn worst<'a>(pods: impl IntoIterator<Item = &'a Pod>, now: Option<Timestamp>) -> Seen {
    let mut worst = Seen::Fine;
    for pod in pods {
        let seen = seen(pod, now);
        if seen.weight() > worst.weight() {
            worst = seen;
        }
    }
    worst
}

/// What `pod` shows at `now` (durations are left out without it).
pub fn seen(pod: &Pod, now: Option<Timestamp>) -> Seen {
    if pod.metadata.deletion_timestamp.is_some() {
        return Seen::Fine;
    }
    let Some(status) = &pod.status else { return Seen::Waiting("pod not scheduled yet".into()) };
    if status.phase.as_deref() == Some("Succeeded") {
        return Seen::Fine;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(scheduled) = condition(pod, "PodScheduled")
        && scheduled.status == "False"
        && scheduled.reason.as_deref() == Some("Unschedulable")
    {
        let why = scheduled.message.as_deref().unwrap_or("no node fits");
        // The scheduler appends what preemption would do; the first part is the reason.
        let why = why.split(" preemption:").next().unwrap_or(why).trim();
        return Seen::Problem(Finding::problem(
            reasons::UNSCHEDULABLE,
            format!("cannot be scheduled: {why}"),
        ));
    }
    let containers =
        status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some(seen) = container_seen(pod, &name, container, now) {
            return seen;
        }
    }
    if status.phase.as_deref() == Some("Pending") {
        let created = pod.metadata.creation_timestamp.as_ref();
        let scheduled = condition(pod, "PodScheduled").is_some_and(|c| c.status == "True");
        let what = if scheduled { "pod starting" } else { "pod not scheduled yet" };
        return Seen::Waiting(format!("{what}{}", super::for_(created, now)));
    }
    match condition(pod, "Ready") {
        Some(ready) if ready.status == "True" => Seen::Fine,
        Some(ready) => Seen::Waiting(format!(
            "pod running, not ready{}",
            super::for_(ready.last_transition_time.as_ref().or(status.start_time.as_ref()), now)
        )),
        None => Seen::Waiting(format!(
            "pod starting{}",
            super::for_(pod.metadata.creation_timestamp.as_ref(), now)
        )),
    }
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// What one container says, if anything worth more than the pod's phase.
fn container_seen(pod: &Pod, pod_name: &str, c: &ContainerStatus, now: Option<Timestamp>) -> Option<Seen> {
    let state = c.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if IMAGE_PULL_REASONS.contains(&reason) {
            let image = image_of(pod, &c.name).unwrap_or_else(|| c.image.clone());
            return Some(Seen::Problem(image_problem(&image, reason, waiting.message.as_deref())));
        }
        if CANNOT_START_REASONS.contains(&reason) {
            let why = waiting.message.as_deref().filter(|m| !m.is_empty()).unwrap_or(reason);
            return Some(Seen::Problem(Finding::problem(
                reasons::CANNOT_START,
                super::output::shorten(&format!("cannot start: {why}")),
            )));
        }
    }
    let exit = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated, previous: bool| Exit {
        pod: pod_name.to_owned(),
        container: c.name.clone(),
        code: t.exit_code,
        reason: t.reason.clone(),
        previous,
        ran_for: match (&t.started_at, &t.finished_at) {
            (Some(Time(start)), Some(Time(end))) => Some(end.as_second() - start.as_second()),
            _ => None,
        },
        finished: t.finished_at.as_ref().map(|t| t.0),
    };
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
        return Some(Seen::Exited(exit(t, false)));
    }
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0);
    let crash_looping = state
        .and_then(|s| s.waiting.as_ref())
        .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
    if let Some(t) = last {
        // Running again (briefly, when it crash-loops) but not ready: that exit is still the news, as
        // long as it is recent.
        let recent = match (now, &t.finished_at) {
            (Some(now), Some(Time(end))) => now.as_second() - end.as_second() < RECENT_EXIT_SECS,
            _ => true,
        };
        if crash_looping || (!c.ready && recent) {
            return Some(Seen::Exited(exit(t, true)));
        }
    }
    None
}

fn image_of(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let all = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    all.filter(|c| c.name == container).find_map(|c| c.image.clone())
}

/// Why `image` cannot be pulled, from the kubelet's reason and message.
fn image_problem(image: &str, reason: &str, message: Option<&str>) -> Finding {
    let message = message.unwrap_or_default().to_ascii_lowercase();
    let detail = match reason {
        "InvalidImageName" => {
            return Finding::problem(
                reasons::IMAGE_PULL_FAILED,
                format!("image {image} is not a valid image reference (InvalidImageName)"),
            );
        }
        "ErrImagePull" if message.contains("not found") || message.contains("manifest unknown") => {
            "not found"
        }
        "ErrImagePull"
            if ["unauthorized", "authentication required", "denied", "forbidden"]
                .iter()
                .any(|w| message.contains(w)) =>
        {
            "access denied by the registry"
        }
        "ErrImagePull"
            if ["no such host", "i/o timeout", "connection refused", "dial tcp"]
                .iter()
                .any(|w| message.contains(w)) =>
        {
            "registry unreachable"
        }
        other => other,
    };
    Finding::problem(reasons::IMAGE_PULL_FAILED, format!("image {image} cannot be pulled ({detail})"))
}
