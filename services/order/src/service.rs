//! The `OrderService` gRPC implementation: placing (priced by the product service, stock reserved),
//! reading, cancelling and paying orders.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mall_domain::{OrderId, OrderStatus, UserId};
use mall_proto::order::v1 as pb;
use mall_proto::order::v1::order_service_server::OrderService;
use mall_storage::Db;
use tonic::{Request, Response, Status};

use crate::OrderError;
use crate::input::{self, NewOrder, Page};
use crate::lifecycle::{self, OnRefusal};
use crate::stock::Stock;
use crate::store::{self, Order, OrderFilter, OrderItem};

/// Longest transaction id MarkPaid accepts (the column's width).
const MAX_TRANSACTION_ID: usize = 128;
/// How often a write that lost a race (to a concurrent call on the same order or key) looks again.
const RACE_RETRIES: usize = 5;

pub struct Orders {
    db: Db,
    stock: Stock,
    unpaid_ttl: Duration,
}

impl Orders {
    pub fn new(db: Db, stock: Stock, unpaid_ttl: Duration) -> Orders {
        Orders { db, stock, unpaid_ttl }
    }

    /// The order, and whether it is the replay of an earlier call with the same idempotency key.
    async fn place(&self, req: pb::PlaceOrderRequest) -> Result<(Order, bool), OrderError> {
        let new = NewOrder::parse(req)?;
        let request_hash = new.request_hash();
        let key_hash = new.key_hash();
        for _ in 0..RACE_RETRIES {
            if let Some(key) = key_hash.as_deref()
                && let Some(first) = store::find_by_key(&self.db, new.user_id.get(), key).await?
            {
                return Ok((self.replay(first, &request_hash).await?, true));
            }
            let order = self.priced(&new, request_hash.clone()).await?;
            // On a clash with a concurrent call under the same key, nothing was written: loop to
            // read that call's order.
            if store::insert(&self.db, &order, key_hash.as_deref()).await? {
                tracing::info!(order_id = %order.order_id, user_id = order.user_id, total_cents = order.total_cents, "order placed");
                let order = lifecycle::reserve_stock(&self.db, &self.stock, order, OnRefusal::Forget).await?;
                return Ok((order, false));
            }
        }
        Err(OrderError::Internal("the idempotency key's order kept appearing and disappearing".into()))
    }

    /// The first order placed under a key, for a call repeating it.
    async fn replay(&self, first: Order, request_hash: &str) -> Result<Order, OrderError> {
        if first.request_hash != request_hash {
            return Err(OrderError::KeyReused(
                "this idempotency key was already used for a different order (other email, address or items)"
                    .into(),
            ));
        }
        if first.status == OrderStatus::Pending && !first.stock_reserved {
            // The first call did not get to confirm its reservation (it failed or is still running):
            // ReserveStock is idempotent per order id, so finish the job.
            return lifecycle::reserve_stock(&self.db, &self.stock, first, OnRefusal::Forget).await;
        }
        Ok(first)
    }

    /// A pending order for `new`, every line priced by the product service now.
    pub(crate) async fn priced(&self, new: &NewOrder, request_hash: String) -> Result<Order, OrderError> {
        let ids: Vec<i64> = new.lines.iter().map(|&(id, _)| id.get()).collect();
        let products = self.stock.products(&ids).await?;
        let mut items = Vec::with_capacity(new.lines.len());
        let mut total_cents = 0i64;
        for &(product_id, quantity) in &new.lines {
            let product_id = product_id.get();
            let product = products.get(&product_id).ok_or_else(|| {
                OrderError::FailedPrecondition(format!("product {product_id} is not for sale"))
            })?;
            let overflow = || OrderError::Internal(format!("order total overflows at product {product_id}"));
            let line_total_cents = product.price_cents.checked_mul(quantity).ok_or_else(overflow)?;
            total_cents = total_cents.checked_add(line_total_cents).ok_or_else(overflow)?;
            items.push(OrderItem {
                product_id,
                name: product.name.clone(),
                unit_price_cents: product.price_cents,
                quantity,
                line_total_cents,
            });
        }
        let (created_at, expires_at) = lifetime(self.unpaid_ttl);
        Ok(Order {
            order_id: uuid::Uuid::now_v7().to_string(),
            user_id: new.user_id.get(),
            email: new.email.to_string(),
            address: (&new.address).into(),
            items,
            total_cents,
            status: OrderStatus::Pending,
            transaction_id: String::new(),
            stock_reserved: false,
            release_pending: false,
            request_hash,
            created_at,
            updated_at: created_at,
            expires_at,
        })
    }

