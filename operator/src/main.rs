//! `mall-operator`: serves its probes and metrics, waits for leadership, then runs the controller.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use mall_operator::controller::{self, Context};
use mall_operator::http::{Health, app};
use mall_operator::leader::LeaseLock;

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

    let client = kube::Client::try_default().await?;
    health.ready.store(true, Ordering::Relaxed);
    let lock =
        LeaseLock::new(client.clone(), &args.namespace, &args.lease, &identity, Duration::from_secs(15));
    tokio::select! {
        () = lock.acquire() => {}
        () = mall_runtime::shutdown_signal() => {
            stop.cancel();
            server.await??;
            return Ok(());
        }
    }
    tracing::info!(identity = %lock.identity(), "leading: starting the controller");

    let ctx = Arc::new(Context::new(client, Some(identity)));
    let lost = tokio_util::sync::CancellationToken::new();
    let controller = {
        let lost = lost.clone();
        controller::run(ctx, args.watch_namespace.clone(), async move { lost.cancelled().await })
    };
    tokio::select! {
        () = controller => {}
        () = lock.keep() => {
            tracing::error!("lost the lease: stopping so another replica can lead");
            lost.cancel();
        }
    }
    stop.cancel();
    server.await??;
    if lost.is_cancelled() {
        anyhow::bail!("leadership lost");
    }
    Ok(())
}
