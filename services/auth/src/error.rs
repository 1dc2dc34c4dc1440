//! The auth service's errors, and their one mapping to gRPC status.

use mall_tokens::TokenError;

/// What a token signed by a retired (or unknown) key is told.
pub const KEY_NOT_ACCEPTED: &str = "the token's signing key is no longer accepted: log in again";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    #[error("token revoked")]
    Revoked,
    #[error("storage: {0}")]
    Storage(#[from] mall_storage::StorageError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("signing keys: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            AuthError::Token(TokenError::Expired) => tonic::Status::unauthenticated("token expired"),
            AuthError::Token(TokenError::UnknownKey(_) | TokenError::RetiredKey(_)) => {
                tonic::Status::unauthenticated(KEY_NOT_ACCEPTED)
            }
            AuthError::Token(_) => tonic::Status::unauthenticated("invalid token"),
            AuthError::Revoked => tonic::Status::unauthenticated("token revoked"),
            other => {
                tracing::error!(error = %other, "auth service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
