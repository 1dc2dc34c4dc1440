//! Operations routes, the envelope on everything, body limits and content types.

use std::time::Duration;

use serde_json::json;

use crate::commerce::{GOOD_CARD, card, checkout_body, product};
use crate::helpers::*;

#[tokio::test]
async fn health_readiness_metrics_and_docs() {
    let app = spawn_app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.code(), 0);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    app.get("/user/me", None).await; // something to count
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mall_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/user/me\""), "{metrics}");

    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/register",
        "/login",
        "/logout",
        "/user/me",
        "/products/{id}",
        "/cart/setitem",
        "/cart/removeitem",
        "/checkout",
        "/readyz",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    for (code, _) in mall_gateway::CODES {
        assert!(doc.body["x-error-codes"].get(code.to_string()).is_some(), "code {code} undocumented");
    }

    let page = app.client.get(format!("{}/docs", app.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/openapi.json"));
    app.stop().await;
}

#[tokio::test]
async fn a_gateway_whose_services_are_down_is_ready_and_names_the_missing_service() {
    // A gateway alone, pointed at ports where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = || mall_runtime::channel(&dead.to_string()).unwrap();
    let peers = mall_gateway::Peers {
        auth: dead(),
        user: dead(),
        product: dead(),
        cart: dead(),
        order: dead(),
        payment: dead(),
        checkout: dead(),
    };
    let shutdown = mall_runtime::CancellationToken::new();
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let cache = mall_storage::Cache::memory("ready-test");
    let served =
        mall_gateway::startup(mall_gateway::Config::default(), peers, cache, listener, shutdown.clone())
            .await
            .unwrap();
    let url = format!("http://{}", served.addr);
    let client = reqwest::Client::new();

    // Its readiness is its own: the services are not its to report.
    let ready = client.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(client.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);

    // A call that needs a missing service is a 503 in the envelope naming it, not a 500.
    let login =
        client.post(format!("{url}/login")).json(&json!({"email": "a@example.com", "password": PASSWORD}));
    let login = login.send().await.unwrap();
    assert_eq!(login.status(), 503);
    let body: serde_json::Value = login.json().await.unwrap();
    assert_eq!(body["code"], 50301);
    assert_eq!(body["msg"], "the user service is unavailable");
    let list = client.get(format!("{url}/products/list")).send().await.unwrap();
    let body: serde_json::Value = list.json().await.unwrap();
    assert_eq!(body["msg"], "the product service is unavailable");

    shutdown.cancel();
    served.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_service_that_is_down_fails_only_the_routes_that_need_it() {
    let mut app = spawn_app().await;
    let mug = product(&app, "Mug", "12.50", 10).await;
    let (_, token) = app.customer().await;
    let t = Some(token.as_str());
    let added = app.post_json("/cart/additem", &json!({ "product_id": mug, "quantity": 1 }), t).await;
    assert_eq!(added.status, 200, "{}", added.body);

    app.stop_service("payment").await;

    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(app.get("/products/list", None).await.status, 200);
    assert_eq!(app.get(&format!("/products/{mug}"), None).await.status, 200);
    assert_eq!(app.get("/cart", t).await.status, 200);

    // The gateway cannot reach payment itself...
    let charge = json!({ "order_id": "o-1", "credit_card": card(GOOD_CARD) });
    let charge = app.post_json("/payment/charge", &charge, t).await;
    charge.assert_error(503, 50301);
    assert_eq!(charge.body["msg"], "the payment service is unavailable");
    // ...and checkout, which calls payment, says so too.
    let checkout = app.post_json("/checkout", &checkout_body(GOOD_CARD), t).await;
    checkout.assert_error(503, 50301);
    assert!(
        checkout.body["msg"].as_str().unwrap().contains("the payment service is unavailable"),
        "{}",
        checkout.body
    );
    app.stop().await;
}

#[tokio::test]
async fn a_draining_gateway_fails_readiness_closes_connections_and_then_exits() {
    // A drain far longer than the test: it ends when the test hurries it.
    let options = Options { drain: Duration::from_secs(3600), ..Options::default() };
    let app = spawn_with(options).await.unwrap();
    let gateway = app.mall.as_ref().unwrap().gateway.shutdown.clone();
    let before = app.get("/products/list", None).await;
    assert_eq!(before.status, 200);
    assert!(before.headers.get("connection").is_none_or(|c| c != "close"), "{:?}", before.headers);

    gateway.begin();
    let ready = app.get("/readyz", None).await;
    ready.assert_error(503, 50302);
    assert_eq!(ready.headers["connection"], "close");
    for path in ["/products/list", "/healthz"] {
        let reply = app.get(path, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.headers["connection"], "close", "{path}");
    }
    let (_, token) = app.customer().await;
    assert_eq!(app.get("/user/me", Some(&token)).await.status, 200);

    gateway.hurry();
    let url = app.url.clone();
    app.stop().await;
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err(), "the gateway has exited");
}

#[tokio::test]
async fn a_request_whose_service_never_answers_fails_within_the_gateway_budget() {
    // A gateway alone, whose services accept connections and never answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let peer = || mall_runtime::channel(&silent_addr.to_string()).unwrap();
    let peers = mall_gateway::Peers {
        auth: peer(),
        user: peer(),
        product: peer(),
        cart: peer(),
        order: peer(),
        payment: peer(),
        checkout: peer(),
    };
    let config = mall_gateway::Config {
        request_timeout: Duration::from_millis(500),
        ..mall_gateway::Config::default()
    };
    let shutdown = mall_runtime::CancellationToken::new();
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let cache = mall_storage::Cache::memory("budget-test");
    let served = mall_gateway::startup(config, peers, cache, listener, shutdown.clone()).await.unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    let reply = client
        .get(format!("http://{}/products/1", served.addr))
        .send()
        .await
        .expect("an answer within the budget, not when the service answers");
    assert_eq!(reply.status(), 503);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 50301, "{body}");

    shutdown.cancel();
    served.task.await.unwrap().unwrap();
    drop(silent);
}

#[tokio::test]
async fn every_response_has_a_request_id_and_the_envelope() {
    let app = spawn_app().await;
    let a = app.get("/healthz", None).await;
    let b = app.get("/nowhere", None).await;
    let id_a = a.headers["x-request-id"].to_str().unwrap();
    let id_b = b.headers["x-request-id"].to_str().unwrap();
    assert!(!id_a.is_empty() && id_a != id_b);
    b.assert_error(404, 40402);

    // A client's own request id is kept.
    let mine =
        app.client.get(format!("{}/healthz", app.url)).header("x-request-id", "trace-me-42").send().await;
    assert_eq!(mine.unwrap().headers()["x-request-id"], "trace-me-42");

    let wrong_method = app.get("/register", None).await;
    wrong_method.assert_error(405, 40501);
    app.stop().await;
}

#[tokio::test]
async fn bodies_are_limited_and_typed() {
    let app = spawn_app().await;
    let big = json!({ "email": "x".repeat(70 * 1024), "password": PASSWORD, "confirm_password": PASSWORD });
    app.post_json("/register", &big, None).await.assert_error(413, 41301);
    app.post_raw("/register", "text/plain", b"email=a".to_vec(), None).await.assert_error(415, 41501);
    app.post_raw("/register", "application/json", b"{not json".to_vec(), None).await.assert_error(400, 40002);
    app.post_raw("/register", "application/json", Vec::new(), None).await.assert_error(400, 40002);
    app.stop().await;
}
