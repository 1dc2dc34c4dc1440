//! The user service: registration with validated input, argon2id password login, profiles, and the
//! admin account seeded from configuration.

mod credentials;
mod error;
mod service;
mod store;

use mall_proto::user::v1::user_service_server::UserServiceServer;
use mall_runtime::{Readiness, Served, Shutdown};
use mall_storage::{Db, Migrations};
use tokio::net::TcpListener;

pub use credentials::{Email, Password, hash_password, verify_password};
pub use error::UserError;
pub use service::Users;
pub use store::{AdminSeed, seed_admin};

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Serves the user service on `listener` over an already migrated database.
pub async fn startup(
    db: Db,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, UserError> {
    let server = UserServiceServer::new(Users::new(db.clone()));
    let readiness = Readiness::new().check("database", move || {
        let db = db.clone();
        async move { db.ping().await.map_err(|e| e.to_string()) }
    });
    Ok(mall_runtime::serve("user", listener, server, readiness, shutdown).await?)
}

#[cfg(test)]
mod store_tests;
