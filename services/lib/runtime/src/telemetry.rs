//! Structured logs with `tracing`, and the process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// The process-wide metrics recorder, installed on first use; render it for `/metrics`.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
