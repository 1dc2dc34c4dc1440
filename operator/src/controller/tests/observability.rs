//! Observability through whole reconciles: ServiceMonitors applied where their CRD is installed and
//! deleted once turned off, a status that says so where the CRD is missing (the stack still Ready), a
//! stack that does not ask for them untouched by a missing CRD or RBAC, and the span every reconcile
//! runs in.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use super::*;
use crate::crd::ObservabilitySpec;
use crate::status::SERVICE_MONITOR_CRD_MISSING;

/// The minimal stack exporting traces, with ServiceMonitors or not.
fn observed_stack(service_monitor: bool) -> MallStack {
    let mut stack = minimal_stack();
    stack.spec.observability = Some(ObservabilitySpec {
        otlp_endpoint: Some("http://otel-collector.monitoring:4317".into()),
        sampling_ratio: 0.5,
        service_monitor,
    });
    stack
}

#[tokio::test]
async fn service_monitors_are_applied_where_their_crd_is_installed_and_deleted_once_turned_off() {
    let stack = observed_stack(true);
    let wanted = desired(&stack, &cluster_secrets());
    let expected = expected_applies(&wanted, true);
    // One per component, applied last (after the NetworkPolicies).
    let monitor_paths: Vec<String> = monitor_entries(&wanted).into_iter().map(|(path, _)| path).collect();
    assert_eq!(
        monitor_paths,
        ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"]
            .map(|c| format!("{MONITORS}/shop-{c}"))
    );
    let tail: Vec<&String> = expected[expected.len() - 8..].iter().map(|(path, _)| path).collect();
    assert_eq!(tail, monitor_paths.iter().collect::<Vec<_>>());

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
            let monitors = condition(&status, "ServiceMonitors");
            assert_eq!(
                (monitors["status"].as_str(), monitors["reason"].as_str()),
                (Some("True"), Some("Applied"))
            );
            assert!(monitors["message"].as_str().unwrap().starts_with("8 ServiceMonitors"), "{monitors}");
            assert_eq!(condition(&status, "Ready")["status"], "True");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            event(&mut server, "Normal", "ServiceMonitorsApplied").await;
            tx.send((stored, status, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let (stored_objects, status, mut server) = rx.await.unwrap();

    // Turned off: the ServiceMonitors the stack made go, in the order listed; one labelled like them but
    // controlled by something else stays. The condition goes with them.
    let mut off = stack.clone();
    off.spec.observability.as_mut().unwrap().service_monitor = false;
    off.status = Some(serde_json::from_value(status).unwrap());
    let expected_off = expected_applies(&desired(&off, &cluster_secrets()), true);
    assert!(expected_off.iter().all(|(path, _)| !path.starts_with(MONITORS)));
    let made: Vec<Value> =
        stored_objects.iter().filter(|o| o["kind"] == "ServiceMonitor").map(stored).collect();
    assert_eq!(made.len(), 8);
    let mut foreign = made[0].clone();
    foreign["metadata"]["name"] = json!("shop-extra");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    let mut listed = made.clone();
    listed.push(foreign);
    let script = {
        let off = off.clone();
        async move {
            reads_with_monitors(&mut server, vec![], vec![], vec![], vec![], Monitors::Listed(listed)).await;
            applies(&mut server, &expected_off, settled).await;
            for monitor in &made {
                deleted(deletion(&mut server, &path_of(MONITORS, monitor), &uid(monitor)).await);
            }
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &off).await;
            assert!(
                status["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "ServiceMonitors"),
                "{status}"
            );
            assert_eq!(condition(&status, "Ready")["status"], "True");
            // No event: nothing that is told about changed.
        }
    };
    let action = run(off, ctx, script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn without_the_crd_the_status_says_so_and_the_stack_is_still_ready() {
    let stack = observed_stack(true);
    let mut expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
    expected.retain(|(path, _)| !path.starts_with(MONITORS));
    let missing = || Monitors::NotServed;

    let (client, mut server) = mock_client();
    let ctx = context(client);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = {
        let (stack, expected) = (stack.clone(), expected.clone());
        async move {
            reads_with_monitors(&mut server, vec![], vec![], vec![], vec![], missing()).await;
            // Every other child, and no ServiceMonitor.
            let stored = applies(&mut server, &expected, settled).await;
            nothing_pruned(&mut server, vec![], vec![], vec![]).await;
            let status = status_patch(&mut server, &stack).await;
            let monitors = condition(&status, "ServiceMonitors");
            assert_eq!(
                (monitors["status"].as_str(), monitors["reason"].as_str(), monitors["message"].as_str()),
                (
                    Some("False"),
                    Some("CRDNotInstalled"),
                    Some(
                        "serviceMonitor is on but the ServiceMonitor CRD (monitoring.coreos.com/v1) is not \
                         installed; no ServiceMonitor made"
                    )
                )
            );
            assert_eq!(monitors["message"], SERVICE_MONITOR_CRD_MISSING);
            assert_eq!(condition(&status, "Ready")["status"], "True", "metrics are not the shop");
            assert_eq!(condition(&status, "Degraded")["status"], "False");
            assert!(status.get("problem").is_none(), "{status}");
            event(&mut server, "Normal", "Ready").await;
            event(&mut server, "Normal", "Migrated").await;
            let warning = event(&mut server, "Warning", "CRDNotInstalled").await;
            assert_eq!(warning["note"], SERVICE_MONITOR_CRD_MISSING);
            tx.send((stored, status, server)).ok();
        }
    };
    let action = run(stack.clone(), ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)), "settled: a missing CRD is no failure");
    let (stored, status, mut server) = rx.await.unwrap();

    // Next time (the cluster holding what was applied, auth's keys among it): the same status, so no
    // write and no second warning.
    let mut again = stack.clone();
    again.status = Some(serde_json::from_value(status).unwrap());
    let secrets: Vec<Value> = stored.iter().filter(|o| o["kind"] == "Secret").cloned().collect();
    let script = async move {
        reads_with_monitors(&mut server, secrets.clone(), vec![], vec![], vec![], missing()).await;
        for secret in &secrets {
            let received = server.apply(&path_of(SECRETS, secret)).await;
            received.ok(secret);
        }
        applies(&mut server, &expected[secrets.len()..], settled).await;
        nothing_pruned(&mut server, vec![], vec![], vec![]).await;
        // The reconcile must end here.
    };
    let action = run(again, ctx, script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_stack_without_service_monitors_minds_neither_a_missing_crd_nor_missing_rbac() {
    let cases: [fn() -> Monitors; 3] = [
        || Monitors::NotServed,
        || Monitors::Refused(404, "NotFound"),
        || Monitors::Refused(403, "Forbidden"),
    ];
    for (case, refused) in cases.into_iter().enumerate() {
        let stack = observed_stack(false);
        let expected = expected_applies(&desired(&stack, &cluster_secrets()), true);
        let (client, mut server) = mock_client();
        let script = {
            let stack = stack.clone();
            async move {
                let refused = refused();
                reads_with_monitors(&mut server, vec![], vec![], vec![], vec![], refused).await;
                applies(&mut server, &expected, settled).await;
                nothing_pruned(&mut server, vec![], vec![], vec![]).await;
                let status = status_patch(&mut server, &stack).await;
                assert!(
                    status["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "ServiceMonitors"),
                    "{status}"
                );
                assert_eq!(condition(&status, "Ready")["status"], "True");
                event(&mut server, "Normal", "Ready").await;
                event(&mut server, "Normal", "Migrated").await;
            }
        };
        let action = run(stack, context(client), script).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(300)), "case {case}");
    }
}

#[tokio::test]
async fn wanted_service_monitors_that_cannot_be_read_fail_the_reconcile() {
    let stack = observed_stack(true);
    let (client, mut server) = mock_client();
    let script = async move {
        server.list(SECRETS, "Secret", with_identity(vec![])).await;
        server.list(JOBS, "Job", vec![]).await;
        server.list(DEPLOYMENTS, "Deployment", vec![]).await;
        server.list(STATEFULSETS, "StatefulSet", vec![]).await;
        // Refused: the reads stop there, nothing is applied (as for any other kind it cannot read).
        let received = server.expect(Method::GET, MONITORS).await;
        received.respond(StatusCode::FORBIDDEN, &failure_status(403, "Forbidden"));
    };
    let error = run(stack, context(client), script).await.unwrap_err();
    assert_eq!((error.metric_label(), error.reason()), ("observe", "Forbidden"));
    assert_eq!(error.to_string(), "cannot read ServiceMonitor: the server said no");
}

type Fields = BTreeMap<String, String>;

/// The spans made on this thread while it captures, in order: name and fields (as text), kept up to
/// date as fields are recorded (not at their close: the client's request buffer may hold a span a
/// little longer).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, Fields)>>>);

thread_local! {
    static CAPTURING: std::cell::RefCell<Option<Spans>> = const { std::cell::RefCell::new(None) };
}

impl Spans {
    /// Captures the spans of this thread (a current-thread runtime's tasks included) until the guard
    /// drops.
    ///
    /// One process-wide subscriber, installed once, that sees only the capturing threads: a scoped
    /// subscriber (`set_default`) would race with the other tests, which reach the same callsites
    /// without one and may leave them cached as uninteresting.
    fn capture() -> (Spans, impl Drop) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
                .expect("no other global subscriber in the operator's tests");
        });
        tracing::callsite::rebuild_interest_cache();
        let spans = Spans::default();
        CAPTURING.with(|c| *c.borrow_mut() = Some(spans.clone()));
        struct Stop;
        impl Drop for Stop {
            fn drop(&mut self) {
                CAPTURING.with(|c| *c.borrow_mut() = None);
            }
        }
        (spans, Stop)
    }

    fn reconciles(&self) -> Vec<Fields> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|(name, _)| name == "reconcile").map(|(_, fields)| fields.clone()).collect()
    }
}

