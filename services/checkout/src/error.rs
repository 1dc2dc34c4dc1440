//! The checkout service's errors, and their one mapping to gRPC status.
//!
//! No message here ever carries a card number or a CVV.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Another call is driving this checkout right now.
    #[error("{0}")]
    Aborted(String),
    /// A peer (or the database) could not be reached; the checkout stays where it was.
    #[error("{0}")]
    Unavailable(String),
    /// A checkout that ended FAILED answers its stored status code and message, every time.
    #[error("{message}")]
    Failed { code: Code, message: String },
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
impl From<mall_domain::Invalid> for CheckoutError {
    fn from(e: mall_domain::Invalid) -> Self {
        CheckoutError::InvalidArgument(e.to_string())
    }
}

/// A step or outcome in the database that no version of this service writes.
impl From<mall_domain::UnknownStatus> for CheckoutError {
    fn from(e: mall_domain::UnknownStatus) -> Self {
        CheckoutError::Internal(format!("in the database: {e}"))
    }
}

/// Codes from a peer after which the request's effect is unknown or may succeed later: the saga stays
/// where it is and the call can be retried with the same key.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
    )
}

impl CheckoutError {
    /// A transient failure of the peer `what` (e.g. "the payment service").
    pub fn peer_unavailable(what: &str, status: &tonic::Status) -> CheckoutError {
        tracing::warn!(peer = what, code = ?status.code(), message = %status.message(), "peer call failed");
        if status.code() == Code::Aborted {
            CheckoutError::Aborted(format!("{what} is busy with this checkout; retry shortly"))
        } else {
            CheckoutError::Unavailable(format!(
                "{what} is unavailable; retry with the same idempotency key to resume the checkout"
            ))
        }
    }
}

impl From<CheckoutError> for tonic::Status {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            CheckoutError::NotFound(msg) => tonic::Status::not_found(msg),
            CheckoutError::AlreadyExists(msg) => tonic::Status::already_exists(msg),
            CheckoutError::Aborted(msg) => tonic::Status::aborted(msg),
            CheckoutError::Unavailable(msg) => tonic::Status::unavailable(msg),
            CheckoutError::Failed { code, message } => tonic::Status::new(code, message),
            CheckoutError::Database(
                ref db @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)),
            ) => {
                tracing::warn!(error = %db, "checkout database unavailable");
                tonic::Status::unavailable("the checkout database is unavailable; retry with the same key")
            }
            other => {
                tracing::error!(error = %other, "checkout service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}
