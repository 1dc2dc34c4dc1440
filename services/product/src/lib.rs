//! The product service: the catalog (products, categories, search) and its stock, which changes only
//! through admin edits and through orders' reservations (all or nothing, idempotent per order id,
//! never below zero). GetProduct is cached (cache-aside; every write invalidates after its commit).

mod demo;
mod error;
mod input;
mod service;
mod store;

use mall_proto::product::v1::product_service_server::ProductServiceServer;
use mall_runtime::{Readiness, Served, Shutdown};
use mall_storage::{Cache, Db, Migrations};
use tokio::net::TcpListener;

pub use demo::load_demo_catalog;
pub use error::ProductError;
pub use input::MAX_PRICE_CENTS;
pub use service::Catalog;

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the product service on `listener` over an already migrated database; ready while both the
/// database and the cache answer.
pub async fn startup(
    db: Db,
    cache: Cache,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, ProductError> {
    let server = ProductServiceServer::new(Catalog::new(db.clone(), cache.clone()));
    let readiness = Readiness::new()
        .check("database", move || {
            let db = db.clone();
            async move { db.ping().await.map_err(|e| e.to_string()) }
        })
        .check("cache", move || {
            let cache = cache.clone();
            async move { cache.ping().await.map_err(|e| e.to_string()) }
        });
    Ok(mall_runtime::serve("product", listener, server, readiness, shutdown).await?)
}
