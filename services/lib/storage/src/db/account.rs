//! One MySQL user per service, allowed into its own database only.
//!
//! A service's URL (`mysql://mall_cart:<password>@host:3306/mall_cart`) names everything its account
//! needs: the user, its password and its database. [`provision_account`] makes an administrator (the
//! managed MySQL's root) create that database and that user, grant the user every privilege on that one
//! database and nothing else, and set the user's password to the URL's. Every statement is idempotent,
//! so it runs before every migration: on a first install it creates the account, later it only
//! confirms it (and applies a password that changed in the service's Secret).
//!
//! MySQL and MariaDB accept no placeholders in account statements (`CREATE USER ?@'%' IDENTIFIED BY ?`
//! is a syntax error; so are `ALTER USER … IDENTIFIED BY ?` and `GRANT … TO ?`), and none can stand for
//! an identifier. So the names and the password are checked against a strict character set first
//! ([`DatabaseAccount::new`]) and only then spliced in; the reads that can take parameters (does the
//! database, does the user exist) bind them.

use std::fmt;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

use super::Backend;
use super::url::{check_name, percent_decode, redact_url};
use crate::StorageError;

/// Longest wait for the administrator's connection and for all the statements.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(15);

/// The host part of every service account: the pods' addresses change, the Secret is the credential.
const ACCOUNT_HOST: &str = "%";

/// A service's MySQL account: user, password and the one database it may use. Built only through
/// [`DatabaseAccount::new`] or [`DatabaseAccount::from_url`], which check that every part may be spliced
/// into SQL as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseAccount {
    user: String,
    password: String,
    database: String,
}

impl fmt::Debug for DatabaseAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseAccount")
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// What [`provision_account`] found before it ran (after it, both exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// The database did not exist and was created.
    pub created_database: bool,
    /// The user did not exist and was created (otherwise its password was set again).
    pub created_user: bool,
}

impl DatabaseAccount {
    /// `user` (1-32 ASCII letters, digits, `_`: MySQL's longest user name), `password` (16-128 ASCII
    /// letters, digits, `-`, `.`, `_`, `~`: nothing to escape in SQL or in a URL) and `database` (1-64
    /// ASCII letters, digits, `_`). Anything else is [`StorageError::InvalidArgument`], which names the
    /// part but never shows the password.
    pub fn new(user: &str, password: &str, database: &str) -> Result<DatabaseAccount, StorageError> {
        check_name(user, 32, "user name")?;
        check_name(database, 64, "database name")?;
        let password_ok = (16..=128).contains(&password.len())
            && password.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
        if !password_ok {
            return Err(StorageError::InvalidArgument(format!(
                "the password of {user:?} must be 16-128 ASCII letters, digits, '-', '.', '_' or '~'"
            )));
        }
        Ok(DatabaseAccount {
            user: user.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
        })
    }

    /// The account a service's MySQL URL connects with: its user, password and database
    /// (`mysql://user:password@host:3306/database`; percent-escapes are decoded).
    pub fn from_url(url: &str) -> Result<DatabaseAccount, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl { url: redact_url(url), reason: reason.into() };
        if Backend::from_url(url)? != Backend::MySql {
            return Err(invalid("a service account needs a MySQL URL"));
        }
        let database = super::url::mysql_database_name(url)?;
        let start = url.find("://").map_or(0, |i| i + 3);
        let after = &url[start..];
        let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        let (userinfo, _) = authority.rsplit_once('@').ok_or_else(|| invalid("the URL names no user"))?;
        let (user, password) =
            userinfo.split_once(':').ok_or_else(|| invalid("the URL carries no password"))?;
        DatabaseAccount::new(&percent_decode(user), &percent_decode(password), database)
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The one database the user may use.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The statements [`provision_account`] runs, in order. Each is idempotent.
    ///
    /// In `GRANT`, `_` and `%` in a database name are wildcards: `mall_cart` would also cover
    /// `mallXcart`. The grant escapes them (`mall\_cart`), so it names exactly one database.
    pub fn statements(&self) -> [String; 4] {
        let DatabaseAccount { user, password, database } = self;
        let account = format!("'{user}'@'{ACCOUNT_HOST}'");
        let exact = database.replace('_', "\\_");
        [
            format!("CREATE DATABASE IF NOT EXISTS `{database}`"),
            format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'"),
            format!("ALTER USER {account} IDENTIFIED BY '{password}'"),
            format!("GRANT ALL PRIVILEGES ON `{exact}`.* TO {account}"),
        ]
    }
}

