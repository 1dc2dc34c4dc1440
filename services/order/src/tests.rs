//! The order service over real gRPC, with a real product service holding the stock: on SQLite always,
//! and on MariaDB (product cache on Redis) when configured (always in CI).
//!
//! An order whose stock reservation is refused is removed (PlaceOrder keeps no order then, as the
//! contract says), so these tests expect it to be absent from the user's list.

use std::time::Duration;

use mall_proto::order::v1 as pb;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::product::v1 as product;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Cache, Db};
use mall_testkit::TestDb;
use tokio::task::JoinSet;
use tonic::Code;

use crate::input::NewOrder;
use crate::lifecycle::{Swept, sweep};
use crate::service::Orders;
use crate::stock::Stock;
use crate::{Config, store};

/// A product service, and an order service on its own database that calls it.
struct Stack {
    orders: OrderServiceClient<PeerChannel>,
    catalog: ProductServiceClient<PeerChannel>,
    product_channel: PeerChannel,
    db: Db,
    stop: CancellationToken,
}

impl Stack {
    async fn start(order_db: &Db, product_db: &Db, cache: Cache, config: Config) -> Stack {
        let stop = CancellationToken::new();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let product = mall_product::startup(
            mall_product::Config::default(),
            product_db.clone(),
            cache,
            mall_runtime::Access::unchecked(),
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        let product_channel = mall_runtime::channel(&product.addr.to_string()).unwrap();
        let orders = start_orders(order_db, product_channel.clone(), config, stop.clone()).await;
        Stack {
            orders,
            catalog: ProductServiceClient::new(product_channel.clone()),
            product_channel,
            db: order_db.clone(),
            stop,
        }
    }

    /// Another order service over the same database, with its own configuration.
    async fn order_service(&self, product: PeerChannel, config: Config) -> OrderServiceClient<PeerChannel> {
        start_orders(&self.db, product, config, self.stop.clone()).await
    }

    async fn product(&self, name: &str, price_cents: i64, stock: i64) -> i64 {
        let request = product::CreateProductRequest {
            name: name.into(),
            description: format!("{name}, for the order tests"),
            price_cents,
            stock,
            ..Default::default()
        };
        let created = self.catalog.clone().create_product(request).await.unwrap().into_inner();
        created.product.unwrap().product_id
    }

    async fn stock(&self, product_id: i64) -> i64 {
        let got = self.catalog.clone().get_product(product::GetProductRequest { product_id }).await.unwrap();
        got.into_inner().product.unwrap().stock
    }

    async fn place(&self, request: pb::PlaceOrderRequest) -> Result<pb::PlaceOrderResponse, tonic::Status> {
        Ok(self.orders.clone().place_order(request).await?.into_inner())
    }

    async fn get(&self, user_id: i64, order_id: &str) -> Result<pb::Order, tonic::Status> {
        let request = pb::GetOrderRequest { user_id, order_id: order_id.into() };
        Ok(self.orders.clone().get_order(request).await?.into_inner().order.unwrap())
    }

    async fn cancel(&self, user_id: i64, order_id: &str) -> Result<pb::Order, tonic::Status> {
        let request = pb::CancelOrderRequest { user_id, order_id: order_id.into() };
        Ok(self.orders.clone().cancel_order(request).await?.into_inner().order.unwrap())
    }

    async fn mark_paid(&self, order_id: &str, transaction_id: &str) -> Result<pb::Order, tonic::Status> {
        let request =
            pb::MarkPaidRequest { order_id: order_id.into(), transaction_id: transaction_id.into() };
        Ok(self.orders.clone().mark_paid(request).await?.into_inner().order.unwrap())
    }

    async fn list(
        &self,
        user_id: i64,
        page: i32,
        page_size: i32,
    ) -> Result<pb::ListOrdersResponse, tonic::Status> {
        let request = pb::ListOrdersRequest { user_id, page, page_size };
        Ok(self.orders.clone().list_orders(request).await?.into_inner())
    }

    async fn list_all(
        &self,
        page: i32,
        page_size: i32,
        status: Option<pb::OrderStatus>,
    ) -> Result<pb::ListAllOrdersResponse, tonic::Status> {
        let request = pb::ListAllOrdersRequest { page, page_size, status: status.map(Into::into) };
        Ok(self.orders.clone().list_all_orders(request).await?.into_inner())
    }

    async fn sweep(&self) -> Swept {
        sweep(&self.db, &Stock::new(self.product_channel.clone())).await.unwrap()
    }
}

async fn start_orders(
    db: &Db,
    product: PeerChannel,
    config: Config,
    stop: CancellationToken,
) -> OrderServiceClient<PeerChannel> {
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let served =
        crate::startup(config, db.clone(), product, mall_runtime::Access::unchecked(), listener, stop)
            .await
            .unwrap();
    OrderServiceClient::new(mall_runtime::channel(&served.addr.to_string()).unwrap())
}

fn address() -> pb::Address {
    pb::Address {
        street_address: "1 Main Street".into(),
        city: "Springfield".into(),
        state: "IL".into(),
        country: "US".into(),
        zip_code: "01234".into(),
    }
}

fn request(user_id: i64, items: &[(i64, i64)]) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        user_id,
        email: "buyer@example.com".into(),
        address: Some(address()),
        items: items.iter().map(|&(product_id, quantity)| pb::OrderLine { product_id, quantity }).collect(),
        idempotency_key: String::new(),
    }
}

