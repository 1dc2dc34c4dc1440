//! The checkout service: the saga that turns a user's cart into a paid order (read the cart, place the
//! order, charge it, mark it paid, empty the cart; cancel the order on a decline), with its state
//! persisted per checkout so that a retry with the same idempotency key, or the service itself after a
//! restart, finishes or undoes it. See `saga` for the steps and `service` for idempotency.
//!
//! The card number and CVV are passed to the payment service and dropped: never stored, never logged.

mod error;
mod request;
mod saga;
mod service;
mod store;

use mall_proto::checkout::v1::checkout_service_server::CheckoutServiceServer;
use mall_runtime::{Access, PeerChannel, Readiness, Served, Shutdown};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use error::CheckoutError;

/// Channels to the services the saga calls.
#[derive(Debug, Clone)]
pub struct Peers {
    pub cart: PeerChannel,
    pub order: PeerChannel,
    pub payment: PeerChannel,
}

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Builds the service on an already migrated database and serves it on `listener`. Recovery of
/// abandoned checkouts runs in the background (now, then periodically), so startup never waits for
/// the peers.
pub async fn startup(
    db: Db,
    peers: Peers,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, CheckoutError> {
    let checkouts = saga::Checkouts::new(db.clone(), peers);
    let shutdown = shutdown.into();
    checkouts.spawn_recovery(shutdown.token().clone());
    let server = CheckoutServiceServer::new(checkouts);
    let readiness = Readiness::new().check("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    Ok(mall_runtime::serve("checkout", listener, server, readiness, access, shutdown).await?)
}

#[cfg(test)]
mod tests;
