//! `trace::start` decides whether a request is sampled before it makes the request's span, with the
//! sampler the SDK uses, so that an unsampled request costs OpenTelemetry nothing. Under a
//! parent-based ratio sampler: a request that begins a trace keeps the trace id its span was given,
//! sampled or not; a sampled one is OpenTelemetry's own span with that context (one decision, not
//! two); an unsampled one never reaches OpenTelemetry; a caller's decision is followed either way.
//!
//! The tracer is process-wide and configured from the environment, so the checks run in a process of
//! their own: this test starts itself again with the variables set.

use std::process::Command;

use http::{HeaderMap, HeaderValue};
use mall_runtime::trace;
use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const CHILD: &str = "MALL_SAMPLING_TEST_CHILD";
const TEST: &str = "each_request_is_sampled_once_under_the_trace_id_it_was_given";

#[test]
fn each_request_is_sampled_once_under_the_trace_id_it_was_given() {
    if std::env::var_os(CHILD).is_some() {
        return checks();
    }
    let mut child = Command::new(std::env::current_exe().expect("the test binary"));
    child.args(["--exact", TEST, "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            child.env_remove(name);
        }
    }
    // Nothing listens on the discard port: the few sampled spans are never delivered, which is fine.
    let output = child
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.5")
        .env("RUST_LOG", "off")
        .output()
        .expect("run the checks in a process of their own");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the checks did not run: {text}");
}

/// Starts a request continuing `parent`; returns the trace id its span was given, its context, and the
/// context of its span as OpenTelemetry sees it (empty when OpenTelemetry never saw the span).
fn request(parent: Context) -> (TraceId, Context, Context) {
    let mut given = None;
    let (span, cx) = trace::start(parent, "GET /things/{id}", |trace_id| {
        given = trace_id;
        tracing::info_span!(target: "mall_sampling_test", "request")
    });
    let seen = span.context();
    (given.expect("a trace id while OpenTelemetry is on"), cx, seen)
}

fn checks() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _in_runtime = runtime.enter();
    mall_runtime::init_tracing();

    let (mut sampled, total) = (0, 400);
    for _ in 0..total {
        let (given, cx, seen) = request(Context::new());
        let own = cx.span().span_context().clone();
        assert!(own.is_valid(), "{own:?}");
        assert_eq!(own.trace_id(), given, "the span's logs would name another trace");
        if own.is_sampled() {
            sampled += 1;
            assert_eq!(seen.span().span_context(), &own, "a sampled request is OpenTelemetry's span");
        } else {
            assert!(!seen.span().span_context().is_valid(), "an unsampled request reached OpenTelemetry");
        }
    }
    // Binomial(400, 0.5): outside 140..=260 less than once in 10^9 runs.
    assert!((140..=260).contains(&sampled), "{sampled} of {total} sampled at ratio 0.5");

    for (flags, sampled) in [("01", true), ("00", false)] {
        let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = HeaderMap::new();
        let traceparent = format!("00-{caller}-00f067aa0ba902b7-{flags}");
        headers.insert("traceparent", HeaderValue::from_str(&traceparent).expect("a header"));
        let (given, cx, seen) = request(trace::extract_context(&headers));
        let own = cx.span().span_context().clone();
        assert_eq!(given.to_string(), caller);
        assert_eq!(own.trace_id().to_string(), caller);
        assert_ne!(own.span_id().to_string(), "00f067aa0ba902b7", "a span of its own");
        assert_eq!(own.is_sampled(), sampled, "{traceparent}");
        assert_eq!(seen.span().span_context().is_valid(), sampled, "{traceparent}");
    }
}
