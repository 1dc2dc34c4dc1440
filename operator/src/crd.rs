//! The `MallStack` custom resource: one whole shop (gateway, seven gRPC services, MySQL, Redis) in a
//! namespace. The schema carries the validation the API server enforces (ranges, enums, CEL rules);
//! [`MallStackSpec::validate`] mirrors the CEL rules for paths that do not pass through admission.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Mall resource (and the prefix of the operator's annotations).
pub const GROUP: &str = "mall.example.com";

/// The desired state of one Mall deployment.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mall.example.com",
    version = "v1alpha1",
    kind = "MallStack",
    plural = "mallstacks",
    shortname = "mall",
    namespaced,
    status = "MallStackStatus",
    doc = "A whole Mall shop: gateway, gRPC services, database and cache, reconciled by mall-operator.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Components","type":"string","jsonPath":".status.readyComponents"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image.tag"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Problem","type":"string","priority":1,"jsonPath":".status.problem"}"#,
    printcolumn = r#"{"name":"Last backup","type":"string","priority":1,"jsonPath":".status.backup.lastSuccess.time"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.backup) || has(self.database.managed)",
     "message": "backup is only for the managed database: set database.managed"},
    {"rule": "!has(self.restore) || has(self.database.managed)",
     "message": "restore is only into the managed database: set database.managed"}
]))]
pub struct MallStackSpec {
    /// The `mall` container image every component runs.
    pub image: ImageSpec,
    /// The HTTP gateway, the shop's only public entry point.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// The seven gRPC services.
    #[serde(default)]
    pub services: ServicesSpec,
    /// MySQL: run by the operator (`managed`) or given (`external`).
    pub database: DatabaseSpec,
    /// Redis: run by the operator (`managed`) or given (`external`).
    pub redis: RedisSpec,
    /// How long a login token lives (`30m`, `24h`, `7d`, or seconds).
    #[serde(default = "default_token_ttl")]
    #[schemars(regex(pattern = r"^[0-9]+[smhd]?$"))]
    pub token_ttl: String,
    /// The auth service's token signing keys.
    #[serde(default)]
    pub auth: AuthSpec,
    /// The admin account seeded by the user service.
    #[serde(default)]
    pub admin: AdminSpec,
    /// NetworkPolicies (on unless set to `false`): only the gateway is reachable from anywhere, each
    /// service only from its callers, the managed MySQL and Redis only from this stack's pods.
    #[serde(default = "yes")]
    pub network_policies: bool,
    /// Traces and metrics: where the components send their traces (OTLP over gRPC) and whether the
    /// operator makes Prometheus Operator ServiceMonitors for them. Unset: no tracing, no ServiceMonitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<ObservabilitySpec>,
    /// Scheduled backups of the managed MySQL (`mysqldump` of every service's database, gzipped, with a
    /// manifest) by a CronJob `<stack>-backup`. Unset: no backups. Only with `database.managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Start the stack from a backup: before any migration runs or any service starts, a Job restores
    /// every service's database from the backup named here, into the managed MySQL, which must be
    /// empty. Set it when creating a stack; a restore already done (`status.restore`) is not done again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// Stop touching the children (status is still reported).
    #[serde(default)]
    pub paused: bool,
}

fn default_token_ttl() -> String {
    "24h".to_owned()
}

/// Which image to run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.tag != 'latest'", "message": "pin a version: the tag must not be 'latest'"}
]))]
pub struct ImageSpec {
    /// Repository without the tag, e.g. `ghcr.io/example/mall`.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1))]
    pub repository: String,
    /// A released version, e.g. `0.1.0`.
    #[schemars(length(min = 1, max = 128))]
    pub tag: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of image pull Secrets in the stack's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

fn default_repository() -> String {
    "ghcr.io/example/mall".to_owned()
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The gateway Deployment and its Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.nodePort) || (has(self.serviceType) && self.serviceType == 'NodePort')",
     "message": "nodePort is only allowed with serviceType NodePort"}
]))]
pub struct GatewaySpec {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale on CPU between bounds (then `replicas` is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    #[serde(default)]
    pub service_type: ServiceType,
    /// Fixed node port (only with `serviceType: NodePort`; unset: Kubernetes picks one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Proxies in front of the gateway that append to X-Forwarded-For (an ingress): its login and
    /// register rate limits then count the address the outermost one saw. Unset: the connection's peer
    /// (with `NodePort`/`LoadBalancer` the Service keeps the client's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub trusted_proxies: Option<i32>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            replicas: 1,
            resources: None,
            autoscaling: None,
            service_type: ServiceType::ClusterIP,
            node_port: None,
            trusted_proxies: None,
        }
    }
}

fn one() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One gRPC service's Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Scale on CPU between bounds (then `replicas` is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Take the service down for maintenance: its Deployment is scaled to zero (its autoscaler and
    /// disruption budget are removed meanwhile) and its status says `Paused`. The rest of the stack
    /// runs on; calls to this service fail until it is unpaused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec { replicas: 1, resources: None, autoscaling: None, paused: false }
    }
}

