//! Buying: the cart, checkout, and the shopper's orders.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mall_domain::card::{Card, CardError, YearMonth};
use mall_domain::{Address, Email, OrderId, OrderStatus};
use mall_proto::cart::v1 as cart;
use mall_proto::checkout::v1 as checkout;
use mall_proto::order::v1 as order;
use mall_proto::payment::v1 as payment;
use mall_proto::user::v1::GetUserRequest;
use maud::{Markup, html};
use serde::Deserialize;

use super::catalog::{PageQuery, categories, product_page};
use super::pages::{
    Input, Problem, Refusal, csrf, error_at, field, form_error, frame, general_error, notice, pager, price,
    product_href, respond, see_other,
};
use super::session::{Form, Shopper, Visit};
use crate::routes::commerce::{decline, status_name};
use crate::{AppState, limit, rfc3339};

/// The signed-in shopper, or a trip to the login page that comes back to `next`.
pub fn shopper<'a>(visit: &'a Visit, next: &str) -> Result<&'a Shopper, Problem> {
    visit.shopper.as_ref().ok_or_else(|| Problem::LogIn { next: next.to_owned() })
}

#[derive(Deserialize)]
pub struct LineForm {
    #[serde(default)]
    product_id: String,
    #[serde(default)]
    quantity: String,
}

async fn read_cart(state: &AppState, user_id: i64) -> Result<cart::Cart, Problem> {
    let c = state.carts.clone().get_cart(cart::GetCartRequest { user_id }).await?;
    c.into_inner().cart.ok_or(Problem::Internal)
}

