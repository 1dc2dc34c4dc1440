//! The catalog through the gateway: public browsing, admin writes, money, paging and search.

use serde_json::{Value, json};

use crate::helpers::*;

async fn admin_token(app: &TestApp) -> String {
    let reply = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    reply.data()["token"].as_str().unwrap().to_owned()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let reply = app.post_json("/product/create", &body, Some(token)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.data().clone()
}

async fn catalog_flow(app: &TestApp) {
    let admin = admin_token(app).await;
    let mug = create(
        app,
        &admin,
        json!({ "name": "Blue Mug", "description": "A sturdy blue mug", "picture": "/img/mug.png",
                "price": "19.90", "categories": ["Kitchen", "Gifts"], "stock": 12 }),
    )
    .await;
    let id = mug["id"].as_i64().unwrap();
    assert_eq!(mug["price"], "19.90");
    assert_eq!(mug["price_cents"], 1990);
    assert_eq!(mug["stock"], 12);
    let mut categories: Vec<String> = serde_json::from_value(mug["categories"].clone()).unwrap();
    categories.sort();
    assert_eq!(categories, ["Gifts", "Kitchen"]);

    let got = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.data()["name"], "Blue Mug");

    // A read after an update never shows the old product (the read above filled the cache).
    let updated =
        app.post_json("/product/update", &json!({ "id": id, "price_cents": 2450 }), Some(&admin)).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.data()["name"], "Blue Mug", "fields not given are unchanged");
    let got = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(got.data()["price"], "24.50");
    assert_eq!(got.data()["description"], "A sturdy blue mug");

    let deleted = app.post_json("/product/delete", &json!({ "id": id }), Some(&admin)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.data()["deleted"], true);
    app.get(&format!("/products/{id}"), None).await.assert_error(404, 40401);
    let list = app.get("/products/list?category=kitchen", None).await;
    assert_eq!(list.data()["total"], 0, "{}", list.body);
}

