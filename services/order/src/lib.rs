//! The order service: places orders priced by the product service (never by the caller) and reserves
//! their stock there, keeps a copy of every line, and moves orders from pending to paid or cancelled.
//! A background sweeper cancels unpaid orders once they expire and gives their stock back.
//!
//! Placing writes the pending order first and reserves its stock after (see `lifecycle` for why that
//! order survives crashes). When the product service refuses the reservation (short stock, a product
//! gone), the order is cancelled, its reservation released and the row removed: PlaceOrder keeps no
//! order then, and the idempotency key is free for a later try.

mod error;
mod input;
mod lifecycle;
mod service;
mod stock;
mod store;

use std::time::Duration;

use mall_proto::order::v1::order_service_server::OrderServiceServer;
use mall_runtime::{Access, CancellationToken, PeerChannel, Readiness, Served, Shutdown};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use error::OrderError;

use crate::service::Orders;
use crate::stock::Stock;

/// The order service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a pending order waits for its payment before it expires.
    pub unpaid_ttl: Duration,
    /// How often the sweeper looks for expired orders (and for stock releases to retry).
    pub sweep_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { unpaid_ttl: Duration::from_secs(30 * 60), sweep_interval: Duration::from_secs(30) }
    }
}

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the order service on `listener` over an already migrated database, and runs the expiry
/// sweeper until `shutdown`. `product` is a channel to the product service (connected lazily).
pub async fn startup(
    config: Config,
    db: Db,
    product: PeerChannel,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, OrderError> {
    let stock = Stock::new(product);
    let orders = Orders::new(db.clone(), stock.clone(), config.unpaid_ttl);
    let server = OrderServiceServer::new(orders);
    let probe = db.clone();
    let readiness = Readiness::new().check("database", move || {
        let db = probe.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    let served = mall_runtime::serve("order", listener, server, readiness, access, shutdown).await?;
    spawn_sweeper(db, stock, config.sweep_interval, served.shutdown.token().clone());
    Ok(served)
}

/// Runs [`lifecycle::sweep`] every `interval` until `shutdown`. Every step of a sweep is atomic on its
/// own, so stopping in the middle of one is harmless.
fn spawn_sweeper(db: Db, stock: Stock, interval: Duration, shutdown: CancellationToken) {
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let swept = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => tokio::select! {
                    () = shutdown.cancelled() => break,
                    swept = lifecycle::sweep(&db, &stock) => swept,
                },
            };
            match swept {
                Ok(s) if s.expired > 0 || s.released > 0 => {
                    tracing::info!(expired = s.expired, released = s.released, "order sweep");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "order sweep failed; retrying next interval"),
            }
        }
        tracing::debug!("order sweeper stopped");
    });
}

#[cfg(test)]
mod tests;
