//! The `CheckoutService` gRPC implementation: starting, resuming and replaying checkouts.
//!
//! Step 0 of api.md's "Checkout, precisely" is done here, before the saga: the request's fields (see
//! `request`) and the card's form (`mall_domain::card`). A malformed card is DECLINED with payment's
//! own reason for it, and nothing is recorded, placed or reserved; only the processor's decline
//! happens after the order is placed.
//!
//! Idempotency (the user's key, or, when the client gave none, one derived from the user and the cart's
//! content version: see `Checkouts::cart_key`):
//! - the first call inserts the checkout under UNIQUE (user_id, idempotency_key), holding its lease,
//!   and drives the saga;
//! - a later call with the same key and a different request hash is ALREADY_EXISTS;
//! - with the same hash: a finished checkout answers its stored result (`replayed`); an open one is
//!   resumed from its last completed step if no other call holds its lease (the new request brings the
//!   card again, so a charge can be attempted), and is ABORTED ("already in progress") if one does.
//!   So of two concurrent calls with one key, exactly one drives the saga: one order, at most one charge.
//! - a derived key also stands for the cart's lines at that version, which the checkout orders (it
//!   starts at CART_READ). A checkout of that cart that was DECLINED or FAILED charged nothing and does
//!   not block the next: its row gives the key up (it becomes `retired:<checkout_id>`) and a new
//!   checkout of the same cart proceeds. One in progress or paid answers as above.

use mall_domain::UserId;
use mall_domain::card::{Card, YearMonth};
use mall_proto::checkout::v1 as pb;
use mall_proto::checkout::v1::checkout_service_server::CheckoutService;
use mall_proto::payment::v1::{CreditCard, DeclineReason};
use mall_storage::now_unix;
use tonic::{Code, Request, Response, Status};

use crate::CheckoutError;
use crate::request::{self, Buyer};
use crate::saga::{CartKey, Checkouts};
use crate::store::{self, CheckoutRow, Outcome, Step};

impl Checkouts {
    pub(crate) async fn run_checkout(
        &self,
        req: pb::CheckoutRequest,
    ) -> Result<pb::CheckoutResponse, CheckoutError> {
        let (buyer, card) = request::check(&req)?;
        let card = card.clone();
        let lease = uuid::Uuid::new_v4().to_string();
        let given_key = Some(req.idempotency_key.as_str()).filter(|k| !k.is_empty());
        if let Some(key) = given_key
            && let Some(existing) = store::find_by_key(self.db(), buyer.user_id.get(), key).await?
        {
            return self.resume(existing, &buyer, &card, &lease).await;
        }
        if let Some(refused) = refuse_malformed(buyer.user_id.get(), &card) {
            return Ok(refused);
        }

        let checkout_id = uuid::Uuid::now_v7().to_string();
        let (idempotency_key, key_generated, step, lines) = match given_key {
            Some(key) => (key.to_owned(), false, Step::Started, Vec::new()),
            None => match self.cart_key(buyer.user_id.get()).await? {
                Some(CartKey { key, lines }) => {
                    if let Some(existing) = store::find_by_key(self.db(), buyer.user_id.get(), &key).await? {
                        if matches!(existing.outcome, Outcome::Declined | Outcome::Failed) {
                            // Nothing was charged: this cart may be checked out again.
                            store::retire_key(self.db(), &existing).await?;
                        } else {
                            return self.resume(existing, &buyer, &card, &lease).await;
                        }
                    }
                    (key, true, Step::CartRead, lines)
                }
                None => (format!("auto:{checkout_id}"), true, Step::Started, Vec::new()),
            },
        };
        let now = now_unix();
        let row = CheckoutRow {
            checkout_id,
            user_id: buyer.user_id.get(),
            idempotency_key,
            key_generated,
            request_hash: buyer.request_hash.clone(),
            step,
            outcome: Outcome::InProgress,
            order_id: String::new(),
            transaction_id: String::new(),
            total_cents: 0,
            decline_reason: DeclineReason::Unspecified,
            failure_code: Code::Ok,
            failure_message: String::new(),
            firstname: buyer.firstname.clone(),
            lastname: buyer.lastname.clone(),
            email: buyer.email.to_string(),
            address: (&buyer.address).into(),
            lines,
            created_at: now,
            updated_at: now,
        };
        if store::insert(self.db(), &row, &lease).await?.is_err() {
            // Another call with the same key inserted first.
            let existing = store::find_by_key(self.db(), row.user_id, &row.idempotency_key)
                .await?
                .ok_or_else(|| CheckoutError::Internal("a conflicting checkout vanished".into()))?;
            return self.resume(existing, &buyer, &card, &lease).await;
        }
        tracing::info!(checkout_id = %row.checkout_id, user_id = row.user_id, "checkout started");
        self.drive_and_answer(row, &lease, &card).await
    }

