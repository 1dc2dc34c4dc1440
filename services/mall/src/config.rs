//! The one configuration loader: every setting is a flag with an environment variable of the same name
//! (`MALL_*`), parsed by clap; per-service settings (`MALL_<SERVICE>_DATABASE_URL`, `MALL_<SERVICE>_ADDR`)
//! are resolved by functions that take the lookup as an argument, so they are tested without touching
//! the process environment.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mall",
    version,
    about = "Mall: a Kubernetes-native shop backend. `mall up` runs all of it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole mall in one process: every service on loopback and the gateway on :8889.
    Up(UpArgs),
    /// Run one service (what a Kubernetes pod runs).
    Serve {
        service: Service,
        #[command(flatten)]
        shared: Shared,
        /// Where a gRPC service listens (the gateway uses --gateway-listen).
        #[arg(long, env = "MALL_LISTEN", default_value = "0.0.0.0:50051")]
        listen: String,
        #[arg(long, env = "MALL_GATEWAY_LISTEN", default_value = "0.0.0.0:8889")]
        gateway_listen: String,
        #[command(flatten)]
        identity: IdentityArgs,
    },
    /// Run one service's database migrations and exit.
    Migrate {
        service: Service,
        #[command(flatten)]
        shared: Shared,
    },
    /// Create one service's MySQL database and its own user (allowed into that database only), with
    /// the user and password of the service's database URL, as the administrator of --admin-url; then
    /// exit. Idempotent: it also sets the user's password again. What the operator's migration Job
    /// runs first, as an init container.
    Provision {
        service: Service,
        #[command(flatten)]
        shared: Shared,
        /// An administrator who may create users and grant (`mysql://root:pass@host:3306`).
        #[arg(long, env = "MALL_DATABASE_ADMIN_URL", hide_env_values = true)]
        admin_url: String,
    },
    /// Check a backup before a restore loads it (what the operator's restore Job runs first, as an init
    /// container): its manifest, every dump's size and sha256, that this image knows every migration
    /// it records, and that every database it holds is empty on the server of --admin-url; then write
    /// the plan (`<database> <file>` a line) and print `{"restoreChecked":…}`. Exit 0: checked; 2:
    /// refused (`refused: …` on stderr and in /dev/termination-log); 1: any other failure.
    RestoreCheck {
        /// The backup's directory (`/backups/20261206T053000Z`).
        #[arg(long, value_name = "DIR")]
        backup: PathBuf,
        /// Where to write the plan the loading container follows.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// An administrator who may read every database's tables (`mysql://root:pass@host:3306`).
        #[arg(long, env = "MALL_DATABASE_ADMIN_URL", hide_env_values = true)]
        admin_url: String,
    },
    /// Upload a backup the backup script wrote (`<DIR>/<NAME>/`) to the S3-compatible bucket named by
    /// MALL_S3_ENDPOINT, MALL_S3_BUCKET, MALL_S3_ACCESS_KEY_ID, MALL_S3_SECRET_ACCESS_KEY (and optionally
    /// MALL_S3_REGION, MALL_S3_PREFIX), as `<prefix><NAME>/<file>`, its manifest last; then prune the
    /// bucket's backups and print `{"backup":…,"bytes":…,"databases":…,"pruned":…}`. Exit 0: pushed; 2:
    /// refused, not a complete backup (`refused: …` on stderr and in /dev/termination-log); 1: any
    /// other failure.
    BackupPush {
        /// The directory the backup is in (`/backups`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The backup's name: its directory's in DIR (`20261206T053000Z`). Unset: the one complete
        /// backup in DIR (as in a backup pod, whose scratch volume holds the dump just made).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Complete backups kept in the bucket, newest first (the one just pushed always is).
        #[arg(long, value_name = "N", default_value_t = crate::objects::DEFAULT_KEEP,
              value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        /// Also drop complete backups older than this many days (their names are their UTC times).
        #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=36500))]
        max_age_days: Option<u32>,
    },
    /// Download the complete backup NAME from the bucket of the MALL_S3_* variables (see backup-push)
    /// into `<DIR>/<NAME>/`, for `mall restore-check`; print `{"pulled":…,"bytes":…,"databases":…}`.
    /// Exit 0: pulled; 2: refused, no such complete backup in the bucket (`refused: …` naming the
    /// newest that are there); 1: any other failure.
    BackupPull {
        /// The backup's name (`20261206T053000Z`).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The directory to put it in (`/backups`: it lands in `/backups/20261206T053000Z`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub shared: Shared,
    /// Where the gateway listens.
    #[arg(long, env = "MALL_GATEWAY_LISTEN", default_value = "127.0.0.1:8889")]
    pub gateway_listen: String,
    /// Do not load the demo catalog into an empty product database.
    #[arg(long, env = "MALL_NO_DEMO")]
    pub no_demo: bool,
}

