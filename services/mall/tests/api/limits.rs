//! The edge's rate limits, each at its configured number: N requests pass, the next gets 429 with
//! Retry-After and code 42901; per address (an IPv6 client per /64), per email, per user (spending
//! routes, shared by every gateway through the cache) and search per address.

use std::time::Duration;

use serde_json::{Value, json};

use crate::commerce::{GOOD_CARD, address, card, checkout_body};
use crate::helpers::*;

/// Limits no test reaches except the one it sets.
fn only(limits: mall_gateway::Limits) -> Options {
    // One trusted proxy: each request says which address it comes from.
    Options { limits, trusted_proxies: 1, ..Options::default() }
}

async fn post_from(
    app: &TestApp,
    base: &str,
    path: &str,
    from: &str,
    body: &Value,
    token: Option<&str>,
) -> Reply {
    let mut req = app.client.post(format!("{base}{path}")).header("x-forwarded-for", from).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    reply(req.send().await.unwrap()).await
}

async fn get_from(app: &TestApp, path: &str, from: &str) -> Reply {
    let req = app.client.get(format!("{}{path}", app.url)).header("x-forwarded-for", from);
    reply(req.send().await.unwrap()).await
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    Reply { status, headers, body }
}

/// The API's rate-limit refusal, exactly: 429, code 42901, a message, no data, and when to retry.
#[track_caller]
fn assert_limited(reply: &Reply, window: Duration) {
    reply.assert_error(429, 42901);
    let retry_after: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=window.as_secs()).contains(&retry_after), "Retry-After: {retry_after}");
}

#[track_caller]
fn assert_not_limited(reply: &Reply) {
    assert_ne!(reply.status, 429, "{}", reply.body);
}

const WINDOW: Duration = Duration::from_secs(60);

async fn login_from(app: &TestApp, from: &str, email: &str) -> Reply {
    post_from(app, &app.url, "/login", from, &json!({ "email": email, "password": PASSWORD }), None).await
}

#[tokio::test]
async fn logins_per_address_allow_the_configured_number() {
    let limits = mall_gateway::Limits { per_address: 4, ..mall_gateway::Limits::UNLIMITED };
    let app = spawn_with(only(limits)).await.unwrap();
    for i in 0..4 {
        let reply = login_from(&app, "198.51.100.7", &format!("nobody{i}@example.com")).await;
        reply.assert_error(401, 40104);
    }
    assert_limited(&login_from(&app, "198.51.100.7", "nobody9@example.com").await, WINDOW);
    // Registration has a budget of its own; another address is not affected.
    let body = json!({ "email": "new@example.com", "password": PASSWORD, "confirm_password": PASSWORD });
    assert_eq!(post_from(&app, &app.url, "/register", "198.51.100.7", &body, None).await.status, 201);
    login_from(&app, "198.51.100.8", "nobody@example.com").await.assert_error(401, 40104);
    app.stop().await;
}

