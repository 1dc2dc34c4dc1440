//! The real `mall` binary: `mall up` on a fresh data directory serves the API, and SIGTERM stops it
//! gracefully with exit code 0; `mall serve` drains first (a second signal cuts the drain short).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn mall_up_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_mall"))
        .args(["up", "--gateway-listen", &format!("127.0.0.1:{port}")])
        .env("MALL_DATA_DIR", dir.path())
        .env("MALL_DRAIN_DELAY", "200ms")
        .env_remove("MALL_DATABASE_URL")
        .env_remove("MALL_REDIS_URL")
        .env_remove("MALL_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "mall up did not become ready");
    for service in ["auth", "user", "product"] {
        assert!(dir.path().join(format!("{service}.db")).exists(), "{service}.db");
    }
    let list = client.get(format!("http://127.0.0.1:{port}/products/list")).send().await.unwrap();
    let list: serde_json::Value = list.json().await.unwrap();
    assert!(list["data"]["total"].as_i64().unwrap() >= 25, "the demo catalog is loaded: {list}");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit: {:?}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("http://127.0.0.1:{port}")), "{stdout}");
    assert!(stdout.contains("Admin account created: admin@mall.local / "), "{stdout}");
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
    let child = Command::new(env!("CARGO_BIN_EXE_mall"))
        .args(["serve", "product", "--listen", &format!("127.0.0.1:{port}")])
        .env("MALL_DATA_DIR", dir.path())
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
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
