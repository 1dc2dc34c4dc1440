//! The API's error shape, and the one place where service errors become HTTP statuses.
//!
//! Every failure is `{"code": C, "msg": M, "data": null}` with `C` a stable number whose first three
//! digits are the HTTP status. The codes are listed in `CODES` (and in the OpenAPI document).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error code the API returns, with what it means.
pub const CODES: &[(u32, &str)] = &[
    (40001, "invalid input: a field is missing, malformed or out of range"),
    (40002, "the body is not valid JSON or form data for this route"),
    (40101, "missing, malformed or forged token"),
    (40102, "the token has expired"),
    (40103, "the token has been revoked (logged out)"),
    (40104, "wrong email or password"),
    (40201, "the card was declined: nothing was charged"),
    (40301, "the token's role may not use this route"),
    (40401, "no such resource"),
    (40402, "no such route"),
    (40501, "the route does not take this method"),
    (40901, "conflict: the resource exists already or is in another state"),
    (41301, "the body is larger than 64 KiB"),
    (41501, "unsupported content type for this route"),
    (42901, "too many requests: retry after the time in Retry-After"),
    (50001, "internal error"),
    (50101, "not implemented yet"),
    (50301, "a service the route needs is unavailable: the message names it"),
    (50302, "this gateway is shutting down: retry, another one will answer"),
    (50303, "busy: too much costly work (password checks, searches) at once; retry after Retry-After"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("your session has expired: log in again")]
    TokenExpired,
    #[error("this token has been revoked: log in again")]
    TokenRevoked,
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("{0}")]
    PaymentDeclined(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than 64 KiB")]
    TooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many attempts: try again in {retry_after} seconds")]
    TooManyRequests { retry_after: u64 },
    #[error("internal error")]
    Internal,
    #[error("{0} is not available yet")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("draining: this gateway is shutting down")]
    Draining,
    /// A service refused work it had no capacity for (gRPC RESOURCE_EXHAUSTED): nothing was done.
    #[error("the mall is busy right now: try again in {retry_after} second(s)")]
    Busy { retry_after: u64 },
}

/// What a busy service's refusal tells the client to wait: the services keep a refused call waiting at
/// most 2 s for a slot, and a slot frees within a hash's or a search's time, so one second is enough
/// for a retry to find room once the burst has passed.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

impl ApiError {
    pub fn code(&self) -> u32 {
        match self {
            ApiError::InvalidInput(_) => 40001,
            ApiError::BadBody(_) => 40002,
            ApiError::Unauthenticated(_) => 40101,
            ApiError::TokenExpired => 40102,
            ApiError::TokenRevoked => 40103,
            ApiError::WrongCredentials => 40104,
            ApiError::PaymentDeclined(_) => 40201,
            ApiError::Forbidden(_) => 40301,
            ApiError::NotFound(_) => 40401,
            ApiError::NoRoute(_) => 40402,
            ApiError::MethodNotAllowed => 40501,
            ApiError::Conflict(_) => 40901,
            ApiError::TooLarge => 41301,
            ApiError::UnsupportedMediaType(_) => 41501,
            ApiError::TooManyRequests { .. } => 42901,
            ApiError::Internal => 50001,
            ApiError::NotImplemented(_) => 50101,
            ApiError::Unavailable(_) => 50301,
            ApiError::Draining => 50302,
            ApiError::Busy { .. } => 50303,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16((self.code() / 100) as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The one place a refused input (checked here, at the edge, by mall-domain's rules) becomes a 400.
impl From<mall_domain::Invalid> for ApiError {
    fn from(e: mall_domain::Invalid) -> Self {
        ApiError::InvalidInput(e.to_string())
    }
}

/// gRPC status → API error. The services' messages are written for people, so they pass through for
/// client mistakes and for UNAVAILABLE (which names the service that is down, whether the gateway
/// could not reach it or a service could not reach its own peer); other server-side failures are
/// logged here and never shown.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_owned();
        if mall_runtime::identity::is_refusal(&s) {
            // A service did not accept the gateway as its caller: the stack's keys are wrong, not the
            // client's request.
            tracing::error!(message = %msg, "a service refused the gateway's identity");
            return ApiError::Internal;
        }
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ApiError::InvalidInput(msg),
            Code::Unauthenticated => ApiError::Unauthenticated(msg),
            Code::PermissionDenied => ApiError::Forbidden(msg),
            Code::NotFound => ApiError::NotFound(msg),
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => ApiError::Conflict(msg),
            Code::ResourceExhausted => {
                tracing::warn!(message = %msg, "a service is busy");
                ApiError::Busy { retry_after: BUSY_RETRY_AFTER_SECS }
            }
            Code::Unavailable => {
                tracing::warn!(message = %msg, "a service is unavailable");
                ApiError::Unavailable(msg)
            }
            Code::DeadlineExceeded => {
                tracing::warn!(message = %msg, "a service did not answer in time");
                ApiError::Unavailable("a service is unavailable right now: try again shortly".into())
            }
            Code::Unimplemented => ApiError::NotImplemented(msg),
            _ => {
                tracing::error!(status = ?s.code(), message = %msg, "service call failed");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.code(), "msg": self.to_string(), "data": null });
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_starts_with_its_status_and_is_listed() {
        let all = [
            ApiError::InvalidInput(String::new()),
            ApiError::BadBody(String::new()),
            ApiError::Unauthenticated(String::new()),
            ApiError::TokenExpired,
            ApiError::TokenRevoked,
            ApiError::WrongCredentials,
            ApiError::PaymentDeclined(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::NoRoute(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::Conflict(String::new()),
            ApiError::TooLarge,
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::TooManyRequests { retry_after: 3 },
            ApiError::Internal,
            ApiError::NotImplemented(String::new()),
            ApiError::Unavailable(String::new()),
            ApiError::Draining,
            ApiError::Busy { retry_after: 1 },
        ];
        assert_eq!(all.len(), CODES.len());
        for e in all {
            assert_eq!(u32::from(e.status().as_u16()), e.code() / 100, "{e:?}");
            assert!(CODES.iter().any(|(c, _)| *c == e.code()), "{e:?} is not in CODES");
        }
    }

    #[test]
    fn server_side_failures_are_not_shown_to_clients() {
        let e = ApiError::from(tonic::Status::internal("connection string mysql://root:secret@db"));
        assert_eq!(e, ApiError::Internal);
        assert!(!e.to_string().contains("secret"));
        assert_eq!(ApiError::from(tonic::Status::already_exists("taken")).code(), 40901);
        let refused = mall_runtime::identity::refusal("gateway may not call /mall.x.v1.X/Y on x".into());
        assert_eq!(ApiError::from(refused), ApiError::Internal, "not the client's 403");
        let down = ApiError::from(tonic::Status::unavailable("the payment service is unavailable"));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.to_string(), "the payment service is unavailable");
    }

    #[test]
    fn a_busy_service_is_a_503_with_retry_after() {
        let e = ApiError::from(tonic::Status::resource_exhausted("too many searches at once"));
        assert_eq!(e, ApiError::Busy { retry_after: BUSY_RETRY_AFTER_SECS });
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