impl ServiceSpec {
    /// The replicas it runs with when not autoscaled: none while paused.
    pub fn replicas(&self) -> i32 {
        if self.paused { 0 } else { self.replicas }
    }

    /// Its autoscaling, unless paused.
    pub fn autoscaling(&self) -> Option<&AutoscalingSpec> {
        if self.paused { None } else { self.autoscaling.as_ref() }
    }
}

/// A HorizontalPodAutoscaler on CPU.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}
]))]
pub struct AutoscalingSpec {
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    #[serde(rename = "targetCPUUtilizationPercentage", default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// The seven gRPC services, each optional in the manifest (defaults: one replica, no limits).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    #[serde(default)]
    pub auth: ServiceSpec,
    #[serde(default)]
    pub user: ServiceSpec,
    #[serde(default)]
    pub product: ServiceSpec,
    #[serde(default)]
    pub cart: ServiceSpec,
    #[serde(default)]
    pub order: ServiceSpec,
    #[serde(default)]
    pub payment: ServiceSpec,
    #[serde(default)]
    pub checkout: ServiceSpec,
}

/// A key in a Secret of the stack's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A service the operator does not run: where its URL is kept.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// Secret key holding the URL (database: `mysql://user:pass@host:3306/mall`, each service uses
    /// `mall_<service>` on that server; Redis: `redis://host:6379`).
    pub secret_ref: SecretKeyRef,
}

/// MySQL, exactly one of `managed` or `external`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.managed) != has(self.external)", "message": "set exactly one of managed or external"}
]))]
pub struct DatabaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedDatabase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
}

/// A single-replica MySQL StatefulSet run by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDatabase {
    #[serde(default = "default_mysql_image")]
    pub image: String,
    /// Size of the data volume, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub storage_size: String,
    /// Storage class of the data volume (unset: the cluster default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the data volume and the Secret with its passwords when the stack is deleted, so a stack
    /// created again with the same name finds both. `false`: they are deleted with the stack.
    #[serde(default = "yes")]
    pub retain_on_delete: bool,
}

fn yes() -> bool {
    true
}

fn default_mysql_image() -> String {
    "mysql:8.4".to_owned()
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

/// Redis, exactly one of `managed` or `external`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.managed) != has(self.external)", "message": "set exactly one of managed or external"}
]))]
pub struct RedisSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
}

/// A single-replica Redis (a cache: no volume) run by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ManagedRedis {
    #[serde(default = "default_redis_image")]
    pub image: String,
}

fn default_redis_image() -> String {
    "redis:7.4-alpine".to_owned()
}

/// The auth service's token signing keys, kept by the operator in the Secret `<stack>-auth-keys`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Rotate the signing key once this time has come (RFC 3339, e.g. `2025-12-05T10:00:00Z`): a new key
    /// is published to every verifier first, signs about 90 s later, and the old one is still accepted
    /// for a token lifetime after that. Set a later time to rotate again; a time already acted on
    /// (`status.auth.lastRotation`) does nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub rotate_signing_key_at: Option<String>,
}

/// Where traces go and how the stack is scraped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// The OpenTelemetry collector's OTLP/gRPC endpoint, e.g. `http://otel-collector.monitoring:4317`
    /// (`http://` or `https://`, a host, an optional port, no path). Set: every component's pods get
    /// the `OTEL_*` variables and export their traces there. Unset: they export nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 512),
        regex(
            pattern = r"^https?://([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?$"
        )
    )]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, 0.0 to 1.0 (default 0.1: one in ten); a request that
    /// arrives with a sampled trace is always recorded (`parentbased_traceidratio`).
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: f64,
    /// Make a Prometheus Operator `ServiceMonitor` (monitoring.coreos.com/v1) per component, scraping its
    /// `/metrics` every 15 s, when that CRD is installed (else the `ServiceMonitors` condition says so).
    /// With NetworkPolicies, the services then also take connections on their port from namespaces
    /// labelled `mall.example.com/metrics: "true"`.
    #[serde(default)]
    pub service_monitor: bool,
}

impl Default for ObservabilitySpec {
    fn default() -> Self {
        ObservabilitySpec {
            otlp_endpoint: None,
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            service_monitor: false,
        }
    }
}

/// The sampling ratio when `spec.observability.samplingRatio` is not given.
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.1;

fn default_sampling_ratio() -> f64 {
    DEFAULT_SAMPLING_RATIO
}

