//! Traces as a collector receives them: `mall up` exporting over OTLP to a receiver in this test
//! (`mall_testkit::otlp`). One checkout is one trace, from the gateway through every service it
//! reaches, with its database statements; a client's `traceparent` is continued, a malformed one
//! starts a new trace.

use std::collections::HashMap;
use std::time::Duration;

use mall_testkit::otlp::{ReceivedSpan, Receiver, render_tree};

use crate::commerce::{GOOD_CARD, checkout_body};
use crate::process::{MallUp, json_ok, shopper};

/// `mall up` exporting every span to `receiver` (sampled always, sent every 100 ms).
async fn traced_mall(receiver: &Receiver) -> MallUp {
    let endpoint = receiver.endpoint();
    MallUp::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "mall-up"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await
}

/// The trace id of a `traceparent` header (`00-<trace id>-<span id>-<flags>`).
fn trace_id_of(response: &reqwest::Response) -> String {
    let header = response.headers().get("traceparent").expect("a traceparent header").to_str().unwrap();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16), "{header}");
    parts[1].to_owned()
}

/// The server span of `service` (`rpc.service` ends with it) named `method`, if any.
fn server_span<'a>(spans: &'a [ReceivedSpan], service: &str, method: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.kind == "server"
            && s.attribute("rpc.service").is_some_and(|n| n.ends_with(service))
            && s.attribute("rpc.method") == Some(method)
    })
}

/// Whether `ancestor` is above `span` in the tree `by_id`.
fn descends_from(by_id: &HashMap<&str, &ReceivedSpan>, span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut at = span.parent_span_id.as_deref();
    while let Some(id) = at {
        if id == ancestor.span_id {
            return true;
        }
        at = by_id.get(id).and_then(|s| s.parent_span_id.as_deref());
    }
    false
}

/// The nearest server span above `span`.
fn serving<'a>(by_id: &HashMap<&str, &'a ReceivedSpan>, span: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    let mut at = span.parent_span_id.as_deref();
    while let Some(id) = at {
        let parent = by_id.get(id)?;
        if parent.kind == "server" && parent.attribute("rpc.service").is_some() {
            return Some(parent);
        }
        at = parent.parent_span_id.as_deref();
    }
    None
}

#[tokio::test]
async fn one_checkout_is_one_trace_across_every_service() {
    let receiver = Receiver::start("127.0.0.1:0").await.unwrap();
    let mall = traced_mall(&receiver).await;
    let client = reqwest::Client::new();
    let base = &mall.url;
    let (email, token, _) = shopper(&client, &mall).await;

    let response = client
        .post(format!("{base}/checkout"))
        .bearer_auth(&token)
        .json(&checkout_body(GOOD_CARD))
        .send()
        .await
        .unwrap();
    let trace_id = trace_id_of(&response);
    let done = json_ok(response).await;
    assert!(done["data"]["transaction_id"].is_string() || done["data"]["transaction_id"].is_i64(), "{done}");

    let checkout_served = |spans: &[ReceivedSpan]| {
        spans.iter().any(|s| s.parent_span_id.is_none())
            && server_span(spans, "OrderService", "MarkPaid").is_some()
            && server_span(spans, "CartService", "EmptyCart").is_some()
    };
    let spans = receiver.wait_for_trace(&trace_id, Duration::from_secs(20), checkout_served).await;
    let tree = render_tree(&spans);
    eprintln!("trace {trace_id} of one checkout:\n{tree}");
    assert!(checkout_served(&spans), "the checkout's trace never arrived whole:\n{tree}");

    // The spans that settle after the response (a database statement's end) have arrived too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.trace(&trace_id);
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();

    // One root, the gateway's span of the request; every other span's parent is in the trace.
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root:\n{tree}");
    let root = roots[0];
    assert_eq!((root.name.as_str(), root.kind), ("POST /checkout", "server"), "{tree}");
    assert_eq!(root.attribute("http.response.status_code"), Some("200"), "{tree}");
    for span in &spans {
        if let Some(parent) = &span.parent_span_id {
            assert!(
                by_id.contains_key(parent.as_str()),
                "{} has a parent outside the trace:\n{tree}",
                span.name
            );
        }
    }
    // Every server span of an RPC hangs under the client span that called it (same method).
    for server in spans.iter().filter(|s| s.kind == "server" && s.attribute("rpc.system") == Some("grpc")) {
        let parent = by_id[server.parent_span_id.as_deref().expect("a parent")];
        assert_eq!((parent.kind, parent.name.as_str()), ("client", server.name.as_str()), "{tree}");
        assert_eq!(server.attribute("rpc.grpc.status_code"), Some("0"), "{} failed:\n{tree}", server.name);
    }

    // gateway → checkout → cart, product, order, payment; payment → order.
    let checkout = server_span(&spans, "CheckoutService", "Checkout").expect("checkout served");
    assert!(descends_from(&by_id, checkout, root), "{tree}");
    let mut hops = Vec::new();
    for service in ["CartService", "ProductService", "OrderService", "PaymentService"] {
        let served: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| {
                s.kind == "server" && s.attribute("rpc.service").is_some_and(|n| n.ends_with(service))
            })
            .collect();
        assert!(!served.is_empty(), "{service} took part:\n{tree}");
        for span in &served {
            assert!(descends_from(&by_id, span, checkout), "{} under the checkout:\n{tree}", span.name);
        }
        hops.extend(served);
    }
    let charge = server_span(&spans, "PaymentService", "Charge").expect("payment charged");
    let mark_paid = server_span(&spans, "OrderService", "MarkPaid").expect("order marked paid");
    assert!(descends_from(&by_id, mark_paid, charge), "payment → order:\n{tree}");
    assert!(
        spans.iter().any(|s| s.name == "card processor authorize"
            && s.attribute("payment.decision") == Some("approved")
            && descends_from(&by_id, s, charge)),
        "the card processor's span:\n{tree}"
    );
    // Payment marks the order paid; the saga does not ask again.
    let mark_paid = spans.iter().filter(|s| s.name.ends_with("OrderService/MarkPaid") && s.kind == "server");
    assert_eq!(mark_paid.count(), 1, "MarkPaid once:\n{tree}");
    for step in ["checkout place order", "checkout charge", "checkout empty cart"] {
        let span = spans.iter().find(|s| s.name == step).unwrap_or_else(|| panic!("no span {step}:\n{tree}"));
        assert_eq!(span.attribute("checkout.action"), step.strip_prefix("checkout "), "{tree}");
    }

    // Database statements under the services that ran them, with no bound values.
    let db_spans: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.attribute("db.system").is_some()).collect();
    for service in ["CheckoutService", "CartService", "OrderService", "PaymentService", "ProductService"] {
        assert!(
            db_spans.iter().any(|s| serving(&by_id, s)
                .is_some_and(|server| server.attribute("rpc.service").is_some_and(|n| n.ends_with(service)))),
            "a database statement under {service}:\n{tree}"
        );
    }
    for span in &db_spans {
        assert_eq!(span.attribute("db.system"), Some("sqlite"), "{tree}");
        assert!(span.attribute("db.operation").is_some_and(|op| !op.is_empty()), "{tree}");
        let text = format!("{:?}", span.attributes);
        assert!(!text.contains("4111") && !text.contains(&email), "no bound values: {text}");
    }

    let (status, _) = mall.stop();
    assert!(status.success());
}

