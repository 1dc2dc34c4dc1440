//! The `orders` and `order_items` tables. Every status change is a conditional UPDATE on the status it
//! leaves, so concurrent cancels, payments and expiry can never both win.

use mall_domain::OrderStatus;
use mall_proto::order::v1::Address;
use mall_storage::Db;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::OrderError;

use OrderStatus::{Cancelled, Paid, Pending};

/// A line as the order keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: i64,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

/// An order with its lines (ascending by product id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub user_id: i64,
    pub email: String,
    pub address: Address,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub transaction_id: String,
    /// ReserveStock confirmed the reservation.
    pub stock_reserved: bool,
    /// Cancelled, and ReleaseStock has not confirmed the release yet.
    pub release_pending: bool,
    pub request_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
}

const ORDER_COLUMNS: &str = "order_id, user_id, email, street_address, city, state, country, zip_code, \
     total_cents, status, transaction_id, stock_reserved, release_pending, request_hash, created_at, \
     updated_at, expires_at";

fn order_from_row(row: &AnyRow) -> Result<Order, OrderError> {
    let status: OrderStatus = row.try_get::<String, _>("status")?.parse()?;
    Ok(Order {
        order_id: row.try_get("order_id")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        address: Address {
            street_address: row.try_get("street_address")?,
            city: row.try_get("city")?,
            state: row.try_get("state")?,
            country: row.try_get("country")?,
            zip_code: row.try_get("zip_code")?,
        },
        items: Vec::new(),
        total_cents: row.try_get("total_cents")?,
        status,
        transaction_id: row.try_get("transaction_id")?,
        stock_reserved: row.try_get::<i64, _>("stock_reserved")? != 0,
        release_pending: row.try_get::<i64, _>("release_pending")? != 0,
        request_hash: row.try_get("request_hash")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

type ItemRow = (String, i64, String, i64, i64, i64);

/// Writes a new pending order and its lines in one transaction. `Ok(false)` when nothing was written
/// because the user already has an order under `key_hash` (or the insert lost a deadlock): look again.
pub async fn insert(db: &Db, order: &Order, key_hash: Option<&str>) -> Result<bool, OrderError> {
    let mut tx = db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (order_id, user_id, email, street_address, city, state, country, zip_code, \
         total_cents, status, transaction_id, stock_reserved, release_pending, idempotency_key_hash, \
         request_hash, created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0, 0, ?, ?, ?, ?, ?)",
    )
    .bind(&order.order_id)
    .bind(order.user_id)
    .bind(&order.email)
    .bind(&order.address.street_address)
    .bind(&order.address.city)
    .bind(&order.address.state)
    .bind(&order.address.country)
    .bind(&order.address.zip_code)
    .bind(order.total_cents)
    .bind(Pending.as_str())
    .bind(key_hash)
    .bind(&order.request_hash)
    .bind(order.created_at)
    .bind(order.updated_at)
    .bind(order.expires_at)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // The order id is a fresh UUID, so the one unique key that can clash is the idempotency key.
        Err(e) if key_hash.is_some() && mall_storage::is_unique_violation(&e) => return Ok(false),
        // Concurrent inserts under one key can deadlock on InnoDB; the loser was rolled back, and the
        // caller looks for the winner's order and tries again.
        Err(e) if mall_storage::is_deadlock(&e) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    for item in &order.items {
        sqlx::query(
            "INSERT INTO order_items (order_id, product_id, name, unit_price_cents, quantity, \
             line_total_cents) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&order.order_id)
        .bind(item.product_id)
        .bind(&item.name)
        .bind(item.unit_price_cents)
        .bind(item.quantity)
        .bind(item.line_total_cents)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The order with this id, whoever it belongs to.
pub async fn find(db: &Db, order_id: &str) -> Result<Option<Order>, OrderError> {
    let sql = with_items_sql("o.order_id = ?");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_all(db.pool()).await?;
    one_with_items(&rows)
}

/// The user's order placed under this idempotency key.
pub async fn find_by_key(db: &Db, user_id: i64, key_hash: &str) -> Result<Option<Order>, OrderError> {
    let sql = with_items_sql("o.user_id = ? AND o.idempotency_key_hash = ?");
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(key_hash).fetch_all(db.pool()).await?;
    one_with_items(&rows)
}

/// One order (found by `condition`, a constant text with placeholders) and its lines in one statement:
/// a row per line, the order's columns repeated.
fn with_items_sql(condition: &str) -> String {
    let order_columns: Vec<String> = ORDER_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect();
    format!(
        "SELECT {}, i.product_id AS item_product_id, i.name AS item_name, \
         i.unit_price_cents AS item_unit_price_cents, i.quantity AS item_quantity, \
         i.line_total_cents AS item_line_total_cents \
         FROM orders o LEFT JOIN order_items i ON i.order_id = o.order_id \
         WHERE {condition} ORDER BY i.product_id",
        order_columns.join(", ")
    )
}

fn one_with_items(rows: &[AnyRow]) -> Result<Option<Order>, OrderError> {
    let Some(first) = rows.first() else { return Ok(None) };
    let mut order = order_from_row(first)?;
    for row in rows {
        let Some(product_id) = row.try_get::<Option<i64>, _>("item_product_id")? else { continue };
        order.items.push(OrderItem {
            product_id,
            name: row.try_get("item_name")?,
            unit_price_cents: row.try_get("item_unit_price_cents")?,
            quantity: row.try_get("item_quantity")?,
            line_total_cents: row.try_get("item_line_total_cents")?,
        });
    }
    Ok(Some(order))
}

fn item_from_row((_, product_id, name, unit_price_cents, quantity, line_total_cents): ItemRow) -> OrderItem {
    OrderItem { product_id, name, unit_price_cents, quantity, line_total_cents }
}

/// Which orders a list holds: one user's (ListOrders) or everyone's (ListAllOrders), and optionally
/// only those in one status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub user_id: Option<i64>,
    pub status: Option<OrderStatus>,
}

impl OrderFilter {
    /// One user's orders, in every status.
    pub fn user(user_id: i64) -> OrderFilter {
        OrderFilter { user_id: Some(user_id), status: None }
    }

    /// ` WHERE …` (empty for no condition), made of constant fragments only: one placeholder per given
    /// value, bound by [`OrderFilter::bind`] in the same order.
    fn where_sql(&self) -> String {
        let mut conditions = Vec::new();
        if self.user_id.is_some() {
            conditions.push("user_id = ?");
        }
        if self.status.is_some() {
            conditions.push("status = ?");
        }
        if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) }
    }

    /// Binds the values that [`OrderFilter::where_sql`] made placeholders for.
    fn bind<'q>(&self, mut query: AnyQuery<'q>) -> AnyQuery<'q> {
        if let Some(user_id) = self.user_id {
            query = query.bind(user_id);
        }
        if let Some(status) = self.status {
            query = query.bind(status.as_str());
        }
        query
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// One page of the orders that `filter` selects, newest first, each with its lines.
pub async fn list(db: &Db, filter: OrderFilter, limit: i64, offset: i64) -> Result<Vec<Order>, OrderError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders{} ORDER BY created_at DESC, order_id DESC LIMIT ? OFFSET ?",
        filter.where_sql()
    );
    let rows = filter
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(limit)
        .bind(offset)
        .fetch_all(db.pool())
        .await?;
    let mut orders = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
    if orders.is_empty() {
        return Ok(orders);
    }
    // The lines of exactly these orders; only placeholders are put into the text.
    let placeholders = vec!["?"; orders.len()].join(", ");
    let sql = format!(
        "SELECT order_id, product_id, name, unit_price_cents, quantity, line_total_cents \
         FROM order_items WHERE order_id IN ({placeholders}) ORDER BY order_id, product_id"
    );
    let mut query = sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(sql));
    for order in &orders {
        query = query.bind(order.order_id.clone());
    }
    for row in query.fetch_all(db.pool()).await? {
        if let Some(order) = orders.iter_mut().find(|o| o.order_id == row.0) {
            order.items.push(item_from_row(row));
        }
    }
    Ok(orders)
}

