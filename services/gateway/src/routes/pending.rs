//! Routes of the contract whose services are not built yet: they answer 501 in the envelope, so a
//! client sees an honest "not yet" instead of a 404.

use axum::Router;
use axum::http::Uri;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

const PENDING_GET: &[&str] =
    &["/products/list", "/products/search", "/products/{id}", "/cart", "/orders", "/orders/{id}"];
const PENDING_POST: &[&str] = &[
    "/product/create",
    "/product/update",
    "/product/delete",
    "/cart/additem",
    "/cart/get",
    "/cart/empty",
    "/order/place",
    "/order/listorder",
    "/order/cancel",
    "/order/mark-paid",
    "/payment/charge",
    "/checkout",
];

async fn not_yet(uri: Uri) -> ApiError {
    ApiError::NotImplemented(uri.path().to_owned())
}

pub fn routes() -> Router<AppState> {
    let router = PENDING_GET.iter().fold(Router::new(), |r, path| r.route(path, get(not_yet)));
    PENDING_POST.iter().fold(router, |r, path| r.route(path, post(not_yet)))
}
