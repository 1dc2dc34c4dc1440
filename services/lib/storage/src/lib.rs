//! Mall's storage layer: a SQL database pool (MySQL/MariaDB or SQLite, chosen
//! by URL) with per-service databases and migrations, and a key/value cache
//! over Redis or in-process memory.
//!
//! Services write SQL once, with `?` placeholders, through sqlx's `Any` driver;
//! the same code runs against MariaDB in a cluster and SQLite on a laptop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mall_storage::StorageError> {
//! use mall_storage::{Cache, Db, service_database_url};
//! let url = service_database_url("mysql://mall:pw@db:3306/mall", "auth")?;
//! let db = Db::connect(&url).await?; // creates database `mall_auth` if missing
//! // db.migrate(&mall_storage::migrations!()).await?;
//! let cache = Cache::from_config(Some("redis://redis:6379"), "mall:").await?;
//! # let _ = (db, cache); Ok(()) }
//! ```

mod cache;
mod db;
mod error;
pub mod telemetry;

pub use cache::{Cache, MemoryCache, RedisCache};
pub use db::account::{DatabaseAccount, Provisioned, as_admin, provision_account};
pub use db::url::{database_url_with_name, redact_url, service_database_url, sqlite_url_in};
pub use db::{Backend, DEFAULT_POOL_SIZE, Db, Migrations, is_deadlock, is_transient, is_unique_violation};
pub use error::StorageError;

/// Re-exported so callers use the exact sqlx version (and features) that
/// `mall-storage` was built with.
pub use sqlx;

/// Builds a [`Migrations`] from SQL files embedded at compile time.
///
/// `migrations!()` reads `migrations/mysql` and `migrations/sqlite`, relative to
/// the **calling** crate's `Cargo.toml`. `migrations!(mysql = "a", sqlite = "b")`
/// names the two folders explicitly.
///
/// The calling crate must depend on `sqlx` directly (`sqlx.workspace = true`):
/// the code that `sqlx::migrate!` generates names `::sqlx::...`, which only
/// resolves when `sqlx` is a dependency of the crate being compiled; the
/// re-export [`mall_storage::sqlx`](crate::sqlx) is not enough for that.
#[macro_export]
macro_rules! migrations {
    () => {
        $crate::migrations!(mysql = "migrations/mysql", sqlite = "migrations/sqlite")
    };
    (mysql = $mysql:literal, sqlite = $sqlite:literal $(,)?) => {
        $crate::Migrations::new($crate::sqlx::migrate!($mysql), $crate::sqlx::migrate!($sqlite))
    };
}

/// Seconds since the Unix epoch (0 if the clock is before 1970), for services
/// storing timestamps as `BIGINT`.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_unix_is_recent() {
        let now = super::now_unix();
        assert!(now > 1_700_000_000, "{now}");
        assert!(now < 10_000_000_000, "{now}");
    }
}
