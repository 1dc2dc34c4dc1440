//! The `checkouts` table: one row per checkout saga, written before each next step starts.
//!
//! A saga is driven by one call at a time: the call holds a *lease* (`lease_owner`, `lease_until`),
//! taken with a conditional UPDATE, renewed by every state write, and released at the end. Every state
//! write is conditional on still holding it, so a call that lost its lease (it stalled past
//! `lease_until` and another took over) can never overwrite a newer state.
//!
//! The same SQL runs on MySQL and SQLite.

use mall_proto::checkout::v1 as pb;
use mall_proto::order::v1::{Address, OrderLine};
use mall_proto::payment::v1::DeclineReason;
use mall_storage::{Db, now_unix};
use tonic::Code;

use crate::CheckoutError;

/// How long a lease lasts without a state write.
pub const LEASE_SECS: i64 = 60;

// The saga's step and outcome, under the names the saga uses.
pub use mall_domain::{CheckoutOutcome as Outcome, CheckoutStep as Step};

/// One checkout, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutRow {
    pub checkout_id: String,
    pub user_id: i64,
    pub idempotency_key: String,
    pub key_generated: bool,
    pub request_hash: String,
    pub step: Step,
    pub outcome: Outcome,
    pub order_id: String,
    pub transaction_id: String,
    pub total_cents: i64,
    pub decline_reason: DeclineReason,
    pub failure_code: Code,
    pub failure_message: String,
    pub firstname: String,
    pub lastname: String,
    pub email: String,
    pub address: Address,
    /// The cart's lines as read at CART_READ.
    pub lines: Vec<OrderLine>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl CheckoutRow {
    /// Nothing left to do: DECLINED, FAILED, or SUCCEEDED with the cart emptied.
    pub fn finished(&self) -> bool {
        matches!(self.outcome, Outcome::Declined | Outcome::Failed) || self.step == Step::CartEmptied
    }

    pub fn to_proto(&self) -> pb::Checkout {
        pb::Checkout {
            checkout_id: self.checkout_id.clone(),
            user_id: self.user_id,
            idempotency_key: if self.key_generated { String::new() } else { self.idempotency_key.clone() },
            step: pb::CheckoutStep::from(self.step).into(),
            outcome: pb::CheckoutOutcome::from(self.outcome).into(),
            order_id: self.order_id.clone(),
            transaction_id: self.transaction_id.clone(),
            total_cents: self.total_cents,
            decline_reason: self.decline_reason.into(),
            failure_code: if self.outcome == Outcome::Failed { self.failure_code as i32 } else { 0 },
            failure_message: self.failure_message.clone(),
            firstname: self.firstname.clone(),
            lastname: self.lastname.clone(),
            email: self.email.clone(),
            address: Some(self.address.clone()),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn lines_to_json(lines: &[OrderLine]) -> String {
    let pairs: Vec<[i64; 2]> = lines.iter().map(|l| [l.product_id, l.quantity]).collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

fn lines_from_json(json: &str) -> Result<Vec<OrderLine>, CheckoutError> {
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let pairs: Vec<[i64; 2]> = serde_json::from_str(json)
        .map_err(|e| CheckoutError::Internal(format!("unreadable stored cart lines: {e}")))?;
    Ok(pairs.into_iter().map(|[product_id, quantity]| OrderLine { product_id, quantity }).collect())
}

const COLUMNS: &str = "checkout_id, user_id, idempotency_key, key_generated, request_hash, step, outcome, \
     order_id, transaction_id, total_cents, decline_reason, failure_code, failure_message, firstname, lastname, \
     email, street_address, city, state, country, zip_code, cart_lines, created_at, updated_at";

/// A row as read, before its text columns are parsed. (Tuples are limited to 16 fields, so the row
/// is read through `sqlx::Row`.)
fn from_row(row: &sqlx::any::AnyRow) -> Result<CheckoutRow, CheckoutError> {
    use sqlx::Row as _;
    let failure_code: i64 = row.try_get("failure_code")?;
    let decline_reason: String = row.try_get("decline_reason")?;
    Ok(CheckoutRow {
        checkout_id: row.try_get("checkout_id")?,
        user_id: row.try_get("user_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        key_generated: row.try_get::<i64, _>("key_generated")? != 0,
        request_hash: row.try_get("request_hash")?,
        step: row.try_get::<String, _>("step")?.parse()?,
        outcome: row.try_get::<String, _>("outcome")?.parse()?,
        order_id: row.try_get("order_id")?,
        transaction_id: row.try_get("transaction_id")?,
        total_cents: row.try_get("total_cents")?,
        decline_reason: if decline_reason.is_empty() {
            DeclineReason::Unspecified
        } else {
            DeclineReason::from_str_name(&decline_reason).unwrap_or_default()
        },
        failure_code: Code::from_i32(i32::try_from(failure_code).unwrap_or(2)),
        failure_message: row.try_get("failure_message")?,
        firstname: row.try_get("firstname")?,
        lastname: row.try_get("lastname")?,
        email: row.try_get("email")?,
        address: Address {
            street_address: row.try_get("street_address")?,
            city: row.try_get("city")?,
            state: row.try_get("state")?,
            country: row.try_get("country")?,
            zip_code: row.try_get("zip_code")?,
        },
        lines: lines_from_json(&row.try_get::<String, _>("cart_lines")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn reason_str(reason: DeclineReason) -> &'static str {
    if reason == DeclineReason::Unspecified { "" } else { reason.as_str_name() }
}

/// The checkout lost a race on its UNIQUE (user, idempotency key).
pub struct Conflict;

/// Inserts a new checkout, leased to `lease`.
pub async fn insert(db: &Db, row: &CheckoutRow, lease: &str) -> Result<Result<(), Conflict>, CheckoutError> {
    let result = sqlx::query(
        "INSERT INTO checkouts (checkout_id, user_id, idempotency_key, key_generated, request_hash, step, \
         outcome, order_id, transaction_id, total_cents, decline_reason, failure_code, failure_message, \
         firstname, lastname, email, street_address, city, state, country, zip_code, cart_lines, \
         lease_owner, lease_until, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.checkout_id)
    .bind(row.user_id)
    .bind(&row.idempotency_key)
    .bind(i64::from(row.key_generated))
    .bind(&row.request_hash)
    .bind(row.step.as_str())
    .bind(row.outcome.as_str())
    .bind(&row.order_id)
    .bind(&row.transaction_id)
    .bind(row.total_cents)
    .bind(reason_str(row.decline_reason))
    .bind(row.failure_code as i64)
    .bind(&row.failure_message)
    .bind(&row.firstname)
    .bind(&row.lastname)
    .bind(&row.email)
    .bind(&row.address.street_address)
    .bind(&row.address.city)
    .bind(&row.address.state)
    .bind(&row.address.country)
    .bind(&row.address.zip_code)
    .bind(lines_to_json(&row.lines))
    .bind(lease)
    .bind(row.created_at + LEASE_SECS)
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

/// Gives up the (derived) key of a checkout that ended without a charge, so that a new checkout of
/// the same cart can take it; the row stays, under `retired:<checkout_id>`.
pub async fn retire_key(db: &Db, row: &CheckoutRow) -> Result<(), CheckoutError> {
    sqlx::query(
        "UPDATE checkouts SET idempotency_key = ? WHERE checkout_id = ? AND idempotency_key = ? \
         AND outcome IN (?, ?)",
    )
    .bind(format!("retired:{}", row.checkout_id))
    .bind(&row.checkout_id)
    .bind(&row.idempotency_key)
    .bind(Outcome::Declined.as_str())
    .bind(Outcome::Failed.as_str())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Writes the saga's progress and renews the lease, or gives it up when the checkout is finished.
/// False when `lease` is no longer held.
pub async fn save(db: &Db, row: &mut CheckoutRow, lease: &str) -> Result<bool, CheckoutError> {
    let now = now_unix();
    let (owner, until) = if row.finished() { (None, 0) } else { (Some(lease), now + LEASE_SECS) };
    let done = sqlx::query(
        "UPDATE checkouts SET step = ?, outcome = ?, order_id = ?, transaction_id = ?, total_cents = ?, \
         decline_reason = ?, failure_code = ?, failure_message = ?, cart_lines = ?, lease_owner = ?, \
         lease_until = ?, updated_at = ? WHERE checkout_id = ? AND lease_owner = ?",
    )
    .bind(row.step.as_str())
    .bind(row.outcome.as_str())
    .bind(&row.order_id)
    .bind(&row.transaction_id)
    .bind(row.total_cents)
    .bind(reason_str(row.decline_reason))
    .bind(row.failure_code as i64)
    .bind(&row.failure_message)
    .bind(lines_to_json(&row.lines))
    .bind(owner)
    .bind(until)
    .bind(now)
    .bind(&row.checkout_id)
    .bind(lease)
    .execute(db.pool())
    .await?;
    row.updated_at = now;
    Ok(done.rows_affected() == 1)
}

/// Takes the lease of an open checkout if nobody holds it (or its holder's lease ran out).
pub async fn acquire(db: &Db, checkout_id: &str, lease: &str) -> Result<bool, CheckoutError> {
    let now = now_unix();
    let done = sqlx::query(
        "UPDATE checkouts SET lease_owner = ?, lease_until = ? WHERE checkout_id = ? \
         AND (outcome = ? OR step = ?) AND (lease_owner IS NULL OR lease_until < ?)",
    )
    .bind(lease)
    .bind(now + LEASE_SECS)
    .bind(checkout_id)
    .bind(Outcome::InProgress.as_str())
    .bind(Step::OrderPaid.as_str())
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn release(db: &Db, checkout_id: &str, lease: &str) -> Result<(), CheckoutError> {
    sqlx::query(
        "UPDATE checkouts SET lease_owner = NULL, lease_until = 0 WHERE checkout_id = ? AND lease_owner = ?",
    )
    .bind(checkout_id)
    .bind(lease)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn find_by_id(db: &Db, checkout_id: &str) -> Result<Option<CheckoutRow>, CheckoutError> {
    let sql = format!("SELECT {COLUMNS} FROM checkouts WHERE checkout_id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(checkout_id).fetch_optional(db.pool()).await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn find_by_key(db: &Db, user_id: i64, key: &str) -> Result<Option<CheckoutRow>, CheckoutError> {
    let sql = format!("SELECT {COLUMNS} FROM checkouts WHERE user_id = ? AND idempotency_key = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(key).fetch_optional(db.pool()).await?;
    row.as_ref().map(from_row).transpose()
}

/// Open checkouts (in progress, or paid with the cart still to empty) untouched since `idle_since` and
/// not leased by a live call: the ones recovery takes up. Oldest first.
pub async fn open_idle(db: &Db, idle_since: i64, limit: i64) -> Result<Vec<String>, CheckoutError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT checkout_id FROM checkouts WHERE (outcome = ? OR step = ?) \
         AND updated_at <= ? AND (lease_owner IS NULL OR lease_until < ?) ORDER BY updated_at LIMIT ?",
    )
    .bind(Outcome::InProgress.as_str())
    .bind(Step::OrderPaid.as_str())
    .bind(idle_since)
    .bind(now_unix())
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
