//! The Helm charts, rendered by `ci/chart-checks.sh` (`MALL_RENDERED_CHARTS`) or here when a helm is at
//! hand: every object parses into its type with no unknown field, and the operator's Deployment, RBAC,
//! Service, test hook and CRD, and the shop's MallStack, Grafana dashboard and PrometheusRule, say what
//! they must.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResourceExt, ResourceExt};
use mall_e2e::charts::{RENDERED, Rendered, rendered};
use mall_e2e::manifests::{Object, PrometheusRule, parse_all};
use mall_e2e::{in_ci, repo_root, skip};
use mall_operator::MallStack;
use serde_json::{Value, json};

#[test]
fn the_charts_crd_is_the_operators() {
    let path = repo_root().join("charts/mall-operator/crds/mallstack.yaml");
    let chart = std::fs::read_to_string(&path).expect("the chart carries the CRD");
    assert!(
        chart == mall_operator::crd_yaml(),
        "charts/mall-operator/crds/mallstack.yaml is stale: cp crds/mallstack.yaml charts/mall-operator/crds/"
    );
}

fn charts() -> Option<Rendered> {
    match rendered().expect("rendering the charts") {
        Ok(r) => Some(r),
        Err(why) if in_ci() => panic!("CI=true and the charts cannot be checked: {why}"),
        Err(why) => {
            skip("chart tests", &why);
            None
        }
    }
}

fn objects(rendered: &Rendered, stem: &str) -> Vec<Object> {
    let text = rendered.read(stem).unwrap();
    parse_all(&text).unwrap_or_else(|e| panic!("{stem}: {e:#}"))
}

#[test]
fn every_rendered_object_parses_into_its_type() {
    let Some(rendered) = charts() else { return };
    for stem in RENDERED {
        let objects = objects(&rendered, stem);
        assert!(!objects.is_empty(), "{stem} renders nothing");
        let names: Vec<String> = objects.iter().map(Object::describe).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{stem}: an object rendered twice: {names:?}");
    }
}

/// The pieces of the operator chart, by kind.
#[derive(Default)]
struct OperatorChart {
    deployment: Option<Deployment>,
    service: Option<Service>,
    network_policy: Option<NetworkPolicy>,
    test_pod: Option<Pod>,
    service_account: Option<String>,
    /// (kind, namespace, rules) of Roles and ClusterRoles.
    roles: Vec<(String, Option<String>, Vec<PolicyRule>)>,
    /// (kind, role kind, role name, subject) of the bindings.
    bindings: Vec<(String, String, String, String)>,
    crd: Option<serde_json::Value>,
}

fn operator_chart(rendered: &Rendered, stem: &str) -> OperatorChart {
    let mut chart = OperatorChart::default();
    for object in objects(rendered, stem) {
        match object {
            Object::Deployment(d) => assert!(chart.deployment.replace(*d).is_none()),
            Object::Service(s) => assert!(chart.service.replace(*s).is_none()),
            Object::NetworkPolicy(p) => assert!(chart.network_policy.replace(*p).is_none()),
            Object::Pod(p) => assert!(chart.test_pod.replace(*p).is_none()),
            Object::ServiceAccount(sa) => chart.service_account = Some(sa.name_any()),
            Object::Role(r) => {
                chart.roles.push(("Role".into(), r.namespace(), r.rules.clone().unwrap_or_default()))
            }
            Object::ClusterRole(r) => {
                chart.roles.push(("ClusterRole".into(), None, r.rules.clone().unwrap_or_default()))
            }
            Object::RoleBinding(b) => chart.bindings.push((
                "RoleBinding".into(),
                b.role_ref.kind.clone(),
                b.role_ref.name.clone(),
                b.subjects.as_ref().and_then(|s| s.first()).map(|s| s.name.clone()).unwrap_or_default(),
            )),
            Object::ClusterRoleBinding(b) => chart.bindings.push((
                "ClusterRoleBinding".into(),
                b.role_ref.kind.clone(),
                b.role_ref.name.clone(),
                b.subjects.as_ref().and_then(|s| s.first()).map(|s| s.name.clone()).unwrap_or_default(),
            )),
            Object::CustomResourceDefinition(c) => chart.crd = Some(serde_json::to_value(&*c).unwrap()),
            other => panic!("{stem}: unexpected {}", other.describe()),
        }
    }
    chart
}

