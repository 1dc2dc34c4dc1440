//! The product service: the catalog (products, categories, search) and its stock, which changes only
//! through admin edits and through orders' reservations (all or nothing, idempotent per order id,
//! never below zero). GetProduct is cached (cache-aside; every write invalidates after its commit).

mod demo;
mod error;
mod input;
mod service;
mod store;

use std::time::Duration;

use mall_proto::product::v1::product_service_server::ProductServiceServer;
use mall_runtime::{Access, Readiness, Served, Shutdown, WorkLimit};
use mall_storage::{Cache, Db, Migrations};
use tokio::net::TcpListener;

pub use demo::load_demo_catalog;
pub use error::ProductError;
pub use service::Catalog;

/// How long a search waits for a slot before it is refused (RESOURCE_EXHAUSTED, a 503 with Retry-After
/// at the gateway): a search takes milliseconds, so this absorbs a deep burst, and a client of a
/// saturated service hears back well before the gateway's 15 s call deadline.
pub const SEARCH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The product service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many searches run at once; the rest wait up to `search_queue_wait`.
    pub search_concurrency: usize,
    pub search_queue_wait: Duration,
}

impl Default for Config {
    /// One search per CPU (a `LIKE` scan is CPU work for the database), and at most 5: half of the
    /// service's database pool (10 connections), so that searches never hold the connections that
    /// GetProduct and ReserveStock need for carts and checkouts.
    fn default() -> Self {
        Config {
            search_concurrency: mall_runtime::available_cpus().min(5),
            search_queue_wait: SEARCH_QUEUE_WAIT,
        }
    }
}

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the product service on `listener` over an already migrated database; ready while both the
/// database and the cache answer.
pub async fn startup(
    config: Config,
    db: Db,
    cache: Cache,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, ProductError> {
    let searches = WorkLimit::new("search", config.search_concurrency, config.search_queue_wait);
    let server = ProductServiceServer::new(Catalog::new(db.clone(), cache.clone(), searches));
    let readiness = Readiness::new()
        .check("database", move || {
            let db = db.clone();
            async move { db.ping().await.map_err(|e| e.to_string()) }
        })
        .check("cache", move || {
            let cache = cache.clone();
            async move { cache.ping().await.map_err(|e| e.to_string()) }
        });
    Ok(mall_runtime::serve("product", listener, server, readiness, access, shutdown).await?)
}
