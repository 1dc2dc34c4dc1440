//! The reconciler against a scripted API server: each scenario asserts every request in order.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};

use super::*;
use crate::builders::{Desired, auth_keys_secret, desired};
use crate::crd::MallStack;
use crate::fixtures::{
    ApiServerVerifier, Received, cluster_secrets, full_stack, minimal_stack, mock_client, settled,
};
use crate::rotation::KeyRing;

const SECRETS: &str = "/api/v1/namespaces/mall/secrets";
const JOBS: &str = "/apis/batch/v1/namespaces/mall/jobs";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/mall/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/mall/statefulsets";
const STATUS: &str = "/apis/mall.example.com/v1alpha1/namespaces/mall/mallstacks/shop/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/mall/events";
const PDBS: &str = "/apis/policy/v1/namespaces/mall/poddisruptionbudgets";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/mall/horizontalpodautoscalers";
const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/mall/networkpolicies";
const PODS: &str = "/api/v1/namespaces/mall/pods";
const CLAIMS: &str = "/api/v1/namespaces/mall/persistentvolumeclaims";
const MONITORS: &str = "/apis/monitoring.coreos.com/v1/namespaces/mall/servicemonitors";

fn entry<K: Resource<DynamicType = ()> + Serialize>(obj: &K) -> (String, Value) {
    let path = format!("{}/{}", K::url_path(&(), Some("mall")), obj.meta().name.as_ref().unwrap());
    (path, serde_json::to_value(obj).unwrap())
}

/// The applies a reconcile sends, in order; without the service Deployments when migrations are not done.
/// First comes auth's key file, as a new stack gets it (the test stacks share their metadata).
fn expected_applies(d: &Desired, migrated: bool) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    out.push(entry(&auth_keys_secret(&minimal_stack(), &KeyRing::fresh(jiff::Timestamp::now()))));
    out.extend(d.secrets.iter().map(entry));
    out.extend(d.config_maps.iter().map(entry));
    out.extend(d.services.iter().map(entry));
    out.extend(d.stateful_sets.iter().map(entry));
    out.extend(d.deployments.iter().map(entry));
    for (_, job, deployment) in &d.migrations {
        out.push(entry(job));
        if migrated {
            out.push(entry(deployment));
        }
    }
    out.extend(d.pod_disruption_budgets.iter().map(entry));
    out.extend(d.autoscalers.iter().map(entry));
    out.extend(d.network_policies.iter().map(entry));
    out.extend(monitor_entries(d));
    out
}

/// The applies of the ServiceMonitors of `d` (a dynamic kind: its path by hand).
fn monitor_entries(d: &Desired) -> Vec<(String, Value)> {
    d.service_monitors
        .iter()
        .map(|m| {
            (format!("{MONITORS}/{}", m.metadata.name.as_ref().unwrap()), serde_json::to_value(m).unwrap())
        })
        .collect()
}

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(client, Some("test".into())))
}

/// `secrets` and the identity keys of [`cluster_secrets`], unless they are among them already.
fn with_identity(mut secrets: Vec<Value>) -> Vec<Value> {
    let identity = desired(&minimal_stack(), &cluster_secrets()).secrets.pop().unwrap();
    assert_eq!(identity.metadata.name.as_deref(), Some("shop-identity"));
    if !secrets.iter().any(|s| s["metadata"]["name"] == "shop-identity") {
        secrets.push(stored(&identity));
    }
    secrets
}

/// Plays the reads every reconcile starts with: the children (the Secrets with the identity keys; no
/// ServiceMonitor, their CRD installed), then the pods and claims (none here).
async fn reads(
    server: &mut ApiServerVerifier,
    secrets: Vec<Value>,
    jobs: Vec<Value>,
    deployments: Vec<Value>,
    sts: Vec<Value>,
) {
    reads_with_monitors(server, secrets, jobs, deployments, sts, Monitors::Listed(vec![])).await;
}

