//! SQL database access: one pool per service over sqlx's `Any` driver, so the
//! same queries (with `?` placeholders) run on MySQL/MariaDB and on SQLite.
//!
//! [`Db::connect`] creates the service's database (MySQL) or file (SQLite) when
//! missing and tunes SQLite for concurrent writers (WAL, `busy_timeout`), so
//! short write transactions from many tasks wait for each other instead of
//! failing with "database is locked".

pub(crate) mod account;
pub(crate) mod url;

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, AnyPool, Executor, MySql};

use crate::StorageError;
use crate::telemetry::PoolGauges;
use url::redact_url;

/// Most connections a pool opens unless told otherwise ([`Db::connect_sized`]).
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// A pooled connection idle for this long is pinged before it is handed out; one used more recently
/// is handed out as it is (a ping is a round trip to the server on every acquire otherwise). A
/// connection that died anyway fails its statement, which the caller sees like any other error.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(2);
/// Longest wait for a pooled connection (and for opening one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the MySQL server while creating the database.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection SQLite settings, run on every new pooled connection.
/// `busy_timeout` makes a writer wait (up to 5 s) for the write lock instead
/// of failing at once; `synchronous = NORMAL` is the usual, safe pairing with WAL.
const SQLITE_CONNECTION_PRAGMAS: [&str; 3] =
    ["PRAGMA busy_timeout = 5000", "PRAGMA foreign_keys = ON", "PRAGMA synchronous = NORMAL"];

/// Which SQL database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    MySql,
    /// SQLite (`sqlite:`).
    Sqlite,
}

impl Backend {
    /// The backend a URL names: `mysql://` and `mariadb://` are MySQL,
    /// `sqlite:` is SQLite. Anything else is [`StorageError::UnsupportedUrl`]
    /// (with any password in the URL redacted).
    pub fn from_url(url: &str) -> Result<Backend, StorageError> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Backend::MySql)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StorageError::UnsupportedUrl { url: redact_url(url) })
        }
    }

    /// `"mysql"` or `"sqlite"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's migrations, one set per backend (their SQL dialects differ).
/// Build it with [`migrations!`](crate::migrations).
///
/// Migrations are additive (expand now, contract a release later), so the previous image keeps
/// running against a newer schema, and a rollback sets the image tag back. Its migration run then
/// meets versions it does not know: they are ignored (sqlx's `ignore_missing`), instead of failing
/// the rollback. A changed migration (same version, other checksum) still fails.
#[derive(Debug)]
pub struct Migrations {
    mysql: Migrator,
    sqlite: Migrator,
}

impl Migrations {
    /// The two sets, each told to ignore applied migrations it does not know (see above).
    pub fn new(mut mysql: Migrator, mut sqlite: Migrator) -> Migrations {
        mysql.set_ignore_missing(true);
        sqlite.set_ignore_missing(true);
        Migrations { mysql, sqlite }
    }

    /// The set for `backend`.
    pub fn for_backend(&self, backend: Backend) -> &Migrator {
        match backend {
            Backend::MySql => &self.mysql,
            Backend::Sqlite => &self.sqlite,
        }
    }
}

/// A pool of connections to one service's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Samples the pool for `/metrics` while a clone of this `Db` lives.
    _gauges: Arc<PoolGauges>,
}

impl Db {
    /// Opens a pool (at most [`DEFAULT_POOL_SIZE`] connections, 5 s acquire timeout) to `url`.
    ///
    /// * MySQL/MariaDB: the database named in the URL is created first if it
    ///   does not exist (the URL must name one; see
    ///   [`service_database_url`](crate::service_database_url)).
    /// * SQLite: the parent directory and the file are created if missing
    ///   (unless the URL says `mode=ro`/`mode=rw`), the database is switched to
    ///   WAL, and every connection gets `busy_timeout = 5000` and
    ///   `foreign_keys = ON`.
    pub async fn connect(url: &str) -> Result<Db, StorageError> {
        Db::connect_sized(url, DEFAULT_POOL_SIZE).await
    }

    /// [`Db::connect`] with a pool of at most `max_connections` (at least 1). On a MySQL server, every
    /// replica of every service opens up to this many: their sum must stay under the server's
    /// `max_connections`.
    pub async fn connect_sized(url: &str, max_connections: u32) -> Result<Db, StorageError> {
        install_drivers();
        let backend = Backend::from_url(url)?;
        let max_connections = max_connections.max(1);
        let options = pool_options(max_connections);
        let pool = match backend {
            Backend::MySql => connect_mysql(url, options).await?,
            Backend::Sqlite => connect_sqlite(url, options).await?,
        };
        tracing::debug!(backend = %backend, url = %redact_url(url), "database pool open");
        crate::telemetry::set_db_system(match backend {
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        });
        let gauges = Arc::new(PoolGauges::start(database_label(url, backend), pool.clone(), max_connections));
        Ok(Db { pool, backend, _gauges: gauges })
    }

