//! `bench`: bounded load against a whole mall started in this process, each scenario next to a baseline
//! measured in the same run on the same machine, so the ratio means something where the absolute
//! numbers do not.
//!
//! - `product`: `GET /products/:id` through the gateway (routing, envelope, request id, tracing, one
//!   gRPC call, the product cache) against a bare axum handler making the same gRPC call; then the same
//!   read with a bearer token against the anonymous one. The three alternate `--rounds` times and
//!   their medians are compared.
//! - `signup`: each virtual user registers and logs in (gateway → user, two argon2 passes in the user
//!   service's bounded hashing threads; gateway → auth for the token), against the same two argon2
//!   passes run directly on one thread per CPU.
//! - `checkout`: each virtual user adds to its cart and checks out (gateway → checkout → cart, order,
//!   product, payment: every write of the saga), against one database write round trip; then where a
//!   checkout's time went, from the services' own duration histograms.
//! - `storefront`: each page of the shop in the browser (HTML rendered on the server), one request at a
//!   time so that each latency is the page's own, against the API's JSON for the same data
//!   (`GET /products/list`, the home page's products); then the home page under the concurrent load
//!   against that API call under the same load.
//! - `tracing`: the gateway's product read with OpenTelemetry configured (an OTLP endpoint, sampling
//!   ratio 0: trace contexts made and propagated, nothing recorded) against OpenTelemetry off
//!   (`OTEL_SDK_DISABLED=true`). The tracer is process-wide, so each measurement is a fresh `bench`
//!   process; the two alternate `--rounds` times and the median of each is compared.
//!
//! The mall runs on SQLite and an in-process cache, or on a MySQL-compatible server and Redis
//! (`--database-url`, `--redis-url`). After each scenario it prints the process's resident memory, now
//! and at its peak: the mall runs in this process (with the `mall` binary's allocator), so that is what
//! `mall up` would use.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use clap::{Parser, ValueEnum};
use mall_proto::product::v1::GetProductRequest;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::PeerChannel;
use serde_json::{Value, json};

/// The `mall` binary's allocator, so that the memory reported is what `mall up` would use.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Product,
    Signup,
    Checkout,
    Tracing,
    Storefront,
    All,
}

#[derive(Parser)]
#[command(about = "Bounded load benchmarks for Mall")]
struct Args {
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Requests per product measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Checkouts per checkout measurement.
    #[arg(long, default_value_t = 1_000)]
    checkouts: usize,
    /// Users per signup measurement.
    #[arg(long, default_value_t = 200)]
    signups: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measurements of each side in the product and tracing scenarios (their medians are compared).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Run the mall on this MySQL-compatible server instead of SQLite (`mysql://root@127.0.0.1:3306`):
    /// each service in a database `mallbench_<service>`, dropped first so that every run starts empty.
    #[arg(long, env = "MALL_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Share the cache through this Redis (`redis://127.0.0.1:6379`) instead of in process; keys under
    /// a namespace of this run's own.
    #[arg(long, env = "MALL_BENCH_REDIS_URL")]
    redis_url: Option<String>,
    /// Most connections of each service's database pool (as `MALL_DATABASE_POOL_SIZE`).
    #[arg(long, default_value_t = mall_storage::DEFAULT_POOL_SIZE)]
    pool_size: u32,
    /// Product scenario only: measure the gateway alone and print it as one `RESULT` line (what the
    /// tracing scenario runs in each of its processes).
    #[arg(long, hide = true)]
    gateway_only: bool,
}