/// How the API server answers the list of ServiceMonitors.
enum Monitors {
    /// The CRD is installed: these are the stack's.
    Listed(Vec<Value>),
    /// Refused with this code and reason (a Status, as for RBAC's 403).
    Refused(u16, &'static str),
    /// Not served: the CRD is missing, and the API server answers `404 page not found` in plain text.
    NotServed,
}

/// [`reads`], answering the list of ServiceMonitors with `monitors`.
async fn reads_with_monitors(
    server: &mut ApiServerVerifier,
    secrets: Vec<Value>,
    jobs: Vec<Value>,
    deployments: Vec<Value>,
    sts: Vec<Value>,
    monitors: Monitors,
) {
    server.list(SECRETS, "Secret", with_identity(secrets)).await;
    server.list(JOBS, "Job", jobs).await;
    server.list(DEPLOYMENTS, "Deployment", deployments).await;
    server.list(STATEFULSETS, "StatefulSet", sts).await;
    match monitors {
        Monitors::Listed(items) => server.list(MONITORS, "ServiceMonitor", items).await,
        Monitors::Refused(code, reason) => {
            let received = server.expect(Method::GET, MONITORS).await;
            assert!(received.query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dshop"));
            received.respond(StatusCode::from_u16(code).unwrap(), &failure_status(code, reason));
        }
        Monitors::NotServed => {
            let received = server.expect(Method::GET, MONITORS).await;
            received.respond_text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
    }
    server.list(PODS, "Pod", vec![]).await;
    server.list(CLAIMS, "PersistentVolumeClaim", vec![]).await;
}

/// Plays the three lists that follow the applies (what might be pruned), answering them with `items`
/// and expecting no deletion.
async fn nothing_pruned(
    server: &mut ApiServerVerifier,
    pdbs: Vec<Value>,
    hpas: Vec<Value>,
    policies: Vec<Value>,
) {
    server.list(PDBS, "PodDisruptionBudget", pdbs).await;
    server.list(HPAS, "HorizontalPodAutoscaler", hpas).await;
    server.list(POLICIES, "NetworkPolicy", policies).await;
}

/// Expects the deletion of `path`: dependents in the background, only the very object listed.
async fn deletion(server: &mut ApiServerVerifier, path: &str, uid: &str) -> Received {
    let received = server.expect(Method::DELETE, path).await;
    assert_eq!(received.body["propagationPolicy"], "Background", "{path}");
    assert_eq!(received.body["preconditions"]["uid"], uid, "{path}");
    received
}

fn deleted(received: Received) {
    received.ok(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}));
}

/// `obj` as the API server lists it: with a uid.
fn stored<K: Serialize>(obj: &K) -> Value {
    let mut value = serde_json::to_value(obj).unwrap();
    value["metadata"]["uid"] = json!(format!("uid-{}", value["metadata"]["name"].as_str().unwrap()));
    value
}

fn uid(value: &Value) -> String {
    value["metadata"]["uid"].as_str().unwrap().to_owned()
}

fn path_of(base: &str, value: &Value) -> String {
    format!("{base}/{}", value["metadata"]["name"].as_str().unwrap())
}

/// Answers the applies of `expected`, asserting each body (generated Secret values are random: only
/// their keys are compared); returns what was stored.
async fn applies(
    server: &mut ApiServerVerifier,
    expected: &[(String, Value)],
    answer: impl Fn(&Value) -> Value,
) -> Vec<Value> {
    let mut stored = Vec::new();
    for (path, body) in expected {
        let received = server.apply(path).await;
        if body["kind"] == "Secret" {
            // Generated values and times: only which there are is compared.
            let mut sent = received.body.clone();
            let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&sent["data"]), keys(&body["data"]), "{path}");
            let annotations = |v: &Value| keys(&v["metadata"]["annotations"]);
            assert_eq!(annotations(&sent), annotations(body), "{path}");
            sent["data"] = Value::Null;
            sent["metadata"]["annotations"] = Value::Null;
            let mut want = body.clone();
            want["data"] = Value::Null;
            want["metadata"]["annotations"] = Value::Null;
            assert_eq!(sent, want, "{path}");
        } else {
            assert_eq!(&received.body, body, "{path}");
        }
        let answer = answer(&received.body);
        stored.push(answer.clone());
        received.ok(&answer);
    }
    stored
}