/// As the administrator of `admin_url` (`mysql://root:password@host:3306`, no database needed): creates
/// `account`'s database and user if missing, sets the user's password, and grants it every privilege on
/// its database (and none elsewhere). Safe to run again at any time. The administrator must be allowed
/// to create users and grant (root is), and to read `mysql.user`.
pub async fn provision_account(
    admin_url: &str,
    account: &DatabaseAccount,
) -> Result<Provisioned, StorageError> {
    let provisioned = as_admin(admin_url, PROVISION_TIMEOUT, async |conn: &mut MySqlConnection| {
        let databases: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?")
                .bind(&account.database)
                .fetch_one(&mut *conn)
                .await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE user = ? AND host = ?")
            .bind(&account.user)
            .bind(ACCOUNT_HOST)
            .fetch_one(&mut *conn)
            .await?;
        for statement in account.statements() {
            // Checked by `DatabaseAccount::new`: only safe characters were spliced in.
            sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *conn).await?;
        }
        Ok(Provisioned { created_database: databases == 0, created_user: users == 0 })
    })
    .await?;
    tracing::info!(
        user = %account.user,
        database = %account.database,
        created_user = provisioned.created_user,
        created_database = provisioned.created_database,
        "service account ready"
    );
    Ok(provisioned)
}

/// Runs `work` on one connection as the administrator of `admin_url` (a MySQL URL), closing it after,
/// all within `limit`.
pub async fn as_admin<T>(
    admin_url: &str,
    limit: Duration,
    work: impl AsyncFnOnce(&mut MySqlConnection) -> Result<T, sqlx::Error>,
) -> Result<T, StorageError> {
    if Backend::from_url(admin_url)? != Backend::MySql {
        return Err(StorageError::InvalidUrl {
            url: redact_url(admin_url),
            reason: "the administrator's URL must be a MySQL URL".into(),
        });
    }
    let run = async {
        let mut conn = MySqlConnection::connect(admin_url).await?;
        let out = work(&mut conn).await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(out)
    };
    Ok(tokio::time::timeout(limit, run).await.map_err(|_| StorageError::Timeout {
        what: format!("MySQL server at {}", redact_url(admin_url)),
        after: limit,
    })??)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "Zq3xV9mK2pL7wR4tY8uN1bC6dF5gH0jA";

    #[test]
    fn an_account_comes_from_the_service_url() {
        let url = format!("mysql://mall_cart:{PASSWORD}@shop-mysql.mall.svc.cluster.local:3306/mall_cart");
        let account = DatabaseAccount::from_url(&url).unwrap();
        assert_eq!((account.user(), account.database()), ("mall_cart", "mall_cart"));
        assert_eq!(account.password, PASSWORD);
        let encoded =
            DatabaseAccount::from_url("mysql://mall%5Fcart:abcdefgh%2Eijklmnop@db/mall_cart").unwrap();
        assert_eq!((encoded.user(), encoded.password.as_str()), ("mall_cart", "abcdefgh.ijklmnop"));
        assert!(!format!("{account:?}").contains(PASSWORD), "Debug hides the password");
    }

    #[test]
    fn the_statements_splice_only_checked_names_and_grant_one_database() {
        let account = DatabaseAccount::new("mall_cart", PASSWORD, "mall_cart").unwrap();
        assert_eq!(
            account.statements(),
            [
                "CREATE DATABASE IF NOT EXISTS `mall_cart`".to_owned(),
                format!("CREATE USER IF NOT EXISTS 'mall_cart'@'%' IDENTIFIED BY '{PASSWORD}'"),
                format!("ALTER USER 'mall_cart'@'%' IDENTIFIED BY '{PASSWORD}'"),
                "GRANT ALL PRIVILEGES ON `mall\\_cart`.* TO 'mall_cart'@'%'".to_owned(),
            ]
        );
    }

    #[test]
    fn names_and_passwords_that_could_break_out_are_refused() {
        let bad_users = ["", "mall'cart", "mall`cart", "mall cart", "a%", "ü", &"u".repeat(33)];
        for user in bad_users {
            let e = DatabaseAccount::new(user, PASSWORD, "mall_cart").unwrap_err();
            assert!(matches!(e, StorageError::InvalidArgument(_)), "{user:?}: {e}");
        }
        for database in ["", "mall`; DROP DATABASE x; --", "mall-cart", "mall.cart", &"d".repeat(65)] {
            assert!(DatabaseAccount::new("mall_cart", PASSWORD, database).is_err(), "{database:?}");
        }
        for password in ["short", "quote'quote'quote'q", "back\\slash\\back\\slash", "space space space s"] {
            let e = DatabaseAccount::new("mall_cart", password, "mall_cart").unwrap_err().to_string();
            assert!(!e.contains(password), "the error shows no password: {e}");
        }
        assert!(DatabaseAccount::from_url("mysql://mall_cart@db/mall_cart").is_err(), "no password");
        assert!(DatabaseAccount::from_url(&format!("mysql://:{PASSWORD}@db/mall_cart")).is_err(), "no user");
        assert!(DatabaseAccount::from_url(&format!("mysql://u:{PASSWORD}@db")).is_err(), "no database");
        assert!(DatabaseAccount::from_url("sqlite::memory:").is_err());
        let e = DatabaseAccount::from_url("mysql://u:p'q@db/mall_cart").unwrap_err().to_string();
        assert!(!e.contains("p'q"), "{e}");
    }
}
