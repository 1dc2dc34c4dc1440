//! A bounded, steady load through the gateway, as a few shoppers make it while the cluster is disturbed:
//! a fixed number of clients (one user each, with its own connections), each sending one request at a
//! time with a pause in between, until told to stop or until its deadline, whichever comes first.
//!
//! Each client cycles through product reads (`GET /products/:id`, `GET /products/list`), an
//! authenticated read (`GET /user/me`) and cart writes (`POST /cart/additem` with small quantities, and
//! `POST /cart/empty` now and then, so that no line nears the 999 limit). A request fails when it gets
//! no answer (connection error, timeout, a body cut short) or any status but 200 with a `code` 0
//! envelope. The [`Report`] counts requests and failures, groups the failures by route and kind, keeps
//! the first few as examples, and gives latency percentiles.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the clients do and where.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The gateway, e.g. `http://127.0.0.1:30889`.
    pub url: String,
    /// One login token per client: each client is a different user with its own cart.
    pub tokens: Vec<String>,
    /// The products the clients read and put in their carts (at least one).
    pub products: Vec<i64>,
    /// Each client's pause after each request.
    pub pause: Duration,
    /// One request's limit (connecting, sending, the whole reply); slower is a failure.
    pub timeout: Duration,
}

/// One request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Product(i64),
    List,
    Me,
    AddItem { product: i64, quantity: u32 },
    Empty,
}

/// A cycle is 8 requests: 3 product reads (2 by id, 1 list), 2 `/user/me`, 2 cart additions, and a
/// fourth-cycle slot that empties the cart (a product read in the other cycles).
const CYCLE: u64 = 8;
/// Every this many cycles the cart is emptied.
const EMPTY_EVERY: u64 = 4;

impl Op {
    /// The request a client makes at its `step`-th turn.
    pub fn at(step: u64, products: &[i64]) -> Op {
        let cycle = step / CYCLE;
        let product = products[(cycle % products.len() as u64) as usize];
        let other = products[((cycle + 1) % products.len() as u64) as usize];
        match step % CYCLE {
            0 | 4 => Op::Product(product),
            1 | 5 => Op::Me,
            2 => Op::AddItem { product, quantity: 1 + (cycle % 3) as u32 },
            3 => Op::List,
            6 => Op::AddItem { product: other, quantity: 1 },
            _ if cycle % EMPTY_EVERY == EMPTY_EVERY - 1 => Op::Empty,
            _ => Op::Product(other),
        }
    }

    /// `METHOD /route` with the id left out, for grouping.
    pub fn route(&self) -> &'static str {
        match self {
            Op::Product(_) => "GET /products/:id",
            Op::List => "GET /products/list",
            Op::Me => "GET /user/me",
            Op::AddItem { .. } => "POST /cart/additem",
            Op::Empty => "POST /cart/empty",
        }
    }

    fn request(&self, http: &reqwest::Client, url: &str, token: &str) -> reqwest::RequestBuilder {
        match *self {
            Op::Product(id) => http.get(format!("{url}/products/{id}")),
            Op::List => http.get(format!("{url}/products/list?page=1&page_size=20")),
            Op::Me => http.get(format!("{url}/user/me")).bearer_auth(token),
            Op::AddItem { product, quantity } => http
                .post(format!("{url}/cart/additem"))
                .bearer_auth(token)
                .json(&json!({"product_id": product, "quantity": quantity})),
            Op::Empty => http.post(format!("{url}/cart/empty")).bearer_auth(token).json(&json!({})),
        }
    }
}

/// A running load; [`Load::stop`] ends it and reports.
pub struct Load {
    stop: watch::Sender<bool>,
    clients: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    /// Starts one client per token of `plan`; each stops by itself after `limit` at the latest.
    pub fn start(plan: &Plan, limit: Duration) -> Result<Load> {
        anyhow::ensure!(!plan.products.is_empty(), "the load needs at least one product");
        anyhow::ensure!(!plan.tokens.is_empty(), "the load needs at least one client");
        let started = Instant::now();
        let deadline = started + limit;
        let (stop, stopped) = watch::channel(false);
        let n = plan.tokens.len() as u32;
        let mut clients = Vec::with_capacity(plan.tokens.len());
        for (index, token) in plan.tokens.iter().enumerate() {
            let http = reqwest::Client::builder().timeout(plan.timeout).build()?;
            let client = Client {
                http,
                url: plan.url.trim_end_matches('/').to_owned(),
                token: token.clone(),
                products: plan.products.clone(),
                pause: plan.pause,
                // Spread the clients over one pause and over the cycle, so they do not move in step.
                first_step: index as u64 * 3,
                delay: plan.pause * index as u32 / n,
            };
            clients.push(tokio::spawn(client.run(started, deadline, stopped.clone())));
        }
        Ok(Load { stop, clients, started })
    }

