//! A client of the shop's HTTP API (the `{code, msg, data}` envelope), and the ways to reach a gateway in
//! a cluster: `kubectl port-forward`, or a pod IP when the host routes to pods.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// One reply: HTTP status, JSON body, and the trace it was served in.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The gateway's `traceparent` response header.
    pub traceparent: Option<String>,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// The reply, if its status is `want`; else an error showing it.
    pub fn expect(self, want: u16, what: &str) -> Result<Reply> {
        if self.status != want {
            bail!("{what}: HTTP {} (wanted {want}): {}", self.status, self.body);
        }
        Ok(self)
    }
}

pub struct Gateway {
    pub url: String,
    client: reqwest::Client,
}

impl Gateway {
    pub fn new(url: impl Into<String>) -> Result<Gateway> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Gateway { url: url.into().trim_end_matches('/').to_owned(), client })
    }

    async fn reply(response: reqwest::Response) -> Result<Reply> {
        let status = response.status().as_u16();
        let traceparent =
            response.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, body, traceparent })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Reply> {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Gateway::reply(request.send().await.with_context(|| format!("GET {path}"))?).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Reply> {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Gateway::reply(request.send().await.with_context(|| format!("POST {path}"))?).await
    }

    /// Registers `email` with `password` (201).
    pub async fn register(&self, email: &str, password: &str) -> Result<()> {
        let body = json!({"email": email, "password": password, "confirm_password": password});
        self.post("/register", &body, None).await?.expect(201, "register")?;
        Ok(())
    }

    /// Logs in (200); the token.
    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        let reply = self.post("/login", &json!({"email": email, "password": password}), None).await?;
        let reply = reply.expect(200, &format!("login as {email}"))?;
        Ok(reply.data()["token"].as_str().context("login: no token")?.to_owned())
    }

    /// Creates a product as the admin (201); its id.
    pub async fn create_product(
        &self,
        admin_token: &str,
        name: &str,
        price: &str,
        stock: i64,
    ) -> Result<i64> {
        let body = json!({"name": name, "description": "Made by the end-to-end suite", "price": price,
                          "categories": ["E2E"], "stock": stock});
        let reply = self.post("/product/create", &body, Some(admin_token)).await?;
        reply.expect(201, "create a product as admin")?.data()["id"].as_i64().context("no product id")
    }

    /// Checks the caller's cart out with the approved test card (4111 1111 1111 1111), expecting 200;
    /// the order's id and total in cents.
    pub async fn checkout(&self, token: &str, email: &str) -> Result<(String, i64)> {
        let reply = self.checkout_reply(token, email).await?;
        let order_id = reply.data()["order_id"].as_str().context("checkout: no order id")?.to_owned();
        let total = reply.data()["total_cents"].as_i64().context("checkout: no total")?;
        Ok((order_id, total))
    }

    /// [`Gateway::checkout`]'s reply as it came.
    pub async fn checkout_reply(&self, token: &str, email: &str) -> Result<Reply> {
        let body = json!({
            "firstname": "Ada", "lastname": "Lovelace", "email": email,
            "address": {"street_address": "1 Main St", "city": "Springfield", "state": "OR",
                        "country": "US", "zip_code": "97477"},
            "credit_card": {"credit_card_number": "4111 1111 1111 1111", "credit_card_cvv": "123",
                            "credit_card_expiration_year": 2099, "credit_card_expiration_month": 12}
        });
        self.post("/checkout", &body, Some(token)).await?.expect(200, "checkout")
    }

    /// Waits until `/readyz` answers 200 (at most `timeout`).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match self.client.get(format!("{}/readyz", self.url)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("{}/readyz not ready after {timeout:?}: {last}", self.url)
    }
}

/// A running `kubectl port-forward`, stopped when dropped.
pub struct PortForward {
    child: Child,
    pub local_port: u16,
}

impl PortForward {
    /// `kubectl port-forward` to `target` (e.g. `svc/shop-gateway`) port `remote` on a free local port.
    pub fn start(kubectl: &[String], namespace: &str, target: &str, remote: u16) -> Result<PortForward> {
        let (program, args) = kubectl.split_first().context("no kubectl command")?;
        let mut child = Command::new(program)
            .args(args)
            .args(["port-forward", "--namespace", namespace, "--address", "127.0.0.1", target])
            .arg(format!(":{remote}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {program} port-forward"))?;
        let stdout = child.stdout.take().context("port-forward stdout")?;
        // "Forwarding from 127.0.0.1:41235 -> 8889"
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    let port = line
                        .strip_prefix("Forwarding from 127.0.0.1:")
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|p| p.parse::<u16>().ok());
                    if let Some(port) = port {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(local_port) => Ok(PortForward { child, local_port }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("kubectl port-forward to {namespace}/{target} did not report a local port within 30 s")
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_port)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
