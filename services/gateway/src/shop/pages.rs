//! What every storefront page shares: the frame (header, navigation, footer), the pieces pages are
//! made of (product cards, paging, form fields), and [`Problem`], the one place where a failure
//! becomes a page.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mall_proto::product::v1 as pb;
use maud::{DOCTYPE, Markup, html};

use super::Category;
use super::assets;
use super::session::Visit;
use crate::error::ApiError;
use crate::money::format_cents;

/// Prices as shoppers read them.
pub fn price(cents: i64) -> String {
    format!("€{}", format_cents(cents))
}

/// A whole page: `title` names it in the tab and for screen readers; `main` is its content.
pub fn frame(visit: Option<&Visit>, categories: &[Category], title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Mall" }
                link rel="stylesheet" href=(assets::url("css/shop.css"));
                link rel="icon" type="image/svg+xml" href=(assets::url("images/logo.svg"));
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="site" {
                    div class="bar" {
                        a class="brand" href="/" {
                            img src=(assets::url("images/logo.svg")) alt="Mall, home" width="120" height="32";
                        }
                        form class="search" role="search" action="/shop/search" method="get" {
                            label for="search-q" class="visually-hidden" { "Search products" }
                            input id="search-q" type="search" name="q" placeholder="Search products"
                                maxlength="100" required;
                            button type="submit" { "Search" }
                        }
                        (account_nav(visit))
                    }
                    @if !categories.is_empty() {
                        nav class="categories" aria-label="Categories" {
                            ul {
                                @for c in categories {
                                    li { a href=(category_href(&c.name)) { (c.name) } }
                                }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (main) }
                footer class="site" {
                    p { "Mall — an open reference shop. Prices include VAT. " a href="/docs" { "API" } }
                }
            }
        }
    }
}

fn account_nav(visit: Option<&Visit>) -> Markup {
    let shopper = visit.and_then(|v| v.shopper.as_ref());
    html! {
        nav class="account" aria-label="Account" {
            ul {
                li { a id="nav-cart" href="/shop/cart" { "Cart" } }
                @if let (Some(shopper), Some(visit)) = (shopper, visit) {
                    li { a id="nav-orders" href="/shop/orders" { "Orders" } }
                    @if shopper.is_admin() {
                        li { a id="nav-admin" href="/shop/admin" { "Admin" } }
                    }
                    li {
                        form action="/shop/logout" method="post" class="inline" {
                            (csrf(visit))
                            button id="nav-logout" type="submit" class="link" { "Log out" }
                        }
                    }
                } @else {
                    li { a id="nav-login" href="/shop/login" { "Log in" } }
                    li { a id="nav-register" href="/shop/register" { "Register" } }
                }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf(visit: &Visit) -> Markup {
    html! { input type="hidden" name="csrf" value=(visit.csrf); }
}

pub fn category_href(name: &str) -> String {
    format!("/shop/category/{}", encode(name))
}

pub fn product_href(id: i64) -> String {
    format!("/shop/products/{id}")
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn stock_label(stock: i64) -> (&'static str, String) {
    match stock {
        s if s <= 0 => ("out", "Out of stock".to_owned()),
        s if s < 10 => ("low", format!("Only {s} left")),
        _ => ("in", "In stock".to_owned()),
    }
}

/// A product in a grid.
pub fn product_card(p: &pb::Product) -> Markup {
    let (class, label) = stock_label(p.stock);
    html! {
        li class="card" {
            a href=(product_href(p.product_id)) {
                // The link's name is the product's; the picture adds nothing to read out.
                (picture(&p.picture, "", 400, 300, "lazy"))
                span class="name" { (p.name) }
            }
            p class="meta" {
                span class="price" { (price(p.price_cents)) }
                " "
                span class={ "stock " (class) } { (label) }
            }
        }
    }
}

/// A product's picture; a product without one gets the shop's placeholder.
pub fn picture(url: &str, name: &str, width: u32, height: u32, loading: &str) -> Markup {
    let src =
        if url.is_empty() { assets::url("images/placeholder.svg").into() } else { assets::picture_url(url) };
    html! {
        img src=(src) alt=(name) width=(width) height=(height) loading=(loading) decoding="async";
    }
}

pub fn product_grid(products: &[pb::Product]) -> Markup {
    html! {
        ul class="grid" { @for p in products { (product_card(p)) } }
    }
}

/// "Page 2 of 5" with links to the neighbours; `href(page)` makes a page's link.
pub fn pager(page: i32, page_size: i32, total: i64, href: impl Fn(i32) -> String) -> Markup {
    let pages = i32::try_from(((total + i64::from(page_size) - 1) / i64::from(page_size.max(1))).max(1))
        .unwrap_or(i32::MAX);
    html! {
        @if pages > 1 {
            nav class="pager" aria-label="Pages" {
                @if page > 1 { a id="page-prev" rel="prev" href=(href(page - 1)) { "← Previous" } }
                span aria-current="page" { "Page " (page) " of " (pages) }
                @if page < pages { a id="page-next" rel="next" href=(href(page + 1)) { "Next →" } }
            }
        }
    }
}

/// An input's attributes beyond its name and value.
#[derive(Default, Clone, Copy)]
pub struct Input<'a> {
    pub kind: &'a str,
    pub required: bool,
    pub autocomplete: Option<&'a str>,
    pub inputmode: Option<&'a str>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub maxlength: Option<usize>,
}

impl<'a> Input<'a> {
    pub fn text() -> Input<'a> {
        Input { kind: "text", ..Input::default() }
    }

    pub fn of(kind: &'a str) -> Input<'a> {
        Input { kind, ..Input::default() }
    }

    pub fn required(self) -> Input<'a> {
        Input { required: true, ..self }
    }

    pub fn autocomplete(self, token: &'a str) -> Input<'a> {
        Input { autocomplete: Some(token), ..self }
    }

    pub fn numeric(self) -> Input<'a> {
        Input { inputmode: Some("numeric"), ..self }
    }

    pub fn range(self, min: i64, max: i64) -> Input<'a> {
        Input { min: Some(min), max: Some(max), ..self }
    }

    pub fn maxlength(self, n: usize) -> Input<'a> {
        Input { maxlength: Some(n), ..self }
    }
}

/// A labelled input with its error, if it has one: the error is announced with the field
/// (`aria-describedby`) and marks it invalid.
pub fn field(label: &str, name: &str, value: &str, input: Input<'_>, error: Option<&str>) -> Markup {
    let error_id = format!("{name}-error");
    html! {
        div class={ "field" @if error.is_some() { " invalid" } } {
            label for=(name) { (label) }
            input id=(name) name=(name) type=(input.kind) value=(value)
                required[input.required]
                autocomplete=[input.autocomplete]
                inputmode=[input.inputmode]
                min=[input.min]
                max=[input.max]
                maxlength=[input.maxlength]
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| error_id.as_str())];
            @if let Some(e) = error {
                p class="field-error" id=(error_id) { (upper_first(e)) }
            }
        }
    }
}

