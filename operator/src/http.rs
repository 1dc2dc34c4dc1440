//! The operator's own HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// What the probes report on.
#[derive(Default)]
pub struct Health {
    /// Set once the API server was reached; a standby replica is ready too.
    pub ready: AtomicBool,
}

/// The endpoints; `/metrics` renders the process-wide recorder (installed here if nothing did yet).
pub fn app(health: Arc<Health>) -> Router {
    crate::metrics::install();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route("/metrics", get(|| async { crate::metrics::render() }))
        .with_state(health)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let health = Arc::new(Health::default());
        assert_eq!(get(app(health.clone()), "/healthz").await, (StatusCode::OK, "ok".into()));
        assert_eq!(get(app(health.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(app(health.clone()), "/readyz").await.0, StatusCode::OK);
        crate::metrics::failed("http_test", "forbidden");
        let (status, text) = get(app(health), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(
                "mall_operator_reconcile_failures_total{error=\"http_test\",reason=\"forbidden\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("mall_operator_reconciles_total"), "{text}");
    }
}
