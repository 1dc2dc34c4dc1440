//! Distributed tracing on a real cluster (settings in `mall_e2e::cluster`): an OTLP receiver runs in
//! the test's namespace (`MALL_E2E_OTLP_IMAGE`, an image with the `otlp-receiver` program of
//! `mall-testkit`; unset: skipped with a note), a stack is applied with `spec.observability` pointing at
//! it and sampling every trace, and one checkout through the gateway must arrive there as one trace:
//! a single root (`POST /checkout` at the gateway), the checkout saga's calls to cart, product, order and
//! payment under it, every server span the child of a client span, and the trace id the gateway gave the
//! client in `traceparent`. The trace is printed as a tree.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{LogParams, PostParams};
use mall_e2e::cluster::{Cluster, wait_for};
use mall_e2e::run::{Run, pod_ready};
use serde_json::{Value, json};

const RECEIVER: &str = "otlp";
/// The services one checkout goes through.
const TRACED: [&str; 6] =
    ["mall-gateway", "mall-checkout", "mall-cart", "mall-product", "mall-order", "mall-payment"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_on_a_real_cluster() {
    let Some(cluster) = Cluster::for_test("tracing end-to-end test").await else { return };
    let Ok(image) = std::env::var("MALL_E2E_OTLP_IMAGE") else {
        mall_e2e::skip(
            "tracing end-to-end test",
            "MALL_E2E_OTLP_IMAGE (an image with otlp-receiver) is unset",
        );
        return;
    };
    let mut run = Run::new(&cluster, "mall-otel");
    let result = steps(&mut run, &image).await;
    run.finish(result).await;
}

async fn steps(run: &mut Run<'_>, receiver_image: &str) -> Result<()> {
    run.step("create the namespace, install the operator, start the OTLP receiver");
    run.create_namespace().await?;
    run.crd_upgrade_path().await?;
    run.helm_install().await?;
    start_receiver(run, receiver_image).await?;

    run.step("apply the minimal example exporting every trace to the receiver");
    let mut stack = run.example_stack(false).await?;
    let endpoint = format!("http://{RECEIVER}.{}.svc:4317", run.ns);
    stack["spec"]["observability"] = json!({"otlpEndpoint": endpoint, "samplingRatio": 1.0});
    run.prepare_volume(&stack).await?;
    run.apply_stack(&stack).await?;
    run.wait_ready(run.c.ready_timeout, None).await?;

    run.step("one checkout through the gateway");
    let (gw, _forward) = run.gateway().await?;
    gw.wait_ready(Duration::from_secs(60)).await?;
    let (email, token, _) = run.shopper_with_cart(&gw, "Traced mug", "9.99", 5, 1).await?;
    let reply = gw.checkout_reply(&token, &email).await?;
    let traceparent = reply.traceparent.as_deref().context("the checkout reply has no traceparent")?;
    let trace_id = traceparent.split('-').nth(1).context("a malformed traceparent")?.to_owned();
    eprintln!("e2e: checkout {} in trace {trace_id}", reply.data()["order_id"]);

    run.step("the receiver got the checkout as one trace");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (spans, tree) = loop {
        let (spans, tree) = received(run, &trace_id).await?;
        let services: BTreeSet<&str> = spans.iter().filter_map(|s| s["service"].as_str()).collect();
        if TRACED.iter().all(|t| services.contains(t)) {
            break (spans, tree);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the trace {trace_id} did not reach the receiver whole; it has {services:?}:\n{tree}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!("e2e: trace {trace_id} ({} spans):\n{}", spans.len(), tree.trim_end());
    check_shape(&spans)?;
    run.done();
    Ok(())
}

/// The receiver: one pod and a Service in front of it, ready when it accepts connections.
async fn start_receiver(run: &Run<'_>, image: &str) -> Result<()> {
    let labels = json!({"app.kubernetes.io/name": "mall-e2e-otlp"});
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": RECEIVER, "labels": labels},
        "spec": {
            "containers": [{
                "name": "receiver", "image": image, "imagePullPolicy": "IfNotPresent",
                // Longer than the services' batch delay (5 s), so a trace is printed once, whole.
                "command": ["otlp-receiver", "--listen", "0.0.0.0:4317", "--quiet-ms", "8000"],
                "ports": [{"containerPort": 4317, "name": "otlp-grpc"}],
                "readinessProbe": {"tcpSocket": {"port": 4317}, "periodSeconds": 1},
            }],
        }
    }))?;
    run.api::<Pod>().create(&PostParams::default(), &pod).await.context("creating the receiver pod")?;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": RECEIVER},
        "spec": {"selector": labels, "ports": [{"name": "otlp-grpc", "port": 4317, "targetPort": 4317}]}
    }))?;
    run.api::<Service>().create(&PostParams::default(), &service).await?;
    let pods = run.api::<Pod>();
    wait_for(Duration::from_secs(120), Duration::from_secs(1), || async {
        Ok(pod_ready(&pods.get(RECEIVER).await?))
    })
    .await
    .context("the OTLP receiver did not become ready")?;
    Ok(())
}

/// Every span of `trace_id` the receiver has printed (a trace may come in more than one piece when a
/// service's batch is late), and the printed trees.
async fn received(run: &Run<'_>, trace_id: &str) -> Result<(Vec<Value>, String)> {
    let log = run.api::<Pod>().logs(RECEIVER, &LogParams::default()).await?;
    let (mut spans, mut tree, mut ours) = (Vec::new(), String::new(), false);
    for line in log.lines() {
        if let Some(json) = line.strip_prefix("trace ") {
            let trace: Value = serde_json::from_str(json).context("a trace line of the receiver")?;
            ours = trace["trace_id"] == trace_id;
            if ours {
                spans.extend(trace["spans"].as_array().cloned().unwrap_or_default());
            }
        } else if ours {
            tree.push_str(line);
            tree.push('\n');
        }
    }
    Ok((spans, tree))
}

/// One root, the gateway's `POST /checkout`; every other span's parent in the trace; every server span
/// under a client span; the checkout service calling each of the saga's services.
fn check_shape(spans: &[Value]) -> Result<()> {
    let by_id: HashMap<&str, &Value> =
        spans.iter().filter_map(|s| Some((s["span_id"].as_str()?, s))).collect();
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"].is_null()).collect();
    ensure!(roots.len() == 1, "{} roots: {roots:?}", roots.len());
    ensure!(
        roots[0]["service"] == "mall-gateway" && roots[0]["name"] == "POST /checkout",
        "the root is {} at {}",
        roots[0]["name"],
        roots[0]["service"]
    );
    let mut called_by_checkout = BTreeSet::new();
    for span in spans {
        let Some(parent) = span["parent_span_id"].as_str() else { continue };
        let parent =
            by_id.get(parent).with_context(|| format!("the parent of {} is missing", span["name"]))?;
        if span["kind"] == "server" {
            ensure!(
                parent["kind"] == "client",
                "server span {} is under a {} span",
                span["name"],
                parent["kind"]
            );
            if parent["service"] == "mall-checkout" {
                called_by_checkout.insert(span["service"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    for callee in ["mall-cart", "mall-order", "mall-payment"] {
        ensure!(
            called_by_checkout.contains(callee),
            "checkout did not call {callee}: {called_by_checkout:?}"
        );
    }
    Ok(())
}