async fn status_patch(server: &mut ApiServerVerifier, stack: &MallStack) -> Value {
    let received = server.apply(STATUS).await;
    assert_eq!(received.body["apiVersion"], "mall.example.com/v1alpha1");
    assert_eq!(received.body["kind"], "MallStack");
    assert!(received.body.get("spec").is_none(), "only the status is written");
    let status = received.body["status"].clone();
    let mut answer = serde_json::to_value(stack).unwrap();
    answer["status"] = status.clone();
    received.ok(&answer);
    status
}

async fn event(server: &mut ApiServerVerifier, type_: &str, reason: &str) -> Value {
    let received = server.expect(Method::POST, EVENTS).await;
    assert_eq!(received.body["reason"], reason);
    assert_eq!(received.body["type"], type_);
    assert_eq!(received.body["regarding"]["name"], "shop");
    assert_eq!(received.body["regarding"]["kind"], "MallStack");
    let body = received.body.clone();
    received.respond(StatusCode::CREATED, &body);
    body
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

async fn run<F: Future<Output = ()> + Send + 'static>(
    stack: MallStack,
    ctx: Arc<Context>,
    script: F,
) -> Result<Action> {
    let server = tokio::spawn(script);
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(stack), ctx))
        .await
        .expect("the reconcile finished: it sent no request the script did not expect");
    server.await.expect("the script ran to its end");
    result
}

#[tokio::test]
async fn first_reconcile_applies_every_child_then_settles_without_status_writes() {
    let stack = minimal_stack();
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    // The auth keys Secret; the generated Secrets (root, one per service, Redis, admin, identity); the
    // ConfigMap, Services, MySQL, Redis and the gateway, a Job and a Deployment per service,
    // NetworkPolicies.
    assert_eq!(expected.len(), 1 + 11 + 1 + 10 + 1 + 2 + 14 + 10);

    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected) = (stack.clone(), expected.clone());
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            let stored = applies(&mut server, &expected, settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(status["readyComponents"], "10/10");
            assert_eq!(status["observedGeneration"], 1);
            assert_eq!(condition(&status, "Ready")["status"], "True");
            assert_eq!(condition(&status, "MigrationsComplete")["status"], "True");
            assert_eq!(condition(&status, "DatabaseReady")["status"], "True");
            assert_eq!(condition(&status, "Degraded")["status"], "False");
            assert_eq!(condition(&status, "Paused")["status"], "False");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            tx.send((stored, status, server)).ok();
        }
    };
    let reconciles = metrics::value(metrics::RECONCILES).unwrap();
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let (stored, status, mut server) = rx.await.unwrap();

    // The cluster now holds what was applied, and the stack carries the status just written.
    let mut settled_stack = stack.clone();
    settled_stack.status = Some(serde_json::from_value(status).unwrap());
    let of_kind = |kind: &str| stored.iter().filter(|o| o["kind"] == kind).cloned().collect::<Vec<_>>();
    let secrets = of_kind("Secret");
    let (jobs, deployments, sts) = (of_kind("Job"), of_kind("Deployment"), of_kind("StatefulSet"));
    let script = async move {
        reads(&mut server, secrets.clone(), jobs, deployments, sts).await;
        // The generated secrets are sent again with the very same values.
        for secret in &secrets {
            let path = format!("{SECRETS}/{}", secret["metadata"]["name"].as_str().unwrap());
            let received = server.apply(&path).await;
            assert_eq!(received.body["data"], secret["data"], "{path} keeps its values");
            assert_eq!(
                received.body["metadata"]["annotations"], secret["metadata"]["annotations"],
                "{path} keeps its bookkeeping"
            );
            received.ok(secret);
        }
        applies(&mut server, &expected[secrets.len()..], settled).await;
        nothing_pruned(&mut server, vec![], vec![], vec![]).await;
        // No status patch and no event follow: the reconcile must end here.
    };
    let action = run(settled_stack, ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    // Other tests reconcile meanwhile (one recorder per process): at least these two were counted.
    assert!(metrics::value(metrics::RECONCILES).unwrap() >= reconciles + 2.0, "{}", metrics::render());
}