/// How many orders `filter` selects.
pub async fn count(db: &Db, filter: OrderFilter) -> Result<i64, OrderError> {
    let sql = format!("SELECT COUNT(*) FROM orders{}", filter.where_sql());
    let row = filter.bind(sqlx::query(sqlx::AssertSqlSafe(sql))).fetch_one(db.pool()).await?;
    Ok(row.try_get(0)?)
}

/// Records, as of `now`, that the reservation is confirmed. False when the order was cancelled (or
/// removed) meanwhile.
pub async fn mark_reserved(db: &Db, order_id: &str, now: i64) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET stock_reserved = 1, updated_at = ? WHERE order_id = ? AND status IN (?, ?)",
    )
    .bind(now)
    .bind(order_id)
    .bind(Pending.as_str())
    .bind(Paid.as_str())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Pending → cancelled, owing a stock release. With `expired_by`, only if the order expired by then.
/// False when the order was not pending (or not expired).
pub async fn cancel(db: &Db, order_id: &str, expired_by: Option<i64>) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = ?, release_pending = 1, updated_at = ? \
         WHERE order_id = ? AND status = ? AND (? IS NULL OR expires_at <= ?)",
    )
    .bind(Cancelled.as_str())
    .bind(mall_storage::now_unix())
    .bind(order_id)
    .bind(Pending.as_str())
    .bind(expired_by)
    .bind(expired_by)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Pending → cancelled, owing a stock release, only while no reservation is confirmed (ReserveStock
/// refused it). False when the order moved on meanwhile.
pub async fn cancel_unreserved(db: &Db, order_id: &str) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = ?, release_pending = 1, updated_at = ? \
         WHERE order_id = ? AND status = ? AND stock_reserved = 0",
    )
    .bind(Cancelled.as_str())
    .bind(mall_storage::now_unix())
    .bind(order_id)
    .bind(Pending.as_str())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that the product service gave the cancelled order's stock back.
