//! The storefront in a real browser: headless Chromium driven over WebDriver (chromedriver), clicking
//! and typing as a shopper does, against a whole mall with the demo catalog. Each scenario is a test
//! with its own mall and browser; every step leaves a screenshot (see [`driver`] for where, and for
//! when the tests are skipped).

mod driver;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use driver::{Browser, DESKTOP, run};

/// The processor's test card that it always declines (payment's `DECLINED_TEST_CARD`).
const DECLINED_CARD: &str = "4000000000000002";
/// A Luhn-valid number the processor approves.
const APPROVED_CARD: &str = "4242 4242 4242 4242";

/// "€12.50" → 1250.
fn cents(text: &str) -> Result<i64> {
    let number = text.trim().trim_start_matches('€').trim().replace(',', "");
    let (euros, frac) = number.split_once('.').with_context(|| format!("not a price: {text:?}"))?;
    ensure!(frac.len() == 2, "not a price with two decimals: {text:?}");
    let euros: i64 = euros.parse().with_context(|| format!("not a price: {text:?}"))?;
    let frac: i64 = frac.parse().with_context(|| format!("not a price: {text:?}"))?;
    Ok(euros * 100 + frac)
}

fn euros(cents: i64) -> String {
    format!("€{}.{:02}", cents / 100, cents % 100)
}

/// The `id` in `…/shop/products/{id}`.
fn product_id(href: &str) -> Result<i64> {
    let tail = href
        .rsplit_once("/shop/products/")
        .map(|(_, t)| t)
        .with_context(|| format!("not a product link: {href}"))?;
    tail.split(['?', '#']).next().unwrap_or("").parse().with_context(|| format!("not a product link: {href}"))
}

async fn is_logged_in(b: &Browser) -> Result<bool> {
    Ok(b.exists("#nav-orders").await? && b.exists("button#nav-logout").await?)
}

/// Registers a new shopper from the header's link; returns the email. Leaves the browser logged in on
/// the home page.
async fn register(b: &Browser, shot: &str) -> Result<String> {
    let email = format!("{}@example.com", mall_testkit::unique_name("shopper"));
    b.click_through("#nav-register").await?;
    b.wait_path("/shop/register", |p| p.starts_with("/shop/register")).await?;
    b.find("#register-form").await?;
    b.fill("#email", &email).await?;
    b.fill("#password", PASSWORD).await?;
    b.fill("#confirm_password", PASSWORD).await?;
    b.shot(&format!("{shot}-form")).await?;
    b.click_through("button#register-button").await?;
    b.wait_path("the home page", |p| p == "/").await?;
    ensure!(is_logged_in(b).await?, "after registering, the header should offer Orders and Log out");
    b.absent("#nav-register", "a registered shopper is logged in").await?;
    b.absent("#nav-admin", "a new shopper is no admin").await?;
    b.shot(&format!("{shot}-done")).await?;
    Ok(email)
}

/// What a product line in the cart came from.
struct Line {
    id: i64,
    name: String,
    price: i64,
}

/// Searches `query` from the header, opens the result whose name contains `name`, adds `quantity`.
async fn search_and_add(b: &Browser, query: &str, name: &str, quantity: u32) -> Result<Line> {
    b.fill("#search-q", query).await?;
    b.click_through("form.search button[type=submit]").await?;
    b.wait_path("the search results", |p| p.starts_with("/shop/search?")).await?;
    let path = b.path().await?;
    ensure!(path.contains(&format!("q={query}")), "the search should be for {query:?}: {path}");
    b.find("ul.grid li.card").await.with_context(|| format!("no result for {query:?}"))?;
    b.shot(&format!("search-{query}")).await?;
    let mut found = None;
    for link in b.all(r#"ul.grid li.card a[href^="/shop/products/"]"#).await? {
        let text = link.find(fantoccini::Locator::Css("span.name")).await?.text().await?;
        if text.to_lowercase().contains(&name.to_lowercase()) {
            found = Some((link, text));
            break;
        }
    }
    let Some((link, card_name)) = found else {
        bail!("no result named like {name:?} for the search {query:?}")
    };
    let href = link.attr("href").await?.unwrap_or_default();
    let id = product_id(&href)?;
    b.through(link, &href).await?;
    b.wait_path("the product page", |p| p == format!("/shop/products/{id}")).await?;
    let h1 = b.text("h1").await?;
    ensure!(h1 == card_name.trim(), "the product page is titled {h1:?}, its card said {card_name:?}");
    let price = cents(&b.text("p.price").await?)?;
    b.fill("#add-to-cart input#quantity", &quantity.to_string()).await?;
    b.shot(&format!("product-{id}")).await?;
    b.click_through("button#add-button").await?;
    b.wait_path("the cart, after adding", |p| p == "/shop/cart?added=1").await?;
    let row = format!(r#"tr[data-product-id="{id}"]"#);
    b.find(&row).await.with_context(|| format!("{h1:?} should be in the cart"))?;
    b.shot(&format!("cart-added-{id}")).await?;
    Ok(Line { id, name: h1, price })
}

/// What the checkout form is filled with.
struct Shipping<'a> {
    city: &'a str,
    card: &'a str,
}