#[tokio::test]
async fn services_wait_for_their_migrations() {
    let stack = minimal_stack();
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), false);
    // The previous image's migration of auth, done: kept while the current migrations run.
    let mut previous = stack.clone();
    previous.spec.image.tag = "0.0.9".into();
    let old_job = settled(&stored(&builders::migration_job(&previous, crate::crd::Service::Auth)));
    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![old_job], vec![], vec![]).await;
            // Jobs come back still running, so no service Deployment is applied.
            applies(&mut server, &expected, |b| if b["kind"] == "Job" { b.clone() } else { settled(b) })
                .await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(condition(&status, "MigrationsComplete")["reason"], "Pending");
            assert_eq!(condition(&status, "Ready")["status"], "False");
            assert_eq!(condition(&status, "Progressing")["status"], "True");
            assert_eq!(status["readyComponents"], "3/10");
        }
    };
    let action = run(stack, context(client), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn migration_jobs_wait_for_the_managed_database() {
    let stack = minimal_stack();
    let wanted = desired(&stack, &cluster_secrets());
    // Nothing migrated yet: no service Deployment either way.
    let expected = expected_applies(&wanted, false);
    let before_database: Vec<(String, Value)> =
        expected.iter().filter(|(_, body)| body["kind"] != "Job").cloned().collect();
    assert_eq!(expected.len() - before_database.len(), 7, "one Job per service is held back");

    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            // The MySQL pod is still starting: every other child is applied, but no Job.
            applies(&mut server, &before_database, |b| {
                if b["kind"] == "StatefulSet" {
                    let mut starting = b.clone();
                    starting["status"] = json!({"replicas": 1, "readyReplicas": 0});
                    starting
                } else {
                    settled(b)
                }
            })
            .await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let database = condition(&status, "DatabaseReady");
            assert_eq!(
                (database["status"].as_str(), database["reason"].as_str()),
                (Some("False"), Some("MySQLNotReady"))
            );
            assert_eq!(condition(&status, "MigrationsComplete")["reason"], "Pending");
            assert_eq!(condition(&status, "Degraded")["status"], "False", "waiting is not a failure");
            tx.send((status, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let (status, mut server) = rx.await.unwrap();

    // The StatefulSet's pod is ready (its status change triggers this reconcile): the Jobs are created.
    let mut waiting = stack.clone();
    waiting.status = Some(serde_json::from_value(status).unwrap());
    let script = {
        let stack = waiting.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            applies(&mut server, &expected, |b| if b["kind"] == "Job" { b.clone() } else { settled(b) })
                .await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(condition(&status, "DatabaseReady")["status"], "True");
            assert_eq!(condition(&status, "MigrationsComplete")["reason"], "Pending");
        }
    };
    let action = run(waiting, ctx, script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn paused_stack_writes_no_child_and_reports_paused() {
    let mut stack = minimal_stack();
    stack.spec.paused = true;
    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let paused = condition(&status, "Paused");
            assert_eq!(
                (paused["status"].as_str(), paused["reason"].as_str()),
                (Some("True"), Some("Paused"))
            );
            assert_eq!(condition(&status, "Progressing")["status"], "False");
            event(&mut server, "Normal", "Paused").await;
        }
    };
    run(stack, context(client), script).await.unwrap();
}

fn failure_status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the server said no", "reason": reason, "code": code})
}

#[tokio::test]
async fn failing_apply_degrades_the_stack_and_backs_off() {
    for (code, reason, label, refusal, condition_reason) in [
        (500, "InternalError", "apply", "server_error", "ApplyFailed"),
        (422, "Invalid", "apply_invalid", "invalid", "ApplyRejected"),
    ] {
        let stack = minimal_stack();
        let (client, mut server) = mock_client();
        let ctx = context(client);
        let script = {
            let stack = stack.clone();
            async move {
                reads(&mut server, vec![], vec![], vec![], vec![]).await;
                let received = server.apply(&format!("{SECRETS}/shop-auth-keys")).await;
                received.respond(StatusCode::from_u16(code).unwrap(), &failure_status(code, reason));
                let status = status_patch(&mut server, &stack).await;
                let degraded = condition(&status, "Degraded");
                assert_eq!(degraded["status"], "True");
                assert_eq!(degraded["reason"], condition_reason);
                assert!(degraded["message"].as_str().unwrap().contains("shop-auth-keys"), "{degraded}");
                assert_eq!(condition(&status, "Ready")["status"], "False");
                event(&mut server, "Warning", condition_reason).await;
            }
        };
        let series = format!("{}{{error=\"{label}\",reason=\"{}\"}}", metrics::FAILURES, refusal);
        let before = metrics::value(&series).unwrap_or(0.0);
        let error = run(stack.clone(), ctx.clone(), script).await.unwrap_err();
        assert_eq!(error.metric_label(), label);
        assert!(metrics::value(&series).unwrap() >= before + 1.0, "{}", metrics::render());

        let stack = Arc::new(stack);
        let waits: Vec<Action> = (0..4).map(|_| error_policy(stack.clone(), &error, ctx.clone())).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40].map(|s| Action::requeue(Duration::from_secs(s))),
            "each failure in a row waits longer"
        );
    }
    assert_eq!(backoff(1), Duration::from_secs(5));
    assert!(backoff(3) > backoff(2));
    assert_eq!(backoff(50), Duration::from_secs(300));
}

