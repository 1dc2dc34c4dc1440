//! Password hashing is bounded: over real gRPC (port 0), with one hashing slot and a short wait, logins
//! and registrations beyond what the slot can take are refused with RESOURCE_EXHAUSTED, and the others
//! succeed.

use std::time::Duration;

use mall_proto::user::v1 as pb;
use mall_proto::user::v1::user_service_client::UserServiceClient;
use mall_proto::user::v1::user_service_server::UserServiceServer;
use mall_runtime::PeerChannel;
use mall_runtime::WorkLimit;
use mall_testkit::TestDb;
use tonic::Code;

const PASSWORD: &str = "s3cret-passw0rd";

/// Serves a user service whose hashing runs in `hashing`'s slots; returns a client.
async fn serve(db: mall_storage::Db, hashing: WorkLimit) -> UserServiceClient<PeerChannel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(mall_user::Users::new(db, hashing)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    UserServiceClient::new(mall_runtime::channel(&format!("http://{addr}")).unwrap())
}

fn login(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest { email: email.into(), password: password.into() }
}

fn register(email: &str) -> pb::RegisterRequest {
    pb::RegisterRequest { email: email.into(), password: PASSWORD.into(), confirm_password: PASSWORD.into() }
}

/// Takes `limit`'s only slot with work that runs until the returned sender is used or dropped.
async fn occupy(limit: &WorkLimit) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, is_started) = tokio::sync::oneshot::channel();
    let limit = limit.clone();
    let task = tokio::spawn(async move {
        limit
            .run_blocking(move || {
                started.send(()).unwrap();
                let _ = released.recv();
            })
            .await
            .unwrap();
    });
    is_started.await.unwrap();
    (release, task)
}

#[tokio::test]
async fn a_burst_beyond_the_hashing_slots_is_refused_with_resource_exhausted() {
    let t = TestDb::sqlite(&mall_user::migrations()).await;
    let hashing = WorkLimit::new("password hashing", 1, Duration::from_millis(50));
    let client = serve(t.db.clone(), hashing.clone()).await;
    client.clone().register(register("ann@example.com")).await.unwrap();

    // While the one slot is busy, every call that must hash waits its 50 ms and is refused, whatever
    // its credentials: nothing of it runs.
    let (release, occupant) = occupy(&hashing).await;
    let burst = (0..8).map(|i| {
        let mut client = client.clone();
        async move {
            match i % 4 {
                0 => client.login(login("ann@example.com", PASSWORD)).await.map(|_| ()),
                1 => client.login(login("ann@example.com", "wrong-password")).await.map(|_| ()),
                2 => client.login(login("nobody@example.com", PASSWORD)).await.map(|_| ()),
                _ => client.register(register(&format!("new{i}@example.com"))).await.map(|_| ()),
            }
        }
    });
    for result in futures::future::join_all(burst).await {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("try again"), "{status:?}");
    }
    let profile = client.clone().get_user(pb::GetUserRequest { user_id: 1 }).await;
    assert!(profile.is_ok(), "work that does not hash is not bounded: {profile:?}");
    release.send(()).unwrap();
    occupant.await.unwrap();

    // A burst on the free slot: each login is either done or refused, never failed otherwise; the
    // first to take the slot always gets through.
    let burst = (0..8).map(|_| {
        let mut client = client.clone();
        async move { client.login(login("ann@example.com", PASSWORD)).await }
    });
    let mut succeeded = 0;
    for result in futures::future::join_all(burst).await {
        match result {
            Ok(reply) => {
                assert_eq!(reply.into_inner().user.unwrap().email, "ann@example.com");
                succeeded += 1;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert!(succeeded >= 1);
    // Nothing stays taken once the burst is over.
    assert_eq!(hashing.available(), 1);
    client.clone().register(register("bob@example.com")).await.unwrap();
    let wrong = client.clone().login(login("bob@example.com", "wrong-password")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    t.drop_database().await;
}
