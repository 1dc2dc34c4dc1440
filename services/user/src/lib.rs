//! The user service: registration with validated input, argon2id password login, profiles, and the
//! admin account seeded from configuration.

mod credentials;
mod error;
mod service;
mod store;

use std::time::Duration;

use mall_proto::user::v1::user_service_server::UserServiceServer;
use mall_runtime::{Access, Readiness, Served, Shutdown, WorkLimit};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use credentials::{Password, hash_password, verify_password};
pub use error::UserError;
pub use service::Users;
pub use store::{AdminSeed, seed_admin};

/// How long a login or registration waits for a hashing slot before it is refused (RESOURCE_EXHAUSTED,
/// a 503 with Retry-After at the gateway). A hash takes tens of milliseconds, so two seconds absorb a
/// burst dozens of requests deep per slot, while a client of a saturated service hears back long before
/// it would give up (and before the gateway's 15 s call deadline) instead of queueing without end.
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The user service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many passwords are hashed or verified at once (each takes 19 MiB and a CPU for its
    /// duration); the rest wait up to `hash_queue_wait`.
    pub hash_concurrency: usize,
    pub hash_queue_wait: Duration,
}

impl Default for Config {
    /// One hash per CPU: more would not finish sooner, only hold more memory.
    fn default() -> Self {
        Config { hash_concurrency: mall_runtime::available_cpus(), hash_queue_wait: HASH_QUEUE_WAIT }
    }
}

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the user service on `listener` over an already migrated database.
pub async fn startup(
    config: Config,
    db: Db,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, UserError> {
    let hashing = WorkLimit::new("password hashing", config.hash_concurrency, config.hash_queue_wait);
    tracing::info!(slots = config.hash_concurrency, "password hashing bounded");
    let server = UserServiceServer::new(Users::new(db.clone(), hashing));
    let readiness = Readiness::new().check("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    Ok(mall_runtime::serve("user", listener, server, readiness, access, shutdown).await?)
}

#[cfg(test)]
mod store_tests;