/// `stack` as it was before its owner scaled it down, dropped autoscaling and turned policies off, with
/// an older image: what it left behind.
fn before_scaling_down(stack: &MallStack) -> MallStack {
    let mut before = stack.clone();
    before.spec.image.tag = "0.0.9".into();
    before.spec.services.product.replicas = 2;
    before.spec.services.product.autoscaling = Some(crate::crd::AutoscalingSpec {
        min_replicas: 2,
        max_replicas: 5,
        target_cpu_utilization_percentage: 80,
    });
    before.spec.network_policies = true;
    before
}

#[tokio::test]
async fn children_no_longer_wanted_are_deleted() {
    let mut stack = minimal_stack();
    stack.spec.network_policies = false;
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let left = desired(&before_scaling_down(&stack), &cluster_secrets());
    let pdbs: Vec<Value> = left.pod_disruption_budgets.iter().map(stored).collect();
    let hpas: Vec<Value> = left.autoscalers.iter().map(stored).collect();
    let policies: Vec<Value> = left.network_policies.iter().map(stored).collect();
    let old_jobs: Vec<Value> = left.migrations.iter().map(|(_, job, _)| settled(&stored(job))).collect();
    assert_eq!((pdbs.len(), hpas.len(), policies.len(), old_jobs.len()), (1, 1, 10, 7));
    // Labelled like the stack's children but controlled by something else: never deleted.
    let mut foreign = pdbs[0].clone();
    foreign["metadata"]["name"] = json!("shop-extra");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");

    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], old_jobs.clone(), vec![], vec![]).await;
            applies(&mut server, &expected, settled).await;

            server.list(PDBS, "PodDisruptionBudget", vec![pdbs[0].clone(), foreign]).await;
            deleted(deletion(&mut server, &path_of(PDBS, &pdbs[0]), &uid(&pdbs[0])).await);
            server.list(HPAS, "HorizontalPodAutoscaler", hpas.clone()).await;
            // Already gone: fine.
            deletion(&mut server, &path_of(HPAS, &hpas[0]), &uid(&hpas[0]))
                .await
                .respond(StatusCode::NOT_FOUND, &failure_status(404, "NotFound"));
            server.list(POLICIES, "NetworkPolicy", policies.clone()).await;
            for policy in &policies {
                deleted(deletion(&mut server, &path_of(POLICIES, policy), &uid(policy)).await);
            }
            // The current image's migrations succeeded: the previous image's Jobs go, in name order.
            let mut old_jobs = old_jobs;
            old_jobs.sort_by_key(|job| job["metadata"]["name"].as_str().unwrap().to_owned());
            for job in &old_jobs {
                deleted(deletion(&mut server, &path_of(JOBS, job), &uid(job)).await);
            }

            let status = status_patch(&mut server, &stack).await;
            assert_eq!(condition(&status, "Ready")["status"], "True");
            assert_eq!(condition(&status, "Degraded")["status"], "False");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
        }
    };
    run(stack, context(client), script).await.unwrap();
}

