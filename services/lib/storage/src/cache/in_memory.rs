//! The in-process cache backend: a bounded moka cache whose entries each
//! expire at their own deadline.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::{CompResult, Op};

use crate::StorageError;

/// Most entries kept; the least useful are evicted beyond that.
const MAX_ENTRIES: u64 = 100_000;

/// In-process cache; clones share the same entries.
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::future::Cache<String, Stored>,
    prefix: Arc<str>,
}

#[derive(Clone)]
struct Stored {
    bytes: Arc<[u8]>,
    expires_at: Instant,
}

impl Stored {
    fn live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

/// Each entry lives until the deadline stored in it; an update (a new `set`,
/// a counter increment) takes the deadline of the new value.
struct PerEntryDeadline;

impl Expiry<String, Stored> for PerEntryDeadline {
    fn expire_after_create(&self, _: &String, v: &Stored, created_at: Instant) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Stored,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(updated_at))
    }
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("namespace", &self.prefix)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl MemoryCache {
    pub(crate) fn new(namespace: &str) -> MemoryCache {
        MemoryCache {
            inner: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(PerEntryDeadline)
                .build(),
            prefix: super::key_prefix(namespace).into(),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        // moka drops expired entries lazily; never hand one out.
        let now = Instant::now();
        self.inner.get(&self.key(key)).await.filter(|s| s.live(now)).map(|s| s.bytes.to_vec())
    }

    pub(crate) async fn set(&self, key: &str, value: &[u8], ttl: Duration) {
        let stored = Stored { bytes: value.into(), expires_at: deadline(Instant::now(), ttl) };
        self.inner.insert(self.key(key), stored).await;
    }

    pub(crate) async fn delete(&self, key: &str) {
        self.inner.invalidate(&self.key(key)).await;
    }

    pub(crate) async fn exists(&self, key: &str) -> bool {
        let now = Instant::now();
        self.inner.get(&self.key(key)).await.is_some_and(|s| s.live(now))
    }

    pub(crate) async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StorageError> {
        let now = Instant::now();
        // moka runs compute closures for one key strictly one after another,
        // so read-increment-write here cannot lose updates.
        let result = self
            .inner
            .entry(self.key(key))
            .and_try_compute_with(|current| {
                let next = match current.map(|e| e.into_value()).filter(|s| s.live(now)) {
                    Some(s) => parse_count(&s.bytes).map(|n| Stored {
                        bytes: n.saturating_add(1).to_string().into_bytes().into(),
                        expires_at: s.expires_at,
                    }),
                    None => Ok(Stored { bytes: Arc::from(&b"1"[..]), expires_at: deadline(now, window) }),
                };
                std::future::ready(next.map(Op::Put))
            })
            .await?;
        let stored = match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => e.into_value(),
            _ => {
                return Err(StorageError::CacheValue("counter update was not applied".into()));
            }
        };
        let count = parse_count(&stored.bytes)?;
        Ok((count, stored.expires_at.saturating_duration_since(now)))
    }
}

fn deadline(now: Instant, ttl: Duration) -> Instant {
    // `ttl` is capped at 10 years by the caller, so this cannot overflow in
    // practice; fall back to the cap's order of magnitude anyway.
    now.checked_add(ttl).or_else(|| now.checked_add(super::MAX_TTL)).unwrap_or(now)
}

fn parse_count(bytes: &[u8]) -> Result<u64, StorageError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| StorageError::CacheValue("the key holds a value that is not a counter".into()))
}
