//! Test fixtures: stacks and (in the controller tests) a scripted API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::crd::*;

/// The smallest useful stack: managed MySQL and Redis, one replica of everything, the defaults
/// (NetworkPolicies on).
pub fn minimal_stack() -> MallStack {
    let mut stack = MallStack::new(
        "shop",
        MallStackSpec {
            image: ImageSpec {
                repository: "ghcr.io/example/mall".into(),
                tag: "0.1.0".into(),
                pull_policy: PullPolicy::IfNotPresent,
                pull_secrets: vec![],
            },
            gateway: GatewaySpec::default(),
            services: ServicesSpec::default(),
            database: DatabaseSpec {
                managed: Some(ManagedDatabase {
                    image: "mysql:8.4".into(),
                    storage_size: "10Gi".into(),
                    storage_class_name: None,
                    retain_on_delete: true,
                }),
                external: None,
            },
            redis: RedisSpec {
                managed: Some(ManagedRedis { image: "redis:7.4-alpine".into() }),
                external: None,
            },
            token_ttl: "24h".into(),
            auth: AuthSpec::default(),
            admin: AdminSpec::default(),
            network_policies: true,
            observability: None,
            backup: None,
            restore: None,
            paused: false,
        },
    );
    stack.metadata = ObjectMeta {
        name: Some("shop".into()),
        namespace: Some("mall".into()),
        uid: Some("3f1c9a52-0000-4000-8000-000000000001".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    stack
}

fn resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let q = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(q(cpu, memory)),
        limits: Some(q("1", memory)),
        ..Default::default()
    }
}

/// Every option used: external database and Redis, NodePort gateway, autoscaling, policies, tracing and
/// ServiceMonitors.
pub fn full_stack() -> MallStack {
    let mut stack = minimal_stack();
    let spec = &mut stack.spec;
    spec.image = ImageSpec {
        repository: "registry.example.com/mall".into(),
        tag: "1.2.3".into(),
        pull_policy: PullPolicy::Always,
        pull_secrets: vec!["registry-creds".into()],
    };
    spec.gateway = GatewaySpec {
        replicas: 3,
        resources: Some(resources("250m", "256Mi")),
        autoscaling: None,
        service_type: ServiceType::NodePort,
        node_port: Some(30889),
        trusted_proxies: None,
    };
    spec.services.product = ServiceSpec {
        replicas: 2,
        resources: Some(resources("100m", "128Mi")),
        autoscaling: Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization_percentage: 70,
        }),
        paused: false,
    };
    spec.services.order.replicas = 2;
    spec.services.payment.replicas = 0;
    spec.database = DatabaseSpec {
        managed: None,
        external: Some(ExternalSpec {
            secret_ref: SecretKeyRef { name: "mall-db".into(), key: "url".into() },
        }),
    };
    spec.redis = RedisSpec {
        managed: None,
        external: Some(ExternalSpec {
            secret_ref: SecretKeyRef { name: "mall-redis".into(), key: "url".into() },
        }),
    };
    spec.token_ttl = "30m".into();
    spec.admin = AdminSpec {
        email: "ops@shop.example".into(),
        password_secret_ref: Some(SecretKeyRef { name: "mall-admin".into(), key: "password".into() }),
    };
    spec.network_policies = true;
    spec.observability = Some(ObservabilitySpec {
        otlp_endpoint: Some("http://otel-collector.monitoring:4317".into()),
        sampling_ratio: 0.25,
        service_monitor: true,
    });
    stack
}

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};

use crate::builders::{Desired, ExistingSecrets};
use crate::status::Observed;

/// The generated Secrets of the test stack as the cluster holds them: its service identity keys, made
/// once per test process, so that what a test expects and what the reconciler builds carry the same
/// public keys (`MALL_IDENTITY_PEERS`).
pub fn cluster_secrets() -> ExistingSecrets {
    static SECRETS: std::sync::OnceLock<ExistingSecrets> = std::sync::OnceLock::new();
    SECRETS
        .get_or_init(|| {
            let identity = crate::builders::identity(&minimal_stack(), &ExistingSecrets::new()).secret;
            ExistingSecrets::from([(identity.metadata.name.unwrap(), identity.data.unwrap())])
        })
        .clone()
}

/// `d` as a settled cluster reports it: every replica ready.
pub fn ready_deployment(d: &Deployment) -> Deployment {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    Deployment {
        status: Some(DeploymentStatus {
            replicas: Some(replicas),
            ready_replicas: Some(replicas),
            updated_replicas: Some(replicas),
            available_replicas: Some(replicas),
            observed_generation: Some(1),
            ..DeploymentStatus::default()
        }),
        ..d.clone()
    }
}

