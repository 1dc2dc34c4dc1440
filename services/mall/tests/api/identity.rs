//! `/register`, `/login`, `/logout`, `/user/me`: the happy path and every bad input.

use serde_json::json;

use crate::helpers::*;

async fn signup_login_me_logout(app: &TestApp) {
    let email = format!("{}@Example.COM", mall_testkit::unique_name("Alice"));
    let reply = app.register(&format!("  {email} ")).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.code(), 0);
    let user_id = reply.data()["user_id"].as_i64().unwrap();
    assert!(user_id > 0);

    // The email was normalised: the lowercase form logs in.
    let reply = app.login(&email.to_lowercase(), PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.data()["token_type"], "Bearer");
    let token = reply.data()["token"].as_str().unwrap().to_owned();
    let expires_at = reply.data()["expires_at"].as_str().unwrap();
    assert!(expires_at.ends_with('Z') && expires_at.contains('T'), "RFC 3339: {expires_at}");

    let me = app.get("/user/me", Some(&token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.data()["user_id"], user_id);
    assert_eq!(me.data()["email"], email.to_lowercase());
    assert_eq!(me.data()["role"], "customer");
    assert!(me.data()["created_at"].as_str().unwrap().contains('T'));

    let out = app.post_json("/logout", &json!({}), Some(&token)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    app.get("/user/me", Some(&token)).await.assert_error(401, 40103);
    app.post_json("/logout", &json!({}), Some(&token)).await.assert_error(401, 40103);

    // A new login works after a logout.
    let again = app.login(&email, PASSWORD).await;
    let token = again.data()["token"].as_str().unwrap();
    assert_eq!(app.get("/user/me", Some(token)).await.status, 200);
}

#[tokio::test]
async fn register_login_me_logout_on_sqlite() {
    let app = spawn_app().await;
    signup_login_me_logout(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn register_login_me_logout_on_mariadb_and_redis() {
    let Some(app) = spawn_app_on(Backend::Servers).await else { return };
    signup_login_me_logout(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn forms_are_accepted_where_the_old_clients_sent_them() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", mall_testkit::unique_name("form"));
    let reply = app
        .post_form("/register", &[("email", &email), ("password", PASSWORD), ("confirm_password", PASSWORD)])
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = app.post_form("/login", &[("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.data()["token"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn bad_registrations_get_400_or_409() {
    let app = spawn_app().await;
    let register = |email: &str, password: &str, confirm: &str| {
        let body = json!({ "email": email, "password": password, "confirm_password": confirm });
        let app = &app;
        async move { app.post_json("/register", &body, None).await }
    };
    register("not-an-email", PASSWORD, PASSWORD).await.assert_error(400, 40001);
    register("", PASSWORD, PASSWORD).await.assert_error(400, 40001);
    register("a@b", PASSWORD, PASSWORD).await.assert_error(400, 40001);
    register("short@example.com", "1234567", "1234567").await.assert_error(400, 40001);
    let long = "x".repeat(129);
    register("long@example.com", &long, &long).await.assert_error(400, 40001);
    register("mismatch@example.com", PASSWORD, "something-else").await.assert_error(400, 40001);

    // Missing fields, JSON and form.
    app.post_json("/register", &json!({ "email": "x@example.com" }), None).await.assert_error(400, 40001);
    app.post_json("/register", &json!({}), None).await.assert_error(400, 40001);
    app.post_form("/register", &[("email", "x@example.com")]).await.assert_error(400, 40001);
    app.post_json(
        "/register",
        &json!({ "email": 5, "password": PASSWORD, "confirm_password": PASSWORD }),
        None,
    )
    .await
    .assert_error(400, 40001);

    // Taken, also when spelled differently.
    assert_eq!(app.register("taken@example.com").await.status, 201);
    app.register("taken@example.com").await.assert_error(409, 40901);
    app.register(" TAKEN@example.com").await.assert_error(409, 40901);
    app.stop().await;
}

#[tokio::test]
async fn wrong_credentials_get_the_same_401() {
    let app = spawn_app().await;
    assert_eq!(app.register("bob@example.com").await.status, 201);
    let wrong_password = app.login("bob@example.com", "not-the-password").await;
    wrong_password.assert_error(401, 40104);
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    unknown.assert_error(401, 40104);
    assert_eq!(wrong_password.body["msg"], unknown.body["msg"], "the two must not be told apart");
    app.login("not an email", PASSWORD).await.assert_error(401, 40104);
    app.post_json("/login", &json!({ "email": "bob@example.com" }), None).await.assert_error(400, 40001);
    app.stop().await;
}

#[tokio::test]
async fn the_seeded_admin_logs_in_as_admin() {
    let app = spawn_app().await;
    let reply = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.data()["token"].as_str().unwrap();
    let me = app.get("/user/me", Some(token)).await;
    assert_eq!(me.data()["role"], "admin");
    assert_eq!(me.data()["email"], ADMIN_EMAIL);
    app.stop().await;
}

#[tokio::test]
async fn login_and_register_are_rate_limited() {
    let limits = mall_gateway::Limits { per_address: 1000, per_email: 3, ..mall_gateway::Limits::UNLIMITED };
    let app = spawn_with(Options { limits, ..Options::default() }).await.unwrap();
    assert_eq!(app.register("carol@example.com").await.status, 201);
    for _ in 0..3 {
        app.login("carol@example.com", "wrong-password").await.assert_error(401, 40104);
    }
    let limited = app.login("carol@example.com", PASSWORD).await;
    limited.assert_error(429, 42901);
    let retry_after: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    // The limit is per email: another account still logs in.
    assert_eq!(app.register("dave@example.com").await.status, 201);
    assert_eq!(app.login("dave@example.com", PASSWORD).await.status, 200);

    let per_address =
        mall_gateway::Limits { per_address: 2, per_email: 1000, ..mall_gateway::Limits::UNLIMITED };
    let app2 = spawn_with(Options { limits: per_address, ..Options::default() }).await.unwrap();
    app2.login("a@example.com", PASSWORD).await.assert_error(401, 40104);
    app2.login("b@example.com", PASSWORD).await.assert_error(401, 40104);
    app2.login("c@example.com", PASSWORD).await.assert_error(429, 42901);
    app.stop().await;
    app2.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited_and_client_claims_are_not() {
    let limits = mall_gateway::Limits { per_address: 2, per_email: 1000, ..mall_gateway::Limits::UNLIMITED };
    let login_from = |app: &TestApp, forwarded: &'static str| {
        let (client, url) = (app.client.clone(), app.url.clone());
        async move {
            let r = client.post(format!("{url}/login")).header("x-forwarded-for", forwarded);
            r.json(&json!({ "email": "x@example.com", "password": PASSWORD }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // One trusted proxy: the right-most entry is the address it saw; what the client put left of it
    // (a made-up address per attempt) does not matter.
    let app = spawn_with(Options { limits, trusted_proxies: 1, ..Options::default() }).await.unwrap();
    assert_eq!(login_from(&app, "9.9.9.1, 203.0.113.7").await, 401);
    assert_eq!(login_from(&app, "9.9.9.2, 203.0.113.7").await, 401);
    assert_eq!(login_from(&app, "9.9.9.3, 203.0.113.7").await, 429);
    assert_eq!(login_from(&app, "203.0.113.8").await, 401, "another client behind the same proxy");
    app.stop().await;

    // No trusted proxy: the header is ignored, the connection's address counts.
    let app = spawn_with(Options { limits, ..Options::default() }).await.unwrap();
    assert_eq!(login_from(&app, "198.51.100.1").await, 401);
    assert_eq!(login_from(&app, "198.51.100.2").await, 401);
    assert_eq!(login_from(&app, "198.51.100.3").await, 429);
    app.stop().await;
}
