//! Operations: liveness, readiness, metrics, and the API's own description.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use mall_proto::health::pb::HealthCheckRequest;
use mall_proto::health::pb::health_client::HealthClient;
use serde_json::json;

use std::sync::OnceLock;

use crate::AppState;
use crate::error::CODES;

const OPENAPI: &str = include_str!("../../openapi.json");
const DOCS: &str = include_str!("../../docs.html");

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "code": 0, "msg": "ok", "data": { "status": "alive" } }))
}

/// Ready when every service the gateway calls answers its gRPC health check and the cache answers.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut failed = Vec::new();
    for (name, channel) in state.peers.iter() {
        let mut client = HealthClient::new(channel.clone());
        let check = client.check(HealthCheckRequest { service: String::new() });
        match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
            Ok(Ok(r)) if r.get_ref().status == 1 => {}
            Ok(Ok(_)) => failed.push(format!("{name}: not serving")),
            Ok(Err(s)) => failed.push(format!("{name}: {}", s.message())),
            Err(_) => failed.push(format!("{name}: timed out")),
        }
    }
    if let Err(e) = state.cache.ping().await {
        failed.push(format!("cache: {e}"));
    }
    if failed.is_empty() {
        (StatusCode::OK, axum::Json(json!({ "code": 0, "msg": "ok", "data": { "status": "ready" } })))
    } else {
        let body = json!({ "code": 50301, "msg": format!("not ready: {}", failed.join("; ")), "data": null });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
    }
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