/// Verbs granted on `group/resource` by `rules` (resource-name-restricted rules included).
fn verbs(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|r| r.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g == group)))
        .filter(|r| r.resources.as_ref().is_some_and(|res| res.iter().any(|x| x == resource)))
        .flat_map(|r| r.verbs.iter().cloned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// What the operator does to each resource, exactly (see operator/src/controller.rs, leader.rs and
/// diagnosis/gather.rs).
fn needed() -> Vec<(&'static str, &'static str, BTreeSet<String>)> {
    let children = set(&["list", "watch", "create", "patch"]);
    // What a stack can stop wanting is pruned.
    let pruned = set(&["list", "watch", "create", "patch", "delete"]);
    vec![
        ("mall.example.com", "mallstacks", set(&["get", "list", "watch"])),
        ("mall.example.com", "mallstacks/status", set(&["patch"])),
        ("mall.example.com", "mallstacks/finalizers", set(&["update"])),
        ("apps", "deployments", children.clone()),
        ("apps", "statefulsets", children.clone()),
        ("", "services", children.clone()),
        ("", "configmaps", children.clone()),
        ("", "secrets", children.clone()),
        ("batch", "jobs", pruned.clone()),
        // Backups (`spec.backup`): the CronJob, deleted when backups are turned off.
        ("batch", "cronjobs", set(&["get", "list", "watch", "create", "patch", "update", "delete"])),
        ("batch", "cronjobs/finalizers", set(&["update"])),
        ("policy", "poddisruptionbudgets", pruned.clone()),
        ("autoscaling", "horizontalpodautoscalers", pruned.clone()),
        ("networking.k8s.io", "networkpolicies", pruned),
        // Listed each reconcile (not watched: the CRD may be missing), applied, pruned.
        ("monitoring.coreos.com", "servicemonitors", set(&["list", "create", "patch", "delete"])),
        // Read to explain a stack that is not Ready (operator/src/diagnosis/gather.rs).
        ("", "pods", set(&["list"])),
        ("", "pods/log", set(&["get"])),
        // Listed to explain a stack; the backup claim is applied.
        ("", "persistentvolumeclaims", set(&["list", "create", "patch"])),
        ("events.k8s.io", "events", set(&["create", "patch"])),
        ("", "events", set(&["create", "patch", "list"])),
    ]
}

/// The `OTEL_*` variables of the operator's container, by name.
fn otel_env(chart: &OperatorChart) -> BTreeMap<String, String> {
    let container = operator_container(chart.deployment.as_ref().unwrap());
    container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("OTEL_"))
        .map(|e| (e.name.clone(), e.value.clone().expect("a plain value")))
        .collect()
}

fn operator_container(deployment: &Deployment) -> &Container {
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

/// The operator's NetworkPolicy: on its pods, ingress on the http port only, from the namespaces with
/// the metrics label `(key, value)` and from the chart's test Pod.
fn check_operator_network_policy(chart: &OperatorChart, metrics_label: (&str, &str)) {
    let policy = chart.network_policy.as_ref().expect("a NetworkPolicy");
    let spec = policy.spec.as_ref().unwrap();
    let deployment = chart.deployment.as_ref().unwrap();
    let pod_labels =
        deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    let selected = spec.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert!(!selected.is_empty() && selected.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    let rules = spec.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let ports = rules[0].ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::String("http".into())));
    let from = rules[0].from.as_ref().unwrap();
    assert_eq!(from.len(), 2, "the metrics namespaces and the test Pod, nothing else");
    let namespaces = from[0].namespace_selector.as_ref().expect("a namespace selector");
    assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
    assert_eq!(
        namespaces.match_labels.clone().unwrap(),
        BTreeMap::from([(metrics_label.0.to_owned(), metrics_label.1.to_owned())])
    );
    let test = chart.test_pod.as_ref().unwrap();
    let test_pods = from[1].pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert!(from[1].namespace_selector.is_none(), "the test Pod of this namespace only");
    assert!(test_pods.iter().all(|(k, v)| test.labels().get(k) == Some(v)), "it admits the test Pod");
    assert!(!test_pods.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "not by the operator's labels");
}

