//! Helpers shared by Mall's tests: where the real test servers are (MariaDB,
//! Redis) and unique names so parallel tests and CI runs never collide.
//!
//! The real-server tests run when `MALL_TEST_DATABASE_URL` /
//! `MALL_TEST_REDIS_URL` are set. Locally they are skipped with a note when the
//! variables are missing; in CI (`CI=true`) a missing variable is a hard
//! failure, so a misconfigured pipeline can never silently skip them.

pub mod otlp;

/// Every database created by a test starts with this prefix, so a CI script can
/// drop all leftovers with one query
/// (`SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'mall\_t\_%'`).
pub const TEST_DATABASE_PREFIX: &str = "mall_t_";

/// Environment variable holding the MariaDB/MySQL base URL for tests,
/// e.g. `mysql://root@127.0.0.1:3306/mall_test`.
pub const DATABASE_URL_VAR: &str = "MALL_TEST_DATABASE_URL";

/// Environment variable holding the Redis URL for tests, e.g. `redis://127.0.0.1:6379`.
pub const REDIS_URL_VAR: &str = "MALL_TEST_REDIS_URL";

/// The MariaDB base URL for tests, or `None` (with a note on stderr) when the
/// tests should be skipped.
///
/// # Panics
/// When `CI=true` and `MALL_TEST_DATABASE_URL` is not set: the MariaDB tests
/// must not be skipped in CI.
pub fn database_url() -> Option<String> {
    server_url(DATABASE_URL_VAR, "MariaDB")
}

/// The Redis URL for tests, or `None` (with a note on stderr) when the tests
/// should be skipped.
///
/// # Panics
/// When `CI=true` and `MALL_TEST_REDIS_URL` is not set: the Redis tests must not
/// be skipped in CI.
pub fn redis_url() -> Option<String> {
    server_url(REDIS_URL_VAR, "Redis")
}

/// `prefix` + `_` + 12 lowercase hex characters from a random UUID v4.
///
/// With a prefix made of ASCII letters, digits and `_` the result is a valid
/// MySQL database name and a safe Redis key prefix. Use
/// `unique_name("mall_t")` for test databases (see [`TEST_DATABASE_PREFIX`]).
pub fn unique_name(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    // The first 12 hex digits of a v4 UUID are all random (the version nibble
    // is the 13th).
    format!("{prefix}_{}", &hex[..12])
}

fn server_url(var: &str, what: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    resolve(value, is_ci(), var, what)
}

fn is_ci() -> bool {
    std::env::var("CI").map(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1").unwrap_or(false)
}

fn resolve(value: Option<String>, ci: bool, var: &str, what: &str) -> Option<String> {
    match value {
        Some(url) => Some(url),
        None if ci => panic!("CI=true but {var} is not set: the {what} tests must not be skipped in CI"),
        None => {
            eprintln!("note: {var} is not set; skipping the {what} tests");
            None
        }
    }
}

/// A migrated database for one test: a SQLite file in a temp dir, or a fresh MariaDB database that
/// [`TestDb::drop_database`] removes.
pub struct TestDb {
    pub db: mall_storage::Db,
    mariadb: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// SQLite, always available.
    pub async fn sqlite(migrations: &mall_storage::Migrations) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = mall_storage::Db::connect(&mall_storage::sqlite_url_in(dir.path(), "test"))
            .await
            .expect("open SQLite");
        db.migrate(migrations).await.expect("migrate SQLite");
        TestDb { db, mariadb: None, _dir: Some(dir) }
    }

    /// A new MariaDB database, or `None` when the tests run without one (never in CI).
    pub async fn mariadb(migrations: &mall_storage::Migrations) -> Option<TestDb> {
        let base = database_url()?;
        let name = unique_name("mall_t");
        let url = mall_storage::database_url_with_name(&base, &name).expect("test database URL");
        let db = mall_storage::Db::connect(&url).await.expect("open MariaDB");
        db.migrate(migrations).await.expect("migrate MariaDB");
        Some(TestDb { db, mariadb: Some((base, name)), _dir: None })
    }

    /// Closes the pool and drops a MariaDB database (SQLite files go with the temp dir).
    pub async fn drop_database(self) {
        self.db.close().await;
        if let Some((base, name)) = self.mariadb {
            drop_databases(&base, &name).await;
        }
    }
}

/// Drops every database whose name starts with `prefix` (a test's `<name>` and `<name>_<service>`).
pub async fn drop_databases(base: &str, prefix: &str) {
    use mall_storage::sqlx::{self, Executor as _};
    assert!(prefix.starts_with(TEST_DATABASE_PREFIX), "only test databases are dropped");
    let db = mall_storage::Db::connect(base).await.expect("the test server is reachable");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT schema_name FROM information_schema.schemata")
        .fetch_all(db.pool())
        .await
        .expect("list databases");
    for (schema,) in rows.into_iter().filter(|(s,)| s.starts_with(prefix)) {
        let statement = format!("DROP DATABASE `{schema}`");
        db.pool().execute(sqlx::AssertSqlSafe(statement)).await.expect("drop test database");
    }
    db.close().await;
}

/// A cache on the test Redis with its own namespace, or `None` when the tests run without one.
pub async fn redis_cache() -> Option<mall_storage::Cache> {
    let url = redis_url()?;
    Some(mall_storage::Cache::redis(&url, &unique_name("mall_t")).await.expect("connect to the test Redis"))
}

/// The database a service scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file, always available.
    Sqlite,
    /// A fresh MariaDB database, when `MALL_TEST_DATABASE_URL` is set (always in CI).
    Mariadb,
}

/// Generates, for every named scenario, one `#[tokio::test]` on SQLite (`mod sqlite`) and one on
/// MariaDB (`mod mariadb`), each calling `$run(Backend, scenario)` — the caller's runner starts the
/// services on that backend (and returns early when MariaDB is not configured outside CI).
#[macro_export]
macro_rules! on_both_backends {
    ($run:path; $($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    $run($crate::Backend::Sqlite, super::$scenario).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    $run($crate::Backend::Mariadb, super::$scenario).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn unique_name_has_prefix_and_12_lowercase_hex() {
        let name = unique_name("mall_t");
        let hex = name.strip_prefix("mall_t_").expect("prefix kept");
        assert_eq!(hex.len(), 12, "{name}");
        assert!(hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{name}");
        assert!(name.starts_with(TEST_DATABASE_PREFIX));
    }

    #[test]
    fn unique_name_is_a_valid_mysql_identifier() {
        let name = unique_name("mall_t");
        assert!(name.len() <= 64);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn unique_names_do_not_repeat() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("x")).collect();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn resolve_passes_a_set_url_through() {
        let url = Some("redis://127.0.0.1".to_string());
        assert_eq!(resolve(url.clone(), true, "V", "Redis"), url, "set in CI");
        assert_eq!(resolve(url.clone(), false, "V", "Redis"), url);
    }

    #[test]
    fn resolve_skips_outside_ci() {
        assert_eq!(resolve(None, false, "V", "Redis"), None);
    }

    #[test]
    #[should_panic(expected = "CI=true but V is not set: the Redis tests must not be skipped in CI")]
    fn resolve_panics_in_ci() {
        let _ = resolve(None, true, "V", "Redis");
    }
}
