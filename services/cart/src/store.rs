//! The `cart_items` table: one row per (user, product) with its quantity.

use mall_storage::{Backend, Db};

use crate::error::{CartError, is_check_violation};
use mall_storage::is_deadlock;

/// Most units of one product a cart line may hold.
pub const MAX_LINE_QUANTITY: i64 = 999;

/// How often an upsert chosen as a deadlock victim is run again.
const DEADLOCK_RETRIES: usize = 3;

/// A stored cart line, before pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: i64,
    pub quantity: i64,
    /// The row's id: a product removed and added again gets a new one.
    pub row_id: i64,
    /// When the line was last written (unix seconds).
    pub updated_at: i64,
}

// Adds to the line if it exists, creates it otherwise: one atomic statement per dialect. The CHECK
// constraint on `quantity` refuses a sum over 999, so two concurrent additions cannot overshoot it.
const ADD_MYSQL: &str = "INSERT INTO cart_items (user_id, product_id, quantity, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE quantity = quantity + VALUES(quantity), updated_at = VALUES(updated_at)";
const ADD_SQLITE: &str = "INSERT INTO cart_items (user_id, product_id, quantity, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) \
     ON CONFLICT (user_id, product_id) DO UPDATE \
     SET quantity = cart_items.quantity + excluded.quantity, updated_at = excluded.updated_at";

// Sets the line whatever it held. A new line goes last; a changed one keeps its `id`, so its place.
const SET_MYSQL: &str = "INSERT INTO cart_items (user_id, product_id, quantity, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE quantity = VALUES(quantity), updated_at = VALUES(updated_at)";
const SET_SQLITE: &str = "INSERT INTO cart_items (user_id, product_id, quantity, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?) \
     ON CONFLICT (user_id, product_id) DO UPDATE \
     SET quantity = excluded.quantity, updated_at = excluded.updated_at";

/// Runs one of the upserts above for a line.
async fn upsert(
    db: &Db,
    sql: &'static str,
    user_id: i64,
    product_id: i64,
    quantity: i64,
) -> sqlx::Result<()> {
    let now = mall_storage::now_unix();
    let run = || {
        sqlx::query(sql).bind(user_id).bind(product_id).bind(quantity).bind(now).bind(now).execute(db.pool())
    };
    let mut result = run().await;
    // InnoDB can pick concurrent upserts of one line as deadlock victims; the statement is atomic, so
    // running it again is safe.
    for _ in 0..DEADLOCK_RETRIES {
        match &result {
            Err(e) if is_deadlock(e) => result = run().await,
            _ => break,
        }
    }
    result.map(drop)
}

/// Adds `quantity` (already checked to be 1..=999) of a product to the user's line.
pub async fn add(db: &Db, user_id: i64, product_id: i64, quantity: i64) -> Result<(), CartError> {
    let sql = match db.backend() {
        Backend::MySql => ADD_MYSQL,
        Backend::Sqlite => ADD_SQLITE,
    };
    match upsert(db, sql, user_id, product_id, quantity).await {
        Ok(()) => Ok(()),
        Err(e) if is_check_violation(&e) => {
            let held = quantity_of(db, user_id, product_id).await?.unwrap_or(0);
            Err(CartError::InvalidArgument(format!(
                "the cart holds {held} of product {product_id}; adding {quantity} would make {}, \
                 more than the {MAX_LINE_QUANTITY} a line may hold",
                held + quantity
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets the user's line of a product to `quantity` (already checked to be 1..=999).
pub async fn set(db: &Db, user_id: i64, product_id: i64, quantity: i64) -> Result<(), CartError> {
    let sql = match db.backend() {
        Backend::MySql => SET_MYSQL,
        Backend::Sqlite => SET_SQLITE,
    };
    Ok(upsert(db, sql, user_id, product_id, quantity).await?)
}

/// Removes the user's line of a product, if there is one.
pub async fn remove(db: &Db, user_id: i64, product_id: i64) -> Result<(), CartError> {
    sqlx::query("DELETE FROM cart_items WHERE user_id = ? AND product_id = ?")
        .bind(user_id)
        .bind(product_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

async fn quantity_of(db: &Db, user_id: i64, product_id: i64) -> Result<Option<i64>, CartError> {
    Ok(sqlx::query_scalar("SELECT quantity FROM cart_items WHERE user_id = ? AND product_id = ?")
        .bind(user_id)
        .bind(product_id)
        .fetch_optional(db.pool())
        .await?)
}

/// The user's lines, in the order their products were first added.
pub async fn lines(db: &Db, user_id: i64) -> Result<Vec<CartLine>, CartError> {
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT product_id, quantity, id, updated_at FROM cart_items WHERE user_id = ? ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(product_id, quantity, row_id, updated_at)| CartLine {
            product_id,
            quantity,
            row_id,
            updated_at,
        })
        .collect())
}

/// Removes every line of the user's cart.
pub async fn empty(db: &Db, user_id: i64) -> Result<(), CartError> {
    sqlx::query("DELETE FROM cart_items WHERE user_id = ?").bind(user_id).execute(db.pool()).await?;
    Ok(())
}
