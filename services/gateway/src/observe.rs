//! What the gateway records of each request: its span (which starts or continues the client's W3C
//! trace, and whose context every service call carries on), its request id, and its RED metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use mall_runtime::trace::{self, REQUEST_ID_HEADER};
use tracing::Instrument;

/// Drops a client's `x-request-id` that is not a short printable token, so that a fresh one is made
/// (logs and metadata carry only ids that are safe to print).
pub(crate) async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    if req.headers().get(REQUEST_ID_HEADER).is_some_and(|v| trace::usable_request_id(v).is_none()) {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(req).await
}

/// Serves the request in its span, under its request id, and answers with `traceparent` next to
/// `x-request-id`. A client's `traceparent` is continued (a malformed one is ignored and a new trace
/// begins). Counts the request in `mall_http_requests_total{method,route,status}`,
/// `mall_http_request_duration_seconds{method,route}` and `mall_http_requests_in_flight`.
pub(crate) async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let request_id = req.headers().get(REQUEST_ID_HEADER).cloned();
    let name = format!("{method} {}", route.as_deref().unwrap_or("unmatched"));
    let (span, cx) = trace::start(trace::extract_context(req.headers()), &name, |trace_id| {
        tracing::info_span!(
            "request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = route.as_deref().unwrap_or("unmatched"),
            http.response.status_code = tracing::field::Empty,
            path = %req.uri().path(),
            request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            trace_id = trace_id.map(tracing::field::display),
        )
    });

    let in_flight = InFlight::enter();
    let started = Instant::now();
    let served = trace::in_trace(cx.clone(), next.run(req).instrument(span.clone()));
    let mut response = match request_id {
        Some(id) => trace::with_request_id(id, served).await,
        None => served.await,
    };
    drop(in_flight);

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::error!(parent: &span, status = status.as_u16(), "request failed");
    }
    trace::inject(&cx, response.headers_mut());
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let method = method.to_string();
    metrics::counter!("mall_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("mall_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A request in flight, for `mall_http_requests_in_flight` (counted out even when the client goes
/// away mid-request and the future is dropped).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> InFlight {
        let gauge = metrics::gauge!("mall_http_requests_in_flight");
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