fn check_operator_chart(chart: &OperatorChart, cluster_wide: bool, image: &str, test_image: &str) {
    // The Deployment: the operator program of the one image, probes, downward API, locked down.
    let deployment = chart.deployment.as_ref().expect("a Deployment");
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = operator_container(deployment);
    assert_eq!(container.image.as_deref(), Some(image));
    assert_eq!(container.command.as_deref(), Some(&["mall-operator".to_owned()][..]));
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> =
        container.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e)).collect();
    let field = |name: &str| {
        env[name].value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(field("POD_NAMESPACE").as_deref(), Some("metadata.namespace"));
    assert_eq!(env["MALL_OPERATOR_LISTEN"].value.as_deref(), Some("0.0.0.0:8080"));
    assert!(matches!(env["MALL_LOG_FORMAT"].value.as_deref(), Some("json" | "text")));
    assert!(env["MALL_OPERATOR_LEASE"].value.as_ref().is_some_and(|l| !l.is_empty()));
    assert_eq!(env.contains_key("MALL_OPERATOR_WATCH_NAMESPACE"), !cluster_wide);
    let port = &container.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("http"), 8080));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert!(container.resources.as_ref().is_some_and(|r| r.requests.is_some() && r.limits.is_some()));
    assert_eq!(pod.service_account_name, chart.service_account);

    // The metrics Service selects the operator's pods, on the http port.
    let service = chart.service.as_ref().expect("a metrics Service");
    let spec = service.spec.as_ref().unwrap();
    let selector = spec.selector.as_ref().unwrap();
    let pod_labels =
        deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(
        spec.ports.as_ref().unwrap()[0].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );

    // The helm test hook fetches /readyz through that Service, and is not selected by it.
    let test = chart.test_pod.as_ref().expect("a helm test Pod");
    assert_eq!(test.annotations().get("helm.sh/hook").map(String::as_str), Some("test"));
    let test_container = &test.spec.as_ref().unwrap().containers[0];
    assert_eq!(test_container.image.as_deref(), Some(test_image));
    let url = test_container.env.as_ref().unwrap().iter().find(|e| e.name == "URL").unwrap();
    let url = url.value.as_deref().unwrap();
    assert!(url.starts_with(&format!("http://{}.", service.name_any())) && url.ends_with("/readyz"), "{url}");
    assert!(
        !selector.iter().all(|(k, v)| test.labels().get(k) == Some(v)),
        "the Service would select the test Pod"
    );

    // RBAC: exactly what the operator uses, nothing wild; only pruned kinds may be deleted.
    let (main_kind, _, rules) = chart
        .roles
        .iter()
        .find(|(_, _, rules)| !verbs(rules, "apps", "deployments").is_empty())
        .expect("a role for the children");
    assert_eq!(main_kind, if cluster_wide { "ClusterRole" } else { "Role" });
    for (group, resource, want) in needed() {
        assert_eq!(verbs(rules, group, resource), want, "verbs on {group}/{resource}");
    }
    for (_, _, rules) in &chart.roles {
        for rule in rules {
            let all = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            assert!(all.clone().all(|x| x != "*"), "a wildcard in {rule:?}");
            assert!(
                !rule.verbs.iter().any(|v| v == "deletecollection" || v == "escalate" || v == "bind"),
                "{rule:?}"
            );
        }
    }
    let (_, namespace, lease_rules) = chart
        .roles
        .iter()
        .find(|(_, _, rules)| !verbs(rules, "coordination.k8s.io", "leases").is_empty())
        .expect("a role for the Lease");
    assert!(namespace.is_some(), "the Lease role is namespaced");
    assert_eq!(verbs(lease_rules, "coordination.k8s.io", "leases"), set(&["create", "get", "update"]));
    let lease = env["MALL_OPERATOR_LEASE"].value.clone().unwrap();
    assert!(
        lease_rules
            .iter()
            .filter(|r| r.verbs.iter().any(|v| v == "update"))
            .all(|r| r.resource_names == Some(vec![lease.clone()])),
        "update only on the operator's own Lease"
    );
    assert_eq!(chart.bindings.len(), 2);
    for (_, _, _, subject) in &chart.bindings {
        assert_eq!(Some(subject), chart.service_account.as_ref());
    }
    assert!(
        chart
            .bindings
            .iter()
            .any(|(kind, role_kind, _, _)| kind == &format!("{main_kind}Binding") && role_kind == main_kind)
    );

    // The CRD is the operator's.
    let crd = chart.crd.as_ref().expect("the CRD (--include-crds)");
    assert_eq!(crd, &serde_json::to_value(MallStack::crd()).unwrap());
}

#[test]
fn operator_chart_with_default_values() {
    let Some(rendered) = charts() else { return };
    let chart = operator_chart(&rendered, "mall-operator-default");
    check_operator_chart(&chart, true, "ghcr.io/example/mall:0.1.0", "busybox:1.36");
    check_operator_network_policy(&chart, ("mall.example.com/metrics", "true"));
    assert_eq!(chart.deployment.as_ref().unwrap().spec.as_ref().unwrap().replicas, Some(1));
    assert!(otel_env(&chart).is_empty(), "no collector given: no OTEL_* variable");
}

#[test]
fn operator_chart_with_every_value_set() {
    let Some(rendered) = charts() else { return };
    let chart = operator_chart(&rendered, "mall-operator-full");
    check_operator_chart(
        &chart,
        false,
        "registry.example.com/shop/mall:0.1.0",
        "registry.example.com/tools/busybox:1.36",
    );
    check_operator_network_policy(&chart, ("kubernetes.io/metadata.name", "monitoring"));
    let deployment = chart.deployment.as_ref().unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry-creds");
    assert!(pod.affinity.is_some() && pod.tolerations.is_some() && pod.node_selector.is_some());
    assert_eq!(chart.service.as_ref().unwrap().spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 9090);
    // The reconciles' traces go to the collector, as the stacks' components do (the same variables).
    let otel = otel_env(&chart);
    let want: BTreeMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.monitoring:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "mall-operator"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(otel, want);
    let names: BTreeSet<&str> = otel.keys().map(String::as_str).collect();
    assert_eq!(names, mall_operator::builders::OTEL_ENV.into_iter().collect(), "the operator's own names");
}

/// What the mall chart renders: one MallStack, and when enabled the dashboard ConfigMap and the
/// PrometheusRule.
struct MallChart {
    stack: MallStack,
    dashboards: Vec<ConfigMap>,
    rules: Vec<PrometheusRule>,
}

