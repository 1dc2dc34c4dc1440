//! Operations: liveness, readiness, metrics, and the API's own description.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::json;

use std::sync::OnceLock;

use crate::AppState;
use crate::error::{ApiError, CODES};

const OPENAPI: &str = include_str!("../../openapi.json");
const DOCS: &str = include_str!("../../docs.html");

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "code": 0, "msg": "ok", "data": { "status": "alive" } }))
}

/// Ready when this gateway can serve: it is not draining and its cache answers. The services it calls
/// are not its readiness: one that is down fails only the routes that need it (503 naming it), and
/// failing every gateway's readiness for it would take the whole API down with it.
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.shutdown.is_draining() {
        return Err(ApiError::Draining);
    }
    if let Err(e) = state.cache.ping().await {
        tracing::warn!(error = %e, "not ready: the cache does not answer");
        return Err(ApiError::Unavailable("not ready: the cache is unavailable".into()));
    }
    Ok(axum::Json(json!({ "code": 0, "msg": "ok", "data": { "status": "ready" } })))
}

pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], mall_runtime::metrics_handle().render())
}

/// The OpenAPI document, with the error codes filled in from the one list in `error.rs`.
pub fn openapi_document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON");
        let codes: serde_json::Map<String, serde_json::Value> =
            CODES.iter().map(|(code, meaning)| (code.to_string(), json!(meaning))).collect();
        doc["x-error-codes"] = serde_json::Value::Object(codes);
        doc.to_string()
    })
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_document())
}

pub async fn docs() -> Html<&'static str> {
    Html(DOCS)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn the_documented_order_statuses_are_the_ones_orders_have() {
        let doc: Value = serde_json::from_str(super::OPENAPI).unwrap();
        let documented = &doc["components"]["schemas"]["Order"]["properties"]["status"]["enum"];
        let statuses: Vec<&str> = mall_domain::OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(documented, &json!(statuses));
    }
}
