//! One MySQL user per service, against the real MariaDB (`MALL_TEST_DATABASE_URL`, required in CI):
//! what `provision_account` creates lets a service into its own database and nowhere else.

use mall_storage::sqlx::mysql::MySqlDatabaseError;
use mall_storage::sqlx::{self, AssertSqlSafe, Connection, MySqlConnection};
use mall_storage::{DatabaseAccount, Db, StorageError, provision_account};
use mall_testkit::unique_name;

/// `mysql://user[:password]@host:port` of a URL, without its database.
fn server_of(url: &str) -> String {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    url[..end].to_owned()
}

/// `host:port` of a URL.
fn host_of(url: &str) -> String {
    let server = server_of(url);
    let authority = &server[server.find("://").unwrap() + 3..];
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

fn password() -> String {
    // 28 characters from [0-9a-f_p]: what the account check accepts.
    format!("{}{}", unique_name("p"), unique_name("p"))
}

fn url_of(host: &str, user: &str, password: &str, database: &str) -> String {
    format!("mysql://{user}:{password}@{host}/{database}")
}

/// The MySQL error number of `e`, if the server answered with one.
fn mysql_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number)
}

fn number_of(e: &StorageError) -> Option<u16> {
    match e {
        StorageError::Database(e) => mysql_number(e),
        _ => None,
    }
}

async fn exec(conn: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ())
}

/// Access denied: to a database (1044), a bad password (1045), a table (1142).
const DENIED: [u16; 3] = [1044, 1045, 1142];

#[tokio::test]
async fn each_service_user_reaches_its_own_database_and_no_other() {
    let Some(base) = mall_testkit::database_url() else { return };
    let admin = server_of(&base);
    let host = host_of(&base);
    let prefix = unique_name("mall_t");
    let (cart_db, order_db) = (format!("{prefix}_cart"), format!("{prefix}_order"));
    let (cart_pw, order_pw) = (password(), password());
    let cart_url = url_of(&host, &cart_db, &cart_pw, &cart_db);
    let order_url = url_of(&host, &order_db, &order_pw, &order_db);

    // In a task of its own, so that the clean-up below runs even when an assertion fails.
    let (admin_url, prefix_of_test) = (admin.clone(), prefix.clone());
    let (cart_db_name, order_db_name) = (cart_db.clone(), order_db.clone());
    let check = tokio::spawn(async move {
        let (admin, prefix, cart_db, order_db) = (admin_url, prefix_of_test, cart_db_name, order_db_name);
        // What `mall provision <service>` runs, once per service, from the service's own URL.
        let cart = DatabaseAccount::from_url(&cart_url)?;
        let order = DatabaseAccount::from_url(&order_url)?;
        let first = provision_account(&admin, &cart).await?;
        assert!(first.created_user && first.created_database, "{first:?}");
        provision_account(&admin, &order).await?;
        // Idempotent: the next migration runs it again.
        let again = provision_account(&admin, &cart).await?;
        assert!(!again.created_user && !again.created_database, "{again:?}");

        // Order's user writes in its own database.
        let order_db_conn = Db::connect(&order_url).await?;
        sqlx::raw_sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, total BIGINT NOT NULL)")
            .execute(order_db_conn.pool())
            .await?;
        sqlx::raw_sql("INSERT INTO orders VALUES (1, 4200)").execute(order_db_conn.pool()).await?;
        order_db_conn.close().await;

        // Cart's user uses its own database: creates, writes, reads.
        let own = Db::connect(&cart_url).await?;
        sqlx::raw_sql("CREATE TABLE cart_lines (id BIGINT PRIMARY KEY, qty BIGINT NOT NULL)")
            .execute(own.pool())
            .await?;
        sqlx::raw_sql("INSERT INTO cart_lines VALUES (1, 3)").execute(own.pool()).await?;
        let qty: i64 = sqlx::query_scalar("SELECT qty FROM cart_lines WHERE id = ?")
            .bind(1)
            .fetch_one(own.pool())
            .await?;
        assert_eq!(qty, 3);

        // ...and cannot read order's: neither by naming its table...
        let read =
            sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT total FROM `{order_db}`.orders")))
                .fetch_one(own.pool())
                .await
                .expect_err("cart's user reads order's table");
        assert_eq!(mysql_number(&read), Some(1142), "SELECT command denied: {read}");
        own.close().await;
        // ...nor by connecting to it.
        let into_order = url_of(&host, &cart_db, &cart_pw, &order_db);
        let refused =
            MySqlConnection::connect(&into_order).await.expect_err("cart's user opens order's database");
        assert_eq!(mysql_number(&refused), Some(1044), "access denied to the database: {refused}");
        let opened = Db::connect(&into_order).await.expect_err("Db::connect as cart into order's database");
        assert!(number_of(&opened).is_some_and(|n| DENIED.contains(&n)), "{opened}");

        // The grant names one database exactly: `_` is not a wildcard in it.
        let lookalike = format!("{prefix}xcart");
        let mut conn = MySqlConnection::connect(&cart_url).await?;
        let created = exec(&mut conn, format!("CREATE DATABASE `{lookalike}`")).await;
        let denied = created.expect_err("cart's user creates a database its grant only resembles");
        assert_eq!(mysql_number(&denied), Some(1044), "{denied}");
        conn.close().await?;

        // A password changed in the service's Secret is applied by the next run; the old one is refused.
        let new_pw = password();
        let renewed_url = url_of(&host, &cart_db, &new_pw, &cart_db);
        provision_account(&admin, &DatabaseAccount::from_url(&renewed_url)?).await?;
        let old = MySqlConnection::connect(&cart_url).await.expect_err("the old password still works");
        assert_eq!(mysql_number(&old), Some(1045), "{old}");
        MySqlConnection::connect(&renewed_url).await?.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await;

    // Clean up whatever happened: the two users, every database of this test.
    if let Ok(mut conn) = MySqlConnection::connect(&admin).await {
        for user in [&cart_db, &order_db] {
            let _ = exec(&mut conn, format!("DROP USER IF EXISTS '{user}'@'%'")).await;
        }
        let _ = conn.close().await;
    }
    mall_testkit::drop_databases(&base, &prefix).await;
    match check {
        Ok(result) => result.unwrap(),
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    }
}

#[tokio::test]
async fn an_account_that_cannot_be_spliced_safely_never_reaches_the_server() {
    // No server needed: the check comes first, and the error names the part without the password.
    let e = DatabaseAccount::from_url("mysql://mall_cart:pa'ss'wo'rd'pa'ss@db:3306/mall_cart").unwrap_err();
    assert!(matches!(e, StorageError::InvalidArgument(_)), "{e}");
    assert!(!e.to_string().contains("pa'ss"), "{e}");
    let e = DatabaseAccount::from_url("mysql://x:abcdefghijklmnopqrst@db:3306/mall`cart").unwrap_err();
    assert!(matches!(e, StorageError::InvalidUrl { .. } | StorageError::InvalidArgument(_)), "{e}");
}