#[tokio::test]
async fn admin_creates_updates_deletes_on_sqlite() {
    let app = spawn_app().await;
    catalog_flow(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn admin_creates_updates_deletes_on_mariadb_and_redis() {
    let Some(app) = spawn_app_on(Backend::Servers).await else { return };
    catalog_flow(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn only_admins_write_the_catalog() {
    let app = spawn_app().await;
    let (_, customer) = app.customer().await;
    let body = json!({ "name": "X", "price": "1.00" });
    app.post_json("/product/create", &body, Some(&customer)).await.assert_error(403, 40301);
    app.post_json("/product/create", &body, None).await.assert_error(401, 40101);
    app.post_json("/product/update", &json!({ "id": 1, "price": "2.00" }), Some(&customer))
        .await
        .assert_error(403, 40301);
    app.post_json("/product/delete", &json!({ "id": 1 }), Some(&customer)).await.assert_error(403, 40301);
    app.stop().await;
}

#[tokio::test]
async fn bad_product_input_gets_400() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    for (body, why) in [
        (json!({ "price": "1.00" }), "missing name"),
        (json!({ "name": "", "price": "1.00" }), "empty name"),
        (json!({ "name": "A" }), "missing price"),
        (json!({ "name": "A", "price": "19.999" }), "three decimals"),
        (json!({ "name": "A", "price": "-1.00" }), "negative"),
        (json!({ "name": "A", "price_cents": -1 }), "negative cents"),
        (json!({ "name": "A", "price": "1000000.01" }), "over the maximum"),
        (json!({ "name": "A", "price": "abc" }), "not a number"),
        (json!({ "name": "A", "price": "1.00", "price_cents": 101 }), "disagreeing"),
        (json!({ "name": "A", "price": "1.00", "stock": -5 }), "negative stock"),
        (json!({ "name": "A", "price": "1.00", "stock": "many" }), "non-numeric stock"),
    ] {
        let reply = app.post_json("/product/create", &body, Some(&admin)).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.body);
        assert_eq!(reply.code(), 40001, "{why}: {}", reply.body);
    }
    let ok = app
        .post_json("/product/create", &json!({ "name": "Max", "price": "1000000.00" }), Some(&admin))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    app.post_raw(
        "/product/create",
        "application/x-www-form-urlencoded",
        b"name=A&price=1".to_vec(),
        Some(&admin),
    )
    .await
    .assert_error(415, 41501);

    app.get("/products/abc", None).await.assert_error(400, 40001);
    app.get("/products/-3", None).await.assert_error(400, 40001);
    app.get("/products/999999", None).await.assert_error(404, 40401);
    app.post_json("/product/update", &json!({ "id": 999999, "name": "B" }), Some(&admin))
        .await
        .assert_error(404, 40401);
    app.post_json("/product/update", &json!({ "name": "B" }), Some(&admin)).await.assert_error(400, 40001);
    app.post_json("/product/delete", &json!({ "id": 999999 }), Some(&admin)).await.assert_error(404, 40401);
    app.stop().await;
}

#[tokio::test]
async fn lists_page_and_filter_by_category() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    for i in 0..5 {
        let category = if i < 3 { "Mugs" } else { "Plates" };
        create(
            &app,
            &admin,
            json!({ "name": format!("Item {i}"), "price_cents": 100 + i, "categories": [category] }),
        )
        .await;
    }
    let all = app.get("/products/list", None).await;
    assert_eq!(
        (all.data()["total"].as_i64(), all.data()["page"].as_i64(), all.data()["page_size"].as_i64()),
        (Some(5), Some(1), Some(20))
    );
    let mugs = app.get("/products/list?category=mugs&page_size=2", None).await;
    assert_eq!(mugs.data()["total"], 3, "{}", mugs.body);
    assert_eq!(mugs.data()["items"].as_array().unwrap().len(), 2);
    let page2 = app.get("/products/list?category=Mugs&page_size=2&page=2", None).await;
    assert_eq!(page2.data()["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2.data()["items"][0]["name"], "Item 2");

    app.get("/products/list?page=0", None).await.assert_error(400, 40001);
    app.get("/products/list?page_size=1000", None).await.assert_error(400, 40001);
    app.get("/products/list?page_size=0", None).await.assert_error(400, 40001);
    app.get("/products/list?page=abc", None).await.assert_error(400, 40001);
    app.stop().await;
}

#[tokio::test]
async fn search_matches_every_word_literally() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    create(&app, &admin, json!({ "name": "Blue Mug", "description": "Holds coffee", "price": "5.00" })).await;
    create(&app, &admin, json!({ "name": "Red Mug", "description": "Also blue inside", "price": "5.00" }))
        .await;
    create(&app, &admin, json!({ "name": "Shirt", "description": "100% cotton", "price": "9.00" })).await;
    create(&app, &admin, json!({ "name": "Sale item", "description": "Now 1000 off", "price": "9.00" }))
        .await;

    let total = |reply: &Reply| reply.data()["total"].as_i64().unwrap();
    assert_eq!(total(&app.get("/products/search?query=blue%20mug", None).await), 2);
    assert_eq!(total(&app.get("/products/search?query=BLUE", None).await), 2);
    assert_eq!(total(&app.get("/products/search?query=coffee%20blue", None).await), 1);
    assert_eq!(total(&app.get("/products/search?query=100%25", None).await), 1, "% is literal");
    assert_eq!(total(&app.get("/products/search?query=1_0", None).await), 0, "_ is literal");
    let paged = app.get("/products/search?query=mug&page_size=1&page=2", None).await;
    assert_eq!((total(&paged), paged.data()["items"].as_array().unwrap().len()), (2, 1));

    app.get("/products/search", None).await.assert_error(400, 40001);
    app.get("/products/search?query=%20%20", None).await.assert_error(400, 40001);
    let long = "a".repeat(101);
    app.get(&format!("/products/search?query={long}"), None).await.assert_error(400, 40001);
    app.stop().await;
}

#[tokio::test]
async fn a_new_mall_has_a_demo_catalog_to_browse() {
    let app = spawn_with(Options { demo: true, ..Options::default() }).await.unwrap();
    let list = app.get("/products/list?page_size=100", None).await;
    let total = list.data()["total"].as_i64().unwrap();
    assert!(total >= 25, "{}", list.body);
    let first = &list.data()["items"][0];
    assert!(first["price_cents"].as_i64().unwrap() > 0 && first["stock"].as_i64().unwrap() > 0);
    app.stop().await;
}
