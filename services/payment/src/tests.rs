//! The payment service over real gRPC, with the real order and product services beside it (each on
//! its own database): on SQLite always, and on MariaDB (product cache on Redis) when configured.

use std::sync::Arc;
use std::time::Duration;

use mall_proto::order::v1 as order_pb;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::payment::v1 as pb;
use mall_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mall_proto::product::v1 as product_pb;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Backend, Cache, Db};
use mall_testkit::TestDb;
use tokio::sync::Notify;
use tonic::Code;

use crate::processor::{
    BuiltInProcessor, CardProcessor, ProcessorCharge, ProcessorDecision, ProcessorUnavailable,
};
use crate::{DECLINED_TEST_CARD, Payments};

const GOOD_CARD: &str = "4111 1111 1111 1111";
const GOOD_DIGITS: &str = "4111111111111111";

use mall_testkit::Backend as Kind;

/// Product, order and payment services, each on its own database, all on port 0.
struct Stack {
    dbs: Vec<TestDb>,
    payment_db: Db,
    product: ProductServiceClient<PeerChannel>,
    order: OrderServiceClient<PeerChannel>,
    order_channel: PeerChannel,
    payment: PaymentServiceClient<PeerChannel>,
    /// Stops the order service alone (its own token), to make it unreachable.
    order_stop: CancellationToken,
    order_addr: std::net::SocketAddr,
    order_db: Db,
    product_channel: PeerChannel,
    stop: CancellationToken,
}

async fn test_db(kind: Kind, migrations: &mall_storage::Migrations) -> Option<TestDb> {
    match kind {
        Kind::Sqlite => Some(TestDb::sqlite(migrations).await),
        Kind::Mariadb => TestDb::mariadb(migrations).await,
    }
}

impl Stack {
    /// `None` when the MariaDB/Redis test servers are not configured.
    async fn start(kind: Kind, processor: Arc<dyn CardProcessor>) -> Option<Stack> {
        Stack::start_with(kind, processor, mall_order::Config::default()).await
    }

