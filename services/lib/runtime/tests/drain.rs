//! A server told to stop, over real sockets: it reports NOT_SERVING and fails `/readyz` while it keeps
//! answering calls (on old and new connections) for the drain delay, then stops accepting, lets the
//! calls in flight finish within the grace period, and exits.

use std::sync::Arc;
use std::time::Duration;

use mall_proto::checkout::v1::checkout_service_client::CheckoutServiceClient;
use mall_proto::checkout::v1::checkout_service_server::{CheckoutService, CheckoutServiceServer};
use mall_proto::checkout::v1::{
    Checkout, CheckoutRequest, CheckoutResponse, GetCheckoutRequest, GetCheckoutResponse,
};
use mall_proto::health::pb::HealthCheckRequest;
use mall_proto::health::pb::health_check_response::ServingStatus;
use mall_proto::health::pb::health_client::HealthClient;
use mall_runtime::{Readiness, Served, Shutdown};
use tokio::sync::{Notify, mpsc};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

const NAME: &str = "mall.checkout.v1.CheckoutService";

/// A service whose `Checkout` is slow: it says when it has started, then waits to be released.
/// `GetCheckout` answers at once.
struct Slow {
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl CheckoutService for Slow {
    async fn checkout(&self, _: Request<CheckoutRequest>) -> Result<Response<CheckoutResponse>, Status> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok(Response::new(CheckoutResponse { checkout_id: "slow".into(), ..Default::default() }))
    }

    async fn get_checkout(
        &self,
        _: Request<GetCheckoutRequest>,
    ) -> Result<Response<GetCheckoutResponse>, Status> {
        let checkout = Checkout { checkout_id: "quick".into(), ..Default::default() };
        Ok(Response::new(GetCheckoutResponse { checkout: Some(checkout) }))
    }
}

struct Server {
    served: Served,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

async fn start(shutdown: Shutdown) -> Server {
    let (started, started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let service = CheckoutServiceServer::new(Slow { started, release: release.clone() });
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let served = mall_runtime::serve(
        "slow",
        listener,
        service,
        Readiness::new(),
        mall_runtime::Access::unchecked(),
        shutdown,
    )
    .await
    .unwrap();
    Server { served, started: started_rx, release }
}

/// A new connection to `server`.
async fn connect(server: &Server) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.served.addr)).unwrap().connect().await.unwrap()
}

async fn quick_call(channel: &Channel) -> Result<String, Status> {
    let reply =
        CheckoutServiceClient::new(channel.clone()).get_checkout(GetCheckoutRequest::default()).await?;
    Ok(reply.into_inner().checkout.unwrap_or_default().checkout_id)
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let request = HealthCheckRequest { service: service.into() };
    let reply = HealthClient::new(channel.clone()).check(request).await.unwrap();
    ServingStatus::try_from(reply.into_inner().status).unwrap()
}

async fn readyz(server: &Server) -> (u16, String) {
    let response = reqwest::get(format!("http://{}/readyz", server.served.addr)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Waits until the server no longer accepts connections.
async fn wait_until_refused(server: &Server) {
    while tokio::net::TcpStream::connect(server.served.addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_draining_server_is_not_ready_but_keeps_serving_until_the_drain_ends() {
    // A drain far longer than the test: it ends when the test hurries it.
    let shutdown = Shutdown::default().with_drain(Duration::from_secs(3600));
    let server = start(shutdown.clone()).await;
    let channel = connect(&server).await;
    assert_eq!(health(&channel, "").await, ServingStatus::Serving);
    assert_eq!(health(&channel, NAME).await, ServingStatus::Serving);
    assert_eq!(readyz(&server).await, (200, "ready".to_owned()));

    let watch = HealthCheckRequest { service: NAME.into() };
    let mut watch = HealthClient::new(channel.clone()).watch(watch).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    shutdown.begin();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    drop(watch);

    // Draining: not serving, not ready, and yet every call is answered, on a new connection too.
    assert_eq!(health(&channel, "").await, ServingStatus::NotServing);
    assert_eq!(health(&channel, NAME).await, ServingStatus::NotServing);
    assert_eq!(readyz(&server).await, (503, "draining".to_owned()));
    assert_eq!(quick_call(&channel).await.unwrap(), "quick");
    let fresh = connect(&server).await;
    assert_eq!(quick_call(&fresh).await.unwrap(), "quick");
    assert!(!server.served.task.is_finished());

    // The drain is over: the server stops and exits cleanly.
    shutdown.hurry();
    wait_until_refused(&server).await;
    server.served.task.await.unwrap().unwrap();
    assert!(quick_call(&channel).await.is_err(), "the server is gone");
}

#[tokio::test]
async fn a_call_in_flight_when_the_server_stops_completes() {
    let mut server = start(Shutdown::default()).await;
    let channel = connect(&server).await;
    let slow = tokio::spawn(async move {
        CheckoutServiceClient::new(channel).checkout(CheckoutRequest::default()).await
    });
    server.started.recv().await.unwrap();

    server.served.shutdown.begin();
    wait_until_refused(&server).await;
    assert!(!slow.is_finished());
    server.release.notify_one();
    let reply = slow.await.unwrap().expect("the call in flight is answered");
    assert_eq!(reply.into_inner().checkout_id, "slow");
    server.served.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_call_that_outlives_the_grace_period_does_not_keep_the_server_up() {
    let mut server = start(Shutdown::default().with_grace(Duration::from_millis(100))).await;
    let channel = connect(&server).await;
    let stuck = tokio::spawn(async move {
        CheckoutServiceClient::new(channel).checkout(CheckoutRequest::default()).await
    });
    server.started.recv().await.unwrap();

    // Never released: the server gives up on it once the grace period is over.
    server.served.stop().await.unwrap();
    stuck.abort();
}