/// Who this service is to its peers (see `mall_runtime::identity`); the operator generates both.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// This service's Ed25519 private key (PKCS#8 PEM), which signs its calls to other services.
    #[arg(long = "identity-key", env = "MALL_IDENTITY_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Every service's public key: `gateway=<base64url>,auth=<base64url>,…`.
    #[arg(long = "identity-peers", env = "MALL_IDENTITY_PEERS")]
    pub peers: Option<String>,
}

/// Settings every command shares.
#[derive(Debug, Clone, Args)]
pub struct Shared {
    /// Where the embedded SQLite files live when no database URL is given.
    #[arg(long, env = "MALL_DATA_DIR", default_value = "mall-data")]
    pub data_dir: PathBuf,
    /// MySQL (`mysql://user:pass@host:3306/mall`) or SQLite URL; each service gets its own database,
    /// named `<database>_<service>`. Unset: SQLite files in the data directory.
    #[arg(long, env = "MALL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most database connections each service's pool opens. On a MySQL server, replicas × services ×
    /// this must stay under the server's `max_connections` (docs/capacity.md).
    #[arg(long, env = "MALL_DATABASE_POOL_SIZE", default_value_t = mall_storage::DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
    /// Redis for the shared cache, token denylist and rate limits. Unset: an in-process cache.
    #[arg(long, env = "MALL_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every cache key, so several stacks can share one Redis.
    #[arg(long, env = "MALL_CACHE_NAMESPACE", default_value = "mall")]
    pub cache_namespace: String,
    /// How long a login token lives (e.g. 30m, 24h, 7d).
    #[arg(long, env = "MALL_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// How many proxies in front of the gateway append to X-Forwarded-For (its rate limits then count
    /// the address the outermost one saw); 0 counts the connection's own peer.
    #[arg(long, env = "MALL_GATEWAY_TRUSTED_PROXIES", default_value_t = 0)]
    pub trusted_proxies: usize,
    /// The time budget of one API request (e.g. 10s, 1m): every service call made for it, at every
    /// hop, carries what is left of it and gives up when it is spent.
    #[arg(long, env = "MALL_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long an unpaid order holds its stock before it expires.
    #[arg(long, env = "MALL_ORDER_TTL", default_value = "30m", value_parser = parse_duration)]
    pub order_ttl: Duration,
    /// The admin account seeded at start.
    #[arg(long, env = "MALL_ADMIN_EMAIL", default_value = "admin@mall.local")]
    pub admin_email: String,
    /// Its password; unset, a new admin gets a generated one, printed once.
    #[arg(long, env = "MALL_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// The auth service's Ed25519 signing key (PKCS#8 PEM). Unset (and no keys file): generated once
    /// and kept in auth's database.
    #[arg(long, env = "MALL_AUTH_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// A JSON file of auth's keys, maintained by the operator and re-read every 10 s:
    /// `{"keys":[{"pem":"…","signs":true},{"pem":"…","signs":false,"retiresAt":1764900000}]}`.
    /// Exactly one key signs; the others verify until their `retiresAt`. Wins over the signing key.
    #[arg(long, env = "MALL_AUTH_KEYS_FILE")]
    pub auth_keys_file: Option<PathBuf>,
    #[command(flatten)]
    pub rate_limits: RateLimits,
    /// How long a process told to stop keeps serving while it reports not ready, so that endpoints,
    /// DNS and clients move away first (e.g. 10s, 0). Unset: 10s for `mall serve`, 0 for `mall up`.
    #[arg(long, env = "MALL_DRAIN_DELAY", value_parser = parse_delay)]
    pub drain_delay: Option<Duration>,
    /// How many passwords the user service hashes or verifies at once (19 MiB each while it runs);
    /// more wait up to 2 s, then get 503. Unset: one per CPU.
    #[arg(long, env = "MALL_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<NonZeroUsize>,
    /// How many product searches run at once; more wait up to 2 s, then get 503. Unset: one per CPU, at
    /// most 5.
    #[arg(long, env = "MALL_SEARCH_CONCURRENCY")]
    pub search_concurrency: Option<NonZeroUsize>,
}

