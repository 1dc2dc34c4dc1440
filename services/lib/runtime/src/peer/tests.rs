//! Peer channels against real gRPC servers, with a scripted resolver: balancing, failing over,
//! retrying only what is safe to repeat, resolving again after a connection error, and deadlines.

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
async fn ask(client: &mut HealthClient<PeerChannel>) -> Result<bool, tonic::Status> {
    let response = client.check(HealthCheckRequest { service: WHO.to_owned() }).await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// Calls until both servers answered (at most 200 calls); whether they did.
async fn both_answer(client: &mut HealthClient<PeerChannel>) -> bool {
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

// ---- Failing over, retries and deadlines, against test user services served by `crate::serve` ----

use mall_proto::user::v1 as user;
use mall_proto::user::v1::user_service_client::UserServiceClient;
use mall_proto::user::v1::user_service_server::{UserService, UserServiceServer};
use tonic::{Code, Request, Response, Status};

use crate::{Readiness, Served};

/// What a test user service does with each call (of GetUser, a read, and Register, a write that is
/// not safe to repeat).
#[derive(Clone)]
enum Behaviour {
    /// Answers a user whose id is this number, to tell the servers apart.
    Answer(i64),
    /// Fails the first call of each method with UNAVAILABLE, then answers.
    UnavailableOnce,
    /// Never answers (sleeps a minute).
    Hang,
    /// Asks the next hop for the user and answers what it answered.
    Forward(UserServiceClient<PeerChannel>),
}

/// What a test user service saw.
#[derive(Default)]
struct Seen {
    register: AtomicUsize,
    get_user: AtomicUsize,
    /// The `grpc-timeout` of every call, as received.
    timeouts: Mutex<Vec<Option<Duration>>>,
    /// Whether the handler ran under a deadline, per call.
    scoped: Mutex<Vec<bool>>,
}

#[derive(Clone)]
struct TestUsers {
    behaviour: Behaviour,
    seen: Arc<Seen>,
}

impl TestUsers {
    async fn handle<T>(&self, request: &Request<T>, count: &AtomicUsize) -> Result<user::User, Status> {
        let nth = count.fetch_add(1, Ordering::SeqCst);
        let timeout = crate::deadline::parse_grpc_timeout(request.metadata().as_ref());
        self.seen.timeouts.lock().unwrap().push(timeout);
        self.seen.scoped.lock().unwrap().push(crate::deadline().is_some());
        match &self.behaviour {
            Behaviour::Answer(id) => Ok(user::User { user_id: *id, ..user::User::default() }),
            Behaviour::UnavailableOnce if nth == 0 => Err(Status::unavailable("not now")),
            Behaviour::UnavailableOnce => Ok(user::User::default()),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(user::User::default())
            }
            Behaviour::Forward(next) => {
                let answer = next.clone().get_user(get_user()).await?;
                Ok(answer.into_inner().user.unwrap_or_default())
            }
        }
    }

    fn timeouts(&self) -> Vec<Option<Duration>> {
        self.seen.timeouts.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl UserService for TestUsers {
    async fn register(
        &self,
        request: Request<user::RegisterRequest>,
    ) -> Result<Response<user::RegisterResponse>, Status> {
        let user = self.handle(&request, &self.seen.register).await?;
        Ok(Response::new(user::RegisterResponse { user: Some(user) }))
    }

    async fn login(
        &self,
        _request: Request<user::LoginRequest>,
    ) -> Result<Response<user::LoginResponse>, Status> {
        Err(Status::unimplemented("not in these tests"))
    }

    async fn get_user(
        &self,
        request: Request<user::GetUserRequest>,
    ) -> Result<Response<user::GetUserResponse>, Status> {
        let user = self.handle(&request, &self.seen.get_user).await?;
        Ok(Response::new(user::GetUserResponse { user: Some(user) }))
    }
}

/// A test user service, served the way every Mall service is (with the deadline layer).
async fn user_server(behaviour: Behaviour, stop: CancellationToken) -> (TestUsers, Served) {
    let users = TestUsers { behaviour, seen: Arc::default() };
    let listener = crate::bind("127.0.0.1:0").await.unwrap();
    let server = UserServiceServer::new(users.clone());
    let served =
        crate::serve("test-users", listener, server, Readiness::new(), crate::Access::unchecked(), stop)
            .await
            .unwrap();
    (users, served)
}

/// A port where nothing listens (connections are refused).
async fn refusing_addr() -> SocketAddr {
    crate::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

fn get_user() -> user::GetUserRequest {
    user::GetUserRequest { user_id: 1 }
}

fn register() -> user::RegisterRequest {
    user::RegisterRequest {
        email: "a@example.com".into(),
        password: "correct horse".into(),
        confirm_password: "correct horse".into(),
    }
}

impl Scripted {
    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

/// Which server answered a GetUser.
async fn who(client: &mut UserServiceClient<PeerChannel>) -> Result<i64, Status> {
    Ok(client.get_user(get_user()).await?.into_inner().user.unwrap_or_default().user_id)
}

#[tokio::test]
async fn calls_keep_succeeding_while_one_of_two_peers_stops() {
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let (a_users, a) = user_server(Behaviour::Answer(1), stop_a.clone()).await;
    let (_, b) = user_server(Behaviour::Answer(2), stop_b.clone()).await;
    // The name keeps listing b after it stops (DNS lags behind), and is not resolved again on its own.
    let resolver = Scripted::answering(&[a.addr, b.addr]);
    let channel = balanced_channel("http", "users.test", 50051, resolver.clone(), Duration::from_secs(3600));
    let mut client = UserServiceClient::new(channel);
    let mut seen = [false, false];
    for _ in 0..20 {
        seen[usize::try_from(who(&mut client).await.unwrap() - 1).unwrap()] = true;
    }
    assert_eq!(seen, [true, true], "calls go to both peers");

    // Four callers call without a pause while b stops, and on after it has stopped.
    let b_stopped = CancellationToken::new();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            let b_stopped = b_stopped.clone();
            tokio::spawn(async move {
                let mut after = 0;
                while after < 50 {
                    who(&mut client).await?;
                    if b_stopped.is_cancelled() {
                        after += 1;
                    }
                }
                Ok::<(), Status>(())
            })
        })
        .collect();
    let calling = tokio::time::timeout(Duration::from_secs(10), async {
        while a_users.seen.get_user.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    calling.await.expect("the callers are calling");
    stop_b.cancel();
    b.task.await.unwrap().unwrap();
    b_stopped.cancel();
    for caller in callers {
        caller.await.unwrap().expect("no call fails while a peer stops");
    }
    for _ in 0..10 {
        assert_eq!(who(&mut client).await.unwrap(), 1, "only a is left");
    }
    stop_a.cancel();
}

#[tokio::test]
async fn retries_repeat_reads_but_never_a_write_that_is_not_idempotent() {
    let stop = CancellationToken::new();
    let (users, served) = user_server(Behaviour::UnavailableOnce, stop.clone()).await;
    let mut client = UserServiceClient::new(channel(&served.addr.to_string()).unwrap());

    let status = client.register(register()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(users.seen.register.load(Ordering::SeqCst), 1, "Register is not repeated");

    client.get_user(get_user()).await.expect("GetUser is repeated after UNAVAILABLE");
    assert_eq!(users.seen.get_user.load(Ordering::SeqCst), 2);

    // Outside any request, calls carry the budget of a call on its own.
    for timeout in users.timeouts() {
        let timeout = timeout.expect("every call carries a grpc-timeout");
        assert!(timeout > Duration::ZERO && timeout <= UNSCOPED_CALL_TIMEOUT, "{timeout:?}");
    }
    stop.cancel();
}

#[tokio::test]
async fn a_call_whose_connection_is_refused_goes_to_another_address_whatever_its_method() {
    let stop = CancellationToken::new();
    let (users, live) = user_server(Behaviour::Answer(1), stop.clone()).await;
    let resolver = Scripted::answering(&[refusing_addr().await, live.addr]);
    let channel = balanced_channel("http", "users.test", 50051, resolver, Duration::from_secs(3600));
    let mut client = UserServiceClient::new(channel);
    for _ in 0..10 {
        client.register(register()).await.expect("the write is sent to the live address");
    }
    assert_eq!(users.seen.register.load(Ordering::SeqCst), 10, "each write reached the peer once");
    stop.cancel();
}

#[tokio::test]
async fn a_refused_connection_has_the_name_resolved_again_at_once() {
    let stop = CancellationToken::new();
    let (_, live) = user_server(Behaviour::Answer(1), stop.clone()).await;
    let resolver = Scripted::answering(&[refusing_addr().await]);
    // Without a failed call, the name would not be resolved again for an hour.
    let channel = balanced_channel("http", "users.test", 50051, resolver.clone(), Duration::from_secs(3600));
    let mut client = UserServiceClient::new(channel);
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while resolver.calls() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    first.await.expect("the name is resolved when the channel is made");

    resolver.set(Ok(vec![live.addr]));
    let status = who(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let again = tokio::time::timeout(Duration::from_secs(5), async {
        while resolver.calls() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    again.await.expect("the refused connection had the name resolved again");
    let recovered = tokio::time::timeout(Duration::from_secs(5), async {
        while who(&mut client).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    recovered.await.expect("calls reach the address found by resolving again");
    stop.cancel();
}

#[tokio::test]
async fn a_slow_last_hop_fails_the_request_within_its_budget_with_deadline_exceeded() {
    let stop = CancellationToken::new();
    let (last, last_served) = user_server(Behaviour::Hang, stop.clone()).await;
    let next = UserServiceClient::new(channel(&last_served.addr.to_string()).unwrap());
    let (middle, middle_served) = user_server(Behaviour::Forward(next), stop.clone()).await;
    let mut client = UserServiceClient::new(channel(&middle_served.addr.to_string()).unwrap());

    let budget = Duration::from_millis(500);
    let started = Instant::now();
    let call = crate::with_deadline(started + budget, client.get_user(get_user()));
    let status = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends soon after its budget, not when the last hop answers")
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // The middle hop received the caller's budget (less what had passed), served the call under it, and
    // passed on what was left of it.
    let received = middle.timeouts();
    assert_eq!(received.len(), 1, "not retried past its deadline");
    let middle_timeout = received[0].expect("the middle hop received a grpc-timeout");
    assert!(middle_timeout > Duration::ZERO && middle_timeout <= budget, "{middle_timeout:?}");
    assert_eq!(*middle.seen.scoped.lock().unwrap(), [true], "the handler ran under the deadline");
    let last_timeout = last.timeouts()[0].expect("the last hop received a grpc-timeout");
    assert!(last_timeout <= middle_timeout, "{last_timeout:?} after {middle_timeout:?}");
    stop.cancel();
}

#[tokio::test]
async fn a_call_whose_deadline_has_passed_fails_at_once_and_sends_nothing() {
    let stop = CancellationToken::new();
    let (users, served) = user_server(Behaviour::Answer(1), stop.clone()).await;
    let mut client = UserServiceClient::new(channel(&served.addr.to_string()).unwrap());
    let status = crate::with_deadline(Instant::now(), client.get_user(get_user())).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(users.seen.get_user.load(Ordering::SeqCst), 0);

    // A timeout set on the request itself shortens the budget too.
    let mut request = Request::new(get_user());
    request.set_timeout(Duration::from_millis(300));
    client.get_user(request).await.unwrap();
    let timeout = users.timeouts()[0].unwrap();
    assert!(timeout <= Duration::from_millis(300), "{timeout:?}");
    stop.cancel();
}
