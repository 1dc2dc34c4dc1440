//! `bench`: bounded load against a whole mall started in this process, each scenario next to a baseline
//! measured in the same run on the same machine, so the ratio means something where the absolute
//! numbers do not.
//!
//! Scenario `product`: `GET /products/:id` through the gateway (routing, envelope, request id, tracing,
//! one gRPC call, the product cache) against a bare axum handler that makes the same gRPC call.

use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use clap::Parser;
use mall_proto::product::v1::GetProductRequest;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Bounded load benchmarks for Mall")]
struct Args {
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

struct Stats {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// Sends `requests` GETs to `url` from `concurrency` clients; latencies of successful answers only.
async fn load(url: &str, requests: usize, concurrency: usize) -> anyhow::Result<Stats> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    // Warm up connections and caches.
    for _ in 0..concurrency {
        client.get(url).send().await?.error_for_status()?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let n = requests / concurrency + usize::from(worker < requests % concurrency);
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            let mut errors = 0;
            for _ in 0..n {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Ok(Stats {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        errors,
    })
}

fn report(name: &str, s: &Stats) {
    println!(
        "  {name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.errors
    );
}

/// The baseline: a bare axum handler making one tonic call to the same product service.
async fn bare_handler(State(client): State<ProductServiceClient<Channel>>, Path(id): Path<i64>) -> String {
    match client.clone().get_product(GetProductRequest { product_id: id }).await {
        Ok(r) => format!("{:?}", r.into_inner().product.map(|p| p.price_cents)),
        Err(s) => s.message().to_owned(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.concurrency > 0 && args.requests >= args.concurrency,
        "need requests >= concurrency > 0"
    );
    let dir = tempfile::tempdir()?;
    let shared = mall::config::Shared {
        data_dir: dir.path().to_owned(),
        database_url: None,
        redis_url: None,
        cache_namespace: "bench".into(),
        order_ttl: Duration::from_secs(1800),
        token_ttl: Duration::from_secs(3600),
        admin_email: "admin@bench.local".into(),
        admin_password: Some("bench-password".into()),
        signing_key: None,
    };
    let limits =
        mall_gateway::Limits { per_address: u64::MAX, per_email: u64::MAX, window: Duration::from_secs(60) };
    let options = mall::StartOptions {
        gateway: mall_gateway::Config { limits },
        gateway_listen: "127.0.0.1:0".into(),
        demo: true,
    };
    let mall = mall::start(&shared, options).await.context("starting the mall")?;
    let product = mall.services.iter().find(|s| s.name == "product").context("no product service")?;

    let client = ProductServiceClient::new(mall_runtime::channel(&product.addr.to_string())?);
    let bare =
        axum::Router::new().route("/products/{id}", axum::routing::get(bare_handler)).with_state(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, bare).await });

    println!(
        "GET /products/:id — {} requests at concurrency {} ({} cores)",
        args.requests,
        args.concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let baseline = load(&format!("http://{bare_addr}/products/1"), args.requests, args.concurrency).await?;
    report("baseline: bare axum + one tonic call", &baseline);
    let gateway =
        load(&format!("{}/products/1", mall.gateway_url()), args.requests, args.concurrency).await?;
    report("gateway", &gateway);
    println!(
        "  ratio gateway/baseline: throughput {:.2}, p50 {:.2}, p99 {:.2}",
        gateway.per_sec / baseline.per_sec,
        gateway.p50.as_secs_f64() / baseline.p50.as_secs_f64().max(1e-9),
        gateway.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(1e-9)
    );
    mall.stop().await
}
