//! What happens to every request around its route: its request id, its span (which starts or
//! continues the client's W3C trace, and whose context every service call carries on), its time
//! budget, its RED metrics, and the headers every response carries.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use mall_runtime::trace::{self, REQUEST_ID_HEADER};
use tracing::Instrument;

use crate::AppState;

/// Around every request:
/// - its `x-request-id`: the client's if it is a short printable token (logs and metadata carry only
///   ids that are safe to print), else a fresh UUID; the response echoes it;
/// - its span, in which it is served; the response carries `traceparent`. A client's `traceparent` is
///   continued (a malformed one is ignored and a new trace begins);
/// - its budget (`Config::request_timeout`): every gRPC call made for it carries the time left;
/// - `mall_http_requests_total{method,route,status}`, `mall_http_request_duration_seconds{method,route}`
///   and `mall_http_requests_in_flight`;
/// - responses carry personal data: they are not to be sniffed into another type or kept by caches;
/// - while the gateway drains, every HTTP/1 response closes its connection, so that keep-alive clients
///   open their next one to another gateway (HTTP/2 has no such header; its clients get GOAWAY when
///   the drain ends).
pub(crate) async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = match req.headers().get(REQUEST_ID_HEADER) {
        Some(v) if trace::usable_request_id(v).is_some() => v.clone(),
        _ => {
            let fresh = HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value");
            req.headers_mut().insert(REQUEST_ID_HEADER, fresh.clone());
            fresh
        }
    };
    let http1 = req.version() <= Version::HTTP_11;
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = req.method().clone();
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
            request_id = request_id.to_str().unwrap_or("-"),
            trace_id = trace_id.map(tracing::field::display),
        )
    });

    let in_flight = InFlight::enter();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let served = mall_runtime::with_deadline(deadline, next.run(req));
    let served = trace::in_trace(cx.clone(), served.instrument(span.clone()));
    let mut response = trace::with_request_id(request_id.clone(), served).await;
    drop(in_flight);

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        tracing::error!(parent: &span, status = status.as_u16(), "request failed");
    }
    let headers = response.headers_mut();
    trace::inject(&cx, headers);
    headers.entry(REQUEST_ID_HEADER).or_insert(request_id);
    headers.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if http1 && state.shutdown.is_draining() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
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
