//! The cart service over real gRPC, with a real product service beside it: on SQLite always, and on
//! MariaDB when configured (always in CI), the product cache then on Redis if that is configured too.

use mall_proto::cart::v1 as pb;
use mall_proto::cart::v1::cart_service_client::CartServiceClient;
use mall_proto::product::v1 as product;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Cache, Db};
use mall_testkit::{Backend, TestDb};
use tonic::Code;

/// A cart service and the product service it asks, each on its own database.
struct Stack {
    cart: CartServiceClient<PeerChannel>,
    catalog: ProductServiceClient<PeerChannel>,
    cart_db: Db,
    dbs: Vec<TestDb>,
    stop: CancellationToken,
}

async fn test_db(backend: Backend, migrations: &mall_storage::Migrations) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb::sqlite(migrations).await),
        Backend::Mariadb => TestDb::mariadb(migrations).await,
    }
}

impl Stack {
    /// `None` when MariaDB is not configured (never in CI).
    async fn start(backend: Backend) -> Option<Stack> {
        let cart_db = test_db(backend, &crate::migrations()).await?;
        let product_db = test_db(backend, &mall_product::migrations()).await?;
        let cache = match backend {
            Backend::Mariadb => mall_testkit::redis_cache().await,
            Backend::Sqlite => None,
        };
        let cache = cache.unwrap_or_else(|| Cache::memory(&mall_testkit::unique_name("t")));
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
        let product = mall_runtime::channel(&product.addr.to_string()).unwrap();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let cart = crate::startup(
            cart_db.db.clone(),
            product.clone(),
            mall_runtime::Access::unchecked(),
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        let cart = CartServiceClient::new(mall_runtime::channel(&cart.addr.to_string()).unwrap());
        Some(Stack {
            cart,
            catalog: ProductServiceClient::new(product),
            cart_db: cart_db.db.clone(),
            dbs: vec![cart_db, product_db],
            stop,
        })
    }

    async fn finish(self) {
        self.stop.cancel();
        for db in self.dbs {
            db.drop_database().await;
        }
    }

    async fn product(&self, name: &str, price_cents: i64) -> i64 {
        let request = product::CreateProductRequest {
            name: name.into(),
            description: format!("{name} for tests"),
            price_cents,
            stock: 10,
            ..Default::default()
        };
        let created = self.catalog.clone().create_product(request).await.unwrap().into_inner();
        created.product.unwrap().product_id
    }

    async fn add(&self, user_id: i64, product_id: i64, quantity: i64) -> Result<pb::Cart, tonic::Status> {
        let request = pb::AddItemRequest { user_id, product_id, quantity };
        Ok(self.cart.clone().add_item(request).await?.into_inner().cart.unwrap())
    }

    async fn set(&self, user_id: i64, product_id: i64, quantity: i64) -> Result<pb::Cart, tonic::Status> {
        let request = pb::SetItemRequest { user_id, product_id, quantity };
        Ok(self.cart.clone().set_item(request).await?.into_inner().cart.unwrap())
    }

    async fn remove(&self, user_id: i64, product_id: i64) -> Result<pb::Cart, tonic::Status> {
        let request = pb::RemoveItemRequest { user_id, product_id };
        Ok(self.cart.clone().remove_item(request).await?.into_inner().cart.unwrap())
    }

    async fn delete_product(&self, product_id: i64) {
        self.catalog.clone().delete_product(product::DeleteProductRequest { product_id }).await.unwrap();
    }

    async fn get(&self, user_id: i64) -> pb::Cart {
        self.cart.clone().get_cart(pb::GetCartRequest { user_id }).await.unwrap().into_inner().cart.unwrap()
    }
}

/// (product_id, quantity) of each line, in the cart's order.
fn lines(cart: &pb::Cart) -> Vec<(i64, i64)> {
    cart.items.iter().map(|i| (i.product_id, i.quantity)).collect()
}

async fn adds_up_and_keeps_lines_in_place(s: &Stack) {
    let (mug, pen) = (s.product("Mug", 1990).await, s.product("Pen", 250).await);
    let user = 101;
    assert_eq!(lines(&s.add(user, mug, 2).await.unwrap()), [(mug, 2)]);
    assert_eq!(lines(&s.add(user, pen, 1).await.unwrap()), [(mug, 2), (pen, 1)]);
    let cart = s.add(user, mug, 3).await.unwrap();
    assert_eq!(lines(&cart), [(mug, 5), (pen, 1)], "adding adds to the line, which keeps its place");
    assert_eq!(cart.user_id, user);
    assert_eq!(s.get(user).await, cart, "GetCart shows what AddItem returned");
}

async fn line_limits(s: &Stack) {
    let mug = s.product("Limit mug", 100).await;
    let user = 102;
    for quantity in [0, -1, 1000] {
        let e = s.add(user, mug, quantity).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "quantity {quantity}");
        assert!(e.message().contains("between 1 and 999"), "{}", e.message());
    }
    assert_eq!(lines(&s.add(user, mug, 999).await.unwrap()), [(mug, 999)], "999 in one go is fine");
    let e = s.add(user, mug, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("999"), "{}", e.message());
    assert_eq!(lines(&s.get(user).await), [(mug, 999)], "a refused add changes nothing");

