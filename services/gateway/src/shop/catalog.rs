//! Browsing: the home page, category pages, search and the product page.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mall_proto::product::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::Category;
use super::pages::{self, Input, Problem, csrf, encode, frame, pager, picture, price, product_grid, respond};
use super::session::Visit;
use crate::AppState;
use crate::limit::{self, ClientAddr};

/// Products per page on category and search pages.
const PAGE_SIZE: i32 = 12;

/// The categories for the navigation; a page still shows without them.
pub async fn categories(state: &AppState) -> Arc<Vec<Category>> {
    state.shop.categories(state).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the categories for the navigation");
        Arc::default()
    })
}

/// What a page's query string may say: its page, a search, a filter, and the flags that say what the
/// form before it did (`?added=1`, `?saved=1`, …).
#[derive(Deserialize, Default)]
pub struct PageQuery {
    page: Option<String>,
    pub q: Option<String>,
    pub status: Option<String>,
    pub added: Option<String>,
    pub saved: Option<String>,
    pub deleted: Option<String>,
    pub marked: Option<String>,
    pub placed: Option<String>,
}

impl PageQuery {
    /// The page asked for; anything that is not a page number is the first page.
    pub fn page(&self) -> i32 {
        self.page.as_deref().and_then(|p| p.trim().parse().ok()).filter(|p| *p >= 1).unwrap_or(1)
    }
}

pub async fn home(State(state): State<AppState>, visit: Visit) -> Result<Response, Problem> {
    let (categories, featured) = tokio::join!(categories(&state), state.shop.featured(&state));
    let featured = featured?;
    let main = html! {
        section class="hero" aria-labelledby="hero-title" {
            h1 id="hero-title" { "Good things for kitchen, trail and shelf" }
            p { "Thirty well-made things, shipped from our own shelves. Free returns for 30 days." }
        }
        @if !categories.is_empty() {
            section aria-labelledby="cat-title" {
                h2 id="cat-title" { "Shop by category" }
                ul class="tiles" {
                    @for c in categories.iter() {
                        li {
                            a href=(pages::category_href(&c.name)) {
                                span class="tile-name" { (c.name) }
                                span class="tile-count" { (c.products) " products" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="new-title" {
            h2 id="new-title" { "Featured" }
            @if featured.is_empty() {
                p { "The shelves are empty for now." }
            } @else {
                (product_grid(&featured))
            }
        }
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Home", main)))
}

pub async fn category(
    State(state): State<AppState>,
    visit: Visit,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let page = q.page();
    let request = pb::ListProductsRequest { page, page_size: PAGE_SIZE, category: Some(name.clone()) };
    let mut client = state.products.clone();
    let (categories, listed) = tokio::join!(categories(&state), client.list_products(request));
    let listed = listed?.into_inner();
    if listed.total == 0 {
        return Err(Problem::NotFound(format!("there is no category {name:?}")));
    }
    let href = |p: i32| format!("{}?page={p}", pages::category_href(&name));
    let main = html! {
        h1 { (name) }
        p class="count" { (listed.total) " products" }
        (product_grid(&listed.items))
        (pager(listed.page, listed.page_size, listed.total, href))
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, &name, main)))
}

pub async fn search(
    State(state): State<AppState>,
    visit: Visit,
    ClientAddr(client): ClientAddr,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    let categories = categories(&state).await;
    let query = q.q.as_deref().unwrap_or("").trim().to_owned();
    if query.is_empty() {
        let main = html! { h1 { "Search" } p { "Type what you are looking for in the search box above." } };
        return Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Search", main)));
    }
    if query.chars().count() > 100 {
        let main =
            html! { h1 { "Search" } (pages::form_error(Some("A search can be at most 100 characters."))) };
        return Ok(respond(StatusCode::BAD_REQUEST, frame(Some(&visit), &categories, "Search", main)));
    }
    limit::search(&state.cache, &state.config.limits, client).await?;
    let request = pb::SearchProductsRequest { query: query.clone(), page: q.page(), page_size: PAGE_SIZE };
    let found = state.products.clone().search_products(request).await?.into_inner();
    let href = |p: i32| format!("/shop/search?q={}&page={p}", encode(&query));
    let title = format!("Search: {query}");
    let main = html! {
        h1 { "Results for “" (query) "”" }
        @if found.total == 0 {
            p id="no-results" { "Nothing matches “" (query) "”. Try fewer or other words." }
        } @else {
            p class="count" { (found.total) @if found.total == 1 { " product" } @else { " products" } }
            (product_grid(&found.items))
            (pager(found.page, found.page_size, found.total, href))
        }
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, &title, main)))
}

pub async fn product(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    product_page(&state, &visit, &id, StatusCode::OK, None).await
}

/// The product page; `error` (with `status`) when adding it to the cart failed.
pub async fn product_page(
    state: &AppState,
    visit: &Visit,
    id: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, Problem> {
    let not_found = || Problem::NotFound("there is no such product".into());
    let product_id = id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(not_found)?;
    let mut client = state.products.clone();
    let request = pb::GetProductRequest { product_id };
    let (categories, found) = tokio::join!(categories(state), client.get_product(request));
    let p = found?.into_inner().product.ok_or(Problem::Internal)?;
    let main = product_view(visit, &p, error);
    Ok(respond(status, frame(Some(visit), &categories, &p.name, main)))
}

fn product_view(visit: &Visit, p: &pb::Product, error: Option<&str>) -> Markup {
    let (class, label) = pages::stock_label(p.stock);
    let max = p.stock.clamp(1, 999);
    html! {
        article class="product" {
            div class="product-picture" { (picture(&p.picture, &p.name, 800, 600, "eager")) }
            div class="product-info" {
                h1 { (p.name) }
                p class="price big" { (price(p.price_cents)) }
                p id="stock" class={ "stock " (class) } { (label) }
                p class="description" { (p.description) }
                @if !p.categories.is_empty() {
                    p class="tags" {
                        "In "
                        @for (i, c) in p.categories.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href=(pages::category_href(c)) { (c) }
                        }
                    }
                }
                @if p.stock > 0 {
                    form id="add-to-cart" action="/shop/cart/add" method="post" {
                        (csrf(visit))
                        input type="hidden" name="product_id" value=(p.product_id);
                        (pages::field("Quantity", "quantity", "1", Input::of("number").required().range(1, max), error))
                        button id="add-button" type="submit" class="primary" { "Add to cart" }
                    }
                    @if visit.shopper.is_none() {
                        p class="hint" { "You will be asked to log in first." }
                    }
                } @else {
                    p class="hint" { "This product is sold out for now." }
                }
            }
        }
        p { a href="/" { "← Back to the shop" } }
    }
}
