//! The storefront: a shop in the browser at `/`, served by the gateway on the API's port from the same
//! service calls the API makes. Pages are rendered on the server (maud templates, checked when the
//! gateway compiles) and work without JavaScript; there is none. The session is the API's JWT in an
//! `HttpOnly` cookie, every form that changes something carries a CSRF token, and the pages allow no
//! inline code (see [`session`]). Static files are embedded in the binary ([`assets`]).
//!
//! Routes live under `/shop/` so that none meets an API route; only the home page is at `/`.

mod account;
mod admin;
pub mod assets;
mod buy;
mod catalog;
mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use mall_proto::product::v1 as pb;

use crate::AppState;
use crate::error::ApiError;

/// A category and how many products it has, for the navigation.
#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub products: i64,
}

/// How long the catalog's navigation and the home page's products are reused before they are read
/// again: a product an admin adds shows on the home page within this time (its own page, searches and
/// category pages show it at once).
pub const CATALOG_TTL: Duration = Duration::from_secs(10);

/// What the storefront keeps between requests.
pub struct Shop {
    categories: moka::future::Cache<(), Arc<Vec<Category>>>,
    featured: moka::future::Cache<(), Arc<Vec<pb::Product>>>,
}

impl Default for Shop {
    fn default() -> Self {
        Shop { categories: one_value(), featured: one_value() }
    }
}

fn one_value<V: Clone + Send + Sync + 'static>() -> moka::future::Cache<(), V> {
    moka::future::Cache::builder().max_capacity(1).time_to_live(CATALOG_TTL).build()
}

/// How many products the home page shows.
const FEATURED: i32 = 8;

impl Shop {
    /// The categories for the navigation (cached for [`CATALOG_TTL`]).
    async fn categories(&self, state: &AppState) -> Result<Arc<Vec<Category>>, ApiError> {
        let products = state.products.clone();
        self.categories
            .try_get_with((), async move {
                let r = products.clone().list_categories(pb::ListCategoriesRequest {}).await?;
                let list = r
                    .into_inner()
                    .categories
                    .into_iter()
                    .map(|c| Category { name: c.name, products: c.products });
                Ok::<_, ApiError>(Arc::new(list.collect()))
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }

    /// The home page's products: the newest (cached for [`CATALOG_TTL`]).
    async fn featured(&self, state: &AppState) -> Result<Arc<Vec<pb::Product>>, ApiError> {
        let products = state.products.clone();
        self.featured
            .try_get_with((), async move {
                let request = pb::ListProductsRequest { page: 1, page_size: FEATURED, category: None };
                let r = products.clone().list_products(request).await?;
                Ok::<_, ApiError>(Arc::new(r.into_inner().items))
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }
}

/// Every storefront route: the home page, the pages under `/shop/` (each through [`session::edge`]),
/// and the static files.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/category/{name}", get(catalog::category))
        .route("/search", get(catalog::search))
        .route("/products/{id}", get(catalog::product))
        .route("/cart", get(buy::cart))
        .route("/cart/add", post(buy::add))
        .route("/cart/set", post(buy::set))
        .route("/cart/remove", post(buy::remove))
        .route("/checkout", get(buy::checkout_form).post(buy::checkout))
        .route("/orders", get(buy::orders))
        .route("/orders/{id}", get(buy::order))
        .route("/orders/{id}/cancel", post(buy::cancel))
        .route("/login", get(account::login_form).post(account::login))
        .route("/register", get(account::register_form).post(account::register))
        .route("/logout", post(account::logout))
        .route("/admin", get(admin::products))
        .route("/admin/products/new", get(admin::new_product))
        .route("/admin/products", post(admin::create))
        .route("/admin/products/{id}", get(admin::edit).post(admin::update))
        .route("/admin/products/{id}/delete", post(admin::delete))
        .route("/admin/orders", get(admin::orders))
        .route("/admin/orders/{id}/mark-paid", post(admin::mark_paid))
        .fallback(|| async { pages::Problem::NotFound("there is no such page".into()) });
    Router::new()
        .route("/", get(catalog::home))
        .nest("/shop", pages)
        .layer(middleware::from_fn_with_state(state, session::edge))
        .route("/static/{*path}", get(assets::serve))
}