#[derive(Clone)]
struct Stats {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// Runs `total` operations from `concurrency` workers; `op(worker, i)` returns whether it succeeded.
/// Latencies of successful operations only.
async fn load<F, Fut>(total: usize, concurrency: usize, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let n = total / concurrency + usize::from(worker < total % concurrency);
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            let mut errors = 0;
            for i in 0..n {
                let t = Instant::now();
                if op(worker, i).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
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

fn report(name: &str, unit: &str, s: &Stats) {
    println!(
        "  {name:<40} {:>9.0} {unit}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.errors
    );
}

fn ratio(what: &str, a: &Stats, baseline: &Stats) {
    println!(
        "  ratio {what}: throughput {:.3}, p50 {:.1}x, p99 {:.1}x",
        a.per_sec / baseline.per_sec,
        a.p50.as_secs_f64() / baseline.p50.as_secs_f64().max(1e-9),
        a.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(1e-9)
    );
}

/// The measurement of median throughput among `v` (not empty).
fn median(mut v: Vec<Stats>) -> Stats {
    v.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    v.swap_remove(v.len() / 2)
}

/// This process's resident memory now and at its peak (`VmRSS`, `VmHWM` of /proc/self/status).
fn report_memory() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or_else(|| "?".to_owned(), |kib| format!("{}", kib / 1024))
    };
    println!("  memory (mall and bench, one process): RSS {} MiB, peak {} MiB", mib("VmRSS:"), mib("VmHWM:"));
}

/// The baseline: a bare axum handler making one tonic call to the same product service. A failed call
/// is a 502, so that it counts as an error (not as a fast answer).
async fn bare_handler(
    State(client): State<ProductServiceClient<PeerChannel>>,
    Path(id): Path<i64>,
) -> Result<String, (axum::http::StatusCode, String)> {
    match client.clone().get_product(GetProductRequest { product_id: id }).await {
        Ok(r) => Ok(format!("{:?}", r.into_inner().product.map(|p| p.price_cents))),
        Err(s) => Err((axum::http::StatusCode::BAD_GATEWAY, s.message().to_owned())),
    }
}

/// `GET url` (with `token` as the bearer when given) answered with a success and a whole body.
async fn get_ok(client: &reqwest::Client, url: &str, token: Option<&str>) -> bool {
    let request = client.get(url);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

async fn product_scenario(
    mall: &mall::Mall,
    shared: &mall::config::Shared,
    args: &Args,
) -> anyhow::Result<()> {
    let product = mall.service_addr("product").context("no product service")?;
    // Calling as the gateway, as services accept only the callers the design names.
    let gateway = mall.identities.get("gateway").context("no gateway identity")?;
    let grpc = ProductServiceClient::new(
        mall_runtime::channel(&product.to_string())?.with_identity(gateway, "product"),
    );
    let bare = axum::Router::new().route("/products/{id}", axum::routing::get(bare_handler)).with_state(grpc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/products/1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, bare).await });
    let gateway_url = format!("{}/products/1", mall.gateway_url());

    println!("GET /products/:id — {} requests at concurrency {}", args.requests, args.concurrency);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    if args.gateway_only {
        for _ in 0..args.concurrency {
            anyhow::ensure!(get_ok(&client, &gateway_url, None).await, "warm-up of {gateway_url} failed");
        }
        let (c, u) = (client.clone(), gateway_url.clone());
        let s = load(args.requests, args.concurrency, move |_, _| {
            let (c, u) = (c.clone(), u.clone());
            async move { get_ok(&c, &u, None).await }
        })
        .await?;
        println!("RESULT {} {} {} {}", s.per_sec, s.p50.as_nanos(), s.p99.as_nanos(), s.errors);
        return Ok(());
    }
    for url in [&bare_url, &gateway_url] {
        for _ in 0..args.concurrency {
            anyhow::ensure!(get_ok(&client, url, None).await, "warm-up of {url} failed");
        }
    }
    // The read with a bearer token: the gateway verifies it (and asks whether it was revoked).
    let token = admin_login(&client, &mall.gateway_url(), shared).await?;
    // The three alternate, each going first in turn, so that a drift of the machine favours none.
    let sides: [(&str, &String, Option<&String>); 3] = [
        ("baseline: bare axum + one tonic call", &bare_url, None),
        ("gateway", &gateway_url, None),
        ("gateway, authenticated", &gateway_url, Some(&token)),
    ];
    let mut measured: [Vec<Stats>; 3] = Default::default();
    let mut cpu: [Vec<Cpu>; 3] = Default::default();
    for round in 0..args.rounds.max(1) {
        for k in 0..sides.len() {
            let side = (round + k) % sides.len();
            let (name, url, token) = sides[side];
            let (c, u, t) = (client.clone(), url.clone(), token.cloned());
            let cpu_before = Cpu::now();
            let s = load(args.requests, args.concurrency, move |_, _| {
                let (c, u, t) = (c.clone(), u.clone(), t.clone());
                async move { get_ok(&c, &u, t.as_deref()).await }
            })
            .await?;
            cpu[side].push(Cpu::now().since(&cpu_before));
            report(&format!("round {}: {name}", round + 1), "req", &s);
            measured[side].push(s);
        }
    }
    let [baseline, gateway, authenticated] = measured.map(median);
    for ((name, _, _), s) in sides.iter().zip([&baseline, &gateway, &authenticated]) {
        report(&format!("median: {name}"), "req", s);
    }
    let requests = args.requests * args.rounds.max(1);
    for ((name, _, _), used) in sides.iter().zip(&cpu) {
        Cpu::total(used).report(requests, &format!("request ({name})"));
    }
    ratio("gateway/baseline", &gateway, &baseline);
    ratio("authenticated/anonymous", &authenticated, &gateway);
    token_check().await
}