fn mall_chart(rendered: &Rendered, stem: &str) -> MallChart {
    let (mut stack, mut dashboards, mut rules) = (None, Vec::new(), Vec::new());
    for object in objects(rendered, stem) {
        match object {
            Object::MallStack(s) => assert!(stack.replace(*s).is_none(), "{stem}: two MallStacks"),
            Object::ConfigMap(c) => dashboards.push(*c),
            Object::PrometheusRule(r) => rules.push(*r),
            other => panic!("{stem}: unexpected {}", other.describe()),
        }
    }
    let stack = stack.unwrap_or_else(|| panic!("{stem}: no MallStack"));
    stack.spec.validate().unwrap_or_else(|e| panic!("{stem}: {e}"));
    kube::core::cel::validate_cel(&stack).unwrap_or_else(|e| panic!("{stem}: CEL rules: {e:?}"));
    MallChart { stack, dashboards, rules }
}

fn mall_stack(rendered: &Rendered, stem: &str) -> MallStack {
    mall_chart(rendered, stem).stack
}

#[test]
fn mall_chart_with_default_values() {
    let Some(rendered) = charts() else { return };
    let chart = mall_chart(&rendered, "mall-default");
    assert!(chart.dashboards.is_empty() && chart.rules.is_empty(), "dashboards and alerts are opt-in");
    let stack = chart.stack;
    assert_eq!(stack.name_any(), "mall");
    assert_eq!(stack.spec.image.reference(), "ghcr.io/example/mall:0.1.0");
    assert!(stack.spec.database.managed.is_some() && stack.spec.redis.managed.is_some());
    assert!(stack.spec.database.managed.as_ref().unwrap().retain_on_delete, "the data outlives the release");
    assert!(stack.spec.services.iter().all(|(_, s)| s.replicas == 1 && s.autoscaling.is_none()));
    assert!(stack.spec.network_policies, "NetworkPolicies on by default");
    assert!(!stack.spec.paused);
    assert_eq!(stack.spec.auth.rotate_signing_key_at, None, "no rotation unless asked for");
    assert_eq!(stack.spec.observability, None, "no traces, no ServiceMonitors unless asked for");
}

#[test]
fn mall_chart_with_every_value_set() {
    let Some(rendered) = charts() else { return };
    let stack = mall_stack(&rendered, "mall-full");
    let spec = &stack.spec;
    assert_eq!(stack.name_any(), "shop");
    assert_eq!(spec.image.pull_secrets, ["registry-creds"]);
    assert_eq!(spec.database.external.as_ref().unwrap().secret_ref.name, "mall-database");
    assert!(spec.database.managed.is_none() && spec.redis.managed.is_none());
    assert_eq!(spec.redis.external.as_ref().unwrap().secret_ref.name, "mall-redis");
    assert_eq!(spec.gateway.node_port, Some(30889));
    assert_eq!(spec.gateway.autoscaling.as_ref().unwrap().max_replicas, 12);
    assert_eq!(spec.services.product.autoscaling.as_ref().unwrap().max_replicas, 8);
    assert_eq!(
        (spec.services.auth.replicas, spec.services.user.replicas, spec.services.checkout.replicas),
        (2, 2, 3)
    );
    // serviceDefaults merged under each service; a service's own value wins.
    let requests = |s: &mall_operator::crd::ServiceSpec| {
        s.resources.as_ref().and_then(|r| r.requests.clone()).unwrap()["cpu"].0.clone()
    };
    assert_eq!(requests(&spec.services.cart), "100m");
    assert_eq!(requests(&spec.services.payment), "50m");
    assert_eq!(spec.admin.password_secret_ref.as_ref().unwrap().name, "mall-admin");
    assert!(spec.network_policies);
    assert_eq!(spec.token_ttl, "12h");
    assert_eq!(spec.auth.rotate_signing_key_at.as_deref(), Some("2025-12-05T10:00:00Z"));
    assert_eq!(spec.otlp_endpoint(), Some("http://otel-collector.monitoring:4317"));
    assert_eq!(spec.sampling_ratio(), 0.25);
    assert!(spec.service_monitor());
}

#[test]
fn mall_chart_restoring_from_a_bucket_with_backups_and_a_paused_service() {
    let Some(rendered) = charts() else { return };
    let stack = mall_stack(&rendered, "mall-restore");
    let spec = &stack.spec;
    spec.validate().unwrap();
    let backup = spec.backup.as_ref().expect("spec.backup");
    assert_eq!(backup.schedule, "30 5 * * *");
    assert_eq!((backup.retention.count, backup.retention.max_age_days), (14, Some(30)));
    assert_eq!(backup.target.s3.as_ref().map(|s| s.secret_name.as_str()), Some("shop-bucket"));
    assert!(backup.target.pvc.is_none(), "a bucket instead of the claim");
    let restore = spec.restore.as_ref().expect("spec.restore");
    assert_eq!(restore.from, "20261206T053000Z");
    assert_eq!(
        (restore.claim_name.as_deref(), restore.s3.as_ref()),
        (None, None),
        "from the stack's own bucket"
    );
    assert!(spec.services.payment.paused);
    assert!(spec.services.iter().filter(|(n, _)| *n != "payment").all(|(_, s)| !s.paused));

    // The defaults ask for none of it.
    let default = mall_stack(&rendered, "mall-default");
    assert!(default.spec.backup.is_none() && default.spec.restore.is_none());
    assert!(default.spec.services.iter().all(|(_, s)| !s.paused));
}

