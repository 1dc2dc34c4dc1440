//! The product service's errors and their one mapping to gRPC status.

use mall_storage::sqlx;

#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    /// A request field with a bad value; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// An unknown or deleted product.
    #[error("product {0} not found")]
    NotFound(i64),
    /// ReserveStock for a product that is unknown or deleted.
    #[error("product {0} is not for sale")]
    NotForSale(i64),
    /// ReserveStock asked for more than is left.
    #[error(
        "insufficient stock for product {product_id} {name:?}: requested {requested}, available {available}"
    )]
    InsufficientStock { product_id: i64, name: String, requested: i64, available: i64 },
    /// ReserveStock for an order id whose reservation was released.
    #[error("the stock reservation of order {0:?} was released; an order id reserves only once")]
    ReservationReleased(String),
    /// ReserveStock for an order id that already holds a reservation with other lines.
    #[error("order {0:?} already holds a stock reservation with other lines")]
    ReservationConflict(String),
    /// Every search slot stayed taken for the whole wait.
    #[error("too many searches at once: try again in a moment")]
    Busy,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Storage(#[from] mall_storage::StorageError),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Runtime(#[from] mall_runtime::RuntimeError),
}

/// The one place a refused input becomes this service's INVALID_ARGUMENT.
impl From<mall_domain::Invalid> for ProductError {
    fn from(e: mall_domain::Invalid) -> Self {
        ProductError::InvalidArgument(e.to_string())
    }
}

/// A reservation status in the database that no version of this service writes.
impl From<mall_domain::UnknownStatus> for ProductError {
    fn from(e: mall_domain::UnknownStatus) -> Self {
        ProductError::Internal(format!("in the database: {e}"))
    }
}

impl From<mall_runtime::WorkError> for ProductError {
    fn from(e: mall_runtime::WorkError) -> Self {
        match e {
            mall_runtime::WorkError::Busy(_) => ProductError::Busy,
            failed => ProductError::Internal(failed.to_string()),
        }
    }
}

impl From<ProductError> for tonic::Status {
    fn from(e: ProductError) -> Self {
        match e {
            ProductError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            ProductError::NotFound(_) => tonic::Status::not_found(e.to_string()),
            ProductError::NotForSale(_)
            | ProductError::InsufficientStock { .. }
            | ProductError::ReservationReleased(_) => tonic::Status::failed_precondition(e.to_string()),
            ProductError::ReservationConflict(_) => tonic::Status::already_exists(e.to_string()),
            ProductError::Busy => tonic::Status::resource_exhausted(e.to_string()),
            ProductError::Database(ref db) if mall_storage::is_transient(db) => {
                tracing::warn!(error = %e, "product service: database unavailable");
                tonic::Status::unavailable("the product database is unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "product service failure");
                tonic::Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_product() {
        let e = ProductError::InsufficientStock {
            product_id: 42,
            name: "Blue mug".into(),
            requested: 3,
            available: 1,
        };
        assert_eq!(
            e.to_string(),
            r#"insufficient stock for product 42 "Blue mug": requested 3, available 1"#
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(ProductError::NotForSale(7).to_string(), "product 7 is not for sale");
    }

    #[test]
    fn status_codes() {
        let code = |e: ProductError| tonic::Status::from(e).code();
        assert_eq!(code(ProductError::InvalidArgument("x".into())), tonic::Code::InvalidArgument);
        assert_eq!(code(ProductError::NotFound(1)), tonic::Code::NotFound);
        assert_eq!(code(ProductError::ReservationConflict("o".into())), tonic::Code::AlreadyExists);
        assert_eq!(code(ProductError::ReservationReleased("o".into())), tonic::Code::FailedPrecondition);
        assert_eq!(code(ProductError::Database(sqlx::Error::PoolTimedOut)), tonic::Code::Unavailable);
        assert_eq!(code(ProductError::Database(sqlx::Error::RowNotFound)), tonic::Code::Internal);
        assert_eq!(code(ProductError::Internal("x".into())), tonic::Code::Internal);
        assert_eq!(code(ProductError::Busy), tonic::Code::ResourceExhausted);
        assert_eq!(code(mall_runtime::WorkError::Busy("search").into()), tonic::Code::ResourceExhausted);
    }
}
