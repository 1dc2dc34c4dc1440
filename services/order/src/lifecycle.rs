//! An order's dealings with the stock it holds: confirming a reservation, giving stock back, and the
//! expiry sweep.
//!
//! The rules that keep stock and orders consistent whatever crashes or races:
//! * an order is written (pending, `stock_reserved = 0`) before ReserveStock is called, so no stock is
//!   ever held for an order id the database does not know, except for the moment after a refusal
//!   described below;
//! * an order is cancelled together with `release_pending = 1`, and that flag is cleared only once
//!   ReleaseStock confirmed; the sweeper retries the release of every order still owing one;
//! * after ReleaseStock the product service refuses any later ReserveStock for that order id, so a
//!   reservation racing a cancellation is either refused or given back.

use mall_storage::Db;

use crate::OrderError;
use crate::stock::{Reservation, Stock};
use crate::store::{self, Order};

/// Most rows one sweep step reads at a time.
const SWEEP_BATCH: i64 = 100;
/// Most batches of each kind one sweep handles (the next sweep goes on).
const SWEEP_ROUNDS: usize = 50;

/// What to do with an order whose reservation the product service refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// PlaceOrder: the order never was; once its (empty) reservation is released, remove it.
    Forget,
    /// MarkPaid: a payment knows the order id; keep it, cancelled.
    KeepCancelled,
}

/// Reserves the order's stock and records it. A refusal cancels the order (see [`OnRefusal`]) and is
/// FAILED_PRECONDITION with the product service's message, which names the product.
pub async fn reserve_stock(
    db: &Db,
    stock: &Stock,
    mut order: Order,
    on_refusal: OnRefusal,
) -> Result<Order, OrderError> {
    let id = order.order_id.as_str();
    let lines: Vec<(i64, i64)> = order.items.iter().map(|i| (i.product_id, i.quantity)).collect();
    match stock.reserve(id, &lines).await? {
        Reservation::Held => {
            let now = mall_storage::now_unix();
            if store::mark_reserved(db, id, now).await? {
                // The write just made is all that changed (the order is not read back).
                order.stock_reserved = true;
                order.updated_at = now;
                return Ok(order);
            }
            // Cancelled while we reserved: what we took goes back (the cancellation also owes it).
            if let Err(e) = release_stock(db, stock, id).await {
                tracing::warn!(order_id = id, error = %e, "release after a lost race failed; the sweeper retries");
            }
            Err(OrderError::FailedPrecondition(format!("order {id} was cancelled")))
        }
        Reservation::Refused(message) => {
            if store::cancel_unreserved(db, id).await? {
                match release_stock(db, stock, id).await {
                    Ok(()) if on_refusal == OnRefusal::Forget => store::delete_released(db, id).await?,
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(order_id = id, error = %e, "release after a refusal failed; the sweeper retries");
                    }
                }
            }
            tracing::info!(order_id = id, reason = %message, "stock reservation refused");
            Err(OrderError::FailedPrecondition(message))
        }
    }
}

/// Gives back whatever a cancelled order holds and records that nothing is owed any more.
pub async fn release_stock(db: &Db, stock: &Stock, order_id: &str) -> Result<(), OrderError> {
    stock.release(order_id).await?;
    store::release_done(db, order_id).await
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Pending orders past `expires_at` that were cancelled.
    pub expired: usize,
    /// Cancelled orders whose stock was given back.
    pub released: usize,
}

/// Cancels every pending order whose `expires_at` has passed, then gives back the stock of every
/// cancelled order that still owes a release (these just expired, and any whose release failed
/// before). Safe to run from several replicas at once.
pub async fn sweep(db: &Db, stock: &Stock) -> Result<Swept, OrderError> {
    let now = mall_storage::now_unix();
    let mut swept = Swept::default();
    for _ in 0..SWEEP_ROUNDS {
        let ids = store::expired(db, now, SWEEP_BATCH).await?;
        for id in &ids {
            if store::cancel(db, id, Some(now)).await? {
                tracing::info!(order_id = %id, "unpaid order expired");
                swept.expired += 1;
            }
        }
        if ids.len() < SWEEP_BATCH as usize {
            break;
        }
    }
    'rounds: for _ in 0..SWEEP_ROUNDS {
        let ids = store::owing_release(db, SWEEP_BATCH).await?;
        for id in &ids {
            if let Err(e) = release_stock(db, stock, id).await {
                // Most likely the product service is down: leave the rest for the next sweep.
                tracing::warn!(order_id = %id, error = %e, "stock release failed; retrying next sweep");
                break 'rounds;
            }
            swept.released += 1;
        }
        if ids.len() < SWEEP_BATCH as usize {
            break;
        }
    }
    Ok(swept)
}
