//! Observability: the OpenTelemetry settings of every component's pods, and a Prometheus Operator
//! `ServiceMonitor` per component.
//!
//! With `spec.observability.otlpEndpoint` set, the gateway's and each service's pods get the standard
//! OpenTelemetry SDK variables (the migration Jobs get none):
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: the endpoint as given;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc`;
//! - `OTEL_SERVICE_NAME`: `mall-<component>` (`mall-gateway`, `mall-product`, …);
//! - `OTEL_TRACES_SAMPLER`: `parentbased_traceidratio`;
//! - `OTEL_TRACES_SAMPLER_ARG`: the sampling ratio.
//!
//! They are in the pod template (and in its configuration hash), so changing them rolls the pods.
//! Without an endpoint none is set and the components export nothing.
//!
//! `ServiceMonitor` is a custom resource of the Prometheus Operator, which may not be installed: the
//! objects are built here as [`DynamicObject`]s and the reconciler applies them only when the API
//! server serves the kind.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta};

use super::workloads::{GATEWAY_PORT_NAME, GRPC_PORT_NAME, value};
use super::{child_name, metadata, namespace, selector_labels};
use crate::crd::{GROUP, MallStack, Service};

pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const OTEL_SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
pub const OTEL_SAMPLER_ENV: &str = "OTEL_TRACES_SAMPLER";
pub const OTEL_SAMPLER_ARG_ENV: &str = "OTEL_TRACES_SAMPLER_ARG";
/// Every variable [`otel_env`] may set.
pub const OTEL_ENV: [&str; 5] =
    [OTEL_ENDPOINT_ENV, OTEL_PROTOCOL_ENV, OTEL_SERVICE_NAME_ENV, OTEL_SAMPLER_ENV, OTEL_SAMPLER_ARG_ENV];

/// The Prometheus Operator's API group and the kind made per component.
pub const SERVICE_MONITOR_GROUP: &str = "monitoring.coreos.com";
pub const SERVICE_MONITOR_VERSION: &str = "v1";
pub const SERVICE_MONITOR_KIND: &str = "ServiceMonitor";
pub const SERVICE_MONITOR_PLURAL: &str = "servicemonitors";
/// How often Prometheus scrapes each component.
pub const SCRAPE_INTERVAL: &str = "15s";
pub const METRICS_PATH: &str = "/metrics";

/// The label (and value) of the namespaces whose pods may scrape the services when ServiceMonitors are
/// on: the one the operator chart uses for the operator's own metrics.
pub fn metrics_namespace_label() -> (String, String) {
    (format!("{GROUP}/metrics"), "true".to_owned())
}

/// `ServiceMonitor` (monitoring.coreos.com/v1) for the dynamic API.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SERVICE_MONITOR_GROUP, SERVICE_MONITOR_VERSION, SERVICE_MONITOR_KIND),
        SERVICE_MONITOR_PLURAL,
    )
}

/// `mall-<component>`: the service name its traces carry.
pub fn otel_service_name(component: &str) -> String {
    format!("mall-{component}")
}

/// The OpenTelemetry variables of `component`'s pods: none without an endpoint.
pub fn otel_env(stack: &MallStack, component: &str) -> Vec<EnvVar> {
    let Some(endpoint) = stack.spec.otlp_endpoint() else { return Vec::new() };
    vec![
        value(OTEL_ENDPOINT_ENV, endpoint),
        value(OTEL_PROTOCOL_ENV, "grpc"),
        value(OTEL_SERVICE_NAME_ENV, otel_service_name(component)),
        value(OTEL_SAMPLER_ENV, "parentbased_traceidratio"),
        value(OTEL_SAMPLER_ARG_ENV, stack.spec.sampling_ratio().to_string()),
    ]
}

/// Gives the pods of `component` their OpenTelemetry settings (before the configuration is hashed).
pub(crate) fn wire(stack: &MallStack, deployment: &mut Deployment, component: &str) {
    let env = otel_env(stack, component);
    if env.is_empty() {
        return;
    }
    if let Some(container) =
        deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()).and_then(|p| p.containers.first_mut())
    {
        container.env.get_or_insert_with(Vec::new).extend(env);
    }
}

/// The components scraped, each with the name of the Service port that serves `/metrics`: the gateway
/// on its HTTP port, each service on its gRPC port (which answers HTTP/1.1 `GET /metrics` as well).
pub fn metrics_ports() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("gateway", GATEWAY_PORT_NAME)];
    all.extend(Service::ALL.into_iter().map(|s| (s.name(), GRPC_PORT_NAME)));
    all
}

/// One `ServiceMonitor` per component when `spec.observability.serviceMonitor` is on: named like the
/// component's Service, owned by the stack, selecting that Service by its labels in the stack's
/// namespace, scraping `/metrics` on its metrics port every 15 s.
pub(crate) fn service_monitors(stack: &MallStack) -> Vec<DynamicObject> {
    if !stack.spec.service_monitor() {
        return Vec::new();
    }
    let resource = service_monitor_resource();
    metrics_ports()
        .into_iter()
        .map(|(component, port)| {
            let selector = LabelSelector {
                match_labels: Some(selector_labels(stack, component)),
                ..LabelSelector::default()
            };
            DynamicObject {
                types: Some(TypeMeta {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                }),
                metadata: metadata(stack, child_name(stack, component), component),
                data: serde_json::json!({
                    "spec": {
                        "selector": selector,
                        "namespaceSelector": {"matchNames": [namespace(stack)]},
                        "endpoints": [{
                            "port": port,
                            "path": METRICS_PATH,
                            "scheme": "http",
                            "interval": SCRAPE_INTERVAL,
                        }],
                    }
                }),
            }
        })
        .collect()
}

/// The pods that may scrape: any in a namespace with the metrics label.
pub(crate) fn metrics_scrapers() -> NetworkPolicyPeer {
    let (key, value) = metrics_namespace_label();
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([(key, value)].into()),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}