#[tokio::test]
async fn nothing_is_deleted_when_every_child_is_wanted() {
    let stack = full_stack();
    let wanted = desired(&stack, &cluster_secrets());
    assert!(
        !wanted.pod_disruption_budgets.is_empty()
            && !wanted.autoscalers.is_empty()
            && !wanted.network_policies.is_empty()
            && !wanted.service_monitors.is_empty(),
        "the full stack has children of every prunable kind"
    );
    let monitors: Vec<Value> = wanted.service_monitors.iter().map(stored).collect();
    let expected = expected_applies(&wanted, true);
    let (pdbs, hpas, policies): (Vec<Value>, Vec<Value>, Vec<Value>) = (
        wanted.pod_disruption_budgets.iter().map(stored).collect(),
        wanted.autoscalers.iter().map(stored).collect(),
        wanted.network_policies.iter().map(stored).collect(),
    );
    let current_jobs: Vec<Value> =
        wanted.migrations.iter().map(|(_, job, _)| settled(&stored(job))).collect();

    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            let monitors = Monitors::Listed(monitors);
            reads_with_monitors(&mut server, vec![], current_jobs, vec![], vec![], monitors).await;
            applies(&mut server, &expected, settled).await;
            nothing_pruned(&mut server, pdbs, hpas, policies).await;
            // Straight to the status: no deletion came first.
            let status = status_patch(&mut server, &stack).await;
            assert_eq!(condition(&status, "Degraded")["status"], "False");
            assert_eq!(condition(&status, "MigrationsComplete")["status"], "True");
            assert_eq!(condition(&status, "ServiceMonitors")["status"], "True");
            event(&mut server, "Normal", "Migrated").await;
            event(&mut server, "Normal", "ServiceMonitorsApplied").await;
        }
    };
    run(stack, context(client), script).await.unwrap();
}

#[tokio::test]
async fn a_failed_deletion_degrades_the_stack() {
    let stack = minimal_stack();
    let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    let left = desired(&before_scaling_down(&stack), &cluster_secrets());
    let pdb = stored(&left.pod_disruption_budgets[0]);
    let (client, mut server) = mock_client();
    let ctx = context(client);
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            applies(&mut server, &expected, settled).await;
            server.list(PDBS, "PodDisruptionBudget", vec![pdb.clone()]).await;
            deletion(&mut server, &path_of(PDBS, &pdb), &uid(&pdb))
                .await
                .respond(StatusCode::FORBIDDEN, &failure_status(403, "Forbidden"));
            let status = status_patch(&mut server, &stack).await;
            let degraded = condition(&status, "Degraded");
            // Who refused is the news: the API server's own words, not the client's dump.
            assert_eq!(
                (degraded["status"].as_str(), degraded["reason"].as_str(), degraded["message"].as_str()),
                (
                    Some("True"),
                    Some("Forbidden"),
                    Some("cannot delete PodDisruptionBudget shop-product: the server said no")
                )
            );
            event(&mut server, "Warning", "Forbidden").await;
        }
    };
    let error = run(stack, ctx, script).await.unwrap_err();
    assert_eq!(error.metric_label(), "prune");
}

