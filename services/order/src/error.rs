//! The order service's errors and their one mapping to gRPC status.

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A request field with a bad value; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown order, or another user's (the two are never told apart).
    #[error("order not found")]
    NotFound,
    /// The order cannot be placed or moved as asked; the message says why (and names the product).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An idempotency key reused with a different request.
    #[error("{0}")]
    KeyReused(String),
    /// The product service could not be reached (or did not answer in time).
    #[error("the product service is unavailable: {0}")]
    ProductUnavailable(String),
    /// The product service answered with an error that a correct call never gets.
    #[error("product service: {0}")]
    Product(tonic::Status),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

/// The one place a refused input becomes this service's INVALID_ARGUMENT.
impl From<mall_domain::Invalid> for OrderError {
    fn from(e: mall_domain::Invalid) -> Self {
        OrderError::InvalidArgument(e.to_string())
    }
}

/// A status in the database that no version of this service writes.
impl From<mall_domain::UnknownStatus> for OrderError {
    fn from(e: mall_domain::UnknownStatus) -> Self {
        OrderError::Internal(format!("in the database: {e}"))
    }
}

impl OrderError {
    /// Sorts a failed call to the product service that has no meaning of its own for the caller:
    /// unreachable (worth a retry) or a bug.
    pub(crate) fn from_product(status: tonic::Status) -> OrderError {
        if is_unreachable_status(&status) {
            OrderError::ProductUnavailable(status.message().to_owned())
        } else {
            OrderError::Product(status)
        }
    }
}

/// True when a call failed because the peer could not be reached or did not answer in time.
pub(crate) fn is_unreachable_status(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted
    )
}

impl From<OrderError> for tonic::Status {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            OrderError::NotFound => tonic::Status::not_found(e.to_string()),
            OrderError::FailedPrecondition(msg) => tonic::Status::failed_precondition(msg),
            OrderError::KeyReused(msg) => tonic::Status::already_exists(msg),
            OrderError::ProductUnavailable(_) => {
                tracing::warn!(error = %e, "order service: product service unavailable");
                tonic::Status::unavailable("the product service is unavailable; try again")
            }
            OrderError::Database(ref db) if mall_storage::is_transient(db) => {
                tracing::warn!(error = %e, "order service: database unavailable");
                tonic::Status::unavailable("the order database is unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "order service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn status_codes() {
        let code = |e: OrderError| tonic::Status::from(e).code();
        assert_eq!(code(OrderError::InvalidArgument("x".into())), Code::InvalidArgument);
        assert_eq!(code(OrderError::NotFound), Code::NotFound);
        assert_eq!(code(OrderError::FailedPrecondition("x".into())), Code::FailedPrecondition);
        assert_eq!(code(OrderError::KeyReused("x".into())), Code::AlreadyExists);
        assert_eq!(code(OrderError::ProductUnavailable("x".into())), Code::Unavailable);
        assert_eq!(code(OrderError::Database(sqlx::Error::PoolTimedOut)), Code::Unavailable);
        assert_eq!(code(OrderError::Database(sqlx::Error::RowNotFound)), Code::Internal);
        assert_eq!(code(OrderError::from_product(tonic::Status::deadline_exceeded("x"))), Code::Unavailable);
        assert_eq!(code(OrderError::from_product(tonic::Status::already_exists("x"))), Code::Internal);
        assert_eq!(code(OrderError::Internal("x".into())), Code::Internal);
    }
}