// Dashboards and alerts ----------------------------------------------------------------------------

/// What kind of series a metric is, which decides the PromQL that may read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric Mall's processes export, with its type. This list mirrors what the services export: the
/// gateway's HTTP metrics (services/gateway), every gRPC service's, the database pool and cache metrics of
/// each process, the checkout saga and its sweeper, the work limits (mall-runtime), and mall-operator's
/// (operator/src/metrics.rs). Change it with them: the chart's dashboard and alerts may use these only,
/// and the dashboard shows them all.
const EXPORTED: [(&str, Kind); 17] = [
    ("mall_http_requests_total", Kind::Counter),
    ("mall_http_request_duration_seconds", Kind::Histogram),
    ("mall_http_requests_in_flight", Kind::Gauge),
    ("mall_grpc_server_requests_total", Kind::Counter),
    ("mall_grpc_server_request_duration_seconds", Kind::Histogram),
    ("mall_grpc_server_requests_in_flight", Kind::Gauge),
    ("mall_db_pool_connections", Kind::Gauge),
    ("mall_db_pool_max_connections", Kind::Gauge),
    ("mall_db_pool_acquire_duration_seconds", Kind::Histogram),
    ("mall_cache_requests_total", Kind::Counter),
    ("mall_checkout_outcomes_total", Kind::Counter),
    ("mall_checkout_sweeper_runs_total", Kind::Counter),
    ("mall_checkout_sweeper_recovered_total", Kind::Counter),
    ("mall_work_refused_total", Kind::Counter),
    ("mall_operator_reconciles_total", Kind::Counter),
    ("mall_operator_reconcile_failures_total", Kind::Counter),
    ("mall_operator_reconcile_duration_seconds", Kind::Histogram),
];

/// The series a histogram is exposed as.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_count", "_sum"];

/// The matches of the regex `mall_[a-z_]+` in `text` (leftmost, longest, not overlapping), with their
/// byte offsets.
fn metric_tokens(text: &str) -> Vec<(usize, &str)> {
    const PREFIX: &str = "mall_";
    let mut tokens = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(PREFIX).map(|i| from + i) {
        let rest = &text[at + PREFIX.len()..];
        let len = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            from = at + 1;
            continue;
        }
        let end = at + PREFIX.len() + len;
        tokens.push((at, &text[at..end]));
        from = end;
    }
    tokens
}

/// The metric a series name belongs to: without a histogram's `_bucket`, `_count` or `_sum`.
fn metric_name(token: &str) -> &str {
    HISTOGRAM_SUFFIXES.iter().find_map(|suffix| token.strip_suffix(suffix)).unwrap_or(token)
}

fn kind_of(name: &str) -> Option<Kind> {
    EXPORTED.iter().find(|(n, _)| *n == name).map(|(_, kind)| *kind)
}

/// What is wrong with `expr` for the types of the metrics it reads: counters and histogram series only
/// through `rate` or `increase`, gauges never; a histogram only by its `_bucket`, `_count` or `_sum`
/// series; every `_bucket` rate summed `by (..., le)` into one `histogram_quantile`; brackets balanced.
fn promql_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if expr.trim().is_empty() {
        return vec!["an empty expression".to_owned()];
    }
    for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
        if expr.matches(open).count() != expr.matches(close).count() {
            problems.push(format!("unbalanced {open}{close}"));
        }
    }
    let tokens = metric_tokens(expr);
    if tokens.is_empty() {
        problems.push("reads no mall metric".to_owned());
    }
    let mut buckets = 0;
    for (at, token) in tokens {
        let name = metric_name(token);
        let before = expr[..at].trim_end();
        let rated = before.ends_with("rate(") || before.ends_with("increase(");
        match kind_of(name) {
            None => problems.push(format!("{token}: not an exported metric")),
            Some(Kind::Counter) if token != name || !rated => {
                problems.push(format!("counter {token}: read it through rate() or increase()"))
            }
            Some(Kind::Gauge) if token != name || rated => {
                problems.push(format!("gauge {token}: read it as it is, not through rate() or increase()"))
            }
            Some(Kind::Histogram) if token == name || !rated => problems.push(format!(
                "histogram {token}: rate() or increase() of its _bucket, _count or _sum series"
            )),
            Some(Kind::Histogram) if token.ends_with("_bucket") => buckets += 1,
            Some(_) => {}
        }
    }
    let quantiles: Vec<usize> = expr.match_indices("histogram_quantile(").map(|(i, _)| i).collect();
    if quantiles.len() != buckets {
        problems.push(format!("{} histogram_quantile for {buckets} _bucket series", quantiles.len()));
    }
    for at in quantiles {
        let inner = &expr[at..];
        let inner = &inner[..inner.find("_bucket").unwrap_or(inner.len())];
        let by = inner.find("by (").map(|i| &inner[i + "by (".len()..]).and_then(|b| b.split(')').next());
        if !by.is_some_and(|labels| labels.split(',').any(|l| l.trim() == "le")) {
            problems.push("histogram_quantile over buckets not summed by le".to_owned());
        }
    }
    problems
}

