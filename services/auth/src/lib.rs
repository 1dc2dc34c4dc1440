//! The auth service: signs access tokens for authenticated users, verifies them, revokes them (a
//! denylist of token ids that lives as long as the tokens would), and publishes the public keys that
//! let the gateway verify tokens without a call.

mod error;
mod keys;
mod service;

use std::time::Duration;

use mall_proto::auth::v1::auth_service_server::AuthServiceServer;
use mall_runtime::{Access, Readiness, Served, Shutdown};
use mall_storage::{Cache, Db, Migrations};
use tokio::net::TcpListener;

pub use error::AuthError;
pub use service::Auth;

/// The auth service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an issued token lives.
    pub token_ttl: Duration,
    /// A PKCS#8 PEM Ed25519 key to sign with (what the operator's Secret provides). Without one, a key
    /// is generated once and kept in the database.
    pub signing_key_pem: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { token_ttl: Duration::from_secs(24 * 3600), signing_key_pem: None }
    }
}

/// This service's schema, per dialect.
pub fn migrations() -> Migrations {
    mall_storage::migrations!()
}

/// Builds the service on an already migrated database and serves it on `listener`.
pub async fn startup(
    config: Config,
    db: Db,
    cache: Cache,
    access: Access,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, AuthError> {
    let auth = Auth::new(&config, db.clone(), cache.clone()).await?;
    let server = AuthServiceServer::new(auth);
    let readiness = Readiness::new()
        .check("database", move || {
            let db = db.clone();
            async move { db.ping().await.map_err(|e| e.to_string()) }
        })
        .check("cache", move || {
            let cache = cache.clone();
            async move { cache.ping().await.map_err(|e| e.to_string()) }
        });
    Ok(mall_runtime::serve("auth", listener, server, readiness, access, shutdown).await?)
}

#[cfg(test)]
mod tests;