/// Whether `endpoint` is what the schema's pattern accepts: `http://` or `https://`, a DNS name (or an
/// IPv4 address) or a bracketed IPv6 address, an optional port of up to five digits, no path. The port
/// must also be 1-65535 (which the pattern does not say).
fn endpoint_problem(endpoint: &str) -> Option<&'static str> {
    if endpoint.len() > 512 {
        return Some("at most 512 characters");
    }
    let Some(rest) = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://")) else {
        return Some("an http:// or https:// URL, e.g. http://otel-collector.monitoring:4317");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Some("no path, user or query: OTLP over gRPC takes http(s)://host:port");
    }
    // The host, and what follows it: nothing or `:<port>`.
    let (host_ok, after) = match rest.strip_prefix('[') {
        Some(v6) => {
            let Some((host, after)) = v6.split_once(']') else {
                return Some("an IPv6 address needs its ']'");
            };
            (!host.is_empty() && host.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.'), after)
        }
        None => {
            let end = rest.find(':').unwrap_or(rest.len());
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            (rest[..end].split('.').all(label_ok), &rest[end..])
        }
    };
    let port = match after {
        "" => None,
        _ => match after.strip_prefix(':') {
            Some(port) => Some(port),
            None => return Some("a host name or address, then only an optional :port"),
        },
    };
    if !host_ok {
        return Some("a host name or address, e.g. http://otel-collector.monitoring:4317");
    }
    if let Some(port) = port {
        let digits_ok = (1..=5).contains(&port.len()) && port.chars().all(|c| c.is_ascii_digit());
        if !digits_ok || !(1..=65535).contains(&port.parse::<u32>().unwrap_or(0)) {
            return Some("the port must be a number within 1-65535");
        }
    }
    None
}

/// Scheduled backups of the managed MySQL.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to back up, a cron schedule of five fields (`minute hour day-of-month month day-of-week`),
    /// e.g. `30 5 * * *`, in the time zone of the cluster's controller manager (usually UTC).
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// Which complete backups are kept.
    #[serde(default)]
    pub retention: BackupRetention,
    /// Where backups are written.
    #[serde(default)]
    pub target: BackupTarget,
    /// The image the backup runs in; it needs `bash`, `mysqldump`, `mysql`, `gzip` and `sha256sum`.
    /// Unset: the managed database's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Which backups are kept: the newest `count`, and of those none older than `maxAgeDays`. The backup
/// just written is always kept.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    #[serde(default = "default_backup_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub max_age_days: Option<i32>,
}

impl Default for BackupRetention {
    fn default() -> Self {
        BackupRetention { count: default_backup_count(), max_age_days: None }
    }
}

fn default_backup_count() -> i32 {
    7
}

/// Where backups go: a volume claim (the default), or an S3-compatible bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.pvc) && has(self.s3))", "message": "set one of pvc or s3"}
]))]
pub struct BackupTarget {
    /// The claim `<stack>-backups` (ReadWriteOnce), made by the operator. Used when `s3` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<BackupPvc>,
    /// An S3-compatible bucket: each backup is dumped to the pod's scratch volume, then uploaded
    /// (`mall backup-push`), and the bucket is pruned to the retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<BackupS3>,
}

impl Default for BackupTarget {
    fn default() -> Self {
        BackupTarget { pvc: Some(BackupPvc::default()), s3: None }
    }
}

/// The backup volume claim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPvc {
    #[serde(default = "default_backup_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// Storage class (unset: the cluster default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for BackupPvc {
    fn default() -> Self {
        BackupPvc { size: default_backup_size(), storage_class_name: None }
    }
}

fn default_backup_size() -> String {
    "5Gi".to_owned()
}

/// An S3-compatible bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupS3 {
    /// A Secret in the stack's namespace with the keys `endpoint` (e.g. `https://s3.eu-west-1.amazonaws.com`
    /// or `http://minio.storage:9000`), `bucket`, `accessKeyId`, `secretAccessKey`, and optionally
    /// `region` (default `us-east-1`) and `prefix` (a folder in the bucket, e.g. `shop/`).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

impl BackupSpec {
    /// The claim to write to (the default one when no target is given).
    pub fn pvc(&self) -> BackupPvc {
        self.target.pvc.clone().unwrap_or_default()
    }
}

/// Whether `schedule` has five cron fields, each made of the characters cron takes (a `@daily`-style
/// macro or a `TZ=` prefix is not accepted: say the fields).
fn schedule_problem(schedule: &str) -> Option<&'static str> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Some("a cron schedule of five fields, e.g. `30 5 * * *`");
    }
    let ok =
        |f: &&str| f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/' | '?'));
    if !fields.iter().all(ok) {
        return Some("each cron field is made of digits, names, `*`, `,`, `-`, `/` or `?`");
    }
    None
}

/// Where a stack's databases come from when it is created.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.claimName) && has(self.s3))", "message": "set one of claimName or s3"}
]))]
pub struct RestoreSpec {
    /// The backup's name: its directory on the claim, as `status.backup.lastSuccess.name` of the stack
    /// that made it tells, e.g. `20261206T053000Z`.
    #[schemars(regex(pattern = r"^[0-9]{8}T[0-9]{6}Z$"))]
    pub from: String,
    /// The claim holding the backups (unset: `<stack>-backups`, the claim this stack's own backups go
    /// to, which outlives a deleted stack whose database has `retainOnDelete`; or, when
    /// `backup.target.s3` is set, that bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
    /// The bucket holding the backups (unset: `backup.target.s3`, if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<BackupS3>,
}