/// The gateway's bearer-token check on a hit of its verified-token cache, against the signature
/// verification the cache saves (a product read does not look at the token; routes that need a user
/// do). One task, so the times are each check's own; the revocation list is in process here.
async fn token_check() -> anyhow::Result<()> {
    struct Keys(Vec<mall_tokens::PublicKey>);
    impl mall_gateway::KeySource for Keys {
        fn fetch(
            &self,
            _kid: Option<&str>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<Vec<mall_tokens::PublicKey>, mall_gateway::ApiError>> + Send>,
        > {
            let keys = self.0.clone();
            Box::pin(async move { Ok(keys) })
        }
    }
    const CHECKS: u32 = 20_000;
    let key = mall_tokens::SigningKey::generate();
    let now = mall_tokens::now_unix();
    let token = key.sign(&mall_tokens::Claims::new(7, mall_tokens::Role::Customer, now, 3600))?;
    let verifier = mall_tokens::Verifier::new([key.public_key()]);
    let started = Instant::now();
    for _ in 0..CHECKS {
        std::hint::black_box(verifier.verify(&token, now)?);
    }
    let verify = started.elapsed() / CHECKS;
    let cache = mall_storage::Cache::memory("bench");
    let check = mall_gateway::TokenCheck::new(Keys(vec![key.public_key()]), cache, Default::default());
    check.check(&token).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let started = Instant::now();
    for _ in 0..CHECKS {
        std::hint::black_box(check.check(&token).await.map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    let hit = started.elapsed() / CHECKS;
    println!("  token check (verified-token cache hit) {:>8.2} µs per check", hit.as_secs_f64() * 1e6);
    println!("  baseline: one signature verification   {:>8.2} µs", verify.as_secs_f64() * 1e6);
    println!("  ratio hit/verification: {:.3}", hit.as_secs_f64() / verify.as_secs_f64());
    Ok(())
}

async fn signup_scenario(mall: &mall::Mall, args: &Args) -> anyhow::Result<()> {
    println!("signup (register + log in) — {} users at concurrency {}", args.signups, args.concurrency);
    // Baseline: the argon2 work alone (a hash and a verification per user), one at a time per CPU, as
    // the user service's hashing threads run it by default.
    let hashing = mall_runtime::WorkLimit::new(
        "bench hashing",
        mall_runtime::available_cpus(),
        Duration::from_secs(3600),
    );
    let baseline = load(args.signups, args.concurrency, move |_, _| {
        let hashing = hashing.clone();
        async move {
            let work = || {
                let phc = mall_user::hash_password("bench-password").ok()?;
                Some(mall_user::verify_password("bench-password", &phc))
            };
            matches!(hashing.run_blocking(work).await, Ok(Some(true)))
        }
    })
    .await?;
    report("baseline: argon2 hash + verify", "user", &baseline);

    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let base = mall.gateway_url();
    let stats = load(args.signups, args.concurrency, move |worker, i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let email = format!("signup-{worker}-{i}@bench.local");
            let password = "bench-password";
            let ok = |r: reqwest::Result<reqwest::Response>| r.is_ok_and(|r| r.status().is_success());
            let register = json!({ "email": email, "password": password, "confirm_password": password });
            ok(client.post(format!("{base}/register")).json(&register).send().await)
                && ok(client
                    .post(format!("{base}/login"))
                    .json(&json!({ "email": email, "password": password }))
                    .send()
                    .await)
        }
    })
    .await?;
    report("register + log in (errors: 503 busy)", "user", &stats);
    ratio("signup/argon2", &stats, &baseline);
    Ok(())
}

/// Logs in through the gateway and returns the bearer token.
async fn login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let r: Value = client
        .post(format!("{base}/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?
        .json()
        .await?;
    r["data"]["token"].as_str().map(str::to_owned).context("login failed")
}

/// The seeded admin's token.
async fn admin_login(
    client: &reqwest::Client,
    base: &str,
    shared: &mall::config::Shared,
) -> anyhow::Result<String> {
    login(client, base, &shared.admin_email, shared.admin_password.as_deref().unwrap_or_default()).await
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
    let r = client.post(url).bearer_auth(token).json(body).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
    Ok(body)
}

/// `GET url` with the session cookie (when given) answered 200 with a whole body: its length.
async fn get_page(client: &reqwest::Client, url: &str, session: Option<&str>) -> Option<usize> {
    let request = client.get(url);
    let request = match session {
        Some(token) => request.header(reqwest::header::COOKIE, format!("mall_session={token}")),
        None => request,
    };
    match request.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r.bytes().await.ok().map(|b| b.len()),
        _ => None,
    }
}

async fn storefront_scenario(
    mall: &mall::Mall,
    shared: &mall::config::Shared,
    args: &Args,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let base = mall.gateway_url();
    let admin = admin_login(&client, &base, shared).await?;
    // A shopper with an order and two lines in the cart, for the pages that show them.
    let email = "storefront@bench.local";
    client
        .post(format!("{base}/register"))
        .json(&json!({ "email": email, "password": "bench-password", "confirm_password": "bench-password" }))
        .send()
        .await?;
    let shopper = login(&client, &base, email, "bench-password").await?;
    post(&client, &format!("{base}/cart/additem"), &shopper, &json!({ "product_id": 1, "quantity": 1 }))
        .await?;
    let checkout = json!({
        "firstname": "Bench", "lastname": "User", "email": email,
        "address": { "street_address": "1 Load St", "city": "Bench", "state": "CA", "country": "US", "zip_code": "90000" },
        "credit_card": { "credit_card_number": "4111111111111111", "credit_card_cvv": "123",
                         "credit_card_expiration_year": 2099, "credit_card_expiration_month": 1 }
    });
    let paid = post(&client, &format!("{base}/checkout"), &shopper, &checkout).await?;
    let order_id = paid["data"]["order_id"].as_str().context("no order id")?.to_owned();
    for product_id in [2, 21] {
        let line = json!({ "product_id": product_id, "quantity": 2 });
        post(&client, &format!("{base}/cart/additem"), &shopper, &line).await?;
    }

    let sequential = (args.requests / 10).max(100);
    println!("storefront pages — {sequential} requests each, one at a time");
    let api = format!("{base}/products/list?page_size=8");
    let pages: Vec<(&str, String, Option<&String>)> = vec![
        ("baseline: API GET /products/list (JSON)", api.clone(), None),
        ("home", format!("{base}/"), None),
        ("home, signed in", format!("{base}/"), Some(&shopper)),
        ("category", format!("{base}/shop/category/Kitchen"), None),
        ("search", format!("{base}/shop/search?q=wool"), None),
        ("product", format!("{base}/shop/products/3"), None),
        ("cart (2 lines)", format!("{base}/shop/cart"), Some(&shopper)),
        ("checkout form", format!("{base}/shop/checkout"), Some(&shopper)),
        ("orders", format!("{base}/shop/orders"), Some(&shopper)),
        ("order", format!("{base}/shop/orders/{order_id}"), Some(&shopper)),
        ("login form", format!("{base}/shop/login"), None),
        ("admin: products", format!("{base}/shop/admin"), Some(&admin)),
        ("admin: orders", format!("{base}/shop/admin/orders"), Some(&admin)),
    ];
    let mut baseline = None;
    for (name, url, session) in &pages {
        let size = get_page(&client, url, session.map(|s| s.as_str())).await;
        let size = size.with_context(|| format!("{url} did not answer 200"))?;
        for _ in 0..10 {
            get_page(&client, url, session.map(|s| s.as_str())).await;
        }
        let (c, u, t) = (client.clone(), url.clone(), session.cloned());
        let s = load(sequential, 1, move |_, _| {
            let (c, u, t) = (c.clone(), u.clone(), t.clone());
            async move { get_page(&c, &u, t.as_deref()).await.is_some() }
        })
        .await?;
        report(&format!("{name} ({:.1} KB)", size as f64 / 1024.0), "page", &s);
        match &baseline {
            None => baseline = Some(s),
            Some(b) => ratio(&format!("{name}/baseline"), &s, b),
        }
    }

    println!("home page under load — {} requests at concurrency {}", args.requests, args.concurrency);
    let home = format!("{base}/");
    let sides = [("baseline: API GET /products/list", api), ("home", home)];
    let mut measured: [Vec<Stats>; 2] = Default::default();
    for round in 0..args.rounds.max(1) {
        for k in 0..sides.len() {
            let side = (round + k) % sides.len();
            let (c, u) = (client.clone(), sides[side].1.clone());
            let s = load(args.requests, args.concurrency, move |_, _| {
                let (c, u) = (c.clone(), u.clone());
                async move { get_page(&c, &u, None).await.is_some() }
            })
            .await?;
            report(&format!("round {}: {}", round + 1, sides[side].0), "page", &s);
            measured[side].push(s);
        }
    }
    let [api, home] = measured.map(median);
    ratio("home/API under load", &home, &api);
    Ok(())
}

async fn checkout_scenario(
    mall: &mall::Mall,
    shared: &mall::config::Shared,
    args: &Args,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let base = mall.gateway_url();
    let admin = admin_login(&client, &base, shared).await?;
    let product = post(
        &client,
        &format!("{base}/product/create"),
        &admin,
        &json!({ "name": "Bench widget", "price": "9.99", "stock": 1_000_000_000 }),
    )
    .await?;
    let product_id = product["data"]["id"].as_i64().context("no product id")?;
    let mut tokens = Vec::new();
    for i in 0..args.concurrency {
        let email = format!("bench{i}@bench.local");
        let r = client
            .post(format!("{base}/register"))
            .json(&json!({ "email": email, "password": "bench-password", "confirm_password": "bench-password" }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "register failed: {}", r.status());
        tokens.push(login(&client, &base, &email, "bench-password").await?);
    }
    let tokens = Arc::new(tokens);
    let body = json!({
        "firstname": "Bench", "lastname": "User", "email": "bench@bench.local",
        "address": { "street_address": "1 Load St", "city": "Bench", "state": "CA", "country": "US", "zip_code": "90000" },
        "credit_card": { "credit_card_number": "4111111111111111", "credit_card_cvv": "123",
                         "credit_card_expiration_year": 2099, "credit_card_expiration_month": 1 }
    });

    // Baseline: one database write round trip (an upsert on a table of the bench's own) at the same
    // concurrency, on the same kind of database the mall uses.
    let url = match &shared.database_url {
        Some(base) => mall_storage::database_url_with_name(base, "mallbench_baseline")?,
        None => mall_storage::sqlite_url_in(&shared.data_dir, "baseline"),
    };
    let db = mall_storage::Db::connect(&url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(db.pool())
        .await?;
    let upsert = match db.backend() {
        mall_storage::Backend::MySql => {
            "INSERT INTO counters (id, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1"
        }
        mall_storage::Backend::Sqlite => {
            "INSERT INTO counters (id, n) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"
        }
    };
    println!(
        "checkout (add to cart + checkout) — {} checkouts at concurrency {}",
        args.checkouts, args.concurrency
    );
    let pool = db.clone();
    let baseline = load(args.checkouts, args.concurrency, move |worker, _| {
        let pool = pool.clone();
        async move { sqlx::query(upsert).bind(worker as i64).execute(pool.pool()).await.is_ok() }
    })
    .await?;
    report("baseline: one database write", "op", &baseline);

    let before = durations();
    let cpu_before = Cpu::now();
    let status_before = server_status(&db).await;
    let (c, b) = (client.clone(), base.clone());
    let stats = load(args.checkouts, args.concurrency, move |worker, _| {
        let (client, base, tokens, body) = (c.clone(), b.clone(), tokens.clone(), body.clone());
        async move {
            let token = &tokens[worker];
            let add = json!({ "product_id": product_id, "quantity": 1 });
            post(&client, &format!("{base}/cart/additem"), token, &add).await.is_ok()
                && post(&client, &format!("{base}/checkout"), token, &body).await.is_ok()
        }
    })
    .await?;
    let cpu = Cpu::now().since(&cpu_before);
    let status = server_status(&db).await;
    report("add to cart + checkout", "checkout", &stats);
    ratio("checkout/database write", &stats, &baseline);
    breakdown(&before, &durations(), args.checkouts);
    cpu.report(args.checkouts, "checkout");
    if let (Some(before), Some(after)) = (status_before, status) {
        let per = |name: &str| {
            (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0))
                / args.checkouts as f64
        };
        println!(
            "  the database server, per checkout: {:.1} statements ({:.1} SELECT, {:.1} INSERT, {:.1} UPDATE, \
             {:.1} DELETE), {:.1} commits, {:.1} InnoDB fsyncs",
            per("Questions"),
            per("Com_select"),
            per("Com_insert"),
            per("Com_update"),
            per("Com_delete"),
            per("Handler_commit"),
            per("Innodb_data_fsyncs"),
        );
    }
    Ok(())
}

/// A MySQL-compatible server's `SHOW GLOBAL STATUS` counters (None on SQLite).
async fn server_status(db: &mall_storage::Db) -> Option<BTreeMap<String, f64>> {
    if db.backend() != mall_storage::Backend::MySql {
        return None;
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SHOW GLOBAL STATUS").fetch_all(db.pool()).await.ok()?;
    Some(rows.into_iter().filter_map(|(name, value)| Some((name, value.parse().ok()?))).collect())
}

/// CPU time (user + system) used so far by this process and by the database and cache servers running
/// on this machine, if any (found by their process names in /proc).
struct Cpu(Vec<(&'static str, f64)>);

impl Cpu {
    const SERVERS: [(&'static str, &'static str); 3] =
        [("MariaDB", "mariadbd"), ("MySQL", "mysqld"), ("Redis", "redis-server")];

    fn now() -> Cpu {
        let mut all = vec![("this process (mall and load)", process_cpu("self").unwrap_or(0.0))];
        let Ok(dir) = std::fs::read_dir("/proc") else { return Cpu(all) };
        let pids: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        for (label, comm) in Self::SERVERS {
            let used: f64 = pids
                .iter()
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                })
                .filter_map(|pid| process_cpu(pid))
                .sum();
            if used > 0.0 {
                all.push((label, used));
            }
        }
        Cpu(all)
    }

    fn since(&self, earlier: &Cpu) -> Cpu {
        let before = |label: &str| earlier.0.iter().find(|(l, _)| *l == label).map_or(0.0, |(_, s)| *s);
        Cpu(self.0.iter().map(|(label, s)| (*label, s - before(label))).collect())
    }

    fn total(all: &[Cpu]) -> Cpu {
        let mut sum: Vec<(&'static str, f64)> = Vec::new();
        for (label, s) in all.iter().flat_map(|c| &c.0) {
            match sum.iter_mut().find(|(l, _)| l == label) {
                Some((_, total)) => *total += s,
                None => sum.push((label, *s)),
            }
        }
        Cpu(sum)
    }

    fn report(&self, operations: usize, unit: &str) {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(label, s)| format!("{label} {:.1} µs", s * 1e6 / operations as f64))
            .collect();
        println!("  CPU per {unit}: {}", parts.join(", "));
    }
}

/// Seconds of CPU (user + system) a process has used: /proc/<pid>/stat, in clock ticks of 1/100 s.
fn process_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields after it are counted from there.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The sum and count of every `*_duration_seconds` histogram of this process's metrics (the mall runs
/// in it), by series: `name{labels}` without the suffix.
fn durations() -> BTreeMap<String, (f64, f64)> {
    let mut series = BTreeMap::new();
    for line in mall_runtime::metrics_handle().render().lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = name.split_once('{').unwrap_or((name, "}"));
        let (base, sum) = match (
            name.strip_suffix("_duration_seconds_sum"),
            name.strip_suffix("_duration_seconds_count"),
        ) {
            (Some(base), _) => (base, true),
            (_, Some(base)) => (base, false),
            _ => continue,
        };
        let entry: &mut (f64, f64) = series.entry(format!("{base}{{{labels}")).or_default();
        if sum { entry.0 = value } else { entry.1 = value }
    }
    series
}

/// Where `checkouts` checkouts spent their time, from the difference of the services' own duration
/// histograms: for each series, calls and milliseconds per checkout, most time first. Times nest (the
/// gateway's request holds the checkout service's call, which holds the calls it makes).
fn breakdown(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>, checkouts: usize) {
    let n = checkouts as f64;
    let mut rows: Vec<(&String, f64, f64, f64)> = after
        .iter()
        .filter_map(|(series, &(sum, count))| {
            let (sum0, count0) = before.get(series).copied().unwrap_or_default();
            let (sum, count) = (sum - sum0, count - count0);
            (count > 0.0).then(|| (series, count / n, sum * 1e3 / count, sum * 1e3 / n))
        })
        .collect();
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    println!("  where a checkout's time goes (per checkout; times nest):");
    for (series, calls, mean, total) in rows {
        println!("    {series:<100} {calls:>5.2} calls  mean {mean:>7.2} ms  {total:>7.2} ms");
    }
}

/// One `bench --scenario product --gateway-only` process with `env` added (and no other OTEL_*
/// setting), and what it measured.
fn measure_in_process(args: &Args, env: &[(&str, &str)]) -> anyhow::Result<Stats> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.args(["--scenario", "product", "--gateway-only"]);
    command.args(["--requests", &args.requests.to_string(), "--concurrency", &args.concurrency.to_string()]);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let output = command.envs(env.iter().copied()).stderr(std::process::Stdio::inherit()).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "the measuring process failed: {}\n{stdout}", output.status);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).context("no RESULT line")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(fields.len() == 4, "a RESULT line of four fields: {line}");
    Ok(Stats {
        per_sec: fields[0].parse()?,
        p50: Duration::from_nanos(fields[1].parse()?),
        p99: Duration::from_nanos(fields[2].parse()?),
        errors: fields[3].parse()?,
    })
}