async fn expiry_year(b: &Browser) -> Result<i64> {
    let year = b.js("return new Date().getFullYear()").await?;
    year.as_i64().map(|y| y + 3).with_context(|| format!("the year: {year}"))
}

/// Fills every field of the checkout form but the email, which the page fills with the shopper's.
async fn fill_checkout(b: &Browser, s: &Shipping<'_>) -> Result<()> {
    b.find("#checkout-form").await?;
    let year = expiry_year(b).await?.to_string();
    let fields = [
        ("#firstname", "Ada"),
        ("#lastname", "Lovelace"),
        ("#street_address", "12 Analytical Row"),
        ("#city", s.city),
        ("#state", "Greater London"),
        ("#country", "United Kingdom"),
        ("#zip_code", "NW1 2AB"),
        ("#card_number", s.card),
        ("#card_cvv", "123"),
        ("#card_exp_month", "12"),
        ("#card_exp_year", year.as_str()),
    ];
    for (selector, value) in fields {
        b.fill(selector, value).await?;
    }
    Ok(())
}

/// The cart's total as shown.
async fn cart_total(b: &Browser) -> Result<i64> {
    cents(&b.text("#cart-total").await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shopper_buys_from_search_to_history() {
    run("a_new_shopper_buys_from_search_to_history", |b| async move {
        b.open("/").await?;
        b.find(r#"ul.grid li.card a[href^="/shop/products/"] span.name"#).await?;
        b.shot("home").await?;
        let email = register(&b, "register").await?;

        let mug = search_and_add(&b, "mug", "mug", 1).await?;
        let keyboard = search_and_add(&b, "keyboard", "keyboard", 1).await?;
        ensure!(mug.id != keyboard.id, "two different products");

        // The cart: both lines at the product pages' prices.
        let (m, k) = (mug.id, keyboard.id);
        for line in [&mug, &keyboard] {
            let price = b.text(&format!(r#"tr[data-product-id="{}"] td.num"#, line.id)).await?;
            ensure!(
                cents(&price)? == line.price,
                "{} costs {} in the cart, {} on its page",
                line.name,
                price,
                euros(line.price)
            );
        }
        let before = cart_total(&b).await?;
        ensure!(
            before == mug.price + keyboard.price,
            "the total {} should be {}",
            euros(before),
            euros(mug.price + keyboard.price)
        );

        // Three mugs.
        b.fill(&format!("input#qty-{m}"), "3").await?;
        b.click_through(&format!("button#update-{m}")).await?;
        b.wait_path("the cart", |p| p == "/shop/cart").await?;
        let qty = b.value(&format!("input#qty-{m}")).await?;
        ensure!(qty == "3", "the mug's quantity should read 3, reads {qty:?}");
        let expected = 3 * mug.price + keyboard.price;
        let total = cart_total(&b).await?;
        ensure!(
            total == expected,
            "after 3 mugs the total is {}, expected {}",
            euros(total),
            euros(expected)
        );
        ensure!(total != before, "the total should have changed from {}", euros(before));
        b.shot("cart-three-mugs").await?;

        // No keyboard after all.
        b.click_through(&format!("button#remove-{k}")).await?;
        b.wait_path("the cart", |p| p == "/shop/cart").await?;
        b.find(&format!(r#"tr[data-product-id="{m}"]"#)).await?;
        b.absent(&format!(r#"tr[data-product-id="{k}"]"#), "the keyboard was removed").await?;
        let total = cart_total(&b).await?;
        ensure!(
            total == 3 * mug.price,
            "after removing the keyboard the total is {}, expected {}",
            euros(total),
            euros(3 * mug.price)
        );
        b.shot("cart-keyboard-removed").await?;

        // Checkout.
        b.click_through("a#checkout-link").await?;
        b.wait_path("the checkout", |p| p == "/shop/checkout").await?;
        let prefilled = b.value("#email").await?;
        ensure!(
            prefilled == email,
            "the checkout's email should be the shopper's ({email}), is {prefilled:?}"
        );
        let shown = cents(&b.text("#checkout-total").await?)?;
        ensure!(
            shown == 3 * mug.price,
            "the checkout's total is {}, expected {}",
            euros(shown),
            euros(3 * mug.price)
        );
        fill_checkout(&b, &Shipping { city: "London", card: APPROVED_CARD }).await?;
        b.shot("checkout-filled").await?;
        b.click_through("button#place-order").await?;
        let placed = b
            .wait_path("the new order's page", |p| p.starts_with("/shop/orders/") && p.ends_with("?placed=1"))
            .await?;
        b.find("#confirmation").await?;
        let order_id = b.text("#order-id").await?;
        ensure!(
            placed == format!("/shop/orders/{order_id}?placed=1"),
            "the page {placed} should be order {order_id}'s"
        );
        let status = b.text("#order-status").await?;
        ensure!(status == "paid", "the order's status is {status:?}, expected \"paid\"");
        let paid = cents(&b.text("#order-total").await?)?;
        ensure!(
            paid == 3 * mug.price,
            "the order's total is {}, expected {}",
            euros(paid),
            euros(3 * mug.price)
        );
        b.shot("order-confirmation").await?;

        // The history has it, and the cart is empty.
        b.click_through("#nav-orders").await?;
        b.wait_path("the orders", |p| p == "/shop/orders").await?;
        let row = format!(r#"tr[data-order-id="{order_id}"]"#);
        b.find(&row).await.with_context(|| format!("order {order_id} should be listed"))?;
        let row_text = b.text(&row).await?;
        ensure!(row_text.contains("paid"), "the order's row should say paid: {row_text:?}");
        b.shot("orders").await?;
        b.click_through(&format!("{row} a.order-link")).await?;
        b.wait_path("the order's page", |p| p == format!("/shop/orders/{order_id}")).await?;
        ensure!(b.text("#order-id").await? == order_id, "the link leads to the order");
        b.click_through("#nav-cart").await?;
        b.wait_path("the cart", |p| p == "/shop/cart").await?;
        b.find("#cart-empty").await.context("the cart should be empty after the order")?;
        b.shot("cart-empty").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_shown_at_the_card_field_and_the_cart_is_kept() {
    run("a_declined_card_is_shown_at_the_card_field_and_the_cart_is_kept", |b| async move {
        b.open("/").await?;
        register(&b, "register").await?;
        let line = search_and_add(&b, "skillet", "skillet", 1).await?;
        let row = format!(r#"tr[data-product-id="{}"]"#, line.id);

        // A malformed number never leaves the form: no order.
        b.click_through("a#checkout-link").await?;
        b.wait_path("the checkout", |p| p == "/shop/checkout").await?;
        fill_checkout(&b, &Shipping { city: "Lisbon", card: "1234" }).await?;
        b.click_through("button#place-order").await?;
        b.wait_path("the checkout", |p| p == "/shop/checkout").await?;
        let error = b.text("#card_number-error").await?;
        ensure!(error.to_lowercase().contains("card number"), "the malformed card's error: {error:?}");
        ensure!(
            b.attr("#card_number", "aria-invalid").await?.as_deref() == Some("true"),
            "#card_number should be aria-invalid"
        );
        b.shot_at("checkout-malformed-card", "#card_number-error").await?;
        b.click_through("#nav-orders").await?;
        b.find("#no-orders").await.context("a malformed card places no order")?;
        b.shot("orders-none").await?;

        // The processor's decline: shown at the card number, the rest of the form kept.
        b.click_through("#nav-cart").await?;
        b.find(&row).await?;
        b.click_through("a#checkout-link").await?;
        b.wait_path("the checkout", |p| p == "/shop/checkout").await?;
        fill_checkout(&b, &Shipping { city: "Porto", card: DECLINED_CARD }).await?;
        b.click_through("button#place-order").await?;
        let error =
            b.text("#card_number-error").await.context("the decline should be shown at the card number")?;
        ensure!(
            error.to_lowercase().contains("declined"),
            "#card_number-error should say declined: {error:?}"
        );
        let card = "#card_number";
        ensure!(
            b.attr(card, "aria-invalid").await?.as_deref() == Some("true"),
            "#card_number should be aria-invalid=true"
        );
        let described = b.attr(card, "aria-describedby").await?;
        ensure!(
            described.as_deref() == Some("card_number-error"),
            "#card_number's aria-describedby: {described:?}"
        );
        for (field, typed) in
            [("#city", "Porto"), ("#firstname", "Ada"), ("#zip_code", "NW1 2AB"), ("#card_exp_month", "12")]
        {
            let value = b.value(field).await?;
            ensure!(value == typed, "{field} should keep {typed:?} after the decline, has {value:?}");
        }
        let number = b.value(card).await?;
        ensure!(number.is_empty(), "the card number must not be sent back to the page, it has {number:?}");
        b.absent("#confirmation", "the card was declined").await?;
        b.shot_at("checkout-declined", "#card_number-error").await?;

        b.click_through("#nav-cart").await?;
        b.wait_path("the cart", |p| p == "/shop/cart").await?;
        b.find(&row).await.context("the cart keeps its line after a decline")?;
        let qty = b.value(&format!("input#qty-{}", line.id)).await?;
        ensure!(qty == "1", "the line's quantity is kept: {qty:?}");
        b.shot("cart-kept").await?;

        // Its order was placed and cancelled; nothing is paid.
        b.click_through("#nav-orders").await?;
        b.wait_path("the orders", |p| p == "/shop/orders").await?;
        let rows = b.all("tr[data-order-id]").await?;
        let mut statuses = Vec::new();
        for r in &rows {
            statuses.push(r.find(fantoccini::Locator::Css("span.status")).await?.text().await?);
        }
        ensure!(
            statuses == ["cancelled"],
            "after one decline the orders should be one cancelled order: {statuses:?}"
        );
        b.shot("orders-cancelled").await?;

        // The same cart goes through with a good card: a corrected form is a new attempt.
        b.click_through("#nav-cart").await?;
        b.click_through("a#checkout-link").await?;
        b.wait_path("the checkout", |p| p == "/shop/checkout").await?;
        fill_checkout(&b, &Shipping { city: "Porto", card: APPROVED_CARD }).await?;
        b.click_through("button#place-order").await?;
        b.wait_path("the new order's page", |p| p.starts_with("/shop/orders/") && p.ends_with("?placed=1"))
            .await?;
        let status = b.text("#order-status").await?;
        ensure!(status == "paid", "the retry's order is {status:?}, expected paid");
        b.shot("retry-paid").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_product_and_a_shopper_finds_it() {
    run("an_admin_creates_a_product_and_a_shopper_finds_it", |b| async move {
        let name = "Aurora Teapot <script>";
        let description = "Cast iron, 0.8 l. <img src=x onerror=\"document.title='pwned'\"> & more";

        b.open("/").await?;
        b.click_through("#nav-login").await?;
        b.wait_path("the login page", |p| p.starts_with("/shop/login")).await?;
        b.fill("#email", ADMIN_EMAIL).await?;
        b.fill("#password", "not-the-password").await?;
        b.click_through("button#login-button").await?;
        let error = b.text("#form-error").await.context("a wrong password is refused on the form")?;
        ensure!(error.to_lowercase().contains("wrong"), "the login error: {error:?}");
        ensure!(!is_logged_in(&b).await?, "a wrong password logs no one in");
        b.shot("login-wrong-password").await?;
        b.fill("#password", ADMIN_PASSWORD).await?;
        b.click_through("button#login-button").await?;
        b.wait_path("the home page", |p| p == "/").await?;
        ensure!(is_logged_in(&b).await?, "the admin is logged in");

        b.click_through("#nav-admin").await?;
        b.wait_path("the admin's products", |p| p == "/shop/admin").await?;
        b.shot("admin").await?;
        b.click_through("a#new-product").await?;
        b.wait_path("the new product form", |p| p == "/shop/admin/products/new").await?;
        b.fill("#product-form #name", name).await?;
        b.fill("#product-form textarea#description", description).await?;
        b.fill("#product-form #price", "27.50").await?;
        b.fill("#product-form #stock", "5").await?;
        b.fill("#product-form #categories", "Kitchen").await?;
        b.shot("new-product-filled").await?;
        b.click_through("button#save-product").await?;
        let saved = b
            .wait_path("the saved product", |p| {
                p.starts_with("/shop/admin/products/") && p.ends_with("?saved=1")
            })
            .await?;
        let id: i64 = saved
            .trim_start_matches("/shop/admin/products/")
            .trim_end_matches("?saved=1")
            .parse()
            .with_context(|| format!("a product id in {saved}"))?;
        ensure!(b.value("#name").await? == name, "the edit form shows the name as typed");
        ensure!(b.value("#price").await? == "27.50", "the edit form shows the price");
        b.find("#notice").await?;
        b.shot("product-saved").await?;

        // The shop's page: the name and description are text, nothing ran.
        b.open(&format!("/shop/products/{id}")).await?;
        let h1 = b.text("h1").await?;
        ensure!(h1 == name, "the product page's h1 is {h1:?}, expected exactly {name:?}");
        let shown = b.text("p.description").await?;
        ensure!(shown == description, "the description is shown as typed: {shown:?}");
        let scripts = b.js("return document.querySelectorAll('script').length").await?;
        ensure!(scripts == json!(0), "the page has {scripts} script elements: the name was not escaped");
        let images = b.js("return document.querySelectorAll('img[src=\"x\"]').length").await?;
        ensure!(images == json!(0), "the description's markup became {images} img elements");
        let title = b.js("return document.title").await?;
        ensure!(title == json!(format!("{name} · Mall")), "the page's title: {title}");
        if let Ok(text) = b.client().get_alert_text().await {
            bail!("an alert is open: {text:?}");
        }
        b.shot("shop-product-page").await?;

        // Logged out, a new shopper finds it.
        b.click_through("button#nav-logout").await?;
        b.wait_path("the home page", |p| p == "/").await?;
        b.find("#nav-login").await.context("logged out, the header offers Log in")?;
        b.absent("#nav-admin", "logged out").await?;
        b.open("/shop/admin").await?;
        b.wait_path("the login page", |p| p.starts_with("/shop/login?next=")).await?;
        b.open("/").await?;
        register(&b, "register").await?;
        b.fill("#search-q", "Aurora").await?;
        b.click_through("form.search button[type=submit]").await?;
        b.wait_path("the search results", |p| p.starts_with("/shop/search?q=Aurora")).await?;
        let link = format!(r#"ul.grid li.card a[href="/shop/products/{id}"]"#);
        let card =
            b.text(&format!("{link} span.name")).await.context("the new product is found by search")?;
        ensure!(card == name, "the card's name is {card:?}, expected {name:?}");
        b.shot("search-aurora").await?;
        b.click_through(&link).await?;
        b.wait_path("the product page", |p| p == format!("/shop/products/{id}")).await?;
        ensure!(b.text("h1").await? == name, "the product page's h1");
        let price = b.text("p.price").await?;
        ensure!(price == "€27.50", "the price shows as {price:?}, expected €27.50");
        let stock = b.text("#stock").await?;
        ensure!(stock == "Only 5 left", "the stock shows as {stock:?}, expected \"Only 5 left\"");
        let tags = b.text("p.tags").await?;
        ensure!(tags.contains("Kitchen"), "the product is in Kitchen: {tags:?}");
        b.shot("shopper-product-page").await?;
        Ok(())
    })
    .await;
}

/// axe-core's script: `MALL_AXE_JS`, else `<target>/npm/node_modules/axe-core/axe.min.js` (where
/// .ci/run installs it); `None` (skip) when neither is there, a failure in CI.
fn axe_source() -> Option<String> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).or_else(|| {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map(std::path::Path::to_path_buf)
    });
    let path = match std::env::var_os("MALL_AXE_JS").filter(|v| !v.is_empty()) {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None => target.map(|t| t.join("npm/node_modules/axe-core/axe.min.js")).filter(|p| p.is_file()),
    };
    match path.map(|p| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))) {
        Some(Ok(source)) => Some(source),
        Some(Err(e)) => panic!("MALL_AXE_JS cannot be read: {e}"),
        None if driver::required() => panic!(
            "axe-core not found (MALL_AXE_JS, or $CARGO_TARGET_DIR/npm/node_modules/axe-core/axe.min.js) and \
             CI=true or MALL_BROWSER_REQUIRE=1: the accessibility test must not be skipped"
        ),
        None => {
            eprintln!("note: axe-core not found (set MALL_AXE_JS); skipping the accessibility test");
            None
        }
    }
}

const RUN_AXE: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] }).then(
  (r) => done({ violations: r.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map((n) => ({ target: n.target, html: n.html, summary: n.failureSummary })),
  })), version: axe.version }),
  (e) => done({ error: String((e && e.stack) || e) }),
);
"#;

/// Runs axe on the page `name` shows: prints every violation, adds it to `found`, and returns the
/// serious and critical ones.
async fn axe(b: &Browser, axe_js: &str, name: &str, found: &mut Vec<String>) -> Result<Vec<String>> {
    b.client().execute(axe_js, vec![]).await.context("inject axe-core")?;
    let loaded =
        b.js("return typeof window.axe === 'object' && typeof window.axe.run === 'function'").await?;
    ensure!(loaded == json!(true), "axe-core did not load into {name} (the page's CSP?)");
    let result = b.client().execute_async(RUN_AXE, vec![]).await.context("run axe")?;
    if let Some(e) = result.get("error") {
        bail!("axe failed on {name}: {e}");
    }
    let mut serious = Vec::new();
    let violations = result["violations"].as_array().cloned().unwrap_or_default();
    eprintln!(
        "axe {} on {name}: {} violation(s)",
        result["version"].as_str().unwrap_or("?"),
        violations.len()
    );
    for v in &violations {
        let impact = v["impact"].as_str().unwrap_or("none");
        let targets: Vec<String> = v["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().map(|n| n["target"].to_string()).collect())
            .unwrap_or_default();
        let line = format!(
            "{name}: [{impact}] {} — {} ({}) at {}",
            v["id"].as_str().unwrap_or("?"),
            v["help"].as_str().unwrap_or(""),
            v["helpUrl"].as_str().unwrap_or(""),
            targets.join(", ")
        );
        eprintln!("  {line}");
        for n in v["nodes"].as_array().into_iter().flatten() {
            eprintln!(
                "      {} :: {}",
                n["html"].as_str().unwrap_or(""),
                n["summary"].as_str().unwrap_or("").replace('\n', " ")
            );
        }
        if matches!(impact, "serious" | "critical") {
            serious.push(line.clone());
        }
        found.push(line);
    }
    Ok(serious)
}

/// The document's scroll width, its client width and the window's inner width.
const WIDTHS: &str =
    "const d = document.documentElement; return [d.scrollWidth, d.clientWidth, window.innerWidth]";

/// Up to 12 elements past the page's right edge, each with its right edge and CSS position.
const PAST_THE_EDGE: &str = r#"
const edge = document.documentElement.clientWidth;
const name = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
  + (typeof e.className === 'string' && e.className
    ? '.' + e.className.trim().split(/\s+/).join('.') : '');
return Array.from(document.querySelectorAll('body *'))
  .filter((e) => e.getBoundingClientRect().right > edge + 0.5)
  .slice(0, 12)
  .map((e) => [name(e), Math.round(e.getBoundingClientRect().right) + 'px', getComputedStyle(e).position]
    .join(' '));
"#;

/// At 360px the page fits: nothing sticks out sideways. `Some(why)` when something does.
async fn phone_overflow(b: &Browser, name: &str) -> Result<Option<String>> {
    let widths = b.js(WIDTHS).await?;
    if widths[0].as_i64().is_some_and(|scroll| scroll <= 360) {
        return Ok(None);
    }
    let wide = b.js(PAST_THE_EDGE).await?;
    Ok(Some(format!(
        "{name} overflows at 360px: document scrollWidth, clientWidth, innerWidth = {widths}; \
         past the edge: {wide}"
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_no_serious_accessibility_violations() {
    let Some(axe_js) = axe_source() else { return };
    run("pages_have_no_serious_accessibility_violations", |b| async move {
        let axe_js = axe_js.as_str();
        let mut found = Vec::new();
        let mut serious = Vec::new();

        b.open("/").await?;
        b.find("ul.grid li.card").await?;
        serious.extend(axe(&b, axe_js, "home", &mut found).await?);
        b.shot("home").await?;

        let first =
            b.attr(r#"ul.grid li.card a[href^="/shop/products/"]"#, "href").await?.unwrap_or_default();
        let product = format!("/shop/products/{}", product_id(&first)?);
        b.open(&product).await?;
        b.find("h1").await?;
        serious.extend(axe(&b, axe_js, "product", &mut found).await?);
        b.shot("product").await?;

        register(&b, "register").await?;
        b.open(&product).await?;
        b.click_through("button#add-button").await?;
        b.wait_path("the cart", |p| p == "/shop/cart?added=1").await?;
        b.find("tr[data-product-id]").await?;
        serious.extend(axe(&b, axe_js, "cart", &mut found).await?);
        b.shot("cart").await?;

        b.open("/shop/checkout").await?;
        b.find("#checkout-form").await?;
        serious.extend(axe(&b, axe_js, "checkout", &mut found).await?);
        b.shot("checkout").await?;

        // The form as it comes back with an error on a field.
        b.click_through("button#place-order").await?;
        b.find(".field-error").await?;
        serious.extend(axe(&b, axe_js, "checkout with an error", &mut found).await?);
        b.shot_at("checkout-error", ".field-error").await?;

        // A phone's width: every page fits, and is photographed.
        b.resize(360, 800).await?;
        let mut overflows = Vec::new();
        for (name, path) in [
            ("home", "/"),
            ("product", product.as_str()),
            ("cart", "/shop/cart"),
            ("checkout", "/shop/checkout"),
        ] {
            b.open(path).await?;
            b.find("main").await?;
            overflows.extend(phone_overflow(&b, name).await?);
            b.shot(&format!("360-{name}")).await?;
            match name {
                "cart" => b.shot_at("360-cart-total", "#cart-total").await?,
                "checkout" => {
                    b.shot_at("360-checkout-card", "#card_number").await?;
                    b.shot_at("360-checkout-summary", "#checkout-total").await?;
                }
                _ => {}
            }
        }
        let (w, h) = DESKTOP;
        b.resize(w, h).await?;

        eprintln!("axe: {} violation(s) in all: {found:#?}", found.len());
        let mut problems = serious;
        problems.extend(overflows);
        ensure!(
            problems.is_empty(),
            "serious or critical accessibility violations, or overflow at 360px:\n{}",
            problems.join("\n")
        );
        Ok(())
    })
    .await;
}

#[test]
fn prices_read_from_pages() {
    assert_eq!(cents("€12.50").unwrap(), 1250);
    assert_eq!(cents(" €1000000.05 ").unwrap(), 100_000_005);
    assert!(cents("12").is_err());
    assert_eq!(euros(1250), "€12.50");
    assert_eq!(product_id("http://127.0.0.1:1/shop/products/17?x=1").unwrap(), 17);
}
