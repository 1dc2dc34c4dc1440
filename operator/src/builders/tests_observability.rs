//! Observability as the builders wire it: the OpenTelemetry variables of the serving pods, the
//! ServiceMonitors, and the NetworkPolicies that let the scrapes in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Service as KubeService};
use kube::ResourceExt;

use super::tests::{admitted, container, existing_of, hash_of, service_deployment_of, set_of};
use super::*;
use crate::crd::ObservabilitySpec;
use crate::fixtures::{full_stack, minimal_stack};

const COMPONENTS: [&str; 8] = ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"];

/// The minimal stack with `observability` set.
fn observed(endpoint: Option<&str>, ratio: f64, service_monitor: bool) -> MallStack {
    let mut stack = minimal_stack();
    stack.spec.observability = Some(ObservabilitySpec {
        otlp_endpoint: endpoint.map(str::to_owned),
        sampling_ratio: ratio,
        service_monitor,
    });
    stack
}

/// Every serving Deployment by component: the gateway and each service.
fn serving(d: &Desired) -> Vec<(&'static str, &Deployment)> {
    COMPONENTS
        .into_iter()
        .map(|component| {
            let deployment = match Service::ALL.into_iter().find(|s| s.name() == component) {
                Some(service) => service_deployment_of(d, service),
                None => d.deployments.iter().find(|x| x.name_any() == "shop-gateway").unwrap(),
            };
            (component, deployment)
        })
        .collect()
}

/// The `OTEL_*` variables of `c`, by name (each a plain value).
fn otel_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .filter(|e: &&EnvVar| e.name.starts_with("OTEL_"))
        .map(|e| (e.name.clone(), e.value.clone().expect("a plain value")))
        .collect()
}

#[test]
fn every_serving_pod_gets_the_otel_variables_when_an_endpoint_is_set() {
    let stack = observed(Some("http://otel-collector.monitoring:4317"), 0.25, false);
    let d = desired(&stack, &ExistingSecrets::new());
    for (component, deployment) in serving(&d) {
        let otel = otel_of(container(deployment));
        let want: BTreeMap<String, String> = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.monitoring:4317".to_owned()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_SERVICE_NAME", format!("mall-{component}")),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(otel, want, "{component}");
        assert_eq!(
            otel.keys().cloned().collect::<Vec<_>>(),
            set_of(&OTEL_ENV).into_iter().collect::<Vec<_>>()
        );
        // Set once each, next to the rest of the pod's environment.
        let env = container(deployment).env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "MALL_IDENTITY_KEY"), "{component}");
        for name in OTEL_ENV {
            assert_eq!(env.iter().filter(|e| e.name == name).count(), 1, "{component}: {name}");
        }
    }
    // The migration Jobs export nothing, and the data stores are not the mall's.
    for (_, job, _) in &d.migrations {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        for c in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
            assert!(otel_of(c).is_empty(), "{}", job.name_any());
        }
    }
    let redis = d.deployments.iter().find(|x| x.name_any() == "shop-redis").unwrap();
    assert!(otel_of(container(redis)).is_empty());
    let mysql = d.stateful_sets[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(otel_of(&mysql.containers[0]).is_empty());

    // A whole ratio is written as a number the SDKs parse.
    let all = observed(Some("https://collector.example.com"), 1.0, false);
    let d = desired(&all, &ExistingSecrets::new());
    let otel = otel_of(container(service_deployment_of(&d, Service::Cart)));
    assert_eq!(otel["OTEL_TRACES_SAMPLER_ARG"].parse::<f64>().unwrap(), 1.0);
    assert_eq!(otel["OTEL_EXPORTER_OTLP_ENDPOINT"], "https://collector.example.com");
    assert_eq!(otel["OTEL_SERVICE_NAME"], "mall-cart");
}

#[test]
fn without_an_endpoint_no_pod_gets_any_otel_variable() {
    for stack in [minimal_stack(), observed(None, 0.5, true)] {
        let d = desired(&stack, &ExistingSecrets::new());
        for (component, deployment) in serving(&d) {
            assert!(otel_of(container(deployment)).is_empty(), "{component}");
        }
        assert!(otel_env(&stack, "gateway").is_empty());
    }
}

#[test]
fn tracing_settings_roll_the_pods_but_run_no_migration() {
    let base = minimal_stack();
    let existing = existing_of(&desired(&base, &ExistingSecrets::new()).secrets);
    let build = |stack: &MallStack| desired(stack, &existing);
    let before = build(&base);
    let traced = build(&observed(Some("http://otel-collector.monitoring:4317"), 0.1, false));
    let resampled = build(&observed(Some("http://otel-collector.monitoring:4317"), 0.5, false));
    for (now, then, why) in [(&traced, &before, "an endpoint"), (&resampled, &traced, "another ratio")] {
        for ((component, now), (_, then)) in serving(now).into_iter().zip(serving(then)) {
            assert_ne!(hash_of(now), hash_of(then), "{why} rolls {component}");
        }
    }
    // The migration Jobs' pods do not change, so no migration runs again and each service's
    // Deployment is applied right away (it waits for the same Job as before).
    let jobs = |d: &Desired| d.migrations.iter().map(|(_, job, _)| job.name_any()).collect::<Vec<_>>();
    assert_eq!(jobs(&traced), jobs(&before));
    for ((_, _, now), (_, _, then)) in traced.migrations.iter().zip(&before.migrations) {
        assert!(rollout_allowed(MigrationState::Running, Some(then), now));
    }
    // ServiceMonitors alone change no pod.
    let monitored = build(&observed(None, 0.1, true));
    for ((component, now), (_, then)) in serving(&monitored).into_iter().zip(serving(&before)) {
        assert_eq!(hash_of(now), hash_of(then), "{component}");
    }
}