    /// The connection pool, for running queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this pool talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs the migrations for this pool's backend; already applied
    /// migrations are skipped, so running it again is a no-op, and applied
    /// migrations newer than the set (a rolled-back image) are left alone.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StorageError> {
        migrations.for_backend(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// The versions of `migrations` (for this pool's backend) not applied to the database yet, in
    /// order; all of them when no migration ever ran. Reads only: a server checks its schema with it.
    pub async fn pending_migrations(&self, migrations: &Migrations) -> Result<Vec<i64>, StorageError> {
        let exists = match self.backend {
            Backend::MySql => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
        };
        let tables: i64 = sqlx::query_scalar(exists).fetch_one(&self.pool).await?;
        let applied: Vec<i64> = if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await?
        };
        Ok(migrations
            .for_backend(self.backend)
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect())
    }

    /// Checks that the database answers (`SELECT 1`), for readiness probes.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; waits for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// True when `e` is a unique-key (or primary-key) violation, on MySQL/MariaDB
/// and SQLite alike.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// True when the database could not be reached or was too busy to answer (connection lost, pool
/// exhausted, MySQL lock wait timeout or deadlock, SQLite busy or locked): a retry may succeed, so
/// services answer UNAVAILABLE rather than INTERNAL.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Lock wait timeout, deadlock, server shutdown, server gone, connection lost.
                return matches!(mysql.number(), 1205 | 1213 | 1053 | 2006 | 2013);
            }
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
                let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(-1);
                return matches!(code & 0xff, 5 | 6);
            }
            false
        }
        _ => false,
    }
}

/// True when MySQL/MariaDB chose this transaction as a deadlock victim and rolled it back: running it
/// again is the documented remedy.
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|m| m.number() == 1213))
}

fn install_drivers() {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        // Every acquisition's wait, for `mall_db_pool_acquire_duration_seconds` (see `telemetry`).
        .acquire_time_level(log::LevelFilter::Debug)
}

/// The `db` label of a pool's metrics: the MySQL database's name, or the SQLite file's stem.
fn database_label(url: &str, backend: Backend) -> String {
    let name = match backend {
        Backend::MySql => url::mysql_database_name(url).ok().map(str::to_owned),
        Backend::Sqlite => url::sqlite_file_path(url)
            .ok()
            .flatten()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())),
    };
    name.unwrap_or_else(|| backend.as_str().to_owned())
}

async fn connect_mysql(url: &str, options: AnyPoolOptions) -> Result<AnyPool, StorageError> {
    url::mysql_database_name(url)?;
    let ensure = async {
        if !MySql::database_exists(url).await? {
            if let Err(e) = MySql::create_database(url).await {
                // Another service replica may have created it meanwhile.
                if !MySql::database_exists(url).await? {
                    return Err(e);
                }
            } else {
                tracing::info!(url = %redact_url(url), "created database");
            }
        }
        Ok::<(), sqlx::Error>(())
    };
    tokio::time::timeout(CREATE_TIMEOUT, ensure).await.map_err(|_| StorageError::Timeout {
        what: format!("MySQL server at {}", redact_url(url)),
        after: CREATE_TIMEOUT,
    })??;
    Ok(options.connect(url).await?)
}

async fn connect_sqlite(url: &str, options: AnyPoolOptions) -> Result<AnyPool, StorageError> {
    let file = url::sqlite_file_path(url)?;
    if let Some(dir) = file.as_deref().and_then(|f| f.parent())
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|source| StorageError::Io { path: dir.display().to_string(), source })?;
    }
    let url = url::sqlite_with_create_mode(url)?;
    let pool = options
        .after_connect(|conn: &mut AnyConnection, _: PoolConnectionMetadata| {
            Box::pin(async move {
                for pragma in SQLITE_CONNECTION_PRAGMAS {
                    conn.execute(pragma).await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    // The journal mode is stored in the database file: set once, it holds
    // for every connection.
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL").fetch_one(&pool).await?;
    if file.is_some() && !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(url = %redact_url(&url), mode = %mode, "SQLite did not switch to WAL");
    }
    Ok(pool)
}
