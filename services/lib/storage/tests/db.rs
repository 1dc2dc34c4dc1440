//! The database contract, run on SQLite always and on MariaDB when
//! `MALL_TEST_DATABASE_URL` is set (required in CI).

use std::time::{Duration, Instant};

use mall_storage::sqlx::migrate::{MigrateDatabase, MigrateError, Migration, MigrationType, Migrator};
use mall_storage::sqlx::{self, MySql, SqlSafeStr};
use mall_storage::{
    Backend, Db, Migrations, StorageError, database_url_with_name, is_unique_violation, service_database_url,
    sqlite_url_in,
};
use mall_testkit::{TEST_DATABASE_PREFIX, unique_name};
use tokio::task::JoinSet;

const WRITERS: usize = 50;

fn test_migrations() -> Migrations {
    mall_storage::migrations!(mysql = "tests/migrations/mysql", sqlite = "tests/migrations/sqlite",)
}

/// What the next image ships: the test set and one more, additive migration.
fn newer_migrations() -> Migrations {
    fn plus_one(older: &Migrator, sql: &'static str) -> Migrator {
        let mut all: Vec<Migration> = older.iter().cloned().collect();
        all.push(Migration::new(3, "added_later".into(), MigrationType::Simple, sql.into_sql_str(), false));
        Migrator::with_migrations(all)
    }
    let older = test_migrations();
    Migrations::new(
        plus_one(
            older.for_backend(Backend::MySql),
            "CREATE TABLE added_later (id BIGINT NOT NULL PRIMARY KEY)",
        ),
        plus_one(
            older.for_backend(Backend::Sqlite),
            "CREATE TABLE added_later (id INTEGER NOT NULL PRIMARY KEY)",
        ),
    )
}

/// A rollback: the newer image migrated the database, then the tag goes back and the previous image's
/// migration Job runs again. It succeeds and leaves the newer schema alone.
async fn check_rollback_after_newer_migrations(db: &Db) {
    let (older, newer) = (test_migrations(), newer_migrations());
    assert_eq!(db.pending_migrations(&older).await.expect("pending on a fresh database"), [1, 2]);
    db.migrate(&newer).await.expect("the newer image migrates");
    assert_eq!(count(db, "SELECT COUNT(*) FROM _sqlx_migrations").await, 3);
    assert!(db.pending_migrations(&newer).await.expect("pending").is_empty());

    db.migrate(&older).await.expect("the previous image's migrations accept the newer schema");
    assert!(db.pending_migrations(&older).await.expect("pending").is_empty(), "it can serve");
    assert_eq!(count(db, "SELECT COUNT(*) FROM _sqlx_migrations").await, 3);
    assert_eq!(count(db, "SELECT COUNT(*) FROM added_later").await, 0, "the newer table stays");

    // What sqlx does by default, and what `Migrations` is there to prevent.
    let strict = Migrator::with_migrations(older.for_backend(db.backend()).iter().cloned().collect());
    let refused = strict.run(db.pool()).await.expect_err("a strict migrator refuses unknown versions");
    assert!(matches!(refused, MigrateError::VersionMissing(3)), "{refused}");
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn stock(db: &Db, id: i64) -> i64 {
    sqlx::query_scalar("SELECT stock FROM items WHERE id = ?")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("read stock")
}

/// What every service relies on, for any backend.
async fn check_db_contract(db: Db) {
    db.ping().await.expect("ping");

    // Migrations: the backend's own set runs, and a second run is a no-op.
    let migrations = test_migrations();
    db.migrate(&migrations).await.expect("first migrate");
    db.migrate(&migrations).await.expect("second migrate");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM _sqlx_migrations").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM meta").await, 1);
    let backend: String = sqlx::query_scalar("SELECT v FROM meta WHERE k = 'backend'")
        .fetch_one(db.pool())
        .await
        .expect("meta");
    assert_eq!(backend, db.backend().as_str());

    check_unique_violation(&db).await;
    check_conditional_decrement(&db).await;
    check_concurrent_transactions(&db).await;
}