fn check_promql(expr: &str, what: &str) {
    let problems = promql_problems(expr);
    assert!(problems.is_empty(), "{what}: {}\n  in: {expr}", problems.join("; "));
}

#[test]
fn the_promql_checks_catch_misread_metrics() {
    let tokens: Vec<&str> = metric_tokens(
        r#"rate(mall_http_request_duration_seconds_bucket{x="mall"}[5m]) / mall_db_pool_max_connections2"#,
    )
    .into_iter()
    .map(|(_, token)| metric_name(token))
    .collect();
    assert_eq!(tokens, ["mall_http_request_duration_seconds", "mall_db_pool_max_connections"]);

    let good = [
        "sum by (route) (rate(mall_http_requests_total{status=~\"5..\"}[5m]))",
        "histogram_quantile(0.99, sum by (route, le) (rate(mall_http_request_duration_seconds_bucket[5m])))",
        "max by (db) (mall_db_pool_connections{state=\"in_use\"} / ignoring (state) mall_db_pool_max_connections)",
        "sum(increase(mall_checkout_outcomes_total[1h])) or vector(0)",
    ];
    for expr in good {
        assert_eq!(promql_problems(expr), Vec::<String>::new(), "{expr}");
    }
    let bad = [
        "sum(mall_http_requests_total)",
        "rate(mall_http_requests_in_flight[5m])",
        "sum(rate(mall_http_request_duration_seconds[5m]))",
        "histogram_quantile(0.99, sum by (route) (rate(mall_http_request_duration_seconds_bucket[5m])))",
        "sum(rate(mall_http_request_duration_seconds_bucket[5m]))",
        "sum(rate(mall_http_requests_total[5m])",
        "sum(rate(mall_no_such_metric_total[5m]))",
        "vector(1)",
    ];
    for expr in bad {
        assert!(!promql_problems(expr).is_empty(), "{expr} passed");
    }
}

/// Every panel of a dashboard, the panels of collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// The dashboard variables (`$name`) an expression uses; Grafana's own (`$__rate_interval`) aside.
fn variables_used(expr: &str) -> Vec<&str> {
    expr.match_indices('$')
        .filter_map(|(i, _)| {
            let rest = &expr[i + 1..];
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..len];
            (!name.is_empty() && !name.starts_with("__")).then_some(name)
        })
        .collect()
}

/// A Grafana dashboard fit to load: a uid Grafana takes, the data source, namespace and stack variables,
/// panels with unique ids inside the 24-column grid, and every panel but a row queried, from the data
/// source variable, by PromQL fit for its metrics and using only defined variables. Returns the uid.
fn check_dashboard(dashboard: &Value, what: &str) -> String {
    let uid = dashboard["uid"].as_str().unwrap_or_else(|| panic!("{what}: no uid"));
    assert!(
        (1..=40).contains(&uid.len())
            && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{what}: Grafana refuses the uid {uid:?}"
    );
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}: no title");
    assert!(dashboard["schemaVersion"].is_u64(), "{what}: no schemaVersion");
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no templating.list"))
        .iter()
        .map(|v| (v["name"].as_str().expect("a variable has a name"), v))
        .collect();
    assert_eq!(
        (&variables["datasource"]["type"], &variables["datasource"]["query"]),
        (&json!("datasource"), &json!("prometheus")),
        "{what}: the datasource variable"
    );
    for name in ["namespace", "stack"] {
        assert!(variables.contains_key(name), "{what}: no {name} variable");
    }
    for (name, variable) in &variables {
        if variable["type"] == "query" {
            assert_eq!(variable["datasource"]["uid"], "${datasource}", "{what}: variable {name}");
            let query = variable["query"].as_str().unwrap_or_else(|| panic!("{what}: variable {name}"));
            assert!(!metric_tokens(query).is_empty(), "{what}: variable {name} reads no mall metric");
            for used in variables_used(query) {
                assert!(variables.contains_key(used), "{what}: variable {name} uses ${used}");
            }
        }
    }

    let panels = all_panels(dashboard);
    assert!(panels.iter().any(|p| p["type"] != "row"), "{what}: no panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_else(|| panic!("{what}: a panel without a title"));
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{what}: panel {title:?} has no id"));
        assert!(ids.insert(id), "{what}: panel id {id} twice (again at {title:?})");
        let grid = |key: &str| {
            panel["gridPos"][key].as_u64().unwrap_or_else(|| panic!("{what}: {title:?} gridPos.{key}"))
        };
        assert!(grid("w") >= 1 && grid("x") + grid("w") <= 24 && grid("h") >= 1, "{what}: {title:?} gridPos");
        let _ = grid("y");
        if let Some(repeat) = panel["repeat"].as_str() {
            assert!(variables.contains_key(repeat), "{what}: {title:?} repeats over ${repeat}");
        }
        if panel["type"] == "row" {
            assert!(panel.get("targets").is_none(), "{what}: row {title:?} has targets");
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{what}: {title:?} data source");
        let targets = panel["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{what}: panel {title:?} has no target"));
        let mut refs = BTreeSet::new();
        for target in targets {
            let reference = target["refId"].as_str().unwrap_or_else(|| panic!("{what}: {title:?} refId"));
            assert!(refs.insert(reference), "{what}: {title:?} has refId {reference} twice");
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {title:?} target {reference} has no expression"));
            let here = format!("{what}: panel {title:?} target {reference}");
            check_promql(expr, &here);
            for used in variables_used(expr) {
                assert!(variables.contains_key(used), "{here}: ${used} is no variable");
            }
            if let Some(datasource) = target.get("datasource") {
                assert_eq!(datasource["uid"], "${datasource}", "{here}: data source");
            }
        }
    }
    uid.to_owned()
}

