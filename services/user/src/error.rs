//! The user service's errors and their one mapping to gRPC status.

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The same error for an unknown email and a wrong password, so neither can be probed.
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("no such user")]
    NotFound,
    /// Every password-hashing slot stayed taken for the whole wait.
    #[error("too many logins and registrations at once: try again in a moment")]
    Busy,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

/// The one place a refused input becomes this service's INVALID_ARGUMENT.
impl From<mall_domain::Invalid> for UserError {
    fn from(e: mall_domain::Invalid) -> Self {
        UserError::InvalidArgument(e.to_string())
    }
}

impl From<mall_runtime::WorkError> for UserError {
    fn from(e: mall_runtime::WorkError) -> Self {
        match e {
            mall_runtime::WorkError::Busy(_) => UserError::Busy,
            failed => UserError::Internal(failed.to_string()),
        }
    }
}

impl From<UserError> for tonic::Status {
    fn from(e: UserError) -> Self {
        match e {
            UserError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            UserError::EmailTaken => tonic::Status::already_exists(e.to_string()),
            UserError::WrongCredentials => tonic::Status::unauthenticated(e.to_string()),
            UserError::NotFound => tonic::Status::not_found(e.to_string()),
            UserError::Busy => tonic::Status::resource_exhausted(e.to_string()),
            other => {
                tracing::error!(error = %other, "user service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