pub fn ready_stateful_set(s: &StatefulSet) -> StatefulSet {
    StatefulSet {
        status: Some(StatefulSetStatus {
            replicas: 1,
            ready_replicas: Some(1),
            ..StatefulSetStatus::default()
        }),
        ..s.clone()
    }
}

pub fn completed_job(j: &Job) -> Job {
    Job {
        status: Some(JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        }),
        ..j.clone()
    }
}

/// What a settled cluster reports for the desired objects.
pub fn all_ready(d: &Desired) -> Observed {
    let mut observed = Observed::default();
    let name = |m: &ObjectMeta| m.name.clone().unwrap();
    for dep in d.deployments.iter().chain(d.migrations.iter().map(|(_, _, dep)| dep)) {
        observed.deployments.insert(name(&dep.metadata), ready_deployment(dep));
    }
    for (_, job, _) in &d.migrations {
        observed.jobs.insert(name(&job.metadata), completed_job(job));
    }
    for sts in &d.stateful_sets {
        observed.stateful_sets.insert(name(&sts.metadata), ready_stateful_set(sts));
    }
    observed
}

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::Value;

type MockHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// A client whose every request is answered by the returned verifier.
pub fn mock_client() -> (kube::Client, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServerVerifier { handle })
}

/// Plays the API server: each call asserts the next request's method and path and hands back its
/// query and body so the scenario can check them and choose the answer.
pub struct ApiServerVerifier {
    handle: MockHandle,
}

/// One request the verifier received.
pub struct Received {
    pub query: String,
    pub body: Value,
    responder: Responder,
}

impl Received {
    pub fn respond(self, status: StatusCode, body: &Value) {
        self.send(status, "application/json", serde_json::to_vec(body).unwrap());
    }

    fn send(self, status: StatusCode, content_type: &str, body: Vec<u8>) {
        let response = Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        self.responder.send_response(response);
    }

    /// Answers with a plain-text body, as the API server does for a path it does not serve at all
    /// (`404 page not found` for a group or kind that no CRD defines).
    pub fn respond_text(self, status: StatusCode, body: &str) {
        self.send(status, "text/plain; charset=utf-8", body.as_bytes().to_vec());
    }

    pub fn ok(self, body: &Value) {
        self.respond(StatusCode::OK, body);
    }

    /// A plain-text answer (a pod's log).
    pub fn text(self, body: &str) {
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(Body::from(body.as_bytes().to_vec()))
            .unwrap();
        self.responder.send_response(response);
    }
}

impl ApiServerVerifier {
    pub async fn expect(&mut self, method: Method, path: &str) -> Received {
        let (request, responder) =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
                .expect("the client is alive");
        let (parts, body) = request.into_parts();
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&method, path),
            "unexpected request {} {}",
            parts.method,
            parts.uri
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Received { query: parts.uri.query().unwrap_or_default().to_owned(), body, responder }
    }

    /// A labelled list of one kind, answered with `items`.
    pub async fn list(&mut self, path: &str, kind: &str, items: Vec<Value>) {
        let received = self.expect(Method::GET, path).await;
        assert!(
            received.query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dshop"),
            "{path} is listed by the stack's labels: {}",
            received.query
        );
        received.ok(&serde_json::json!({
            "apiVersion": if path.starts_with("/api/v1") { "v1".to_owned() } else {
                path.trim_start_matches("/apis/").split("/namespaces").next().unwrap().to_owned()
            },
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }));
    }

    /// A server-side apply of `path` by the operator's field manager; the applied body.
    pub async fn apply(&mut self, path: &str) -> Received {
        let received = self.expect(Method::PATCH, path).await;
        assert!(received.query.contains("fieldManager=mall-operator"), "{}", received.query);
        assert!(received.query.contains("force=true"), "{}", received.query);
        received
    }
}

/// What the API server stores for an applied object in a settled cluster: ready workloads, done Jobs.
pub fn settled(body: &Value) -> Value {
    let mut stored = body.clone();
    let replicas = body["spec"]["replicas"].as_i64().unwrap_or(1);
    stored["status"] = match body["kind"].as_str() {
        Some("Deployment") => serde_json::json!({
            "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas
        }),
        Some("StatefulSet") => serde_json::json!({"replicas": 1, "readyReplicas": 1}),
        Some("Job") => {
            serde_json::json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        }
        _ => return stored,
    };
    stored
}