fn keyed(user_id: i64, items: &[(i64, i64)], key: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest { idempotency_key: key.into(), ..request(user_id, items) }
}

fn status(order: &pb::Order) -> pb::OrderStatus {
    order.status()
}

async fn places_priced_by_the_catalog(s: &Stack) {
    let mug = s.product("Blue mug", 1250, 10).await;
    let pen = s.product("Pen", 99, 5).await;
    let user = 201;
    let placed = s.place(request(user, &[(pen, 3), (mug, 2), (mug, 1)])).await.unwrap();
    assert!(!placed.replayed);
    let order = placed.order.unwrap();
    let id = uuid::Uuid::parse_str(&order.order_id).expect("a UUID");
    assert_eq!(id.get_version_num(), 7, "a UUID v7");
    assert_eq!((order.user_id, status(&order)), (user, pb::OrderStatus::Pending));
    let items: Vec<(i64, &str, i64, i64, i64)> = order
        .items
        .iter()
        .map(|i| (i.product_id, i.name.as_str(), i.unit_price_cents, i.quantity, i.line_total_cents))
        .collect();
    // Lines of one product merged, ordered by product id, priced from the catalog.
    assert_eq!(items, [(mug, "Blue mug", 1250, 3, 3750), (pen, "Pen", 99, 3, 297)]);
    assert_eq!(order.total_cents, 3750 + 297);
    assert_eq!(order.email, "buyer@example.com");
    assert_eq!(order.address, Some(address()));
    assert_eq!(order.transaction_id, "");
    // Reserving its stock right after the insert updates it, moments later.
    assert!((0..=5).contains(&(order.updated_at - order.created_at)), "{order:?}");
    assert!((1800..=1801).contains(&(order.expires_at - order.created_at)), "30 minutes to pay");
    assert!((order.created_at - mall_storage::now_unix()).abs() <= 5);
    assert_eq!((s.stock(mug).await, s.stock(pen).await), (7, 2), "the stock is reserved");

    // The order keeps its copy whatever the catalog does later.
    let update = product::UpdateProductRequest {
        product_id: mug,
        name: Some("Red mug".into()),
        price_cents: Some(9999),
        ..Default::default()
    };
    s.catalog.clone().update_product(update).await.unwrap();
    let again = s.get(user, &order.order_id).await.unwrap();
    assert_eq!(again, order);
    let stored = store::find(&s.db, &order.order_id).await.unwrap().unwrap();
    assert!(stored.stock_reserved && !stored.release_pending);
    assert_eq!(stored.items[0].unit_price_cents, 1250, "the stored unit price is the product's");
}

