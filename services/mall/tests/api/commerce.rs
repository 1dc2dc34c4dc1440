//! The seed's whole flow and every guarantee of "Checkout, precisely", through the gateway.

use serde_json::{Value, json};

use crate::helpers::*;

pub const GOOD_CARD: &str = "4111 1111 1111 1111";
pub const DECLINED_CARD: &str = "4000000000000002";

pub fn card(number: &str) -> Value {
    json!({ "credit_card_number": number, "credit_card_cvv": "123",
            "credit_card_expiration_year": 2099, "credit_card_expiration_month": 12 })
}

pub fn address() -> Value {
    json!({ "street_address": "1 Main St", "city": "Springfield", "state": "OR", "country": "US", "zip_code": "97477" })
}

pub fn checkout_body(card_number: &str) -> Value {
    json!({ "firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com",
            "address": address(), "credit_card": card(card_number) })
}

async fn admin(app: &TestApp) -> String {
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.data()["token"].as_str().unwrap().to_owned()
}

/// Creates a product as admin: its id.
pub async fn product(app: &TestApp, name: &str, price: &str, stock: i64) -> i64 {
    let token = admin(app).await;
    let reply = app
        .post_json("/product/create", &json!({ "name": name, "price": price, "stock": stock }), Some(&token))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.data()["id"].as_i64().unwrap()
}

async fn stock(app: &TestApp, id: i64) -> i64 {
    app.get(&format!("/products/{id}"), None).await.data()["stock"].as_i64().unwrap()
}

async fn add(app: &TestApp, token: &str, product_id: i64, quantity: i64) -> Reply {
    app.post_json("/cart/additem", &json!({ "product_id": product_id, "quantity": quantity }), Some(token))
        .await
}

async fn set(app: &TestApp, token: &str, product_id: i64, quantity: i64) -> Reply {
    app.post_json("/cart/setitem", &json!({ "product_id": product_id, "quantity": quantity }), Some(token))
        .await
}

async fn remove(app: &TestApp, token: &str, product_id: i64) -> Reply {
    app.post_json("/cart/removeitem", &json!({ "product_id": product_id }), Some(token)).await
}

/// (product_id, quantity) of each line of a cart in a reply.
#[track_caller]
fn lines(reply: &Reply) -> Vec<(i64, i64)> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let items = reply.data()["items"].as_array().unwrap_or_else(|| panic!("no items: {}", reply.body));
    items.iter().map(|i| (i["product_id"].as_i64().unwrap(), i["quantity"].as_i64().unwrap())).collect()
}

