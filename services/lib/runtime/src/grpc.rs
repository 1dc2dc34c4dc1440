//! Serving a service: its gRPC API, the standard gRPC health service, and plain HTTP `/healthz`,
//! `/readyz` and `/metrics` on the same port (HTTP/1.1 is accepted next to HTTP/2).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::RuntimeError;

/// A dependency check for `/readyz`: `Err` carries a short reason.
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What a service must have reachable to be ready.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, ReadyCheck)>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn check<F, Fut>(mut self, name: &'static str, f: F) -> Readiness
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(f()))));
        self
    }

    /// Runs every check (each bounded to 2 s); the failures, by name.
    pub async fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for (name, check) in &self.checks {
            match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => failed.push(format!("{name}: {reason}")),
                Err(_) => failed.push(format!("{name}: timed out")),
            }
        }
        failed
    }
}

/// Binds a listener; `127.0.0.1:0` picks a free port (tests, `mall up`).
pub async fn bind(addr: &str) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr).await.map_err(|source| RuntimeError::Bind { addr: addr.to_owned(), source })
}

/// A running server.
pub struct Served {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub task: JoinHandle<Result<(), RuntimeError>>,
}

impl Served {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Serves `routes` (the service's gRPC servers) on `listener` until `shutdown` is cancelled, then
/// drains in-flight calls. The gRPC health service reports SERVING while the server runs.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<Served, RuntimeError> {
    let addr =
        listener.local_addr().map_err(|source| RuntimeError::Bind { addr: name.to_owned(), source })?;
    crate::metrics_handle();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;

    let mut routes = routes.add_service(health);
    let router = std::mem::take(routes.axum_router_mut());
    let probes = readiness.clone();
    *routes.axum_router_mut() = router
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let probes = probes.clone();
                async move {
                    let failed = probes.failures().await;
                    if failed.is_empty() {
                        (StatusCode::OK, "ready".to_owned())
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, failed.join("\n"))
                    }
                }
            }),
        )
        .route("/metrics", get(|| async { crate::metrics_handle().render() }))
        .layer(axum::middleware::from_fn(crate::deadline::scope_incoming));

    let task = tokio::spawn(async move {
        let stop = shutdown.clone();
        let result = tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .max_connection_age(Duration::from_secs(300))
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                stop.cancelled().await;
                reporter.set_service_status("", ServingStatus::NotServing).await;
            })
            .await;
        tracing::info!(service = name, "stopped");
        result.map_err(RuntimeError::from)
    });
    tracing::info!(service = name, %addr, "serving gRPC");
    Ok(Served { name, addr, task })
}