async fn refuses_bad_requests(s: &Stack) {
    let mug = s.product("Plain mug", 500, 100).await;
    let user = 202;
    let invalid = |mut r: pb::PlaceOrderRequest, change: fn(&mut pb::PlaceOrderRequest)| {
        change(&mut r);
        r
    };
    let base = request(user, &[(mug, 1)]);
    let cases: Vec<(&str, pb::PlaceOrderRequest)> = vec![
        ("user_id", invalid(base.clone(), |r| r.user_id = 0)),
        ("email", invalid(base.clone(), |r| r.email = String::new())),
        ("email", invalid(base.clone(), |r| r.email = "not-an-email".into())),
        ("address", invalid(base.clone(), |r| r.address = None)),
        ("city", invalid(base.clone(), |r| r.address.as_mut().unwrap().city = "  ".into())),
        ("zip_code", invalid(base.clone(), |r| r.address.as_mut().unwrap().zip_code.clear())),
        (
            "street_address",
            invalid(base.clone(), |r| r.address.as_mut().unwrap().street_address = "x".repeat(201)),
        ),
        ("at least one item", invalid(base.clone(), |r| r.items.clear())),
        ("between 1 and 999", invalid(base.clone(), |r| r.items[0].quantity = 0)),
        ("between 1 and 999", invalid(base.clone(), |r| r.items[0].quantity = 1000)),
    ];
    for (what, r) in cases {
        let e = s.place(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains(what), "{what}: {}", e.message());
    }
    let mut no_state = base.clone();
    no_state.address.as_mut().unwrap().state.clear();
    s.place(no_state).await.expect("state may be empty");

    // Unknown or deleted products: FAILED_PRECONDITION naming the product; nothing kept.
    let gone = s.product("Discontinued", 100, 10).await;
    s.catalog.clone().delete_product(product::DeleteProductRequest { product_id: gone }).await.unwrap();
    for missing in [gone, 876_543_210] {
        let e = s.place(request(203, &[(mug, 1), (missing, 1)])).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains(&format!("product {missing}")), "{}", e.message());
    }
    // An id that cannot name a product is refused before anything is looked up.
    let e = s.place(request(203, &[(mug, 1), (0, 1)])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "product_id must be positive, got 0"));
    assert_eq!(s.list(203, 0, 0).await.unwrap().total, 0);
    assert_eq!(s.stock(mug).await, 99, "only the valid order above took stock");
}

async fn short_stock_reserves_nothing(s: &Stack) {
    let plenty = s.product("Plenty", 100, 50).await;
    let scarce = s.product("Scarce lamp", 4000, 2).await;
    let user = 204;
    let e = s.place(request(user, &[(plenty, 5), (scarce, 3)])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&format!("product {scarce}")), "{}", e.message());
    assert!(e.message().contains("Scarce lamp"), "{}", e.message());
    assert_eq!((s.stock(plenty).await, s.stock(scarce).await), (50, 2), "nothing reserved");
    let listed = s.list(user, 0, 0).await.unwrap();
    assert_eq!((listed.total, listed.items.len()), (0, 0), "no order is kept");
    // The same request succeeds once it fits.
    let ok = s.place(request(user, &[(plenty, 5), (scarce, 2)])).await.unwrap().order.unwrap();
    assert_eq!(status(&ok), pb::OrderStatus::Pending);
    assert_eq!((s.stock(plenty).await, s.stock(scarce).await), (45, 0));
}