    async fn list(&self, req: pb::ListOrdersRequest) -> Result<pb::ListOrdersResponse, OrderError> {
        let user_id = UserId::new(req.user_id)?;
        let page = Page::parse(req.page, req.page_size)?;
        let (items, total) = self.page_of(OrderFilter::user(user_id.get()), page).await?;
        Ok(pb::ListOrdersResponse { items, page: page.page, page_size: page.page_size, total })
    }

    /// Every user's orders (an admin's list), optionally of one status.
    async fn list_all(&self, req: pb::ListAllOrdersRequest) -> Result<pb::ListAllOrdersResponse, OrderError> {
        let page = Page::parse(req.page, req.page_size)?;
        let status = input::status_filter(req.status)?;
        let (items, total) = self.page_of(OrderFilter { user_id: None, status }, page).await?;
        Ok(pb::ListAllOrdersResponse { items, page: page.page, page_size: page.page_size, total })
    }

    /// One page of the orders `filter` selects, newest first, and how many it selects in all.
    async fn page_of(&self, filter: OrderFilter, page: Page) -> Result<(Vec<pb::Order>, i64), OrderError> {
        let orders = store::list(&self.db, filter, page.limit(), page.offset()).await?;
        let total = store::count(&self.db, filter).await?;
        Ok((orders.iter().map(to_proto).collect(), total))
    }

    /// The user's order; another user's is exactly as unknown as a missing one.
    async fn own_order(&self, user_id: UserId, order_id: &OrderId) -> Result<Order, OrderError> {
        match store::find(&self.db, order_id.as_str()).await? {
            Some(order) if order.user_id == user_id.get() => Ok(order),
            _ => Err(OrderError::NotFound),
        }
    }

    async fn cancel(&self, req: pb::CancelOrderRequest) -> Result<Order, OrderError> {
        let user_id = UserId::new(req.user_id)?;
        let order_id = OrderId::parse(&req.order_id)?;
        for _ in 0..RACE_RETRIES {
            let order = self.own_order(user_id, &order_id).await?;
            let id = order.order_id.as_str();
            match order.status {
                OrderStatus::Paid => {
                    return Err(OrderError::FailedPrecondition(format!(
                        "order {id} is paid and can no longer be cancelled"
                    )));
                }
                OrderStatus::Cancelled if !order.release_pending => return Ok(order),
                OrderStatus::Cancelled => {
                    // Cancelled earlier but its stock is not confirmed released yet: try again now.
                    lifecycle::release_stock(&self.db, &self.stock, id).await?;
                    return self.own_order(user_id, &order_id).await;
                }
                OrderStatus::Pending => {
                    if store::cancel(&self.db, id, None).await? {
                        tracing::info!(order_id = id, "order cancelled");
                        lifecycle::release_stock(&self.db, &self.stock, id).await?;
                        return self.own_order(user_id, &order_id).await;
                    }
                    // Paid or cancelled meanwhile: look again.
                }
            }
        }
        Err(OrderError::Internal("the order kept changing while being cancelled".into()))
    }