fn tracing_scenario(args: &Args) -> anyhow::Result<()> {
    // Sampling 0 exports nothing, so the endpoint is never connected to: a port nothing listens on.
    let endpoint = format!("http://{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?);
    let off: &[(&str, &str)] = &[("OTEL_SDK_DISABLED", "true")];
    let sampled_0: &[(&str, &str)] = &[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    println!(
        "tracing overhead: GET /products/:id through the gateway — {} requests at concurrency {}, {} rounds, \
         each measurement a fresh process",
        args.requests, args.concurrency, args.rounds
    );
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        // Each side goes first in every other round, so a drift of the machine favours neither.
        let sides = if round % 2 == 0 { [false, true] } else { [true, false] };
        for traced in sides {
            let s = measure_in_process(args, if traced { sampled_0 } else { off })?;
            let name = if traced { "OTLP configured, sampling 0" } else { "tracing off" };
            report(&format!("round {}: {name}", round + 1), "req", &s);
            if traced { ons.push(s) } else { offs.push(s) }
        }
    }
    let (off, on) = (median(offs), median(ons));
    report("median: tracing off (baseline)", "req", &off);
    report("median: OTLP configured, sampling 0", "req", &on);
    ratio("sampling 0/off", &on, &off);
    Ok(())
}

/// The databases an earlier run on `base`'s server left (`mallbench_<service>`, `mallbench_baseline`).
async fn drop_bench_databases(base: &str) -> anyhow::Result<()> {
    let db =
        mall_storage::Db::connect(&mall_storage::database_url_with_name(base, "mallbench_baseline")?).await?;
    for statement in [
        "DROP DATABASE IF EXISTS mallbench_auth",
        "DROP DATABASE IF EXISTS mallbench_user",
        "DROP DATABASE IF EXISTS mallbench_product",
        "DROP DATABASE IF EXISTS mallbench_cart",
        "DROP DATABASE IF EXISTS mallbench_order",
        "DROP DATABASE IF EXISTS mallbench_payment",
        "DROP DATABASE IF EXISTS mallbench_checkout",
        "DROP DATABASE IF EXISTS mallbench_baseline",
    ] {
        sqlx::query(statement).execute(db.pool()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.concurrency > 0 && args.requests >= args.concurrency,
        "need requests >= concurrency > 0"
    );
    if args.scenario == Scenario::Tracing {
        return tracing_scenario(&args);
    }
    // As `mall` does: logs, and OpenTelemetry as the OTEL_* variables say.
    mall_runtime::init_tracing();
    let dir = tempfile::tempdir()?;
    let shared = mall::config::Shared {
        data_dir: dir.path().to_owned(),
        database_url: args
            .database_url
            .as_deref()
            .map(|u| mall_storage::database_url_with_name(u, "mallbench"))
            .transpose()?,
        database_pool_size: args.pool_size,
        redis_url: args.redis_url.clone(),
        cache_namespace: format!("bench{}", std::process::id()),
        token_ttl: Duration::from_secs(3600),
        order_ttl: Duration::from_secs(1800),
        trusted_proxies: 0,
        request_timeout: mall_gateway::DEFAULT_REQUEST_TIMEOUT,
        admin_email: "admin@bench.local".into(),
        admin_password: Some("bench-password".into()),
        signing_key: None,
        auth_keys_file: None,
        rate_limits: mall::config::RateLimits::default(),
        drain_delay: None,
        password_hash_concurrency: None,
        search_concurrency: None,
    };
    let options = mall::StartOptions {
        gateway: mall_gateway::Config {
            limits: mall_gateway::Limits::UNLIMITED,
            ..mall_gateway::Config::default()
        },
        gateway_listen: "127.0.0.1:0".into(),
        demo: true,
    };
    if let Some(base) = &args.database_url {
        drop_bench_databases(base).await?;
    }
    let mall = mall::start(&shared, options).await.context("starting the mall")?;
    println!(
        "Mall bench on {} cores ({}, {})",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if args.database_url.is_some() { "MySQL-compatible server" } else { "embedded SQLite" },
        if args.redis_url.is_some() { "Redis cache" } else { "in-process cache" },
    );
    report_memory();
    if matches!(args.scenario, Scenario::Product | Scenario::All) {
        product_scenario(&mall, &shared, &args).await?;
        if args.gateway_only {
            return mall.stop().await;
        }
        report_memory();
    }
    if matches!(args.scenario, Scenario::Storefront | Scenario::All) {
        storefront_scenario(&mall, &shared, &args).await?;
        report_memory();
    }
    if matches!(args.scenario, Scenario::Signup | Scenario::All) {
        signup_scenario(&mall, &args).await?;
        report_memory();
    }
    if matches!(args.scenario, Scenario::Checkout | Scenario::All) {
        checkout_scenario(&mall, &shared, &args).await?;
        report_memory();
    }
    mall.stop().await?;
    if args.scenario == Scenario::All {
        tracing_scenario(&args)?;
    }
    Ok(())
}
