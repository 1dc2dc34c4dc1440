//! The catalog: public browsing (`/products/*`) and admin writes (`/product/*`).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use mall_domain::{Cents, ProductId};
use mall_proto::product::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::envelope::{created, ok};
use crate::error::ApiError;
use crate::input::{JsonBody, PageParams, Params};
use crate::limit::{self, ClientAddr};
use crate::money::{format_cents, price_from};
use crate::{AppState, rfc3339};

/// A product as the API shows it.
pub fn product_json(p: &pb::Product) -> Value {
    json!({
        "id": p.product_id,
        "name": p.name,
        "description": p.description,
        "picture": p.picture,
        "price": format_cents(p.price_cents),
        "price_cents": p.price_cents,
        "categories": p.categories,
        "stock": p.stock,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
    })
}

fn page_json(items: &[pb::Product], page: i32, page_size: i32, total: i64) -> Value {
    let items: Vec<Value> = items.iter().map(product_json).collect();
    json!({ "items": items, "page": page, "page_size": page_size, "total": total })
}

#[derive(Deserialize)]
pub struct ListParams {
    #[serde(flatten)]
    page: PageParams,
    category: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Params(q): Params<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, page_size) = q.page.parse()?;
    let category = q.category.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    let r =
        state.products.clone().list_products(pb::ListProductsRequest { page, page_size, category }).await?;
    let r = r.into_inner();
    Ok(ok(page_json(&r.items, r.page, r.page_size, r.total)))
}

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(flatten)]
    page: PageParams,
    query: Option<String>,
}

pub async fn search(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Params(q): Params<SearchParams>,
) -> Result<impl IntoResponse, ApiError> {
    limit::search(&state.cache, &state.config.limits, client).await?;
    let (page, page_size) = q.page.parse()?;
    let query = q.query.unwrap_or_default().trim().to_owned();
    let len = query.chars().count();
    if !(1..=100).contains(&len) {
        return Err(ApiError::InvalidInput("query must be 1 to 100 characters".into()));
    }
    let r =
        state.products.clone().search_products(pb::SearchProductsRequest { query, page, page_size }).await?;
    let r = r.into_inner();
    Ok(ok(page_json(&r.items, r.page, r.page_size, r.total)))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let product_id = id.parse::<ProductId>()?.get();
    let r = state.products.clone().get_product(pb::GetProductRequest { product_id }).await?;
    Ok(ok(product_json(&r.into_inner().product.ok_or(ApiError::Internal)?)))
}

/// The fields of create and update; all optional here so that update can take any subset.
#[derive(Deserialize)]
pub struct ProductBody {
    id: Option<i64>,
    name: Option<String>,
    description: Option<String>,
    picture: Option<String>,
    price: Option<Value>,
    price_cents: Option<i64>,
    categories: Option<Vec<String>>,
    stock: Option<i64>,
}

pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(b): JsonBody<ProductBody>,
) -> Result<impl IntoResponse, ApiError> {
    let name = b.name.ok_or_else(|| ApiError::InvalidInput("name is required".into()))?;
    let price_cents = price_from(b.price.as_ref(), b.price_cents)?
        .ok_or_else(|| ApiError::InvalidInput("price or price_cents is required".into()))?;
    let request = pb::CreateProductRequest {
        name,
        description: b.description.unwrap_or_default(),
        picture: b.picture.unwrap_or_default(),
        price_cents: price_cents.get(),
        categories: b.categories.unwrap_or_default(),
        stock: b.stock.unwrap_or(0),
    };
    let r = state.products.clone().create_product(request).await?;
    Ok(created(product_json(&r.into_inner().product.ok_or(ApiError::Internal)?)))
}

pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(b): JsonBody<ProductBody>,
) -> Result<impl IntoResponse, ApiError> {
    let product_id = b.id.ok_or_else(|| ApiError::InvalidInput("id is required".into()))?;
    let request = pb::UpdateProductRequest {
        product_id: ProductId::new(product_id)?.get(),
        name: b.name,
        description: b.description,
        picture: b.picture,
        price_cents: price_from(b.price.as_ref(), b.price_cents)?.map(Cents::get),
        categories: b.categories.map(|names| pb::CategoryList { names }),
        stock: b.stock,
    };
    let r = state.products.clone().update_product(request).await?;
    Ok(ok(product_json(&r.into_inner().product.ok_or(ApiError::Internal)?)))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    id: i64,
}

pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(b): JsonBody<DeleteBody>,
) -> Result<impl IntoResponse, ApiError> {
    let product_id = ProductId::new(b.id)?.get();
    state.products.clone().delete_product(pb::DeleteProductRequest { product_id }).await?;
    Ok(ok(json!({ "deleted": true })).msg("deleted"))
}