/// The gateway's rate limits: how many requests of a kind one client may make in a window. Counted in
/// the cache (Redis when configured), so every gateway replica shares them.
#[derive(Debug, Clone, Args)]
pub struct RateLimits {
    /// Logins and registrations per client address (IPv6: per /64) in a window.
    #[arg(
        long = "rate-limit-per-address",
        env = "MALL_RATE_LIMIT_PER_ADDRESS",
        default_value_t = mall_gateway::Limits::DEFAULT.per_address,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub per_address: u64,
    /// Logins and registrations per email in a window.
    #[arg(
        long = "rate-limit-per-email",
        env = "MALL_RATE_LIMIT_PER_EMAIL",
        default_value_t = mall_gateway::Limits::DEFAULT.per_email,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub per_email: u64,
    /// Requests that spend money (/payment/charge, /checkout and /order/place together) per user in a
    /// window.
    #[arg(
        long = "rate-limit-per-user",
        env = "MALL_RATE_LIMIT_PER_USER",
        default_value_t = mall_gateway::Limits::DEFAULT.per_user,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub per_user: u64,
    /// Product searches per client address (IPv6: per /64) in a window.
    #[arg(
        long = "rate-limit-search-per-address",
        env = "MALL_RATE_LIMIT_SEARCH_PER_ADDRESS",
        default_value_t = mall_gateway::Limits::DEFAULT.search_per_address,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub search_per_address: u64,
    /// The window every count above is kept for (e.g. 60s, 10m).
    #[arg(long = "rate-limit-window", env = "MALL_RATE_LIMIT_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::from(mall_gateway::Limits::DEFAULT)
    }
}

impl From<mall_gateway::Limits> for RateLimits {
    fn from(l: mall_gateway::Limits) -> Self {
        RateLimits {
            per_address: l.per_address,
            per_email: l.per_email,
            per_user: l.per_user,
            search_per_address: l.search_per_address,
            window: l.window,
        }
    }
}

impl From<&RateLimits> for mall_gateway::Limits {
    fn from(r: &RateLimits) -> Self {
        mall_gateway::Limits {
            per_address: r.per_address,
            per_email: r.per_email,
            per_user: r.per_user,
            search_per_address: r.search_per_address,
            window: r.window,
        }
    }
}

/// The drain delay of `mall serve` when MALL_DRAIN_DELAY is unset: long enough for Kubernetes to take
/// the pod out of its EndpointSlices and DNS, and for clients to re-resolve (every 5 s).
pub const SERVE_DRAIN_DELAY: Duration = Duration::from_secs(10);

