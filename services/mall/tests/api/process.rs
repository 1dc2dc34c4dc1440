//! The real `mall` binary: `mall up` on a fresh data directory serves the API, SIGTERM stops it
//! gracefully with exit code 0 (after a short drain), `mall serve` drains first (a second signal cuts
//! the drain short), a burst of logins and registrations stays within its memory bound, and the keys
//! file and the rate limits come from the environment.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// `mall up` as a child process on a free port and a temp data directory.
pub(crate) struct MallUp {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
}

impl MallUp {
    /// Starts it with `env` added to a clean configuration and waits until `/readyz` answers 200.
    pub(crate) async fn start(env: &[(&str, &str)]) -> MallUp {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Its log goes to stdout: into a file, so that a full pipe never blocks it.
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mall"));
        command
            .args(["up", "--gateway-listen", &format!("127.0.0.1:{port}")])
            .env("MALL_DATA_DIR", dir.path())
            .env("MALL_DRAIN_DELAY", "200ms")
            .env_remove("MALL_DATABASE_URL")
            .env_remove("MALL_REDIS_URL")
            .env_remove("MALL_ADMIN_PASSWORD")
            .stdout(stdout)
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                && r.status() == 200
            {
                return MallUp { child, url, dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("mall up did not become ready");
    }

    /// A line of `/proc/<pid>/status` in bytes (`VmRSS`: resident now, `VmHWM`: the peak so far).
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// SIGTERM, then the exit status and what it printed.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        let kill = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        (status, std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap())
    }
}

/// A test that fails (panics) before [`MallUp::stop`] leaves no `mall up` behind.
impl Drop for MallUp {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON body of a response that must have succeeded.
pub(crate) async fn json_ok(response: reqwest::Response) -> serde_json::Value {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    body
}

/// A new customer of `mall` with the first demo product in its cart: (email, token, product id).
pub(crate) async fn shopper(client: &reqwest::Client, mall: &MallUp) -> (String, String, i64) {
    let base = &mall.url;
    let email = format!("{}@example.com", mall_testkit::unique_name("shopper"));
    let password = "shopper-password-1";
    let register = json!({ "email": email, "password": password, "confirm_password": password });
    json_ok(client.post(format!("{base}/register")).json(&register).send().await.unwrap()).await;
    let credentials = json!({ "email": email, "password": password });
    let login = json_ok(client.post(format!("{base}/login")).json(&credentials).send().await.unwrap()).await;
    let token = login["data"]["token"].as_str().unwrap().to_owned();
    let list = json_ok(client.get(format!("{base}/products/list")).send().await.unwrap()).await;
    let product_id = list["data"]["items"][0]["id"].as_i64().expect("a demo product");
    let add = json!({ "product_id": product_id, "quantity": 1 });
    json_ok(client.post(format!("{base}/cart/additem")).bearer_auth(&token).json(&add).send().await.unwrap())
        .await;
    (email, token, product_id)
}

#[tokio::test]
async fn mall_up_serves_and_stops_on_sigterm() {
    let mall = MallUp::start(&[]).await;
    for service in ["auth", "user", "product"] {
        assert!(mall.dir.path().join(format!("{service}.db")).exists(), "{service}.db");
    }
    let list = reqwest::get(format!("{}/products/list", mall.url)).await.unwrap();
    let list: serde_json::Value = list.json().await.unwrap();
    assert!(list["data"]["total"].as_i64().unwrap() >= 25, "the demo catalog is loaded: {list}");

    let url = mall.url.clone();
    let (status, stdout) = mall.stop();
    assert!(status.success(), "exit: {status:?}");
    assert!(stdout.contains(&url), "{stdout}");
    assert!(stdout.contains("Admin account created: admin@mall.local / "), "{stdout}");
}

const MIB: u64 = 1024 * 1024;

/// How an answer to a burst request ended: `Ok` for the success status, `Busy` for the documented
/// refusal (503, code 50303, a Retry-After); anything else fails the test.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Busy,
}

async fn outcome(response: reqwest::Response, success: u16) -> Outcome {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = response.json().await.unwrap();
    if status == success {
        return Outcome::Ok;
    }
    assert_eq!(status, 503, "only success or 503 is acceptable: {body}");
    assert_eq!(body["code"], 50303, "{body}");
    assert!(body["msg"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let retry_after: u64 = retry_after.expect("a 503 for a busy server says when to retry").parse().unwrap();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    Outcome::Busy
}

/// Argon2 costs 19 MiB per hash: 200 concurrent logins and 20 registrations must neither pile up that
/// memory nor fail with anything but a 503 that says when to retry. `mall up` stays under 120 MiB.
#[tokio::test]
async fn a_login_burst_stays_within_the_memory_bound() {
    // One trusted proxy, so that each request can come from its own address (the per-address limit
    // would otherwise answer 429 long before the hashing is busy). Two hashes at a time pins the
    // bound on any machine: its default follows the CPUs.
    let mall =
        MallUp::start(&[("MALL_GATEWAY_TRUSTED_PROXIES", "1"), ("MALL_PASSWORD_HASH_CONCURRENCY", "2")])
            .await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let post = |path: &str, from: String, body: serde_json::Value| {
        client.post(format!("{}{path}", mall.url)).header("x-forwarded-for", from).json(&body).send()
    };
    let password = "burst-password";
    // 25 accounts, so that 200 logins stay within the per-email limit (10 a minute).
    let accounts: Vec<String> = (0..25).map(|i| format!("burst{i}@example.com")).collect();
    for (i, email) in accounts.iter().enumerate() {
        let body = json!({ "email": email, "password": password, "confirm_password": password });
        let r = post("/register", format!("192.0.2.{i}"), body).await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let idle = mall.memory("VmRSS");

    let logins = (0..200).map(|i| {
        let body = json!({ "email": accounts[i % accounts.len()], "password": password });
        let request = post("/login", format!("203.0.113.{i}"), body);
        async move { outcome(request.await.unwrap(), 200).await }
    });
    let registrations = (0..20).map(|i| {
        let email = format!("new{i}@example.com");
        let body = json!({ "email": email, "password": password, "confirm_password": password });
        let request = post("/register", format!("198.51.100.{i}"), body);
        async move { outcome(request.await.unwrap(), 201).await }
    });
    let burst =
        futures::future::join(futures::future::join_all(logins), futures::future::join_all(registrations));
    // A guard against a hang, not a timing assertion: every request is answered or refused in seconds.
    let (logins, registrations) =
        tokio::time::timeout(Duration::from_secs(300), burst).await.expect("the burst was not answered");

    let (peak, after) = (mall.memory("VmHWM"), mall.memory("VmRSS"));
    let count = |outcomes: &[Outcome], o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    eprintln!(
        "burst: RSS idle {} MiB, peak {} MiB, after {} MiB; logins {} ok / {} busy; registrations {} ok / {} busy",
        idle / MIB,
        peak / MIB,
        after / MIB,
        count(&logins, Outcome::Ok),
        count(&logins, Outcome::Busy),
        count(&registrations, Outcome::Ok),
        count(&registrations, Outcome::Busy),
    );
    assert!(count(&logins, Outcome::Ok) > 0, "some logins get through");
    assert!(peak < 120 * MIB, "peak RSS {} MiB is over 120 MiB", peak / MIB);
    let (status, _) = mall.stop();
    assert!(status.success(), "exit: {status:?}");
}

#[tokio::test]
async fn mall_serve_drains_on_sigterm_and_a_second_signal_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `mall serve` leaves migrations to `mall migrate` (a Job in a cluster).
    let migrated = Command::new(env!("CARGO_BIN_EXE_mall"))
        .args(["migrate", "product"])
        .env("MALL_DATA_DIR", dir.path())
        .env_remove("MALL_DATABASE_URL")
        .env_remove("MALL_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(migrated.success(), "mall migrate product: {migrated}");
    let (key, peers) = identity_settings("product");
    let child = Command::new(env!("CARGO_BIN_EXE_mall"))
        .args(["serve", "product", "--listen", &format!("127.0.0.1:{port}")])
        .env("MALL_DATA_DIR", dir.path())
        .env("MALL_IDENTITY_KEY", key)
        .env("MALL_IDENTITY_PEERS", peers)
        // Far longer than the test: the drain ends with the second signal.
        .env("MALL_DRAIN_DELAY", "1h")
        .env_remove("MALL_DATABASE_URL")
        .env_remove("MALL_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let client = reqwest::Client::new();
    let status = async |client: &reqwest::Client| match client.get(&readyz).send().await {
        Ok(r) => Some(r.status().as_u16()),
        Err(_) => None,
    };
    let started = Instant::now();
    while status(&client).await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(60), "mall serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = child.0.id().to_string();
    let term = || Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term().success());
    // Draining: not ready, but still answering.
    while status(&client).await != Some(503) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(child.0.try_wait().unwrap().is_none(), "still draining");

    assert!(term().success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "exit: {exit:?}");
}

/// A failed test must not leave a process draining for an hour.
/// `MALL_IDENTITY_KEY` and `MALL_IDENTITY_PEERS` for `service`, as the operator makes them.
fn identity_settings(service: &str) -> (String, String) {
    let own = mall_tokens::SigningKey::generate();
    let other = mall_tokens::SigningKey::generate();
    let (own_public, other_public) = (own.public_key(), other.public_key());
    let peers = mall_runtime::identity::format_peers([(service, &own_public), ("gateway", &other_public)]);
    (own.to_pkcs8_pem(), peers)
}

#[test]
fn mall_serve_refuses_to_run_without_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    // `mall serve cart` with these identity settings: how it failed (it must).
    let refused = |key: Option<String>, peers: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mall"));
        command.args(["serve", "cart", "--listen", "127.0.0.1:0"]).env("MALL_DATA_DIR", dir.path());
        for (name, value) in [("MALL_IDENTITY_KEY", key), ("MALL_IDENTITY_PEERS", peers)] {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let output = command.env_remove("MALL_DATABASE_URL").env_remove("MALL_REDIS_URL").output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(None, None);
    assert!(stderr.contains("MALL_IDENTITY_KEY and MALL_IDENTITY_PEERS must be set"), "{stderr}");

    // A key that is not among the peers' is refused too: the two settings must belong together.
    let (_, peers) = identity_settings("cart");
    let stderr = refused(Some(mall_tokens::SigningKey::generate().to_pkcs8_pem()), Some(peers));
    assert!(stderr.contains("do not include this service's own"), "{stderr}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mall up` takes auth's keys file and the rate limits from the environment.
#[tokio::test]
async fn mall_up_takes_the_keys_file_and_the_rate_limits_from_the_environment() {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys.json");
    let key = mall_tokens::SigningKey::generate();
    std::fs::write(&path, json!({ "keys": [{ "pem": key.to_pkcs8_pem(), "signs": true }] }).to_string())
        .unwrap();
    let mall = MallUp::start(&[
        ("MALL_AUTH_KEYS_FILE", path.to_str().unwrap()),
        ("MALL_RATE_LIMIT_PER_EMAIL", "2"),
        ("MALL_RATE_LIMIT_SEARCH_PER_ADDRESS", "2"),
    ])
    .await;
    let client = reqwest::Client::new();
    let status = async |request: reqwest::RequestBuilder| {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };

    for _ in 0..2 {
        assert_eq!(status(client.get(format!("{}/products/search?query=mug", mall.url))).await.0, 200);
    }
    let (code, body) = status(client.get(format!("{}/products/search?query=mug", mall.url))).await;
    assert_eq!((code, &body["code"]), (429, &json!(42901)), "{body}");

    let account = json!({ "email": "kim@example.com", "password": "kims-password", "confirm_password": "kims-password" });
    assert_eq!(status(client.post(format!("{}/register", mall.url)).json(&account)).await.0, 201);
    let login = json!({ "email": "kim@example.com", "password": "kims-password" });
    let (code, body) = status(client.post(format!("{}/login", mall.url)).json(&login)).await;
    assert_eq!(code, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap();
    assert_eq!(mall_tokens::Verifier::kid_of(token).unwrap(), key.kid(), "signed with the file's key");
    assert_eq!(status(client.post(format!("{}/login", mall.url)).json(&login)).await.0, 200);
    assert_eq!(status(client.post(format!("{}/login", mall.url)).json(&login)).await.0, 429);

    let (exit, _) = mall.stop();
    assert!(exit.success(), "exit: {exit:?}");
}
