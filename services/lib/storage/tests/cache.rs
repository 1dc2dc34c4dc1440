//! The cache contract, run on the in-memory backend always and on Redis when
//! `MALL_TEST_REDIS_URL` is set (required in CI).

use std::time::{Duration, Instant};

use mall_storage::{Cache, StorageError};
use mall_testkit::unique_name;
use tokio::task::JoinSet;

const MINUTE: Duration = Duration::from_secs(60);

async fn check_cache_contract(cache: Cache) {
    cache.ping().await.expect("ping");

    // set / get / exists / overwrite / delete
    assert_eq!(cache.get("absent").await.unwrap(), None);
    assert!(!cache.exists("absent").await.unwrap());
    cache.set("k", b"v1", MINUTE).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v1".to_vec()));
    assert!(cache.exists("k").await.unwrap());
    cache.set("k", b"v2", MINUTE).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v2".to_vec()));
    cache.delete("k").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(!cache.exists("k").await.unwrap());
    cache.delete("k").await.expect("deleting an absent key is fine");

    let binary = [0_u8, 255, 10, 13, 0, b':'];
    cache.set("bin", &binary, MINUTE).await.unwrap();
    assert_eq!(cache.get("bin").await.unwrap(), Some(binary.to_vec()));
    cache.set("empty", b"", MINUTE).await.unwrap();
    assert_eq!(cache.get("empty").await.unwrap(), Some(Vec::new()));

    // Bad durations are errors, not panics.
    let zero = cache.set("z", b"x", Duration::ZERO).await.unwrap_err();
    assert!(matches!(zero, StorageError::InvalidArgument(_)), "{zero}");
    let zero = cache.hit("z", Duration::ZERO).await.unwrap_err();
    assert!(matches!(zero, StorageError::InvalidArgument(_)), "{zero}");
    assert!(!cache.exists("z").await.unwrap());

    check_ttl(&cache).await;
    check_hit(&cache).await;
    check_concurrent_hits(&cache).await;
}

async fn check_ttl(cache: &Cache) {
    cache.set("short", b"x", Duration::from_millis(200)).await.unwrap();
    // Replacing a value replaces its TTL too.
    cache.set("renewed", b"x", Duration::from_millis(200)).await.unwrap();
    cache.set("renewed", b"y", MINUTE).await.unwrap();
    cache.set("shortened", b"x", MINUTE).await.unwrap();
    cache.set("shortened", b"y", Duration::from_millis(200)).await.unwrap();
    assert_eq!(cache.get("short").await.unwrap(), Some(b"x".to_vec()));

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get("short").await.unwrap(), None);
    assert!(!cache.exists("short").await.unwrap());
    assert_eq!(cache.get("shortened").await.unwrap(), None);
    assert_eq!(cache.get("renewed").await.unwrap(), Some(b"y".to_vec()));
}

async fn check_hit(cache: &Cache) {
    let window = Duration::from_millis(600);
    for expected in 1..=3 {
        let (n, reset) = cache.hit("ctr", window).await.unwrap();
        assert_eq!(n, expected);
        assert!(reset > Duration::ZERO && reset <= window, "{reset:?}");
    }
    // The counter is visible as decimal text, the same in both backends.
    assert_eq!(cache.get("ctr").await.unwrap(), Some(b"3".to_vec()));
    // Later hits do not extend the window.
    let (_, reset) = cache.hit("ctr", MINUTE).await.unwrap();
    assert!(reset <= window, "{reset:?}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let (n, reset) = cache.hit("ctr", window).await.unwrap();
    assert_eq!(n, 1, "a new window starts after the old one expired");
    assert!(reset > Duration::from_millis(300) && reset <= window, "{reset:?}");

    cache.set("text", b"not a number", MINUTE).await.unwrap();
    assert!(cache.hit("text", MINUTE).await.is_err());
    assert_eq!(cache.get("text").await.unwrap(), Some(b"not a number".to_vec()));
}

async fn check_concurrent_hits(cache: &Cache) {
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let cache = cache.clone();
        tasks.spawn(async move { cache.hit("burst", MINUTE).await });
    }
    let mut counts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        counts.push(joined.expect("task").expect("hit").0);
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=100).collect::<Vec<u64>>(), "no lost or repeated hits");
    assert_eq!(cache.get("burst").await.unwrap(), Some(b"100".to_vec()));
}

async fn check_isolation(a: Cache, b: Cache) {
    assert_ne!(a.namespace(), b.namespace());
    a.set("shared", b"a", MINUTE).await.unwrap();
    assert_eq!(b.get("shared").await.unwrap(), None);
    assert!(!b.exists("shared").await.unwrap());
    b.set("shared", b"b", MINUTE).await.unwrap();
    assert_eq!(a.get("shared").await.unwrap(), Some(b"a".to_vec()));
    assert_eq!(b.get("shared").await.unwrap(), Some(b"b".to_vec()));
    a.delete("shared").await.unwrap();
    assert_eq!(b.get("shared").await.unwrap(), Some(b"b".to_vec()));
    assert_eq!(a.hit("hits", MINUTE).await.unwrap().0, 1);
    assert_eq!(b.hit("hits", MINUTE).await.unwrap().0, 1);
    assert_eq!(a.hit("hits", MINUTE).await.unwrap().0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_contract() {
    let cache = Cache::memory("test");
    assert_eq!(cache.kind(), "memory");
    assert_eq!(cache.namespace(), "test:");
    check_cache_contract(cache).await;
    check_isolation(Cache::memory("a"), Cache::memory("b")).await;
}

#[tokio::test]
async fn memory_clones_share_entries() {
    let cache = Cache::memory("mall:");
    let clone = cache.clone();
    cache.set("k", b"v", MINUTE).await.unwrap();
    assert_eq!(clone.get("k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn from_config_picks_the_backend() {
    for url in [None, Some(""), Some("  ")] {
        let cache = Cache::from_config(url, "x").await.unwrap();
        assert_eq!(cache.kind(), "memory", "{url:?}");
    }
}

#[tokio::test]
async fn unreachable_or_bad_redis_fails_at_startup() {
    let started = Instant::now();
    let e = Cache::redis("redis://:hunter2@127.0.0.1:1", "x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(8), "bounded wait: {e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let e = Cache::redis("not a url", "x").await.unwrap_err();
    assert!(matches!(e, StorageError::InvalidUrl { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_contract() {
    let Some(url) = mall_testkit::redis_url() else {
        return;
    };
    let ns = unique_name("mall_t");
    let cache = Cache::redis(&url, &ns).await.expect("connect");
    assert_eq!(cache.kind(), "redis");
    let via_config = Cache::from_config(Some(&url), &ns).await.expect("from_config");
    assert_eq!(via_config.kind(), "redis");

    check_cache_contract(cache.clone()).await;

    // Keys really live under the namespace in Redis, with a millisecond TTL.
    cache.set("raw", b"v", Duration::from_secs(5)).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Option<Vec<u8>> =
        redis::cmd("GET").arg(format!("{ns}:raw")).query_async(&mut conn).await.unwrap();
    assert_eq!(raw, Some(b"v".to_vec()));
    let pttl: i64 = redis::cmd("PTTL").arg(format!("{ns}:raw")).query_async(&mut conn).await.unwrap();
    assert!(pttl > 0 && pttl <= 5000, "{pttl}");

    let other = Cache::redis(&url, &unique_name("mall_t")).await.expect("connect");
    check_isolation(cache, other).await;
}