/// Every service the `mall` binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Service {
    Auth,
    User,
    Product,
    Cart,
    Order,
    Payment,
    Checkout,
    Gateway,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::User => "user",
            Service::Product => "product",
            Service::Cart => "cart",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Checkout => "checkout",
            Service::Gateway => "gateway",
        }
    }

    fn env_prefix(self) -> String {
        format!("MALL_{}", self.name().to_uppercase())
    }
}

/// The database URL of `service`: `MALL_<SERVICE>_DATABASE_URL` as given, else `<database>_<service>`
/// on the server of `MALL_DATABASE_URL`, else a SQLite file in the data directory.
pub fn database_url(
    service: Service,
    shared_url: Option<&str>,
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, mall_storage::StorageError> {
    if let Some(url) = env(&format!("{}_DATABASE_URL", service.env_prefix())).filter(|u| !u.is_empty()) {
        return Ok(url);
    }
    match shared_url.filter(|u| !u.is_empty()) {
        Some(base) => mall_storage::service_database_url(base, service.name()),
        None => Ok(mall_storage::sqlite_url_in(data_dir, service.name())),
    }
}

/// The address of peer `service` (`MALL_<SERVICE>_ADDR`), required when running one service alone.
pub fn peer_addr(service: Service, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let name = format!("{}_ADDR", service.env_prefix());
    env(&name)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{name} is not set: where does {} listen?", service.name()))
}

/// `90s`, `30m`, `24h`, `7d`, or plain seconds; at least one second.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = parse_delay(s)?;
    if duration < Duration::from_secs(1) {
        return Err("the duration must be at least one second".into());
    }
    Ok(duration)
}

