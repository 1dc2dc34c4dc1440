//! Serving a service: its gRPC API, the standard gRPC health service, and plain HTTP `/healthz`,
//! `/readyz` and `/metrics` on the same port (HTTP/1.1 is accepted next to HTTP/2).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::identity::CALLER_HEADER;
use crate::{Access, RuntimeError, Shutdown};

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
    /// Stops this server (see [`Served::stop`]).
    pub shutdown: Shutdown,
}

impl Served {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Begins this server's shutdown and waits until it has stopped.
    pub async fn stop(self) -> Result<(), RuntimeError> {
        self.shutdown.begin();
        self.task.await?
    }
}

/// Refuses, with PERMISSION_DENIED, a call to the service whose caller `access` does not let through.
async fn check_caller(
    axum::extract::State(access): axum::extract::State<Access>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match access.check(request.uri().path(), request.headers().get(CALLER_HEADER)) {
        Ok(()) => next.run(request).await,
        Err(status) => status.into_http(),
    }
}

/// Serves `server` (the service's gRPC API) on `listener`, with the gRPC health service and HTTP
/// `/healthz`, `/readyz` and `/metrics`; `access` says who may call the API. When the shutdown begins, health turns NOT_SERVING (for "" and
/// the service's name) and `/readyz` answers 503 while calls are still served for the drain delay;
/// then the listener closes and calls in flight get the grace period to finish.
pub async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    server: S,
    readiness: Readiness,
    access: Access,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, RuntimeError>
where
    S: Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let shutdown = shutdown.into();
    let addr =
        listener.local_addr().map_err(|source| RuntimeError::Bind { addr: name.to_owned(), source })?;
    crate::metrics_handle();
    let (reporter, health) = tonic_health::server::health_reporter();
    let services = ["", S::NAME];
    for service in services {
        reporter.set_service_status(service, ServingStatus::Serving).await;
    }

    let mut routes = Routes::new(server).add_service(health);
    let router = std::mem::take(routes.axum_router_mut());
    let probes = readiness.clone();
    let draining = shutdown.clone();
    *routes.axum_router_mut() = router
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let probes = probes.clone();
                let draining = draining.clone();
                async move {
                    if draining.is_draining() {
                        return (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned());
                    }
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
        .layer(axum::middleware::from_fn_with_state(access, check_caller))
        .layer(axum::middleware::from_fn(crate::deadline::scope_incoming))
        .layer(axum::middleware::from_fn_with_state(name, crate::trace::observe_incoming));

    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let drained = async {
            stop.token().cancelled().await;
            for service in services {
                reporter.set_service_status(service, ServingStatus::NotServing).await;
            }
            tracing::info!(service = name, drain = ?stop.drain(), "draining");
            stop.drained().await;
            tracing::info!(service = name, "no longer accepting connections");
        };
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_connection_age(Duration::from_secs(300))
            .add_routes(routes)
            // The builder's `tcp_nodelay` applies only to listeners it binds itself: without this,
            // an answer written in two segments waited ~40 ms for the peer's delayed ACK (bench/README.md).
            .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), drained);
        let result = match stop.within_grace(server).await {
            Some(result) => result.map_err(RuntimeError::from),
            None => {
                let grace = stop.grace();
                tracing::warn!(service = name, ?grace, "calls still in flight after the grace period");
                Ok(())
            }
        };
        tracing::info!(service = name, "stopped");
        result
    });
    tracing::info!(service = name, %addr, "serving gRPC");
    Ok(Served { name, addr, task, shutdown })
}
