//! The Redis cache backend: one multiplexed, self-reconnecting connection
//! (`ConnectionManager`) shared by all clones.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

use crate::StorageError;
use crate::db::url::redact_url;

/// Longest wait for the server at startup.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Per connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// INCR + (P)EXPIRE + PTTL in one atomic step. The expiry is set whenever the
/// key has none: on the first hit, and to repair a counter left without one.
static HIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
",
    )
});

/// Redis cache; clones share one connection.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache").field("namespace", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisCache {
    pub(crate) async fn connect(url: &str, namespace: &str) -> Result<RedisCache, StorageError> {
        let client = redis::Client::open(url)
            .map_err(|e| StorageError::InvalidUrl { url: redact_url(url), reason: e.to_string() })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let start = async {
            drop(first_connection(&client).await?);
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = tokio::time::timeout(STARTUP_TIMEOUT, start).await.map_err(|_| {
            StorageError::Timeout { what: format!("Redis at {}", redact_url(url)), after: STARTUP_TIMEOUT }
        })??;
        tracing::debug!(url = %redact_url(url), namespace, "redis cache connected");
        Ok(RedisCache { conn, prefix: super::key_prefix(namespace).into() })
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET").arg(self.key(key)).query_async(&mut conn).await?)
    }

    pub(crate) async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL").arg(self.key(key)).exec_async(&mut conn).await?;
        Ok(())
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS").arg(self.key(key)).query_async(&mut conn).await?;
        Ok(n > 0)
    }

    pub(crate) async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StorageError> {
        let mut conn = self.conn.clone();
        let (count, ttl_ms): (i64, i64) =
            HIT.key(self.key(key)).arg(millis(window)).invoke_async(&mut conn).await?;
        let count = u64::try_from(count)
            .map_err(|_| StorageError::CacheValue(format!("counter is negative: {count}")))?;
        let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
        Ok((count, ttl))
    }

    pub(crate) async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

/// Whole milliseconds; the caller already rounded up and capped the duration.
/// A first connection to check that the server takes us in, made by hand: the connection manager
/// retries every failure until the startup timeout, so a wrong or missing password would only show
/// as a server that does not answer. Here only failing to reach the server is retried; the server's
/// answer (`WRONGPASS`, `NOAUTH`) is returned at once.
async fn first_connection(client: &redis::Client) -> Result<MultiplexedConnection, redis::RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    loop {
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match attempt.await {
            Ok(conn) => return Ok(conn),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
