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

/// A JSON body only (routes whose bodies nest lists or objects).
pub struct JsonBody<T>(pub T);

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

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match kind_of(&req) {
            Some(Kind::Json) => from_json(&bytes(req, state).await?).map(JsonBody),
            _ => Err(ApiError::UnsupportedMediaType("send the body as application/json".into())),
        }
    }
}

/// Query parameters, with a malformed query string as a 400 in the envelope.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|e| ApiError::InvalidInput(format!("invalid query string: {e}")))
    }
}

/// `page` from 1 and `page_size` 1–100 (default 20), as the API's lists take them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageParams {
    pub page: Option<String>,
    pub page_size: Option<String>,
}

impl PageParams {
    pub fn parse(&self) -> Result<(i32, i32), ApiError> {
        let page = parse_bounded("page", self.page.as_deref(), 1, 1, i32::MAX)?;
        let page_size = parse_bounded("page_size", self.page_size.as_deref(), 20, 1, 100)?;
        Ok((page, page_size))
    }
}

fn parse_bounded(name: &str, raw: Option<&str>, default: i32, min: i32, max: i32) -> Result<i32, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(default) };
    match raw.parse::<i64>() {
        Ok(n) if (i64::from(min)..=i64::from(max)).contains(&n) => Ok(n as i32),
        Ok(_) if max == i32::MAX => Err(ApiError::InvalidInput(format!("{name} must be at least {min}"))),
        Ok(_) => Err(ApiError::InvalidInput(format!("{name} must be between {min} and {max}"))),
        Err(_) => Err(ApiError::InvalidInput(format!("{name} must be a whole number, not {raw:?}"))),
    }
}

/// An optional body: a request without a Content-Type has none; one with a Content-Type must be a
/// valid body.
impl<T: DeserializeOwned, S: Send + Sync> axum::extract::OptionalFromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <JsonOrForm<T> as FromRequest<S>>::from_request(req, state).await.map(Some)
    }
}
