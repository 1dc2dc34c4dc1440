//! The Helm charts, rendered by `ci/chart-checks.sh` (`MALL_RENDERED_CHARTS`) or here when a helm is at
//! hand: every object parses into its type with no unknown field, and the operator's Deployment, RBAC,
//! Service, test hook and CRD, and the shop's MallStack, say what they must.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResourceExt, ResourceExt};
use mall_e2e::charts::{RENDERED, Rendered, rendered};
use mall_e2e::manifests::{Object, parse_all};
use mall_e2e::{in_ci, repo_root, skip};
use mall_operator::MallStack;

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
        ("policy", "poddisruptionbudgets", pruned.clone()),
        ("autoscaling", "horizontalpodautoscalers", pruned.clone()),
        ("networking.k8s.io", "networkpolicies", pruned),
        // Listed each reconcile (not watched: the CRD may be missing), applied, pruned.
        ("monitoring.coreos.com", "servicemonitors", set(&["list", "create", "patch", "delete"])),
        // Read to explain a stack that is not Ready (operator/src/diagnosis/gather.rs).
        ("", "pods", set(&["list"])),
        ("", "pods/log", set(&["get"])),
        ("", "persistentvolumeclaims", set(&["list"])),
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

fn mall_stack(rendered: &Rendered, stem: &str) -> MallStack {
    let objects = objects(rendered, stem);
    assert_eq!(objects.len(), 1, "{stem}: one MallStack and nothing else");
    let Object::MallStack(stack) = objects.into_iter().next().unwrap() else {
        panic!("{stem}: not a MallStack")
    };
    stack.spec.validate().unwrap_or_else(|e| panic!("{stem}: {e}"));
    kube::core::cel::validate_cel(&*stack).unwrap_or_else(|e| panic!("{stem}: CEL rules: {e:?}"));
    *stack
}

#[test]
fn mall_chart_with_default_values() {
    let Some(rendered) = charts() else { return };
    let stack = mall_stack(&rendered, "mall-default");
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