fn cart_view(visit: &Visit, c: &cart::Cart, message: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        h1 { "Your cart" }
        @if let Some(m) = message { (notice(m)) }
        (form_error(error))
        @if c.items.is_empty() {
            p id="cart-empty" { "Your cart is empty. " a href="/" { "Find something you like" } "." }
        } @else {
            div class="table-wrap" {
                table class="cart" {
                    caption class="visually-hidden" { "Products in your cart" }
                    thead { tr {
                        th scope="col" { "Product" }
                        th scope="col" class="num" { "Price" }
                        th scope="col" { "Quantity" }
                        th scope="col" class="num" { "Total" }
                        th scope="col" { span class="visually-hidden" { "Remove" } }
                    } }
                    tbody {
                        @for i in &c.items {
                            tr data-product-id=(i.product_id) {
                                td {
                                    a href=(product_href(i.product_id)) { (i.name) }
                                    @if !i.available { " " span class="stock out" { "no longer sold" } }
                                }
                                td class="num" { (price(i.price_cents)) }
                                td {
                                    form class="set-qty" action="/shop/cart/set" method="post" {
                                        (csrf(visit))
                                        input type="hidden" name="product_id" value=(i.product_id);
                                        label class="visually-hidden" for={ "qty-" (i.product_id) } { "Quantity of " (i.name) }
                                        input id={ "qty-" (i.product_id) } type="number" name="quantity" min="0" max="999" value=(i.quantity) required;
                                        button id={ "update-" (i.product_id) } type="submit" { "Update" }
                                    }
                                }
                                td class="num" { (price(i.line_total_cents)) }
                                td {
                                    form action="/shop/cart/remove" method="post" {
                                        (csrf(visit))
                                        input type="hidden" name="product_id" value=(i.product_id);
                                        button id={ "remove-" (i.product_id) } type="submit" class="link" aria-label={ "Remove " (i.name) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                    tfoot { tr {
                        th scope="row" colspan="3" { "Total" }
                        td id="cart-total" class="num" { (price(c.total_cents)) }
                        td {}
                    } }
                }
            }
            p class="actions" { a id="checkout-link" class="button primary" href="/shop/checkout" { "Check out" } }
        }
    }
}

async fn cart_page(
    state: &AppState,
    visit: &Visit,
    user_id: i64,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Problem> {
    let (categories, c) = tokio::join!(categories(state), read_cart(state, user_id));
    let main = cart_view(visit, &c?, message, error);
    Ok(respond(status, frame(Some(visit), &categories, "Cart", main)))
}

pub async fn cart(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, &visit.here)?.user_id;
    let message = q.added.is_some().then_some("Added to your cart.");
    cart_page(&state, &visit, user_id, StatusCode::OK, message, None).await
}

/// A form's line: the product and the quantity, or why they cannot be.
fn parse_line(f: &LineForm, min: i64) -> Result<(i64, i64), String> {
    let product_id = f.product_id.trim().parse::<i64>().ok().filter(|id| *id > 0);
    let product_id = product_id.ok_or_else(|| "that product does not exist".to_owned())?;
    let quantity = f.quantity.trim().parse::<i64>().ok().filter(|q| (min..=999).contains(q));
    let quantity = quantity.ok_or_else(|| format!("quantity must be a whole number from {min} to 999"))?;
    Ok((product_id, quantity))
}

pub async fn add(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<LineForm>,
) -> Result<Response, Problem> {
    let back = product_href(f.product_id.trim().parse().unwrap_or(0));
    let user_id = shopper(&visit, &back)?.user_id;
    let failed = match parse_line(&f, 1) {
        Ok((product_id, quantity)) => {
            let request = cart::AddItemRequest { user_id, product_id, quantity };
            match state.carts.clone().add_item(request).await {
                Ok(_) => return Ok(see_other("/shop/cart?added=1")),
                Err(s) => Refusal::from_api(s.into(), &["quantity"])?,
            }
        }
        Err(m) => Refusal::on(StatusCode::BAD_REQUEST, "quantity", m),
    };
    product_page(&state, &visit, f.product_id.trim(), failed.status, Some(&failed.message)).await
}

pub async fn set(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<LineForm>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, "/shop/cart")?.user_id;
    let failed = match parse_line(&f, 0) {
        Ok((product_id, quantity)) => {
            let request = cart::SetItemRequest { user_id, product_id, quantity };
            match state.carts.clone().set_item(request).await {
                Ok(_) => return Ok(see_other("/shop/cart")),
                Err(s) => Refusal::from_api(s.into(), &[])?,
            }
        }
        Err(m) => Refusal::on(StatusCode::BAD_REQUEST, "quantity", m),
    };
    cart_page(&state, &visit, user_id, failed.status, None, Some(&failed.message)).await
}

#[derive(Deserialize)]
pub struct ProductForm {
    #[serde(default)]
    product_id: String,
}

pub async fn remove(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<ProductForm>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, "/shop/cart")?.user_id;
    // Removing what is not there (or cannot be) leaves the cart as it is.
    if let Some(product_id) = f.product_id.trim().parse::<i64>().ok().filter(|id| *id > 0) {
        state.carts.clone().remove_item(cart::RemoveItemRequest { user_id, product_id }).await?;
    }
    Ok(see_other("/shop/cart"))
}

/// The checkout form's fields, as typed.
#[derive(Deserialize, Default)]
pub struct CheckoutForm {
    #[serde(default)]
    firstname: String,
    #[serde(default)]
    lastname: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    street_address: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    zip_code: String,
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    card_cvv: String,
    #[serde(default)]
    card_exp_month: String,
    #[serde(default)]
    card_exp_year: String,
    #[serde(default)]
    idempotency_key: String,
}

const CHECKOUT_FIELDS: &[&str] = &[
    "firstname",
    "lastname",
    "email",
    "street_address",
    "city",
    "state",
    "country",
    "zip_code",
    "card_number",
    "card_cvv",
    "card_exp_month",
    "card_exp_year",
];

fn checkout_view(visit: &Visit, f: &CheckoutForm, c: &cart::Cart, refusal: Option<&Refusal>) -> Markup {
    let on = |name: &str| error_at(refusal, name);
    let general = general_error(refusal);
    // A new key for every form shown: a retry of this very form is answered once; a corrected form is
    // a new attempt.
    let key = uuid::Uuid::new_v4().to_string();
    let text = Input::text().required();
    html! {
        h1 { "Checkout" }
        (form_error(general))
        div class="checkout" {
            form id="checkout-form" action="/shop/checkout" method="post" novalidate {
                (csrf(visit))
                input type="hidden" name="idempotency_key" value=(key);
                fieldset {
                    legend { "Contact" }
                    (field("First name", "firstname", &f.firstname, text.autocomplete("given-name"), on("firstname")))
                    (field("Last name", "lastname", &f.lastname, text.autocomplete("family-name"), on("lastname")))
                    (field("Email", "email", &f.email, Input::of("email").required().autocomplete("email"), on("email")))
                }
                fieldset {
                    legend { "Shipping address" }
                    (field("Street address", "street_address", &f.street_address, text.autocomplete("street-address"), on("street_address")))
                    (field("City", "city", &f.city, text.autocomplete("address-level2"), on("city")))
                    (field("State or region", "state", &f.state, text.autocomplete("address-level1"), on("state")))
                    (field("Country", "country", &f.country, text.autocomplete("country-name"), on("country")))
                    (field("Postal code", "zip_code", &f.zip_code, text.autocomplete("postal-code"), on("zip_code")))
                }
                fieldset {
                    legend { "Card" }
                    (field("Card number", "card_number", "", text.numeric().autocomplete("cc-number").maxlength(23), on("card_number")))
                    (field("Security code (CVV)", "card_cvv", "", text.numeric().autocomplete("cc-csc").maxlength(4), on("card_cvv")))
                    div class="pair" {
                        (field("Expiry month", "card_exp_month", &f.card_exp_month, Input::of("number").required().range(1, 12).autocomplete("cc-exp-month"), on("card_exp_month")))
                        (field("Expiry year", "card_exp_year", &f.card_exp_year, Input::of("number").required().range(2000, 9999).autocomplete("cc-exp-year"), on("card_exp_year")))
                    }
                }
                button id="place-order" type="submit" class="primary" { "Pay " (price(c.total_cents)) }
            }
            aside class="summary" aria-labelledby="summary-title" {
                h2 id="summary-title" { "Your order" }
                ul {
                    @for i in &c.items {
                        li { span { (i.quantity) " × " (i.name) } span class="num" { (price(i.line_total_cents)) } }
                    }
                }
                p class="total" { "Total " strong id="checkout-total" { (price(c.total_cents)) } }
                p { a href="/shop/cart" { "Change the cart" } }
            }
        }
    }
}

async fn checkout_page(
    state: &AppState,
    visit: &Visit,
    user_id: i64,
    form: &CheckoutForm,
    refusal: Option<&Refusal>,
) -> Result<Response, Problem> {
    let (categories, c) = tokio::join!(categories(state), read_cart(state, user_id));
    let c = c?;
    if c.items.is_empty() {
        return Ok(see_other("/shop/cart"));
    }
    let status = refusal.map_or(StatusCode::OK, |r| r.status);
    Ok(respond(status, frame(Some(visit), &categories, "Checkout", checkout_view(visit, form, &c, refusal))))
}

pub async fn checkout_form(State(state): State<AppState>, visit: Visit) -> Result<Response, Problem> {
    let user_id = shopper(&visit, "/shop/checkout")?.user_id;
    let user = state.users.clone().get_user(GetUserRequest { user_id }).await?.into_inner().user;
    let form = CheckoutForm { email: user.map(|u| u.email).unwrap_or_default(), ..CheckoutForm::default() };
    checkout_page(&state, &visit, user_id, &form, None).await
}

/// The card's field a refusal of it concerns.
fn card_field(e: CardError) -> &'static str {
    match e {
        CardError::InvalidNumber => "card_number",
        CardError::InvalidCvv => "card_cvv",
        CardError::InvalidExpiry | CardError::Expired => "card_exp_month",
    }
}

/// What the form can check before anything is placed, field by field.
fn check_form(f: &CheckoutForm) -> Result<(Email, Address, payment::CreditCard), Refusal> {
    let bad = StatusCode::BAD_REQUEST;
    for (name, label, value) in
        [("firstname", "first name", &f.firstname), ("lastname", "last name", &f.lastname)]
    {
        if value.trim().is_empty() {
            return Err(Refusal::on(bad, name, format!("{label} is required")));
        }
    }
    let email = Email::parse(&f.email).map_err(|e| Refusal::on(bad, "email", e.to_string()))?;
    let address =
        Address::parse(&f.street_address, &f.city, &f.state, &f.country, &f.zip_code).map_err(|e| {
            // "address.city is required" is about the form's "city".
            let name = e.field.strip_prefix("address.").unwrap_or(e.field);
            let message = format!("{name} {}", e.problem).replace('_', " ");
            Refusal { status: bad, field: CHECKOUT_FIELDS.iter().copied().find(|f| *f == name), message }
        })?;
    let declined = StatusCode::PAYMENT_REQUIRED;
    let month = f.card_exp_month.trim().parse::<i32>().map_err(|_| {
        Refusal::on(declined, "card_exp_month", "the expiry month must be a number from 1 to 12")
    })?;
    let year = f
        .card_exp_year
        .trim()
        .parse::<i32>()
        .map_err(|_| Refusal::on(declined, "card_exp_year", "the expiry year must be four digits"))?;
    let cvv = f.card_cvv.trim();
    if let Err(e) = Card::parse(&f.card_number, cvv, year, month, YearMonth::now_utc()) {
        return Err(Refusal::on(declined, card_field(e), format!("payment declined: {e}")));
    }
    let card = payment::CreditCard {
        number: f.card_number.clone(),
        cvv: cvv.to_owned(),
        expiration_year: year,
        expiration_month: month,
    };
    Ok((email, address, card))
}

pub async fn checkout(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<CheckoutForm>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, "/shop/checkout")?.user_id;
    let (email, address, card) = match check_form(&f) {
        Ok(checked) => checked,
        Err(refusal) => return checkout_page(&state, &visit, user_id, &f, Some(&refusal)).await,
    };
    limit::spending(&state.cache, &state.config.limits, user_id).await?;
    let key = f.idempotency_key.trim();
    let request = checkout::CheckoutRequest {
        user_id,
        idempotency_key: if key.len() <= 128 { key.to_owned() } else { String::new() },
        firstname: f.firstname.clone(),
        lastname: f.lastname.clone(),
        email: email.into(),
        address: Some((&address).into()),
        credit_card: Some(card),
    };
    let refusal = match state.checkouts.clone().checkout(request).await {
        Ok(r) => {
            let r = r.into_inner();
            if r.outcome == checkout::CheckoutOutcome::Declined as i32 {
                let field = match payment::DeclineReason::try_from(r.decline_reason) {
                    Ok(payment::DeclineReason::InvalidCvv) => "card_cvv",
                    Ok(payment::DeclineReason::InvalidExpiry | payment::DeclineReason::Expired) => {
                        "card_exp_month"
                    }
                    _ => "card_number",
                };
                Refusal::on(StatusCode::PAYMENT_REQUIRED, field, decline(r.decline_reason).to_string())
            } else {
                return Ok(see_other(&format!("/shop/orders/{}?placed=1", r.order_id)));
            }
        }
        Err(s) => Refusal::from_api(s.into(), CHECKOUT_FIELDS)?,
    };
    checkout_page(&state, &visit, user_id, &f, Some(&refusal)).await
}

pub async fn orders(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, &visit.here)?.user_id;
    let request = order::ListOrdersRequest { user_id, page: q.page(), page_size: 10 };
    let mut client = state.orders.clone();
    let (categories, listed) = tokio::join!(categories(&state), client.list_orders(request));
    let listed = listed?.into_inner();
    let main = html! {
        h1 { "Your orders" }
        @if listed.total == 0 {
            p id="no-orders" { "You have not ordered anything yet." }
        } @else {
            (orders_table(&listed.items, Reader::Shopper))
            (pager(listed.page, listed.page_size, listed.total, |p| format!("/shop/orders?page={p}")))
        }
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Your orders", main)))
}

/// A day as people read it, from Unix seconds: "2026-12-06".
pub fn day(unix: i64) -> String {
    rfc3339(unix).get(..10).unwrap_or_default().to_owned()
}

/// Who a table of orders is for.
pub enum Reader<'a> {
    /// The shopper whose orders they are: each links to its page.
    Shopper,
    /// An admin: each with its shopper, and a button that marks an unpaid order paid.
    Admin(&'a Visit),
}

/// Orders as a table.
pub fn orders_table(orders: &[order::Order], reader: Reader<'_>) -> Markup {
    let admin = match reader {
        Reader::Admin(visit) => Some(visit),
        Reader::Shopper => None,
    };
    html! {
        div class="table-wrap" {
            table class="orders" {
                caption class="visually-hidden" { "Orders" }
                thead { tr {
                    th scope="col" { "Order" }
                    @if admin.is_some() { th scope="col" class="num" { "User" } }
                    th scope="col" { "Placed" }
                    th scope="col" { "Items" }
                    th scope="col" class="num" { "Total" }
                    th scope="col" { "Status" }
                    @if admin.is_some() { th scope="col" { span class="visually-hidden" { "Action" } } }
                } }
                tbody {
                    @for o in orders {
                        tr data-order-id=(o.order_id) {
                            @if let Some(visit) = admin {
                                td { (short_id(&o.order_id)) }
                                td class="num" { (o.user_id) }
                                (order_cells(o))
                                td {
                                    @if status_name(o) == OrderStatus::Pending.as_str() {
                                        form action={ "/shop/admin/orders/" (o.order_id) "/mark-paid" } method="post" {
                                            (csrf(visit))
                                            button id={ "mark-paid-" (o.order_id) } type="submit" { "Mark paid" }
                                        }
                                    }
                                }
                            } @else {
                                td { a class="order-link" href={ "/shop/orders/" (o.order_id) } { (short_id(&o.order_id)) } }
                                (order_cells(o))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An order's date, item count, total and status.
fn order_cells(o: &order::Order) -> Markup {
    html! {
        td { (day(o.created_at)) }
        td { (o.items.iter().map(|i| i.quantity).sum::<i64>()) }
        td class="num" { (price(o.total_cents)) }
        td { span class={ "status " (status_name(o)) } { (status_name(o)) } }
    }
}

/// The end of an order id, enough to tell orders apart on a page.
pub fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

pub async fn order(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, &visit.here)?.user_id;
    let order_id = OrderId::parse(&id).map_err(|_| Problem::NotFound("there is no such order".into()))?;
    let request = order::GetOrderRequest { user_id, order_id: order_id.to_string() };
    let mut client = state.orders.clone();
    let (categories, found) = tokio::join!(categories(&state), client.get_order(request));
    let o = found?.into_inner().order.ok_or(Problem::Internal)?;
    let status = status_name(&o);
    let main = html! {
        @if q.placed.is_some() && status == OrderStatus::Paid.as_str() {
            div id="confirmation" class="notice" role="status" {
                h1 { "Thank you for your order" }
                p { "It is paid, and we are packing it. A confirmation goes to " (o.email) "." }
            }
        } @else {
            h1 { "Order " (short_id(&o.order_id)) }
        }
        (order_view(&o))
        @if status == OrderStatus::Pending.as_str() {
            form action={ "/shop/orders/" (o.order_id) "/cancel" } method="post" {
                (csrf(&visit))
                button id="cancel-order" type="submit" { "Cancel this order" }
            }
        }
        p { a href="/shop/orders" { "All your orders" } }
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Order", main)))
}

/// An order's details: its id, status, lines, total and address.
pub fn order_view(o: &order::Order) -> Markup {
    html! {
        dl class="facts" {
            dt { "Order number" } dd id="order-id" { (o.order_id) }
            dt { "Status" } dd id="order-status" { (status_name(o)) }
            dt { "Placed" } dd { (day(o.created_at)) }
            @if !o.transaction_id.is_empty() { dt { "Payment" } dd { (o.transaction_id) } }
            @if let Some(a) = &o.address {
                dt { "Ships to" }
                dd { (a.street_address) ", " (a.zip_code) " " (a.city) ", " (a.state) ", " (a.country) }
            }
        }
        div class="table-wrap" {
            table class="lines" {
                caption class="visually-hidden" { "Products in this order" }
                thead { tr {
                    th scope="col" { "Product" }
                    th scope="col" class="num" { "Price" }
                    th scope="col" class="num" { "Quantity" }
                    th scope="col" class="num" { "Total" }
                } }
                tbody {
                    @for i in &o.items {
                        tr {
                            td { a href=(product_href(i.product_id)) { (i.name) } }
                            td class="num" { (price(i.unit_price_cents)) }
                            td class="num" { (i.quantity) }
                            td class="num" { (price(i.line_total_cents)) }
                        }
                    }
                }
                tfoot { tr { th scope="row" colspan="3" { "Total" } td id="order-total" class="num" { (price(o.total_cents)) } } }
            }
        }
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Form(_): Form<super::account::Nothing>,
) -> Result<Response, Problem> {
    let user_id = shopper(&visit, "/shop/orders")?.user_id;
    let order_id = OrderId::parse(&id).map_err(|_| Problem::NotFound("there is no such order".into()))?;
    let request = order::CancelOrderRequest { user_id, order_id: order_id.to_string() };
    state.orders.clone().cancel_order(request).await?;
    Ok(see_other(&format!("/shop/orders/{order_id}")))
}
