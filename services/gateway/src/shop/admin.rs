//! The admin area: the catalog (list, create, edit, delete) and every shopper's orders (mark paid).
//! For admins only: anonymous visitors are sent to log in, customers are refused.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mall_domain::{Cents, OrderStatus};
use mall_proto::order::v1 as order;
use mall_proto::product::v1 as pb;
use maud::{Markup, html};
use serde::Deserialize;

use super::buy::{Reader, orders_table};
use super::catalog::{PageQuery, categories};
use super::pages::{
    Input, Problem, Refusal, csrf, error_at, field, form_error, frame, general_error, notice, pager, price,
    respond, see_other,
};
use super::session::{Form, Shopper, Visit};
use crate::AppState;
use crate::money::format_cents;

fn admin(visit: &Visit) -> Result<&Shopper, Problem> {
    match &visit.shopper {
        None => Err(Problem::LogIn { next: visit.here.clone() }),
        Some(s) if s.is_admin() => Ok(s),
        Some(_) => Err(Problem::Forbidden("this page is for the shop's admins".into())),
    }
}

fn admin_nav() -> Markup {
    html! {
        nav class="admin-nav" aria-label="Admin" {
            ul {
                li { a href="/shop/admin" { "Products" } }
                li { a href="/shop/admin/orders" { "Orders" } }
                li { a id="new-product" href="/shop/admin/products/new" { "New product" } }
            }
        }
    }
}

pub async fn products(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let page = q.page();
    let request = pb::ListProductsRequest { page, page_size: 20, category: None };
    let mut client = state.products.clone();
    let (categories, listed) = tokio::join!(categories(&state), client.list_products(request));
    let listed = listed?.into_inner();
    let main = html! {
        h1 { "Products" }
        (admin_nav())
        @if q.deleted.is_some() { (notice("The product is deleted: it no longer lists or sells.")) }
        @if q.saved.is_some() { (notice("Saved.")) }
        div class="table-wrap" {
            table class="admin-products" {
                caption class="visually-hidden" { "Products" }
                thead { tr {
                    th scope="col" class="num" { "Id" }
                    th scope="col" { "Name" }
                    th scope="col" class="num" { "Price" }
                    th scope="col" class="num" { "Stock" }
                    th scope="col" { "Categories" }
                } }
                tbody {
                    @for p in &listed.items {
                        tr data-product-id=(p.product_id) {
                            td class="num" { (p.product_id) }
                            td { a href={ "/shop/admin/products/" (p.product_id) } { (p.name) } }
                            td class="num" { (price(p.price_cents)) }
                            td class="num" { (p.stock) }
                            td { (p.categories.join(", ")) }
                        }
                    }
                }
            }
        }
        (pager(listed.page, listed.page_size, listed.total, |p| format!("/shop/admin?page={p}")))
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Admin: products", main)))
}

/// The product form's fields, as typed.
#[derive(Deserialize, Default)]
pub struct ProductForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    picture: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    stock: String,
    #[serde(default)]
    categories: String,
}

impl ProductForm {
    fn of(p: &pb::Product) -> ProductForm {
        ProductForm {
            name: p.name.clone(),
            description: p.description.clone(),
            picture: p.picture.clone(),
            price: format_cents(p.price_cents),
            stock: p.stock.to_string(),
            categories: p.categories.join(", "),
        }
    }
}

const PRODUCT_FIELDS: &[&str] = &["name", "description", "picture", "price", "stock", "categories"];

struct Checked {
    price: Cents,
    stock: i64,
    categories: Vec<String>,
}