    /// Whether every client has ended (its deadline passed, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.clients.iter().all(|c| c.is_finished())
    }

    /// Stops the clients (each finishes the request it is making) and reports.
    pub async fn stop(self) -> Report {
        let _ = self.stop.send(true);
        let elapsed = self.started.elapsed();
        let mut report = Report { elapsed, ..Report::default() };
        for client in self.clients {
            match client.await {
                Ok(tally) => report.add(tally),
                Err(e) => {
                    report.failures += 1;
                    *report.reasons.entry("load client crashed".into()).or_default() += 1;
                    report.examples.push((Duration::ZERO, format!("a load client crashed: {e}")));
                }
            }
        }
        report.latencies.sort_unstable();
        report.examples.sort_by_key(|(at, _)| *at);
        report.examples.truncate(EXAMPLES);
        report
    }
}

/// How many failures a report keeps as examples (per client, and in all).
const EXAMPLES: usize = 8;

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    products: Vec<i64>,
    pause: Duration,
    first_step: u64,
    delay: Duration,
}

impl Client {
    async fn run(self, started: Instant, deadline: Instant, mut stopped: watch::Receiver<bool>) -> Tally {
        let mut tally = Tally::default();
        let mut step = self.first_step;
        let mut wait = self.delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() || Instant::now() >= deadline {
                break;
            }
            let op = Op::at(step, &self.products);
            let sent = Instant::now();
            let outcome = self.send(op).await;
            tally.record(op, sent.elapsed(), sent - started, outcome);
            step += 1;
            wait = self.pause;
        }
        tally
    }

    /// `Ok` for a 200 with `code` 0; else the failure's kind and a description.
    async fn send(&self, op: Op) -> std::result::Result<(), (String, String)> {
        let response = op.request(&self.http, &self.url, &self.token).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport)?;
        let code = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["code"].as_i64());
        if status == 200 && code == Some(0) {
            return Ok(());
        }
        let body: String = text.chars().take(200).collect();
        Err((format!("HTTP {status}"), format!("HTTP {status}: {body}")))
    }
}

/// A request that got no whole answer: its kind (connect, timeout, or the innermost cause) and the
/// whole chain of causes.
fn transport(e: reqwest::Error) -> (String, String) {
    let mut chain = e.to_string();
    let mut innermost = None;
    let mut source = e.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    let kind = if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect".to_owned()
    } else {
        format!("transport ({})", innermost.unwrap_or_else(|| e.to_string()))
    };
    (kind, chain)
}

/// One client's counts.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Microseconds, each request's.
    latencies: Vec<u32>,
    reasons: BTreeMap<String, u64>,
    /// The first failures: when (since the load started) and what.
    examples: Vec<(Duration, String)>,
}

impl Tally {
    fn record(
        &mut self,
        op: Op,
        took: Duration,
        at: Duration,
        outcome: std::result::Result<(), (String, String)>,
    ) {
        self.requests += 1;
        self.latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        if let Err((kind, what)) = outcome {
            self.failures += 1;
            *self.reasons.entry(format!("{}: {kind}", op.route())).or_default() += 1;
            if self.examples.len() < EXAMPLES {
                self.examples.push((at, format!("{op:?} → {what}")));
            }
        }
    }
}

/// Every client's counts together.
#[derive(Debug, Default)]
pub struct Report {
    pub requests: u64,
    pub failures: u64,
    /// Failures by `route: kind`.
    pub reasons: BTreeMap<String, u64>,
    /// The first failures, with when they happened (since the load started).
    pub examples: Vec<(Duration, String)>,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Microseconds, sorted.
    latencies: Vec<u32>,
}

impl Report {
    fn add(&mut self, tally: Tally) {
        self.requests += tally.requests;
        self.failures += tally.failures;
        self.latencies.extend(tally.latencies);
        for (reason, n) in tally.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        self.examples.extend(tally.examples);
    }