/// Whether `name` is a backup's name: `YYYYMMDDTHHMMSSZ`.
fn is_backup_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The seeded admin account.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    #[serde(default = "default_admin_email")]
    #[schemars(length(min = 3))]
    pub email: String,
    /// Where the admin password is kept; unset, the operator generates one into `<stack>-admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec { email: default_admin_email(), password_secret_ref: None }
    }
}

fn default_admin_email() -> String {
    "admin@mall.local".to_owned()
}

/// What the operator observed, written on the status subresource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MallStackStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, DatabaseReady, MigrationsComplete, Paused.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Ready and desired replicas per component (gateway, each service, mysql and redis when managed).
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,
    /// `ready/total` components, e.g. `10/10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,
    /// Where the shop answers HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// The first thing wrong (`Reason: components: cause`), or else what is awaited; unset when Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The auth service's signing keys (public facts only: key ids, states, times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthKeysStatus>,
    /// Backups (with `spec.backup`): the last that succeeded, the last that failed, the last request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The restore asked for by `spec.restore`: where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Where the restore of `spec.restore` stands.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup restored from.
    pub from: String,
    pub phase: RestorePhase,
    /// The restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When it succeeded or ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// What happened, or why the restore was refused.
    #[serde(default)]
    pub message: String,
}

/// `Pending`: waiting for the database; `Running`; `Succeeded`: migrations and services go on;
/// `Refused`: the backup or the database is not fit (the message says why) and nothing was written;
/// `Failed`: loading failed (the message says where). Neither of the last two is retried: change
/// `spec.restore` (another backup, or remove it to start without one).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    Pending,
    Running,
    Succeeded,
    Refused,
    Failed,
}

/// Where backups stand, from the backup Jobs the cluster still holds (the CronJob keeps the last three
/// of each outcome) and what was kept of earlier reconciles.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupSuccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
    /// The last `mall.example.com/backup-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// The Job made for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_job: Option<String>,
}

/// The newest backup Job that completed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSuccess {
    /// When it completed (RFC 3339).
    pub time: String,
    /// The backup's directory on the volume (e.g. `20261206T053000Z`), when its pod still tells it;
    /// else the Job's name.
    pub name: String,
    pub job: String,
}

/// The newest backup Job that failed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    /// When it failed (RFC 3339).
    pub time: String,
    pub job: String,
    /// The message of the Job's Failed condition.
    pub reason: String,
}

/// Where the signing keys stand.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthKeysStatus {
    /// The key id (`kid` in every token's header) of the key auth signs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_kid: Option<String>,
    /// Every key in the key file, in its order.
    #[serde(default)]
    pub keys: Vec<AuthKeyStatus>,
    /// The rotation last acted on (the `spec.auth.rotateSigningKeyAt` it was asked for; a key file
    /// created afresh counts as rotated when it was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// Why a requested rotation is not carried out, or what was repaired in the key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One signing key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthKeyStatus {
    pub kid: String,
    pub state: AuthKeyState,
    /// A published key: when it takes over signing (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signs_from: Option<String>,
    /// A retiring key: when it stops being accepted and leaves the key file (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<String>,
}

/// `signing`: tokens are signed with it; `published`: verifiers learn it before it signs; `retiring`:
/// no longer signs, still accepted until `retiresAt`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthKeyState {
    Signing,
    Published,
    Retiring,
}

impl MallStackStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One component: its replicas, and what is wrong with it or awaited, if anything.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ComponentStatus {
    pub ready: i32,
    pub desired: i32,
    /// Why it is not as it should be: a problem (`CrashLoop`, `MigrationFailed`, …) or `Waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The cause in one line, e.g. `exits at start (exit code 1): …` or `pod starting for 20s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The restart token (`mall.example.com/restart[-<component>]`) its pods run with: a restart asked
    /// for is acknowledged once this shows its token, that is once the rollout it started is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<String>,
}

/// A spec the API server would reject (mirrors the schema's CEL rules and ranges).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn spec_error(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), message: message.into() }
}

