//! Request bodies: JSON everywhere, and form fields where the old clients sent them. Every way a body
//! can be wrong becomes a 4xx in the envelope, never a bare axum rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body, or an `application/x-www-form-urlencoded` one with the same field names.
pub struct JsonOrForm<T>(pub T);

enum Kind {
    Json,
    Form,
}

fn kind_of(req: &Request) -> Option<Kind> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Kind::Json),
        "application/x-www-form-urlencoded" => Some(Kind::Form),
        _ => None,
    }
}

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadBody(format!("the body could not be read: {rejection}"))
        }
    })
}

fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        // Well-formed JSON with a missing or mistyped field.
        serde_json::error::Category::Data => ApiError::InvalidInput(format!("invalid body: {e}")),
        _ => ApiError::BadBody(format!("the body is not valid JSON: {e}")),
    })
}

fn from_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| ApiError::InvalidInput(format!("invalid body: {e}")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = kind_of(&req).ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "send the body as application/json or application/x-www-form-urlencoded".into(),
            )
        })?;
        let body = bytes(req, state).await?;
        match kind {
            Kind::Json => from_json(&body).map(JsonOrForm),
            Kind::Form => from_form(&body).map(JsonOrForm),
        }
    }
}
