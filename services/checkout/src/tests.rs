//! The checkout service over real gRPC, with the real product, cart, order and payment services beside
//! it (each on its own database, all on port 0): on SQLite always, and on MariaDB (product cache on
//! Redis) when configured.

use mall_domain::card::YearMonth;
use mall_proto::cart::v1 as cart_pb;
use mall_proto::cart::v1::cart_service_client::CartServiceClient;
use mall_proto::checkout::v1 as pb;
use mall_proto::checkout::v1::checkout_service_client::CheckoutServiceClient;
use mall_proto::order::v1 as order_pb;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::payment::v1 as payment_pb;
use mall_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mall_proto::product::v1 as product_pb;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_proto::user::v1 as user_pb;
use mall_proto::user::v1::user_service_client::UserServiceClient;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Cache, Db};
use mall_testkit::TestDb;
use tonic::Code;

use crate::Peers;
use crate::saga::{ABANDONED, Checkouts};

const GOOD_CARD: &str = "4242 4242 4242 4242";

use mall_testkit::Backend as Kind;

struct Stack {
    dbs: Vec<TestDb>,
    checkout_db: Db,
    payment_db: Db,
    peers: Peers,
    product: ProductServiceClient<PeerChannel>,
    cart: CartServiceClient<PeerChannel>,
    order: OrderServiceClient<PeerChannel>,
    payment: PaymentServiceClient<PeerChannel>,
    checkout: CheckoutServiceClient<PeerChannel>,
    stop: CancellationToken,
}

async fn test_db(kind: Kind, migrations: &mall_storage::Migrations) -> Option<TestDb> {
    match kind {
        Kind::Sqlite => Some(TestDb::sqlite(migrations).await),
        Kind::Mariadb => TestDb::mariadb(migrations).await,
    }
}

async fn listener() -> tokio::net::TcpListener {
    mall_runtime::bind("127.0.0.1:0").await.unwrap()
}

fn channel(addr: std::net::SocketAddr) -> PeerChannel {
    mall_runtime::channel(&addr.to_string()).unwrap()
}

/// A channel to a port where nothing listens.
async fn dead_channel() -> PeerChannel {
    let unused = listener().await;
    let addr = unused.local_addr().unwrap();
    drop(unused);
    channel(addr)
}

impl Stack {
    /// `None` when the MariaDB/Redis test servers are not configured.
    async fn start(kind: Kind) -> Option<Stack> {
        mall_runtime::init_tracing();
        let product_db = test_db(kind, &mall_product::migrations()).await?;
        let cart_db = test_db(kind, &mall_cart::migrations()).await?;
        let order_db = test_db(kind, &mall_order::migrations()).await?;
        let payment_db = test_db(kind, &mall_payment::migrations()).await?;
        let checkout_db = test_db(kind, &crate::migrations()).await?;
        let cache = match kind {
            Kind::Sqlite => Cache::memory(&mall_testkit::unique_name("t")),
            Kind::Mariadb => mall_testkit::redis_cache().await?,
        };
        let stop = CancellationToken::new();
        let product = mall_product::startup(
            mall_product::Config::default(),
            product_db.db.clone(),
            cache,
            mall_runtime::Access::unchecked(),
            listener().await,
            stop.clone(),
        )
        .await
        .unwrap();
        let product = channel(product.addr);
        let cart = mall_cart::startup(
            cart_db.db.clone(),
            product.clone(),
            mall_runtime::Access::unchecked(),
            listener().await,
            stop.clone(),
        )
        .await
        .unwrap();
        let cart = channel(cart.addr);
        let order = mall_order::startup(
            mall_order::Config::default(),
            order_db.db.clone(),
            product.clone(),
            mall_runtime::Access::unchecked(),
            listener().await,
            stop.clone(),
        )
        .await
        .unwrap();
        let order = channel(order.addr);
        let payment = mall_payment::startup(
            payment_db.db.clone(),
            order.clone(),
            mall_runtime::Access::unchecked(),
            listener().await,
            stop.clone(),
        )
        .await
        .unwrap();
        let payment = channel(payment.addr);
        let peers = Peers { cart: cart.clone(), order: order.clone(), payment: payment.clone() };
        let checkout = crate::startup(
            checkout_db.db.clone(),
            peers.clone(),
            mall_runtime::Access::unchecked(),
            listener().await,
            stop.clone(),
        )
        .await
        .unwrap();
        Some(Stack {
            checkout_db: checkout_db.db.clone(),
            payment_db: payment_db.db.clone(),
            dbs: vec![product_db, cart_db, order_db, payment_db, checkout_db],
            peers,
            product: ProductServiceClient::new(product),
            cart: CartServiceClient::new(cart),
            order: OrderServiceClient::new(order),
            payment: PaymentServiceClient::new(payment),
            checkout: CheckoutServiceClient::new(channel(checkout.addr)),
            stop,
        })
    }

    async fn finish(self) {
        self.stop.cancel();
        for db in self.dbs {
            db.drop_database().await;
        }
    }

