//! The mall's own workloads: the peer-address ConfigMap, each gRPC service's Deployment and headless
//! Service, and the gateway's Deployment and Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction, LocalObjectReference, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext,
    Service as KubeService, ServicePort, ServiceSpec as KubeServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::secrets::{
    ADMIN_PASSWORD_KEY, URL_KEY, admin_secret_name, database_secret_name, redis_secret_name,
};
use super::{child_name, label_selector, labels, metadata, namespace, selector_labels, short_hash};
use crate::crd::{MallStack, Service, ServiceType};

pub const GRPC_PORT: i32 = 50051;
pub const GATEWAY_PORT: i32 = 8889;
/// The name of a service's port (gRPC, and HTTP/1.1 for `/healthz`, `/readyz`, `/metrics`).
pub const GRPC_PORT_NAME: &str = "grpc";
/// The name of the gateway's HTTP port (the API, and `/metrics`).
pub const GATEWAY_PORT_NAME: &str = "http";
pub const MYSQL_PORT: i32 = 3306;
pub const REDIS_PORT: i32 = 6379;
/// Rides on every pod template: a hash of what should restart the pods when it changes.
pub const CONFIG_HASH_ANNOTATION: &str = "mall.example.com/config-hash";
const UID: i64 = 65532;

// A stopping pod: on SIGTERM `mall serve` fails readiness and reports NOT_SERVING, keeps serving for
// the drain delay while endpoints and DNS forget it, then finishes what is in flight (each call bounded
// by the request timeout) and exits. The grace period covers all of it with a margin; past it the
// kubelet kills the pod, cutting whatever was still running. Both settings are passed explicitly, from
// these numbers, so the grace period cannot drift from the application's defaults.
//
// No `preStop` hook: the application drains on SIGTERM itself, and a `preStop: sleep` would only
// delay that SIGTERM, so the pod would go on reporting ready (and accepting new connections from
// clients that still resolve it) during the sleep without anything being gained, while eating into
// the same grace period.

/// How long a stopping pod keeps serving (`MALL_DRAIN_DELAY`): longer than its peers take to stop
/// sending to it. Its endpoint turns not-ready when the pod is deleted (or, failing readiness, within
/// `READINESS_PERIOD_SECONDS` × `READINESS_FAILURES`), and peers re-resolve DNS every 5 s.
pub const DRAIN_DELAY_SECONDS: i64 = 10;
/// The deadline of one outgoing call (`MALL_REQUEST_TIMEOUT`): the longest a request accepted at the
/// end of the drain can still take.
pub const REQUEST_TIMEOUT_SECONDS: i64 = 10;
/// Closing connections and exiting, with room to spare.
const EXIT_MARGIN_SECONDS: i64 = 10;
/// `terminationGracePeriodSeconds` of every serving pod.
pub const TERMINATION_GRACE_SECONDS: i64 =
    DRAIN_DELAY_SECONDS + REQUEST_TIMEOUT_SECONDS + EXIT_MARGIN_SECONDS;
/// Readiness is probed every 2 s and two failures in a row take a pod out of its Service: a pod that
/// stops being ready (its database is gone, say) receives no new traffic within about 4 s.
pub const READINESS_PERIOD_SECONDS: i32 = 2;
pub const READINESS_FAILURES: i32 = 2;

pub fn config_map_name(stack: &MallStack) -> String {
    child_name(stack, "config")
}

/// `http://<stack>-<service>.<namespace>.svc.cluster.local:50051`.
pub fn peer_address(stack: &MallStack, service: Service) -> String {
    format!("http://{}.{}.svc.cluster.local:{GRPC_PORT}", child_name(stack, service.name()), namespace(stack))
}

/// In-cluster DNS name of a child Service.
pub(crate) fn service_host(stack: &MallStack, component: &str) -> String {
    format!("{}.{}.svc.cluster.local", child_name(stack, component), namespace(stack))
}

fn config_data(stack: &MallStack) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = Service::ALL
        .into_iter()
        .map(|s| (format!("{}_ADDR", s.env_prefix()), peer_address(stack, s)))
        .collect();
    data.insert("MALL_TOKEN_TTL".into(), stack.spec.token_ttl.clone());
    data.insert("MALL_ADMIN_EMAIL".into(), stack.spec.admin.email.clone());
    data.insert("MALL_LOG_FORMAT".into(), "json".into());
    data.insert("MALL_CACHE_NAMESPACE".into(), format!("{}.{}", namespace(stack), stack_name(stack)));
    data
}

fn stack_name(stack: &MallStack) -> String {
    kube::ResourceExt::name_any(stack)
}

/// The configuration every mall pod reads (`envFrom`): peer addresses and shared settings.
pub fn config_map(stack: &MallStack) -> ConfigMap {
    ConfigMap {
        metadata: metadata(stack, config_map_name(stack), "config"),
        data: Some(config_data(stack)),
        ..ConfigMap::default()
    }
}