fn capturing() -> Option<Spans> {
    CAPTURING.with(|c| c.borrow().clone())
}

/// Where a span's entry is in its [`Spans`].
struct Entry(Spans, usize);

struct Visitor<'a>(&'a mut Fields);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The layer behind [`Spans::capture`].
struct Capture;

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        // Asked again each time: whether the thread captures.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, _: &tracing::Metadata<'_>, _: LayerContext<'_, S>) -> bool {
        capturing().is_some()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(spans) = capturing() else { return };
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let at = {
            let mut all = spans.0.lock().unwrap();
            all.push((attrs.metadata().name().to_owned(), fields));
            all.len() - 1
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Entry(spans, at));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(Entry(spans, at)) = extensions.get::<Entry>() else { return };
        values.record(&mut Visitor(&mut spans.0.lock().unwrap()[*at].1));
    }
}

#[tokio::test]
async fn each_reconcile_runs_in_a_span_that_records_its_outcome() {
    let (spans, _capturing) = Spans::capture();

    // A reconcile that succeeds (a paused stack: the shortest).
    let mut stack = minimal_stack();
    stack.spec.paused = true;
    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            status_patch(&mut server, &stack).await;
            event(&mut server, "Normal", "Paused").await;
        }
    };
    run(stack, context(client), script).await.unwrap();
    let fields = spans.reconciles();
    assert_eq!(fields.len(), 1, "{fields:?}");
    let want = |outcome: &str| -> Fields {
        [("stack", "shop"), ("namespace", "mall"), ("outcome", outcome)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    assert_eq!(fields[0], want("ok"));

    // One that fails: the outcome is the condition reason, and the error is recorded.
    let stack = minimal_stack();
    let (client, mut server) = mock_client();
    let script = {
        let stack = stack.clone();
        async move {
            reads(&mut server, vec![], vec![], vec![], vec![]).await;
            let received = server.apply(&format!("{SECRETS}/shop-auth-keys")).await;
            received.respond(StatusCode::INTERNAL_SERVER_ERROR, &failure_status(500, "InternalError"));
            status_patch(&mut server, &stack).await;
            event(&mut server, "Warning", "ApplyFailed").await;
        }
    };
    run(stack, context(client), script).await.unwrap_err();
    let fields = spans.reconciles();
    assert_eq!(fields.len(), 2, "{fields:?}");
    let mut failed = want("ApplyFailed");
    failed.insert("error".into(), "cannot apply Secret shop-auth-keys: the server said no".into());
    assert_eq!(fields[1], failed);
}
