//! Balanced peer channels against real gRPC servers, with a scripted resolver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::*;

/// The service whose health tells the test servers apart: SERVING on one, NOT_SERVING on the other.
const WHO: &str = "mall.test.Who";
const INTERVAL: Duration = Duration::from_millis(50);

/// A resolver that answers what the test says, counting how often it was asked.
#[derive(Clone, Default)]
struct Scripted {
    state: Arc<Script>,
}

struct Script {
    answer: Mutex<Result<Vec<SocketAddr>, String>>,
    calls: AtomicUsize,
}

impl Default for Script {
    fn default() -> Script {
        Script { answer: Mutex::new(Ok(vec![])), calls: AtomicUsize::new(0) }
    }
}

impl Scripted {
    fn answering(addrs: &[SocketAddr]) -> Scripted {
        let scripted = Scripted::default();
        scripted.set(Ok(addrs.to_vec()));
        scripted
    }

    fn set(&self, answer: Result<Vec<SocketAddr>, String>) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Waits until the resolving task has asked twice more: one full resolve, and the changes it made,
    /// happened after whatever the test changed before.
    async fn resolved_again(&self) {
        let start = self.state.calls.load(Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), async {
            while self.state.calls.load(Ordering::SeqCst) < start + 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the resolving task keeps resolving");
    }
}

impl Resolver for Scripted {
    fn resolve(&self, _host: &str, _port: u16) -> Resolution {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.state.answer.lock().unwrap().clone();
        Box::pin(async move { answer.map_err(io::Error::other) })
    }
}

/// A real gRPC server (the standard health service) reporting `who` for [`WHO`].
async fn server(who: ServingStatus, stop: CancellationToken) -> SocketAddr {
    let listener = crate::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status(WHO, who).await;
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned())
            .await
    });
    addr
}

/// Which server answered: `true` for the SERVING one.
async fn ask(client: &mut HealthClient<Channel>) -> Result<bool, tonic::Status> {
    let response = client.check(HealthCheckRequest { service: WHO.to_owned() }).await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// Calls until both servers answered (at most 200 calls); whether they did.
async fn both_answer(client: &mut HealthClient<Channel>) -> bool {
    let mut seen = [false, false];
    for _ in 0..200 {
        seen[usize::from(ask(client).await.unwrap())] = true;
        if seen == [true, true] {
            return true;
        }
    }
    false
}

/// Waits until the resolving task has ended (it held the only other reference to the script).
async fn task_ended(resolver: &Scripted) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while Arc::strong_count(&resolver.state) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the resolving task ends once the channel is dropped");
}

#[tokio::test]
async fn calls_spread_over_the_addresses_and_follow_the_resolver() {
    let stop = CancellationToken::new();
    let a = server(ServingStatus::Serving, stop.clone()).await;
    let b = server(ServingStatus::NotServing, stop.clone()).await;
    let resolver = Scripted::answering(&[a, b]);
    let mut client =
        HealthClient::new(balanced_channel("http", "peers.test", 50051, resolver.clone(), INTERVAL));

    assert!(both_answer(&mut client).await, "calls reach both addresses");

    // b vanishes from the name: once resolved again, it gets no more calls.
    resolver.set(Ok(vec![a]));
    resolver.resolved_again().await;
    for _ in 0..30 {
        assert!(ask(&mut client).await.unwrap(), "only a is left");
    }

    // Resolution fails, then finds nothing: the last addresses keep serving.
    resolver.set(Err("SERVFAIL".to_owned()));
    resolver.resolved_again().await;
    for _ in 0..10 {
        assert!(ask(&mut client).await.unwrap(), "a is kept while resolution fails");
    }
    resolver.set(Ok(vec![]));
    resolver.resolved_again().await;
    for _ in 0..10 {
        assert!(ask(&mut client).await.unwrap(), "a is kept while the name has no address");
    }

    // b comes back.
    resolver.set(Ok(vec![a, b]));
    resolver.resolved_again().await;
    assert!(both_answer(&mut client).await, "a returning address gets calls again");

    drop(client);
    task_ended(&resolver).await;
    stop.cancel();
}

#[tokio::test]
async fn a_name_that_never_resolved_fails_calls_instead_of_waiting() {
    let stop = CancellationToken::new();
    let a = server(ServingStatus::Serving, stop.clone()).await;
    let resolver = Scripted::default();
    resolver.set(Err("NXDOMAIN".to_owned()));
    // The name itself is tried while nothing resolved: here a name (an IP literal, to need no DNS in the
    // test) and port where nothing listens.
    let dead = crate::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let channel = balanced_channel("http", "127.0.0.1", dead.port(), resolver.clone(), INTERVAL);
    let mut client = HealthClient::new(channel.clone());
    resolver.resolved_again().await;

    let call = tokio::time::timeout(Duration::from_secs(5), ask(&mut client)).await;
    let status = call.expect("the call fails instead of waiting for an address").unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Once the name resolves, the name itself is no longer tried: every call succeeds.
    resolver.set(Ok(vec![a]));
    resolver.resolved_again().await;
    for _ in 0..20 {
        assert!(ask(&mut client).await.unwrap());
    }

    drop((client, channel));
    task_ended(&resolver).await;
    stop.cancel();
}

#[test]
fn ip_literals_and_localhost_are_not_resolved() {
    for host in ["127.0.0.1", "10.1.2.3", "[::1]", "localhost", "LOCALHOST"] {
        assert!(!is_dns_name(host), "{host}");
    }
    for host in ["mall-auth", "mall-auth.shop.svc.cluster.local", "example.com"] {
        assert!(is_dns_name(host), "{host}");
    }
}

#[tokio::test]
async fn channel_accepts_addresses_with_or_without_a_scheme_and_names_bad_ones() {
    for addr in ["127.0.0.1:50051", "http://127.0.0.1:50051", "http://[::1]:50051", "mall-auth:50051"] {
        channel(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    }
    let err = channel("http://bad host:1").unwrap_err();
    assert!(err.to_string().contains("bad host"), "{err}");
}

#[tokio::test]
async fn the_system_resolver_finds_localhost() {
    let addrs = DnsResolver.resolve("localhost", 50051).await.unwrap();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.port() == 50051 && a.ip().is_loopback()),
        "{addrs:?}"
    );
}
