//! The `PaymentService` gRPC implementation and the charge itself.
//!
//! How a charge of an order is kept to at most one success, whatever the concurrency:
//! 1. an order that already has a SUCCEEDED payment (of this user) gets that payment back, replayed;
//! 2. the idempotency key, when given, returns its first attempt;
//! 3. the order is read from the order service (its owner, status, expiry and total);
//! 4. the card is checked; a failed check is recorded as DECLINED;
//! 5. a valid card first *claims* the order: a row in status `processing` whose `succeeded_order_id`
//!    is the order id, under a UNIQUE index. Only the caller that inserted it asks the processor; the
//!    others wait for it to finish and return its result (replayed) — or ABORTED if it takes too long;
//! 6. the processor's answer turns the claim into SUCCEEDED, or into DECLINED (releasing the claim);
//! 7. a success is confirmed with OrderService.MarkPaid. A cancelled order voids the charge; an
//!    unreachable order service leaves the payment SUCCEEDED, answers UNAVAILABLE, and a background
//!    sweep (and any retry) confirms it later.
//!
//! Logs name the transaction, the order, the user, the amount, the last four digits and the brand;
//! never the number or the CVV.

use std::sync::Arc;
use std::time::Duration;

use mall_domain::card::{Card, CardSummary, YearMonth};
use mall_domain::{OrderId, OrderStatus, PaymentStatus, UserId};
use mall_proto::order::v1 as order_pb;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::payment::v1 as pb;
use mall_proto::payment::v1::payment_service_server::PaymentService;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Db, now_unix};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::processor::{CardProcessor, ProcessorCharge, ProcessorDecision};
use crate::store::{self, PaymentRow};
use crate::{PaymentError, error::is_transient};

/// Longest wait for the processor's answer (shorter when the caller's deadline comes first); after it,
/// the charge is voided.
const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a charge waits for another in-flight charge of the same order before answering ABORTED.
const BUSY_WAIT: Duration = Duration::from_secs(10);
const BUSY_POLL: Duration = Duration::from_millis(25);
/// Longest accepted idempotency key.
const MAX_KEY_LEN: usize = 255;

/// The background sweep: how often it runs, how old an unconfirmed success must be before it confirms
/// it, and how old a processing claim must be before it is considered abandoned (its caller died).
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
const CONFIRM_AFTER_SECS: i64 = 10;
const ABANDONED_AFTER_SECS: i64 = 120;

#[derive(Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    order: OrderServiceClient<PeerChannel>,
    processor: Arc<dyn CardProcessor>,
}

/// What one pass of the charge loop decided.
enum Attempt {
    Done(pb::Payment, bool),
    /// Another charge of this order (or with this key) is in flight: wait and look again.
    Busy,
    /// Lost a race on a UNIQUE key: look again at once.
    Retry,
}

impl Payments {
    pub fn new(db: Db, order: PeerChannel, processor: Arc<dyn CardProcessor>) -> Payments {
        Payments { inner: Arc::new(Inner { db, order: OrderServiceClient::new(order), processor }) }
    }

