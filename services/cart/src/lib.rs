//! The cart service: one durable cart per user, one line per product, priced by the product service
//! every time it is read (so a cart always shows today's prices).

mod error;
mod service;
mod store;

use mall_proto::cart::v1::cart_service_server::CartServiceServer;
use mall_runtime::{Access, PeerChannel, Readiness, Served, Shutdown};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use error::CartError;
pub use service::Carts;

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the cart service on `listener` over an already migrated database; `product` is a channel to
/// the product service (connected lazily, so it may start after us).
pub async fn startup(
    db: Db,
    product: PeerChannel,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, CartError> {
    let server = CartServiceServer::new(Carts::new(db.clone(), product));
    let readiness = Readiness::new().check("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    Ok(mall_runtime::serve("cart", listener, server, readiness, access, shutdown).await?)
}

#[cfg(test)]
mod tests;