impl MallStackSpec {
    /// The OTLP endpoint the components export traces to, if any.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.observability.as_ref()?.otlp_endpoint.as_deref()
    }

    /// The share of new traces recorded (see [`ObservabilitySpec::sampling_ratio`]).
    pub fn sampling_ratio(&self) -> f64 {
        self.observability.as_ref().map_or(DEFAULT_SAMPLING_RATIO, |o| o.sampling_ratio)
    }

    /// Whether ServiceMonitors are asked for.
    pub fn service_monitor(&self) -> bool {
        self.observability.as_ref().is_some_and(|o| o.service_monitor)
    }

    /// Every rule of the schema that serde does not already enforce; the first violation.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.image.tag.is_empty() || self.image.tag == "latest" {
            return Err(spec_error("spec.image.tag", "pin a version: the tag must not be empty or 'latest'"));
        }
        if self.image.repository.is_empty() {
            return Err(spec_error("spec.image.repository", "must not be empty"));
        }
        check_scaling("spec.gateway", self.gateway.replicas, self.gateway.autoscaling.as_ref())?;
        if let Some(port) = self.gateway.node_port {
            if self.gateway.service_type != ServiceType::NodePort {
                return Err(spec_error(
                    "spec.gateway.nodePort",
                    "nodePort is only allowed with serviceType NodePort",
                ));
            }
            if !(30000..=32767).contains(&port) {
                return Err(spec_error("spec.gateway.nodePort", "must be within 30000-32767"));
            }
        }
        for (name, service) in self.services.iter() {
            check_scaling(&format!("spec.services.{name}"), service.replicas, service.autoscaling.as_ref())?;
        }
        if self.database.managed.is_some() == self.database.external.is_some() {
            return Err(spec_error("spec.database", "set exactly one of managed or external"));
        }
        if self.redis.managed.is_some() == self.redis.external.is_some() {
            return Err(spec_error("spec.redis", "set exactly one of managed or external"));
        }
        let ttl_ok = {
            let digits = self.token_ttl.trim_end_matches(['s', 'm', 'h', 'd']);
            !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && self.token_ttl.len() - digits.len() <= 1
        };
        if !ttl_ok {
            return Err(spec_error("spec.tokenTtl", "a duration like 30m, 24h or 7d"));
        }
        if let Some(backup) = &self.backup {
            if self.database.managed.is_none() {
                return Err(spec_error(
                    "spec.backup",
                    "backups are of the managed MySQL: set database.managed, or back the external database up where it runs",
                ));
            }
            if let Some(problem) = schedule_problem(&backup.schedule) {
                return Err(spec_error("spec.backup.schedule", problem));
            }
            if !(1..=1000).contains(&backup.retention.count) {
                return Err(spec_error("spec.backup.retention.count", "must be within 1-1000"));
            }
            if backup.retention.max_age_days.is_some_and(|d| !(1..=36500).contains(&d)) {
                return Err(spec_error("spec.backup.retention.maxAgeDays", "must be within 1-36500"));
            }
            if backup.target.s3.is_some() && backup.target.pvc.is_some() {
                return Err(spec_error("spec.backup.target", "set one of pvc or s3"));
            }
            if backup.target.s3.as_ref().is_some_and(|s3| s3.secret_name.is_empty()) {
                return Err(spec_error("spec.backup.target.s3.secretName", "must not be empty"));
            }
            if backup.image.as_deref().is_some_and(str::is_empty) {
                return Err(spec_error("spec.backup.image", "must not be empty"));
            }
        }
        if let Some(restore) = &self.restore {
            if self.database.managed.is_none() {
                return Err(spec_error(
                    "spec.restore",
                    "a restore goes into the managed MySQL: set database.managed, or restore the external database where it runs",
                ));
            }
            if !is_backup_name(&restore.from) {
                return Err(spec_error(
                    "spec.restore.from",
                    "a backup's name, YYYYMMDDTHHMMSSZ (status.backup.lastSuccess.name), e.g. 20261206T053000Z",
                ));
            }
            if restore.claim_name.as_deref().is_some_and(|c| c.is_empty() || c.len() > 253) {
                return Err(spec_error("spec.restore.claimName", "a claim's name, 1-253 characters"));
            }
            if restore.claim_name.is_some() && restore.s3.is_some() {
                return Err(spec_error("spec.restore", "set one of claimName or s3"));
            }
            if restore.s3.as_ref().is_some_and(|s3| s3.secret_name.is_empty()) {
                return Err(spec_error("spec.restore.s3.secretName", "must not be empty"));
            }
        }
        if let Some(observability) = &self.observability {
            if let Some(problem) = observability.otlp_endpoint.as_deref().and_then(endpoint_problem) {
                return Err(spec_error("spec.observability.otlpEndpoint", problem));
            }
            if !(0.0..=1.0).contains(&observability.sampling_ratio) {
                return Err(spec_error("spec.observability.samplingRatio", "must be within 0.0-1.0"));
            }
        }
        Ok(())
    }
}

fn check_scaling(field: &str, replicas: i32, autoscaling: Option<&AutoscalingSpec>) -> Result<(), SpecError> {
    if !(0..=100).contains(&replicas) {
        return Err(spec_error(format!("{field}.replicas"), "must be within 0-100"));
    }
    if let Some(a) = autoscaling {
        for (name, value) in [("minReplicas", a.min_replicas), ("maxReplicas", a.max_replicas)] {
            if !(1..=100).contains(&value) {
                return Err(spec_error(format!("{field}.autoscaling.{name}"), "must be within 1-100"));
            }
        }
        if !(1..=100).contains(&a.target_cpu_utilization_percentage) {
            return Err(spec_error(
                format!("{field}.autoscaling.targetCPUUtilizationPercentage"),
                "must be within 1-100",
            ));
        }
        if a.min_replicas > a.max_replicas {
            return Err(spec_error(
                format!("{field}.autoscaling"),
                "minReplicas must not exceed maxReplicas",
            ));
        }
    }
    Ok(())
}

