//! A service's database, as each command needs it. Migrations run only in `mall migrate` (a Kubernetes
//! Job) and `mall up`; `mall serve` connects and checks that they ran. On a first install the Job may
//! start before the database answers (the MySQL pod is still initialising, its DNS name not yet
//! published), so `mall migrate` waits for it with a bounded back-off instead of failing at once.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use mall_storage::{DatabaseAccount, Db, Migrations, Provisioned, StorageError, provision_account};
use tokio::time::Instant;

use crate::config::{self, Service, Shared};

/// How long `mall migrate` waits for an unreachable database before it fails (and the Job's pod
/// backoff takes over). Long enough for a DNS blip or a server that is still starting; short enough
/// that an address that will never answer shows in the stack's status within a minute.
pub const PATIENCE: Duration = Duration::from_secs(20);
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The wait after the `attempt`-th failed attempt (from 1): 0.5 s doubling, at most 5 s.
pub fn retry_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(8);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

/// Whether `e` says the database (or the cache) is not there yet (refused, unresolvable, reset, timed
/// out, shutting down) rather than that something is wrong with what we asked (a bad password, an
/// invalid URL).
pub fn is_unreachable(e: &StorageError) -> bool {
    match e {
        StorageError::Timeout { .. } => true,
        StorageError::Database(e) => mall_storage::is_transient(e),
        StorageError::Redis(e) => {
            e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for another reason than an unreachable database, or
/// `patience` runs out (then the last error). Each failed attempt is logged with its wait.
pub async fn retry_while_unreachable<T, F, Fut>(
    what: &str,
    patience: Duration,
    mut attempt: F,
) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let deadline = Instant::now() + patience;
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, attempts = failures + 1, "the database is reachable");
                }
                return Ok(value);
            }
            Err(e) if is_unreachable(&e) => {
                failures += 1;
                let wait = retry_delay(failures);
                if Instant::now() + wait > deadline {
                    tracing::error!(what, attempts = failures, error = %e, "the database stayed unreachable");
                    return Err(e);
                }
                tracing::warn!(what, attempt = failures, error = %e, retry_in = ?wait, "the database is not reachable yet");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The embedded migrations of `service`.
pub fn migrations(service: Service) -> anyhow::Result<Migrations> {
    Ok(match service {
        Service::Auth => mall_auth::migrations(),
        Service::User => mall_user::migrations(),
        Service::Product => mall_product::migrations(),
        Service::Cart => mall_cart::migrations(),
        Service::Order => mall_order::migrations(),
        Service::Payment => mall_payment::migrations(),
        Service::Checkout => mall_checkout::migrations(),
        Service::Gateway => bail!("the gateway has no database"),
    })
}

fn url(service: Service, shared: &Shared) -> anyhow::Result<String> {
    if service == Service::Gateway {
        bail!("the gateway has no database");
    }
    Ok(config::database_url(service, shared.database_url.as_deref(), &shared.data_dir, |k| {
        std::env::var(k).ok()
    })?)
}

/// Connects to `service`'s database (no waiting, no migrations).
pub async fn connect(service: Service, shared: &Shared) -> anyhow::Result<Db> {
    let url = url(service, shared)?;
    Db::connect_sized(&url, shared.database_pool_size).await.with_context(|| cannot_open(service, &url))
}

/// The address goes into the error (password redacted): the operator quotes it from the log of a
/// migration or service that cannot reach its database.
fn cannot_open(service: Service, url: &str) -> String {
    format!("cannot open the {} database at {}", service.name(), mall_storage::redact_url(url))
}

/// Connects to `service`'s database, waiting up to `patience` while it is unreachable.
pub async fn connect_when_reachable(
    service: Service,
    shared: &Shared,
    patience: Duration,
) -> anyhow::Result<Db> {
    let url = url(service, shared)?;
    retry_while_unreachable(service.name(), patience, || Db::connect_sized(&url, shared.database_pool_size))
        .await
        .with_context(|| cannot_open(service, &url))
}

/// Creates `service`'s MySQL database and its own user, as the administrator of `admin_url`: the user,
/// password and database are those of the service's URL (`MALL_<SERVICE>_DATABASE_URL`, as `mall
/// migrate` and `mall serve` resolve it), so the account made is the one the service connects with.
/// The user may use that database only; its password is set again each time. Waits up to `patience`
/// for a server that is not reachable yet.
pub async fn provision(
    service: Service,
    shared: &Shared,
    admin_url: &str,
    patience: Duration,
) -> anyhow::Result<Provisioned> {
    let url = url(service, shared)?;
    let name = service.name();
    let account = DatabaseAccount::from_url(&url)
        .with_context(|| format!("the {name} database URL cannot name a service account"))?;
    retry_while_unreachable(name, patience, || provision_account(admin_url, &account)).await.with_context(
        || {
            format!(
                "creating user {} and database {} at {}",
                account.user(),
                account.database(),
                mall_storage::redact_url(admin_url)
            )
        },
    )
}

/// Runs `service`'s migrations on `db`.
pub async fn migrate(service: Service, db: &Db) -> anyhow::Result<()> {
    db.migrate(&migrations(service)?)
        .await
        .with_context(|| format!("migrating the {} database", service.name()))
}

/// Connects to `service`'s database and checks that every migration of this build ran (newer ones
/// may have: a rolled-back image runs against the newer schema).
pub async fn connect_migrated(service: Service, shared: &Shared) -> anyhow::Result<Db> {
    let db = connect(service, shared).await?;
    let name = service.name();
    let pending = db
        .pending_migrations(&migrations(service)?)
        .await
        .with_context(|| format!("reading the migrations applied to the {name} database"))?;
    if !pending.is_empty() {
        bail!(
            "the {name} database lacks migrations {pending:?}: run `mall migrate {name}` first \
             (on Kubernetes the operator's migration Job does)"
        );
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};
    use mall_storage::Cache;

    fn shared(args: &[&str]) -> Shared {
        let cli = Cli::try_parse_from([&["mall", "migrate", "cart"][..], args].concat()).unwrap();
        match cli.command {
            Command::Migrate { shared, .. } => shared,
            _ => unreachable!(),
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn the_pool_size_is_each_services_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let default = connect(Service::Cart, &shared(&["--data-dir", data_dir])).await.unwrap();
        assert_eq!(default.pool().options().get_max_connections(), mall_storage::DEFAULT_POOL_SIZE);
        let sized = shared(&["--data-dir", data_dir, "--database-pool-size", "24"]);
        let db = connect(Service::Cart, &sized).await.unwrap();
        assert_eq!(db.pool().options().get_max_connections(), 24);
        for bad in ["0", "-1", "many"] {
            let cli = Cli::try_parse_from(["mall", "migrate", "cart", "--database-pool-size", bad]);
            assert!(cli.is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn the_back_off_doubles_from_half_a_second_to_five() {
        let delays: Vec<Duration> = (1..=7).map(retry_delay).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(4000), ms(5000), ms(5000), ms(5000)]);
        assert_eq!(retry_delay(1000), MAX_DELAY);
    }

    #[tokio::test]
    async fn a_refused_or_unresolvable_database_is_retryable_a_bad_url_is_not() {
        let refused =
            Db::connect(&format!("mysql://mall:pw@127.0.0.1:{}/mall_cart", closed_port())).await.unwrap_err();
        assert!(is_unreachable(&refused), "{refused}");
        let unknown = Db::connect("mysql://mall:pw@no-such-host.invalid:3306/mall_cart").await.unwrap_err();
        assert!(is_unreachable(&unknown), "{unknown}");
        let invalid = Db::connect("mysql://mall:pw@127.0.0.1:3306").await.unwrap_err();
        assert!(!is_unreachable(&invalid), "{invalid}");
    }

    #[tokio::test]
    async fn a_bad_password_is_not_retryable() {
        let Some(base) = mall_testkit::database_url() else { return };
        let url = mall_storage::database_url_with_name(&base, "mall_t_never_created").unwrap();
        let (_, rest) = url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        let wrong = format!("mysql://mall_nobody:wrong@{host}");
        let attempts = AtomicU32::new(0);
        let e = retry_while_unreachable("cart", PATIENCE, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            Db::connect(&wrong)
        })
        .await
        .unwrap_err();
        assert!(!is_unreachable(&e), "{e}");
        assert_eq!(attempts.load(Ordering::Relaxed), 1, "refused credentials fail at once: {e}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_patience_runs_out() {
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let e = retry_while_unreachable("cart", PATIENCE, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>(StorageError::Timeout { what: "MySQL".into(), after: Duration::ZERO }) }
        })
        .await
        .unwrap_err();
        assert!(matches!(e, StorageError::Timeout { .. }));
        // 0.5 + 1 + 2 + 4 s, then every 5 s while the next wait still ends within the 20 s.
        assert_eq!(attempts.load(Ordering::Relaxed), 5 + 2);
        assert!(started.elapsed() <= PATIENCE, "{:?}", started.elapsed());
    }

    /// A MariaDB that is not up yet: its first `closed` connections are closed at once (a server still
    /// starting); later ones are forwarded to the test server. Returns its port and how many
    /// connections it took.
    async fn late_database(target: String, closed: u32) -> (u16, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU32::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if counter.fetch_add(1, Ordering::Relaxed) < closed {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn mall_migrate_waits_for_a_database_that_comes_up_late() {
        let Some(base) = mall_testkit::database_url() else { return };
        let (_, rest) = base.split_once("://").unwrap();
        let (credentials, host) = rest.split_once('@').map_or(("", rest), |(c, h)| (c, h));
        let host_port = host.split('/').next().unwrap().to_owned();
        let (port, accepted) = late_database(host_port, 3).await;
        let name = mall_testkit::unique_name("mall_t");
        let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
        let url = format!("mysql://{at}127.0.0.1:{port}/{name}");

        let result = crate::migrate(Service::Cart, &shared(&["--database-url", &url])).await;
        let check = async {
            result?;
            let db = connect_migrated(Service::Cart, &shared(&["--database-url", &url])).await?;
            db.close().await;
            anyhow::Ok(())
        }
        .await;
        mall_testkit::drop_databases(&base, &name).await;
        check.unwrap();
        assert!(accepted.load(Ordering::Relaxed) > 3, "it came back after the refused attempts");
    }

    #[tokio::test]
    async fn provision_makes_the_account_that_migrate_and_serve_connect_with() {
        let Some(base) = mall_testkit::database_url() else { return };
        let (_, rest) = base.split_once("://").unwrap();
        let (credentials, host) = rest.split_once('@').map_or(("", rest), |(c, h)| (c, h));
        let host_port = host.split('/').next().unwrap().to_owned();
        let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
        let admin = format!("mysql://{at}{host_port}");
        // The base name `<name>` gives cart's database `<name>_cart`; its user is named the same.
        let name = mall_testkit::unique_name("mall_t");
        let user = format!("{name}_cart");
        let password = format!("{}{}", mall_testkit::unique_name("pw"), mall_testkit::unique_name("pw"));
        let cart = shared(&["--database-url", &format!("mysql://{user}:{password}@{host_port}/{name}")]);

        let check = async {
            let made = provision(Service::Cart, &cart, &admin, PATIENCE).await?;
            anyhow::ensure!(made.created_user && made.created_database, "{made:?}");
            crate::migrate(Service::Cart, &cart).await?;
            connect_migrated(Service::Cart, &cart).await?.close().await;
            // Run again before the next migration: nothing new, nothing lost.
            let again = provision(Service::Cart, &cart, &admin, PATIENCE).await?;
            anyhow::ensure!(!again.created_user && !again.created_database, "{again:?}");
            connect_migrated(Service::Cart, &cart).await?.close().await;
            anyhow::Ok(())
        }
        .await;
        let no_password = shared(&["--database-url", &format!("mysql://{user}@{host_port}/{name}")]);
        let refused = provision(Service::Cart, &no_password, &admin, PATIENCE).await.unwrap_err();

        {
            use mall_storage::sqlx::{self, AssertSqlSafe, Connection};
            let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap();
            let drop_user = format!("DROP USER IF EXISTS '{user}'@'%'");
            sqlx::raw_sql(AssertSqlSafe(drop_user)).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        mall_testkit::drop_databases(&base, &name).await;
        check.unwrap();
        assert!(format!("{refused:#}").contains("carries no password"), "{refused:#}");
    }

    #[tokio::test]
    async fn serve_refuses_an_unmigrated_database_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(&["--data-dir", dir.path().to_str().unwrap()]);
        let e = connect_migrated(Service::Auth, &shared).await.unwrap_err();
        assert!(format!("{e:#}").contains("run `mall migrate auth` first"), "{e:#}");
        crate::migrate(Service::Auth, &shared).await.unwrap();
        connect_migrated(Service::Auth, &shared).await.unwrap().close().await;
    }

    /// `redis-server`, or `None` (a note, or a failure under `CI=true`) when it is not installed.
    fn redis_server() -> Option<&'static str> {
        let found = std::process::Command::new("redis-server").arg("--version").output().is_ok();
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(found || !ci, "CI=true but redis-server is not installed");
        if !found {
            eprintln!("note: no redis-server; skipping");
        }
        found.then_some("redis-server")
    }

    #[tokio::test]
    async fn a_cache_that_is_not_up_yet_is_waited_for_and_a_wrong_password_is_not() {
        let Some(redis_server) = redis_server() else { return };
        let port = closed_port();
        let url = format!("redis://127.0.0.1:{port}");
        let refused = Cache::redis(&url, "t").await.unwrap_err();
        assert!(is_unreachable(&refused), "{refused}");

        // Redis comes up a second after the pod: the pod waits for it instead of exiting.
        let started = std::time::Instant::now();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            std::process::Command::new(redis_server)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server starts")
        });
        let with = shared(&["--redis-url", &url]);
        let opened = crate::open_cache_within(&with, Duration::from_secs(15)).await;
        let mut child = server.join().unwrap();
        let waited = started.elapsed();
        child.kill().ok();
        child.wait().ok();
        let cache = opened.unwrap();
        assert_eq!(cache.kind(), "redis");
        assert!(waited >= Duration::from_secs(1), "it waited for the server: {waited:?}");

        // A server that refuses the password is not waited for: that will not change by itself.
        if let Some(test_url) = mall_testkit::redis_url() {
            let wrong = test_url.replacen("redis://", "redis://:not-the-password@", 1);
            let started = std::time::Instant::now();
            let e = crate::open_cache_within(&shared(&["--redis-url", &wrong]), Duration::from_secs(15))
                .await
                .unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5), "refused at once: {e:#}");
        }
    }
}
