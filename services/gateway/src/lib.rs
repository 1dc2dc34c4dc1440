//! The gateway: Mall's public HTTP/JSON API (the contract in docs/api.md), translating each route to
//! the services' gRPC. It checks tokens itself (with auth's public keys, fetched again as they rotate),
//! rate-limits logins, searches and spending, and gives every response the envelope and a request id.

mod auth;
mod envelope;
mod error;
mod input;
mod limit;
mod money;
mod observe;
mod routes;
mod shop;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use mall_proto::auth::v1::auth_service_client::AuthServiceClient;
use mall_proto::cart::v1::cart_service_client::CartServiceClient;
use mall_proto::checkout::v1::checkout_service_client::CheckoutServiceClient;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_proto::user::v1::user_service_client::UserServiceClient;
use mall_runtime::{PeerChannel, RuntimeError, Served, Shutdown};
use mall_storage::Cache;
use tokio::net::TcpListener;

pub use auth::{KeyRefresh, KeySource, LOG_IN_AGAIN, TokenCheck};
pub use error::{ApiError, CODES};
pub use limit::Limits;
use upstream::Upstream;

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    /// How many proxies in front of the gateway append to `X-Forwarded-For` (0: use the connection's
    /// peer address).
    pub trusted_proxies: usize,
    /// The time budget of one request: every service call made for it, at every hop, carries what is
    /// left of it and gives up when it is spent.
    pub request_timeout: Duration,
    /// When auth's public keys are fetched again.
    pub keys: KeyRefresh,
}

/// [`Config::request_timeout`] unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            trusted_proxies: 0,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keys: KeyRefresh::default(),
        }
    }
}

/// Channels to the services the gateway calls.
#[derive(Clone)]
pub struct Peers {
    pub auth: PeerChannel,
    pub user: PeerChannel,
    pub product: PeerChannel,
    pub cart: PeerChannel,
    pub order: PeerChannel,
    pub payment: PeerChannel,
    pub checkout: PeerChannel,
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    config: Config,
    auth: AuthServiceClient<Upstream>,
    users: UserServiceClient<Upstream>,
    products: ProductServiceClient<Upstream>,
    carts: CartServiceClient<Upstream>,
    orders: OrderServiceClient<Upstream>,
    payments: PaymentServiceClient<Upstream>,
    checkouts: CheckoutServiceClient<Upstream>,
    tokens: Arc<auth::TokenCheck>,
    cache: Cache,
    shutdown: Shutdown,
    shop: shop::Shop,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// `shutdown` tells the routes when this gateway is draining (`/readyz` fails, connections close).
    pub fn new(config: Config, peers: Peers, cache: Cache, shutdown: Shutdown) -> AppState {
        // Install the recorder before the first request is counted.
        mall_runtime::metrics_handle();
        let auth = AuthServiceClient::new(Upstream::new("auth", peers.auth));
        let tokens = Arc::new(auth::TokenCheck::new(auth.clone(), cache.clone(), config.keys));
        auth::TokenCheck::spawn_refresh(&tokens, shutdown.token().clone());
        AppState(Arc::new(Inner {
            config,
            tokens,
            users: UserServiceClient::new(Upstream::new("user", peers.user)),
            products: ProductServiceClient::new(Upstream::new("product", peers.product)),
            carts: CartServiceClient::new(Upstream::new("cart", peers.cart)),
            orders: OrderServiceClient::new(Upstream::new("order", peers.order)),
            payments: PaymentServiceClient::new(Upstream::new("payment", peers.payment)),
            checkouts: CheckoutServiceClient::new(Upstream::new("checkout", peers.checkout)),
            auth,
            cache,
            shutdown,
            shop: shop::Shop::default(),
        }))
    }
}

/// Every route of the API, with the layers every response goes through.
pub fn app(state: AppState) -> Router {
    use routes::{catalog, commerce, identity, ops};
    Router::new()
        .route("/register", post(identity::register))
        .route("/login", post(identity::login))
        .route("/logout", post(identity::logout))
        .route("/user/me", get(identity::me))
        .route("/products/list", get(catalog::list))
        .route("/products/search", get(catalog::search))
        .route("/products/{id}", get(catalog::get))
        .route("/product/create", post(catalog::create))
        .route("/product/update", post(catalog::update))
        .route("/product/delete", post(catalog::delete))
        .route("/cart/additem", post(commerce::add_item))
        .route("/cart", get(commerce::get_cart))
        .route("/cart/get", post(commerce::post_cart))
        .route("/cart/setitem", post(commerce::set_item))
        .route("/cart/removeitem", post(commerce::remove_item))
        .route("/cart/empty", post(commerce::empty_cart))
        .route("/order/place", post(commerce::place_order))
        .route("/order/listorder", post(commerce::list_orders_post))
        .route("/orders", get(commerce::list_orders_get))
        .route("/orders/{id}", get(commerce::get_order))
        .route("/order/cancel", post(commerce::cancel_order))
        .route("/order/mark-paid", post(commerce::mark_paid))
        .route("/payment/charge", post(commerce::charge))
        .route("/checkout", post(commerce::checkout))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/docs", get(ops::docs))
        .merge(shop::routes(state.clone()))
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(input::BODY_LIMIT))
        // Everything else every request goes through is one middleware: a layer each cost the read
        // path 15 % of its throughput (bench/README.md).
        .layer(middleware::from_fn_with_state(state.clone(), observe::edge))
        .with_state(state)
}

/// Unix seconds as RFC 3339 UTC, the API's timestamp format.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Serves the API on `listener`. When the shutdown begins, `/readyz` answers 503 and HTTP/1 responses
/// close their connections while the API is still served for the drain delay; then the listener
/// closes and requests in flight get the grace period to finish.
pub async fn startup(
    config: Config,
    peers: Peers,
    cache: Cache,
    listener: TcpListener,
    shutdown: impl Into<Shutdown>,
) -> Result<Served, RuntimeError> {
    let shutdown = shutdown.into();
    let addr = listener.local_addr()?;
    let state = AppState::new(config, peers, cache, shutdown.clone());
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let draining = stop.clone();
        let drained = async move {
            draining.token().cancelled().await;
            tracing::info!(service = "gateway", drain = ?draining.drain(), "draining");
            draining.drained().await;
            tracing::info!(service = "gateway", "no longer accepting connections");
        };
        // Every response leaves at once: a page written in two segments would otherwise wait for the
        // client's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(drained);
        let result = match stop.within_grace(server.into_future()).await {
            Some(result) => result.map_err(RuntimeError::from),
            None => {
                let grace = stop.grace();
                tracing::warn!(
                    service = "gateway",
                    ?grace,
                    "requests still in flight after the grace period"
                );
                Ok(())
            }
        };
        tracing::info!(service = "gateway", "stopped");
        result
    });
    tracing::info!(service = "gateway", %addr, "serving HTTP");
    Ok(Served { name: "gateway", addr, task, shutdown })
}
