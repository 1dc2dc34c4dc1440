//! What every Mall service runs on: tracing, graceful shutdown, serving gRPC with health and HTTP
//! probes on one port, metrics, channels to peers, and bounded work.

mod grpc;
mod peer;
mod telemetry;
mod work;

pub use grpc::{Readiness, ReadyCheck, Served, bind, serve};
pub use peer::{DnsResolver, RESOLVE_INTERVAL, Resolution, Resolver, balanced_channel, channel};
pub use telemetry::{init_tracing, metrics_handle};
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