/// An error about the whole form, announced when the page loads.
pub fn form_error(error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error { p id="form-error" class="alert" role="alert" { (upper_first(e)) } }
    }
}

pub fn notice(text: &str) -> Markup {
    html! { p id="notice" class="notice" role="status" { (text) } }
}

/// The field a service's message is about: messages about a field start with its name
/// ("email is not valid: …", "address.city is required").
pub fn field_of<'a>(message: &str, fields: &[&'a str]) -> Option<&'a str> {
    let message = message.strip_prefix("address.").unwrap_or(message);
    fields
        .iter()
        .copied()
        .find(|f| message.strip_prefix(f).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with(':')))
}

/// Why a form comes back: its status, the field the message concerns (none: the whole form) and the
/// message.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub field: Option<&'static str>,
    pub message: String,
}

impl Refusal {
    pub fn on(status: StatusCode, field: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, field: Some(field), message: message.into() }
    }

    /// A service's refusal that the form shows, on the field among `fields` that its message names: a
    /// mistake in what was typed, a conflict ("not enough stock"), something that is gone. Anything
    /// else (a service down, a rate limit) is a page of its own.
    pub fn from_api(e: ApiError, fields: &[&'static str]) -> Result<Refusal, Problem> {
        match e {
            ApiError::InvalidInput(ref m) | ApiError::Conflict(ref m) | ApiError::NotFound(ref m) => {
                Ok(Refusal { status: e.status(), field: field_of(m, fields), message: m.clone() })
            }
            other => Err(Problem::Api(other)),
        }
    }
}

/// The message of `refusal` for the field `name`, if it concerns that field.
pub fn error_at<'a>(refusal: Option<&'a Refusal>, name: &str) -> Option<&'a str> {
    refusal.filter(|r| r.field == Some(name)).map(|r| r.message.as_str())
}

/// The message of `refusal` when it concerns the whole form.
pub fn general_error(refusal: Option<&Refusal>) -> Option<&str> {
    refusal.filter(|r| r.field.is_none()).map(|r| r.message.as_str())
}

/// An HTML page with the given status.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    (status, Html(page.into_string())).into_response()
}

/// "See this other page" after a form did its work.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Where a form may send the shopper back to: a path of this site only.
pub fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum Problem {
    /// The page needs a signed-in shopper; they come back to `next` after logging in.
    LogIn {
        next: String,
    },
    Api(ApiError),
    Forbidden(String),
    NotFound(String),
    BadForm,
    Unavailable(String),
    Internal,
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        Problem::Api(e)
    }
}

impl From<tonic::Status> for Problem {
    fn from(s: tonic::Status) -> Self {
        Problem::Api(ApiError::from(s))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Problem::LogIn { next } => {
                return see_other(&format!("/shop/login?next={}", encode(local_path(Some(&next)))));
            }
            Problem::Api(ApiError::Unauthenticated(_) | ApiError::TokenExpired | ApiError::TokenRevoked) => {
                return see_other("/shop/login");
            }
            Problem::Api(e) => {
                let status = e.status();
                let title = match status {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "That did not work",
                };
                let retry = match &e {
                    ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } => {
                        Some(*retry_after)
                    }
                    _ => None,
                };
                let mut response = problem_page(status, title, &e.to_string());
                if let Some(secs) = retry {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                return response;
            }
            Problem::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Problem::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Problem::BadForm => {
                (StatusCode::BAD_REQUEST, "That did not work", "the form could not be read".into())
            }
            Problem::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Something went wrong", m),
            Problem::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "something went wrong on our side: try again in a moment".into(),
            ),
        };
        problem_page(status, title, &message)
    }
}

fn problem_page(status: StatusCode, title: &str, message: &str) -> Response {
    let main = html! {
        h1 { (title) }
        p class="alert" role="alert" { (upper_first(message)) "." }
        p { a href="/" { "Back to the shop" } }
    };
    respond(status, frame(None, &[], title, main))
}

pub fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_fields() {
        let fields = ["email", "password", "confirm_password", "city"];
        assert_eq!(field_of("email is not valid: no @", &fields), Some("email"));
        assert_eq!(field_of("address.city is required", &fields), Some("city"));
        assert_eq!(field_of("confirm_password does not match", &fields), Some("confirm_password"));
        assert_eq!(field_of("emails are hard", &fields), None);
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/shop/cart")), "/shop/cart");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("Kitchen & Bath/2"), "Kitchen%20%26%20Bath%2F2");
    }
}