    /// Another checkout service on the same database, whose payment service is unreachable.
    async fn checkout_without_payment(&self) -> CheckoutServiceClient<PeerChannel> {
        let peers = Peers { payment: dead_channel().await, ..self.peers.clone() };
        let served = crate::startup(
            self.checkout_db.clone(),
            peers,
            mall_runtime::Access::unchecked(),
            listener().await,
            self.stop.clone(),
        )
        .await
        .unwrap();
        CheckoutServiceClient::new(channel(served.addr))
    }

    async fn product(&self, price_cents: i64, stock: i64) -> i64 {
        let request = product_pb::CreateProductRequest {
            name: mall_testkit::unique_name("Lamp"),
            description: "a lamp for tests".into(),
            price_cents,
            stock,
            ..Default::default()
        };
        self.product.clone().create_product(request).await.unwrap().into_inner().product.unwrap().product_id
    }

    async fn stock(&self, product_id: i64) -> i64 {
        let request = product_pb::GetProductRequest { product_id };
        self.product.clone().get_product(request).await.unwrap().into_inner().product.unwrap().stock
    }

    async fn add(&self, user_id: i64, product_id: i64, quantity: i64) {
        let request = cart_pb::AddItemRequest { user_id, product_id, quantity };
        self.cart.clone().add_item(request).await.unwrap();
    }

    /// (product_id, quantity) of each line of the user's cart.
    async fn cart_lines(&self, user_id: i64) -> Vec<(i64, i64)> {
        let cart = self.cart.clone().get_cart(cart_pb::GetCartRequest { user_id }).await.unwrap();
        cart.into_inner().cart.unwrap().items.iter().map(|i| (i.product_id, i.quantity)).collect()
    }

    async fn orders(&self, user_id: i64) -> Vec<order_pb::Order> {
        let request = order_pb::ListOrdersRequest { user_id, page: 1, page_size: 100 };
        self.order.clone().list_orders(request).await.unwrap().into_inner().items
    }

    async fn order(&self, user_id: i64, order_id: &str) -> order_pb::Order {
        let request = order_pb::GetOrderRequest { user_id, order_id: order_id.into() };
        self.order.clone().get_order(request).await.unwrap().into_inner().order.unwrap()
    }

    /// Payment rows (attempts of any status) for the order.
    async fn payment_rows(&self, order_id: &str, condition: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM payments WHERE order_id = ? AND {condition}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_one(self.payment_db.pool())
            .await
            .unwrap()
    }

    async fn state(&self, user_id: i64, key: &str) -> pb::Checkout {
        let request = pb::GetCheckoutRequest {
            user_id,
            lookup: Some(pb::get_checkout_request::Lookup::IdempotencyKey(key.into())),
        };
        self.checkout.clone().get_checkout(request).await.unwrap().into_inner().checkout.unwrap()
    }

    /// Whether a call holds the checkout's lease.
    async fn leased(&self, checkout_id: &str) -> bool {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT lease_owner FROM checkouts WHERE checkout_id = ?")
                .bind(checkout_id)
                .fetch_one(self.checkout_db.pool())
                .await
                .unwrap();
        owner.is_some()
    }

    /// Recovery, run directly (as the background task does, without waiting for checkouts to idle).
    async fn recover(&self) -> crate::saga::Recovered {
        Checkouts::new(self.checkout_db.clone(), self.peers.clone()).recover(0).await.unwrap()
    }
}

fn request(user_id: i64, key: &str, number: &str) -> pb::CheckoutRequest {
    pb::CheckoutRequest {
        user_id,
        idempotency_key: key.into(),
        firstname: "Grace".into(),
        lastname: "Hopper".into(),
        email: "grace@example.com".into(),
        address: Some(order_pb::Address {
            street_address: "1 Navy Way".into(),
            city: "Arlington".into(),
            state: "VA".into(),
            country: "US".into(),
            zip_code: "02201".into(),
        }),
        credit_card: Some(payment_pb::CreditCard {
            number: number.into(),
            cvv: "321".into(),
            expiration_year: 2099,
            expiration_month: 6,
        }),
    }
}

async fn run(
    client: &CheckoutServiceClient<PeerChannel>,
    req: pb::CheckoutRequest,
) -> Result<pb::CheckoutResponse, tonic::Status> {
    Ok(client.clone().checkout(req).await?.into_inner())
}