/// `job` as the API server reports it once its pods exhausted their backoff limit.
fn failed_job(job: &Value) -> Value {
    let mut failed = job.clone();
    failed["status"] = json!({
        "failed": 7,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    });
    failed
}

#[tokio::test]
async fn a_failed_migration_job_is_deleted_so_that_it_runs_again() {
    let stack = minimal_stack();
    let wanted = desired(&stack, &cluster_secrets());
    let (_, job, deployment) =
        wanted.migrations.iter().find(|(s, _, _)| *s == crate::crd::Service::Product).unwrap();
    let (job_path, job_body) = entry(job);
    let job_name = job.metadata.name.clone().unwrap();
    let failed = failed_job(&stored(job));
    // Every other service migrated; product's Deployment waits for its migration.
    let mut expected = expected_applies(&wanted, true);
    expected.retain(|(path, _)| *path != entry(deployment).0);
    let at = expected.iter().position(|(path, _)| *path == job_path).unwrap();
    assert!(at + 1 < expected.len() && expected[at + 1].1["kind"] == "Job", "other services follow");

    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected, failed) = (stack.clone(), expected.clone(), failed.clone());
        async move {
            reads(&mut server, vec![], vec![failed.clone()], vec![], vec![]).await;
            applies(&mut server, &expected[..at], settled).await;
            let received = server.apply(&job_path).await;
            assert_eq!(received.body, job_body);
            received.ok(&failed);
            // Right after its apply: that very Job goes, its pods in the background.
            deleted(deletion(&mut server, &job_path, &uid(&failed)).await);
            let retry = event(&mut server, "Warning", "MigrationRetry").await;
            assert_eq!(retry["related"]["kind"], "Job");
            assert_eq!(retry["related"]["name"], job_name.as_str());
            let note = retry["note"].as_str().unwrap();
            assert!(note.contains("product") && note.contains(&job_name), "{note}");
            applies(&mut server, &expected[at + 1..], settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            // This reconcile still reports what it saw: the failure.
            let status = status_patch(&mut server, &stack).await;
            let migrations = condition(&status, "MigrationsComplete");
            assert_eq!(
                (migrations["status"].as_str(), migrations["reason"].as_str()),
                (Some("False"), Some("MigrationFailed"))
            );
            assert!(migrations["message"].as_str().unwrap().contains("product"), "{migrations}");
            let degraded = condition(&status, "Degraded");
            assert_eq!(
                (degraded["status"].as_str(), degraded["reason"].as_str()),
                (Some("True"), Some("MigrationFailed"))
            );
            assert_eq!(condition(&status, "Ready")["status"], "False");
            event(&mut server, "Warning", "MigrationFailed").await;
            tx.send((status, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    let (status, mut server) = rx.await.unwrap();

    // The deletion triggers the next reconcile: the Job is created again and runs; nothing is deleted.
    // What it failed of stays the news until it succeeds: no flapping to Progressing and back.
    let mut retrying = stack.clone();
    let degraded_before = condition(&status, "Degraded").clone();
    retrying.status = Some(serde_json::from_value(status).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let stack = retrying.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            applies(&mut server, &expected, |b| {
                if b["kind"] == "Job" && b["metadata"]["name"].as_str().unwrap().contains("-migrate-product-")
                {
                    stored(b)
                } else {
                    settled(b)
                }
            })
            .await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let migrations = condition(&status, "MigrationsComplete");
            assert_eq!(
                (migrations["status"].as_str(), migrations["reason"].as_str()),
                (Some("False"), Some("Pending"))
            );
            assert_eq!(condition(&status, "Degraded"), &degraded_before);
            assert_eq!(status["components"]["product"]["reason"], "MigrationFailed");
            // No event follows (the cause did not change): the server stays alive, so one would hang.
            tx.send(server).ok();
        }
    };
    let action = run(retrying, ctx, script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    drop(rx);
}

mod backup;
mod diagnosis;
mod keys;
mod observability;
mod restore;