fn check(f: &ProductForm) -> Result<Checked, Refusal> {
    let on = |field, message: String| Refusal::on(StatusCode::BAD_REQUEST, field, message);
    if f.name.trim().is_empty() {
        return Err(on("name", "name is required".into()));
    }
    let price =
        Cents::parse_decimal(f.price.trim()).map_err(|e| on("price", format!("price {}", e.problem)))?;
    let stock = f.stock.trim().parse::<i64>().ok().filter(|s| *s >= 0);
    let stock = stock.ok_or_else(|| on("stock", "stock must be a whole number, 0 or more".into()))?;
    let picture = f.picture.trim();
    if !(picture.is_empty() || picture.starts_with("https://") || picture.starts_with("/static/")) {
        return Err(on("picture", "picture must be an https:// address or a /static/ path".into()));
    }
    let categories =
        f.categories.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect();
    Ok(Checked { price, stock, categories })
}

fn product_form(visit: &Visit, action: &str, f: &ProductForm, refusal: Option<&Refusal>) -> Markup {
    let on = |name: &str| error_at(refusal, name);
    let description_error = on("description");
    html! {
        (form_error(general_error(refusal)))
        form id="product-form" action=(action) method="post" novalidate {
            (csrf(visit))
            (field("Name", "name", &f.name, Input::text().required().maxlength(200), on("name")))
            div class={ "field" @if description_error.is_some() { " invalid" } } {
                label for="description" { "Description" }
                textarea id="description" name="description" rows="4" { (f.description) }
                @if let Some(e) = description_error { p class="field-error" id="description-error" { (e) } }
            }
            (field("Price (e.g. 19.90)", "price", &f.price, Input::text().required().maxlength(12).autocomplete("off"), on("price")))
            (field("Stock", "stock", &f.stock, Input::of("number").required().range(0, 1_000_000), on("stock")))
            (field("Categories (comma-separated)", "categories", &f.categories, Input::text(), on("categories")))
            (field("Picture URL (https:// or /static/…)", "picture", &f.picture, Input::text(), on("picture")))
            button id="save-product" type="submit" class="primary" { "Save" }
        }
    }
}

async fn product_form_page(
    state: &AppState,
    visit: &Visit,
    title: &str,
    action: &str,
    form: &ProductForm,
    refusal: Option<Refusal>,
    extra: Markup,
) -> Result<Response, Problem> {
    let categories = categories(state).await;
    let status = refusal.as_ref().map_or(StatusCode::OK, |r| r.status);
    let main = html! {
        h1 { (title) }
        (admin_nav())
        (product_form(visit, action, form, refusal.as_ref()))
        (extra)
    };
    Ok(respond(status, frame(Some(visit), &categories, title, main)))
}

pub async fn new_product(State(state): State<AppState>, visit: Visit) -> Result<Response, Problem> {
    admin(&visit)?;
    let form = ProductForm { stock: "0".into(), ..ProductForm::default() };
    product_form_page(&state, &visit, "New product", "/shop/admin/products", &form, None, html! {}).await
}

pub async fn create(
    State(state): State<AppState>,
    visit: Visit,
    Form(f): Form<ProductForm>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let refusal = match check(&f) {
        Ok(c) => {
            let request = pb::CreateProductRequest {
                name: f.name.trim().to_owned(),
                description: f.description.trim().to_owned(),
                picture: f.picture.trim().to_owned(),
                price_cents: c.price.get(),
                categories: c.categories,
                stock: c.stock,
            };
            match state.products.clone().create_product(request).await {
                Ok(r) => {
                    let p = r.into_inner().product.ok_or(Problem::Internal)?;
                    return Ok(see_other(&format!("/shop/admin/products/{}?saved=1", p.product_id)));
                }
                Err(s) => Refusal::from_api(s.into(), PRODUCT_FIELDS)?,
            }
        }
        Err(r) => r,
    };
    product_form_page(&state, &visit, "New product", "/shop/admin/products", &f, Some(refusal), html! {})
        .await
}

fn product_id(id: &str) -> Result<i64, Problem> {
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Problem::NotFound("there is no such product".into()))
}

fn delete_form(visit: &Visit, id: i64) -> Markup {
    html! {
        form class="danger" action={ "/shop/admin/products/" (id) "/delete" } method="post" {
            (csrf(visit))
            button id="delete-product" type="submit" { "Delete this product" }
        }
    }
}