async fn seed_flow(app: &TestApp) {
    let mug = product(app, "Mug", "12.50", 10).await;
    let tea = product(app, "Tea", "3.99", 5).await;
    let (user_id, token) = app.customer().await;

    // The old clients' form fields, with their own user id (ignored because it matches).
    let reply = app
        .client
        .post(format!("{}/cart/additem", app.url))
        .bearer_auth(&token)
        .form(&[("product_id", mug.to_string()), ("quantity", "2".into()), ("user_id", user_id.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(add(app, &token, tea, 3).await.status, 200);
    let cart = app.get("/cart", Some(&token)).await;
    assert_eq!(cart.data()["total_cents"], 2 * 1250 + 3 * 399, "{}", cart.body);
    assert_eq!(cart.data()["total"], "36.97");

    let done = app.post_json("/checkout", &checkout_body(GOOD_CARD), Some(&token)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.data()["total_cents"], 3697);
    assert!(done.data()["transaction_id"].as_str().is_some_and(|t| !t.is_empty()));
    let order_id = done.data()["order_id"].as_str().unwrap().to_owned();

    let orders = app.get("/orders", Some(&token)).await;
    assert_eq!(orders.data()["total"], 1, "{}", orders.body);
    let order = &orders.data()["items"][0];
    assert_eq!(order["order_id"], order_id);
    assert_eq!(order["status"], "paid");
    assert_eq!(order["total_cents"], 3697);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["address"]["zip_code"], "97477");
    let listed =
        app.post_json("/order/listorder", &json!({ "page": 1, "page_size": 10 }), Some(&token)).await;
    assert_eq!(listed.data()["items"][0]["order_id"], order_id);

    assert_eq!(
        app.get("/cart", Some(&token)).await.data()["items"].as_array().unwrap().len(),
        0,
        "cart emptied"
    );
    assert_eq!((stock(app, mug).await, stock(app, tea).await), (8, 2));
}

#[tokio::test]
async fn the_seed_flow_on_sqlite() {
    let app = spawn_app().await;
    seed_flow(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn the_seed_flow_on_mariadb_and_redis() {
    let Some(app) = spawn_app_on(Backend::Servers).await else { return };
    seed_flow(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn checkout_failures_leave_nothing_behind() {
    let app = spawn_app().await;
    let scarce = product(&app, "Scarce", "5.00", 1).await;
    let plenty = product(&app, "Plenty", "1.00", 50).await;
    let (_, token) = app.customer().await;

    // Empty cart.
    app.post_json("/checkout", &checkout_body(GOOD_CARD), Some(&token)).await.assert_error(400, 40001);

    // Not enough stock: 409 naming the product, nothing reserved.
    assert_eq!(add(&app, &token, plenty, 1).await.status, 200);
    assert_eq!(add(&app, &token, scarce, 2).await.status, 200);
    let short = app.post_json("/checkout", &checkout_body(GOOD_CARD), Some(&token)).await;
    short.assert_error(409, 40901);
    assert!(short.body["msg"].as_str().unwrap().contains("Scarce"), "{}", short.body);
    assert_eq!((stock(&app, scarce).await, stock(&app, plenty).await), (1, 50));

    // Declined card: 402, the order cancelled, stock restored, the cart kept.
    app.post_json("/cart/empty", &json!({}), Some(&token)).await;
    assert_eq!(add(&app, &token, plenty, 4).await.status, 200);
    let declined = app.post_json("/checkout", &checkout_body(DECLINED_CARD), Some(&token)).await;
    declined.assert_error(402, 40201);
    assert_eq!(declined.body["msg"], "payment declined: the card was declined by the processor");
    assert_eq!(stock(&app, plenty).await, 50);
    let orders = app.get("/orders", Some(&token)).await;
    let statuses: Vec<&str> =
        orders.data()["items"].as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["cancelled"], "the processor declines after the order is placed");
    assert_eq!(app.get("/cart", Some(&token)).await.data()["items"].as_array().unwrap().len(), 1);

    // The same cart then checks out with a good card.
    let ok = app.post_json("/checkout", &checkout_body(GOOD_CARD), Some(&token)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(stock(&app, plenty).await, 46);
    app.stop().await;
}

/// api.md "Checkout, precisely", step 0: a malformed card is a 402 before anything is placed or
/// reserved, with the code and message `/payment/charge` gives for the same card.
#[tokio::test]
async fn a_malformed_card_is_refused_before_anything_is_placed() {
    let app = spawn_app().await;
    let item = product(&app, "Item", "2.00", 5).await;
    let (_, token) = app.customer().await;
    let t = Some(token.as_str());
    assert_eq!(add(&app, &token, item, 2).await.status, 200);

    let luhn = checkout_body("4111 1111 1111 1112");
    let mut expired = checkout_body(GOOD_CARD);
    expired["credit_card"]["credit_card_expiration_year"] = json!(2020);
    expired["credit_card"]["credit_card_expiration_month"] = json!(1);
    let mut bad_cvv = checkout_body(GOOD_CARD);
    bad_cvv["credit_card"]["credit_card_cvv"] = json!("12a");
    let cases = [
        (luhn, "payment declined: the card number is not valid"),
        (expired, "payment declined: the card has expired"),
        (bad_cvv, "payment declined: the CVV must be 3 or 4 digits"),
    ];
    for (body, msg) in &cases {
        let refused = app.post_json("/checkout", body, t).await;
        refused.assert_error(402, 40201);
        assert_eq!(refused.body["msg"], *msg);
        // The same with an Idempotency-Key: still nothing recorded under it.
        let keyed = app
            .client
            .post(format!("{}/checkout", app.url))
            .bearer_auth(&token)
            .header("idempotency-key", "malformed-then-good")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(keyed.status(), 402);

        let orders = app.get("/orders", t).await;
        assert_eq!(orders.data()["total"], 0, "no order: {}", orders.body);
        assert!(orders.data()["items"].as_array().unwrap().is_empty());
        assert_eq!(stock(&app, item).await, 5, "nothing reserved");
        assert_eq!(lines(&app.get("/cart", t).await), [(item, 2)], "the cart is kept");
    }

    // Nothing was recorded under the key: with a good card it checks out.
    let good = app
        .client
        .post(format!("{}/checkout", app.url))
        .bearer_auth(&token)
        .header("idempotency-key", "malformed-then-good")
        .json(&checkout_body(GOOD_CARD))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(stock(&app, item).await, 3);
    assert_eq!(app.get("/orders", t).await.data()["total"], 1);

    // /payment/charge declines the same cards with the same code and message.
    let placed = app
        .post_json(
            "/order/place",
            &json!({ "email": "a@example.com", "address": address(),
                     "items": [{ "product_id": item, "quantity": 1 }] }),
            t,
        )
        .await;
    let order_id = placed.data()["order_id"].as_str().unwrap().to_owned();
    for (body, msg) in &cases {
        let charge = json!({ "order_id": order_id, "credit_card": body["credit_card"] });
        let declined = app.post_json("/payment/charge", &charge, t).await;
        declined.assert_error(402, 40201);
        assert_eq!(declined.body["msg"], *msg);
    }
    app.stop().await;
}

/// `/cart/setitem` sets a line (0 removes it) and `/cart/removeitem` removes one, from JSON or form
/// bodies; both return the cart.
#[tokio::test]
async fn set_and_remove_cart_lines() {
    let app = spawn_app().await;
    let mug = product(&app, "Mug", "12.50", 10).await;
    let tea = product(&app, "Tea", "3.99", 5).await;
    let (user_id, token) = app.customer().await;
    let t = Some(token.as_str());

    let cart = set(&app, &token, mug, 3).await;
    assert_eq!(lines(&cart), [(mug, 3)]);
    assert_eq!(
        (cart.data()["total_cents"].as_i64(), cart.data()["total"].as_str()),
        (Some(3750), Some("37.50"))
    );
    assert_eq!(cart.data()["items"][0]["name"], "Mug");
    assert_eq!(lines(&add(&app, &token, tea, 2).await), [(mug, 3), (tea, 2)]);
    let cart = set(&app, &token, mug, 1).await;
    assert_eq!(lines(&cart), [(mug, 1), (tea, 2)], "set, not added; the line keeps its place");
    assert_eq!(cart.data()["total_cents"], 1250 + 2 * 399);
    assert_eq!(lines(&set(&app, &token, tea, 999).await), [(mug, 1), (tea, 999)], "999 is the most");

    // Old clients' form fields, with their own user id (ignored because it matches).
    let (id, tea_id) = (user_id.to_string(), tea.to_string());
    let fields = [("product_id", tea_id.as_str()), ("quantity", "0"), ("user_id", id.as_str())];
    let cart = app.post_form_as("/cart/setitem", &fields, &token).await;
    assert_eq!(lines(&cart), [(mug, 1)], "0 removes the line");
    assert_eq!(cart.data()["total_cents"], 1250);
    assert_eq!(lines(&set(&app, &token, tea, 0).await), [(mug, 1)], "0 for a line not there is fine");
    assert_eq!(app.get("/cart", t).await.body, cart.body, "GET /cart shows the same cart");

    assert_eq!(lines(&add(&app, &token, tea, 4).await), [(mug, 1), (tea, 4)]);
    let cart = remove(&app, &token, mug).await;
    assert_eq!(lines(&cart), [(tea, 4)]);
    assert_eq!(cart.data()["total_cents"], 4 * 399);
    assert_eq!(lines(&remove(&app, &token, mug).await), [(tea, 4)], "removing it again is not an error");
    assert_eq!(lines(&remove(&app, &token, 987_654).await), [(tea, 4)], "nor is a product never seen");
    let fields = [("product_id", tea_id.as_str()), ("userid", id.as_str())];
    let cart = app.post_form_as("/cart/removeitem", &fields, &token).await;
    assert_eq!(lines(&cart), []);
    assert_eq!((cart.data()["total_cents"].as_i64(), cart.data()["total"].as_str()), (Some(0), Some("0.00")));
    app.stop().await;
}

#[tokio::test]
async fn cart_lines_refuse_bad_input_other_users_and_no_token() {
    let app = spawn_app().await;
    let mug = product(&app, "Mug", "1.00", 10).await;
    let (a_id, a) = app.customer().await;
    let (b_id, b) = app.customer().await;
    let ta = Some(a.as_str());
    assert_eq!(lines(&add(&app, &a, mug, 2).await), [(mug, 2)]);

    // Quantities out of range and malformed fields: 400, nothing changed.
    set(&app, &a, mug, -1).await.assert_error(400, 40001);
    set(&app, &a, mug, 1000).await.assert_error(400, 40001);
    app.post_json("/cart/setitem", &json!({ "product_id": mug, "quantity": "lots" }), ta)
        .await
        .assert_error(400, 40001);
    app.post_json("/cart/setitem", &json!({ "product_id": mug }), ta).await.assert_error(400, 40001);
    app.post_json("/cart/setitem", &json!({ "quantity": 1 }), ta).await.assert_error(400, 40001);
    let mug_id = mug.to_string();
    app.post_form_as("/cart/setitem", &[("product_id", mug_id.as_str()), ("quantity", "x")], &a)
        .await
        .assert_error(400, 40001);
    app.post_json("/cart/removeitem", &json!({}), ta).await.assert_error(400, 40001);
    app.post_json("/cart/removeitem", &json!({ "product_id": "mug" }), ta).await.assert_error(400, 40001);
    app.post_raw("/cart/removeitem", "text/plain", b"product_id=1".to_vec(), ta)
        .await
        .assert_error(415, 41501);
    // An unknown product cannot be set; it can be set to 0 (nothing to remove).
    set(&app, &a, 987_654, 1).await.assert_error(404, 40401);
    assert_eq!(lines(&set(&app, &a, 987_654, 0).await), [(mug, 2)]);
    // A deleted product cannot be set either, as additem.
    let gone = product(&app, "Gone", "1.00", 1).await;
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.data()["token"].as_str().unwrap().to_owned();
    let deleted = app.post_json("/product/delete", &json!({ "id": gone }), Some(&admin)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    set(&app, &a, gone, 1).await.assert_error(404, 40401);
    assert_eq!(lines(&app.get("/cart", ta).await), [(mug, 2)], "refusals changed nothing");

    // Another user's id in the body: 403, whichever field and form; the owner's cart untouched.
    let other = a_id.to_string();
    for body in [
        json!({ "product_id": mug, "quantity": 5, "user_id": a_id }),
        json!({ "product_id": mug, "quantity": 5, "userid": other.clone() }),
    ] {
        app.post_json("/cart/setitem", &body, Some(&b)).await.assert_error(403, 40301);
        app.post_json("/cart/removeitem", &body, Some(&b)).await.assert_error(403, 40301);
    }
    let fields = [("product_id", mug_id.as_str()), ("quantity", "5"), ("user_id", other.as_str())];
    app.post_form_as("/cart/setitem", &fields, &b).await.assert_error(403, 40301);
    app.post_form_as("/cart/removeitem", &fields, &b).await.assert_error(403, 40301);
    let body = json!({ "product_id": mug, "quantity": 5, "user_id": b_id });
    app.post_json("/cart/setitem", &body, ta).await.assert_error(403, 40301);
    app.post_json("/cart/removeitem", &body, ta).await.assert_error(403, 40301);
    assert_eq!(lines(&app.get("/cart", ta).await), [(mug, 2)], "a's cart untouched");
    assert_eq!(lines(&app.get("/cart", Some(&b)).await), [], "b's cart untouched");

    // No token, or a bad one: 401.
    let body = json!({ "product_id": mug, "quantity": 1 });
    for path in ["/cart/setitem", "/cart/removeitem"] {
        app.post_json(path, &body, None).await.assert_error(401, 40101);
        app.post_json(path, &body, Some("not-a-token")).await.assert_error(401, 40101);
        app.post_form(path, &[("product_id", "1"), ("quantity", "1")]).await.assert_error(401, 40101);
    }
    assert_eq!(lines(&app.get("/cart", ta).await), [(mug, 2)]);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_on_every_commerce_route_is_a_4xx() {
    let app = spawn_app().await;
    let item = product(&app, "Item", "2.00", 5).await;
    let (_, token) = app.customer().await;
    let t = Some(token.as_str());

    add(&app, &token, item, 0).await.assert_error(400, 40001);
    add(&app, &token, item, 1000).await.assert_error(400, 40001);
    add(&app, &token, 999_999, 1).await.assert_error(404, 40401);
    app.post_json("/cart/additem", &json!({ "product_id": item, "quantity": "lots" }), t)
        .await
        .assert_error(400, 40001);
    app.post_form("/cart/additem", &[("product_id", "1"), ("quantity", "x")]).await.assert_error(401, 40101);
    app.post_json("/cart/additem", &json!({ "product_id": item }), t).await.assert_error(400, 40001);

    assert_eq!(add(&app, &token, item, 1).await.status, 200);
    let mut no_zip = checkout_body(GOOD_CARD);
    no_zip["address"].as_object_mut().unwrap().remove("zip_code");
    app.post_json("/checkout", &no_zip, t).await.assert_error(400, 40001);
    let mut blank_city = checkout_body(GOOD_CARD);
    blank_city["address"]["city"] = json!("");
    app.post_json("/checkout", &blank_city, t).await.assert_error(400, 40001);
    for bad_card in ["4111111111111112", "1234", "41111111111111111111", "abcd efgh ijkl"] {
        app.post_json("/checkout", &checkout_body(bad_card), t).await.assert_error(402, 40201);
    }
    let mut expired = checkout_body(GOOD_CARD);
    expired["credit_card"]["credit_card_expiration_year"] = json!(2020);
    app.post_json("/checkout", &expired, t).await.assert_error(402, 40201);
    let mut short_cvv = checkout_body(GOOD_CARD);
    short_cvv["credit_card"]["credit_card_cvv"] = json!("12");
    app.post_json("/checkout", &short_cvv, t).await.assert_error(402, 40201);
    assert_eq!(stock(&app, item).await, 5, "declines restore stock");

    app.get("/orders/01890000-0000-7000-8000-000000000000", t).await.assert_error(404, 40401);
    app.post_json("/order/cancel", &json!({ "order_id": "nope" }), t).await.assert_error(404, 40401);
    app.post_json("/payment/charge", &json!({ "order_id": "nope", "credit_card": card(GOOD_CARD) }), t)
        .await
        .assert_error(404, 40401);
    app.post_json("/order/place", &json!({ "email": "a@example.com" }), t).await.assert_error(400, 40001);
    app.get("/orders?page=0", t).await.assert_error(400, 40001);
    app.stop().await;
}

/// One rule per input through the gateway: an address field of 201 characters is a 400 at checkout
/// before anything is placed or reserved (it used to pass checkout and fail in the order service), in
/// the same words as /order/place; and an email that /register refuses, /checkout and /order/place
/// refuse with the same 400 and message.
#[tokio::test]
async fn one_rule_per_input() {
    let app = spawn_app().await;
    let item = product(&app, "Rule lamp", "7.00", 5).await;
    let (_, token) = app.customer().await;
    let t = Some(token.as_str());
    assert_eq!(add(&app, &token, item, 2).await.status, 200);
    let place = |email: &str, address: Value| json!({ "email": email, "address": address, "items": [{ "product_id": item, "quantity": 1 }] });
    let refused = |reply: Reply| {
        reply.assert_error(400, 40001);
        reply.body["msg"].as_str().unwrap().to_owned()
    };

    let mut long = checkout_body(GOOD_CARD);
    long["address"]["city"] = json!("c".repeat(201));
    let message = refused(app.post_json("/checkout", &long, t).await);
    assert_eq!(message, "address.city must be at most 200 characters (it has 201)");
    let by_order = app.post_json("/order/place", &place("ada@example.com", long["address"].clone()), t).await;
    assert_eq!(refused(by_order), message);
    assert_eq!(stock(&app, item).await, 5, "nothing reserved");
    assert_eq!(app.get("/orders", t).await.data()["total"], 0, "nothing placed");
    assert_eq!(lines(&app.get("/cart", t).await), [(item, 2)]);

    for email in
        ["al<ice@example.com", "alice@exa_mple.com", "a..b@example.com", "alice@-x.com", "alice@example"]
    {
        let body = json!({ "email": email, "password": PASSWORD, "confirm_password": PASSWORD });
        let by_users = refused(app.post_json("/register", &body, None).await);
        let mut checkout = checkout_body(GOOD_CARD);
        checkout["email"] = json!(email);
        assert_eq!(refused(app.post_json("/checkout", &checkout, t).await), by_users, "{email}");
        assert_eq!(
            refused(app.post_json("/order/place", &place(email, address()), t).await),
            by_users,
            "{email}"
        );
    }
    assert_eq!(stock(&app, item).await, 5);

    // At the limit it goes through, and the order keeps the email as the user service would.
    let mut fits = checkout_body(GOOD_CARD);
    fits["address"]["city"] = json!("c".repeat(200));
    fits["email"] = json!(" Ada@Example.COM ");
    let paid = app.post_json("/checkout", &fits, t).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    let order_id = paid.data()["order_id"].as_str().unwrap().to_owned();
    let order = app.get(&format!("/orders/{order_id}"), t).await;
    assert_eq!(order.data()["email"], "ada@example.com");
    assert_eq!(order.data()["address"]["city"], "c".repeat(200));
    assert_eq!(stock(&app, item).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn users_cannot_touch_each_others_orders() {
    let app = spawn_app().await;
    let item = product(&app, "Item", "2.00", 5).await;
    let (a_id, a) = app.customer().await;
    let (_, b) = app.customer().await;
    let placed = app
        .post_json(
            "/order/place",
            &json!({ "email": "a@example.com", "address": address(),
            "items": [{ "product_id": item, "quantity": 1 }] }),
            Some(&a),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let order_id = placed.data()["order_id"].as_str().unwrap().to_owned();

    app.get(&format!("/orders/{order_id}"), Some(&b)).await.assert_error(404, 40401);
    app.post_json("/order/cancel", &json!({ "order_id": order_id }), Some(&b)).await.assert_error(404, 40401);
    app.post_json(
        "/payment/charge",
        &json!({ "order_id": order_id, "credit_card": card(GOOD_CARD) }),
        Some(&b),
    )
    .await
    .assert_error(404, 40401);
    app.post_json("/order/mark-paid", &json!({ "order_id": order_id }), Some(&a))
        .await
        .assert_error(403, 40301);
    assert_eq!(app.get("/orders", Some(&b)).await.data()["total"], 0);
    // A body naming another user is refused; naming yourself is fine.
    app.post_json("/cart/additem", &json!({ "product_id": item, "quantity": 1, "user_id": a_id }), Some(&b))
        .await
        .assert_error(403, 40301);
    app.post_json(
        "/cart/additem",
        &json!({ "product_id": item, "quantity": 1, "userid": a_id.to_string() }),
        Some(&a),
    )
    .await;
    assert_eq!(app.get("/cart", Some(&b)).await.data()["items"].as_array().unwrap().len(), 0);

    // A's own order: charge, charge again (same transaction), cannot cancel once paid.
    let charge = json!({ "order_id": order_id, "credit_card": card(GOOD_CARD) });
    let first = app.post_json("/payment/charge", &charge, Some(&a)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.data()["amount_cents"], 200);
    assert_eq!(first.data()["card_last4"], "1111");
    let second = app.post_json("/payment/charge", &charge, Some(&a)).await;
    assert_eq!(second.data()["transaction_id"], first.data()["transaction_id"]);
    app.post_json("/order/cancel", &json!({ "order_id": order_id }), Some(&a)).await.assert_error(409, 40901);
    let got = app.get(&format!("/orders/{order_id}"), Some(&a)).await;
    assert_eq!(got.data()["status"], "paid");

    // An admin may mark an unpaid order paid; a cancelled one releases its stock.
    let other = app
        .post_json(
            "/order/place",
            &json!({ "email": "a@example.com", "address": address(),
            "items": [{ "product_id": item, "quantity": 2 }] }),
            Some(&a),
        )
        .await;
    let other_id = other.data()["order_id"].as_str().unwrap().to_owned();
    assert_eq!(stock(&app, item).await, 2);
    let cancelled = app.post_json("/order/cancel", &json!({ "order_id": other_id }), Some(&a)).await;
    assert_eq!(cancelled.data()["status"], "cancelled", "{}", cancelled.body);
    assert_eq!(stock(&app, item).await, 4);
    app.post_json(
        "/payment/charge",
        &json!({ "order_id": other_id, "credit_card": card(GOOD_CARD) }),
        Some(&a),
    )
    .await
    .assert_error(409, 40901);
    let third = app
        .post_json(
            "/order/place",
            &json!({ "email": "a@example.com", "address": address(),
            "items": [{ "product_id": item, "quantity": 1 }] }),
            Some(&a),
        )
        .await;
    let admin = admin(&app).await;
    let third_id = third.data()["order_id"].as_str().unwrap();
    let paid = app.post_json("/order/mark-paid", &json!({ "order_id": third_id }), Some(&admin)).await;
    assert_eq!(paid.data()["status"], "paid", "{}", paid.body);
    app.stop().await;
}

#[tokio::test]
async fn one_idempotency_key_sent_ten_times_checks_out_once() {
    let app = spawn_app().await;
    let item = product(&app, "Item", "7.00", 20).await;
    let (_, token) = app.customer().await;
    assert_eq!(add(&app, &token, item, 2).await.status, 200);

    let send = |body: Value| {
        let (client, url, token) = (app.client.clone(), app.url.clone(), token.clone());
        async move {
            let r =
                client.post(format!("{url}/checkout")).bearer_auth(token).header("idempotency-key", "key-1");
            let r = r.json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let replies = futures::future::join_all((0..10).map(|_| send(checkout_body(GOOD_CARD)))).await;
    let ok: Vec<&Value> = replies.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    assert!(!ok.is_empty(), "{replies:?}");
    assert!(replies.iter().all(|(s, _)| *s == 200 || *s == 409), "{replies:?}");
    let first = &ok[0]["data"];
    assert!(ok.iter().all(|b| b["data"]["order_id"] == first["order_id"]), "{replies:?}");
    assert!(ok.iter().all(|b| b["data"]["transaction_id"] == first["transaction_id"]));
    assert_eq!(app.get("/orders", Some(&token)).await.data()["total"], 1);
    assert_eq!(stock(&app, item).await, 18);

    // Once settled, a retry returns the same result; the same key with another body is a 409.
    let (status, again) = send(checkout_body(GOOD_CARD)).await;
    assert_eq!((status, &again["data"]["order_id"]), (200, &first["order_id"]));
    let mut other = checkout_body(GOOD_CARD);
    other["firstname"] = json!("Grace");
    let (status, _) = send(other).await;
    assert_eq!(status, 409);
    app.stop().await;
}

#[tokio::test]
async fn twenty_shoppers_race_for_five_units() {
    let app = spawn_app().await;
    let item = product(&app, "Last ones", "9.99", 5).await;
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let (_, token) = app.customer().await;
        assert_eq!(add(&app, &token, item, 1).await.status, 200);
        tokens.push(token);
    }
    let runs = tokens.iter().map(|token| {
        let (client, url, token) = (app.client.clone(), app.url.clone(), token.clone());
        async move {
            let r =
                client.post(format!("{url}/checkout")).bearer_auth(&token).json(&checkout_body(GOOD_CARD));
            let status = r.send().await.unwrap().status().as_u16();
            (status, token)
        }
    });
    let results = futures::future::join_all(runs).await;
    let paid: Vec<&String> = results.iter().filter(|(s, _)| *s == 200).map(|(_, t)| t).collect();
    assert_eq!(paid.len(), 5, "{:?}", results.iter().map(|(s, _)| s).collect::<Vec<_>>());
    assert!(results.iter().all(|(s, _)| *s == 200 || *s == 409));
    assert_eq!(stock(&app, item).await, 0);
    for token in paid {
        let orders = app.get("/orders", Some(token)).await;
        assert_eq!(orders.data()["items"][0]["status"], "paid");
    }
    app.stop().await;
}

/// No Idempotency-Key: two concurrent checkouts of one unchanged cart (a double click) place one
/// order and charge it once; after the cart changed, a new checkout goes through.
async fn check_double_click_without_a_key(backend: Backend) {
    let Some(app) = spawn_app_on(backend).await else { return };
    let item = product(&app, "Kettle", "30.00", 10).await;
    let (_, token) = app.customer().await;
    assert_eq!(add(&app, &token, item, 1).await.status, 200);

    let click = || {
        let (client, url, token) = (app.client.clone(), app.url.clone(), token.clone());
        async move {
            let r = client.post(format!("{url}/checkout")).bearer_auth(token).json(&checkout_body(GOOD_CARD));
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (one, two) = futures::future::join(click(), click()).await;
    let replies = [one, two];
    let ok: Vec<&Value> = replies.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    assert!(!ok.is_empty(), "{replies:?}");
    for (status, body) in &replies {
        match status {
            200 => assert_eq!(body["data"]["order_id"], ok[0]["data"]["order_id"], "{replies:?}"),
            409 => assert_eq!(body["code"], 40901, "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    let orders = app.get("/orders", Some(&token)).await;
    assert_eq!(orders.data()["total"], 1, "one order: {}", orders.body);
    let order = &orders.data()["items"][0];
    assert_eq!(order["status"], "paid");
    assert_eq!(order["transaction_id"], ok[0]["data"]["transaction_id"], "one charge, the one answered");
    assert_eq!(stock(&app, item).await, 9);

    // The cart changed (filled again): a new checkout proceeds.
    assert_eq!(add(&app, &token, item, 1).await.status, 200);
    let (status, again) = click().await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["data"]["order_id"], ok[0]["data"]["order_id"]);
    assert_eq!(app.get("/orders", Some(&token)).await.data()["total"], 2);
    assert_eq!(stock(&app, item).await, 8);
    app.stop().await;
}

#[tokio::test]
async fn a_double_click_without_a_key_checks_out_once_on_sqlite() {
    check_double_click_without_a_key(Backend::Embedded).await;
}

#[tokio::test]
async fn a_double_click_without_a_key_checks_out_once_on_mariadb_and_redis() {
    check_double_click_without_a_key(Backend::Servers).await;
}
