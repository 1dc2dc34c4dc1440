//! `mall restore-check` against the real MariaDB (a database that already has tables is refused) and
//! as the real binary (a refusal exits 2 with `refused: …` on stderr and writes no plan). The checks
//! of the backup itself are unit tests in `src/restore.rs`.
//!
//! The check counts the tables of the databases a manifest names, `mall_auth` … `mall_checkout`, which
//! others may use on a shared test server: here the emptiness check runs on throwaway databases.

use std::process::{Command, Stdio};

use mall::database::PATIENCE;
use mall::restore::{self, Refusal, RestoreError};
use mall_storage::sqlx;

/// The administrator's URL of the test server: its base URL without a database.
fn admin_url(base: &str) -> String {
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// Creates database `name` with `tables` tables.
async fn database_with_tables(base: &str, name: &str, tables: usize) {
    let url = mall_storage::database_url_with_name(base, name).unwrap();
    let db = mall_storage::Db::connect(&url).await.expect("create the test database");
    for table in ["first", "second", "third"].into_iter().take(tables) {
        let statement = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY)");
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(db.pool()).await.unwrap();
    }
    db.close().await;
}

#[tokio::test]
async fn restore_check_refuses_every_database_that_already_has_tables() {
    let Some(base) = mall_testkit::database_url() else { return };
    let admin = admin_url(&base);
    let prefix = mall_testkit::unique_name("mall_t");
    let (order, product, cart, user) = (
        format!("{prefix}_order"),
        format!("{prefix}_product"),
        format!("{prefix}_cart"),
        format!("{prefix}_user"),
    );

    let result = async {
        database_with_tables(&base, &order, 1).await;
        database_with_tables(&base, &product, 2).await;
        // Created but empty (what `mall provision` leaves); `user` is not there at all.
        database_with_tables(&base, &cart, 0).await;
        let refused = restore::check_empty(&admin, &[&order, &cart, &user, &product], PATIENCE).await;
        let empty = restore::check_empty(&admin, &[&cart, &user], PATIENCE).await;
        (refused, empty)
    }
    .await;
    mall_testkit::drop_databases(&base, &prefix).await;

    let (refused, empty) = result;
    let Err(RestoreError::Refused(refusal)) = refused else { panic!("expected a refusal: {refused:?}") };
    assert_eq!(refusal, Refusal::NotEmpty { databases: vec![(order.clone(), 1), (product.clone(), 2)] });
    let message = refusal.to_string();
    assert!(
        message.starts_with(&format!(
            "database {order} already has 1 table, database {product} already has 2 tables: a restore goes \
             only into an empty database"
        )),
        "{message}"
    );
    empty.expect("an empty database and a missing one are both fit for a restore");
}

#[test]
fn restore_check_refusal_exits_2_with_refused_on_stderr_and_writes_no_plan() {
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let there = backups.join("20261206T053000Z");
    std::fs::create_dir_all(&there).unwrap();
    std::fs::write(there.join("manifest.json"), "{}").unwrap();
    std::fs::create_dir_all(backups.join("20261207T053000Z.partial")).unwrap();
    let plan = root.path().join("plan.txt");
    // Nothing listens there; a refusal of the backup comes before any connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let output = Command::new(env!("CARGO_BIN_EXE_mall"))
        .arg("restore-check")
        .arg("--backup")
        .arg(backups.join("20261205T000000Z"))
        .arg("--plan")
        .arg(&plan)
        .env("MALL_DATABASE_ADMIN_URL", format!("mysql://root@127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(i32::from(restore::EXIT_REFUSED)), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("refused: no backup 20261205T000000Z in {} (there: 20261206T053000Z)\n", backups.display())
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("restoreChecked"), "{output:?}");
    assert!(!plan.exists(), "a refusal writes no plan");
}