/// The order is paid with the payment's transaction, priced by the catalog; the stock went down; the
/// cart is empty; a replay answers the same without doing anything again.
async fn happy_path(s: &Stack) {
    let user = 101;
    let (lamp, bulb) = (s.product(1000, 5).await, s.product(250, 10).await);
    s.add(user, lamp, 2).await;
    s.add(user, bulb, 3).await;
    let done = run(&s.checkout, request(user, "k-happy", GOOD_CARD)).await.unwrap();
    assert_eq!(done.outcome(), pb::CheckoutOutcome::Succeeded);
    assert_eq!(done.total_cents, 2 * 1000 + 3 * 250);
    assert!(!done.replayed);
    assert_eq!(done.decline_reason(), payment_pb::DeclineReason::Unspecified);

    let order = s.order(user, &done.order_id).await;
    assert_eq!(order.status(), order_pb::OrderStatus::Paid);
    assert_eq!(order.transaction_id, done.transaction_id);
    assert_eq!(order.total_cents, 2750);
    assert_eq!(order.email, "grace@example.com");
    assert_eq!((s.stock(lamp).await, s.stock(bulb).await), (3, 7));
    assert!(s.cart_lines(user).await.is_empty());
    let payment = s
        .payment
        .clone()
        .get_payment(payment_pb::GetPaymentRequest {
            user_id: user,
            lookup: Some(payment_pb::get_payment_request::Lookup::OrderId(done.order_id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!((payment.status(), payment.amount_cents), (payment_pb::PaymentStatus::Succeeded, 2750));
    assert_eq!(payment.transaction_id, done.transaction_id);
    assert_eq!(payment.card_last4, "4242");

    let state = s.state(user, "k-happy").await;
    assert_eq!(
        (state.step(), state.outcome()),
        (pb::CheckoutStep::CartEmptied, pb::CheckoutOutcome::Succeeded)
    );
    assert_eq!(
        (state.checkout_id.as_str(), state.order_id.as_str()),
        (done.checkout_id.as_str(), done.order_id.as_str())
    );
    assert_eq!((state.total_cents, state.firstname.as_str()), (2750, "Grace"));
    assert_eq!(state.address.unwrap().zip_code, "02201");
    assert!(!s.leased(&done.checkout_id).await, "the checkout's last write gave its lease up");

    // The same request again: the first result, nothing done again.
    let again = run(&s.checkout, request(user, "k-happy", GOOD_CARD)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(pb::CheckoutResponse { replayed: false, ..again }, done);
    assert_eq!(s.orders(user).await.len(), 1);
    assert_eq!(s.payment_rows(&done.order_id, "1 = 1").await, 1);

    // Without a key: the cart is empty now, so there is nothing to check out.
    let e = run(&s.checkout, request(user, "", GOOD_CARD)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "your cart is empty"));
}

async fn empty_cart(s: &Stack) {
    let user = 102;
    let e = run(&s.checkout, request(user, "k-empty", GOOD_CARD)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "your cart is empty"));
    let state = s.state(user, "k-empty").await;
    assert_eq!(state.outcome(), pb::CheckoutOutcome::Failed);
    assert_eq!(state.failure_code, Code::InvalidArgument as i32);
    // A replay answers the same status.
    let e = run(&s.checkout, request(user, "k-empty", GOOD_CARD)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "your cart is empty"));
    assert!(s.orders(user).await.is_empty());
}

/// Short stock: FAILED_PRECONDITION, nothing reserved, no order, the cart kept.
async fn short_stock(s: &Stack) {
    let user = 103;
    let (scarce, plenty) = (s.product(500, 2).await, s.product(100, 10).await);
    s.add(user, plenty, 1).await;
    s.add(user, scarce, 3).await;
    let e = run(&s.checkout, request(user, "k-short", GOOD_CARD)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!((s.stock(scarce).await, s.stock(plenty).await), (2, 10), "nothing reserved");
    assert!(s.orders(user).await.is_empty());
    assert_eq!(s.cart_lines(user).await, [(plenty, 1), (scarce, 3)]);
    let state = s.state(user, "k-short").await;
    assert_eq!(state.outcome(), pb::CheckoutOutcome::Failed);
    assert_eq!(state.failure_message, e.message());
}

/// The processor's decline, after the order is placed: outcome DECLINED with the reason, the order
/// cancelled, its stock back, the cart kept; another card then pays.
async fn declined_card(s: &Stack) {
    let user = 104;
    let lamp = s.product(700, 4).await;
    s.add(user, lamp, 2).await;
    for (key, number, reason) in [
        ("k-test", mall_payment::DECLINED_TEST_CARD, payment_pb::DeclineReason::ProcessorDeclined),
        ("k-test-spaced", "4000 0000 0000 0002", payment_pb::DeclineReason::ProcessorDeclined),
    ] {
        let declined = run(&s.checkout, request(user, key, number)).await.unwrap();
        assert_eq!(declined.outcome(), pb::CheckoutOutcome::Declined);
        assert_eq!(declined.decline_reason(), reason);
        assert!(!declined.transaction_id.is_empty());
        let order = s.order(user, &declined.order_id).await;
        assert_eq!(order.status(), order_pb::OrderStatus::Cancelled);
        assert_eq!(s.stock(lamp).await, 4, "stock restored");
        assert_eq!(s.cart_lines(user).await, [(lamp, 2)], "cart kept");
        let state = s.state(user, key).await;
        assert_eq!(
            (state.step(), state.outcome()),
            (pb::CheckoutStep::OrderCancelled, pb::CheckoutOutcome::Declined)
        );
        assert_eq!(state.decline_reason(), reason);
        let replay = run(&s.checkout, request(user, key, number)).await.unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.decline_reason(), reason);
    }
    let paid = run(&s.checkout, request(user, "k-good", GOOD_CARD)).await.unwrap();
    assert_eq!(paid.outcome(), pb::CheckoutOutcome::Succeeded);
    assert_eq!(s.stock(lamp).await, 2);
    assert_eq!(s.orders(user).await.len(), 3, "two cancelled, one paid");
}

/// Step 0: a malformed card (number, CVV, expiry) is DECLINED with payment's reason for it before
/// anything is recorded, placed, reserved or charged; the cart is kept, and the same key with a good
/// card then checks out afresh.
async fn malformed_card(s: &Stack) {
    let user = 111;
    let lamp = s.product(700, 4).await;
    s.add(user, lamp, 2).await;
    let now = YearMonth::now_utc();
    let (last_year, last_month) =
        if now.month == 1 { (now.year - 1, 12) } else { (now.year, i32::from(now.month) - 1) };
    let with_card = |edit: &dyn Fn(&mut payment_pb::CreditCard)| {
        let mut req = request(user, "k-malformed", GOOD_CARD);
        edit(req.credit_card.as_mut().unwrap());
        req
    };
    let cases = [
        (request(user, "k-malformed", "4242 4242 4242 4241"), payment_pb::DeclineReason::InvalidNumber),
        (request(user, "k-malformed", "4242 4242 42"), payment_pb::DeclineReason::InvalidNumber),
        (with_card(&|c| c.cvv = "12".into()), payment_pb::DeclineReason::InvalidCvv),
        (with_card(&|c| c.expiration_month = 13), payment_pb::DeclineReason::InvalidExpiry),
        (
            with_card(&|c| (c.expiration_year, c.expiration_month) = (last_year, last_month)),
            payment_pb::DeclineReason::Expired,
        ),
    ];
    for (req, reason) in cases {
        let declined = run(&s.checkout, req).await.unwrap();
        let refused = pb::CheckoutResponse {
            outcome: pb::CheckoutOutcome::Declined.into(),
            decline_reason: reason.into(),
            ..Default::default()
        };
        assert_eq!(declined, refused, "no checkout, order or transaction");
    }
    assert!(s.orders(user).await.is_empty(), "nothing placed");
    assert_eq!(s.stock(lamp).await, 4, "nothing reserved");
    assert_eq!(s.cart_lines(user).await, [(lamp, 2)], "cart kept");
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE user_id = ?")
        .bind(user)
        .fetch_one(s.payment_db.pool())
        .await
        .unwrap();
    assert_eq!(payments, 0, "payment was never asked");
    let lookup = pb::GetCheckoutRequest {
        user_id: user,
        lookup: Some(pb::get_checkout_request::Lookup::IdempotencyKey("k-malformed".into())),
    };
    let e = s.checkout.clone().get_checkout(lookup).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "nothing recorded");

    let paid = run(&s.checkout, request(user, "k-malformed", GOOD_CARD)).await.unwrap();
    assert_eq!(paid.outcome(), pb::CheckoutOutcome::Succeeded);
    assert_eq!(s.stock(lamp).await, 2);
    assert_eq!(s.orders(user).await.len(), 1);
}

/// The payment service is unreachable: UNAVAILABLE, the order not paid, the checkout waiting at
/// ORDER_PLACED. The same key through a checkout service that reaches payment completes it once.
async fn payment_unavailable_then_resumed(s: &Stack) {
    let user = 105;
    let lamp = s.product(300, 6).await;
    s.add(user, lamp, 2).await;
    let broken = s.checkout_without_payment().await;
    let e = run(&broken, request(user, "k-resume", GOOD_CARD)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let state = s.state(user, "k-resume").await;
    assert_eq!(
        (state.step(), state.outcome()),
        (pb::CheckoutStep::OrderPlaced, pb::CheckoutOutcome::InProgress)
    );
    assert_eq!(s.order(user, &state.order_id).await.status(), order_pb::OrderStatus::Pending, "not paid");
    assert_eq!(s.stock(lamp).await, 4);
    assert!(!s.leased(&state.checkout_id).await, "a stopped checkout is free to resume");

    // Retrying on the broken one again stays put.
    let e = run(&broken, request(user, "k-resume", GOOD_CARD)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // The same request with a mistyped CVV (which the request's identity leaves out) is refused
    // without charging, cancelling or moving the checkout.
    let before = s.state(user, "k-resume").await;
    let mut typo = request(user, "k-resume", GOOD_CARD);
    typo.credit_card.as_mut().unwrap().cvv = "3210x".into();
    let refused = run(&s.checkout, typo).await.unwrap();
    assert_eq!(
        (refused.outcome(), refused.decline_reason(), refused.order_id.as_str()),
        (pb::CheckoutOutcome::Declined, payment_pb::DeclineReason::InvalidCvv, "")
    );
    assert_eq!(s.state(user, "k-resume").await, before, "the checkout is where it was");

    let done = run(&s.checkout, request(user, "k-resume", GOOD_CARD)).await.unwrap();
    assert_eq!(done.outcome(), pb::CheckoutOutcome::Succeeded);
    assert!(!done.replayed, "resumed, not replayed");
    assert_eq!(
        (done.order_id.as_str(), done.checkout_id.as_str()),
        (state.order_id.as_str(), state.checkout_id.as_str())
    );
    let orders = s.orders(user).await;
    assert_eq!(orders.len(), 1, "one order");
    assert_eq!(orders[0].status(), order_pb::OrderStatus::Paid);
    assert_eq!(s.payment_rows(&done.order_id, "1 = 1").await, 1, "one payment");
    assert_eq!(s.stock(lamp).await, 4, "stock taken once");
    assert!(s.cart_lines(user).await.is_empty());
    let replay = run(&broken, request(user, "k-resume", GOOD_CARD)).await.unwrap();
    assert!(replay.replayed, "a finished checkout replays even without payment");
}

/// The same key with another request is ALREADY_EXISTS; only the card's last four digits count.
async fn same_key_other_request(s: &Stack) {
    let user = 106;
    let lamp = s.product(900, 3).await;
    s.add(user, lamp, 1).await;
    let done = run(&s.checkout, request(user, "k-body", GOOD_CARD)).await.unwrap();
    let mut other = request(user, "k-body", GOOD_CARD);
    other.lastname = "Murray".into();
    let e = run(&s.checkout, other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let mut other = request(user, "k-body", GOOD_CARD);
    other.address.as_mut().unwrap().city = "Boston".into();
    assert_eq!(run(&s.checkout, other).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(
        run(&s.checkout, request(user, "k-body", "4111 1111 1111 1111")).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // Another number with the same last four and another CVV: the same request.
    let mut same = request(user, "k-body", "5555 5555 5555 4242");
    same.credit_card.as_mut().unwrap().cvv = "000".into();
    let replay = run(&s.checkout, same).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.order_id, done.order_id);
    // Another user's identical key is theirs alone.
    let e = run(&s.checkout, request(user + 1000, "k-body", GOOD_CARD)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "their own (empty) cart");
}

/// Ten concurrent calls with one key: one order, one charge; every answer is that checkout or ABORTED.
async fn concurrent_same_key(s: &Stack) {
    let user = 107;
    let lamp = s.product(1100, 20).await;
    s.add(user, lamp, 2).await;
    let calls = (0..10).map(|_| run(&s.checkout, request(user, "k-conc", GOOD_CARD)));
    let results = futures::future::join_all(calls).await;
    let orders = s.orders(user).await;
    assert_eq!(orders.len(), 1, "one order");
    let order_id = orders[0].order_id.clone();
    assert_eq!(orders[0].status(), order_pb::OrderStatus::Paid);
    assert_eq!(s.payment_rows(&order_id, "1 = 1").await, 1, "one charge");
    assert_eq!(s.stock(lamp).await, 18);
    let mut succeeded = 0;
    for result in results {
        match result {
            Ok(done) => {
                succeeded += 1;
                assert_eq!(done.outcome(), pb::CheckoutOutcome::Succeeded);
                assert_eq!(done.order_id, order_id);
            }
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
        }
    }
    assert!(succeeded >= 1);
    let state = s.state(user, "k-conc").await;
    assert_eq!(state.step(), pb::CheckoutStep::CartEmptied);
}

/// A checkout left at ORDER_PLACED (payment unreachable, the client gone) is compensated by recovery:
/// the order cancelled, its stock back, the checkout FAILED; a retry with the key answers the same.
async fn recovery_cancels(s: &Stack) {
    let user = 108;
    let lamp = s.product(400, 5).await;
    s.add(user, lamp, 3).await;
    let broken = s.checkout_without_payment().await;
    assert_eq!(run(&broken, request(user, "k-lost", GOOD_CARD)).await.unwrap_err().code(), Code::Unavailable);
    let left = s.state(user, "k-lost").await;
    assert_eq!(left.step(), pb::CheckoutStep::OrderPlaced);
    assert_eq!(s.stock(lamp).await, 2);

    let recovered = s.recover().await;
    assert_eq!((recovered.finished, recovered.deferred), (1, 0));
    let state = s.state(user, "k-lost").await;
    assert_eq!(
        (state.step(), state.outcome()),
        (pb::CheckoutStep::OrderCancelled, pb::CheckoutOutcome::Failed)
    );
    assert_eq!(state.failure_message, ABANDONED);
    assert_eq!(s.order(user, &left.order_id).await.status(), order_pb::OrderStatus::Cancelled);
    assert_eq!(s.stock(lamp).await, 5, "stock restored");
    assert_eq!(s.payment_rows(&left.order_id, "1 = 1").await, 0, "nothing charged");
    assert_eq!(s.cart_lines(user).await, [(lamp, 3)], "cart kept");
    let e = run(&s.checkout, request(user, "k-lost", GOOD_CARD)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, ABANDONED));
    assert_eq!(s.recover().await, crate::saga::Recovered::default(), "nothing left to recover");
}

/// A checkout left at ORDER_PLACED whose order did get paid (the charge went through, its answer was
/// lost) is completed by recovery: SUCCEEDED, the cart emptied.
async fn recovery_completes(s: &Stack) {
    let user = 109;
    let lamp = s.product(650, 5).await;
    s.add(user, lamp, 1).await;
    let broken = s.checkout_without_payment().await;
    assert_eq!(run(&broken, request(user, "k-paid", GOOD_CARD)).await.unwrap_err().code(), Code::Unavailable);
    let left = s.state(user, "k-paid").await;
    let charge = payment_pb::ChargeRequest {
        order_id: left.order_id.clone(),
        user_id: user,
        credit_card: request(user, "", GOOD_CARD).credit_card,
        idempotency_key: String::new(),
    };
    let paid = s.payment.clone().charge(charge).await.unwrap().into_inner().payment.unwrap();

    assert_eq!(s.recover().await.finished, 1);
    let state = s.state(user, "k-paid").await;
    assert_eq!(
        (state.step(), state.outcome()),
        (pb::CheckoutStep::CartEmptied, pb::CheckoutOutcome::Succeeded)
    );
    assert_eq!(state.transaction_id, paid.transaction_id);
    assert!(s.cart_lines(user).await.is_empty());
    assert_eq!(s.order(user, &left.order_id).await.status(), order_pb::OrderStatus::Paid);
    assert_eq!(s.stock(lamp).await, 4);
    let replay = run(&s.checkout, request(user, "k-paid", GOOD_CARD)).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.transaction_id, paid.transaction_id);
}

/// The saga writes only where it stops, so a process that dies mid-checkout leaves the row at its last
/// write while the order was placed, charged and paid. Recovery redoes the steps from there (every call
/// is idempotent): it finds the same order and the same payment, charges nothing again and ends
/// SUCCEEDED.
async fn recovery_redoes_steps_that_were_not_written(s: &Stack) {
    let user = 111;
    let lamp = s.product(480, 5).await;
    s.add(user, lamp, 2).await;
    let done = run(&s.checkout, request(user, "k-crash", GOOD_CARD)).await.unwrap();
    assert_eq!(done.outcome(), pb::CheckoutOutcome::Succeeded);
    // As if the process had died right after its insert: everything after it unwritten.
    sqlx::query(
        "UPDATE checkouts SET step = 'cart_read', outcome = 'in_progress', order_id = '', transaction_id = '', \
         total_cents = 0, lease_owner = NULL, lease_until = 0 WHERE checkout_id = ?",
    )
    .bind(&done.checkout_id)
    .execute(s.checkout_db.pool())
    .await
    .unwrap();

    assert_eq!(s.recover().await, crate::saga::Recovered { finished: 1, deferred: 0 });
    let state = s.state(user, "k-crash").await;
    assert_eq!(
        (state.step(), state.outcome()),
        (pb::CheckoutStep::CartEmptied, pb::CheckoutOutcome::Succeeded)
    );
    assert_eq!(
        (state.order_id.as_str(), state.transaction_id.as_str()),
        (done.order_id.as_str(), done.transaction_id.as_str())
    );
    assert_eq!(state.total_cents, 960);
    assert_eq!(s.orders(user).await.len(), 1, "no second order");
    assert_eq!(s.payment_rows(&done.order_id, "1 = 1").await, 1, "no second charge");
    assert_eq!(s.stock(lamp).await, 3, "reserved once");
    assert!(!s.leased(&done.checkout_id).await);
}

async fn invalid_requests(s: &Stack) {
    let user = 110;
    let lamp = s.product(100, 5).await;
    s.add(user, lamp, 1).await;
    let mut no_card = request(user, "k-invalid", GOOD_CARD);
    no_card.credit_card = None;
    let mut bad_email = request(user, "k-invalid", GOOD_CARD);
    bad_email.email = "grace".into();
    let mut no_zip = request(user, "k-invalid", GOOD_CARD);
    no_zip.address.as_mut().unwrap().zip_code = String::new();
    for req in [no_card, bad_email, no_zip, request(0, "k-invalid", GOOD_CARD)] {
        assert_eq!(run(&s.checkout, req).await.unwrap_err().code(), Code::InvalidArgument);
    }
    assert!(s.orders(user).await.is_empty());

    let mut client = s.checkout.clone();
    let lookup = |key: &str| Some(pb::get_checkout_request::Lookup::IdempotencyKey(key.into()));
    let e = client.get_checkout(pb::GetCheckoutRequest { user_id: user, lookup: lookup("k-invalid") }).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound, "invalid requests are not recorded");
    let done = run(&s.checkout, request(user, "", GOOD_CARD)).await.unwrap();
    let by_id = |user_id: i64| pb::GetCheckoutRequest {
        user_id,
        lookup: Some(pb::get_checkout_request::Lookup::CheckoutId(done.checkout_id.clone())),
    };
    let found = client.get_checkout(by_id(user)).await.unwrap().into_inner().checkout.unwrap();
    assert_eq!(found.idempotency_key, "", "a generated key is not shown");
    assert_eq!(client.get_checkout(by_id(user + 1)).await.unwrap_err().code(), Code::NotFound);
    let e = client.get_checkout(pb::GetCheckoutRequest { user_id: user, lookup: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e =
        client.get_checkout(pb::GetCheckoutRequest { user_id: 0, lookup: lookup("x") }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// Without a key, ten concurrent checkouts of one unchanged cart (a double click, many times over):
/// one order, one charge; every answer is that checkout or ABORTED. Once the cart changes, a new
/// checkout proceeds.
async fn no_key_same_cart_checks_out_once(s: &Stack) {
    let user = 112;
    let lamp = s.product(1100, 20).await;
    s.add(user, lamp, 2).await;
    let calls = (0..10).map(|_| run(&s.checkout, request(user, "", GOOD_CARD)));
    let results = futures::future::join_all(calls).await;
    let orders = s.orders(user).await;
    assert_eq!(orders.len(), 1, "one order: {results:?}");
    let order_id = orders[0].order_id.clone();
    assert_eq!(orders[0].status(), order_pb::OrderStatus::Paid);
    assert_eq!(s.payment_rows(&order_id, "1 = 1").await, 1, "one charge");
    assert_eq!(s.stock(lamp).await, 18);
    let mut succeeded = 0;
    for result in results {
        match result {
            Ok(done) => {
                succeeded += 1;
                assert_eq!(
                    (done.outcome(), done.order_id.as_str()),
                    (pb::CheckoutOutcome::Succeeded, &*order_id)
                );
            }
            Err(e) => assert_eq!(
                (e.code(), e.message()),
                (Code::Aborted, "a checkout of this cart is already in progress; retry shortly")
            ),
        }
    }
    assert!(succeeded >= 1);
    assert!(s.cart_lines(user).await.is_empty());

    // The same lines again, in a cart filled again: a new cart, a new checkout.
    s.add(user, lamp, 2).await;
    let again = run(&s.checkout, request(user, "", GOOD_CARD)).await.unwrap();
    assert_eq!(again.outcome(), pb::CheckoutOutcome::Succeeded);
    assert!(!again.replayed);
    assert_ne!(again.order_id, order_id);
    assert_eq!(s.orders(user).await.len(), 2);
    assert_eq!(s.stock(lamp).await, 16);
}

/// Without a key: a checkout of a cart that is still running (its payment unreachable) is resumed by
/// the same request and refused with other details; a decline does not block another try of the same
/// cart; a change of the cart makes a new checkout.
async fn no_key_resumes_retries_after_a_decline_and_follows_the_cart(s: &Stack) {
    let user = 113;
    let (lamp, bulb) = (s.product(800, 10).await, s.product(50, 10).await);
    s.add(user, lamp, 1).await;
    let broken = s.checkout_without_payment().await;
    assert_eq!(run(&broken, request(user, "", GOOD_CARD)).await.unwrap_err().code(), Code::Unavailable);
    let placed = s.orders(user).await;
    assert_eq!(placed.len(), 1);

    let mut other = request(user, "", GOOD_CARD);
    other.firstname = "Ada".into();
    let e = run(&s.checkout, other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("this cart"), "{}", e.message());
    let resumed = run(&s.checkout, request(user, "", GOOD_CARD)).await.unwrap();
    assert_eq!(resumed.outcome(), pb::CheckoutOutcome::Succeeded);
    assert_eq!(resumed.order_id, placed[0].order_id, "the retry finished the checkout it had started");
    assert_eq!(s.payment_rows(&resumed.order_id, "1 = 1").await, 1);
    assert_eq!(s.orders(user).await.len(), 1);

    // A decline charges nothing: the same cart may be tried again, and with another card it pays.
    s.add(user, bulb, 2).await;
    for _ in 0..2 {
        let declined = run(&s.checkout, request(user, "", mall_payment::DECLINED_TEST_CARD)).await.unwrap();
        assert_eq!(declined.outcome(), pb::CheckoutOutcome::Declined);
        assert!(!declined.replayed, "a new try, not the first one's answer");
    }
    assert_eq!(s.stock(bulb).await, 10, "the declined orders released their stock");
    let paid = run(&s.checkout, request(user, "", GOOD_CARD)).await.unwrap();
    assert_eq!(paid.outcome(), pb::CheckoutOutcome::Succeeded);
    assert_eq!(paid.total_cents, 100);
    let orders = s.orders(user).await;
    assert_eq!(orders.len(), 4, "the first, two declined, this one");
    assert_eq!(orders.iter().filter(|o| o.status() == order_pb::OrderStatus::Paid).count(), 2);
}

/// One rule per input, end to end: what the order service would refuse, checkout refuses first, with
/// the same message, before anything is recorded, placed or reserved; and an email the user service
/// refuses, checkout and the order service refuse in the same words. (Checkout used to take 255
/// characters per address field, which the order service then refused above 200, after the checkout
/// had started; and each service had its own idea of an email.)
async fn one_rule_per_input(s: &Stack) {
    let user = 111;
    let lamp = s.product(700, 5).await;
    s.add(user, lamp, 2).await;
    let refused = |r: Result<pb::CheckoutResponse, tonic::Status>| {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        e.message().to_owned()
    };
    let place = |req: &pb::CheckoutRequest| order_pb::PlaceOrderRequest {
        user_id: user,
        email: req.email.clone(),
        address: req.address.clone(),
        items: vec![order_pb::OrderLine { product_id: lamp, quantity: 1 }],
        idempotency_key: String::new(),
    };

    // 201 characters in an address field: refused by checkout at its door, as the order service would.
    let mut long = request(user, "k-rule-address", GOOD_CARD);
    long.address.as_mut().unwrap().street_address = "x".repeat(201);
    let message = refused(run(&s.checkout, long.clone()).await);
    assert_eq!(message, "address.street_address must be at most 200 characters (it has 201)");
    let by_order = s.order.clone().place_order(place(&long)).await.unwrap_err();
    assert_eq!((by_order.code(), by_order.message()), (Code::InvalidArgument, message.as_str()));
    assert!(s.orders(user).await.is_empty(), "no order placed");
    assert_eq!(s.stock(lamp).await, 5, "no stock reserved");
    assert_eq!(s.cart_lines(user).await, [(lamp, 2)], "the cart is untouched");
    let lookup = pb::GetCheckoutRequest {
        user_id: user,
        lookup: Some(pb::get_checkout_request::Lookup::IdempotencyKey("k-rule-address".into())),
    };
    let e = s.checkout.clone().get_checkout(lookup).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "nothing recorded: the key stays free");

    // Emails: the user service is the reference; checkout and the order service answer the same.
    let users_db = TestDb::sqlite(&mall_user::migrations()).await;
    let served = mall_user::startup(
        mall_user::Config::default(),
        users_db.db.clone(),
        mall_runtime::Access::unchecked(),
        listener().await,
        s.stop.clone(),
    )
    .await
    .unwrap();
    let users = UserServiceClient::new(channel(served.addr));
    let register = |email: &str| user_pb::RegisterRequest {
        email: email.into(),
        password: "correct horse".into(),
        confirm_password: "correct horse".into(),
    };
    // Among them, addresses the order service or checkout used to take.
    for email in [
        "al<ice@example.com",
        ".alice@example.com",
        "a..b@example.com",
        "alice@exa_mple.com",
        "alice@-x.com",
        "grace",
        "grace@localhost",
        "   ",
    ] {
        let by_users = users.clone().register(register(email)).await.unwrap_err();
        assert_eq!(by_users.code(), Code::InvalidArgument, "{email:?}");
        let mut req = request(user, "k-rule-email", GOOD_CARD);
        req.email = email.into();
        assert_eq!(refused(run(&s.checkout, req.clone()).await), by_users.message(), "checkout, {email:?}");
        let by_order = s.order.clone().place_order(place(&req)).await.unwrap_err();
        assert_eq!((by_order.code(), by_order.message()), (by_users.code(), by_users.message()), "{email:?}");
    }
    assert!(s.orders(user).await.is_empty());
    assert_eq!(s.stock(lamp).await, 5);

    // At the limits, and with an email the user service would take, the checkout goes through; the
    // order keeps the email as the user service would (lowercased).
    let mut fits = request(user, "k-rule-fits", GOOD_CARD);
    fits.email = " Grace@Example.COM ".into();
    fits.address.as_mut().unwrap().street_address = "x".repeat(200);
    users.clone().register(register(&fits.email)).await.expect("the user service takes it");
    let done = run(&s.checkout, fits).await.unwrap();
    assert_eq!(done.outcome(), pb::CheckoutOutcome::Succeeded);
    let order = s.order(user, &done.order_id).await;
    assert_eq!(order.email, "grace@example.com");
    assert_eq!(order.address.unwrap().street_address, "x".repeat(200));
    assert_eq!(s.stock(lamp).await, 3);
    users_db.drop_database().await;
}

async fn scenario(kind: Kind, test: impl AsyncFnOnce(&Stack)) {
    let Some(stack) = Stack::start(kind).await else { return };
    test(&stack).await;
    stack.finish().await;
}

mall_testkit::on_both_backends!(
    super::scenario;
    happy_path,
    empty_cart,
    short_stock,
    declined_card,
    malformed_card,
    payment_unavailable_then_resumed,
    same_key_other_request,
    concurrent_same_key,
    no_key_same_cart_checks_out_once,
    no_key_resumes_retries_after_a_decline_and_follows_the_cart,
    recovery_cancels,
    recovery_completes,
    recovery_redoes_steps_that_were_not_written,
    invalid_requests,
    one_rule_per_input,
);
