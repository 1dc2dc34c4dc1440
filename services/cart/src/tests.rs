//! The cart service over real gRPC, with a real product service beside it: on SQLite always, and on
//! MariaDB (product cache on Redis) when configured (always in CI).

use mall_proto::cart::v1 as pb;
use mall_proto::cart::v1::cart_service_client::CartServiceClient;
use mall_proto::product::v1 as product;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::CancellationToken;
use mall_storage::Cache;
use mall_testkit::TestDb;
use tonic::Code;
use tonic::transport::Channel;

/// A cart service and the product service it asks, each on its own database.
struct Stack {
    cart: CartServiceClient<Channel>,
    catalog: ProductServiceClient<Channel>,
    stop: CancellationToken,
}

impl Stack {
    async fn start(cart_db: &TestDb, product_db: &TestDb, cache: Cache) -> Stack {
        let stop = CancellationToken::new();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let product = mall_product::startup(
            mall_product::Config::default(),
            product_db.db.clone(),
            cache,
            listener,
            stop.clone(),
        )
        .await
        .unwrap();
        let product = mall_runtime::channel(&product.addr.to_string()).unwrap();
        let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
        let cart = crate::startup(cart_db.db.clone(), product.clone(), listener, stop.clone()).await.unwrap();
        let cart = CartServiceClient::new(mall_runtime::channel(&cart.addr.to_string()).unwrap());
        Stack { cart, catalog: ProductServiceClient::new(product), stop }
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
    for missing in [0, -5, 987_654_321] {
        let e = s.add(105, missing, 1).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "product {missing}");
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
    assert_eq!(never, pb::Cart { user_id: carol, items: vec![], total_cents: 0 }, "no cart yet is empty");

    let emptied = s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id: bob }).await.unwrap();
    assert_eq!(emptied.into_inner().cart.unwrap(), pb::Cart { user_id: bob, items: vec![], total_cents: 0 });
    assert!(s.get(bob).await.items.is_empty());
    assert_eq!(lines(&s.get(alice).await), [(x, 1)], "emptying bob's cart leaves alice's alone");
    s.cart.clone().empty_cart(pb::EmptyCartRequest { user_id: bob }).await.expect("emptying twice is fine");
    assert_eq!(lines(&s.add(bob, x, 1).await.unwrap()), [(x, 1)], "an emptied cart starts afresh");
}

async fn check_cart(cart_db: TestDb, product_db: TestDb, cache: Cache) {
    let s = Stack::start(&cart_db, &product_db, cache).await;
    adds_up_and_keeps_lines_in_place(&s).await;
    line_limits(&s).await;
    unknown_products_and_users(&s).await;
    prices_in_cents_and_deleted_products(&s).await;
    empty_and_isolation(&s).await;

    // Without the product service the cart cannot be priced: UNAVAILABLE, and nothing is added.
    let user = 110;
    let mug = s.product("Offline mug", 100).await;
    s.add(user, mug, 1).await.unwrap();
    let stop = CancellationToken::new();
    let unreachable = mall_runtime::channel("127.0.0.1:1").unwrap();
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let offline = crate::startup(cart_db.db.clone(), unreachable, listener, stop.clone()).await.unwrap();
    let mut offline = CartServiceClient::new(mall_runtime::channel(&offline.addr.to_string()).unwrap());
    let e = offline.get_cart(pb::GetCartRequest { user_id: user }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = offline
        .add_item(pb::AddItemRequest { user_id: user, product_id: mug, quantity: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(lines(&s.get(user).await), [(mug, 1)]);
    stop.cancel();

    s.stop.cancel();
    cart_db.drop_database().await;
    product_db.drop_database().await;
}

#[tokio::test]
async fn cart_on_sqlite() {
    let cart_db = TestDb::sqlite(&crate::migrations()).await;
    let product_db = TestDb::sqlite(&mall_product::migrations()).await;
    check_cart(cart_db, product_db, Cache::memory(&mall_testkit::unique_name("t"))).await;
}

#[tokio::test]
async fn cart_on_mariadb() {
    let Some(cart_db) = TestDb::mariadb(&crate::migrations()).await else { return };
    let Some(product_db) = TestDb::mariadb(&mall_product::migrations()).await else { return };
    let cache = match mall_testkit::redis_cache().await {
        Some(cache) => cache,
        None => Cache::memory(&mall_testkit::unique_name("t")),
    };
    check_cart(cart_db, product_db, cache).await;
}