async fn lists_newest_first_in_pages(s: &Stack) {
    let cup = s.product("Cup", 10, 100).await;
    let (user, other) = (205, 206);
    let mut ids = Vec::new();
    for quantity in 1..=5 {
        ids.push(s.place(request(user, &[(cup, quantity)])).await.unwrap().order.unwrap().order_id);
    }
    s.place(request(other, &[(cup, 1)])).await.unwrap();
    ids.reverse();
    let page = |p: &pb::ListOrdersResponse| p.items.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>();
    let first = s.list(user, 1, 2).await.unwrap();
    assert_eq!((first.page, first.page_size, first.total), (1, 2, 5));
    assert_eq!(page(&first), ids[0..2]);
    assert_eq!(page(&s.list(user, 2, 2).await.unwrap()), ids[2..4]);
    assert_eq!(page(&s.list(user, 3, 2).await.unwrap()), ids[4..5]);
    let beyond = s.list(user, 4, 2).await.unwrap();
    assert!(beyond.items.is_empty() && beyond.total == 5);
    let defaults = s.list(user, 0, 0).await.unwrap();
    assert_eq!((defaults.page, defaults.page_size), (1, 20));
    assert_eq!(page(&defaults), ids, "newest first, the user's orders only");
    let full = &defaults.items[4];
    assert_eq!((full.items.len(), full.items[0].quantity, full.total_cents), (1, 1, 10), "complete orders");
    assert_eq!(s.list(user, 1, 100).await.unwrap().items.len(), 5);
    for (page, page_size) in [(1, 101), (-1, 10), (1, -1)] {
        let e = s.list(user, page, page_size).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "page {page}, size {page_size}");
    }
    assert_eq!(s.list(0, 1, 10).await.unwrap_err().code(), Code::InvalidArgument);
}

/// The admin's list: every user's orders, newest first, in pages, optionally of one status. Runs on
/// databases of its own, so that it sees exactly the orders it placed.
async fn lists_all_orders_for_admins(s: &Stack) {
    let empty = s.list_all(0, 0, None).await.unwrap();
    assert_eq!((empty.items.len(), empty.page, empty.page_size, empty.total), (0, 1, 20, 0));

    let plate = s.product("Plate", 100, 100).await;
    let users = [401, 402, 403, 401, 402];
    let mut ids = Vec::new();
    for (quantity, user) in (1..).zip(users) {
        ids.push(s.place(request(user, &[(plate, quantity)])).await.unwrap().order.unwrap().order_id);
    }
    // A refused order is not kept, so not listed either.
    assert_eq!(s.place(request(404, &[(plate, 999)])).await.unwrap_err().code(), Code::FailedPrecondition);
    ids.reverse();
    let newest_first: Vec<i64> = users.iter().rev().copied().collect();
    let order_ids =
        |p: &pb::ListAllOrdersResponse| p.items.iter().map(|o| o.order_id.clone()).collect::<Vec<_>>();

    let all = s.list_all(0, 0, None).await.unwrap();
    assert_eq!((all.page, all.page_size, all.total), (1, 20, 5));
    assert_eq!(order_ids(&all), ids, "newest first, across users");
    assert_eq!(all.items.iter().map(|o| o.user_id).collect::<Vec<_>>(), newest_first);
    for (order, quantity) in all.items.iter().zip((1..=5).rev()) {
        assert_eq!(order, &s.get(order.user_id, &order.order_id).await.unwrap(), "complete orders");
        assert_eq!(
            (order.items.len(), order.items[0].quantity, order.total_cents),
            (1, quantity, 100 * quantity)
        );
    }

    // Pages.
    let first = s.list_all(1, 2, None).await.unwrap();
    assert_eq!((first.page, first.page_size, first.total), (1, 2, 5));
    assert_eq!(order_ids(&first), ids[0..2]);
    assert_eq!(order_ids(&s.list_all(2, 2, None).await.unwrap()), ids[2..4]);
    let last = s.list_all(3, 2, None).await.unwrap();
    assert_eq!((order_ids(&last), last.total), (ids[4..5].to_vec(), 5));
    let beyond = s.list_all(4, 2, None).await.unwrap();
    assert!(beyond.items.is_empty() && beyond.total == 5);
    assert_eq!(s.list_all(1, 100, None).await.unwrap().items.len(), 5);

    // By status.
    let paid = s.mark_paid(&ids[1], "tx-admin").await.unwrap();
    let cancelled = s.cancel(newest_first[3], &ids[3]).await.unwrap();
    let only = |status| async move { s.list_all(0, 0, Some(status)).await.unwrap() };
    let listed = only(pb::OrderStatus::Paid).await;
    assert_eq!((listed.items, listed.total), (vec![paid], 1));
    let listed = only(pb::OrderStatus::Cancelled).await;
    assert_eq!((listed.items, listed.total), (vec![cancelled], 1));
    let pending = [ids[0].clone(), ids[2].clone(), ids[4].clone()];
    let listed = only(pb::OrderStatus::Pending).await;
    assert_eq!((order_ids(&listed), listed.total), (pending.to_vec(), 3));
    assert!(listed.items.iter().all(|o| status(o) == pb::OrderStatus::Pending));
    let second = s.list_all(2, 2, Some(pb::OrderStatus::Pending)).await.unwrap();
    assert_eq!((order_ids(&second), second.total), (pending[2..].to_vec(), 3), "pages of a status");
    assert_eq!(s.list_all(0, 0, None).await.unwrap().total, 5, "every status without a filter");
    // The users' own lists are unchanged by all this.
    assert_eq!(s.list(401, 0, 0).await.unwrap().total, 2);

    // Refused: pages out of range (as in ListOrders), a status that is not one.
    for (page, page_size) in [(1, 101), (1, 1000), (-1, 10), (1, -1)] {
        let e = s.list_all(page, page_size, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "page {page}, size {page_size}");
        assert!(e.message().starts_with("page"), "{}", e.message());
    }
    for raw in [0, 42] {
        let request = pb::ListAllOrdersRequest { page: 1, page_size: 10, status: Some(raw) };
        let e = s.orders.clone().list_all_orders(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "status {raw}");
        assert!(e.message().contains("status"), "{}", e.message());
    }
}

