//! Composition of the whole mall: which service runs where, with which database and cache. The `mall`
//! binary is a thin shell over this; the API tests start the same composition on port 0.

pub mod config;

use std::time::Duration;

use anyhow::{Context, bail};
use mall_runtime::{CancellationToken, Served};
use mall_storage::{Cache, Db};
use mall_user::AdminSeed;

use crate::config::{Service, Shared};

/// The services `mall up` runs today, in start order (later issues add the commerce services).
pub const SERVICES: &[Service] = &[Service::Auth, Service::User];

/// A running mall.
pub struct Mall {
    pub gateway: Served,
    pub services: Vec<Served>,
    pub admin: AdminSeed,
    pub admin_email: String,
    pub cache: Cache,
    shutdown: CancellationToken,
}

impl Mall {
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway.addr)
    }

    /// Asks every server to stop and waits until they have drained.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for served in std::iter::once(self.gateway).chain(self.services) {
            served
                .task
                .await
                .context("server task panicked")?
                .with_context(|| format!("{} failed", served.name))?;
        }
        Ok(())
    }

    /// Runs until Ctrl-C or SIGTERM (or a server fails), then stops gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            () = mall_runtime::shutdown_signal() => {}
            () = shutdown.cancelled() => {}
        }
        self.stop().await
    }
}

/// Opens and migrates `service`'s database.
pub async fn open_database(service: Service, shared: &Shared) -> anyhow::Result<Db> {
    let url = config::database_url(service, shared.database_url.as_deref(), &shared.data_dir, |k| {
        std::env::var(k).ok()
    })?;
    let db =
        Db::connect(&url).await.with_context(|| format!("cannot open the {} database", service.name()))?;
    let migrations = match service {
        Service::Auth => mall_auth::migrations(),
        Service::User => mall_user::migrations(),
        other => bail!("the {} service is not part of this build yet", other.name()),
    };
    db.migrate(&migrations).await.with_context(|| format!("migrating the {} database", service.name()))?;
    Ok(db)
}

pub async fn open_cache(shared: &Shared) -> anyhow::Result<Cache> {
    let cache = Cache::from_config(shared.redis_url.as_deref(), &shared.cache_namespace)
        .await
        .context("cannot reach the cache")?;
    tracing::info!(kind = cache.kind(), "cache ready");
    Ok(cache)
}

fn auth_config(shared: &Shared) -> mall_auth::Config {
    mall_auth::Config { token_ttl: shared.token_ttl, signing_key_pem: shared.signing_key.clone() }
}

/// Starts every service on loopback (port 0) and the gateway on `gateway_listen`; migrations run first.
pub async fn start(
    shared: &Shared,
    gateway: mall_gateway::Config,
    gateway_listen: &str,
) -> anyhow::Result<Mall> {
    if shared.database_url.is_none() {
        std::fs::create_dir_all(&shared.data_dir)
            .with_context(|| format!("cannot create the data directory {}", shared.data_dir.display()))?;
    }
    let cache = open_cache(shared).await?;
    let shutdown = CancellationToken::new();
    let mut services = Vec::new();

    let auth_db = open_database(Service::Auth, shared).await?;
    let user_db = open_database(Service::User, shared).await?;
    let admin = mall_user::seed_admin(&user_db, &shared.admin_email, shared.admin_password.as_deref())
        .await
        .context("seeding the admin account (MALL_ADMIN_EMAIL / MALL_ADMIN_PASSWORD)")?;

    let listener = mall_runtime::bind("127.0.0.1:0").await?;
    services.push(
        mall_auth::startup(auth_config(shared), auth_db, cache.clone(), listener, shutdown.clone()).await?,
    );
    let listener = mall_runtime::bind("127.0.0.1:0").await?;
    services.push(mall_user::startup(user_db, listener, shutdown.clone()).await?);

    let addr_of = |name: &str| services.iter().find(|s| s.name == name).map(|s| format!("http://{}", s.addr));
    let peers = mall_gateway::Peers {
        auth: mall_runtime::channel(&addr_of("auth").context("auth is not running")?)?,
        user: mall_runtime::channel(&addr_of("user").context("user is not running")?)?,
    };
    let listener = mall_runtime::bind(gateway_listen).await?;
    let gateway = mall_gateway::startup(gateway, peers, cache.clone(), listener, shutdown.clone()).await?;
    Ok(Mall { gateway, services, admin, admin_email: shared.admin_email.clone(), cache, shutdown })
}

/// Runs one service until a signal (what a Kubernetes pod runs).
pub async fn serve(
    service: Service,
    shared: &Shared,
    listen: &str,
    gateway_listen: &str,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let env = |k: &str| std::env::var(k).ok();
    let served = match service {
        Service::Auth => {
            let db = open_database(service, shared).await?;
            let cache = open_cache(shared).await?;
            let listener = mall_runtime::bind(listen).await?;
            mall_auth::startup(auth_config(shared), db, cache, listener, shutdown.clone()).await?
        }
        Service::User => {
            let db = open_database(service, shared).await?;
            if let Some(password) = shared.admin_password.as_deref() {
                mall_user::seed_admin(&db, &shared.admin_email, Some(password)).await?;
            }
            let listener = mall_runtime::bind(listen).await?;
            mall_user::startup(db, listener, shutdown.clone()).await?
        }
        Service::Gateway => {
            if shared.redis_url.is_none() {
                tracing::warn!(
                    "MALL_REDIS_URL is not set: logouts made through other processes are not seen here"
                );
            }
            let cache = open_cache(shared).await?;
            let peers = mall_gateway::Peers {
                auth: mall_runtime::channel(
                    &config::peer_addr(Service::Auth, env).map_err(anyhow::Error::msg)?,
                )?,
                user: mall_runtime::channel(
                    &config::peer_addr(Service::User, env).map_err(anyhow::Error::msg)?,
                )?,
            };
            let listener = mall_runtime::bind(gateway_listen).await?;
            mall_gateway::startup(mall_gateway::Config::default(), peers, cache, listener, shutdown.clone())
                .await?
        }
        other => bail!("the {} service is not part of this build yet", other.name()),
    };
    tracing::info!(service = service.name(), addr = %served.addr, "ready");
    tokio::select! {
        () = mall_runtime::shutdown_signal() => {}
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), served.task).await {
        Ok(result) => result.context("server task panicked")??,
        Err(_) => tracing::warn!("shutdown timed out"),
    }
    Ok(())
}

/// Runs one service's migrations.
pub async fn migrate(service: Service, shared: &Shared) -> anyhow::Result<()> {
    if service == Service::Gateway {
        bail!("the gateway has no database");
    }
    let db = open_database(service, shared).await?;
    db.close().await;
    tracing::info!(service = service.name(), "migrations applied");
    Ok(())
}