/// The seven gRPC services, in a fixed order (it is the order of every list the operator builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Auth,
    User,
    Product,
    Cart,
    Order,
    Payment,
    Checkout,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Auth,
        Service::User,
        Service::Product,
        Service::Cart,
        Service::Order,
        Service::Payment,
        Service::Checkout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::User => "user",
            Service::Product => "product",
            Service::Cart => "cart",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Checkout => "checkout",
        }
    }

    /// `MALL_<SERVICE>` — the prefix of this service's configuration names.
    pub fn env_prefix(self) -> String {
        format!("MALL_{}", self.name().to_uppercase())
    }

    /// Who calls this service over gRPC (the NetworkPolicy's allowed peers).
    pub fn callers(self) -> &'static [&'static str] {
        match self {
            Service::Auth | Service::User | Service::Checkout => &["gateway"],
            Service::Product => &["gateway", "checkout", "order", "cart"],
            Service::Cart => &["gateway", "checkout"],
            Service::Order => &["gateway", "checkout", "payment"],
            Service::Payment => &["gateway", "checkout"],
        }
    }
}

impl ServicesSpec {
    pub fn get(&self, service: Service) -> &ServiceSpec {
        match service {
            Service::Auth => &self.auth,
            Service::User => &self.user,
            Service::Product => &self.product,
            Service::Cart => &self.cart,
            Service::Order => &self.order,
            Service::Payment => &self.payment,
            Service::Checkout => &self.checkout,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ServiceSpec)> {
        Service::ALL.into_iter().map(|s| (s.name(), self.get(s)))
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::fixtures::{full_stack, minimal_stack};

    #[test]
    fn serde_round_trip_keeps_every_field() {
        for stack in [minimal_stack(), full_stack()] {
            let json = serde_json::to_string(&stack).unwrap();
            let back: MallStack = serde_json::from_str(&json).unwrap();
            assert_eq!(back.spec, stack.spec);
            let yaml = serde_saphyr::to_string(&stack.spec).unwrap();
            let back: MallStackSpec = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(back, stack.spec);
        }
    }

    #[test]
    fn defaults_fill_a_sparse_manifest() {
        let spec: MallStackSpec = serde_json::from_value(serde_json::json!({
            "image": {"tag": "0.1.0"},
            "database": {"managed": {}},
            "redis": {"managed": {}},
        }))
        .unwrap();
        assert_eq!(spec.image.repository, "ghcr.io/example/mall");
        assert_eq!(spec.image.pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(spec.gateway.replicas, 1);
        assert_eq!(spec.gateway.service_type, ServiceType::ClusterIP);
        assert_eq!(spec.services.checkout.replicas, 1);
        assert_eq!(spec.token_ttl, "24h");
        assert_eq!(spec.admin.email, "admin@mall.local");
        assert_eq!(spec.database.managed.as_ref().unwrap().storage_size, "10Gi");
        assert!(!spec.paused);
        assert!(spec.network_policies, "NetworkPolicies are on unless turned off");
        let off: MallStackSpec = serde_json::from_value(serde_json::json!({
            "image": {"tag": "0.1.0"},
            "database": {"managed": {}},
            "redis": {"managed": {}},
            "networkPolicies": false,
        }))
        .unwrap();
        assert!(!off.network_policies);
        spec.validate().unwrap();
    }

    #[test]
    fn unknown_enum_values_are_rejected_by_serde() {
        let bad = serde_json::json!({
            "image": {"tag": "0.1.0", "pullPolicy": "Sometimes"},
            "database": {"managed": {}},
            "redis": {"managed": {}},
        });
        assert!(serde_json::from_value::<MallStackSpec>(bad).is_err());
    }

    fn schema() -> serde_json::Value {
        let crd = MallStack::crd();
        serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap()
    }

    #[test]
    fn schema_carries_ranges_enums_and_cel_rules() {
        let schema = schema();
        let spec = &schema["properties"]["spec"]["properties"];
        let gateway = &spec["gateway"];
        let range = |v: &serde_json::Value| (v["minimum"].as_f64().unwrap(), v["maximum"].as_f64().unwrap());
        assert_eq!(range(&gateway["properties"]["replicas"]), (0.0, 100.0));
        assert_eq!(range(&gateway["properties"]["nodePort"]), (30000.0, 32767.0));
        assert_eq!(range(&spec["services"]["properties"]["cart"]["properties"]["replicas"]), (0.0, 100.0));
        assert_eq!(
            gateway["properties"]["serviceType"]["enum"],
            serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        assert_eq!(
            spec["image"]["properties"]["pullPolicy"]["enum"],
            serde_json::json!(["Always", "IfNotPresent", "Never"])
        );
        let autoscaling = &spec["services"]["properties"]["order"]["properties"]["autoscaling"];
        assert_eq!(range(&autoscaling["properties"]["targetCPUUtilizationPercentage"]), (1.0, 100.0));
        assert_eq!(range(&autoscaling["properties"]["minReplicas"]), (1.0, 100.0));
        let rules = |v: &serde_json::Value| -> Vec<String> {
            v["x-kubernetes-validations"]
                .as_array()
                .map(|a| a.iter().map(|r| r["rule"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        assert_eq!(rules(autoscaling), ["self.minReplicas <= self.maxReplicas"]);
        assert_eq!(rules(&spec["database"]), ["has(self.managed) != has(self.external)"]);
        assert_eq!(rules(&spec["redis"]), ["has(self.managed) != has(self.external)"]);
        assert!(rules(gateway).iter().any(|r| r.contains("self.serviceType == 'NodePort'")));
        assert!(rules(&spec["image"]).iter().any(|r| r.contains("'latest'")));
    }

    #[test]
    fn cel_rules_accept_good_specs_and_reject_bad_ones() {
        use kube::core::cel::validate_cel;
        assert!(validate_cel(&minimal_stack()).is_ok());
        assert!(validate_cel(&full_stack()).is_ok());

        let mut both = minimal_stack();
        both.spec.database.external =
            Some(ExternalSpec { secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() } });
        assert!(validate_cel(&both).is_err());

        let mut neither = minimal_stack();
        neither.spec.redis.managed = None;
        assert!(validate_cel(&neither).is_err());

        let mut inverted = minimal_stack();
        inverted.spec.services.cart.autoscaling =
            Some(AutoscalingSpec { min_replicas: 5, max_replicas: 2, target_cpu_utilization_percentage: 70 });
        assert!(validate_cel(&inverted).is_err());

        let mut stray_port = minimal_stack();
        stray_port.spec.gateway.node_port = Some(30080);
        assert!(validate_cel(&stray_port).is_err());
        stray_port.spec.gateway.service_type = ServiceType::NodePort;
        assert!(validate_cel(&stray_port).is_ok());

        let mut latest = minimal_stack();
        latest.spec.image.tag = "latest".into();
        assert!(validate_cel(&latest).is_err());
    }

    #[test]
    fn autoscaling_targets_70_percent_cpu_unless_told() {
        let a: AutoscalingSpec = serde_json::from_value(serde_json::json!({"maxReplicas": 4})).unwrap();
        assert_eq!((a.min_replicas, a.max_replicas, a.target_cpu_utilization_percentage), (1, 4, 70));
    }

    #[test]
    fn validate_mirrors_the_schema() {
        minimal_stack().spec.validate().unwrap();
        full_stack().spec.validate().unwrap();
        let check = |edit: &dyn Fn(&mut MallStackSpec), field: &str| {
            let mut spec = minimal_stack().spec;
            edit(&mut spec);
            let err = spec.validate().unwrap_err();
            assert!(err.field.starts_with(field), "{err} should name {field}");
        };
        check(
            &|s| {
                s.services.order.autoscaling = Some(AutoscalingSpec {
                    min_replicas: 4,
                    max_replicas: 3,
                    target_cpu_utilization_percentage: 80,
                })
            },
            "spec.services.order.autoscaling",
        );
        check(
            &|s| {
                s.database.external =
                    Some(ExternalSpec { secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() } })
            },
            "spec.database",
        );
        check(&|s| s.redis.managed = None, "spec.redis");
        check(
            &|s| {
                s.gateway.service_type = ServiceType::NodePort;
                s.gateway.node_port = Some(29999);
            },
            "spec.gateway.nodePort",
        );
        check(
            &|s| {
                s.gateway.service_type = ServiceType::NodePort;
                s.gateway.node_port = Some(32768);
            },
            "spec.gateway.nodePort",
        );
        check(&|s| s.gateway.node_port = Some(30080), "spec.gateway.nodePort");
        check(&|s| s.services.auth.replicas = 101, "spec.services.auth.replicas");
        check(&|s| s.gateway.replicas = -1, "spec.gateway.replicas");
        check(
            &|s| {
                s.gateway.autoscaling = Some(AutoscalingSpec {
                    min_replicas: 1,
                    max_replicas: 3,
                    target_cpu_utilization_percentage: 0,
                })
            },
            "spec.gateway.autoscaling.targetCPUUtilizationPercentage",
        );
        check(&|s| s.image.tag = "latest".into(), "spec.image.tag");
        check(&|s| s.token_ttl = "1 day".into(), "spec.tokenTtl");
        let observability = |endpoint: &str, ratio: f64| {
            Some(ObservabilitySpec {
                otlp_endpoint: Some(endpoint.to_owned()),
                sampling_ratio: ratio,
                service_monitor: false,
            })
        };
        for endpoint in ["otel-collector:4317", "ftp://collector", "http://collector:4317/v1/traces", ""] {
            check(&|s| s.observability = observability(endpoint, 0.1), "spec.observability.otlpEndpoint");
        }
        for ratio in [-0.1, 1.5, f64::NAN] {
            check(
                &|s| s.observability = observability("http://collector:4317", ratio),
                "spec.observability.samplingRatio",
            );
        }
        let mut edges = minimal_stack().spec;
        for ratio in [0.0, 1.0] {
            edges.observability = observability("http://collector:4317", ratio);
            edges.validate().unwrap();
        }
    }

    #[test]
    fn observability_is_optional_and_defaults_to_a_tenth_of_the_traces() {
        let base = serde_json::json!({
            "image": {"tag": "0.1.0"},
            "database": {"managed": {}},
            "redis": {"managed": {}},
        });
        let spec: MallStackSpec = serde_json::from_value(base.clone()).unwrap();
        assert_eq!(spec.observability, None);
        assert_eq!((spec.otlp_endpoint(), spec.service_monitor()), (None, false));
        assert!(
            serde_json::to_value(&spec).unwrap().get("observability").is_none(),
            "not written when unset"
        );

        let mut given = base.clone();
        given["observability"] = serde_json::json!({});
        let spec: MallStackSpec = serde_json::from_value(given).unwrap();
        assert_eq!(spec.observability, Some(ObservabilitySpec::default()));
        assert_eq!(spec.sampling_ratio(), 0.1);
        assert_eq!((spec.otlp_endpoint(), spec.service_monitor()), (None, false));
        spec.validate().unwrap();

        let mut given = base;
        given["observability"] = serde_json::json!({
            "otlpEndpoint": "http://otel-collector.monitoring:4317",
            "samplingRatio": 1,
            "serviceMonitor": true,
        });
        let spec: MallStackSpec = serde_json::from_value(given).unwrap();
        assert_eq!(spec.otlp_endpoint(), Some("http://otel-collector.monitoring:4317"));
        assert_eq!(spec.sampling_ratio(), 1.0);
        assert!(spec.service_monitor());
        spec.validate().unwrap();
    }

    #[test]
    fn the_schema_bounds_the_ratio_and_checks_the_endpoint() {
        let schema = schema();
        let observability = &schema["properties"]["spec"]["properties"]["observability"]["properties"];
        let ratio = &observability["samplingRatio"];
        assert_eq!((ratio["minimum"].as_f64(), ratio["maximum"].as_f64()), (Some(0.0), Some(1.0)));
        assert_eq!(ratio["default"].as_f64(), Some(0.1));
        assert_eq!(ratio["type"], "number");
        let endpoint = &observability["otlpEndpoint"];
        assert_eq!(endpoint["type"], "string");
        assert_eq!(endpoint["maxLength"], 512);
        assert!(endpoint["pattern"].as_str().unwrap().starts_with("^https?://"), "{endpoint}");
        assert_eq!(observability["serviceMonitor"]["default"], false);
    }

    #[test]
    fn endpoints_are_http_urls_of_a_host_and_an_optional_port() {
        for good in [
            "http://otel-collector.monitoring:4317",
            "http://otel-collector.monitoring.svc.cluster.local:4317/",
            "https://collector.example.com",
            "http://10.0.0.7:4317",
            "http://[fd00::7]:4317",
            "http://localhost:65535",
        ] {
            assert_eq!(endpoint_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "otel-collector:4317",
            "grpc://otel-collector:4317",
            "ftp://otel-collector",
            "http://",
            "http://:4317",
            "http://otel collector:4317",
            "http://-collector:4317",
            "http://collector..monitoring:4317",
            "http://collector:port",
            "http://collector:0",
            "http://collector:65536",
            "http://collector:123456",
            "http://collector:4317/v1/traces",
            "http://user:secret@collector:4317",
            "http://collector:4317?x=1",
            "http://[fd00::7",
            "http://[fd00::7]4317",
            "http://[]:4317",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad:?} should be refused");
        }
        assert!(endpoint_problem(&format!("http://{}.example:4317", "a".repeat(600))).is_some());
    }

    #[test]
    fn printer_columns_show_ready_reason_components_tag_age_the_problem_and_the_last_backup() {
        let crd = MallStack::crd();
        let columns: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
                ("Reason", ".status.conditions[?(@.type==\"Ready\")].reason"),
                ("Components", ".status.readyComponents"),
                ("Image", ".spec.image.tag"),
                ("Age", ".metadata.creationTimestamp"),
                ("Problem", ".status.problem"),
                ("Last backup", ".status.backup.lastSuccess.time"),
            ]
        );
        let columns = crd.spec.versions[0].additional_printer_columns.as_ref().unwrap();
        // The problem is long, backups are not for every stack: `-o wide` only.
        assert_eq!(
            columns.iter().map(|c| c.priority.unwrap_or(0)).collect::<Vec<_>>(),
            [0, 0, 0, 0, 0, 1, 1]
        );
        assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
        assert_eq!(crd.spec.scope, "Namespaced");
    }
}
