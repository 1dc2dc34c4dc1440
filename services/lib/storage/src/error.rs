//! The one error type of the storage layer.

use std::time::Duration;

/// Everything that can go wrong in `mall-storage`.
///
/// Messages never contain a password: URLs are redacted before they are put
/// into an error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL's scheme is not one we support.
    #[error("unsupported database URL `{url}`: expected `mysql://`, `mariadb://` or `sqlite:`")]
    UnsupportedUrl {
        /// The URL with its password replaced by `***`.
        url: String,
    },
    /// The URL has a supported scheme but cannot be used as given.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A caller-supplied argument (name, TTL, window, …) is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error from the database driver.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed (or the applied migrations do not match the embedded ones).
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An error from Redis.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value cannot be used as requested (e.g. `hit` on a non-counter key).
    #[error("cache value error: {0}")]
    CacheValue(String),
    /// A server did not answer in time.
    #[error("{what} did not answer within {after:?}")]
    Timeout {
        /// What we were waiting for (a redacted URL where useful).
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A filesystem error (creating the SQLite directory).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