    let user = 103;
    s.add(user, mug, 500).await.unwrap();
    assert_eq!(lines(&s.add(user, mug, 499).await.unwrap()), [(mug, 999)], "adding up to 999 is fine");
    let e = s.add(user, mug, 2).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("holds 999"), "{}", e.message());

    // Two concurrent additions that would overshoot together: exactly one wins.
    let user = 104;
    let (a, b) = tokio::join!(s.add(user, mug, 600), s.add(user, mug, 600));
    let codes = [a.as_ref().err().map(|e| e.code()), b.as_ref().err().map(|e| e.code())];
    assert!(codes.contains(&None) && codes.contains(&Some(Code::InvalidArgument)), "{a:?} {b:?}");
    assert_eq!(lines(&s.get(user).await), [(mug, 600)]);
}

async fn unknown_products_and_users(s: &Stack) {
    let e = s.add(105, 987_654_321, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    for malformed in [0, -5] {
        let e = s.add(105, malformed, 1).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "product {malformed}");
        assert_eq!(e.message(), format!("product_id must be positive, got {malformed}"));
    }
    let gone = s.product("Gone", 100).await;
    s.catalog.clone().delete_product(product::DeleteProductRequest { product_id: gone }).await.unwrap();
    let e = s.add(105, gone, 1).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, format!("product {gone} not found").as_str()));
    assert!(s.get(105).await.items.is_empty(), "nothing was added");

    let mug = s.product("Anyone's mug", 100).await;
    for user_id in [0, -1] {
        assert_eq!(s.add(user_id, mug, 1).await.unwrap_err().code(), Code::InvalidArgument);
        let e = s.cart.clone().get_cart(pb::GetCartRequest { user_id }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
}

async fn prices_in_cents_and_deleted_products(s: &Stack) {
    let user = 106;
    let (a, b, c) = (s.product("A", 1999).await, s.product("B", 1).await, s.product("C", 50_000).await);
    s.add(user, a, 3).await.unwrap();
    s.add(user, b, 7).await.unwrap();
    s.add(user, c, 2).await.unwrap();
    let cart = s.get(user).await;
    let priced: Vec<(&str, i64, i64, bool)> = cart
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.price_cents, i.line_total_cents, i.available))
        .collect();
    assert_eq!(priced, [("A", 1999, 5997, true), ("B", 1, 7, true), ("C", 50_000, 100_000, true)]);
    assert_eq!(cart.total_cents, 5997 + 7 + 100_000);

    // Today's price, not the price when it was added.
    let update = product::UpdateProductRequest { product_id: b, price_cents: Some(5), ..Default::default() };
    s.catalog.clone().update_product(update).await.unwrap();
    // Deleted after it was added: kept, shown unavailable, not totalled.
    s.catalog.clone().delete_product(product::DeleteProductRequest { product_id: c }).await.unwrap();
    let cart = s.get(user).await;
    assert_eq!(lines(&cart), [(a, 3), (b, 7), (c, 2)]);
    let gone = &cart.items[2];
    assert_eq!(
        (gone.available, gone.name.as_str(), gone.price_cents, gone.line_total_cents),
        (false, "", 0, 0)
    );
    assert_eq!((cart.items[1].price_cents, cart.items[1].line_total_cents), (5, 35));
    assert!(cart.items[0].available && cart.items[1].available);
    assert_eq!(cart.total_cents, 5997 + 35);
}

