//! Pods, claims, events and logs as a cluster reports them when something is wrong, as JSON (what the
//! mocked API server answers) and typed (what the diagnosis reads). Times count seconds from [`T0`].

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::builders::{child_name, migration_job_name};
use crate::crd::{MallStack, Service};

pub const T0: &str = "2025-05-01T10:00:00Z";

/// `T0` plus `secs`.
pub fn at(secs: i64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

fn time(secs: i64) -> String {
    at(secs).to_string()
}

pub fn typed<K: DeserializeOwned>(value: &Value) -> K {
    serde_json::from_value(value.clone()).unwrap()
}

fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "mall",
        "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "mall",
        "app.kubernetes.io/managed-by": "mall-operator",
    })
}

/// A pod of `component` created at `T0`, one container `container` running `image`, no status yet.
pub fn pod(name: &str, component: &str, container: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "mall",
            "uid": format!("uid-{name}"),
            "labels": labels(component),
            "creationTimestamp": time(0),
        },
        "spec": {"containers": [{"name": container, "image": image}]},
    })
}

/// The pod `-<suffix>` of the migration Job of `service`, as the Job controller labels and owns it.
pub fn migration_pod(stack: &MallStack, service: Service, suffix: &str) -> Value {
    let job = migration_job_name(stack, service);
    let mut pod = pod(&format!("{job}-{suffix}"), "migrate", "migrate", &stack.spec.image.reference());
    pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!(job);
    pod["metadata"]["labels"]["job-name"] = json!(job);
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": format!("uid-{job}"), "controller": true}]);
    pod
}

/// A pod `-<suffix>` of the Deployment of `component` (a service, `gateway` or `redis`), or the
/// MySQL StatefulSet's `-0`; its container is named after the component, as the builders name it.
pub fn workload_pod(stack: &MallStack, component: &str, suffix: &str) -> Value {
    let image = match component {
        "mysql" => stack.spec.database.managed.as_ref().unwrap().image.clone(),
        "redis" => stack.spec.redis.managed.as_ref().unwrap().image.clone(),
        _ => stack.spec.image.reference(),
    };
    pod(&format!("{}-{suffix}", child_name(stack, component)), component, component, &image)
}

fn container_name(pod: &Value) -> Value {
    pod["spec"]["containers"][0]["name"].clone()
}

fn image(pod: &Value) -> Value {
    pod["spec"]["containers"][0]["image"].clone()
}

/// Scheduled at `T0 + 1`, its container restarting after exiting with `code` having run `ran` seconds
/// (the last run ended at `T0 + 60`).
pub fn crash_looping(mut pod: Value, code: i32, ran: i64) -> Value {
    pod["status"] = json!({
        "phase": "Running",
        "startTime": time(1),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": time(1)},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": time(1)},
        ],
        "containerStatuses": [{
            "name": container_name(&pod),
            "image": image(&pod),
            "imageID": "",
            "ready": false,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {
                "exitCode": code, "reason": "Error", "startedAt": time(60 - ran), "finishedAt": time(60),
                "containerID": "containerd://0123abcd",
            }},
        }],
    });
    pod
}

/// Scheduled, its container waiting with `reason` (image pulls, container creation).
pub fn waiting(mut pod: Value, reason: &str, message: &str) -> Value {
    pod["status"] = json!({
        "phase": "Pending",
        "startTime": time(1),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": time(1)},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": time(1)},
        ],
        "containerStatuses": [{
            "name": container_name(&pod),
            "image": image(&pod),
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }],
    });
    pod
}

/// Not scheduled: the scheduler's `message`.
pub fn unschedulable(mut pod: Value, message: &str) -> Value {
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": time(1),
        }],
    });
    pod
}

/// Running since `T0 + since`, ready or not.
pub fn running(mut pod: Value, ready: bool, since: i64) -> Value {
    pod["status"] = json!({
        "phase": "Running",
        "startTime": time(1),
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": time(1)},
            {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": time(since)},
        ],
        "containerStatuses": [{
            "name": container_name(&pod),
            "image": image(&pod),
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "state": {"running": {"startedAt": time(since)}},
        }],
    });
    pod
}

/// The MySQL StatefulSet's claim, created at `T0` with `class`, in `phase`.
pub fn mysql_claim(stack: &MallStack, class: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": format!("data-{}-0", child_name(stack, "mysql")),
            "namespace": "mall",
            "uid": "uid-claim",
            "labels": labels("mysql"),
            "creationTimestamp": time(0),
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": "10Gi"}},
        },
        "status": {"phase": phase},
    })
}

/// A Warning event about `kind`/`name`, last seen at `T0 + secs`.
pub fn warning(kind: &str, name: &str, reason: &str, message: &str, secs: i64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{secs:x}"), "namespace": "mall"},
        "involvedObject": {"kind": kind, "name": name, "namespace": "mall"},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "count": 3,
        "firstTimestamp": time(1),
        "lastTimestamp": time(secs),
    })
}

/// The end of `mall migrate <service>`'s output when MySQL refuses its password (anyhow's report, as
/// the binary prints it).
pub fn access_denied_log(service: &str, address: &str) -> String {
    format!(
        "{{\"timestamp\":\"2025-05-01T10:00:59.100Z\",\"level\":\"INFO\",\"message\":\"starting\",\"target\":\"mall\"}}\n\
         Error: cannot open the {service} database at mysql://mall:***@{address}/mall_{service}\n\
         \n\
         Caused by:\n    \
         0: database error: error returned from database: 1045 (28000): Access denied for user 'mall'@'10.244.0.17' (using password: YES)\n    \
         1: error returned from database: 1045 (28000): Access denied for user 'mall'@'10.244.0.17' (using password: YES)\n    \
         2: 1045 (28000): Access denied for user 'mall'@'10.244.0.17' (using password: YES)\n"
    )
}

/// The end of `mall migrate <service>`'s output when nothing listens at `address`.
pub fn connection_refused_log(service: &str, address: &str) -> String {
    format!(
        "Error: cannot open the {service} database at mysql://mall:***@{address}/mall_{service}\n\
         \n\
         Caused by:\n    \
         0: database error: error communicating with database: Connection refused (os error 111)\n    \
         1: error communicating with database: Connection refused (os error 111)\n    \
         2: Connection refused (os error 111)\n"
    )
}
