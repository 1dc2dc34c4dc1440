//! Composition of the whole mall: which service runs where, with which database, cache and peers. The
//! `mall` binary is a thin shell over this; the API tests start the same composition on port 0.

pub mod config;
pub mod database;
pub mod objects;
pub mod restore;

use std::collections::HashMap;
use std::future::Future;

use anyhow::{Context, bail};
use mall_runtime::{Identity, PeerChannel, Served, Shutdown};
use mall_storage::{Cache, Db};
use mall_user::AdminSeed;

use crate::config::{IdentityArgs, Service, Shared};

/// Every gRPC service, in the order `mall up` starts them.
pub const SERVICES: &[Service] = &[
    Service::Auth,
    Service::User,
    Service::Product,
    Service::Cart,
    Service::Order,
    Service::Payment,
    Service::Checkout,
];

/// How `start` runs the mall, beyond the shared settings.
pub struct StartOptions {
    pub gateway: mall_gateway::Config,
    pub gateway_listen: String,
    /// Load the demo catalog into an empty product database.
    pub demo: bool,
}

/// A running mall.
pub struct Mall {
    pub gateway: Served,
    pub services: Vec<Served>,
    pub admin: AdminSeed,
    pub admin_email: String,
    pub cache: Cache,
    /// The identity of each component (by name), as its calls carry it.
    pub identities: HashMap<String, Identity>,
}

impl Mall {
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway.addr)
    }

    /// The gRPC address of one service.
    pub fn service_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.services.iter().find(|s| s.name == name).map(|s| s.addr)
    }

    /// Stops the gateway first (its drain, then its requests in flight, which may still call the
    /// services), then each service before the services it calls.
    pub async fn stop(self) -> anyhow::Result<()> {
        for served in std::iter::once(self.gateway).chain(self.services.into_iter().rev()) {
            let name = served.name;
            served.stop().await.with_context(|| format!("{name} failed"))?;
        }
        Ok(())
    }

    /// Runs until Ctrl-C or SIGTERM, then stops gracefully (a second signal cuts the drain short).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let gateway = self.gateway.shutdown.clone();
        until_signal(&gateway, self.stop()).await
    }
}

/// Waits for Ctrl-C or SIGTERM, then runs `stop`; another signal meanwhile ends `shutdown`'s drain.
async fn until_signal<F: Future>(shutdown: &Shutdown, stop: F) -> F::Output {
    mall_runtime::shutdown_signal().await;
    let stop = std::pin::pin!(stop);
    let hurry = async {
        mall_runtime::shutdown_signal().await;
        tracing::info!("stopping without waiting for the rest of the drain");
        shutdown.hurry();
        std::future::pending::<std::convert::Infallible>().await
    };
    // Biased: the second signal is listened for before the stop begins, so none is missed.
    tokio::select! {
        biased;
        never = hurry => match never {},
        output = stop => output,
    }
}

/// Opens and migrates `service`'s database (`mall up`; `mall serve` leaves migrations to Jobs).
pub async fn open_database(service: Service, shared: &Shared) -> anyhow::Result<Db> {
    let db = database::connect(service, shared).await?;
    database::migrate(service, &db).await?;
    Ok(db)
}

/// The cache of `shared` (Redis when a URL is given), waiting up to [`database::PATIENCE`] while Redis
/// is unreachable: a pod that starts while Redis restarts (a rollout, a lost node) comes up once it is
/// back instead of exiting and being restarted with a growing back-off.
pub async fn open_cache(shared: &Shared) -> anyhow::Result<Cache> {
    open_cache_within(shared, database::PATIENCE).await
}

/// [`open_cache`] with another patience.
pub async fn open_cache_within(shared: &Shared, patience: std::time::Duration) -> anyhow::Result<Cache> {
    let cache = database::retry_while_unreachable("cache", patience, || {
        Cache::from_config(shared.redis_url.as_deref(), &shared.cache_namespace)
    })
    .await
    .context("cannot reach the cache")?;
    tracing::info!(kind = cache.kind(), "cache ready");
    Ok(cache)
}

/// Where each peer is: loopback addresses in `mall up`, `MALL_<SERVICE>_ADDR` in `mall serve`.
type PeerLookup<'a> = &'a dyn Fn(Service) -> anyhow::Result<PeerChannel>;

/// Channels from the service of `identity` to its peers, each call carrying that identity.
fn calls_as<'a>(
    identity: &'a Identity,
    peer: PeerLookup<'a>,
) -> impl Fn(Service) -> anyhow::Result<PeerChannel> + 'a {
    move |callee| Ok(peer(callee)?.with_identity(identity, callee.name()))
}

