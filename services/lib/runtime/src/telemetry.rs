//! Structured logs with `tracing`, OpenTelemetry spans over OTLP, and the process-wide Prometheus
//! recorder.
//!
//! Spans always carry a W3C trace context, so that the trace id of a request reaches every hop and
//! every log line. They are recorded and exported only when an OTLP endpoint is configured with the
//! standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; then
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` apply as the SDK reads
//! them). Without one, every span is dropped at its start (no attributes kept, nothing exported);
//! `OTEL_SDK_DISABLED=true` leaves OpenTelemetry out altogether (no trace ids, no `traceparent`).

use std::sync::{Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context as FilterContext, Filter};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::trace::{ChosenIds, Sampler};

/// The target of spans that only OpenTelemetry sees (a database statement, a cache call, a call to a
/// peer): log lines carry the fields of the request's span, not of these.
pub const TRACE_ONLY: &str = "mall::trace";

/// The provider the global tracer comes from, kept to flush it at exit.
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Installs the global subscriber: `RUST_LOG` filters log lines (default `info`), `MALL_LOG_FORMAT=json`
/// switches from human-readable lines to one JSON object per event; OpenTelemetry as the module says.
/// Installs the metrics recorder too, before anything records: a metric handle taken earlier (a pool's
/// gauges, made when its database connects) would stay bound to the no-op recorder for good.
/// Call it from inside a Tokio runtime (the OTLP exporter is a tonic client). Calling it twice is
/// harmless: the first call wins.
pub fn init_tracing() {
    metrics_handle();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(format!("{TRACE_ONLY}=off").parse().expect("a valid directive"));
    let json = std::env::var("MALL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let lines = if json {
        fmt::layer().json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt::layer().compact().with_filter(filter).boxed()
    };
    let tracer = (!sdk_disabled()).then(|| {
        let provider = provider();
        let tracer = provider.tracer("mall");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        *PROVIDER.lock().unwrap_or_else(PoisonError::into_inner) = Some(provider);
        tracer
    });
    let spans = tracer.is_some();
    let otel = tracer
        .map(|tracer| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                // Neither is needed, and each costs on every poll of every instrumented future: the
                // busy/idle timings take the clock at each enter and exit, and activation attaches the
                // span's context to the thread at each enter. Parents are found through `tracing`'s
                // own current span.
                .with_tracked_inactivity(false)
                .with_context_activation(false)
        })
        .with_filter(Exported { spans, statements: false });
    let statements = mall_storage::telemetry::layer().with_filter(Exported { spans, statements: true });
    // Already installed (tests start many services in one process): keep the first.
    let _ = tracing_subscriber::registry().with(lines).with(otel).with(statements).try_init();
}

/// What the layers that feed OpenTelemetry see (the spans layer, and the statements' layer with
/// `statements`): our own spans and events (crates named `mall…`, INFO and above), the trace-only spans
/// and sqlx's statement events, all only while the request being served is recorded
/// ([`crate::trace::recording`]; [`crate::trace::start`] decides that before it makes the request's
/// span), so that a trace that is not sampled costs OpenTelemetry nothing; the statements' layer also
/// sees every pool acquisition (a metric). Without OpenTelemetry (`spans` false) the layer is absent
/// but this filter stays, enabling nothing: a bare `None` layer would make every callsite of every
/// crate "sometimes" enabled, so that each of hyper's and h2's disabled trace events went through the
/// whole filter chain (measured: a product read a third slower than with OpenTelemetry on).
struct Exported {
    spans: bool,
    statements: bool,
}

impl Exported {
    /// The answer when the callsite alone decides; `None` when it depends on the request.
    fn by_callsite(&self, meta: &Metadata<'_>) -> Option<bool> {
        let target = meta.target();
        if self.statements && target == mall_storage::telemetry::ACQUIRE_TARGET {
            return Some(true);
        }
        if !self.spans {
            return Some(false);
        }
        let ours = target == TRACE_ONLY
            || (self.statements && target == mall_storage::telemetry::STATEMENT_TARGET)
            || (target.starts_with("mall") && *meta.level() <= Level::INFO);
        if ours { None } else { Some(false) }
    }
}

impl<S> Filter<S> for Exported {
    fn enabled(&self, meta: &Metadata<'_>, _: &FilterContext<'_, S>) -> bool {
        self.by_callsite(meta).unwrap_or_else(crate::trace::recording)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        match self.by_callsite(meta) {
            Some(true) => Interest::always(),
            Some(false) => Interest::never(),
            None => Interest::sometimes(),
        }
    }
}

/// Sends the spans not exported yet (call it before the process exits). Without an exporter, a no-op.
pub fn flush_tracing() {
    let provider = PROVIDER.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(provider) = provider
        && let Err(e) = provider.force_flush()
    {
        tracing::warn!(error = %e, "could not export the last spans");
    }
}

fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether an OTLP endpoint for traces is configured.
fn endpoint_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// A provider that exports over OTLP/gRPC with the sampler the environment names, when an endpoint is
/// configured; otherwise one that makes trace contexts and records nothing. Its sampler is the one
/// [`crate::trace::start`] asks before a request's span is made.
fn provider() -> SdkTracerProvider {
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.trim().is_empty());
    let resource =
        opentelemetry_sdk::Resource::builder().with_service_name(name.unwrap_or_else(|| "mall".into()));
    let builder =
        SdkTracerProvider::builder().with_resource(resource.build()).with_id_generator(ChosenIds::default());
    let exporter =
        endpoint_configured().then(|| opentelemetry_otlp::SpanExporter::builder().with_tonic().build());
    let (builder, sampler) = match exporter {
        None => (builder, Sampler::always_off()),
        // The sampler is the SDK's default: OTEL_TRACES_SAMPLER(_ARG), else parent-based always-on.
        Some(Ok(exporter)) => (builder.with_batch_exporter(exporter), Sampler::from_env()),
        Some(Err(e)) => {
            eprintln!("OpenTelemetry: cannot export spans ({e}); tracing continues without exporting");
            (builder, Sampler::always_off())
        }
    };
    sampler.install();
    builder.with_sampler(sampler).build()
}

/// Bucket bounds (seconds) of every histogram named `*_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 12] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide metrics recorder, installed on first use; render it for `/metrics`. Histograms
/// named `*_duration_seconds` are rendered with [`DURATION_BUCKETS`] (so they aggregate across pods),
/// others as summaries.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), &DURATION_BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_histograms_with_buckets() {
        let handle = super::metrics_handle();
        metrics::histogram!("mall_runtime_test_duration_seconds").record(0.02);
        let text = handle.render();
        assert!(text.contains("# TYPE mall_runtime_test_duration_seconds histogram"), "{text}");
        assert!(text.contains("mall_runtime_test_duration_seconds_bucket{le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("mall_runtime_test_duration_seconds_count 1"), "{text}");
    }
}
