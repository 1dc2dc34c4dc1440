//! The payment service: charges an order's total (read from the order service, never from the
//! caller) to a card, through a pluggable [`CardProcessor`], and marks the order PAID.
//!
//! The card number and CVV live in memory for one call only: a payment keeps the last four digits and
//! the brand, and nothing here logs more than that. Declines are results (a DECLINED payment with its
//! reason), not errors. Charges are idempotent per order (a UNIQUE claim on the order makes two
//! successful charges impossible) and per idempotency key.

mod error;
pub mod processor;
mod service;
mod store;

use std::sync::Arc;

use mall_proto::payment::v1::payment_service_server::PaymentServiceServer;
use mall_runtime::{Access, PeerChannel, Readiness, Served, Shutdown};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use error::PaymentError;
pub use processor::{
    BuiltInProcessor, CardProcessor, ProcessorCharge, ProcessorDecision, ProcessorUnavailable,
};
pub use service::Payments;

/// The test card number that the built-in processor always declines (DECLINE_REASON_PROCESSOR_DECLINED).
/// It passes the Luhn check, so it exercises a processor refusal rather than a failed card check.
pub const DECLINED_TEST_CARD: &str = "4000000000000002";

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Builds the service on an already migrated database, with the built-in card processor, and serves it
/// on `listener`. `order` is a channel to the order service.
pub async fn startup(
    db: Db,
    order: PeerChannel,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, PaymentError> {
    startup_with_processor(db, order, Arc::new(BuiltInProcessor), access, listener, shutdown).await
}

/// [`startup`] with another card processor.
pub async fn startup_with_processor(
    db: Db,
    order: PeerChannel,
    processor: Arc<dyn CardProcessor>,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, PaymentError> {
    let payments = Payments::new(db.clone(), order, processor);
    let shutdown = shutdown.into();
    payments.spawn_sweeper(shutdown.token().clone());
    let server = PaymentServiceServer::new(payments);
    let readiness = Readiness::new().check("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    Ok(mall_runtime::serve("payment", listener, server, readiness, access, shutdown).await?)
}

#[cfg(test)]
mod tests;