async fn check_unique_violation(db: &Db) {
    let insert = "INSERT INTO items (id, name, stock) VALUES (?, ?, ?)";
    sqlx::query(insert).bind(1_i64).bind("apple").bind(5_i64).execute(db.pool()).await.expect("first insert");
    for (id, name) in [(2_i64, "apple"), (1_i64, "pear")] {
        let e = sqlx::query(insert)
            .bind(id)
            .bind(name)
            .bind(1_i64)
            .execute(db.pool())
            .await
            .expect_err("duplicate key must fail");
        assert!(is_unique_violation(&e), "duplicate ({id}, {name}): {e}");
    }

    let fk = sqlx::query("INSERT INTO ledger (counter_id, note) VALUES (?, ?)")
        .bind(999_i64)
        .bind("orphan")
        .execute(db.pool())
        .await
        .expect_err("foreign keys must be enforced");
    assert!(matches!(&fk, sqlx::Error::Database(d) if d.is_foreign_key_violation()), "{fk}");
    let others = [
        fk,
        sqlx::query("INSERT INTO items (id, name, stock) VALUES (3, NULL, 1)")
            .execute(db.pool())
            .await
            .expect_err("NOT NULL"),
        sqlx::query("SELEC 1").execute(db.pool()).await.expect_err("syntax"),
        sqlx::query("SELECT * FROM no_such_table").execute(db.pool()).await.expect_err("missing table"),
        sqlx::query_scalar::<_, i64>("SELECT id FROM items WHERE id = ?")
            .bind(12345_i64)
            .fetch_one(db.pool())
            .await
            .expect_err("no row"),
    ];
    for e in &others {
        assert!(!is_unique_violation(e), "not a unique violation: {e}");
    }
}

/// The stock-reservation pattern: 50 concurrent conditional decrements on
/// stock 10 give exactly 10 successes and stock 0.
async fn check_conditional_decrement(db: &Db) {
    sqlx::query("INSERT INTO items (id, name, stock) VALUES (?, ?, ?)")
        .bind(100_i64)
        .bind("widget")
        .bind(10_i64)
        .execute(db.pool())
        .await
        .expect("insert widget");
    let mut tasks = JoinSet::new();
    for _ in 0..WRITERS {
        let pool = db.pool().clone();
        tasks.spawn(async move {
            sqlx::query("UPDATE items SET stock = stock - 1 WHERE id = ? AND stock >= 1")
                .bind(100_i64)
                .execute(&pool)
                .await
                .map(|r| r.rows_affected())
        });
    }
    let mut reserved = 0;
    while let Some(joined) = tasks.join_next().await {
        reserved += joined.expect("task").expect("decrement must not fail");
    }
    assert_eq!(reserved, 10);
    assert_eq!(stock(db, 100).await, 0);
}

