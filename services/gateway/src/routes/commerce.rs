//! Shopping: the cart, orders, payment and checkout. The caller is always the token's user; an old
//! client's `user_id`/`userid` body field is accepted only when it names that same user.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use mall_domain::{Address, Email, OrderId, OrderStatus, PaymentStatus, ProductId};
use mall_proto::cart::v1 as cart;
use mall_proto::checkout::v1 as checkout;
use mall_proto::order::v1 as order;
use mall_proto::payment::v1 as payment;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Admin, CurrentUser};
use crate::envelope::{created, ok};
use crate::error::ApiError;
use crate::input::{JsonBody, JsonOrForm, PageParams, Params};
use crate::money::format_cents;
use crate::{AppState, limit, rfc3339};

/// A user id as old clients sent it: a number or a numeric string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClaimedUser {
    Number(i64),
    Text(String),
}

/// The `user_id`/`userid` fields old clients put in bodies; flattened into each body.
#[derive(Debug, Default, Deserialize)]
pub struct Claimed {
    user_id: Option<ClaimedUser>,
    userid: Option<ClaimedUser>,
}

impl Claimed {
    /// 403 when the body names another user than the token's.
    fn check(&self, user: &CurrentUser) -> Result<(), ApiError> {
        for c in [&self.user_id, &self.userid].into_iter().flatten() {
            let same = match c {
                ClaimedUser::Number(n) => *n == user.user_id,
                ClaimedUser::Text(s) => s.trim().parse::<i64>().is_ok_and(|n| n == user.user_id),
            };
            if !same {
                return Err(ApiError::Forbidden(
                    "user_id in the body does not match the token's user".into(),
                ));
            }
        }
        Ok(())
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(String::new()),
        Some(v) => {
            let key = v.to_str().map(str::trim).unwrap_or("");
            if key.is_empty() || key.len() > 128 {
                return Err(ApiError::InvalidInput(
                    "Idempotency-Key must be 1 to 128 visible characters".into(),
                ));
            }
            Ok(key.to_owned())
        }
    }
}

fn cart_json(c: &cart::Cart) -> Value {
    let items: Vec<Value> = c
        .items
        .iter()
        .map(|i| {
            json!({
                "product_id": i.product_id,
                "quantity": i.quantity,
                "name": i.name,
                "price": format_cents(i.price_cents),
                "price_cents": i.price_cents,
                "line_total_cents": i.line_total_cents,
                "available": i.available,
            })
        })
        .collect();
    json!({ "items": items, "total": format_cents(c.total_cents), "total_cents": c.total_cents })
}

