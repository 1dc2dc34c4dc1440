//! The cart service's errors and their one mapping to gRPC status.

use sqlx::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// A request field with a bad value; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// AddItem or SetItem (above 0) for a product that is unknown or deleted.
    #[error("product {0} not found")]
    ProductNotFound(i64),
    /// The product service could not be reached (or did not answer in time).
    #[error("the product service is unavailable: {0}")]
    ProductUnavailable(String),
    /// The product service answered with an error that a correct call never gets.
    #[error("product service: {0}")]
    Product(tonic::Status),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

/// The one place a refused input becomes this service's INVALID_ARGUMENT.
impl From<mall_domain::Invalid> for CartError {
    fn from(e: mall_domain::Invalid) -> Self {
        CartError::InvalidArgument(e.to_string())
    }
}

impl CartError {
    /// Sorts a failed call to the product service: unreachable (worth a retry) or a bug.
    pub(crate) fn from_product(status: tonic::Status) -> CartError {
        use tonic::Code;
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
                CartError::ProductUnavailable(status.message().to_owned())
            }
            _ => CartError::Product(status),
        }
    }
}

impl From<CartError> for tonic::Status {
    fn from(e: CartError) -> Self {
        match e {
            CartError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            CartError::ProductNotFound(_) => tonic::Status::not_found(e.to_string()),
            CartError::ProductUnavailable(_) => {
                tracing::warn!(error = %e, "cart service: product service unavailable");
                tonic::Status::unavailable("the product service is unavailable; try again")
            }
            CartError::Database(ref db) if mall_storage::is_transient(db) => {
                tracing::warn!(error = %e, "cart service: database unavailable");
                tonic::Status::unavailable("the cart database is unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "cart service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}

/// True when a write broke a CHECK constraint (the cart's 1..999 quantity limit).
pub(crate) fn is_check_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.kind(), ErrorKind::CheckViolation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn status_codes() {
        let code = |e: CartError| tonic::Status::from(e).code();
        assert_eq!(code(CartError::InvalidArgument("x".into())), Code::InvalidArgument);
        assert_eq!(code(CartError::ProductNotFound(3)), Code::NotFound);
        assert_eq!(code(CartError::ProductUnavailable("down".into())), Code::Unavailable);
        assert_eq!(code(CartError::Database(sqlx::Error::PoolTimedOut)), Code::Unavailable);
        assert_eq!(code(CartError::Database(sqlx::Error::RowNotFound)), Code::Internal);
        assert_eq!(code(CartError::from_product(tonic::Status::unavailable("x"))), Code::Unavailable);
        assert_eq!(code(CartError::from_product(tonic::Status::invalid_argument("x"))), Code::Internal);
        assert_eq!(tonic::Status::from(CartError::ProductNotFound(3)).message(), "product 3 not found");
    }
}