pub async fn release_done(db: &Db, order_id: &str) -> Result<(), OrderError> {
    sqlx::query("UPDATE orders SET release_pending = 0 WHERE order_id = ? AND status = ?")
        .bind(order_id)
        .bind(Cancelled.as_str())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Removes a cancelled order whose stock was released (an order that never was: its reservation was
/// refused). Its lines go with it.
pub async fn delete_released(db: &Db, order_id: &str) -> Result<(), OrderError> {
    sqlx::query("DELETE FROM orders WHERE order_id = ? AND status = ? AND release_pending = 0")
        .bind(order_id)
        .bind(Cancelled.as_str())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Pending → paid with `transaction_id`, as of `now`. False when the order was not pending.
pub async fn mark_paid(db: &Db, order_id: &str, transaction_id: &str, now: i64) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = ?, transaction_id = ?, updated_at = ? WHERE order_id = ? AND status = ?",
    )
    .bind(Paid.as_str())
    .bind(transaction_id)
    .bind(now)
    .bind(order_id)
    .bind(Pending.as_str())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Up to `limit` pending orders that expired by `now`, oldest deadline first.
pub async fn expired(db: &Db, now: i64, limit: i64) -> Result<Vec<String>, OrderError> {
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM orders WHERE status = ? AND expires_at <= ? ORDER BY expires_at LIMIT ?",
    )
    .bind(Pending.as_str())
    .bind(now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?)
}

/// Up to `limit` cancelled orders whose stock release is not confirmed yet.
pub async fn owing_release(db: &Db, limit: i64) -> Result<Vec<String>, OrderError> {
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM orders WHERE release_pending = 1 AND status = ? ORDER BY updated_at LIMIT ?",
    )
    .bind(Cancelled.as_str())
    .bind(limit)
    .fetch_all(db.pool())
    .await?)
}