/// The chart's dashboard file, as Grafana would import it.
fn dashboard_file() -> (String, Value) {
    let path = repo_root().join("charts/mall/dashboards/mall.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    (text, dashboard)
}

#[test]
fn the_charts_dashboard_file_is_a_grafana_dashboard() {
    let (_, dashboard) = dashboard_file();
    assert_eq!(check_dashboard(&dashboard, "charts/mall/dashboards/mall.json"), "mall-overview");
}

/// The dashboard of a rendered ConfigMap: it has the sidecar's label `(name, value)`, and one key,
/// `<uid>.json` (the sidecar writes each key to one folder: the uid keeps releases apart).
fn rendered_dashboard(config_map: &ConfigMap, label: (&str, &str)) -> Value {
    let name = config_map.name_any();
    assert_eq!(config_map.labels().get(label.0).map(String::as_str), Some(label.1), "{name}: sidecar label");
    let data = config_map.data.as_ref().unwrap_or_else(|| panic!("{name}: no data"));
    assert_eq!(data.len(), 1, "{name}: one dashboard");
    let (key, text) = data.iter().next().unwrap();
    let dashboard: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} {key}: not JSON: {e}"));
    let uid = check_dashboard(&dashboard, &format!("ConfigMap {name} {key}"));
    assert_eq!(key, &format!("{uid}.json"), "{name}: the key is the uid's");
    dashboard
}

#[test]
fn mall_chart_dashboard() {
    let Some(rendered) = charts() else { return };
    let chart = mall_chart(&rendered, "mall-full");
    assert_eq!(chart.dashboards.len(), 1, "one dashboard ConfigMap");
    let config_map = &chart.dashboards[0];
    assert_eq!(config_map.name_any(), "shop-grafana-dashboard");
    assert_eq!(config_map.namespace().as_deref(), Some("monitoring"), "dashboards.namespace");
    assert_eq!(config_map.annotations().get("grafana_folder").map(String::as_str), Some("Shop"));
    let dashboard = rendered_dashboard(config_map, ("grafana_dashboard", "1"));

    // This release's: its own uid and title, opening on its namespace and stack; the rest is the file.
    assert_eq!(dashboard["uid"], "mall-mall-system-shop");
    assert_eq!(dashboard["title"], "Mall (mall-system/shop)");
    let current = |name: &str| {
        dashboard["templating"]["list"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap()["current"]
            ["value"]
            .clone()
    };
    assert_eq!((current("namespace"), current("stack")), (json!("mall-system"), json!("shop")));
    let (_, file) = dashboard_file();
    assert_eq!(dashboard["panels"], file["panels"], "the panels are the chart file's");

    // Dashboard uids are unique: each rendered one, and the file's.
    let mut uids = BTreeSet::from([file["uid"].as_str().unwrap().to_owned()]);
    for stem in RENDERED {
        for object in objects(&rendered, stem) {
            if let Object::ConfigMap(c) = object
                && c.labels().contains_key("grafana_dashboard")
            {
                let uid =
                    rendered_dashboard(&c, ("grafana_dashboard", "1"))["uid"].as_str().unwrap().to_owned();
                assert!(uids.insert(uid.clone()), "{stem}: dashboard uid {uid} twice");
            }
        }
    }
}

/// A Prometheus duration: `30s`, `5m`, `1h30m`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = ["ms", "s", "m", "h", "d", "w", "y"].into_iter().find(|u| rest[digits..].starts_with(u));
        match unit {
            Some(unit) if digits > 0 => rest = &rest[digits + unit.len()..],
            _ => return false,
        }
    }
    !text.is_empty()
}

