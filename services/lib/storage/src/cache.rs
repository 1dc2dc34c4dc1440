//! A small key/value cache with TTLs and fixed-window counters, over Redis
//! (shared by every replica) or in-process memory (single replica, tests).
//!
//! Every key is prefixed with the namespace given at construction, so stacks
//! and tests sharing one Redis never see each other's keys. Values are bytes.

mod in_memory;
mod redis_backend;

use std::time::Duration;

use tracing::Instrument;

pub use self::in_memory::MemoryCache;
pub use self::redis_backend::RedisCache;
use crate::StorageError;

/// Longest TTL or window accepted; longer ones are shortened to this.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The cache: in-process memory or Redis, chosen at startup.
#[derive(Clone, Debug)]
pub enum Cache {
    /// In-process, bounded to 100 000 entries.
    Memory(MemoryCache),
    /// Redis through a self-reconnecting connection manager.
    Redis(RedisCache),
}

impl Cache {
    /// An in-process cache (at most 100 000 entries, each expiring at its own deadline).
    pub fn memory(namespace: &str) -> Cache {
        Cache::Memory(MemoryCache::new(namespace))
    }

    /// A Redis cache; fails (within about 5 s) if the server is unreachable now, and at once if it
    /// refuses the URL's password (or wants one). Later outages are survived: the connection
    /// reconnects by itself.
    pub async fn redis(url: &str, namespace: &str) -> Result<Cache, StorageError> {
        Ok(Cache::Redis(RedisCache::connect(url, namespace).await?))
    }

    /// Redis when `redis_url` is given (and not blank), memory otherwise.
    pub async fn from_config(redis_url: Option<&str>, namespace: &str) -> Result<Cache, StorageError> {
        match redis_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Cache::redis(url, namespace).await,
            None => Ok(Cache::memory(namespace)),
        }
    }

    /// `"memory"` or `"redis"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Cache::Memory(_) => "memory",
            Cache::Redis(_) => "redis",
        }
    }

    /// The prefix put in front of every key (the namespace, ending in `:`).
    pub fn namespace(&self) -> &str {
        match self {
            Cache::Memory(c) => c.namespace(),
            Cache::Redis(c) => c.namespace(),
        }
    }

    /// The value under `key`, or `None` if absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let value = match self {
            // In-process lookups are not calls: no span.
            Cache::Memory(c) => Ok(c.get(key).await),
            Cache::Redis(c) => c.get(key).instrument(self.span("GET")).await,
        };
        if let Ok(found) = &value {
            crate::telemetry::cache_lookup(key, found.is_some());
        }
        value
    }

    /// The span of one call (seen by OpenTelemetry only; see `mall_runtime::telemetry`).
    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::trace_span!(target: "mall::trace", "cache", otel.name = operation, otel.kind = "client",
            db.system = self.kind(), db.operation = operation)
    }

    /// Stores `value` under `key` for `ttl` (must be > 0; rounded up to whole
    /// milliseconds, capped at 10 years), replacing any previous value and TTL.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StorageError> {
        let ttl = checked_ttl(ttl, "ttl")?;
        match self {
            Cache::Memory(c) => {
                c.set(key, value, ttl).await;
                Ok(())
            }
            Cache::Redis(c) => c.set(key, value, ttl).instrument(self.span("SET")).await,
        }
    }

    /// Removes `key` (no error if it is absent).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self {
            Cache::Memory(c) => {
                c.delete(key).await;
                Ok(())
            }
            Cache::Redis(c) => c.delete(key).instrument(self.span("DEL")).await,
        }
    }

    /// Whether `key` holds an unexpired value.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self {
            Cache::Memory(c) => Ok(c.exists(key).await),
            Cache::Redis(c) => c.exists(key).instrument(self.span("EXISTS")).await,
        }
    }

    /// Counts one hit in a fixed window, for rate limiting.
    ///
    /// The first hit creates the counter with `window` as its TTL; later hits
    /// increment it until it expires. Returns the count in the current window
    /// (including this hit) and the time until the window resets. Atomic:
    /// concurrent hits are never lost. The counter is stored as decimal text
    /// (so `get` returns e.g. `b"3"`); `hit` on a key holding anything else
    /// fails with [`StorageError::CacheValue`] (memory) or
    /// [`StorageError::Redis`] (Redis).
    pub async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StorageError> {
        let window = checked_ttl(window, "window")?;
        match self {
            Cache::Memory(c) => c.hit(key, window).await,
            Cache::Redis(c) => c.hit(key, window).instrument(self.span("INCR")).await,
        }
    }

    /// Checks that the cache answers (always true for memory).
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self {
            Cache::Memory(_) => Ok(()),
            Cache::Redis(c) => c.ping().await,
        }
    }
}

/// `ns` as a key prefix: ends in `:` unless empty, so namespaces `a` and `ab`
/// can never produce the same key.
fn key_prefix(ns: &str) -> String {
    if ns.is_empty() || ns.ends_with(':') { ns.to_string() } else { format!("{ns}:") }
}

/// Rejects a zero duration; rounds up to whole milliseconds; caps at [`MAX_TTL`].
fn checked_ttl(ttl: Duration, what: &str) -> Result<Duration, StorageError> {
    if ttl.is_zero() {
        return Err(StorageError::InvalidArgument(format!("{what} must be > 0")));
    }
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    let millis = u64::try_from(millis).unwrap_or(u64::MAX);
    Ok(Duration::from_millis(millis).min(MAX_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounding() {
        let ms = |d| checked_ttl(d, "ttl").unwrap();
        assert_eq!(ms(Duration::from_nanos(1)), Duration::from_millis(1));
        assert_eq!(ms(Duration::from_micros(1500)), Duration::from_millis(2));
        assert_eq!(ms(Duration::from_millis(200)), Duration::from_millis(200));
        assert_eq!(ms(Duration::MAX), MAX_TTL);
        assert!(matches!(checked_ttl(Duration::ZERO, "ttl"), Err(StorageError::InvalidArgument(_))));
    }

    #[test]
    fn prefixes() {
        assert_eq!(key_prefix("mall:"), "mall:");
        assert_eq!(key_prefix("mall"), "mall:");
        assert_eq!(key_prefix(""), "");
    }
}