#[tokio::test]
async fn a_client_traceparent_is_continued_and_a_malformed_one_ignored() {
    let receiver = Receiver::start("127.0.0.1:0").await.unwrap();
    let mall = traced_mall(&receiver).await;
    let client = reqwest::Client::new();
    let url = format!("{}/products/list", mall.url);

    // Continued: the same trace id comes back, and the gateway's span is a child of the client's.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let response = client
        .get(&url)
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(trace_id_of(&response), client_trace);
    let returned = response.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(!returned.contains(client_span), "the gateway answers with its own span id: {returned}");
    let spans = receiver
        .wait_for_trace(client_trace, Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "GET /products/list")
        })
        .await;
    let gateway = spans.iter().find(|s| s.name == "GET /products/list").expect("the gateway's span");
    assert_eq!(gateway.parent_span_id.as_deref(), Some(client_span), "{}", render_tree(&spans));
    assert!(returned.contains(&gateway.span_id), "{returned} names the gateway's span");

    // Malformed or invalid: ignored, the request served, a new trace started and exported.
    for bad in [
        "garbage",
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let response = client.get(&url).header("traceparent", bad).send().await.unwrap();
        assert_eq!(response.status(), 200, "{bad}");
        let trace_id = trace_id_of(&response);
        assert_ne!(trace_id, "0".repeat(32), "{bad}");
        assert!(!bad.contains(&trace_id), "{bad} was not continued");
        let spans = receiver
            .wait_for_trace(&trace_id, Duration::from_secs(20), |s| {
                s.iter().any(|s| s.name == "GET /products/list")
            })
            .await;
        let gateway = spans.iter().find(|s| s.name == "GET /products/list").expect("the new trace");
        assert_eq!(gateway.parent_span_id, None, "{bad}: a new root");
    }

    // Not sampled by the client: continued all the way (the same trace id comes back, flagged not
    // sampled), and nothing of it recorded. No service may start a trace of its own for it: every
    // root the receiver has is the gateway's.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let response = client
        .get(&url)
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(trace_id_of(&response), unsampled);
    assert!(response.headers()["traceparent"].to_str().unwrap().ends_with("-00"));
    // A sampled request after it, to know that what came before has been exported too.
    let response = client.get(&url).send().await.unwrap();
    let last = trace_id_of(&response);
    receiver
        .wait_for_trace(&last, Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name.ends_with("ListProducts") && s.kind == "server")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.trace(unsampled).is_empty(), "{}", render_tree(&receiver.trace(unsampled)));
    let services_roots: Vec<String> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.parent_span_id.is_none() && s.kind == "server" && s.name.starts_with("mall."))
        .map(|s| s.name)
        .collect();
    assert!(services_roots.is_empty(), "services started traces of their own: {services_roots:?}");

    let (status, _) = mall.stop();
    assert!(status.success());
}