/// The component's Service among the desired ones.
fn kube_service<'a>(d: &'a Desired, component: &str) -> &'a KubeService {
    d.services.iter().find(|s| s.name_any() == format!("shop-{component}")).unwrap()
}

#[test]
fn a_service_monitor_per_component_selects_its_service_and_scrapes_its_metrics_port() {
    let stack = observed(None, 0.1, true);
    let d = desired(&stack, &ExistingSecrets::new());
    assert_eq!(
        d.service_monitors.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        COMPONENTS.map(|c| format!("shop-{c}"))
    );
    for (monitor, component) in d.service_monitors.iter().zip(COMPONENTS) {
        let json = serde_json::to_value(monitor).unwrap();
        assert_eq!(json["apiVersion"], "monitoring.coreos.com/v1", "{component}");
        assert_eq!(json["kind"], "ServiceMonitor", "{component}");
        assert_eq!(json["metadata"]["namespace"], "mall");
        assert_eq!(json["metadata"]["labels"]["app.kubernetes.io/component"], component);
        // Owned (as its controller) by the stack: it goes with it.
        let owner = &monitor.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("MallStack", "shop"));
        assert_eq!(owner.uid, "3f1c9a52-0000-4000-8000-000000000001");
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));

        // It selects exactly that component's Service, in the stack's namespace.
        let spec = &json["spec"];
        let selector: BTreeMap<String, String> =
            serde_json::from_value(spec["selector"]["matchLabels"].clone()).unwrap();
        assert_eq!(selector, selector_labels(&stack, component));
        for service in &d.services {
            let labels = service.metadata.labels.as_ref().unwrap();
            let selected = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            assert_eq!(selected, service.name_any() == format!("shop-{component}"), "{}", service.name_any());
        }
        assert_eq!(spec["namespaceSelector"], serde_json::json!({"matchNames": ["mall"]}));

        // One endpoint: /metrics every 15 s over plain HTTP, on the Service port that serves it.
        let endpoints = spec["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{component}");
        let endpoint = &endpoints[0];
        let port = if component == "gateway" { "http" } else { "grpc" };
        assert_eq!(
            endpoint,
            &serde_json::json!({"port": port, "path": "/metrics", "scheme": "http", "interval": "15s"}),
            "{component}"
        );
        let service = kube_service(&d, component);
        let ports = service.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert!(
            ports.iter().any(|p| p.name.as_deref() == Some(port)),
            "{component}: its Service names {port}"
        );
    }
    // Off (the default): none.
    assert!(desired(&minimal_stack(), &ExistingSecrets::new()).service_monitors.is_empty());
    assert!(
        desired(&observed(Some("http://c:4317"), 0.1, false), &ExistingSecrets::new())
            .service_monitors
            .is_empty()
    );
}

/// Whether the policy of `name` admits pods of namespaces with the metrics label, on its only port.
fn admits_scrapes(d: &Desired, name: &str) -> bool {
    let np = d.network_policies.iter().find(|p| p.name_any() == name).unwrap();
    let rules = np.spec.as_ref().unwrap().ingress.as_ref().unwrap();
    let (key, value) = metrics_namespace_label();
    rules[0].from.iter().flatten().any(|peer| {
        peer.pod_selector.is_none()
            && peer.ip_block.is_none()
            && peer.namespace_selector.as_ref().and_then(|s| s.match_labels.clone())
                == Some(BTreeMap::from([(key.clone(), value.clone())]))
    })
}

#[test]
fn with_service_monitors_the_services_take_scrapes_from_the_metrics_namespaces() {
    assert_eq!(metrics_namespace_label(), ("mall.example.com/metrics".to_owned(), "true".to_owned()));
    let on = desired(&observed(None, 0.1, true), &ExistingSecrets::new());
    let off = desired(&minimal_stack(), &ExistingSecrets::new());
    for service in Service::ALL {
        let name = format!("shop-{}", service.name());
        assert!(admits_scrapes(&on, &name), "{name}");
        assert!(!admits_scrapes(&off, &name), "{name}: only with ServiceMonitors");
        // Still the callers, and still on the one port (where /metrics is served too).
        let np = on.network_policies.iter().find(|p| p.name_any() == name).unwrap();
        let rule = &np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0];
        assert_eq!(rule.from.as_ref().unwrap().len(), 2, "{name}: the callers and the scrapers");
        let callers = rule.from.as_ref().unwrap()[0].pod_selector.as_ref().unwrap();
        let callers: Vec<String> = callers.match_expressions.as_ref().unwrap()[0].values.clone().unwrap();
        assert_eq!(
            set_of(&callers.iter().map(String::as_str).collect::<Vec<_>>()),
            set_of(service.callers())
        );
        assert_eq!(rule.ports.as_ref().unwrap().len(), 1);
        assert_eq!(admitted(&off, &name).1, GRPC_PORT);
    }
    // The gateway is open to everyone anyway; the data stores are never scraped.
    assert_eq!(admitted(&on, "shop-gateway"), (None, GATEWAY_PORT));
    assert!(!admits_scrapes(&on, "shop-mysql") && !admits_scrapes(&on, "shop-redis"));
    // No NetworkPolicies, nothing to admit; the ServiceMonitors are made all the same.
    let mut open = observed(None, 0.1, true);
    open.spec.network_policies = false;
    let d = desired(&open, &ExistingSecrets::new());
    assert!(d.network_policies.is_empty());
    assert_eq!(d.service_monitors.len(), 8);
    // The full stack has both.
    let full = desired(&full_stack(), &ExistingSecrets::new());
    assert!(admits_scrapes(&full, "shop-cart"));
    assert_eq!(full.service_monitors.len(), 8);
}
