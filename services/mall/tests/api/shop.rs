//! The storefront over HTTP, as a browser without JavaScript sees it: every page's status and content,
//! escaping, the session cookie, CSRF, the admin area's refusals, static files and the page budget.
//! (`browser.rs` drives the same pages in a real Chromium.)

use std::collections::HashMap;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::json;

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Options, PASSWORD, TestApp, spawn_app, spawn_with,
};

/// A cookie-keeping client that does not follow redirects, so that each 303 is seen.
struct Visitor {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF field") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    #[track_caller]
    fn assert_has(&self, text: &str) {
        assert!(self.body.contains(text), "{text:?} is not on the page ({}):\n{}", self.status, self.body);
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl Visitor {
    fn new(app: &TestApp) -> Visitor {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Visitor { base: app.url.clone(), http, cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let response = req.header(header::COOKIE, self.cookie_header()).send().await.unwrap();
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        for c in page.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if c.contains("Max-Age=0") || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.send(req).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    async fn submit(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.post(path, &all).await
    }

    async fn log_in(&mut self, email: &str, password: &str) -> Page {
        self.submit("/shop/login", "/shop/login", &[("email", email), ("password", password)]).await
    }

    async fn register(&mut self) -> String {
        let email = format!("{}@example.com", mall_testkit::unique_name("shopper"));
        let fields = [("email", email.as_str()), ("password", PASSWORD), ("confirm_password", PASSWORD)];
        let page = self.submit("/shop/register", "/shop/register", &fields).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        email
    }
}

async fn demo_app() -> TestApp {
    spawn_with(Options { demo: true, ..Options::default() }).await.unwrap()
}

#[tokio::test]
async fn the_home_page_is_a_shop_with_categories_and_products() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    let home = v.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert_eq!(home.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    home.assert_has("<html lang=\"en\">");
    home.assert_has("<main id=\"main\"");
    for category in ["Apparel", "Books", "Electronics", "Kitchen", "Outdoors"] {
        home.assert_has(&format!("href=\"/shop/category/{category}\""));
    }
    home.assert_has("Blue Stoneware Mug");
    home.assert_has("€12.90");
    // Pictures are the embedded illustrations, by their hashed names.
    let picture = home.body.split("src=\"/static/images/products/blue-stoneware-mug.").nth(1).unwrap();
    assert!(picture.split('"').next().unwrap().ends_with(".svg"));
    // No inline code anywhere: the policy forbids it and the page needs none.
    let csp = home.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(!csp.contains("unsafe-inline") && csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !home.body.contains("<script") && !home.body.contains(" style=") && !home.body.contains("<style")
    );
    assert_eq!(home.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(home.headers[header::CACHE_CONTROL], "no-store");
    // The form cookie: script cannot read it, other sites' requests do not carry it.
    let csrf = home.set_cookies().into_iter().find(|c| c.starts_with("mall_csrf=")).unwrap();
    assert!(
        csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict") && csrf.contains("Path=/"),
        "{csrf}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_home_page_weighs_under_100_kb_before_pictures() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    let home = v.get("/").await;
    let css_at = home.body.find("/static/css/shop.").unwrap();
    let css_path = home.body[css_at..].split('"').next().unwrap().to_owned();
    let css = v.get(&css_path).await;
    assert_eq!(css.status, StatusCode::OK);
    let logo_at = home.body.find("/static/images/logo.").unwrap();
    let logo = v.get(home.body[logo_at..].split('"').next().unwrap()).await;
    let weight = home.body.len() + css.body.len() + logo.body.len();
    assert!(weight < 100 * 1024, "home page, stylesheet and logo weigh {weight} bytes");
    app.stop().await;
}

#[tokio::test]
async fn static_files_are_cached_for_a_year_by_hashed_name_and_an_hour_by_plain_name() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    let home = v.get("/").await;
    let at = home.body.find("/static/css/shop.").unwrap();
    let hashed = home.body[at..].split('"').next().unwrap().to_owned();
    let css = v.get(&hashed).await;
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(css.headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(css.body.contains(":focus-visible"));

    // The demo products' stored picture URLs resolve (they were 404 before the storefront).
    let r = app.get("/products/1", None).await;
    let picture = r.data()["picture"].as_str().unwrap().to_owned();
    assert_eq!(picture, "/static/images/products/blue-stoneware-mug.svg");
    let svg = v.get(&picture).await;
    assert_eq!(svg.status, StatusCode::OK);
    assert_eq!(svg.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert_eq!(svg.headers[header::CACHE_CONTROL], "public, max-age=3600");
    assert!(svg.body.starts_with("<svg"));
    // Revalidation by ETag.
    let etag = svg.headers[header::ETAG].to_str().unwrap().to_owned();
    let again = v.send(v.http.get(format!("{}{picture}", v.base)).header(header::IF_NONE_MATCH, etag)).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    assert_eq!(v.get("/static/images/products/nope.svg").await.status, StatusCode::NOT_FOUND);
    assert_eq!(v.get("/static/../Cargo.toml").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn every_demo_product_has_its_picture() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    let list = app.get("/products/list?page_size=100", None).await;
    let items = list.data()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 30);
    for p in items {
        let picture = p["picture"].as_str().unwrap();
        let svg = v.get(picture).await;
        assert_eq!(svg.status, StatusCode::OK, "{picture}");
        let name = p["name"].as_str().unwrap().replace('&', "&amp;");
        assert!(svg.body.contains(&format!("<title id=\"t\">{name}</title>")), "{picture} is not of {name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn browsing_category_search_and_product_pages() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);

    let books = v.get("/shop/category/Books").await;
    assert_eq!(books.status, StatusCode::OK);
    books.assert_has("<h1>Books</h1>");
    books.assert_has("Learning Rust, Second Edition");
    assert!(!books.body.contains("Blue Stoneware Mug"), "only books");
    assert_eq!(v.get("/shop/category/Nothing%20Here").await.status, StatusCode::NOT_FOUND);

    // Outdoors has 12 products: one page of 12; the search for a common word pages.
    let outdoors = v.get("/shop/category/Outdoors").await;
    outdoors.assert_has("12 products");
    let found = v.get("/shop/search?q=the").await;
    assert_eq!(found.status, StatusCode::OK);
    found.assert_has("Results for “the”");
    let total: usize =
        found.body.split("<p class=\"count\">").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    if total > 12 {
        found.assert_has("id=\"page-next\" rel=\"next\" href=\"/shop/search?q=the&amp;page=2\"");
        let second = v.get("/shop/search?q=the&page=2").await;
        second.assert_has("id=\"page-prev\"");
    }
    let none = v.get("/shop/search?q=zzzzqqq").await;
    none.assert_has("id=\"no-results\"");
    let long = "x".repeat(101);
    assert_eq!(v.get(&format!("/shop/search?q={long}")).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(v.get("/shop/search").await.status, StatusCode::OK, "an empty search asks for words");

    let mug = v.get("/shop/products/1").await;
    assert_eq!(mug.status, StatusCode::OK);
    mug.assert_has("<h1>Blue Stoneware Mug</h1>");
    mug.assert_has("id=\"stock\" class=\"stock in\">In stock");
    mug.assert_has("id=\"add-to-cart\"");
    mug.assert_has("<label for=\"quantity\">Quantity</label>");
    mug.assert_has("href=\"/shop/category/Kitchen\"");
    for missing in ["/shop/products/9999", "/shop/products/abc", "/shop/products/-1", "/shop/nowhere"] {
        let page = v.get(missing).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(page.body.contains("<!DOCTYPE html>"), "an HTML page, not JSON: {missing}");
    }
    app.stop().await;
}

#[tokio::test]
async fn user_text_is_escaped_everywhere_it_is_shown() {
    let app = demo_app().await;
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.data()["token"].as_str().unwrap().to_owned();
    let evil = "<script>alert(1)</script> & \"Friends\"";
    let body = json!({ "name": evil, "description": "<img src=x onerror=alert(2)>", "price": "5.00",
                       "stock": 3, "categories": ["<b>Bold</b>"] });
    let created = app.post_json("/product/create", &body, Some(&admin)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.data()["id"].as_i64().unwrap();

    let mut v = Visitor::new(&app);
    let pages = [
        format!("/shop/products/{id}"),
        "/shop/search?q=Friends".to_owned(),
        "/shop/category/%3Cb%3EBold%3C%2Fb%3E".to_owned(),
        "/shop/search?q=%3Cscript%3Ealert(3)%3C%2Fscript%3E".to_owned(),
    ];
    for path in &pages {
        let page = v.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(!page.body.contains("<script"), "{path} carries a script: {}", page.body);
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(!page.body.contains("<b>Bold"), "{path}");
    }
    let product = v.get(&pages[0]).await;
    product.assert_has("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Friends&quot;");
    app.stop().await;
}

#[tokio::test]
async fn a_shopper_buys_without_javascript_on_sqlite() {
    buys_without_javascript(demo_app().await).await;
}

#[tokio::test]
async fn a_shopper_buys_without_javascript_on_mariadb_and_redis() {
    let options = Options { backend: Backend::Servers, demo: true, ..Options::default() };
    let Some(app) = spawn_with(options).await else { return };
    buys_without_javascript(app).await;
}

/// A shopper registers, fills the cart, changes and removes lines, checks out past a mistake and a
/// malformed card, sees the order, and logs out.
async fn buys_without_javascript(app: TestApp) {
    let mut v = Visitor::new(&app);

    // Anonymous: the cart and an add ask for a login, then come back.
    let cart = v.get("/shop/cart").await;
    assert_eq!(cart.status, StatusCode::SEE_OTHER);
    assert_eq!(cart.location(), "/shop/login?next=%2Fshop%2Fcart");
    let add = v.submit("/shop/products/1", "/shop/cart/add", &[("product_id", "1"), ("quantity", "1")]).await;
    assert_eq!(add.location(), "/shop/login?next=%2Fshop%2Fproducts%2F1");

    let email = v.register().await;
    let session = v.cookies.get("mall_session").expect("registering logs in").clone();
    assert_eq!(session.split('.').count(), 3, "the session is the API's JWT");
    // The same token works as a bearer token on the API.
    let me = app.get("/user/me", Some(&session)).await;
    assert_eq!(me.data()["email"], email);

    let add = v.submit("/shop/products/1", "/shop/cart/add", &[("product_id", "1"), ("quantity", "2")]).await;
    assert_eq!(add.status, StatusCode::SEE_OTHER, "{}", add.body);
    assert_eq!(add.location(), "/shop/cart?added=1");
    v.submit("/shop/products/21", "/shop/cart/add", &[("product_id", "21"), ("quantity", "1")]).await;
    let cart = v.get("/shop/cart?added=1").await;
    cart.assert_has("Added to your cart.");
    cart.assert_has("tr data-product-id=\"1\"");
    cart.assert_has("tr data-product-id=\"21\"");
    cart.assert_has("id=\"qty-1\" type=\"number\" name=\"quantity\" min=\"0\" max=\"999\" value=\"2\"");

    // Quantity: set; a bad quantity is shown on the cart; remove a line.
    let set = v.submit("/shop/cart", "/shop/cart/set", &[("product_id", "1"), ("quantity", "3")]).await;
    assert_eq!(set.location(), "/shop/cart");
    let bad = v.submit("/shop/cart", "/shop/cart/set", &[("product_id", "1"), ("quantity", "abc")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    bad.assert_has("id=\"form-error\"");
    let too_many =
        v.submit("/shop/products/1", "/shop/cart/add", &[("product_id", "1"), ("quantity", "5000")]).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    too_many.assert_has("id=\"quantity-error\"");
    too_many.assert_has("aria-invalid=\"true\" aria-describedby=\"quantity-error\"");
    let removed = v.submit("/shop/cart", "/shop/cart/remove", &[("product_id", "21")]).await;
    assert_eq!(removed.location(), "/shop/cart");
    let cart = v.get("/shop/cart").await;
    assert!(!cart.body.contains("data-product-id=\"21\""));
    cart.assert_has("id=\"cart-total\" class=\"num\">€38.70");

    // Checkout: a field's mistake is shown on that field, and nothing is placed.
    let checkout = v.get("/shop/checkout").await;
    assert_eq!(checkout.status, StatusCode::OK);
    checkout.assert_has(&format!("name=\"email\" type=\"email\" value=\"{email}\""));
    let year = (time_now_year() + 2).to_string();
    let mut form = vec![
        ("firstname", "Ada"),
        ("lastname", "Lovelace"),
        ("email", email.as_str()),
        ("street_address", "1 Analytical Way"),
        ("city", ""),
        ("state", "Greater London"),
        ("country", "UK"),
        ("zip_code", "N1 9GU"),
        ("card_number", "4242 4242 4242 4242"),
        ("card_cvv", "123"),
        ("card_exp_month", "12"),
        ("card_exp_year", year.as_str()),
    ];
    let key = uuid_like(&checkout.body);
    form.push(("idempotency_key", &key));
    let refused = v.submit("/shop/checkout", "/shop/checkout", &form).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    refused.assert_has("id=\"city-error\">City is required");
    refused.assert_has("value=\"Greater London\"");
    assert!(!refused.body.contains("4242"), "the card number is never written back into a page");
    form[4] = ("city", "London");

    // A malformed card is refused at its field before an order exists.
    form[8] = ("card_number", "1234");
    let malformed = v.submit("/shop/checkout", "/shop/checkout", &form).await;
    assert_eq!(malformed.status, StatusCode::PAYMENT_REQUIRED);
    malformed.assert_has("id=\"card_number-error\"");
    let orders = app.get("/orders", Some(&session)).await;
    assert_eq!(orders.data()["total"], 0, "nothing was placed");

    form[8] = ("card_number", "4242 4242 4242 4242");
    let paid = v.submit("/shop/checkout", "/shop/checkout", &form).await;
    assert_eq!(paid.status, StatusCode::SEE_OTHER, "{}", paid.body);
    let confirmation = paid.location().to_owned();
    assert!(
        confirmation.starts_with("/shop/orders/") && confirmation.ends_with("?placed=1"),
        "{confirmation}"
    );
    let order_id = confirmation.trim_start_matches("/shop/orders/").trim_end_matches("?placed=1").to_owned();
    let page = v.get(&confirmation).await;
    page.assert_has("id=\"confirmation\"");
    page.assert_has(&format!("id=\"order-id\">{order_id}"));
    page.assert_has("id=\"order-status\">paid");
    page.assert_has("id=\"order-total\" class=\"num\">€38.70");

    let history = v.get("/shop/orders").await;
    history.assert_has(&format!("href=\"/shop/orders/{order_id}\""));
    v.get("/shop/cart").await.assert_has("id=\"cart-empty\"");
    // Another shopper cannot see it.
    let mut other = Visitor::new(&app);
    other.register().await;
    assert_eq!(other.get(&format!("/shop/orders/{order_id}")).await.status, StatusCode::NOT_FOUND);

    // Log out ends the session on the server too: the token is revoked.
    let out = v.submit("/", "/shop/logout", &[]).await;
    assert_eq!(out.location(), "/");
    assert!(out.set_cookies().iter().any(|c| c.starts_with("mall_session=;") && c.contains("Max-Age=0")));
    assert_eq!(app.get("/user/me", Some(&session)).await.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

fn time_now_year() -> i32 {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    1970 + (days as f64 / 365.2425) as i32
}

/// The form's idempotency key.
fn uuid_like(body: &str) -> String {
    let at = body.find("name=\"idempotency_key\" value=\"").unwrap() + 30;
    body[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_declined_card_is_shown_on_the_card_field_and_the_cart_is_kept() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    let email = v.register().await;
    v.submit("/shop/products/2", "/shop/cart/add", &[("product_id", "2"), ("quantity", "1")]).await;
    let year = (time_now_year() + 2).to_string();
    let checkout = v.get("/shop/checkout").await;
    let key = uuid_like(&checkout.body);
    let form = [
        ("firstname", "Grace"),
        ("lastname", "Hopper"),
        ("email", email.as_str()),
        ("street_address", "1 Harbor Rd"),
        ("city", "Arlington"),
        ("state", "VA"),
        ("country", "US"),
        ("zip_code", "22201"),
        ("card_number", "4000000000000002"),
        ("card_cvv", "123"),
        ("card_exp_month", "12"),
        ("card_exp_year", year.as_str()),
        ("idempotency_key", key.as_str()),
    ];
    let declined = v.submit("/shop/checkout", "/shop/checkout", &form).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.body);
    declined.assert_has("id=\"card_number-error\">Payment declined: the card was declined by the processor");
    declined.assert_has("value=\"Arlington\"");
    v.get("/shop/cart").await.assert_has("tr data-product-id=\"2\"");
    // The declined order was cancelled and its stock given back.
    let product = app.get("/products/2", None).await;
    assert_eq!(product.data()["stock"], 45);
    app.stop().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_or_from_another_site_are_refused() {
    let app = demo_app().await;
    let mut v = Visitor::new(&app);
    v.register().await;
    v.get("/").await;

    let missing = v.post("/shop/cart/add", &[("product_id", "1"), ("quantity", "1")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    missing.assert_has("reload the page");
    let wrong =
        v.post("/shop/cart/add", &[("product_id", "1"), ("quantity", "1"), ("csrf", &"A".repeat(43))]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);

    // The right token from another site's page (an attacker who somehow knew it) is refused by origin.
    let csrf = v.get("/").await.csrf();
    let req = v
        .http
        .post(format!("{}/shop/cart/add", v.base))
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("product_id", "1"), ("quantity", "1"), ("csrf", csrf.as_str())]);
    assert_eq!(v.send(req).await.status, StatusCode::FORBIDDEN);

    // A login form posted without the token does not log anyone in.
    let mut fresh = Visitor::new(&app);
    let login = fresh.post("/shop/login", &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)]).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert!(!fresh.cookies.contains_key("mall_session"));

    let session = v.cookies["mall_session"].clone();
    let cart = app.get("/cart", Some(&session)).await;
    assert_eq!(cart.data()["items"].as_array().unwrap().len(), 0, "nothing was added");
    app.stop().await;
}

#[tokio::test]
async fn login_errors_and_the_session_cookie() {
    let app = spawn_with(Options { trusted_proxies: 1, ..Options::default() }).await.unwrap();
    let mut v = Visitor::new(&app);
    let wrong = v.log_in(ADMIN_EMAIL, "not-the-password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    wrong.assert_has("id=\"form-error\" class=\"alert\" role=\"alert\">Wrong email or password");
    wrong.assert_has(&format!("value=\"{ADMIN_EMAIL}\""));

    let ok = v.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/");
    let cookie = ok.set_cookies().into_iter().find(|c| c.starts_with("mall_session=")).unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(cookie.contains("Max-Age="), "as long-lived as the token: {cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");

    // Behind a TLS-terminating proxy the cookies are Secure.
    let csrf = v.get("/shop/login").await.csrf();
    let req = v
        .http
        .post(format!("{}/shop/login", v.base))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.9")
        .form(&[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("csrf", csrf.as_str()),
            ("next", "//evil.example"),
        ]);
    let secure = v.send(req).await;
    assert_eq!(secure.location(), "/", "only local paths are followed");
    let cookie = secure.set_cookies().into_iter().find(|c| c.starts_with("mall_session=")).unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");

    // Registration errors are shown on their fields.
    let mut r = Visitor::new(&app);
    let page = r
        .submit(
            "/shop/register",
            "/shop/register",
            &[("email", "not-an-email"), ("password", PASSWORD), ("confirm_password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    page.assert_has("id=\"email-error\"");
    let page = r
        .submit(
            "/shop/register",
            "/shop/register",
            &[("email", ADMIN_EMAIL), ("password", PASSWORD), ("confirm_password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    page.assert_has("id=\"email-error\">An account with this email exists already");
    let page = r
        .submit(
            "/shop/register",
            "/shop/register",
            &[("email", "x@example.com"), ("password", "short"), ("confirm_password", "short")],
        )
        .await;
    page.assert_has("id=\"password-error\"");

    // A session whose token was revoked is anonymous, and the cookie is cleared.
    let token = v.cookies["mall_session"].clone();
    app.post_json("/logout", &json!({}), Some(&token)).await;
    let home = v.get("/").await;
    home.assert_has("id=\"nav-login\"");
    assert!(home.set_cookies().iter().any(|c| c.starts_with("mall_session=;")), "{:?}", home.set_cookies());
    app.stop().await;
}

#[tokio::test]
async fn the_admin_area_is_for_admins_only() {
    let app = demo_app().await;
    let admin_pages =
        ["/shop/admin", "/shop/admin/products/new", "/shop/admin/products/1", "/shop/admin/orders"];

    let mut anonymous = Visitor::new(&app);
    for path in admin_pages {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(page.location().starts_with("/shop/login?next="), "{path}: {}", page.location());
    }
    let mut customer = Visitor::new(&app);
    customer.register().await;
    for path in admin_pages {
        assert_eq!(customer.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(!customer.get("/").await.body.contains("nav-admin"));
    let create = customer
        .submit("/", "/shop/admin/products", &[("name", "Sneaky"), ("price", "1.00"), ("stock", "1")])
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    let mark =
        customer.submit("/", "/shop/admin/orders/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/mark-paid", &[]).await;
    assert_eq!(mark.status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_manages_products_and_marks_orders_paid() {
    let app = demo_app().await;
    let mut admin = Visitor::new(&app);
    admin.log_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let list = admin.get("/shop/admin").await;
    assert_eq!(list.status, StatusCode::OK);
    list.assert_has("id=\"nav-admin\"");
    list.assert_has("Blue Stoneware Mug");
    list.assert_has("id=\"page-next\"");

    // Create: mistakes on their fields, then a product.
    let fields = |price: &'static str, picture: &'static str| {
        vec![
            ("name", "Aurora Teapot"),
            ("description", "Glazed stoneware, 1 l."),
            ("price", price),
            ("stock", "5"),
            ("categories", "Kitchen, Gifts"),
            ("picture", picture),
        ]
    };
    let bad = admin.submit("/shop/admin/products/new", "/shop/admin/products", &fields("12.345", "")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    bad.assert_has("id=\"price-error\"");
    bad.assert_has("value=\"Aurora Teapot\"");
    let bad = admin
        .submit("/shop/admin/products/new", "/shop/admin/products", &fields("27.50", "javascript:alert(1)"))
        .await;
    bad.assert_has("id=\"picture-error\"");
    let made = admin
        .submit(
            "/shop/admin/products/new",
            "/shop/admin/products",
            &fields("27.50", "https://img.example/teapot.png"),
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let edit_path = made.location().trim_end_matches("?saved=1").to_owned();
    let id: i64 = edit_path.rsplit('/').next().unwrap().parse().unwrap();
    let p = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(p.data()["price_cents"], 2750);
    assert_eq!(p.data()["categories"], json!(["Kitchen", "Gifts"]));
    assert_eq!(p.data()["picture"], "https://img.example/teapot.png");
    let shown = admin.get(&format!("/shop/products/{id}")).await;
    shown.assert_has("src=\"https://img.example/teapot.png\"");
    shown.assert_has("Only 5 left");

    // Edit: price and stock.
    let edit = admin.get(&edit_path).await;
    edit.assert_has("value=\"27.50\"");
    let mut changed = fields("29.00", "");
    changed[3] = ("stock", "0");
    let saved = admin.submit(&edit_path, &edit_path, &changed).await;
    assert_eq!(saved.location(), format!("{edit_path}?saved=1"));
    let p = app.get(&format!("/products/{id}"), None).await;
    assert_eq!((p.data()["price_cents"].as_i64(), p.data()["stock"].as_i64()), (Some(2900), Some(0)));
    admin.get(&format!("/shop/products/{id}")).await.assert_has("Out of stock");

    // Delete.
    let deleted = admin.submit(&edit_path, &format!("{edit_path}/delete"), &[]).await;
    assert_eq!(deleted.location(), "/shop/admin?deleted=1");
    assert_eq!(app.get(&format!("/products/{id}"), None).await.status, StatusCode::NOT_FOUND);

    // Orders: a customer's unpaid order is marked paid from the admin list.
    let (_, token) = app.customer().await;
    let body = json!({ "email": "c@example.com", "items": [{ "product_id": 3, "quantity": 1 }],
        "address": { "street_address": "1 Main St", "city": "Springfield", "state": "IL", "country": "US", "zip_code": "62701" } });
    let placed = app.post_json("/order/place", &body, Some(&token)).await;
    let order_id = placed.data()["order_id"].as_str().unwrap().to_owned();
    let orders = admin.get("/shop/admin/orders?status=pending").await;
    orders.assert_has(&format!("id=\"mark-paid-{order_id}\""));
    let marked =
        admin.submit("/shop/admin/orders", &format!("/shop/admin/orders/{order_id}/mark-paid"), &[]).await;
    assert_eq!(marked.location(), "/shop/admin/orders?marked=1");
    let o = app.get(&format!("/orders/{order_id}"), Some(&token)).await;
    assert_eq!(o.data()["status"], "paid");
    let paid = admin.get("/shop/admin/orders?status=paid").await;
    paid.assert_has(&format!("data-order-id=\"{order_id}\""));
    assert!(!admin.get("/shop/admin/orders?status=pending").await.body.contains(&order_id));
    app.stop().await;
}

#[tokio::test]
async fn the_api_is_unchanged_beside_the_storefront() {
    let app = spawn_app().await;
    // API routes keep their JSON, including the ones whose names the storefront's pages resemble.
    app.get("/cart", None).await.assert_error(401, 40101);
    app.get("/no/such/route", None).await.assert_error(404, 40402);
    app.get("/login", None).await.assert_error(405, 40501);
    let (_, token) = app.customer().await;
    let cart = app.get("/cart", Some(&token)).await;
    assert_eq!(cart.status, StatusCode::OK);
    // The API answers bearer tokens only: a session cookie alone is not a login there.
    let mut v = Visitor::new(&app);
    v.register().await;
    let req = v.http.get(format!("{}/user/me", v.base));
    let page = v.send(req).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
