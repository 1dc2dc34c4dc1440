//! `mall-operator`: serves its probes and metrics, waits for leadership, then runs the controller while
//! it holds the lease (and is a candidate again when it loses it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use mall_operator::controller::{self, Context};
use mall_operator::http::{Health, app};
use mall_operator::leader::{LeaseLock, Lost, Timing};

#[derive(Parser)]
#[command(name = "mall-operator", about = "Reconciles MallStack resources")]
struct Args {
    /// Watch MallStacks in this namespace only (a namespaced Role); unset: every namespace.
    #[arg(long, env = "MALL_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "MALL_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This replica's identity (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, env = "MALL_OPERATOR_LEASE", default_value = "mall-operator")]
    lease: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mall_runtime::init_tracing();
    let args = Args::parse();
    let identity = args.identity.unwrap_or_else(|| format!("mall-operator-{}", std::process::id()));

    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop.clone();
        let app = app(health.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
        })
    };

    let (client, watch_client) = clients().await?;
    health.ready.store(true, Ordering::Relaxed);
    let lock = LeaseLock::new(client.clone(), &args.namespace, &args.lease, &identity, Timing::default());
    let ctx = Arc::new(Context::new(client, Some(identity)));
    loop {
        let since = tokio::select! {
            since = lock.acquire() => since,
            () = mall_runtime::shutdown_signal() => break,
        };
        tracing::info!(identity = %lock.identity(), "leading: starting the controller");
        // The controller stops by itself on SIGTERM (finishing the reconciles under way); losing the
        // lease drops it on the spot.
        let controller = controller::run(
            ctx.clone(),
            watch_client.clone(),
            args.watch_namespace.clone(),
            std::future::pending(),
        );
        match lock.hold(since, controller).await {
            Ok(()) => {
                lock.release().await;
                break;
            }
            Err(Lost) => tracing::error!("lost the lease: stopped reconciling; a candidate again"),
        }
    }
    stop.cancel();
    server.await??;
    mall_runtime::flush_tracing();
    Ok(())
}

/// Clients for the API server: one for requests, each bounded (connect, send, answer), and one for the
/// controller's watches, whose answers stream for minutes (the watcher's idle timeout guards those).
async fn clients() -> anyhow::Result<(kube::Client, kube::Client)> {
    let mut config = kube::Config::infer().await?;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.write_timeout = Some(Duration::from_secs(10));
    let watch = kube::Client::try_from(config.clone())?;
    config.read_timeout = Some(Duration::from_secs(30));
    // Counted from the request, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    Ok((kube::Client::try_from(config)?, watch))
}