    /// Runs the background sweep until `shutdown`.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(SWEEP_EVERY) => {}
                }
                if let Err(e) = this.sweep(now_unix()).await {
                    tracing::warn!(error = %e, "payment sweep failed; will try again");
                }
            }
        });
    }

    /// Confirms succeeded payments whose order is not known to be PAID (voiding those whose order was
    /// cancelled), and voids processing claims abandoned by a caller that died.
    pub async fn sweep(&self, now: i64) -> Result<(), PaymentError> {
        let db = &self.inner.db;
        for row in store::unconfirmed_before(db, now - CONFIRM_AFTER_SECS, 100).await? {
            if let Err(e) = self.confirm(&row).await {
                tracing::info!(transaction_id = %row.transaction_id, order_id = %row.order_id, error = %e,
                    "sweep: payment not confirmed");
            }
        }
        for row in store::processing_before(db, now - ABANDONED_AFTER_SECS, 100).await? {
            match self.inner.processor.void(&row.transaction_id).await {
                Ok(()) => {
                    store::set_voided(db, &row.transaction_id).await?;
                    tracing::warn!(transaction_id = %row.transaction_id, order_id = %row.order_id,
                        "sweep: abandoned charge voided");
                }
                Err(e) => tracing::warn!(transaction_id = %row.transaction_id, error = %e,
                    "sweep: cannot void an abandoned charge yet"),
            }
        }
        Ok(())
    }

    pub async fn run_charge(&self, req: pb::ChargeRequest) -> Result<(pb::Payment, bool), PaymentError> {
        let order_id = OrderId::parse(&req.order_id)?;
        let user_id = UserId::new(req.user_id)?;
        let Some(card) = req.credit_card.as_ref() else {
            return Err(PaymentError::InvalidArgument("credit_card is required".into()));
        };
        if req.idempotency_key.len() > MAX_KEY_LEN {
            return Err(PaymentError::InvalidArgument(format!(
                "idempotency_key must be at most {MAX_KEY_LEN} characters"
            )));
        }
        let key = Some(req.idempotency_key.as_str()).filter(|k| !k.is_empty());
        let started = tokio::time::Instant::now();
        let mut races = 0;
        loop {
            match self.attempt(order_id.as_str(), user_id.get(), card, key).await? {
                Attempt::Done(payment, replayed) => return Ok((payment, replayed)),
                Attempt::Busy if started.elapsed() < BUSY_WAIT => tokio::time::sleep(BUSY_POLL).await,
                Attempt::Retry if races < 20 => races += 1,
                Attempt::Busy | Attempt::Retry => {
                    return Err(PaymentError::Aborted(
                        "a charge of this order is already in progress; retry shortly".into(),
                    ));
                }
            }
        }
    }

    async fn attempt(
        &self,
        order_id: &str,
        user_id: i64,
        card: &pb::CreditCard,
        key: Option<&str>,
    ) -> Result<Attempt, PaymentError> {
        let db = &self.inner.db;
        let (claim, first) = store::find_claim_and_key(db, order_id, user_id, key).await?;
        // 1. Idempotent per order.
        if let Some(claim) = claim
            && claim.user_id == user_id
        {
            return match claim.status {
                PaymentStatus::Succeeded => self.replay_success(claim).await,
                _ => Ok(Attempt::Busy),
            };
        }
        // 2. The key's first attempt.
        if let Some(first) = first {
            if first.order_id != order_id {
                return Err(PaymentError::AlreadyExists(
                    "this idempotency key was already used to charge another order".into(),
                ));
            }
            return match first.status {
                PaymentStatus::Succeeded => self.replay_success(first).await,
                PaymentStatus::Declined => Ok(Attempt::Done(first.to_proto(), true)),
                PaymentStatus::Processing => Ok(Attempt::Busy),
                PaymentStatus::Voided => Err(PaymentError::FailedPrecondition(
                    "this charge was voided: the order could not be marked paid".into(),
                )),
            };
        }
        // 3. The order, as the order service has it.
        let order = self.get_order(user_id, order_id).await?;
        match OrderStatus::try_from(order.status())? {
            OrderStatus::Pending => {}
            OrderStatus::Paid => {
                return match store::find_claim(db, order_id).await? {
                    Some(claim) if claim.user_id == user_id && claim.status == PaymentStatus::Succeeded => {
                        self.replay_success(claim).await
                    }
                    Some(claim) if claim.user_id == user_id => Ok(Attempt::Busy),
                    _ => Err(PaymentError::FailedPrecondition("order is already paid".into())),
                };
            }
            OrderStatus::Cancelled => {
                return Err(PaymentError::FailedPrecondition("order is cancelled".into()));
            }
        }
        let now = now_unix();
        if order.expires_at > 0 && now > order.expires_at {
            return Err(PaymentError::FailedPrecondition("order has expired".into()));
        }
        // 4. The card.
        let summary = CardSummary::of(&card.number);
        let mut row = PaymentRow {
            transaction_id: uuid::Uuid::now_v7().to_string(),
            order_id: order_id.to_owned(),
            user_id,
            amount_cents: order.total_cents,
            card_last4: summary.last4,
            card_brand: summary.brand.as_str().to_owned(),
            status: PaymentStatus::Processing,
            decline_reason: pb::DeclineReason::Unspecified,
            idempotency_key: key.map(str::to_owned),
            order_marked_paid: false,
            created_at: now,
            updated_at: now,
        };
        let checked = Card::parse(
            &card.number,
            &card.cvv,
            card.expiration_year,
            card.expiration_month,
            YearMonth::now_utc(),
        );
        let valid = match checked {
            Ok(valid) => valid,
            Err(reason) => {
                row.status = PaymentStatus::Declined;
                row.decline_reason = reason.into();
                if store::insert(db, &row).await?.is_err() {
                    return Ok(Attempt::Retry);
                }
                log_declined(&row);
                return Ok(Attempt::Done(row.to_proto(), false));
            }
        };
        // 5. Claim the order, then ask the processor, for no longer than the caller still waits.
        let wait = mall_runtime::remaining().map_or(PROCESSOR_TIMEOUT, |left| left.min(PROCESSOR_TIMEOUT));
        if wait.is_zero() {
            return Err(PaymentError::Unavailable(
                "the request's deadline has passed; nothing was charged".into(),
            ));
        }
        if store::insert(db, &row).await?.is_err() {
            return Ok(Attempt::Retry);
        }
        let charge = ProcessorCharge {
            transaction_id: &row.transaction_id,
            order_id,
            amount_cents: row.amount_cents,
            card: &valid,
        };
        // The card processor's span carries the amount and the outcome, never the card.
        let span = tracing::trace_span!(target: mall_runtime::TRACE_ONLY, "card processor",
            otel.name = "card processor authorize", otel.kind = "client", payment.amount_cents = row.amount_cents,
            payment.decision = tracing::field::Empty);
        let decision = tokio::time::timeout(wait, self.inner.processor.authorize(&charge))
            .instrument(span.clone())
            .await;
        span.record(
            "payment.decision",
            match &decision {
                Ok(Ok(ProcessorDecision::Approved)) => "approved",
                Ok(Ok(ProcessorDecision::Declined)) => "declined",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            },
        );
        match decision {
            Ok(Ok(ProcessorDecision::Approved)) => {
                if !store::finish_processing(db, &row.transaction_id, true, row.decline_reason).await? {
                    return Err(PaymentError::Aborted("the charge was interrupted; retry".into()));
                }
                row.status = PaymentStatus::Succeeded;
                tracing::info!(transaction_id = %row.transaction_id, order_id, user_id,
                    amount_cents = row.amount_cents, card_last4 = %row.card_last4, card_brand = %row.card_brand,
                    "charge approved");
            }
            Ok(Ok(ProcessorDecision::Declined)) => {
                row.status = PaymentStatus::Declined;
                row.decline_reason = pb::DeclineReason::ProcessorDeclined;
                store::finish_processing(db, &row.transaction_id, false, row.decline_reason).await?;
                log_declined(&row);
                return Ok(Attempt::Done(row.to_proto(), false));
            }
            Ok(Err(e)) => {
                store::delete_processing(db, &row.transaction_id).await?;
                tracing::warn!(order_id, error = %e, "card processor unavailable; nothing charged");
                return Err(PaymentError::Unavailable(
                    "the card processor is unavailable; nothing was charged".into(),
                ));
            }
            Err(_elapsed) => {
                tracing::warn!(transaction_id = %row.transaction_id, order_id, "card processor timed out");
                if self.inner.processor.void(&row.transaction_id).await.is_ok() {
                    store::set_voided(db, &row.transaction_id).await?;
                }
                return Err(PaymentError::Unavailable(
                    "the card processor did not answer in time; nothing was charged".into(),
                ));
            }
        }
        // 7. Mark the order PAID.
        self.confirm(&row).await?;
        row.order_marked_paid = true;
        Ok(Attempt::Done(row.to_proto(), false))
    }

    async fn replay_success(&self, row: PaymentRow) -> Result<Attempt, PaymentError> {
        self.confirm(&row).await?;
        Ok(Attempt::Done(row.to_proto(), true))
    }

    /// Makes sure the order of a succeeded payment is PAID with its transaction id; voids the charge
    /// when the order can no longer be paid.
    async fn confirm(&self, row: &PaymentRow) -> Result<(), PaymentError> {
        if row.order_marked_paid {
            return Ok(());
        }
        let request = order_pb::MarkPaidRequest {
            order_id: row.order_id.clone(),
            transaction_id: row.transaction_id.clone(),
        };
        match self.inner.order.clone().mark_paid(request).await {
            Ok(_) => {
                store::set_order_marked_paid(&self.inner.db, &row.transaction_id).await?;
                Ok(())
            }
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                tracing::warn!(transaction_id = %row.transaction_id, order_id = %row.order_id,
                    reason = %status.message(), "order cannot be marked paid; voiding the charge");
                self.inner.processor.void(&row.transaction_id).await.map_err(|e| {
                    tracing::error!(transaction_id = %row.transaction_id, error = %e, "void failed; will retry");
                    PaymentError::Unavailable("the order cannot be paid and the charge is being voided".into())
                })?;
                store::set_voided(&self.inner.db, &row.transaction_id).await?;
                Err(PaymentError::FailedPrecondition(format!(
                    "{}; the charge was voided",
                    status.message().trim_end_matches('.')
                )))
            }
            Err(status) => {
                tracing::warn!(transaction_id = %row.transaction_id, order_id = %row.order_id,
                    code = ?status.code(), "charge approved but the order is not marked paid yet");
                Err(PaymentError::Unavailable(
                    "the payment was accepted but the order service is unavailable; retry to confirm it"
                        .into(),
                ))
            }
        }
    }

    async fn get_order(&self, user_id: i64, order_id: &str) -> Result<order_pb::Order, PaymentError> {
        let request = order_pb::GetOrderRequest { user_id, order_id: order_id.to_owned() };
        let response = self.inner.order.clone().get_order(request).await.map_err(|status| {
            if is_transient(status.code()) {
                tracing::warn!(order_id, code = ?status.code(), "order service unavailable");
            }
            PaymentError::from_peer("the order service", &status)
        })?;
        let order = response.into_inner().order.ok_or_else(|| {
            PaymentError::Internal("the order service answered GetOrder without an order".into())
        })?;
        if order.user_id != user_id {
            return Err(PaymentError::NotFound("order not found".into()));
        }
        Ok(order)
    }

    pub async fn find_payment(&self, req: pb::GetPaymentRequest) -> Result<pb::Payment, PaymentError> {
        let user_id = UserId::new(req.user_id)?.get();
        let db = &self.inner.db;
        let found = match req.lookup {
            Some(pb::get_payment_request::Lookup::TransactionId(id)) if !id.trim().is_empty() => {
                store::find_by_id(db, id.trim()).await?
            }
            Some(pb::get_payment_request::Lookup::OrderId(id)) if !id.trim().is_empty() => {
                let order_id = OrderId::parse(&id)?;
                match store::find_claim(db, order_id.as_str()).await? {
                    Some(claim) if claim.status == PaymentStatus::Succeeded && claim.user_id == user_id => {
                        Some(claim)
                    }
                    _ => store::latest_for_order(db, user_id, order_id.as_str()).await?,
                }
            }
            _ => return Err(PaymentError::InvalidArgument("transaction_id or order_id is required".into())),
        };
        match found {
            Some(row) if row.user_id == user_id && row.status != PaymentStatus::Processing => {
                Ok(row.to_proto())
            }
            _ => Err(PaymentError::NotFound("payment not found".into())),
        }
    }
}

fn log_declined(row: &PaymentRow) {
    tracing::info!(transaction_id = %row.transaction_id, order_id = %row.order_id, user_id = row.user_id,
        amount_cents = row.amount_cents, card_last4 = %row.card_last4, card_brand = %row.card_brand,
        reason = row.decline_reason.as_str_name(), "charge declined");
}

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        // Run to the end even if the caller goes away, so a charge never stops half-way; within the
        // caller's deadline all the same (what is left undone then is the sweep's).
        let this = self.clone();
        let task =
            tokio::spawn(mall_runtime::keep_deadline(
                async move { this.run_charge(request.into_inner()).await },
            ));
        let (payment, replayed) =
            task.await.map_err(|e| PaymentError::Internal(format!("charge task failed: {e}")))??;
        Ok(Response::new(pb::ChargeResponse { payment: Some(payment), replayed }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let payment = self.find_payment(request.into_inner()).await?;
        Ok(Response::new(pb::GetPaymentResponse { payment: Some(payment) }))
    }
}
