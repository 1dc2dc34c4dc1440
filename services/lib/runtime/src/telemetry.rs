//! Structured logs with `tracing`, and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `MALL_LOG_FORMAT=json` switches
/// from human-readable lines to one JSON object per event. Calling it twice is harmless.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MALL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry.with(fmt::layer().json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
    // Already installed (tests start many services in one process): keep the first.
    let _ = result;
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