pub(super) fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

pub(super) fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Database settings of `service`: on the managed MySQL, the URL of its own user and database from its
/// Secret (`<stack>-mysql-<service>`); else the external server's URL (the `mall` binary derives
/// `mall_<service>` from it).
pub(crate) fn database_env(stack: &MallStack, service: Service) -> Vec<EnvVar> {
    if stack.spec.database.managed.is_some() {
        vec![from_secret(
            &format!("{}_DATABASE_URL", service.env_prefix()),
            &database_secret_name(stack, service),
            URL_KEY,
        )]
    } else if let Some(external) = &stack.spec.database.external {
        vec![from_secret("MALL_DATABASE_URL", &external.secret_ref.name, &external.secret_ref.key)]
    } else {
        vec![]
    }
}

fn redis_env(stack: &MallStack) -> Vec<EnvVar> {
    if stack.spec.redis.managed.is_some() {
        vec![from_secret("MALL_REDIS_URL", &redis_secret_name(stack), URL_KEY)]
    } else if let Some(external) = &stack.spec.redis.external {
        vec![from_secret("MALL_REDIS_URL", &external.secret_ref.name, &external.secret_ref.key)]
    } else {
        vec![]
    }
}

/// The explicit environment of a service pod (the ConfigMap adds the shared part).
pub(crate) fn service_env(stack: &MallStack, service: Service) -> Vec<EnvVar> {
    let mut env = vec![value("MALL_LISTEN", format!("0.0.0.0:{GRPC_PORT}"))];
    env.extend(lifecycle_env());
    env.extend(database_env(stack, service));
    env.extend(redis_env(stack));
    // Auth's signing keys come as a file (`auth_keys::wire`), every component's identity from
    // `identity::wire`.
    if service == Service::User {
        env.push(match &stack.spec.admin.password_secret_ref {
            Some(r) => from_secret("MALL_ADMIN_PASSWORD", &r.name, &r.key),
            None => from_secret("MALL_ADMIN_PASSWORD", &admin_secret_name(stack), ADMIN_PASSWORD_KEY),
        });
    }
    env
}

/// The drain and call deadlines the grace period is computed from (see `TERMINATION_GRACE_SECONDS`).
fn lifecycle_env() -> [EnvVar; 2] {
    [
        value("MALL_DRAIN_DELAY", format!("{DRAIN_DELAY_SECONDS}s")),
        value("MALL_REQUEST_TIMEOUT", format!("{REQUEST_TIMEOUT_SECONDS}s")),
    ]
}

fn gateway_env(stack: &MallStack) -> Vec<EnvVar> {
    let mut env = vec![value("MALL_GATEWAY_LISTEN", format!("0.0.0.0:{GATEWAY_PORT}"))];
    env.extend(lifecycle_env());
    if let Some(hops) = stack.spec.gateway.trusted_proxies {
        env.push(value("MALL_GATEWAY_TRUSTED_PROXIES", hops.to_string()));
    }
    env.extend(redis_env(stack));
    env
}

/// Locked down: non-root, read-only root, no capabilities, no escalation, the runtime's seccomp profile.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

pub(crate) fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

pub(crate) fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

fn http_probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// `GET /readyz` on `port`, quick to notice a pod that stopped being ready.
fn readiness_probe(port: &str) -> Probe {
    Probe {
        timeout_seconds: Some(READINESS_PERIOD_SECONDS),
        failure_threshold: Some(READINESS_FAILURES),
        success_threshold: Some(1),
        ..http_probe("/readyz", port, READINESS_PERIOD_SECONDS)
    }
}

fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    )
}

/// The `mall` container running `args` (`serve <service>` or `migrate <service>`).
pub(crate) fn mall_container(stack: &MallStack, name: &str, args: &[&str], env: Vec<EnvVar>) -> Container {
    let (_, tmp_mount) = tmp_volume();
    Container {
        name: name.to_owned(),
        image: Some(stack.spec.image.reference()),
        image_pull_policy: Some(stack.spec.image.pull_policy.as_str().to_owned()),
        command: Some(vec!["mall".into()]),
        args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: config_map_name(stack), optional: Some(false) }),
            ..EnvFromSource::default()
        }]),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![tmp_mount]),
        ..Container::default()
    }
}