    async fn mark_paid(&self, req: pb::MarkPaidRequest) -> Result<Order, OrderError> {
        let order_id = OrderId::parse(&req.order_id)?;
        let order_id = order_id.as_str();
        let transaction_id = req.transaction_id.trim();
        if transaction_id.chars().count() > MAX_TRANSACTION_ID {
            return Err(OrderError::InvalidArgument(format!(
                "transaction_id is longer than {MAX_TRANSACTION_ID} characters"
            )));
        }
        for _ in 0..RACE_RETRIES {
            let order = store::find(&self.db, order_id).await?.ok_or(OrderError::NotFound)?;
            match order.status {
                OrderStatus::Paid if transaction_id.is_empty() || order.transaction_id == transaction_id => {
                    return Ok(order);
                }
                OrderStatus::Paid => {
                    return Err(OrderError::FailedPrecondition(format!(
                        "order {order_id} is already paid with another transaction"
                    )));
                }
                OrderStatus::Cancelled => {
                    return Err(OrderError::FailedPrecondition(format!(
                        "order {order_id} is cancelled and cannot be paid"
                    )));
                }
                OrderStatus::Pending => {
                    // Never a paid order without its stock: finish a reservation left unconfirmed.
                    let mut order = if order.stock_reserved {
                        order
                    } else {
                        lifecycle::reserve_stock(&self.db, &self.stock, order, OnRefusal::KeepCancelled)
                            .await?
                    };
                    let now = mall_storage::now_unix();
                    if store::mark_paid(&self.db, order_id, transaction_id, now).await? {
                        tracing::info!(order_id, transaction_id, "order paid");
                        // The write just made is all that changed (the order is not read back).
                        order.status = OrderStatus::Paid;
                        order.transaction_id = transaction_id.to_owned();
                        order.updated_at = now;
                        return Ok(order);
                    }
                    // Cancelled or paid meanwhile: look again.
                }
            }
        }
        Err(OrderError::Internal("the order kept changing while being marked paid".into()))
    }
}

/// (created_at, expires_at) in Unix seconds for an order placed now: the deadline is rounded up, so an
/// order never expires before `ttl` has passed.
fn lifetime(ttl: Duration) -> (i64, i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let deadline = now.saturating_add(ttl);
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let expires_at = secs(deadline).saturating_add(i64::from(deadline.subsec_nanos() > 0));
    (secs(now), expires_at)
}

fn to_proto(order: &Order) -> pb::Order {
    pb::Order {
        order_id: order.order_id.clone(),
        user_id: order.user_id,
        email: order.email.clone(),
        address: Some(order.address.clone()),
        items: order
            .items
            .iter()
            .map(|i| pb::OrderItem {
                product_id: i.product_id,
                name: i.name.clone(),
                unit_price_cents: i.unit_price_cents,
                quantity: i.quantity,
                line_total_cents: i.line_total_cents,
            })
            .collect(),
        total_cents: order.total_cents,
        status: pb::OrderStatus::from(order.status).into(),
        transaction_id: order.transaction_id.clone(),
        created_at: order.created_at,
        updated_at: order.updated_at,
        expires_at: order.expires_at,
    }
}

#[tonic::async_trait]
impl OrderService for Orders {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let (order, replayed) = self.place(request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse { order: Some(to_proto(&order)), replayed }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn list_all_orders(
        &self,
        request: Request<pb::ListAllOrdersRequest>,
    ) -> Result<Response<pb::ListAllOrdersResponse>, Status> {
        Ok(Response::new(self.list_all(request.into_inner()).await?))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let req = request.into_inner();
        let user_id = UserId::new(req.user_id).map_err(OrderError::from)?;
        let order_id = OrderId::parse(&req.order_id).map_err(OrderError::from)?;
        let order = self.own_order(user_id, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(to_proto(&order)) }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let order = self.cancel(request.into_inner()).await?;
        Ok(Response::new(pb::CancelOrderResponse { order: Some(to_proto(&order)) }))
    }

    async fn mark_paid(
        &self,
        request: Request<pb::MarkPaidRequest>,
    ) -> Result<Response<pb::MarkPaidResponse>, Status> {
        let order = Orders::mark_paid(self, request.into_inner()).await?;
        Ok(Response::new(pb::MarkPaidResponse { order: Some(to_proto(&order)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_never_expires_early() {
        let (created, expires) = lifetime(Duration::from_secs(1800));
        assert!(expires - created >= 1800 && expires - created <= 1801, "{created} {expires}");
        let (created, expires) = lifetime(Duration::from_millis(1));
        assert!((1..=2).contains(&(expires - created)), "{created} {expires}");
    }
}