/// A delay: `500ms`, `10s`, `2m`, `1h`, `1d`, or plain seconds; 0 is allowed.
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(|| format!("{s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "0", "0s", "500ms", "h", "5w", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delays_may_be_zero_or_in_milliseconds() {
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_delay("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_delay("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "ms", "1.5s", "-1s", "5w", "99999999999999999d"] {
            assert!(parse_delay(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["mall", "serve", "user", "--drain-delay", "3s"]).unwrap();
        let Command::Serve { shared, .. } = cli.command else { panic!("serve") };
        assert_eq!(shared.drain_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn database_urls_resolve_in_order() {
        let dir = Path::new("/var/mall");
        let sqlite = database_url(Service::Auth, None, dir, env(&[])).unwrap();
        assert!(sqlite.starts_with("sqlite:") && sqlite.contains("/var/mall/auth.db"), "{sqlite}");

        let shared = database_url(Service::User, Some("mysql://root@db:3306/mall"), dir, env(&[])).unwrap();
        assert_eq!(shared, "mysql://root@db:3306/mall_user");

        let own = env(&[("MALL_USER_DATABASE_URL", "mysql://u:p@users:3306/people")]);
        let url = database_url(Service::User, Some("mysql://root@db:3306/mall"), dir, own).unwrap();
        assert_eq!(url, "mysql://u:p@users:3306/people");
    }

    #[test]
    fn peer_addresses_are_required_and_named_in_the_error() {
        assert_eq!(
            peer_addr(Service::Auth, env(&[("MALL_AUTH_ADDR", "http://a:1")])),
            Ok("http://a:1".into())
        );
        let err = peer_addr(Service::User, env(&[])).unwrap_err();
        assert!(err.contains("MALL_USER_ADDR"), "{err}");
    }

    #[test]
    fn the_cli_parses_every_command() {
        let cli = Cli::try_parse_from(["mall", "serve", "auth", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(cli.command, Command::Serve { service: Service::Auth, .. }));
        let cli =
            Cli::try_parse_from(["mall", "migrate", "user", "--database-url", "sqlite::memory:"]).unwrap();
        assert!(matches!(cli.command, Command::Migrate { service: Service::User, .. }));
        let cli =
            Cli::try_parse_from(["mall", "provision", "cart", "--admin-url", "mysql://root:pw@db:3306"])
                .unwrap();
        let Command::Provision { service: Service::Cart, admin_url, .. } = cli.command else {
            panic!("provision parses as Provision")
        };
        assert_eq!(admin_url, "mysql://root:pw@db:3306");
        let cli = Cli::try_parse_from([
            "mall",
            "restore-check",
            "--backup",
            "/backups/20261206T053000Z",
            "--plan",
            "/plan/plan.txt",
            "--admin-url",
            "mysql://root:pw@db:3306",
        ])
        .unwrap();
        let Command::RestoreCheck { backup, plan, admin_url } = cli.command else {
            panic!("restore-check parses as RestoreCheck")
        };
        assert_eq!(backup, Path::new("/backups/20261206T053000Z"));
        assert_eq!(plan, Path::new("/plan/plan.txt"));
        assert_eq!(admin_url, "mysql://root:pw@db:3306");
        assert!(
            Cli::try_parse_from(["mall", "restore-check", "--plan", "/plan/plan.txt", "--admin-url", "x"])
                .is_err(),
            "the backup is required"
        );
        assert!(Cli::try_parse_from(["mall", "serve", "nosuch"]).is_err());
        assert!(Cli::try_parse_from(["mall", "up", "--token-ttl", "0"]).is_err());
        let Command::Up(up) = Cli::try_parse_from(["mall", "up", "--request-timeout", "3s"]).unwrap().command
        else {
            panic!("mall up parses as Up");
        };
        assert_eq!(up.shared.request_timeout, Duration::from_secs(3));
        let cli = Cli::try_parse_from(["mall", "up", "--password-hash-concurrency", "3"]).unwrap();
        let Command::Up(up) = cli.command else { panic!("up") };
        assert_eq!(up.shared.password_hash_concurrency, NonZeroUsize::new(3));
        assert_eq!(up.shared.search_concurrency, None);
        assert!(Cli::try_parse_from(["mall", "up", "--search-concurrency", "0"]).is_err());
    }

    fn up(args: &[&str]) -> Result<Shared, clap::Error> {
        let cli = Cli::try_parse_from([&["mall", "up"][..], args].concat())?;
        let Command::Up(up) = cli.command else { panic!("up") };
        Ok(up.shared)
    }

    #[test]
    fn rate_limits_default_to_the_gateway_s_and_take_every_setting() {
        // The flags stand in for the MALL_RATE_LIMIT_* variables (the same clap arguments).
        let defaults = mall_gateway::Limits::from(&up(&[]).unwrap().rate_limits);
        assert_eq!(defaults, mall_gateway::Limits::DEFAULT);
        let shared = up(&[
            "--rate-limit-per-address=3",
            "--rate-limit-per-email=4",
            "--rate-limit-per-user=5",
            "--rate-limit-search-per-address=6",
            "--rate-limit-window=2m",
        ])
        .unwrap();
        let limits = mall_gateway::Limits::from(&shared.rate_limits);
        let expected = mall_gateway::Limits {
            per_address: 3,
            per_email: 4,
            per_user: 5,
            search_per_address: 6,
            window: Duration::from_secs(120),
        };
        assert_eq!(limits, expected);
        assert_eq!(crate::gateway_config(&shared).limits, expected, "the gateway gets them");
        for bad in ["--rate-limit-per-user=0", "--rate-limit-per-email=-1", "--rate-limit-window=0s"] {
            assert!(up(&[bad]).is_err(), "{bad}");
        }
        assert_eq!(RateLimits::default().window, mall_gateway::Limits::DEFAULT.window);
    }

    #[test]
    fn the_keys_file_is_a_path() {
        let shared = up(&["--auth-keys-file", "/etc/mall/keys/keys.json"]).unwrap();
        assert_eq!(shared.auth_keys_file.as_deref(), Some(Path::new("/etc/mall/keys/keys.json")));
        assert_eq!(up(&[]).unwrap().auth_keys_file, None);
    }
}
