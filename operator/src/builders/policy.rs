//! Availability and isolation: PodDisruptionBudgets, HorizontalPodAutoscalers and NetworkPolicies.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::observability::metrics_scrapers;
use super::workloads::{GATEWAY_PORT, GRPC_PORT, MYSQL_PORT, REDIS_PORT};
use super::{child_name, label_selector, metadata};
use crate::crd::{AutoscalingSpec, MallStack, Service};

/// The mall's own components with their scaling: the gateway, then the services.
fn scaled(stack: &MallStack) -> Vec<(&'static str, i32, Option<&AutoscalingSpec>)> {
    let mut all = vec![("gateway", stack.spec.gateway.replicas, stack.spec.gateway.autoscaling.as_ref())];
    all.extend(stack.spec.services.iter().map(|(name, s)| (name, s.replicas(), s.autoscaling())));
    all
}

/// One budget (at most one pod down at a time) per component that runs more than one pod.
pub(crate) fn pod_disruption_budgets(stack: &MallStack) -> Vec<PodDisruptionBudget> {
    scaled(stack)
        .into_iter()
        .filter(|(_, replicas, autoscaling)| *replicas > 1 || autoscaling.is_some())
        .map(|(component, _, _)| PodDisruptionBudget {
            metadata: metadata(stack, child_name(stack, component), component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(label_selector(stack, component)),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        })
        .collect()
}

pub(crate) fn autoscalers(stack: &MallStack) -> Vec<HorizontalPodAutoscaler> {
    scaled(stack)
        .into_iter()
        .filter_map(|(component, _, autoscaling)| autoscaling.map(|a| (component, a)))
        .map(|(component, a)| HorizontalPodAutoscaler {
            metadata: metadata(stack, child_name(stack, component), component),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: child_name(stack, component),
                },
                min_replicas: Some(a.min_replicas),
                max_replicas: a.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(a.target_cpu_utilization_percentage),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                behavior: None,
            }),
            status: None,
        })
        .collect()
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".into()), end_port: None }
}

/// The components that talk to MySQL: the services, their migration Jobs, the backup Jobs and the
/// restore Job (the gateway has no database).
const MYSQL_CLIENTS: [&str; 10] =
    ["auth", "user", "product", "cart", "order", "payment", "checkout", "migrate", "backup", "restore"];
/// The components that talk to Redis: the gateway and the services (migrations do not).
const REDIS_CLIENTS: [&str; 8] =
    ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"];

/// Pods of this stack whose component is one of `components`.
fn stack_pods(stack: &MallStack, components: &[&str]) -> NetworkPolicyPeer {
    let selector = LabelSelector {
        match_labels: Some(
            [
                ("app.kubernetes.io/instance".to_owned(), stack.name_any()),
                ("app.kubernetes.io/part-of".to_owned(), "mall".to_owned()),
            ]
            .into(),
        ),
        match_expressions: None,
    };
    let mut selector = selector;
    selector.match_expressions = Some(vec![LabelSelectorRequirement {
        key: "app.kubernetes.io/component".into(),
        operator: "In".into(),
        values: Some(components.iter().map(|c| (*c).to_owned()).collect()),
    }]);
    NetworkPolicyPeer { pod_selector: Some(selector), ..NetworkPolicyPeer::default() }
}

fn policy(
    stack: &MallStack,
    component: &str,
    from: Option<Vec<NetworkPolicyPeer>>,
    port: i32,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(stack, child_name(stack, component), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(stack, component)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule { from, ports: Some(vec![tcp(port)]) }]),
            egress: None,
        }),
    }
}

/// Only the gateway is reachable from anywhere; each service only from its callers
/// ([`Service::callers`]); MySQL and Redis only from this stack's pods that use them (MySQL: the
/// services, the migration Jobs and the backup Jobs; Redis: the gateway and the services). With
/// ServiceMonitors on, a service also takes connections on its port (where it serves `/metrics`) from
/// the namespaces with the metrics label (the gateway takes them from anywhere already). Ingress only: egress stays open
/// (DNS, the API server, an external database, an OpenTelemetry collector).
pub(crate) fn network_policies(stack: &MallStack) -> Vec<NetworkPolicy> {
    let mut policies = vec![policy(stack, "gateway", None, GATEWAY_PORT)];
    for service in Service::ALL {
        let mut from = vec![stack_pods(stack, service.callers())];
        if stack.spec.service_monitor() {
            from.push(metrics_scrapers());
        }
        policies.push(policy(stack, service.name(), Some(from), GRPC_PORT));
    }
    if stack.spec.database.managed.is_some() {
        policies.push(policy(stack, "mysql", Some(vec![stack_pods(stack, &MYSQL_CLIENTS)]), MYSQL_PORT));
    }
    if stack.spec.redis.managed.is_some() {
        policies.push(policy(stack, "redis", Some(vec![stack_pods(stack, &REDIS_CLIENTS)]), REDIS_PORT));
    }
    policies
}
