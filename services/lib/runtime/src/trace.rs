//! The request's trace across hops: W3C trace context and the request id in every call's metadata,
//! a span and the RED metrics for every call a service serves.
//!
//! The gateway starts or continues the trace of each HTTP request and names the request
//! (`x-request-id`). Every call through a [`crate::PeerChannel`] makes a client span and sends its
//! context as `traceparent` (and `tracestate`) with the request id; every server (a layer that
//! [`crate::serve`] puts in front of each service) continues that trace in its own span, whose fields
//! (`request_id`, `trace_id`) appear on every log line written while the call is served.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};
use tonic::Code;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and gRPC metadata key) that names a request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id passed on; a longer (or non-printable) one is replaced by nothing.
const MAX_REQUEST_ID: usize = 128;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
    /// The trace context of the request this task serves: its request span's.
    static TRACE: Context;
}

/// Whether the spans made now would be recorded: false while serving a request whose trace was not
/// sampled, so that the spans only OpenTelemetry sees ([`crate::TRACE_ONLY`]) and the statements' spans
/// are not made at all. Outside a request, true (a span made there is sampled on its own).
pub fn recording() -> bool {
    TRACE.try_with(|cx| cx.span().span_context().is_sampled()).unwrap_or(true)
}

/// The trace context of the request this task serves (see [`in_trace`]).
pub fn request_context() -> Option<Context> {
    TRACE.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the trace `cx` (the context of the request's span, from [`begin`]).
pub async fn in_trace<F: Future>(cx: Context, work: F) -> F::Output {
    TRACE.scope(cx, work).await
}

/// The sampler of this process (the SDK's, as the `OTEL_TRACES_SAMPLER*` variables configure it), set
/// by [`crate::init_tracing`] when OpenTelemetry is on.
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

thread_local! {
    /// The trace id [`start`] chose for a sampled request that begins a trace, for the SDK to take when
    /// it makes that request's span (see [`ChosenIds`]).
    static CHOSEN_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The process's sampler, shared by the tracer provider and [`start`] so that both decide alike.
#[derive(Clone, Debug)]
pub(crate) struct Sampler(Arc<dyn ShouldSample>);

impl Sampler {
    /// The sampler the SDK would build from the environment (parent-based always-on by default).
    pub(crate) fn from_env() -> Sampler {
        Sampler(Arc::from(opentelemetry_sdk::trace::Config::default().sampler))
    }

    /// A sampler that records nothing (no endpoint to export to).
    pub(crate) fn always_off() -> Sampler {
        Sampler(Arc::new(opentelemetry_sdk::trace::Sampler::AlwaysOff))
    }

    /// Makes it the one [`start`] asks (the first call wins).
    pub(crate) fn install(&self) {
        let _ = SAMPLER.set(self.clone());
    }
}

impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        self.0.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// Random ids, except the trace id [`start`] chose for the span being made on this thread.
#[derive(Debug, Default)]
pub(crate) struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN_TRACE_ID.take().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Starts serving a request named `name` (the span's `otel.name`) in the span `make_span` makes from
/// the trace id, continuing the trace of `parent` (a context from [`extract_context`]; an empty one
/// begins a new trace). Returns the span and its context, to run the request [`in_trace`].
///
/// Whether the trace is sampled is decided first: a request that is not is served in a span
/// OpenTelemetry never sees (its context, with a trace id and a span id of its own, is made here and
/// still passed on), so that sampling 0 costs next to nothing. `make_span` must make an INFO span of a
/// `mall` crate, and gets no trace id when OpenTelemetry is off.
pub fn start(
    parent: Context,
    name: &str,
    make_span: impl FnOnce(Option<TraceId>) -> tracing::Span,
) -> (tracing::Span, Context) {
    let Some(sampler) = SAMPLER.get() else {
        return (make_span(None), Context::new());
    };
    let parent_span = parent.span();
    let parent_context = parent_span.span_context();
    let has_parent = parent_context.is_valid();
    let ids = RandomIdGenerator::default();
    let trace_id = if has_parent { parent_context.trace_id() } else { ids.new_trace_id() };
    let decided = sampler.should_sample(Some(&parent), trace_id, name, &SpanKind::Server, &[], &[]);
    if decided.decision == SamplingDecision::Drop {
        let own =
            SpanContext::new(trace_id, ids.new_span_id(), TraceFlags::default(), false, decided.trace_state);
        let cx = parent.with_remote_span_context(own);
        let span = TRACE.sync_scope(cx.clone(), || make_span(Some(trace_id)));
        return (span, cx);
    }
    // Outside a request's scope every span is recorded: this one goes to OpenTelemetry, whose SDK
    // decides again, alike (same sampler, parent and trace id).
    let span = make_span(Some(trace_id));
    // Fails only for a span OpenTelemetry does not see: nothing to continue then.
    let _ = span.set_parent(parent);
    if !has_parent {
        CHOSEN_TRACE_ID.set(Some(trace_id));
    }
    let cx = span.context();
    CHOSEN_TRACE_ID.take();
    (span, cx)
}

/// The id of the request this task serves, if it has one.
pub fn request_id() -> Option<HeaderValue> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the request named `id`: the calls it makes carry that id.
pub async fn with_request_id<F: Future>(id: HeaderValue, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// `work` with the request id of the current task, wherever it is polled (see
/// [`crate::keep_deadline`]).
pub(crate) fn keep_request_id<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let current = request_id();
    async move {
        match current {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}

/// A request id as given by a client: at most 128 printable ASCII characters, else none.
pub fn usable_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= MAX_REQUEST_ID && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

/// The trace context a caller sent in `headers` (`traceparent`, `tracestate`); an empty context when
/// there is none or it is malformed.
pub fn extract_context(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the context of `span` into `headers` (see [`inject`]).
pub fn inject_context(span: &tracing::Span, headers: &mut HeaderMap) {
    inject(&span.context(), headers);
}

/// Writes `cx` into `headers` as `traceparent` (and `tracestate`), for the next hop or for the client.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut HeaderInjector(headers)));
    // The propagator writes an empty `tracestate` when there is none: leave it out.
    if headers.get("tracestate").is_some_and(|v| v.is_empty()) {
        headers.remove("tracestate");
    }
}

/// `/package.Service/Method` split into the service and the method, when `path` is one of Mall's
/// methods (the labels of the metrics stay a fixed set whatever a caller sends).
fn known_method(path: &str) -> Option<(&str, &str)> {
    if !mall_proto::METHODS.contains(&path) {
        return None;
    }
    path.trim_start_matches('/').split_once('/')
}

/// The gRPC status of a response: from its headers when the call failed without a body (how unary
/// errors are sent), else OK (a unary success carries its status in the trailers).
pub(crate) fn response_code(response: &http::Response<impl Sized>) -> Code {
    response.headers().get("grpc-status").map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()))
}

/// The name Prometheus labels carry for `code` (as gRPC spells it: `NOT_FOUND`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a call that ended with `code` failed on the server's side (a span error; the client's
/// mistakes are not the server's errors).
pub(crate) fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// Writes the status `code` of a call into its span (an error status when the server failed).
pub(crate) fn record_code(span: &tracing::Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Calls of `service` in flight, for `mall_grpc_server_requests_in_flight`.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(service: &'static str) -> InFlight {
        let gauge = metrics::gauge!("mall_grpc_server_requests_in_flight", "service" => service);
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The server side (a layer of [`crate::serve`]): each call to one of Mall's methods is served in a
/// span that continues the caller's trace, under the caller's request id, and is counted in
/// `mall_grpc_server_requests_total{service,method,code}`,
/// `mall_grpc_server_request_duration_seconds{service,method}` and
/// `mall_grpc_server_requests_in_flight{service}`. Probes, health checks and unknown paths pass
/// through untouched.
pub(crate) async fn observe_incoming(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let Some((rpc_service, method)) = known_method(&path) else {
        return next.run(request).await;
    };
    let request_id =
        request.headers().get(REQUEST_ID_HEADER).filter(|v| usable_request_id(v).is_some()).cloned();
    let (span, cx) = start(extract_context(request.headers()), &path[1..], |trace_id| {
        tracing::info_span!(
            "rpc",
            otel.name = &path[1..],
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = rpc_service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            trace_id = trace_id.map(tracing::field::display),
        )
    });
    let _in_flight = InFlight::enter(service);
    let started = Instant::now();
    let served = in_trace(cx, next.run(request).instrument(span.clone()));
    let response = match request_id {
        Some(id) => REQUEST_ID.scope(id, served).await,
        None => served.await,
    };
    let code = response_code(&response);
    record_code(&span, code);
    let method = method.to_owned();
    metrics::counter!("mall_grpc_server_requests_total",
        "service" => service, "method" => method.clone(), "code" => code_name(code))
    .increment(1);
    metrics::histogram!("mall_grpc_server_request_duration_seconds", "service" => service, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mall_methods_are_labelled() {
        let path = mall_proto::METHODS[0];
        let (service, method) = known_method(path).unwrap();
        assert!(service.starts_with("mall.") && !method.is_empty(), "{service} {method}");
        assert_eq!(known_method("/mall.product.v1.ProductService/NoSuchMethod"), None);
        assert_eq!(known_method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(known_method("/metrics"), None);
    }

    #[test]
    fn request_ids_are_passed_on_only_when_short_and_printable() {
        let ok = HeaderValue::from_static("5f0c-req");
        assert_eq!(usable_request_id(&ok), Some("5f0c-req"));
        for bad in ["", "has space", &"x".repeat(129)] {
            assert_eq!(usable_request_id(&HeaderValue::from_str(bad).unwrap()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_unary_error_is_read_from_the_headers_and_a_success_is_ok() {
        let failed = tonic::Status::not_found("no").into_http::<tonic::body::Body>();
        assert_eq!(response_code(&failed), Code::NotFound);
        assert_eq!(response_code(&http::Response::new(())), Code::Ok);
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert!(is_server_error(Code::Internal) && !is_server_error(Code::InvalidArgument));
    }
}