#[derive(Deserialize)]
pub struct AddItemBody {
    product_id: i64,
    quantity: i64,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn add_item(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonOrForm(b): JsonOrForm<AddItemBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    if !(1..=999).contains(&b.quantity) {
        return Err(ApiError::InvalidInput("quantity must be between 1 and 999".into()));
    }
    let product_id = ProductId::new(b.product_id)?.get();
    let request = cart::AddItemRequest { user_id: user.user_id, product_id, quantity: b.quantity };
    let c = state.carts.clone().add_item(request).await?.into_inner().cart.ok_or(ApiError::Internal)?;
    Ok(ok(cart_json(&c)))
}

#[derive(Deserialize)]
pub struct SetItemBody {
    product_id: i64,
    quantity: i64,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn set_item(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonOrForm(b): JsonOrForm<SetItemBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    if !(0..=999).contains(&b.quantity) {
        return Err(ApiError::InvalidInput("quantity must be between 0 and 999".into()));
    }
    let product_id = ProductId::new(b.product_id)?.get();
    let request = cart::SetItemRequest { user_id: user.user_id, product_id, quantity: b.quantity };
    let c = state.carts.clone().set_item(request).await?.into_inner().cart.ok_or(ApiError::Internal)?;
    Ok(ok(cart_json(&c)))
}

#[derive(Deserialize)]
pub struct RemoveItemBody {
    product_id: i64,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn remove_item(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonOrForm(b): JsonOrForm<RemoveItemBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    let product_id = ProductId::new(b.product_id)?.get();
    let request = cart::RemoveItemRequest { user_id: user.user_id, product_id };
    let c = state.carts.clone().remove_item(request).await?.into_inner().cart.ok_or(ApiError::Internal)?;
    Ok(ok(cart_json(&c)))
}

pub async fn get_cart(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let c = state.carts.clone().get_cart(cart::GetCartRequest { user_id: user.user_id }).await?;
    Ok(ok(cart_json(&c.into_inner().cart.ok_or(ApiError::Internal)?)))
}

pub async fn post_cart(
    State(state): State<AppState>,
    user: CurrentUser,
    body: Option<JsonOrForm<Claimed>>,
) -> Result<impl IntoResponse, ApiError> {
    // Old clients post `user_id` to read or empty a cart; new ones send no body.
    body.map(|b| b.0).unwrap_or_default().check(&user)?;
    get_cart(State(state), user).await
}

pub async fn empty_cart(
    State(state): State<AppState>,
    user: CurrentUser,
    body: Option<JsonOrForm<Claimed>>,
) -> Result<impl IntoResponse, ApiError> {
    // Old clients post `user_id` to read or empty a cart; new ones send no body.
    body.map(|b| b.0).unwrap_or_default().check(&user)?;
    let c = state.carts.clone().empty_cart(cart::EmptyCartRequest { user_id: user.user_id }).await?;
    Ok(ok(cart_json(&c.into_inner().cart.ok_or(ApiError::Internal)?)).msg("emptied"))
}

#[derive(Deserialize, Clone)]
pub struct AddressBody {
    street_address: String,
    city: String,
    state: String,
    country: String,
    zip_code: ZipCode,
}

/// Zip codes are strings; old clients sent numbers.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum ZipCode {
    Text(String),
    Number(u64),
}

impl AddressBody {
    fn parse(&self) -> Result<Address, mall_domain::Invalid> {
        let zip_code = match &self.zip_code {
            ZipCode::Text(s) => s.clone(),
            ZipCode::Number(n) => n.to_string(),
        };
        Address::parse(&self.street_address, &self.city, &self.state, &self.country, &zip_code)
    }
}

fn address_json(a: &Option<order::Address>) -> Value {
    match a {
        Some(a) => json!({ "street_address": a.street_address, "city": a.city, "state": a.state,
                           "country": a.country, "zip_code": a.zip_code }),
        None => Value::Null,
    }
}

pub(crate) fn status_name(o: &order::Order) -> &'static str {
    OrderStatus::try_from(o.status()).map_or("unknown", OrderStatus::as_str)
}

fn order_json(o: &order::Order) -> Value {
    let items: Vec<Value> = o
        .items
        .iter()
        .map(|i| {
            json!({
                "product_id": i.product_id,
                "name": i.name,
                "quantity": i.quantity,
                "price": format_cents(i.unit_price_cents),
                "price_cents": i.unit_price_cents,
                "line_total_cents": i.line_total_cents,
            })
        })
        .collect();
    json!({
        "order_id": o.order_id,
        "status": status_name(o),
        "email": o.email,
        "address": address_json(&o.address),
        "items": items,
        "total": format_cents(o.total_cents),
        "total_cents": o.total_cents,
        "transaction_id": o.transaction_id,
        "created_at": rfc3339(o.created_at),
        "updated_at": rfc3339(o.updated_at),
        "expires_at": rfc3339(o.expires_at),
    })
}

#[derive(Deserialize)]
pub struct LineBody {
    product_id: i64,
    quantity: i64,
}

#[derive(Deserialize)]
pub struct PlaceBody {
    email: String,
    address: AddressBody,
    items: Option<Vec<LineBody>>,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn place_order(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    JsonBody(b): JsonBody<PlaceBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    limit::spending(&state.cache, &state.config.limits, user.user_id).await?;
    let key = idempotency_key(&headers)?;
    let email = Email::parse(&b.email)?;
    let address = b.address.parse()?;
    let items: Vec<order::OrderLine> = match b.items {
        Some(lines) => lines
            .into_iter()
            .map(|l| {
                Ok(order::OrderLine { product_id: ProductId::new(l.product_id)?.get(), quantity: l.quantity })
            })
            .collect::<Result<_, ApiError>>()?,
        None => {
            let c = state.carts.clone().get_cart(cart::GetCartRequest { user_id: user.user_id }).await?;
            let c = c.into_inner().cart.ok_or(ApiError::Internal)?;
            c.items
                .iter()
                .filter(|i| i.available)
                .map(|i| order::OrderLine { product_id: i.product_id, quantity: i.quantity })
                .collect()
        }
    };
    if items.is_empty() {
        return Err(ApiError::InvalidInput("there is nothing to order: give items or fill the cart".into()));
    }
    let request = order::PlaceOrderRequest {
        user_id: user.user_id,
        email: email.into(),
        address: Some((&address).into()),
        items,
        idempotency_key: key,
    };
    let placed = state.orders.clone().place_order(request).await?.into_inner();
    let o = placed.order.ok_or(ApiError::Internal)?;
    Ok(created(json!({
        "order_id": o.order_id,
        "total": format_cents(o.total_cents),
        "total_cents": o.total_cents,
        "status": status_name(&o),
    }))
    .msg("order placed"))
}

#[derive(Deserialize, Default)]
pub struct ListBody {
    page: Option<Value>,
    page_size: Option<Value>,
    #[serde(flatten)]
    claimed: Claimed,
}

async fn list(state: &AppState, user: &CurrentUser, page: i32, page_size: i32) -> Result<Value, ApiError> {
    let request = order::ListOrdersRequest { user_id: user.user_id, page, page_size };
    let r = state.orders.clone().list_orders(request).await?.into_inner();
    let items: Vec<Value> = r.items.iter().map(order_json).collect();
    Ok(json!({ "items": items, "page": r.page, "page_size": r.page_size, "total": r.total }))
}

pub async fn list_orders_get(
    State(state): State<AppState>,
    user: CurrentUser,
    Params(p): Params<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, page_size) = p.parse()?;
    Ok(ok(list(&state, &user, page, page_size).await?))
}

pub async fn list_orders_post(
    State(state): State<AppState>,
    user: CurrentUser,
    body: Option<JsonOrForm<ListBody>>,
) -> Result<impl IntoResponse, ApiError> {
    let b = body.map(|b| b.0).unwrap_or_default();
    b.claimed.check(&user)?;
    let text = |v: Option<Value>| {
        v.map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    };
    let p = PageParams { page: text(b.page), page_size: text(b.page_size) };
    let (page, page_size) = p.parse()?;
    Ok(ok(list(&state, &user, page, page_size).await?))
}

pub async fn get_order(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(order_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // An id that cannot name an order names none of the caller's: 404, as for any other.
    let order_id = OrderId::parse(&order_id).map_err(|_| ApiError::NotFound("order not found".into()))?;
    let request = order::GetOrderRequest { user_id: user.user_id, order_id: order_id.to_string() };
    let o = state.orders.clone().get_order(request).await?.into_inner().order.ok_or(ApiError::Internal)?;
    Ok(ok(order_json(&o)))
}

#[derive(Deserialize)]
pub struct OrderIdBody {
    order_id: String,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn cancel_order(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonOrForm(b): JsonOrForm<OrderIdBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    let order_id = OrderId::parse(&b.order_id)?.to_string();
    let request = order::CancelOrderRequest { user_id: user.user_id, order_id };
    let o = state.orders.clone().cancel_order(request).await?.into_inner().order.ok_or(ApiError::Internal)?;
    Ok(ok(order_json(&o)).msg("cancelled"))
}

pub async fn mark_paid(
    State(state): State<AppState>,
    _admin: Admin,
    JsonOrForm(b): JsonOrForm<OrderIdBody>,
) -> Result<impl IntoResponse, ApiError> {
    let order_id = OrderId::parse(&b.order_id)?.to_string();
    let request = order::MarkPaidRequest { order_id, transaction_id: String::new() };
    let o = state.orders.clone().mark_paid(request).await?.into_inner().order.ok_or(ApiError::Internal)?;
    Ok(ok(order_json(&o)).msg("marked paid"))
}

#[derive(Deserialize)]
pub struct CardBody {
    credit_card_number: String,
    credit_card_cvv: CardDigits,
    credit_card_expiration_year: i32,
    credit_card_expiration_month: i32,
}

/// CVVs arrive as strings or numbers from old clients. A number loses leading zeros, so it is only
/// taken as the digits it prints.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum CardDigits {
    Text(String),
    Number(u64),
}

impl From<CardBody> for payment::CreditCard {
    fn from(c: CardBody) -> Self {
        let cvv = match c.credit_card_cvv {
            CardDigits::Text(s) => s,
            CardDigits::Number(n) => n.to_string(),
        };
        payment::CreditCard {
            number: c.credit_card_number,
            cvv,
            expiration_year: c.credit_card_expiration_year,
            expiration_month: c.credit_card_expiration_month,
        }
    }
}

pub(crate) fn decline(reason: i32) -> ApiError {
    let why = match payment::DeclineReason::try_from(reason) {
        Ok(payment::DeclineReason::InvalidNumber) => "the card number is not valid",
        Ok(payment::DeclineReason::InvalidCvv) => "the CVV must be 3 or 4 digits",
        Ok(payment::DeclineReason::InvalidExpiry) => "the expiration date is not valid",
        Ok(payment::DeclineReason::Expired) => "the card has expired",
        _ => "the card was declined by the processor",
    };
    ApiError::PaymentDeclined(format!("payment declined: {why}"))
}

#[derive(Deserialize)]
pub struct ChargeBody {
    order_id: String,
    credit_card: CardBody,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn charge(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    JsonBody(b): JsonBody<ChargeBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    limit::spending(&state.cache, &state.config.limits, user.user_id).await?;
    let request = payment::ChargeRequest {
        order_id: OrderId::parse(&b.order_id)?.to_string(),
        user_id: user.user_id,
        credit_card: Some(b.credit_card.into()),
        idempotency_key: idempotency_key(&headers)?,
    };
    let p = state.payments.clone().charge(request).await?.into_inner().payment.ok_or(ApiError::Internal)?;
    if p.status == payment::PaymentStatus::Declined as i32 {
        return Err(decline(p.decline_reason));
    }
    Ok(ok(json!({
        "transaction_id": p.transaction_id,
        "order_id": p.order_id,
        "amount": format_cents(p.amount_cents),
        "amount_cents": p.amount_cents,
        "card_last4": p.card_last4,
        "card_brand": p.card_brand,
        "status": PaymentStatus::Succeeded.as_str(),
    })))
}

#[derive(Deserialize)]
pub struct CheckoutBody {
    firstname: String,
    lastname: String,
    email: String,
    address: AddressBody,
    credit_card: CardBody,
    #[serde(flatten)]
    claimed: Claimed,
}

pub async fn checkout(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    JsonBody(b): JsonBody<CheckoutBody>,
) -> Result<impl IntoResponse, ApiError> {
    b.claimed.check(&user)?;
    limit::spending(&state.cache, &state.config.limits, user.user_id).await?;
    let email = Email::parse(&b.email)?;
    let address = b.address.parse()?;
    let request = checkout::CheckoutRequest {
        user_id: user.user_id,
        idempotency_key: idempotency_key(&headers)?,
        firstname: b.firstname,
        lastname: b.lastname,
        email: email.into(),
        address: Some((&address).into()),
        credit_card: Some(b.credit_card.into()),
    };
    let r = state.checkouts.clone().checkout(request).await?.into_inner();
    if r.outcome == checkout::CheckoutOutcome::Declined as i32 {
        return Err(decline(r.decline_reason));
    }
    Ok(ok(json!({
        "order_id": r.order_id,
        "transaction_id": r.transaction_id,
        "total": format_cents(r.total_cents),
        "total_cents": r.total_cents,
    }))
    .msg("order paid"))
}