#[tokio::test]
async fn logins_per_email_allow_the_configured_number_from_any_address() {
    let limits = mall_gateway::Limits { per_email: 3, ..mall_gateway::Limits::UNLIMITED };
    let app = spawn_with(only(limits)).await.unwrap();
    assert_eq!(app.register("erin@example.com").await.status, 201);
    for i in 0..3 {
        // Spreading the attempts over addresses does not help.
        let reply = login_from(&app, &format!("203.0.113.{i}"), "erin@example.com").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_limited(&login_from(&app, "203.0.113.99", " ERIN@example.com ").await, WINDOW);
    assert_eq!(app.register("frank@example.com").await.status, 201);
    assert_eq!(login_from(&app, "203.0.113.99", "frank@example.com").await.status, 200, "another email");
    app.stop().await;
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let limits =
        mall_gateway::Limits { per_address: 3, search_per_address: 2, ..mall_gateway::Limits::UNLIMITED };
    let app = spawn_with(only(limits)).await.unwrap();
    // Three addresses of one /64 share its budget of three.
    for from in ["2001:db8:aa:1::1", "2001:db8:aa:1::2", "2001:db8:aa:1:ffff:0:0:9"] {
        login_from(&app, from, "x@example.com").await.assert_error(401, 40104);
    }
    assert_limited(&login_from(&app, "2001:db8:aa:1::4", "x@example.com").await, WINDOW);
    // The next /64 has its own.
    login_from(&app, "2001:db8:aa:2::1", "x@example.com").await.assert_error(401, 40104);
    // Search too.
    for from in ["2001:db8:bb:1::1", "2001:db8:bb:1::2"] {
        assert_eq!(get_from(&app, "/products/search?query=mug", from).await.status, 200);
    }
    assert_limited(&get_from(&app, "/products/search?query=mug", "2001:db8:bb:1::3").await, WINDOW);
    assert_eq!(get_from(&app, "/products/search?query=mug", "2001:db8:bb:2::1").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn searches_per_address_allow_the_configured_number() {
    let limits = mall_gateway::Limits { search_per_address: 5, ..mall_gateway::Limits::UNLIMITED };
    let app = spawn_with(only(limits)).await.unwrap();
    for i in 0..5 {
        let reply = get_from(&app, &format!("/products/search?query=item{i}"), "192.0.2.10").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_limited(&get_from(&app, "/products/search?query=more", "192.0.2.10").await, WINDOW);
    assert_eq!(get_from(&app, "/products/search?query=more", "192.0.2.11").await.status, 200);
    // Browsing is not searching.
    assert_eq!(get_from(&app, "/products/list", "192.0.2.10").await.status, 200);
    app.stop().await;
}

/// Spending requests per user, counted together over /order/place, /payment/charge and /checkout, and
/// over two gateways that share the cache.
async fn check_spending_per_user(backend: Backend) {
    let limits = mall_gateway::Limits { per_user: 4, ..mall_gateway::Limits::UNLIMITED };
    let Some(app) = spawn_with(Options { backend, ..only(limits) }).await else { return };
    let second = app
        .another_gateway(mall_gateway::Config {
            limits,
            trusted_proxies: 1,
            ..mall_gateway::Config::default()
        })
        .await;
    let (_, alice) = app.customer().await;
    let (_, bob) = app.customer().await;
    let place = json!({ "email": "a@example.com", "address": address(), "items": [{ "product_id": 999_999, "quantity": 1 }] });
    let charge = json!({ "order_id": "no-such-order", "credit_card": card(GOOD_CARD) });
    let from = "192.0.2.50";
    let tries = [
        (app.url.as_str(), "/order/place", &place),
        (second.url.as_str(), "/payment/charge", &charge),
        (app.url.as_str(), "/checkout", &checkout_body(GOOD_CARD)),
        (second.url.as_str(), "/checkout", &checkout_body(GOOD_CARD)),
    ];
    for (base, path, body) in tries {
        // Each fails for its own reason (no such product, order, an empty cart), but counts.
        let reply = post_from(&app, base, path, from, body, Some(&alice)).await;
        assert_not_limited(&reply);
        assert!(reply.status.is_client_error(), "{path}: {}", reply.body);
    }
    for (base, path, body) in
        [(app.url.as_str(), "/payment/charge", &charge), (second.url.as_str(), "/order/place", &place)]
    {
        assert_limited(&post_from(&app, base, path, from, body, Some(&alice)).await, WINDOW);
    }
    // Bob, from the same address, has his own budget.
    for _ in 0..4 {
        assert_not_limited(
            &post_from(&app, &app.url, "/checkout", from, &checkout_body(GOOD_CARD), Some(&bob)).await,
        );
    }
    assert_limited(
        &post_from(&app, &second.url, "/checkout", from, &checkout_body(GOOD_CARD), Some(&bob)).await,
        WINDOW,
    );
    // Reading is not spending.
    assert_eq!(app.get("/orders", Some(&alice)).await.status, 200);
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn spending_per_user_on_sqlite_and_memory() {
    check_spending_per_user(Backend::Embedded).await;
}

#[tokio::test]
async fn spending_per_user_on_mariadb_and_redis() {
    check_spending_per_user(Backend::Servers).await;
}