async fn empty_and_isolation(s: &Stack) {
    let (alice, bob, carol) = (107, 108, 109);
    let (x, y) = (s.product("X", 300).await, s.product("Y", 400).await);
    s.add(alice, x, 1).await.unwrap();
    s.add(bob, y, 2).await.unwrap();
    s.add(bob, x, 4).await.unwrap();
    assert_eq!(lines(&s.get(alice).await), [(x, 1)], "alice sees only her cart");
    assert_eq!(lines(&s.get(bob).await), [(y, 2), (x, 4)], "bob sees only his cart");
    let never = s.get(carol).await;
    let empty =
        |user_id| pb::Cart { user_id, items: vec![], total_cents: 0, version: crate::service::version(&[]) };
    assert_eq!(never, empty(carol), "no cart yet is empty");

    let emptied = s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id: bob }).await.unwrap();
    assert_eq!(emptied.into_inner().cart.unwrap(), empty(bob));
    assert!(s.get(bob).await.items.is_empty());
    assert_eq!(lines(&s.get(alice).await), [(x, 1)], "emptying bob's cart leaves alice's alone");
    s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id: bob }).await.expect("emptying twice is fine");
    assert_eq!(lines(&s.add(bob, x, 1).await.unwrap()), [(x, 1)], "an emptied cart starts afresh");
}

/// The version changes with the content, not with a read, and never comes back when the cart is
/// emptied and filled again with the same lines.
async fn the_version_follows_the_content(s: &Stack) {
    let user = 120;
    let (mug, pen) = (s.product("Version mug", 100).await, s.product("Version pen", 50).await);
    let first = s.add(user, mug, 1).await.unwrap().version;
    assert_eq!(s.get(user).await.version, first, "a read changes nothing");
    let with_pen = s.add(user, pen, 2).await.unwrap().version;
    assert_ne!(with_pen, first);
    let more_pens = s.set(user, pen, 3).await.unwrap().version;
    assert!(![&first, &with_pen].contains(&&more_pens));
    let back = s.remove(user, pen).await.unwrap().version;
    assert_eq!(back, first, "the same lines as at first: the same content");
    s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id: user }).await.unwrap();
    // The same single line as at first, in a cart filled again: a new version.
    let again = s.add(user, mug, 1).await.unwrap();
    assert_eq!(lines(&again), [(mug, 1)]);
    assert!(![&first, &with_pen, &more_pens].contains(&&again.version), "{}", again.version);
}

/// SetItem sets a line whatever it held: a new line goes last, a changed one keeps its place, 0
/// removes it; AddItem then adds to what was set.
async fn set_item_sets_and_zero_removes(s: &Stack) {
    let (mug, pen) = (s.product("Set mug", 1990).await, s.product("Set pen", 250).await);
    let user = 111;
    assert_eq!(lines(&s.set(user, mug, 3).await.unwrap()), [(mug, 3)], "a new line");
    s.add(user, pen, 2).await.unwrap();
    assert_eq!(lines(&s.set(user, mug, 1).await.unwrap()), [(mug, 1), (pen, 2)], "lowered in place");
    let cart = s.set(user, mug, 999).await.unwrap();
    assert_eq!(lines(&cart), [(mug, 999), (pen, 2)], "raised to 999 whatever it held");
    assert_eq!(cart.total_cents, 999 * 1990 + 2 * 250);
    assert_eq!(cart.user_id, user);

    let cart = s.set(user, mug, 0).await.unwrap();
    assert_eq!(lines(&cart), [(pen, 2)], "0 removes the line");
    assert_eq!(cart.total_cents, 500);
    assert_eq!(s.get(user).await, cart, "GetCart shows what SetItem returned");
    assert_eq!(lines(&s.set(user, mug, 0).await.unwrap()), [(pen, 2)], "0 for a line not there is fine");
    assert_eq!(lines(&s.set(user, mug, 4).await.unwrap()), [(pen, 2), (mug, 4)], "set again: last");
    assert_eq!(lines(&s.add(user, mug, 1).await.unwrap()), [(pen, 2), (mug, 5)], "adding adds to it");
    assert_eq!(lines(&s.set(user, pen, 2).await.unwrap()), [(pen, 2), (mug, 5)], "the same value: no change");
}