async fn cancel_pay_and_ownership(s: &Stack) {
    let lamp = s.product("Desk lamp", 2500, 10).await;
    let (alice, bob) = (207, 208);
    let order = s.place(request(alice, &[(lamp, 4)])).await.unwrap().order.unwrap();
    let id = order.order_id.as_str();
    assert_eq!(s.stock(lamp).await, 6);

    // Another user's order is as unknown as a missing one.
    for e in [
        s.get(bob, id).await.unwrap_err(),
        s.cancel(bob, id).await.unwrap_err(),
        s.get(alice, "0190a0a0-0000-7000-8000-000000000000").await.unwrap_err(),
        s.cancel(alice, "no-such-order").await.unwrap_err(),
    ] {
        assert_eq!((e.code(), e.message()), (Code::NotFound, "order not found"));
    }
    assert_eq!(s.get(0, id).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(s.get(alice, "").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(status(&s.get(alice, id).await.unwrap()), pb::OrderStatus::Pending, "bob changed nothing");

    // Cancel: releases the stock; cancelling again returns it unchanged.
    let cancelled = s.cancel(alice, id).await.unwrap();
    assert_eq!(status(&cancelled), pb::OrderStatus::Cancelled);
    assert_eq!(s.stock(lamp).await, 10, "cancelling released the stock");
    assert_eq!(s.cancel(alice, id).await.unwrap(), cancelled);
    assert_eq!(s.stock(lamp).await, 10, "released once");
    assert_eq!(cancelled.expires_at, order.expires_at, "expires_at is kept");
    let e = s.mark_paid(id, "tx-cancelled").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a cancelled order cannot be paid");

    // Pay: idempotent per transaction; another transaction or a cancel is refused.
    let order = s.place(request(alice, &[(lamp, 1)])).await.unwrap().order.unwrap();
    let id = order.order_id.as_str();
    let paid = s.mark_paid(id, "tx-1").await.unwrap();
    assert_eq!((status(&paid), paid.transaction_id.as_str()), (pb::OrderStatus::Paid, "tx-1"));
    assert_eq!(s.mark_paid(id, "tx-1").await.unwrap(), paid, "the same transaction again is fine");
    assert_eq!(s.mark_paid(id, "").await.unwrap(), paid, "an admin's mark of a paid order changes nothing");
    let e = s.mark_paid(id, "tx-2").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = s.cancel(alice, id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a paid order cannot be cancelled");
    assert_eq!(s.get(alice, id).await.unwrap(), paid);
    assert_eq!(s.stock(lamp).await, 9, "a paid order keeps its stock");
    assert_eq!(s.mark_paid("no-such-order", "tx").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(s.mark_paid(" ", "tx").await.unwrap_err().code(), Code::InvalidArgument);

    // An admin may mark an order paid without a transaction.
    let order = s.place(request(alice, &[(lamp, 1)])).await.unwrap().order.unwrap();
    let paid = s.mark_paid(&order.order_id, "").await.unwrap();
    assert_eq!((status(&paid), paid.transaction_id.as_str()), (pb::OrderStatus::Paid, ""));
}

async fn idempotency(s: &Stack) {
    let kettle = s.product("Kettle", 3000, 20).await;
    let tea = s.product("Tea", 450, 20).await;
    let user = 209;
    let first = s.place(keyed(user, &[(kettle, 1), (tea, 2)], "key-1")).await.unwrap();
    assert!(!first.replayed);
    // The same content, lines given in another order and split: the first order, nothing reserved again.
    let again = s.place(keyed(user, &[(tea, 1), (kettle, 1), (tea, 1)], "key-1")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, first.order);
    assert_eq!((s.stock(kettle).await, s.stock(tea).await), (19, 18), "reserved once");

    let mut other_email = keyed(user, &[(kettle, 1), (tea, 2)], "key-1");
    other_email.email = "someone@example.com".into();
    let other_items = keyed(user, &[(kettle, 2), (tea, 2)], "key-1");
    let mut other_address = keyed(user, &[(kettle, 1), (tea, 2)], "key-1");
    other_address.address.as_mut().unwrap().zip_code = "99999".into();
    for r in [other_email, other_items, other_address] {
        assert_eq!(s.place(r).await.unwrap_err().code(), Code::AlreadyExists);
    }
    assert_eq!(s.list(user, 0, 0).await.unwrap().total, 1);

    // Keys are per user; no key means a new order each time.
    let theirs = s.place(keyed(210, &[(kettle, 1), (tea, 2)], "key-1")).await.unwrap();
    assert!(!theirs.replayed);
    assert_ne!(theirs.order.unwrap().order_id, first.order.as_ref().unwrap().order_id);
    let a = s.place(request(user, &[(tea, 1)])).await.unwrap().order.unwrap();
    let b = s.place(request(user, &[(tea, 1)])).await.unwrap().order.unwrap();
    assert_ne!(a.order_id, b.order_id);

    // Ten concurrent calls with one key: one order, stock reserved once.
    let user = 211;
    let mut calls = JoinSet::new();
    for _ in 0..10 {
        let mut orders = s.orders.clone();
        let r = keyed(user, &[(kettle, 2)], "burst");
        calls.spawn(async move { orders.place_order(r).await.map(|r| r.into_inner()) });
    }
    let results: Vec<pb::PlaceOrderResponse> =
        calls.join_all().await.into_iter().map(Result::unwrap).collect();
    let id = &results[0].order.as_ref().unwrap().order_id;
    assert!(results.iter().all(|r| &r.order.as_ref().unwrap().order_id == id), "one order for all");
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1, "placed once, replayed nine times");
    assert_eq!(s.list(user, 0, 0).await.unwrap().total, 1);
    assert_eq!(s.stock(kettle).await, 20 - 1 - 1 - 2, "the burst reserved 2 once");
    assert!(store::find(&s.db, id).await.unwrap().unwrap().stock_reserved);
}

async fn last_units_under_contention(s: &Stack) {
    let rare = s.product("Limited print", 15_000, 5).await;
    let mut calls = JoinSet::new();
    for user in 300..320 {
        let mut orders = s.orders.clone();
        calls.spawn(async move { orders.place_order(request(user, &[(rare, 1)])).await });
    }
    let results = calls.join_all().await;
    let placed: Vec<&pb::PlaceOrderResponse> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.get_ref()).collect();
    assert_eq!(placed.len(), 5, "exactly five orders got a unit");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(e.message().contains(&format!("product {rare}")), "{}", e.message());
        }
    }
    assert!(placed.iter().all(|r| status(r.order.as_ref().unwrap()) == pb::OrderStatus::Pending));
    let mut pending = 0;
    for user in 300..320 {
        let listed = s.list(user, 0, 0).await.unwrap();
        pending += listed.items.iter().filter(|o| status(o) == pb::OrderStatus::Pending).count();
        assert_eq!(listed.total as usize, listed.items.len());
    }
    assert_eq!(pending, 5, "the refused orders were not kept");
    assert_eq!(s.stock(rare).await, 0);
}

