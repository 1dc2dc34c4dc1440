//! What every Mall service runs on: tracing (one trace per request, see [`trace`]), graceful shutdown after a drain, serving gRPC with health
//! and HTTP probes on one port, metrics, channels to peers, the deadline every request carries
//! through them, and bounded work.

mod deadline;
mod grpc;
pub mod identity;
mod peer;
mod retry_safe;
mod shutdown;
mod telemetry;
pub mod trace;
mod work;

pub use deadline::{deadline, keep_deadline, remaining, with_deadline};
pub use grpc::{Readiness, ReadyCheck, Served, bind, serve};
pub use identity::{Access, Identity};
pub use peer::{
    DnsResolver, PeerChannel, RESOLVE_INTERVAL, Resolution, Resolver, UNSCOPED_CALL_TIMEOUT,
    balanced_channel, channel,
};
pub use retry_safe::is_retry_safe;
pub use shutdown::{DEFAULT_GRACE, Shutdown};
pub use telemetry::{TRACE_ONLY, flush_tracing, init_tracing, metrics_handle};
pub use tokio_util::sync::CancellationToken;
pub use work::{WorkError, WorkLimit, available_cpus};

/// Errors of the runtime layer; binaries wrap them with context.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("bad peer address {addr:?}: {reason}")]
    PeerAddress { addr: String, reason: String },
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Resolves when the process is asked to stop: Ctrl-C or SIGTERM (what Kubernetes sends).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