/// RemoveItem takes one line out, whether or not it is there, and only the caller's.
async fn remove_item_takes_one_line_out(s: &Stack) {
    let (mug, pen, lamp) =
        (s.product("Remove mug", 100).await, s.product("Remove pen", 20).await, s.product("Lamp", 5).await);
    let (user, other) = (112, 113);
    s.add(user, mug, 2).await.unwrap();
    s.add(user, pen, 1).await.unwrap();
    s.add(user, lamp, 3).await.unwrap();
    s.add(other, mug, 7).await.unwrap();

    let cart = s.remove(user, pen).await.unwrap();
    assert_eq!(lines(&cart), [(mug, 2), (lamp, 3)], "the others keep their places");
    assert_eq!(cart.total_cents, 200 + 15);
    assert_eq!(s.get(user).await, cart, "GetCart shows what RemoveItem returned");
    for missing in [pen, 987_654_321] {
        let cart = s.remove(user, missing).await.expect("removing a line that is not there is fine");
        assert_eq!(lines(&cart), [(mug, 2), (lamp, 3)], "product {missing}");
    }
    for malformed in [0, -3] {
        let e = s.remove(user, malformed).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "product {malformed}");
    }
    assert_eq!(lines(&s.remove(user, mug).await.unwrap()), [(lamp, 3)]);
    assert_eq!(lines(&s.get(other).await), [(mug, 7)], "another user's line of the product stays");

    // A product deleted after it was added: its line can still be taken out, either way, without
    // the product being found.
    s.add(user, pen, 1).await.unwrap();
    s.delete_product(lamp).await;
    s.delete_product(pen).await;
    assert_eq!(lines(&s.remove(user, lamp).await.unwrap()), [(pen, 1)]);
    assert!(s.set(user, pen, 0).await.unwrap().items.is_empty());

    for user_id in [0, -1] {
        let e = s.remove(user_id, mug).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "user {user_id}");
    }
}

/// SetItem's bounds (0 to 999) and its product check (only above 0), neither changing anything when
/// they refuse.
async fn set_item_limits_and_unknown_products(s: &Stack) {
    let mug = s.product("Bounded mug", 100).await;
    let user = 114;
    s.add(user, mug, 5).await.unwrap();
    for quantity in [-1, 1000, i64::MAX, i64::MIN] {
        let e = s.set(user, mug, quantity).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "quantity {quantity}");
        assert!(e.message().contains("between 0 and 999"), "{}", e.message());
    }
    assert_eq!(lines(&s.get(user).await), [(mug, 5)], "a refused set changes nothing");

    let e = s.set(user, 987_654_321, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    for malformed in [0, -5] {
        for quantity in [0, 1] {
            let e = s.set(user, malformed, quantity).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "product {malformed} x{quantity}");
        }
    }
    let gone = s.product("Gone for good", 100).await;
    s.delete_product(gone).await;
    let e = s.set(user, gone, 2).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, format!("product {gone} not found").as_str()));
    assert_eq!(lines(&s.get(user).await), [(mug, 5)], "nothing was set");

    for user_id in [0, -1] {
        assert_eq!(s.set(user_id, mug, 1).await.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(s.set(user_id, mug, 0).await.unwrap_err().code(), Code::InvalidArgument);
    }
}

/// Without the product service the cart cannot be priced: UNAVAILABLE, and nothing is added or set.
async fn product_service_down(s: &Stack) {
    let user = 110;
    let mug = s.product("Offline mug", 100).await;
    s.add(user, mug, 1).await.unwrap();
    let stop = CancellationToken::new();
    let unreachable = mall_runtime::channel("127.0.0.1:1").unwrap();
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let offline = crate::startup(
        s.cart_db.clone(),
        unreachable,
        mall_runtime::Access::unchecked(),
        listener,
        stop.clone(),
    )
    .await
    .unwrap();
    let mut offline = CartServiceClient::new(mall_runtime::channel(&offline.addr.to_string()).unwrap());
    let e = offline.get_cart(pb::GetCartRequest { user_id: user }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = offline
        .add_item(pb::AddItemRequest { user_id: user, product_id: mug, quantity: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = offline
        .set_item(pb::SetItemRequest { user_id: user, product_id: mug, quantity: 9 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(lines(&s.get(user).await), [(mug, 1)]);
    stop.cancel();
}

async fn scenario(backend: Backend, test: impl AsyncFnOnce(&Stack)) {
    let Some(stack) = Stack::start(backend).await else { return };
    test(&stack).await;
    stack.finish().await;
}

mall_testkit::on_both_backends!(
    super::scenario;
    adds_up_and_keeps_lines_in_place,
    line_limits,
    unknown_products_and_users,
    prices_in_cents_and_deleted_products,
    empty_and_isolation,
    the_version_follows_the_content,
    set_item_sets_and_zero_removes,
    remove_item_takes_one_line_out,
    set_item_limits_and_unknown_products,
    product_service_down,
);
