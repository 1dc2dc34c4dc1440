//! A Redis that requires a password, as the operator runs it (`--requirepass`): the cache connects with
//! the password in its URL (`redis://:<password>@host:port`) and is refused, with an error that says
//! so, without it. The test starts its own `redis-server` on a free port and stops it at the end.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mall_storage::{Cache, StorageError};
use mall_testkit::unique_name;

/// A `redis-server` child process, killed (by its PID, through the handle) when dropped, also when the
/// test panics.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
}

/// Starts `redis-server` on a free loopback port with `password` required, no persistence; `None`
/// (with the reason on stderr) when the binary is not installed, outside CI.
fn start_redis(password: &str) -> Option<RedisServer> {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", password])
        .args(["--save", "", "--appendonly", "no", "--dir", std::env::temp_dir().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_ci() => {
            eprintln!("note: redis-server is not installed; skipping the Redis password test");
            return None;
        }
        Err(e) => panic!("starting redis-server: {e}"),
    };
    let server = RedisServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen on port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

#[tokio::test]
async fn the_cache_needs_the_password_of_a_protected_redis() {
    let password = format!("{}{}", unique_name("pw"), unique_name("pw"));
    let Some(server) = start_redis(&password) else { return };
    let port = server.port;
    let namespace = unique_name("t");

    // With the password: the cache works.
    let url = format!("redis://:{password}@127.0.0.1:{port}");
    let cache = Cache::from_config(Some(&url), &namespace).await.expect("the password is accepted");
    assert_eq!(cache.kind(), "redis");
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(b"v".to_vec()));

    // Without it, or with another one: refused at once, with an error that says why.
    let wrong = unique_name("not_the_password");
    for (what, url) in [
        ("no password", format!("redis://127.0.0.1:{port}")),
        ("a wrong password", format!("redis://:{wrong}@127.0.0.1:{port}")),
    ] {
        let started = Instant::now();
        let e = Cache::from_config(Some(&url), &namespace).await.expect_err(what);
        let text = e.to_string();
        assert!(matches!(e, StorageError::Redis(_)), "{what}: a Redis error, not {e:?}");
        assert!(
            ["noauth", "wrongpass", "authentication"].iter().any(|word| text.to_lowercase().contains(word)),
            "{what}: the error says the password is missing or wrong: {text}"
        );
        assert!(!text.contains(&password) && !text.contains(&wrong), "{what}: no password in {text}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: refused at once, {:?}",
            started.elapsed()
        );
    }

    drop(cache);
    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the redis-server this test started is stopped"
    );
}