/// 50 concurrent short transactions (write first, then insert) all commit.
async fn check_concurrent_transactions(db: &Db) {
    sqlx::query("INSERT INTO counters (id, n) VALUES (1, 0)")
        .execute(db.pool())
        .await
        .expect("insert counter");
    let mut tasks = JoinSet::new();
    for i in 0..WRITERS {
        let pool = db.pool().clone();
        tasks.spawn(async move {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1").execute(&mut *tx).await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            sqlx::query("INSERT INTO ledger (counter_id, note) VALUES (1, ?)")
                .bind(format!("writer {i}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("transaction must commit");
    }
    assert_eq!(count(db, "SELECT n FROM counters WHERE id = 1").await, 50);
    assert_eq!(count(db, "SELECT COUNT(*) FROM ledger").await, 50);
}

/// Every pooled SQLite connection waits for locks and enforces foreign keys.
async fn check_sqlite_pragmas(db: &Db) {
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(db.pool().acquire().await.expect("acquire"));
    }
    for conn in &mut conns {
        let busy: i64 =
            sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut **conn).await.expect("busy_timeout");
        assert!(busy >= 5000, "busy_timeout {busy}");
        let fk: i64 =
            sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut **conn).await.expect("foreign_keys");
        assert_eq!(fk, 1);
        let mode: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut **conn).await.expect("journal_mode");
        assert_eq!(mode.to_lowercase(), "wal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sqlite_url_in(&dir.path().join("nested/dir"), "mall");
    let url = service_database_url(&base, "auth").expect("service url");
    let file = dir.path().join("nested/dir/mall_auth.db");
    assert!(!file.exists());

    let db = Db::connect(&url).await.expect("connect");
    assert!(file.exists(), "connect creates the file and its directories");
    assert_eq!(db.backend(), Backend::Sqlite);
    check_sqlite_pragmas(&db).await;
    check_db_contract(db.clone()).await;
    db.close().await;

    // Reopening keeps the data, and migrating again changes nothing.
    let db = Db::connect(&url).await.expect("reconnect");
    db.migrate(&test_migrations()).await.expect("migrate again");
    assert_eq!(stock(&db, 100).await, 0);
    db.close().await;
}

#[tokio::test]
async fn sqlite_url_without_mode_creates_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain.db");
    let db = Db::connect(&format!("sqlite://{}", file.display())).await.expect("connect");
    db.ping().await.expect("ping");
    assert!(file.exists());
    db.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_connects() {
    let url = service_database_url("sqlite::memory:", "auth").expect("service url");
    assert_eq!(url, "sqlite::memory:");
    let db = Db::connect(&url).await.expect("connect");
    db.ping().await.expect("ping");
    db.migrate(&test_migrations()).await.expect("migrate");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_contract() {
    let Some(base) = mall_testkit::database_url() else {
        return;
    };
    let name = unique_name(TEST_DATABASE_PREFIX.trim_end_matches('_'));
    let url = database_url_with_name(&base, &name).expect("test database url");
    assert!(!MySql::database_exists(&url).await.expect("exists?"));

    let run = tokio::spawn({
        let url = url.clone();
        async move {
            let db = Db::connect(&url).await.expect("connect");
            assert!(MySql::database_exists(&url).await.expect("exists?"));
            assert_eq!(db.backend(), Backend::MySql);
            let again = Db::connect(&url).await.expect("connect to existing database");
            again.ping().await.expect("ping");
            again.close().await;
            check_db_contract(db.clone()).await;
            db.close().await;
        }
    })
    .await;
    MySql::drop_database(&url).await.expect("drop test database");
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn sqlite_rollback_after_newer_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(&sqlite_url_in(dir.path(), "rollback")).await.expect("connect");
    check_rollback_after_newer_migrations(&db).await;
    db.close().await;
}

#[tokio::test]
async fn mariadb_rollback_after_newer_migrations() {
    let Some(base) = mall_testkit::database_url() else {
        return;
    };
    let name = unique_name(TEST_DATABASE_PREFIX.trim_end_matches('_'));
    let url = database_url_with_name(&base, &name).expect("test database url");
    let run = tokio::spawn({
        let url = url.clone();
        async move {
            let db = Db::connect(&url).await.expect("connect");
            check_rollback_after_newer_migrations(&db).await;
            db.close().await;
        }
    })
    .await;
    MySql::drop_database(&url).await.expect("drop test database");
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn bad_urls_fail_cleanly() {
    let e = Db::connect("postgres://u:hunter2@h/db").await.unwrap_err();
    assert!(matches!(e, StorageError::UnsupportedUrl { .. }), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let e = Db::connect("mysql://u:hunter2@127.0.0.1:1").await.unwrap_err();
    assert!(matches!(e, StorageError::InvalidUrl { .. }), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    // Nothing listens on port 1: a prompt error, not a hang or a panic.
    let started = Instant::now();
    let e = Db::connect("mysql://u:hunter2@127.0.0.1:1/mall_x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(15), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