pub async fn edit(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let id = product_id(&id)?;
    let p = state.products.clone().get_product(pb::GetProductRequest { product_id: id }).await?;
    let p = p.into_inner().product.ok_or(Problem::Internal)?;
    let title = format!("Edit {}", p.name);
    let action = format!("/shop/admin/products/{id}");
    let extra = html! {
        @if q.saved.is_some() { (notice("Saved.")) }
        p { a href=(super::pages::product_href(id)) { "See it in the shop" } }
        (delete_form(&visit, id))
    };
    product_form_page(&state, &visit, &title, &action, &ProductForm::of(&p), None, extra).await
}

pub async fn update(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Form(f): Form<ProductForm>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let id = product_id(&id)?;
    let refusal = match check(&f) {
        Ok(c) => {
            let request = pb::UpdateProductRequest {
                product_id: id,
                name: Some(f.name.trim().to_owned()),
                description: Some(f.description.trim().to_owned()),
                picture: Some(f.picture.trim().to_owned()),
                price_cents: Some(c.price.get()),
                categories: Some(pb::CategoryList { names: c.categories }),
                stock: Some(c.stock),
            };
            match state.products.clone().update_product(request).await {
                Ok(_) => return Ok(see_other(&format!("/shop/admin/products/{id}?saved=1"))),
                Err(s) => Refusal::from_api(s.into(), PRODUCT_FIELDS)?,
            }
        }
        Err(r) => r,
    };
    let action = format!("/shop/admin/products/{id}");
    product_form_page(&state, &visit, "Edit product", &action, &f, Some(refusal), delete_form(&visit, id))
        .await
}

pub async fn delete(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Form(_): Form<super::account::Nothing>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let product_id = product_id(&id)?;
    state.products.clone().delete_product(pb::DeleteProductRequest { product_id }).await?;
    Ok(see_other("/shop/admin?deleted=1"))
}

pub async fn orders(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<PageQuery>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let page = q.page();
    let filter: Option<OrderStatus> = q.status.as_deref().and_then(|s| s.parse().ok());
    let request = order::ListAllOrdersRequest {
        page,
        page_size: 20,
        status: filter.map(|s| order::OrderStatus::from(s) as i32),
    };
    let mut client = state.orders.clone();
    let (categories, listed) = tokio::join!(categories(&state), client.list_all_orders(request));
    let listed = listed?.into_inner();
    let filter_name = filter.map(OrderStatus::as_str).unwrap_or("");
    let href = |p: i32| format!("/shop/admin/orders?status={filter_name}&page={p}");
    let main = html! {
        h1 { "Orders" }
        (admin_nav())
        @if q.marked.is_some() { (notice("The order is marked paid.")) }
        nav class="filters" aria-label="Order status" {
            ul {
                li { a href="/shop/admin/orders" aria-current=[filter.is_none().then_some("page")] { "All" } }
                @for s in [OrderStatus::Pending, OrderStatus::Paid, OrderStatus::Cancelled] {
                    li { a href={ "/shop/admin/orders?status=" (s.as_str()) } aria-current=[(filter == Some(s)).then_some("page")] { (s.as_str()) } }
                }
            }
        }
        @if listed.total == 0 {
            p id="no-orders" { "No orders." }
        } @else {
            (orders_table(&listed.items, Reader::Admin(&visit)))
            (pager(listed.page, listed.page_size, listed.total, href))
        }
    };
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Admin: orders", main)))
}

pub async fn mark_paid(
    State(state): State<AppState>,
    visit: Visit,
    Path(id): Path<String>,
    Form(_): Form<super::account::Nothing>,
) -> Result<Response, Problem> {
    admin(&visit)?;
    let order_id = mall_domain::OrderId::parse(&id)
        .map_err(|_| Problem::NotFound("there is no such order".into()))?
        .to_string();
    let request = order::MarkPaidRequest { order_id, transaction_id: String::new() };
    state.orders.clone().mark_paid(request).await?;
    Ok(see_other("/shop/admin/orders?marked=1"))
}