/// The pod spec around one mall container.
pub(crate) fn mall_pod(stack: &MallStack, container: Container, restart_policy: Option<&str>) -> PodSpec {
    let pull_secrets = &stack.spec.image.pull_secrets;
    PodSpec {
        containers: vec![container],
        security_context: Some(pod_security(UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (!pull_secrets.is_empty())
            .then(|| pull_secrets.iter().map(|n| LocalObjectReference { name: n.clone() }).collect()),
        restart_policy: restart_policy.map(str::to_owned),
        volumes: Some(vec![tmp_volume().0]),
        ..PodSpec::default()
    }
}

/// The hash of what should roll the pods: the shared configuration, the container's environment, its
/// image and command. Anything else on the stack (its labels, annotations, status) leaves it unchanged.
pub(crate) fn config_hash(stack: &MallStack, container: &Container) -> String {
    let input = serde_json::json!({
        "config": config_data(stack),
        "env": container.env,
        "envFrom": container.env_from,
        "image": container.image,
        "args": container.args,
    });
    short_hash(input.to_string().as_bytes())
}

/// Hashes the configuration of `deployment` again after its container was changed past [`deployment`]
/// (the identity and key wiring is added to the built Deployments).
pub(crate) fn rehash(stack: &MallStack, deployment: &mut Deployment) {
    let Some(spec) = deployment.spec.as_mut() else { return };
    let Some(container) = spec.template.spec.as_ref().and_then(|p| p.containers.first()) else { return };
    let hash = config_hash(stack, container);
    for annotations in [
        deployment.metadata.annotations.get_or_insert_with(BTreeMap::new),
        spec.template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new),
    ] {
        annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), hash.clone());
    }
}

fn deployment(
    stack: &MallStack,
    component: &str,
    container: Container,
    replicas: i32,
    autoscaled: bool,
) -> Deployment {
    let hash = config_hash(stack, &container);
    let mut meta = metadata(stack, child_name(stack, component), component);
    meta.annotations = Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash.clone())]));
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // With an HPA the replica count belongs to it; applying one would fight it.
            replicas: (!autoscaled).then_some(replicas),
            selector: label_selector(stack, component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(stack, component)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    ..mall_pod(stack, container, None)
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// `mall serve <service>` on the gRPC port, probed over HTTP (`/readyz`, `/healthz`) and gRPC health.
pub(crate) fn service_deployment(stack: &MallStack, service: Service) -> Deployment {
    let spec = stack.spec.services.get(service);
    let mut container =
        mall_container(stack, service.name(), &["serve", service.name()], service_env(stack, service));
    container.ports = Some(vec![ContainerPort {
        name: Some(GRPC_PORT_NAME.into()),
        container_port: GRPC_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    container.readiness_probe = Some(readiness_probe("grpc"));
    container.liveness_probe = Some(Probe {
        grpc: Some(GRPCAction { port: GRPC_PORT, service: None }),
        initial_delay_seconds: Some(5),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    });
    container.resources = spec.resources.clone();
    deployment(stack, service.name(), container, spec.replicas(), spec.autoscaling().is_some())
}

/// Headless, so clients resolve every pod and balance across them.
pub(crate) fn service_service(stack: &MallStack, service: Service) -> KubeService {
    KubeService {
        metadata: metadata(stack, child_name(stack, service.name()), service.name()),
        spec: Some(KubeServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(stack, service.name())),
            ports: Some(vec![ServicePort {
                name: Some(GRPC_PORT_NAME.into()),
                port: GRPC_PORT,
                target_port: Some(IntOrString::String(GRPC_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("kubernetes.io/h2c".into()),
                ..ServicePort::default()
            }]),
            ..KubeServiceSpec::default()
        }),
        status: None,
    }
}

/// `mall serve gateway`, HTTP on 8889.
pub(crate) fn gateway_deployment(stack: &MallStack) -> Deployment {
    let spec = &stack.spec.gateway;
    let mut container = mall_container(stack, "gateway", &["serve", "gateway"], gateway_env(stack));
    container.ports = Some(vec![ContainerPort {
        name: Some(GATEWAY_PORT_NAME.into()),
        container_port: GATEWAY_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
    container.readiness_probe = Some(readiness_probe("http"));
    let mut liveness = http_probe("/healthz", "http", 10);
    liveness.initial_delay_seconds = Some(5);
    container.liveness_probe = Some(liveness);
    container.resources = spec.resources.clone();
    deployment(stack, "gateway", container, spec.replicas, spec.autoscaling.is_some())
}

pub(crate) fn gateway_service(stack: &MallStack) -> KubeService {
    let spec = &stack.spec.gateway;
    KubeService {
        metadata: metadata(stack, child_name(stack, "gateway"), "gateway"),
        spec: Some(KubeServiceSpec {
            type_: Some(spec.service_type.as_str().into()),
            selector: Some(selector_labels(stack, "gateway")),
            ports: Some(vec![ServicePort {
                name: Some(GATEWAY_PORT_NAME.into()),
                port: GATEWAY_PORT,
                target_port: Some(IntOrString::String(GATEWAY_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                node_port: spec.node_port.filter(|_| spec.service_type == ServiceType::NodePort),
                ..ServicePort::default()
            }]),
            // Traffic from outside keeps the client's address (the gateway's rate limits count it).
            external_traffic_policy: (spec.service_type != ServiceType::ClusterIP)
                .then(|| "Local".to_owned()),
            ..KubeServiceSpec::default()
        }),
        status: None,
    }
}
