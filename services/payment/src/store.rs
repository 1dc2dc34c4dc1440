//! The `payments` table: one row per charge attempt. Never a card number or CVV (there is no column
//! that could hold one): last four digits and brand only.
//!
//! The same SQL runs on MySQL and SQLite.

use mall_domain::PaymentStatus;
use mall_proto::payment::v1 as pb;
use mall_storage::{Db, now_unix};

use crate::PaymentError;

fn reason_to_str(reason: pb::DeclineReason) -> &'static str {
    match reason {
        pb::DeclineReason::Unspecified => "",
        other => other.as_str_name(),
    }
}

fn reason_from_str(s: &str) -> pb::DeclineReason {
    if s.is_empty() {
        pb::DeclineReason::Unspecified
    } else {
        pb::DeclineReason::from_str_name(s).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    pub transaction_id: String,
    pub order_id: String,
    pub user_id: i64,
    pub amount_cents: i64,
    pub card_last4: String,
    pub card_brand: String,
    pub status: PaymentStatus,
    pub decline_reason: pb::DeclineReason,
    pub idempotency_key: Option<String>,
    pub order_marked_paid: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PaymentRow {
    pub fn to_proto(&self) -> pb::Payment {
        pb::Payment {
            transaction_id: self.transaction_id.clone(),
            order_id: self.order_id.clone(),
            user_id: self.user_id,
            amount_cents: self.amount_cents,
            card_last4: self.card_last4.clone(),
            card_brand: self.card_brand.clone(),
            status: pb::PaymentStatus::from(self.status).into(),
            decline_reason: self.decline_reason.into(),
            created_at: self.created_at,
        }
    }
}

const COLUMNS: &str = "transaction_id, order_id, user_id, amount_cents, card_last4, card_brand, status, \
     decline_reason, idempotency_key, order_marked_paid, created_at, updated_at";

type Row = (String, String, i64, i64, String, String, String, String, Option<String>, i64, i64, i64);

fn from_row(row: Row) -> Result<PaymentRow, PaymentError> {
    let (
        transaction_id,
        order_id,
        user_id,
        amount_cents,
        card_last4,
        card_brand,
        status,
        decline_reason,
        idempotency_key,
        order_marked_paid,
        created_at,
        updated_at,
    ) = row;
    Ok(PaymentRow {
        transaction_id,
        order_id,
        user_id,
        amount_cents,
        card_last4,
        card_brand,
        status: status.parse()?,
        decline_reason: reason_from_str(&decline_reason),
        idempotency_key,
        order_marked_paid: order_marked_paid != 0,
        created_at,
        updated_at,
    })
}

async fn fetch_one_where(db: &Db, condition: &str, bind: &str) -> Result<Option<PaymentRow>, PaymentError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE {condition}");
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(bind).fetch_optional(db.pool()).await?;
    row.map(from_row).transpose()
}

/// Inserting a row lost against a UNIQUE key: the order is already claimed, or the idempotency key is
/// taken. Re-read and decide.
pub struct Conflict;

/// Inserts a new attempt. `Processing` and `Succeeded` rows claim the order (`succeeded_order_id`).
pub async fn insert(db: &Db, row: &PaymentRow) -> Result<Result<(), Conflict>, PaymentError> {
    let claims = matches!(row.status, PaymentStatus::Processing | PaymentStatus::Succeeded);
    let result = sqlx::query(
        "INSERT INTO payments (transaction_id, order_id, user_id, amount_cents, card_last4, card_brand, \
         status, decline_reason, idempotency_key, succeeded_order_id, order_marked_paid, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.transaction_id)
    .bind(&row.order_id)
    .bind(row.user_id)
    .bind(row.amount_cents)
    .bind(&row.card_last4)
    .bind(&row.card_brand)
    .bind(row.status.as_str())
    .bind(reason_to_str(row.decline_reason))
    .bind(row.idempotency_key.as_deref())
    .bind(claims.then_some(row.order_id.as_str()))
    .bind(i64::from(row.order_marked_paid))
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(db.pool())
    .await;
    match result {
        Ok(_) => Ok(Ok(())),
        Err(e) if mall_storage::is_unique_violation(&e) => Ok(Err(Conflict)),
        Err(e) => Err(e.into()),
    }
}

pub async fn find_by_id(db: &Db, transaction_id: &str) -> Result<Option<PaymentRow>, PaymentError> {
    fetch_one_where(db, "transaction_id = ?", transaction_id).await
}

/// In one statement: the row holding the order's claim (processing or succeeded), and the user's
/// attempt under `key`. One row may be both.
pub async fn find_claim_and_key(
    db: &Db,
    order_id: &str,
    user_id: i64,
    key: Option<&str>,
) -> Result<(Option<PaymentRow>, Option<PaymentRow>), PaymentError> {
    let sql = format!(
        "SELECT {COLUMNS}, succeeded_order_id FROM payments \
         WHERE succeeded_order_id = ? OR (user_id = ? AND idempotency_key = ?)"
    );
    type RowWithClaim = (
        String,
        String,
        i64,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        i64,
        i64,
        i64,
        Option<String>,
    );
    let rows: Vec<RowWithClaim> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(order_id)
        .bind(user_id)
        .bind(key)
        .fetch_all(db.pool())
        .await?;
    let (mut claim, mut by_key) = (None, None);
    for (a, b, c, d, e, f, g, h, i, j, k, l, claimed) in rows {
        let row = from_row((a, b, c, d, e, f, g, h, i, j, k, l))?;
        if key.is_some() && row.user_id == user_id && row.idempotency_key.as_deref() == key {
            by_key = Some(row.clone());
        }
        if claimed.as_deref() == Some(order_id) {
            claim = Some(row);
        }
    }
    Ok((claim, by_key))
}

/// The row holding the order's claim: processing or succeeded.
pub async fn find_claim(db: &Db, order_id: &str) -> Result<Option<PaymentRow>, PaymentError> {
    fetch_one_where(db, "succeeded_order_id = ?", order_id).await
}

/// The user's latest attempt for the order that callers may see (not a processing one).
pub async fn latest_for_order(
    db: &Db,
    user_id: i64,
    order_id: &str,
) -> Result<Option<PaymentRow>, PaymentError> {
    // Transaction ids are UUID v7: their text order is their creation order.
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE user_id = ? AND order_id = ? AND status <> ? \
         ORDER BY created_at DESC, transaction_id DESC LIMIT 1"
    );
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(order_id)
        .bind(PaymentStatus::Processing.as_str())
        .fetch_optional(db.pool())
        .await?;
    row.map(from_row).transpose()
}

/// Moves a processing attempt to its processor's answer. False if it was no longer processing.
pub async fn finish_processing(
    db: &Db,
    transaction_id: &str,
    approved: bool,
    reason: pb::DeclineReason,
) -> Result<bool, PaymentError> {
    let sql = if approved {
        "UPDATE payments SET status = ?, updated_at = ? WHERE transaction_id = ? AND status = ?"
    } else {
        "UPDATE payments SET status = ?, succeeded_order_id = NULL, decline_reason = ?, updated_at = ? \
         WHERE transaction_id = ? AND status = ?"
    };
    let mut query = sqlx::query(sql);
    if approved {
        query = query.bind(PaymentStatus::Succeeded.as_str());
    } else {
        query = query.bind(PaymentStatus::Declined.as_str()).bind(reason_to_str(reason));
    }
    let done = query
        .bind(now_unix())
        .bind(transaction_id)
        .bind(PaymentStatus::Processing.as_str())
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets a processing attempt the processor never charged (it could not be reached).
pub async fn delete_processing(db: &Db, transaction_id: &str) -> Result<(), PaymentError> {
    sqlx::query("DELETE FROM payments WHERE transaction_id = ? AND status = ?")
        .bind(transaction_id)
        .bind(PaymentStatus::Processing.as_str())
        .execute(db.pool())
        .await?;
    Ok(())
}

pub async fn set_order_marked_paid(db: &Db, transaction_id: &str) -> Result<(), PaymentError> {
    sqlx::query("UPDATE payments SET order_marked_paid = 1, updated_at = ? WHERE transaction_id = ?")
        .bind(now_unix())
        .bind(transaction_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records a void (the processor has already been told) and releases the order's claim.
pub async fn set_voided(db: &Db, transaction_id: &str) -> Result<(), PaymentError> {
    sqlx::query(
        "UPDATE payments SET status = ?, succeeded_order_id = NULL, updated_at = ? \
         WHERE transaction_id = ? AND status IN (?, ?)",
    )
    .bind(PaymentStatus::Voided.as_str())
    .bind(now_unix())
    .bind(transaction_id)
    .bind(PaymentStatus::Processing.as_str())
    .bind(PaymentStatus::Succeeded.as_str())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Succeeded payments whose order is not known to be PAID yet, untouched since `before`.
pub async fn unconfirmed_before(db: &Db, before: i64, limit: i64) -> Result<Vec<PaymentRow>, PaymentError> {
    list_where(db, PaymentStatus::Succeeded, "order_marked_paid = 0 AND updated_at <= ?", before, limit).await
}

/// Processing attempts untouched since `before`: their caller died mid-charge.
pub async fn processing_before(db: &Db, before: i64, limit: i64) -> Result<Vec<PaymentRow>, PaymentError> {
    list_where(db, PaymentStatus::Processing, "updated_at <= ?", before, limit).await
}

/// Rows in `status` that meet `condition` (which binds `before`), oldest change first.
async fn list_where(
    db: &Db,
    status: PaymentStatus,
    condition: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<PaymentRow>, PaymentError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE status = ? AND {condition} ORDER BY updated_at LIMIT ?"
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(status.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.into_iter().map(from_row).collect()
}
