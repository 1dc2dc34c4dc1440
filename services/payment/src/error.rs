//! The payment service's errors, and their one mapping to gRPC status.
//!
//! No message here ever carries a card number or a CVV: they are never put into an error.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Storage(#[from] mall_storage::StorageError),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

/// The one place a refused input becomes this service's INVALID_ARGUMENT.
impl From<mall_domain::Invalid> for PaymentError {
    fn from(e: mall_domain::Invalid) -> Self {
        PaymentError::InvalidArgument(e.to_string())
    }
}

/// A status that no version of these services writes (in this database, or from the order service).
impl From<mall_domain::UnknownStatus> for PaymentError {
    fn from(e: mall_domain::UnknownStatus) -> Self {
        PaymentError::Internal(e.to_string())
    }
}

impl PaymentError {
    /// An error answered by a peer (the order service), as this service reports it: the caller-facing
    /// codes pass through, transient ones become UNAVAILABLE, anything else is internal.
    pub fn from_peer(what: &str, status: &tonic::Status) -> PaymentError {
        let message = status.message().to_owned();
        match status.code() {
            Code::NotFound => PaymentError::NotFound(message),
            Code::InvalidArgument => PaymentError::InvalidArgument(message),
            Code::FailedPrecondition => PaymentError::FailedPrecondition(message),
            code if is_transient(code) => PaymentError::Unavailable(format!("{what} is unavailable")),
            code => PaymentError::Internal(format!("{what} answered {code:?}: {message}")),
        }
    }
}

/// Codes that say "try again later" rather than "no".
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Unknown
    )
}

impl From<PaymentError> for tonic::Status {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            PaymentError::NotFound(msg) => tonic::Status::not_found(msg),
            PaymentError::FailedPrecondition(msg) => tonic::Status::failed_precondition(msg),
            PaymentError::AlreadyExists(msg) => tonic::Status::already_exists(msg),
            PaymentError::Aborted(msg) => tonic::Status::aborted(msg),
            PaymentError::Unavailable(msg) => tonic::Status::unavailable(msg),
            PaymentError::Database(ref db) if mall_storage::is_transient(db) => {
                tracing::warn!(error = %db, "payment database unavailable");
                tonic::Status::unavailable("the payment database is unavailable")
            }
            other => {
                tracing::error!(error = %other, "payment service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