/// Crash and outage leftovers: a pending order whose reservation was never confirmed, and a cancelled
/// order whose release failed, are settled later.
async fn recovers_from_interruptions(s: &Stack) {
    let vase = s.product("Vase", 800, 10).await;
    let user = 212;
    let orders = Orders::new(s.db.clone(), Stock::new(s.product_channel.clone()), Duration::from_secs(1800));

    // As if the service died between writing the order and reserving its stock.
    let req = keyed(user, &[(vase, 2)], "crash");
    let new = NewOrder::parse(req.clone()).unwrap();
    let order = orders.priced(&new, new.request_hash()).await.unwrap();
    assert!(store::insert(&s.db, &order, new.key_hash().as_deref()).await.unwrap());
    assert_eq!(s.stock(vase).await, 10);
    // The client's retry finishes the reservation.
    let retried = s.place(req).await.unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.order.unwrap().order_id, order.order_id);
    assert_eq!(s.stock(vase).await, 8);
    assert!(store::find(&s.db, &order.order_id).await.unwrap().unwrap().stock_reserved);

    // The same leftover, paid before anyone retried: the stock is reserved before it counts as paid.
    let new = NewOrder::parse(request(user, &[(vase, 3)])).unwrap();
    let order = orders.priced(&new, new.request_hash()).await.unwrap();
    assert!(store::insert(&s.db, &order, None).await.unwrap());
    let paid = s.mark_paid(&order.order_id, "tx-late").await.unwrap();
    assert_eq!(status(&paid), pb::OrderStatus::Paid);
    assert_eq!(s.stock(vase).await, 5);

    // Product service down while cancelling: the order is cancelled, the release is owed and the
    // sweeper pays it.
    let order = s.place(request(user, &[(vase, 4)])).await.unwrap().order.unwrap();
    assert_eq!(s.stock(vase).await, 1);
    let offline = s.order_service(mall_runtime::channel("127.0.0.1:1").unwrap(), Config::default()).await;
    let cancel = pb::CancelOrderRequest { user_id: user, order_id: order.order_id.clone() };
    let e = offline.clone().cancel_order(cancel).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let stored = store::find(&s.db, &order.order_id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.release_pending), (mall_domain::OrderStatus::Cancelled, true));
    assert_eq!(s.stock(vase).await, 1);
    assert!(s.sweep().await.released >= 1);
    assert_eq!(s.stock(vase).await, 5, "the sweeper released it");
    assert!(!store::find(&s.db, &order.order_id).await.unwrap().unwrap().release_pending);

    // Placing needs the catalog: UNAVAILABLE, nothing written.
    let before = s.list(user, 0, 0).await.unwrap().total;
    let e = offline.clone().place_order(request(user, &[(vase, 1)])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(s.list(user, 0, 0).await.unwrap().total, before);
}