    /// A call with a key that already names a checkout.
    async fn resume(
        &self,
        existing: CheckoutRow,
        buyer: &Buyer,
        card: &CreditCard,
        lease: &str,
    ) -> Result<pb::CheckoutResponse, CheckoutError> {
        if existing.request_hash != buyer.request_hash {
            return Err(CheckoutError::AlreadyExists(if existing.key_generated {
                "this cart is being checked out, or was, with other details: wait for that checkout, or \
                 change the cart to check out again"
                    .into()
            } else {
                "this idempotency key was already used for a different checkout request".into()
            }));
        }
        // A replay answers the first result even if the card has expired since.
        if existing.finished() || existing.outcome == Outcome::Succeeded {
            return answer(&existing, true);
        }
        // What is left may place an order or charge: not with a malformed card.
        if let Some(refused) = refuse_malformed(existing.user_id, card) {
            return Ok(refused);
        }
        if !store::acquire(self.db(), &existing.checkout_id, lease).await? {
            return Err(already_in_progress(&existing));
        }
        let Some(row) = store::find_by_id(self.db(), &existing.checkout_id).await? else {
            return Err(CheckoutError::Internal("a leased checkout vanished".into()));
        };
        tracing::info!(checkout_id = %row.checkout_id, step = row.step.as_str(), "checkout resumed");
        self.drive_and_answer(row, lease, card).await
    }

    async fn drive_and_answer(
        &self,
        mut row: CheckoutRow,
        lease: &str,
        card: &CreditCard,
    ) -> Result<pb::CheckoutResponse, CheckoutError> {
        let result = self.drive(&mut row, lease, Some(card)).await;
        self.release(&row, lease, result.is_ok()).await;
        match result {
            Ok(()) => answer(&row, false),
            // The order is paid; only emptying the cart is left, and recovery will do it.
            Err(e) if row.outcome == Outcome::Succeeded => {
                tracing::warn!(checkout_id = %row.checkout_id, error = %e, "checkout paid; the cart is emptied later");
                answer(&row, false)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn find(&self, req: pb::GetCheckoutRequest) -> Result<pb::Checkout, CheckoutError> {
        let user_id = UserId::new(req.user_id)?;
        let found = match req.lookup {
            Some(pb::get_checkout_request::Lookup::CheckoutId(id)) if !id.trim().is_empty() => {
                store::find_by_id(self.db(), id.trim()).await?
            }
            Some(pb::get_checkout_request::Lookup::IdempotencyKey(key)) if !key.is_empty() => {
                store::find_by_key(self.db(), user_id.get(), &key).await?.filter(|row| !row.key_generated)
            }
            _ => {
                return Err(CheckoutError::InvalidArgument(
                    "checkout_id or idempotency_key is required".into(),
                ));
            }
        };
        match found {
            Some(row) if row.user_id == user_id.get() => Ok(row.to_proto()),
            _ => Err(CheckoutError::NotFound("checkout not found".into())),
        }
    }
}

/// Step 0 for the card: `Some` DECLINED answer, with no checkout, order or transaction, when the card
/// fails the checks that payment would decline it for.
fn refuse_malformed(user_id: i64, card: &CreditCard) -> Option<pb::CheckoutResponse> {
    let now = YearMonth::now_utc();
    let checked = Card::parse(&card.number, &card.cvv, card.expiration_year, card.expiration_month, now);
    let reason = DeclineReason::from(checked.err()?);
    tracing::info!(
        user_id,
        reason = reason.as_str_name(),
        "checkout refused a malformed card; nothing placed"
    );
    Some(pb::CheckoutResponse {
        outcome: pb::CheckoutOutcome::Declined.into(),
        decline_reason: reason.into(),
        ..Default::default()
    })
}

fn already_in_progress(row: &CheckoutRow) -> CheckoutError {
    CheckoutError::Aborted(if row.key_generated {
        "a checkout of this cart is already in progress; retry shortly".into()
    } else {
        "a checkout with this idempotency key is already in progress; retry shortly".into()
    })
}

/// The answer of a checkout that got as far as it could.
fn answer(row: &CheckoutRow, replayed: bool) -> Result<pb::CheckoutResponse, CheckoutError> {
    match row.outcome {
        Outcome::Succeeded | Outcome::Declined => Ok(pb::CheckoutResponse {
            checkout_id: row.checkout_id.clone(),
            outcome: pb::CheckoutOutcome::from(row.outcome).into(),
            order_id: row.order_id.clone(),
            transaction_id: row.transaction_id.clone(),
            total_cents: row.total_cents,
            decline_reason: row.decline_reason.into(),
            replayed,
        }),
        Outcome::Failed => {
            Err(CheckoutError::Failed { code: row.failure_code, message: row.failure_message.clone() })
        }
        Outcome::InProgress => Err(already_in_progress(row)),
    }
}

#[tonic::async_trait]
impl CheckoutService for Checkouts {
    async fn checkout(
        &self,
        request: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::CheckoutResponse>, Status> {
        // Run to the end of a step even if the caller goes away, so the saga never stops mid-call; the
        // calls of each step still carry the caller's deadline.
        let this = self.clone();
        let task = tokio::spawn(mall_runtime::keep_deadline(async move {
            this.run_checkout(request.into_inner()).await
        }));
        let response =
            task.await.map_err(|e| CheckoutError::Internal(format!("checkout task failed: {e}")))??;
        Ok(Response::new(response))
    }

    async fn get_checkout(
        &self,
        request: Request<pb::GetCheckoutRequest>,
    ) -> Result<Response<pb::GetCheckoutResponse>, Status> {
        let checkout = self.find(request.into_inner()).await?;
        Ok(Response::new(pb::GetCheckoutResponse { checkout: Some(checkout) }))
    }
}
