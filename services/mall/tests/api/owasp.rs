//! The OWASP API Security Top 10 (2023) items that earlier suites did not already cover; the README's
//! security section maps every item to the tests that cover it, here and elsewhere.

use serde_json::{Value, json};

use crate::commerce::{GOOD_CARD, checkout_body, product};
use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app};

/// API3, broken object property level authorization: what a client sends beyond the fields a route
/// takes is ignored (no mass assignment), and what comes back holds no secret property.
#[tokio::test]
async fn a_client_cannot_set_or_read_properties_it_does_not_own() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", mall_testkit::unique_name("mass"));
    let password = "s3cret-passw0rd";
    let reply = app
        .post_json(
            "/register",
            &json!({ "email": email, "password": password, "confirm_password": password,
                     "role": "admin", "user_id": 1, "is_admin": true }),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_ne!(reply.data()["user_id"], 1, "the id is the server's to choose");
    let token = app.login(&email, password).await.data()["token"].as_str().unwrap().to_owned();
    let me = app.get("/user/me", Some(&token)).await;
    assert_eq!(me.data()["role"], "customer", "{}", me.body);
    let text = me.body.to_string().to_lowercase();
    assert!(!text.contains("password") && !text.contains("argon2"), "no secret in /user/me: {text}");

    // A customer's checkout: neither the order nor the list shows the card beyond its last four.
    let id = product(&app, "Mass lamp", "5.00", 3).await;
    let added =
        app.post_json("/cart/additem", &json!({ "product_id": id, "quantity": 1 }), Some(&token)).await;
    assert_eq!(added.status, 200, "{}", added.body);
    let done = app.post_json("/checkout", &checkout_body(GOOD_CARD), Some(&token)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let digits: String = GOOD_CARD.chars().filter(char::is_ascii_digit).collect();
    let orders = app.get("/orders", Some(&token)).await;
    for body in [&done.body, &orders.body] {
        let text = body.to_string().replace(' ', "");
        assert!(!text.contains(&digits), "the card number leaked: {text}");
        assert!(!text.contains("\"123\""), "the CVV leaked: {text}");
    }
    app.stop().await;
}

/// API5, broken function level authorization: a customer's token does not reach an admin function.
#[tokio::test]
async fn admin_functions_refuse_customers_and_anonymous_callers() {
    let app = spawn_app().await;
    let (_, customer) = app.customer().await;
    let attempts: &[(&str, Value)] = &[
        (
            "/order/mark-paid",
            json!({ "order_id": "00000000-0000-0000-0000-000000000000", "transaction_id": "t" }),
        ),
        ("/product/create", json!({ "name": "Free lamp", "price": "0.01", "stock": 1 })),
        ("/product/update", json!({ "product_id": 1, "price": "0.01" })),
        ("/product/delete", json!({ "product_id": 1 })),
    ];
    for (path, body) in attempts {
        app.post_json(path, body, Some(&customer)).await.assert_error(403, 40301);
        let anonymous = app.post_json(path, body, None).await;
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.body);
    }
    app.stop().await;
}

/// API8, security misconfiguration: every response says how it may be handled (no sniffing, no
/// caching of personal data), methods the API does not define are refused, and a server-side failure
/// shows no detail (the gateway's error mapping is unit-tested for that).
#[tokio::test]
async fn responses_carry_safe_headers_and_unknown_methods_are_refused() {
    let app = spawn_app().await;
    let (_, token) = app.customer().await;
    for (path, token) in [("/products/list", None), ("/user/me", Some(token.as_str())), ("/nowhere", None)] {
        let reply = app.get(path, token).await;
        assert_eq!(reply.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(reply.headers["cache-control"], "no-store", "{path}");
        assert!(reply.headers.get("server").is_none(), "{path}: no server banner");
    }
    for method in ["TRACE", "PUT", "DELETE"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response =
            app.client.request(method.clone(), format!("{}/user/me", app.url)).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
    }
    app.stop().await;
}

/// API9, improper inventory management: the published description (`/openapi.json`) and what the
/// gateway serves are the same set of routes; nothing undocumented answers.
#[tokio::test]
async fn the_documented_routes_are_the_served_ones() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                app.client.request(method.clone(), format!("{}{concrete}", app.url)).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented but not served");
            assert_ne!(body["code"], 40402, "{method} {path} is documented but not routed");
        }
    }
    for guess in ["/admin", "/debug/vars", "/internal/users", "/v2/products/list", "/.env", "/user/1"] {
        app.get(guess, None).await.assert_error(404, 40402);
    }
    app.stop().await;
}

/// API7 (server-side request forgery) does not apply: no route makes the server fetch a URL. The one
/// URL a client gives, a product's picture, is stored and handed to browsers, never fetched, and it
/// must be a path of this site or an http(s) URL, so that it cannot carry a script.
#[tokio::test]
async fn a_picture_must_be_a_web_address() {
    let app = spawn_app().await;
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.data()["token"].as_str().unwrap().to_owned();
    let create =
        |picture: &str| json!({ "name": "Pictured", "price": "1.00", "stock": 1, "picture": picture });
    for bad in [
        "javascript:alert(1)",
        "data:text/html,<script>x</script>",
        "file:///etc/passwd",
        "//evil.example/x.png",
    ] {
        let reply = app.post_json("/product/create", &create(bad), Some(&admin)).await;
        reply.assert_error(400, 40001);
        assert!(reply.body["msg"].as_str().unwrap().contains("picture"), "{}", reply.body);
    }
    for good in [
        "/static/images/products/lamp.svg",
        "https://cdn.example.com/lamp.png",
        "http://img.example/l.jpg",
        "",
    ] {
        let reply = app.post_json("/product/create", &create(good), Some(&admin)).await;
        assert_eq!(reply.status, 201, "{good}: {}", reply.body);
    }
    app.stop().await;
}
