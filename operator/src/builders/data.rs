//! The managed data stores: a single-replica MySQL StatefulSet (a database and a user per service,
//! made by the migration Jobs) and a single-replica Redis used as a cache, behind a password.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Service as KubeService, ServicePort,
    ServiceSpec as KubeServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::secrets::{DB_ROOT_PASSWORD_KEY, PASSWORD_KEY, mysql_secret_name, redis_secret_name};
use super::workloads::{MYSQL_PORT, REDIS_PORT, container_security, pod_security};
use super::{child_name, label_selector, labels, metadata, selector_labels};
use crate::crd::{MallStack, ManagedDatabase, ManagedRedis};

/// The uid of the `mysql` and `redis` users in the official images.
const DATA_UID: i64 = 999;

fn secret_env(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: secret,
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn empty_dir(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() },
    )
}

fn tcp_probe(port: &str, period: i32, initial_delay: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::String(port.into()), host: None }),
        period_seconds: Some(period),
        initial_delay_seconds: Some(initial_delay),
        ..Probe::default()
    }
}

fn headless_or_cluster(stack: &MallStack, component: &str, port: i32, headless: bool) -> KubeService {
    KubeService {
        metadata: metadata(stack, child_name(stack, component), component),
        spec: Some(KubeServiceSpec {
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(selector_labels(stack, component)),
            ports: Some(vec![ServicePort {
                name: Some(component.into()),
                port,
                target_port: Some(IntOrString::String(component.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..KubeServiceSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn mysql_service(stack: &MallStack) -> KubeService {
    headless_or_cluster(stack, "mysql", MYSQL_PORT, true)
}

/// The most database connections one service pod opens: its pool's size (`mall_storage`'s default,
/// which the services run with).
pub const SERVICE_POOL_SIZE: i64 = 10;
/// Connections kept for migration Jobs, `mall provision` and an administrator.
const SPARE_CONNECTIONS: i64 = 20;

/// `max_connections` of the managed MySQL server: every service at its most pods (autoscaling's
/// maximum, else its replicas) plus a rollout's surge (25 %, rounded up, at least one pod), each with
/// a full pool, and a spare. MySQL's default of 151 refuses connections once seven services run three
/// pods each, which an autoscaler reaches under exactly the load that needs them.
pub fn mysql_max_connections(stack: &MallStack) -> i64 {
    let pods: i64 = stack
        .spec
        .services
        .iter()
        .map(|(_, s)| {
            let most = i64::from(s.autoscaling.as_ref().map_or(s.replicas, |a| a.max_replicas));
            most + ((most + 3) / 4).max(1)
        })
        .sum();
    pods * SERVICE_POOL_SIZE + SPARE_CONNECTIONS
}

pub(crate) fn mysql_stateful_set(stack: &MallStack, db: &ManagedDatabase) -> StatefulSet {
    let (run, run_mount) = empty_dir("run", "/run/mysqld");
    let (tmp, tmp_mount) = empty_dir("tmp", "/tmp");
    // Only root: each service's database and user are made by its migration Job (`mall provision`).
    let container = Container {
        name: "mysql".into(),
        image: Some(db.image.clone()),
        // The image's entrypoint passes options on to mysqld.
        args: Some(vec![format!("--max-connections={}", mysql_max_connections(stack))]),
        env: Some(vec![secret_env("MYSQL_ROOT_PASSWORD", mysql_secret_name(stack), DB_ROOT_PASSWORD_KEY)]),
        ports: Some(vec![ContainerPort {
            name: Some("mysql".into()),
            container_port: MYSQL_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(tcp_probe("mysql", 5, 5)),
        liveness_probe: Some(tcp_probe("mysql", 10, 60)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/mysql".into(),
                ..VolumeMount::default()
            },
            run_mount,
            tmp_mount,
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(stack, "mysql")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: db.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(db.storage_size.clone()))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: metadata(stack, child_name(stack, "mysql"), "mysql"),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(child_name(stack, "mysql")),
            selector: label_selector(stack, "mysql"),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(stack, "mysql")), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security(DATA_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: Some(vec![run, tmp]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            // Kept or deleted together with the MySQL Secret (see `secrets`).
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(if db.retain_on_delete { "Retain" } else { "Delete" }.to_owned()),
                when_scaled: Some("Retain".to_owned()),
            }),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn redis_service(stack: &MallStack) -> KubeService {
    headless_or_cluster(stack, "redis", REDIS_PORT, false)
}

/// The variable the Redis container reads its password from (the `<stack>-redis` Secret).
pub(crate) const REDIS_PASSWORD_ENV: &str = "REDIS_PASSWORD";

/// Ready when Redis answers `PING` with `PONG` to a client that authenticates with the password
/// (`REDISCLI_AUTH`, so the password is on no command line). A Redis that refuses the password, or is
/// still loading, is not ready.
fn redis_readiness() -> Probe {
    let ping = format!(
        "REDISCLI_AUTH=\"${REDIS_PASSWORD_ENV}\" redis-cli -h 127.0.0.1 -p {REDIS_PORT} ping | grep -qx PONG"
    );
    Probe {
        exec: Some(ExecAction { command: Some(vec!["sh".into(), "-c".into(), ping]) }),
        period_seconds: Some(5),
        initial_delay_seconds: Some(2),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

/// A Redis that requires the password of `<stack>-redis` (`--requirepass`, given through the
/// environment: the pod spec holds a reference, never the password). Alive while it takes connections
/// (a TCP probe needs no password, and a slow `PING` under load must not restart the cache); ready when
/// an authenticated `PING` answers.
pub(crate) fn redis_deployment(stack: &MallStack, redis: &ManagedRedis) -> Deployment {
    let (data, data_mount) = empty_dir("data", "/data");
    let container = Container {
        name: "redis".into(),
        image: Some(redis.image.clone()),
        args: Some(
            ["--save", "", "--appendonly", "no", "--requirepass", &format!("$({REDIS_PASSWORD_ENV})")]
                .map(String::from)
                .to_vec(),
        ),
        env: Some(vec![secret_env(REDIS_PASSWORD_ENV, redis_secret_name(stack), PASSWORD_KEY)]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(redis_readiness()),
        liveness_probe: Some(tcp_probe("redis", 10, 10)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![data_mount]),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(stack, child_name(stack, "redis"), "redis"),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: label_selector(stack, "redis"),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(stack, "redis")), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security(DATA_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: Some(vec![data]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