async fn unpaid_orders_expire(s: &Stack) {
    let clock = s.product("Clock", 1200, 10).await;
    let user = 213;
    let quick = Config { unpaid_ttl: Duration::from_secs(1), sweep_interval: Duration::from_secs(3600) };
    let quick = s.order_service(s.product_channel.clone(), quick).await;
    let order =
        quick.clone().place_order(request(user, &[(clock, 3)])).await.unwrap().into_inner().order.unwrap();
    assert!((1..=2).contains(&(order.expires_at - order.created_at)));
    let paid_in_time = quick.clone().place_order(request(user, &[(clock, 1)])).await.unwrap().into_inner();
    let paid_in_time = paid_in_time.order.unwrap().order_id;
    s.mark_paid(&paid_in_time, "tx-in-time").await.unwrap();
    assert_eq!(s.stock(clock).await, 6);
    assert_eq!(s.sweep().await.expired, 0, "not expired yet");

    while mall_storage::now_unix() < order.expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let swept = s.sweep().await;
    assert!(swept.expired >= 1 && swept.released >= 1, "{swept:?}");
    let expired = s.get(user, &order.order_id).await.unwrap();
    assert_eq!(status(&expired), pb::OrderStatus::Cancelled);
    assert_eq!(expired.expires_at, order.expires_at);
    assert_eq!(s.stock(clock).await, 9, "the expired order's stock is back; the paid one keeps its unit");
    assert_eq!(status(&s.get(user, &paid_in_time).await.unwrap()), pb::OrderStatus::Paid);
    assert_eq!(s.sweep().await, Swept::default(), "nothing left to do");

    // The background sweeper does the same on its own.
    let auto = Config { unpaid_ttl: Duration::from_secs(1), sweep_interval: Duration::from_millis(100) };
    let auto = s.order_service(s.product_channel.clone(), auto).await;
    let order =
        auto.clone().place_order(request(user, &[(clock, 2)])).await.unwrap().into_inner().order.unwrap();
    assert_eq!(s.stock(clock).await, 7);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&s.get(user, &order.order_id).await.unwrap()) != pb::OrderStatus::Cancelled {
        assert!(tokio::time::Instant::now() < deadline, "the background sweeper did not expire the order");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.stock(clock).await != 9 {
        assert!(tokio::time::Instant::now() < deadline, "the background sweeper did not release the stock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every scenario but the admin's list, in turn over the same databases.
async fn every_scenario(s: &Stack) {
    places_priced_by_the_catalog(s).await;
    refuses_bad_requests(s).await;
    short_stock_reserves_nothing(s).await;
    lists_newest_first_in_pages(s).await;
    cancel_pay_and_ownership(s).await;
    idempotency(s).await;
    last_units_under_contention(s).await;
    recovers_from_interruptions(s).await;
    unpaid_orders_expire(s).await;
}

/// Starts the stack over these (fresh) databases, runs `scenarios`, stops it and drops the databases.
async fn check_orders(
    order_db: TestDb,
    product_db: TestDb,
    cache: Cache,
    scenarios: impl AsyncFnOnce(&Stack),
) {
    let s = Stack::start(&order_db.db, &product_db.db, cache, Config::default()).await;
    scenarios(&s).await;
    s.stop.cancel();
    order_db.drop_database().await;
    product_db.drop_database().await;
}

async fn on_sqlite(scenarios: impl AsyncFnOnce(&Stack)) {
    let order_db = TestDb::sqlite(&crate::migrations()).await;
    let product_db = TestDb::sqlite(&mall_product::migrations()).await;
    check_orders(order_db, product_db, Cache::memory(&mall_testkit::unique_name("t")), scenarios).await;
}

/// Returns early when MariaDB is not configured (never in CI).
async fn on_mariadb(scenarios: impl AsyncFnOnce(&Stack)) {
    let Some(order_db) = TestDb::mariadb(&crate::migrations()).await else { return };
    let Some(product_db) = TestDb::mariadb(&mall_product::migrations()).await else { return };
    let cache = match mall_testkit::redis_cache().await {
        Some(cache) => cache,
        None => Cache::memory(&mall_testkit::unique_name("t")),
    };
    check_orders(order_db, product_db, cache, scenarios).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_on_sqlite() {
    on_sqlite(every_scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_on_mariadb() {
    on_mariadb(every_scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_orders_on_sqlite() {
    on_sqlite(lists_all_orders_for_admins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_orders_on_mariadb() {
    on_mariadb(lists_all_orders_for_admins).await;
}