    async fn start_with(
        kind: Kind,
        processor: Arc<dyn CardProcessor>,
        order_config: mall_order::Config,
    ) -> Option<Stack> {
        mall_runtime::init_tracing();
        let product_db = test_db(kind, &mall_product::migrations()).await?;
        let order_db = test_db(kind, &mall_order::migrations()).await?;
        let payment_db = test_db(kind, &crate::migrations()).await?;
        let cache = match kind {
            Kind::Sqlite => Cache::memory(&mall_testkit::unique_name("t")),
            Kind::Mariadb => mall_testkit::redis_cache().await?,
        };
        let stop = CancellationToken::new();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let product = mall_product::startup(
            mall_product::Config::default(),
            product_db.db.clone(),
            cache,
            mall_runtime::Access::unchecked(),
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        let product_channel = mall_runtime::channel(&product.addr.to_string()).unwrap();

        let order_stop = stop.child_token();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let order = mall_order::startup(
            order_config,
            order_db.db.clone(),
            product_channel.clone(),
            mall_runtime::Access::unchecked(),
            listener,
            order_stop.clone(),
        )
        .await
        .unwrap();
        let order_channel = mall_runtime::channel(&order.addr.to_string()).unwrap();

        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let payment = crate::startup_with_processor(
            payment_db.db.clone(),
            order_channel.clone(),
            processor,
            mall_runtime::Access::unchecked(),
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        let payment = PaymentServiceClient::new(mall_runtime::channel(&payment.addr.to_string()).unwrap());
        Some(Stack {
            payment_db: payment_db.db.clone(),
            order_db: order_db.db.clone(),
            dbs: vec![product_db, order_db, payment_db],
            product: ProductServiceClient::new(product_channel.clone()),
            order: OrderServiceClient::new(order_channel.clone()),
            order_channel,
            payment,
            order_stop,
            order_addr: order.addr,
            product_channel,
            stop,
        })
    }

    async fn finish(self) {
        self.stop.cancel();
        for db in self.dbs {
            db.drop_database().await;
        }
    }

    async fn create_product(&self, price_cents: i64, stock: i64) -> i64 {
        let request = product_pb::CreateProductRequest {
            name: mall_testkit::unique_name("Mug"),
            description: "a mug for tests".into(),
            price_cents,
            stock,
            ..Default::default()
        };
        self.product.clone().create_product(request).await.unwrap().into_inner().product.unwrap().product_id
    }

    /// A pending order of `user_id`: `quantity` of a new product at `price_cents`.
    async fn place(&self, user_id: i64, price_cents: i64, quantity: i64) -> order_pb::Order {
        let product_id = self.create_product(price_cents, 100).await;
        let request = order_pb::PlaceOrderRequest {
            user_id,
            email: "buyer@example.com".into(),
            address: Some(order_pb::Address {
                street_address: "1 Main St".into(),
                city: "Springfield".into(),
                state: String::new(),
                country: "US".into(),
                zip_code: "01234".into(),
            }),
            items: vec![order_pb::OrderLine { product_id, quantity }],
            idempotency_key: String::new(),
        };
        self.order.clone().place_order(request).await.unwrap().into_inner().order.unwrap()
    }

    async fn get_order(&self, user_id: i64, order_id: &str) -> order_pb::Order {
        let request = order_pb::GetOrderRequest { user_id, order_id: order_id.into() };
        self.order.clone().get_order(request).await.unwrap().into_inner().order.unwrap()
    }

    async fn charge(
        &self,
        user_id: i64,
        order_id: &str,
        card: pb::CreditCard,
        key: &str,
    ) -> Result<pb::ChargeResponse, tonic::Status> {
        let request = pb::ChargeRequest {
            order_id: order_id.into(),
            user_id,
            credit_card: Some(card),
            idempotency_key: key.into(),
        };
        Ok(self.payment.clone().charge(request).await?.into_inner())
    }

    async fn get_payment(
        &self,
        user_id: i64,
        lookup: pb::get_payment_request::Lookup,
    ) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentRequest { user_id, lookup: Some(lookup) };
        Ok(self.payment.clone().get_payment(request).await?.into_inner().payment.unwrap())
    }

    async fn count(&self, condition: &str, order_id: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM payments WHERE order_id = ? AND {condition}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(order_id)
            .fetch_one(self.payment_db.pool())
            .await
            .unwrap()
    }
}

fn card(number: &str) -> pb::CreditCard {
    pb::CreditCard { number: number.into(), cvv: "987".into(), expiration_year: 2099, expiration_month: 12 }
}

fn by_order(order_id: &str) -> pb::get_payment_request::Lookup {
    pb::get_payment_request::Lookup::OrderId(order_id.into())
}

fn by_transaction(transaction_id: &str) -> pb::get_payment_request::Lookup {
    pb::get_payment_request::Lookup::TransactionId(transaction_id.into())
}

/// Declines of every kind are answers, not errors; the order stays pending and can be paid later; the
/// amount is the order's; a success marks the order paid; a second charge replays the first.
async fn declines_then_success(s: &Stack) {
    let user = 11;
    let order = s.place(user, 1999, 3).await;
    assert_eq!(order.total_cents, 5997);

    let now = mall_domain::card::YearMonth::now_utc();
    let (last_year, last_month) =
        if now.month == 1 { (now.year - 1, 12) } else { (now.year, i32::from(now.month) - 1) };
    let cases = [
        (card("4111 1111 1111 1112"), pb::DeclineReason::InvalidNumber),
        (card("41111111111"), pb::DeclineReason::InvalidNumber),
        (pb::CreditCard { cvv: "12".into(), ..card(GOOD_CARD) }, pb::DeclineReason::InvalidCvv),
        (pb::CreditCard { expiration_month: 13, ..card(GOOD_CARD) }, pb::DeclineReason::InvalidExpiry),
        (pb::CreditCard { expiration_year: 99, ..card(GOOD_CARD) }, pb::DeclineReason::InvalidExpiry),
        (
            pb::CreditCard { expiration_year: last_year, expiration_month: last_month, ..card(GOOD_CARD) },
            pb::DeclineReason::Expired,
        ),
        (card(DECLINED_TEST_CARD), pb::DeclineReason::ProcessorDeclined),
    ];
    let mut declined_ids = Vec::new();
    for (card, reason) in cases {
        let answer = s.charge(user, &order.order_id, card, "").await.unwrap();
        let payment = answer.payment.unwrap();
        assert_eq!(payment.status(), pb::PaymentStatus::Declined, "{reason:?}");
        assert_eq!(payment.decline_reason(), reason);
        assert!(!answer.replayed);
        assert_eq!(payment.amount_cents, 5997);
        assert_eq!(payment.order_id, order.order_id);
        assert_eq!(payment.user_id, user);
        assert_eq!(s.get_order(user, &order.order_id).await.status(), order_pb::OrderStatus::Pending);
        declined_ids.push(payment.transaction_id);
    }
    let test_card = s.get_payment(user, by_transaction(declined_ids.last().unwrap())).await.unwrap();
    assert_eq!((test_card.card_last4.as_str(), test_card.card_brand.as_str()), ("0002", "visa"));
    assert_eq!(s.count("status = 'declined'", &order.order_id).await, 7, "every decline is recorded");
    // Before any success, GetPayment by order is the latest attempt.
    let latest = s.get_payment(user, by_order(&order.order_id)).await.unwrap();
    assert_eq!(&latest.transaction_id, declined_ids.last().unwrap());

    // A valid card: the amount is the order's total, and the order is now PAID with this transaction.
    let mut client_card = card(GOOD_CARD);
    client_card.expiration_year = now.year;
    client_card.expiration_month = i32::from(now.month);
    let answer = s.charge(user, &order.order_id, client_card, "").await.unwrap();
    let paid = answer.payment.unwrap();
    assert!(!answer.replayed);
    assert_eq!(paid.status(), pb::PaymentStatus::Succeeded);
    assert_eq!(paid.decline_reason(), pb::DeclineReason::Unspecified);
    assert_eq!(paid.amount_cents, 5997);
    assert_eq!((paid.card_last4.as_str(), paid.card_brand.as_str()), ("1111", "visa"));
    assert!(uuid::Uuid::parse_str(&paid.transaction_id).unwrap().get_version_num() == 7);
    let after = s.get_order(user, &order.order_id).await;
    assert_eq!(after.status(), order_pb::OrderStatus::Paid);
    assert_eq!(after.transaction_id, paid.transaction_id);

    // Charging again, whatever the card (even a bad one), replays the success.
    for again in [card("5555 5555 5555 4444"), card("1234")] {
        let answer = s.charge(user, &order.order_id, again, "").await.unwrap();
        assert!(answer.replayed);
        assert_eq!(answer.payment.unwrap(), paid);
    }
    assert_eq!(s.count("status = 'succeeded'", &order.order_id).await, 1);
    assert_eq!(s.get_payment(user, by_order(&order.order_id)).await.unwrap(), paid);
    assert_eq!(s.get_payment(user, by_transaction(&paid.transaction_id)).await.unwrap(), paid);
}

/// NOT_FOUND for another user's order and payments; FAILED_PRECONDITION for a cancelled order;
/// INVALID_ARGUMENT for incomplete requests.
async fn refusals(s: &Stack) {
    let (owner, other) = (21, 22);
    let order = s.place(owner, 500, 1).await;
    let e = s.charge(other, &order.order_id, card(GOOD_CARD), "").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = s.charge(owner, "no-such-order", card(GOOD_CARD), "").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(s.count("1 = 1", &order.order_id).await, 0, "nothing recorded for a refused call");

    let paid = s.charge(owner, &order.order_id, card(GOOD_CARD), "").await.unwrap().payment.unwrap();
    let e = s.get_payment(other, by_transaction(&paid.transaction_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s.get_payment(other, by_order(&order.order_id)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s.charge(other, &order.order_id, card(GOOD_CARD), "").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "another user's paid order is still NOT_FOUND");
    let e = s.get_payment(owner, by_transaction("0190c1d2-0000-7000-8000-000000000000")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let cancelled = s.place(owner, 700, 1).await;
    let request = order_pb::CancelOrderRequest { user_id: owner, order_id: cancelled.order_id.clone() };
    s.order.clone().cancel_order(request).await.unwrap();
    let e = s.charge(owner, &cancelled.order_id, card(GOOD_CARD), "").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("cancelled"), "{}", e.message());
    assert_eq!(s.count("1 = 1", &cancelled.order_id).await, 0);

    let mut client = s.payment.clone();
    let bad = [
        pb::ChargeRequest {
            order_id: String::new(),
            user_id: owner,
            credit_card: Some(card(GOOD_CARD)),
            ..Default::default()
        },
        pb::ChargeRequest {
            order_id: order.order_id.clone(),
            user_id: 0,
            credit_card: Some(card(GOOD_CARD)),
            ..Default::default()
        },
        pb::ChargeRequest {
            order_id: order.order_id.clone(),
            user_id: owner,
            credit_card: None,
            ..Default::default()
        },
    ];
    for request in bad {
        assert_eq!(client.charge(request).await.unwrap_err().code(), Code::InvalidArgument);
    }
    let e = client.get_payment(pb::GetPaymentRequest { user_id: owner, lookup: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .get_payment(pb::GetPaymentRequest { user_id: 0, lookup: Some(by_order("x")) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// The same key for the same order answers the first attempt; for another order it is ALREADY_EXISTS.
async fn idempotency_keys(s: &Stack) {
    let user = 31;
    let order = s.place(user, 1200, 1).await;
    let first = s.charge(user, &order.order_id, card(DECLINED_TEST_CARD), "key-1").await.unwrap();
    assert!(!first.replayed);
    let again = s.charge(user, &order.order_id, card(GOOD_CARD), "key-1").await.unwrap();
    assert!(again.replayed, "the key's first attempt, without asking the processor");
    assert_eq!(again.payment, first.payment);
    assert_eq!(s.get_order(user, &order.order_id).await.status(), order_pb::OrderStatus::Pending);

    let other = s.place(user, 1300, 1).await;
    let e = s.charge(user, &other.order_id, card(GOOD_CARD), "key-1").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // The same key string of another user is another key.
    let theirs = s.place(32, 100, 1).await;
    let answer = s.charge(32, &theirs.order_id, card(GOOD_CARD), "key-1").await.unwrap();
    assert_eq!(answer.payment.unwrap().status(), pb::PaymentStatus::Succeeded);

    // A new key pays; the first key then answers the success of its order.
    let paid = s.charge(user, &order.order_id, card(GOOD_CARD), "key-2").await.unwrap();
    assert_eq!(paid.payment.as_ref().unwrap().status(), pb::PaymentStatus::Succeeded);
    let replay = s.charge(user, &order.order_id, card(GOOD_CARD), "key-1").await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.payment, paid.payment);
}

/// Ten concurrent charges of one order: exactly one SUCCEEDED row, and every caller that got an
/// answer got that payment.
async fn concurrent_charges(s: &Stack) {
    let user = 41;
    let order = s.place(user, 4200, 1).await;
    let calls = (0..10).map(|i| {
        let key = if i % 2 == 0 { String::new() } else { format!("concurrent-{i}") };
        let order_id = order.order_id.clone();
        async move { s.charge(user, &order_id, card(GOOD_CARD), &key).await }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(s.count("status = 'succeeded'", &order.order_id).await, 1);
    assert_eq!(s.count("1 = 1", &order.order_id).await, 1, "only one attempt ever reached the processor");
    let paid = s.get_payment(user, by_order(&order.order_id)).await.unwrap();
    let mut answered = 0;
    for result in results {
        match result {
            Ok(answer) => {
                answered += 1;
                assert_eq!(answer.payment.unwrap(), paid);
            }
            Err(e) => assert_eq!(e.code(), Code::Aborted, "only a clean 'in progress' error: {e:?}"),
        }
    }
    assert!(answered >= 1);
    let after = s.get_order(user, &order.order_id).await;
    assert_eq!((after.status(), after.transaction_id), (order_pb::OrderStatus::Paid, paid.transaction_id));
}

/// The stored row keeps the last four digits and the brand; no column of any row holds the number.
async fn nothing_secret_is_stored(s: &Stack) {
    let user = 51;
    let order = s.place(user, 999, 1).await;
    s.charge(user, &order.order_id, card("4111-1111-1111-1111"), "secret-key").await.unwrap();
    let declined = s.place(user, 999, 1).await;
    s.charge(user, &declined.order_id, card(DECLINED_TEST_CARD), "").await.unwrap();
    let (last4, brand): (String, String) =
        sqlx::query_as("SELECT card_last4, card_brand FROM payments WHERE order_id = ?")
            .bind(&order.order_id)
            .fetch_one(s.payment_db.pool())
            .await
            .unwrap();
    assert_eq!((last4.as_str(), brand.as_str()), ("1111", "visa"));

    let columns_sql = match s.payment_db.backend() {
        Backend::Sqlite => "SELECT name FROM pragma_table_info('payments')",
        Backend::MySql => {
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = 'payments'"
        }
    };
    let columns: Vec<String> = sqlx::query_scalar(columns_sql).fetch_all(s.payment_db.pool()).await.unwrap();
    assert!(columns.len() >= 13, "{columns:?}");
    let mut seen = 0;
    for column in &columns {
        assert!(column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{column}");
        let sql = format!("SELECT COALESCE(CAST({column} AS CHAR), '') FROM payments");
        let values: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(s.payment_db.pool()).await.unwrap();
        for value in values {
            seen += 1;
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            for secret in [GOOD_DIGITS, DECLINED_TEST_CARD] {
                assert!(!digits.contains(secret), "column {column} holds a card number: {value}");
            }
            assert!(
                !value.contains("987") || column.contains("id") || column.contains("_at"),
                "{column}: {value}"
            );
        }
    }
    assert!(seen >= 2 * 13);
}

async fn run(kind: Kind, scenario: impl AsyncFnOnce(&Stack)) {
    let Some(stack) = Stack::start(kind, Arc::new(BuiltInProcessor)).await else { return };
    scenario(&stack).await;
    stack.finish().await;
}

mall_testkit::on_both_backends!(
    super::run;
    declines_then_success,
    refusals,
    idempotency_keys,
    concurrent_charges,
    nothing_secret_is_stored,
);

/// A processor that holds every charge until the test lets it go, so the test can act in between.
#[derive(Default)]
struct GatedProcessor {
    entered: Notify,
    release: Notify,
}

#[tonic::async_trait]
impl CardProcessor for GatedProcessor {
    async fn authorize(
        &self,
        charge: &ProcessorCharge<'_>,
    ) -> Result<ProcessorDecision, ProcessorUnavailable> {
        self.entered.notify_one();
        self.release.notified().await;
        BuiltInProcessor.authorize(charge).await
    }

    async fn void(&self, _transaction_id: &str) -> Result<(), ProcessorUnavailable> {
        Ok(())
    }
}

/// The order is cancelled while the processor approves: the charge is voided and the call fails with
/// FAILED_PRECONDITION; the order stays cancelled.
async fn cancelled_while_charging(kind: Kind) {
    let gate = Arc::new(GatedProcessor::default());
    let Some(s) = Stack::start(kind, gate.clone()).await else { return };
    let user = 61;
    let order = s.place(user, 800, 1).await;
    let charging = {
        let (payment, order_id) = (s.payment.clone(), order.order_id.clone());
        tokio::spawn(async move {
            let request = pb::ChargeRequest {
                order_id,
                user_id: user,
                credit_card: Some(card(GOOD_CARD)),
                idempotency_key: String::new(),
            };
            payment.clone().charge(request).await
        })
    };
    gate.entered.notified().await;
    let request = order_pb::CancelOrderRequest { user_id: user, order_id: order.order_id.clone() };
    s.order.clone().cancel_order(request).await.unwrap();
    gate.release.notify_one();
    let e = charging.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("voided"), "{}", e.message());
    let voided = s.get_payment(user, by_order(&order.order_id)).await.unwrap();
    assert_eq!(voided.status(), pb::PaymentStatus::Voided);
    assert_eq!(s.count("status = 'succeeded'", &order.order_id).await, 0);
    assert_eq!(s.get_order(user, &order.order_id).await.status(), order_pb::OrderStatus::Cancelled);
    s.finish().await;
}

/// The order service goes away between the approval and MarkPaid: the payment stays SUCCEEDED, the
/// call answers UNAVAILABLE; once the order service is back, the sweep marks the order paid, and a
/// retry of the charge replays the same payment.
async fn order_service_down_after_approval(kind: Kind) {
    let gate = Arc::new(GatedProcessor::default());
    let Some(mut s) = Stack::start(kind, gate.clone()).await else { return };
    let user = 71;
    let order = s.place(user, 1500, 2).await;
    let charging = {
        let (payment, order_id) = (s.payment.clone(), order.order_id.clone());
        tokio::spawn(async move {
            let request = pb::ChargeRequest {
                order_id,
                user_id: user,
                credit_card: Some(card(GOOD_CARD)),
                idempotency_key: String::new(),
            };
            payment.clone().charge(request).await
        })
    };
    gate.entered.notified().await;
    s.order_stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.release.notify_one();
    let e = charging.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let kept = s.get_payment(user, by_order(&order.order_id)).await.unwrap();
    assert_eq!(kept.status(), pb::PaymentStatus::Succeeded);
    assert_eq!(kept.amount_cents, 3000);

    // The order service comes back on the same address.
    let listener = mall_runtime::bind(&s.order_addr.to_string()).await.unwrap();
    s.order_stop = s.stop.child_token();
    mall_order::startup(
        mall_order::Config::default(),
        s.order_db.clone(),
        s.product_channel.clone(),
        mall_runtime::Access::unchecked(),
        listener,
        s.order_stop.clone(),
    )
    .await
    .unwrap();
    let pending = s.get_order(user, &order.order_id).await;
    assert_eq!(pending.status(), order_pb::OrderStatus::Pending, "not paid while the order service was down");

    // The background sweep confirms it (run here directly, as if its time had come).
    let sweeper = Payments::new(s.payment_db.clone(), s.order_channel.clone(), Arc::new(BuiltInProcessor));
    sweeper.sweep(mall_storage::now_unix() + 3600).await.unwrap();
    let paid = s.get_order(user, &order.order_id).await;
    assert_eq!(
        (paid.status(), paid.transaction_id.as_str()),
        (order_pb::OrderStatus::Paid, kept.transaction_id.as_str())
    );

    // A retry replays the same payment without asking the processor (the gate would block it).
    let retry =
        tokio::time::timeout(Duration::from_secs(10), s.charge(user, &order.order_id, card(GOOD_CARD), ""))
            .await
            .expect("a replay does not ask the processor")
            .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.payment.unwrap(), kept);
    assert_eq!(s.count("1 = 1", &order.order_id).await, 1);
    s.finish().await;
}

/// The processor does not answer within the caller's budget: the payment service stops waiting for it
/// when the caller's deadline passes (not after its own 30 s), voids the charge and keeps the order
/// pending; the caller gets DEADLINE_EXCEEDED within its budget.
async fn processor_slower_than_the_budget(kind: Kind) {
    let gate = Arc::new(GatedProcessor::default());
    let Some(s) = Stack::start(kind, gate.clone()).await else { return };
    let user = 81;
    let order = s.place(user, 700, 1).await;
    let budget = tokio::time::Instant::now() + Duration::from_millis(500);
    let charge = mall_runtime::with_deadline(budget, s.charge(user, &order.order_id, card(GOOD_CARD), ""));
    let e = tokio::time::timeout(Duration::from_secs(5), charge)
        .await
        .expect("the call ends with its budget")
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let voided = tokio::time::timeout(Duration::from_secs(5), async {
        while s.count("status = 'voided'", &order.order_id).await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    voided.await.expect("the charge is voided once the caller's deadline has passed");
    assert_eq!(s.count("status <> 'voided'", &order.order_id).await, 0);
    assert_eq!(s.get_order(user, &order.order_id).await.status(), order_pb::OrderStatus::Pending);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_slower_than_the_budget_on_sqlite() {
    processor_slower_than_the_budget(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_slower_than_the_budget_on_mariadb() {
    processor_slower_than_the_budget(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_charging_on_sqlite() {
    cancelled_while_charging(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_charging_on_mariadb() {
    cancelled_while_charging(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_down_after_approval_on_sqlite() {
    order_service_down_after_approval(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_down_after_approval_on_mariadb() {
    order_service_down_after_approval(Kind::Mariadb).await;
}

/// An order past its expires_at (not yet cancelled by the order service's sweep) cannot be charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_order_on_sqlite() {
    let config =
        mall_order::Config { unpaid_ttl: Duration::from_secs(1), sweep_interval: Duration::from_secs(3600) };
    let Some(s) = Stack::start_with(Kind::Sqlite, Arc::new(BuiltInProcessor), config).await else { return };
    let user = 81;
    let order = s.place(user, 100, 1).await;
    while mall_storage::now_unix() <= order.expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.get_order(user, &order.order_id).await.status(), order_pb::OrderStatus::Pending);
    let e = s.charge(user, &order.order_id, card(GOOD_CARD), "").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "order has expired"));
    assert_eq!(s.count("1 = 1", &order.order_id).await, 0);
    s.finish().await;
}