/// Starts one gRPC service on `listener` with its (migrated) database; it accepts the callers the
/// design names for it and calls its peers as itself.
#[allow(clippy::too_many_arguments)]
async fn start_service(
    service: Service,
    shared: &Shared,
    db: Db,
    cache: &Cache,
    identity: &Identity,
    peer: PeerLookup<'_>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<Served> {
    let cache = cache.clone();
    let access = identity.access();
    let peer = calls_as(identity, peer);
    Ok(match service {
        Service::Auth => {
            let config = mall_auth::Config {
                token_ttl: shared.token_ttl,
                signing_key_pem: shared.signing_key.clone(),
                keys_file: shared.auth_keys_file.clone(),
                ..mall_auth::Config::default()
            };
            mall_auth::startup(config, db, cache, access, listener, shutdown).await?
        }
        Service::User => mall_user::startup(user_config(shared), db, access, listener, shutdown).await?,
        Service::Product => {
            mall_product::startup(product_config(shared), db, cache, access, listener, shutdown).await?
        }
        Service::Cart => mall_cart::startup(db, peer(Service::Product)?, access, listener, shutdown).await?,
        Service::Order => {
            let config = mall_order::Config { unpaid_ttl: shared.order_ttl, ..mall_order::Config::default() };
            mall_order::startup(config, db, peer(Service::Product)?, access, listener, shutdown).await?
        }
        Service::Payment => {
            mall_payment::startup(db, peer(Service::Order)?, access, listener, shutdown).await?
        }
        Service::Checkout => {
            let peers = mall_checkout::Peers {
                cart: peer(Service::Cart)?,
                order: peer(Service::Order)?,
                payment: peer(Service::Payment)?,
            };
            mall_checkout::startup(db, peers, access, listener, shutdown).await?
        }
        Service::Gateway => bail!("the gateway is not a gRPC service"),
    })
}

/// The user service's settings: the defaults, with what the configuration overrides.
fn user_config(shared: &Shared) -> mall_user::Config {
    let defaults = mall_user::Config::default();
    let hash_concurrency = shared.password_hash_concurrency.map_or(defaults.hash_concurrency, |n| n.get());
    mall_user::Config { hash_concurrency, ..defaults }
}

fn product_config(shared: &Shared) -> mall_product::Config {
    let defaults = mall_product::Config::default();
    let search_concurrency = shared.search_concurrency.map_or(defaults.search_concurrency, |n| n.get());
    mall_product::Config { search_concurrency, ..defaults }
}

/// The gateway's settings from the shared configuration.
pub fn gateway_config(shared: &Shared) -> mall_gateway::Config {
    mall_gateway::Config {
        limits: mall_gateway::Limits::from(&shared.rate_limits),
        trusted_proxies: shared.trusted_proxies,
        request_timeout: shared.request_timeout,
        ..mall_gateway::Config::default()
    }
}

fn gateway_peers(identity: &Identity, peer: PeerLookup<'_>) -> anyhow::Result<mall_gateway::Peers> {
    let peer = calls_as(identity, peer);
    Ok(mall_gateway::Peers {
        auth: peer(Service::Auth)?,
        user: peer(Service::User)?,
        product: peer(Service::Product)?,
        cart: peer(Service::Cart)?,
        order: peer(Service::Order)?,
        payment: peer(Service::Payment)?,
        checkout: peer(Service::Checkout)?,
    })
}