#[test]
fn mall_chart_alerts() {
    let Some(rendered) = charts() else { return };
    let chart = mall_chart(&rendered, "mall-full");
    assert_eq!(chart.rules.len(), 1, "one PrometheusRule");
    let rule = &chart.rules[0];
    assert_eq!(rule.metadata.name.as_deref(), Some("shop-alerts"));
    assert_eq!(rule.metadata.namespace.as_deref(), Some("mall-system"));
    let rule_labels = rule.metadata.labels.clone().unwrap_or_default();
    assert_eq!(rule_labels.get("release").map(String::as_str), Some("kube-prometheus-stack"), "ruleLabels");

    let mut alerts = BTreeMap::new();
    for group in &rule.spec.groups {
        assert!(!group.rules.is_empty(), "group {} is empty", group.name);
        for r in &group.rules {
            let name = r.alert.clone().unwrap_or_else(|| panic!("{}: alerting rules only", group.name));
            check_promql(&r.expr, &name);
            let for_ = r.for_.as_deref().unwrap_or_else(|| panic!("{name}: no for"));
            assert!(is_duration(for_), "{name}: for {for_:?}");
            assert!(r.labels.get("severity").is_some_and(|s| !s.is_empty()), "{name}: no severity label");
            assert_eq!(r.labels.get("team").map(String::as_str), Some("shop"), "{name}: alerts.labels");
            for key in ["summary", "description"] {
                assert!(r.annotations.get(key).is_some_and(|a| !a.trim().is_empty()), "{name}: no {key}");
            }
            for (key, text) in &r.annotations {
                assert!(!text.contains("%!"), "{name}: a formatting error in {key}: {text}");
                assert_eq!(text.matches("{{").count(), text.matches("}}").count(), "{name}: {key}: {text}");
            }
            assert_eq!(
                r.annotations.get("runbook_url").map(String::as_str),
                Some(format!("https://runbooks.example.com/mall#{}", name.to_lowercase()).as_str()),
                "{name}: runbook_url"
            );
            assert!(alerts.insert(name.clone(), r.clone()).is_none(), "{name} twice");
        }
    }
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "MallCheckoutHighFailureRatio",
            "MallGatewayHighErrorRatio",
            "MallGatewayHighLatency",
            "MallOperatorReconcileErrors"
        ]
    );

    // ci/full-values.yaml's settings, and this stack's pods only.
    let gateway = r#"namespace="mall-system", pod=~"shop-gateway-[a-z0-9]+-[a-z0-9]+""#;
    let expect = |name: &str, for_: &str, severity: &str, parts: &[&str]| {
        let alert = &alerts[name];
        assert_eq!(alert.for_.as_deref(), Some(for_), "{name}: for");
        assert_eq!(alert.labels["severity"], severity, "{name}: severity");
        for part in parts {
            assert!(alert.expr.contains(part), "{name}: {part:?} is not in\n{}", alert.expr);
        }
    };
    expect(
        "MallGatewayHighErrorRatio",
        "3m",
        "critical",
        &[gateway, r#"status=~"5..""#, "[5m]", ") > 0.02", ">= 0.5"],
    );
    expect(
        "MallGatewayHighLatency",
        "15m",
        "warning",
        &[gateway, "histogram_quantile(0.99,", "[10m]", "> 1.5"],
    );
    expect(
        "MallCheckoutHighFailureRatio",
        "10m",
        "critical",
        &[
            r#"pod=~"shop-checkout-[a-z0-9]+-[a-z0-9]+""#,
            r#"outcome=~"failed|compensated""#,
            "[30m]",
            "> 0.05",
            ">= 10",
        ],
    );
    expect("MallOperatorReconcileErrors", "20m", "warning", &[r#"namespace="mall-system""#, "[15m]", "> 3"]);
    for name in ["MallGatewayHighErrorRatio", "MallGatewayHighLatency", "MallCheckoutHighFailureRatio"] {
        assert_eq!(alerts[name].labels.get("stack").map(String::as_str), Some("shop"), "{name}: stack label");
    }
}

#[test]
fn dashboards_and_alerts_use_only_exported_metrics() {
    let exported: BTreeSet<&str> = EXPORTED.iter().map(|(name, _)| *name).collect();
    let used = |what: &str, text: &str| -> BTreeSet<String> {
        metric_tokens(text)
            .into_iter()
            .map(|(_, token)| {
                let name = metric_name(token);
                assert!(exported.contains(name), "{what} uses {token}: no service exports {name} (EXPORTED)");
                name.to_owned()
            })
            .collect()
    };
    let (text, _) = dashboard_file();
    let in_dashboard = used("charts/mall/dashboards/mall.json", &text);
    let missing: Vec<&&str> = exported.iter().filter(|name| !in_dashboard.contains(**name)).collect();
    assert!(missing.is_empty(), "the dashboard shows nothing of {missing:?}");

    let Some(rendered) = charts() else { return };
    let chart = mall_chart(&rendered, "mall-full");
    assert!(!chart.dashboards.is_empty() && !chart.rules.is_empty());
    for config_map in &chart.dashboards {
        for (key, text) in config_map.data.iter().flatten() {
            used(&format!("ConfigMap {} {key}", config_map.name_any()), text);
        }
    }
    let mut in_alerts = BTreeSet::new();
    for rule in chart.rules.iter().flat_map(|r| &r.spec.groups).flat_map(|g| &g.rules) {
        let what = rule.alert.clone().unwrap_or_default();
        in_alerts.extend(used(&what, &rule.expr));
        for text in rule.labels.values().chain(rule.annotations.values()) {
            used(&what, text);
        }
    }
    assert!(in_alerts.len() >= 4, "the alerts read {in_alerts:?}");
}

#[test]
fn prometheus_durations_are_recognised() {
    for good in ["30s", "5m", "1h30m", "250ms", "2d"] {
        assert!(is_duration(good), "{good}");
    }
    for bad in ["", "5", "m", "soon", "5 m", "-5m"] {
        assert!(!is_duration(bad), "{bad:?}");
    }
}