    /// The latency under which a fraction `q` (0–1) of the requests finished (nearest rank).
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q.clamp(0.0, 1.0) * self.latencies.len() as f64).ceil() as usize;
        Duration::from_micros(u64::from(self.latencies[rank.clamp(1, self.latencies.len()) - 1]))
    }

    /// `N requests in T s (R/s), F failed, p50 …, p99 …, max …`.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{} requests in {secs:.1} s ({:.0}/s), {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.requests,
            if secs > 0.0 { self.requests as f64 / secs } else { 0.0 },
            self.failures,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0)),
        )
    }

    /// The line, then the failures by reason and the first few.
    pub fn print(&self, phase: &str) {
        eprintln!("e2e: load [{phase}]: {}", self.line());
        for (reason, n) in &self.reasons {
            eprintln!("e2e:   {n:>6} × {reason}");
        }
        for (at, what) in self.examples.iter().take(5) {
            eprintln!("e2e:   at {:>6.1}s: {what}", at.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn the_mix_reads_writes_and_empties_carts_before_any_line_nears_999() {
        let products = [7, 8, 9];
        let mut lines: HashMap<i64, u32> = HashMap::new();
        let mut seen: HashMap<&'static str, u64> = HashMap::new();
        let mut biggest = 0;
        for step in 0..10_000 {
            let op = Op::at(step, &products);
            *seen.entry(op.route()).or_default() += 1;
            match op {
                Op::AddItem { product, quantity } => {
                    assert!((1..=3).contains(&quantity));
                    let line = lines.entry(product).or_default();
                    *line += quantity;
                    biggest = biggest.max(*line);
                }
                Op::Empty => lines.clear(),
                Op::Product(id) => assert!(products.contains(&id)),
                Op::List | Op::Me => {}
            }
        }
        assert!(biggest < 100, "a cart line reached {biggest}");
        for route in [
            "GET /products/:id",
            "GET /products/list",
            "GET /user/me",
            "POST /cart/additem",
            "POST /cart/empty",
        ] {
            assert!(seen.get(route).copied().unwrap_or(0) >= 250, "{route}: {seen:?}");
        }
        assert_eq!(seen["POST /cart/additem"], 2 * 10_000 / CYCLE);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut report = Report::default();
        report.add(Tally { requests: 4, latencies: vec![4000, 1000, 3000, 2000], ..Tally::default() });
        report.add(Tally { requests: 1, latencies: vec![100_000], ..Tally::default() });
        report.latencies.sort_unstable();
        assert_eq!(report.requests, 5);
        assert_eq!(report.percentile(0.5), Duration::from_millis(3));
        assert_eq!(report.percentile(0.99), Duration::from_millis(100));
        assert_eq!(report.percentile(0.0), Duration::from_millis(1));
        assert_eq!(Report::default().percentile(0.99), Duration::ZERO);
    }

    /// A small HTTP/1.1 server (keep-alive) that answers every `fail_every`-th request with a 503 and
    /// the others with a `code` 0 envelope; it counts both.
    async fn server(fail_every: u64) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (total, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (t, f) = (total.clone(), failed.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (total, failed) = (t.clone(), f.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let mut length = 0;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        read.read_exact(&mut body).await.unwrap();
                        let n = total.fetch_add(1, Ordering::SeqCst) + 1;
                        let (status, body) = if n % fail_every == 0 {
                            failed.fetch_add(1, Ordering::SeqCst);
                            ("503 Service Unavailable", r#"{"code":50301,"msg":"down","data":null}"#)
                        } else {
                            ("200 OK", r#"{"code":0,"msg":"ok","data":{}}"#)
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, total, failed)
    }

    fn plan(url: String) -> Plan {
        Plan {
            url,
            tokens: vec!["a".into(), "b".into(), "c".into()],
            products: vec![1, 2],
            pause: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn every_request_and_every_failed_one_is_counted() {
        let (url, total, failed) = server(3).await;
        let load = Load::start(&plan(url), Duration::from_secs(30)).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = load.stop().await;
        assert!(report.requests >= 20, "{}", report.line());
        assert_eq!(report.requests, total.load(Ordering::SeqCst));
        assert_eq!(report.failures, failed.load(Ordering::SeqCst));
        assert_eq!(report.reasons.values().sum::<u64>(), report.failures);
        assert!(report.reasons.keys().all(|r| r.ends_with(": HTTP 503")), "{:?}", report.reasons);
        assert_eq!(report.examples.len(), EXAMPLES);
        assert!(report.examples[0].1.contains("HTTP 503: {\"code\":50301"), "{:?}", report.examples);
    }

    #[tokio::test]
    async fn no_answer_is_a_failure() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let load = Load::start(&plan(format!("http://127.0.0.1:{port}")), Duration::from_secs(30)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = load.stop().await;
        assert!(report.requests > 0);
        assert_eq!(report.failures, report.requests);
        assert!(report.reasons.keys().all(|r| r.ends_with(": connect")), "{:?}", report.reasons);
    }

    #[tokio::test]
    async fn the_clients_stop_by_themselves_at_the_deadline() {
        let (url, total, _) = server(1_000_000).await;
        let load = Load::start(&plan(url), Duration::from_millis(200)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !load.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the clients ended");
        let sent = total.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(total.load(Ordering::SeqCst), sent, "no request after the deadline");
        let report = load.stop().await;
        assert_eq!((report.requests, report.failures), (sent, 0));
    }
}