/// Starts every service on loopback (port 0) and the gateway; migrations run first.
pub async fn start(shared: &Shared, options: StartOptions) -> anyhow::Result<Mall> {
    if shared.database_url.is_none() {
        std::fs::create_dir_all(&shared.data_dir)
            .with_context(|| format!("cannot create the data directory {}", shared.data_dir.display()))?;
    }
    let cache = open_cache(shared).await?;
    let mut dbs = HashMap::new();
    for &service in SERVICES {
        dbs.insert(service, open_database(service, shared).await?);
    }
    let admin =
        mall_user::seed_admin(&dbs[&Service::User], &shared.admin_email, shared.admin_password.as_deref())
            .await
            .context("seeding the admin account (MALL_ADMIN_EMAIL / MALL_ADMIN_PASSWORD)")?;
    if options.demo
        && mall_product::load_demo_catalog(&dbs[&Service::Product])
            .await
            .context("loading the demo catalog")?
    {
        tracing::info!("demo catalog loaded");
    }

    // Bind every port first, so each service knows where its peers are before any starts.
    let mut listeners = Vec::new();
    let mut addrs = HashMap::new();
    for &service in SERVICES {
        let listener = mall_runtime::bind("127.0.0.1:0").await?;
        addrs.insert(service, listener.local_addr()?);
        listeners.push((service, listener));
    }
    let peer = |s: Service| -> anyhow::Result<PeerChannel> {
        let addr = addrs.get(&s).with_context(|| format!("{} is not part of mall up", s.name()))?;
        Ok(mall_runtime::channel(&format!("http://{addr}"))?)
    };

    // Every service gets a key of its own, so the same caller checks run here as in a cluster.
    let identities = Identity::generate_all();
    let identity = |s: Service| identities.get(s.name()).context("every service has an identity");

    // Only the gateway drains: the services are reached through it alone, and stop after it.
    let mut services = Vec::new();
    for (service, listener) in listeners {
        let db = dbs.remove(&service).context("database opened above")?;
        let (id, stop) = (identity(service)?, Shutdown::default());
        services.push(start_service(service, shared, db, &cache, id, &peer, listener, stop).await?);
    }
    let listener = mall_runtime::bind(&options.gateway_listen).await?;
    let drain = Shutdown::default().with_drain(shared.drain_delay.unwrap_or_default());
    let peers = gateway_peers(identity(Service::Gateway)?, &peer)?;
    let gateway = mall_gateway::startup(options.gateway, peers, cache.clone(), listener, drain).await?;
    Ok(Mall { gateway, services, admin, admin_email: shared.admin_email.clone(), cache, identities })
}

/// Runs one service until a signal (what a Kubernetes pod runs).
pub async fn serve(
    service: Service,
    shared: &Shared,
    listen: &str,
    gateway_listen: &str,
    identity: &IdentityArgs,
) -> anyhow::Result<()> {
    let identity = service_identity(service, identity)?;
    let shutdown = Shutdown::default().with_drain(shared.drain_delay.unwrap_or(config::SERVE_DRAIN_DELAY));
    let peer = |s: Service| -> anyhow::Result<PeerChannel> {
        let addr = config::peer_addr(s, |k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
        Ok(mall_runtime::channel(&addr)?)
    };
    let cache = open_cache(shared).await?;
    let served = if service == Service::Gateway {
        if shared.redis_url.is_none() {
            tracing::warn!(
                "MALL_REDIS_URL is not set: logouts made through other processes are not seen here"
            );
        }
        let listener = mall_runtime::bind(gateway_listen).await?;
        let config = gateway_config(shared);
        mall_gateway::startup(config, gateway_peers(&identity, &peer)?, cache, listener, shutdown.clone())
            .await?
    } else {
        let db = database::connect_migrated(service, shared).await?;
        if service == Service::User
            && let Some(password) = shared.admin_password.as_deref()
        {
            mall_user::seed_admin(&db, &shared.admin_email, Some(password)).await?;
        }
        let listener = mall_runtime::bind(listen).await?;
        start_service(service, shared, db, &cache, &identity, &peer, listener, shutdown.clone()).await?
    };
    tracing::info!(service = service.name(), addr = %served.addr, "ready");
    until_signal(&shutdown, served.stop()).await?;
    Ok(())
}

/// The identity `mall serve` runs with: both settings are required, so a service never runs open.
fn service_identity(service: Service, args: &IdentityArgs) -> anyhow::Result<Identity> {
    let (Some(key), Some(peers)) = (args.key.as_deref(), args.peers.as_deref()) else {
        bail!(
            "MALL_IDENTITY_KEY and MALL_IDENTITY_PEERS must be set: every service proves who it is to its \
             peers and checks who calls it (the operator generates both; `mall up` needs neither)"
        );
    };
    Identity::from_config(service.name(), key, peers).context("MALL_IDENTITY_KEY / MALL_IDENTITY_PEERS")
}

/// Runs one service's migrations, waiting up to two minutes for a database that is not reachable yet.
/// `mall provision <service>`: creates the service's MySQL database and its own user (see
/// [`database::provision`]), waiting up to [`database::PATIENCE`] for the server.
pub async fn provision(service: Service, shared: &Shared, admin_url: &str) -> anyhow::Result<()> {
    database::provision(service, shared, admin_url, database::PATIENCE).await?;
    Ok(())
}

pub async fn migrate(service: Service, shared: &Shared) -> anyhow::Result<()> {
    let db = database::connect_when_reachable(service, shared, database::PATIENCE).await?;
    database::migrate(service, &db).await?;
    db.close().await;
    tracing::info!(service = service.name(), "migrations applied");
    Ok(())
}
