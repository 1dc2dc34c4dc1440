//! The checkout saga (api.md "Checkout, precisely"; mall/checkout/v1/checkout.proto), step by step.
//!
//! Every peer call is idempotent for a retry: PlaceOrder and Charge carry the idempotency key
//! `checkout:<checkout_id>` (so one checkout places at most one order and charges it at most once),
//! MarkPaid is idempotent for the same transaction id, CancelOrder of a cancelled order and EmptyCart
//! succeed again. So a step that was done but not written is simply done again by a resume, and the
//! saga writes its state only where it stops: when it ends (the write that also gives up the lease),
//! when a step cannot go on (see [`Checkouts::drive`]), and when a card is declined, before its order
//! is cancelled. A checkout that goes through is two writes: its insert and its end.
//!
//! A step that meets an unreachable peer stops the saga where it is (the caller answers UNAVAILABLE);
//! a step that meets a definite refusal ends it, compensating first (an order placed is cancelled,
//! which releases its stock).
//!
//! Without the card (recovery of an abandoned checkout) the saga cannot charge: it finishes a
//! checkout whose order has a SUCCEEDED payment, and cancels the order of one that has none.

use std::sync::Arc;
use std::time::Duration;

use mall_proto::cart::v1 as cart_pb;
use mall_proto::cart::v1::cart_service_client::CartServiceClient;
use mall_proto::order::v1 as order_pb;
use mall_proto::order::v1::order_service_client::OrderServiceClient;
use mall_proto::payment::v1 as payment_pb;
use mall_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mall_runtime::{CancellationToken, PeerChannel};
use mall_storage::{Db, now_unix};
use sha2::{Digest, Sha256};
use tonic::Code;
use tracing::Instrument;

use crate::error::is_transient;
use crate::store::{self, CheckoutRow, Outcome, Step};
use crate::{CheckoutError, Peers};

/// The message of a checkout that recovery ended without a charge.
pub const ABANDONED: &str = "checkout abandoned: interrupted before payment; nothing was charged";

/// Recovery takes up open checkouts untouched (and unleased) for this long, so that a client retrying
/// with the same key after an UNAVAILABLE gets the first chance to finish its own checkout.
pub const ABANDONED_AFTER_SECS: i64 = 120;
/// How often recovery looks for abandoned checkouts.
pub const RECOVER_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Checkouts {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    cart: CartServiceClient<PeerChannel>,
    order: OrderServiceClient<PeerChannel>,
    payment: PaymentServiceClient<PeerChannel>,
}

/// What a checkout without an idempotency key is keyed by (see [`Checkouts::cart_key`]).
pub(crate) struct CartKey {
    pub key: String,
    /// The cart's lines at that version: the order will have exactly these.
    pub lines: Vec<order_pb::OrderLine>,
}

/// How a key derived from the cart begins. Keys are scoped to their user, so a client could meet a
/// derived key only by sending the hash of its own cart's version, and would then share that
/// checkout with itself.
pub(crate) const CART_KEY_PREFIX: &str = "cart:";

/// A cart's lines for an order: every one available, at least one. Otherwise the status code and
/// message the checkout ends with.
pub(crate) fn cart_lines(cart: &cart_pb::Cart) -> Result<Vec<order_pb::OrderLine>, (Code, String)> {
    if cart.items.is_empty() {
        return Err((Code::InvalidArgument, "your cart is empty".into()));
    }
    if let Some(gone) = cart.items.iter().find(|item| !item.available) {
        let message = format!("product {} in your cart is no longer available", gone.product_id);
        return Err((Code::FailedPrecondition, message));
    }
    Ok(cart
        .items
        .iter()
        .map(|item| order_pb::OrderLine { product_id: item.product_id, quantity: item.quantity })
        .collect())
}

/// The `outcome` label of `mall_checkout_outcomes_total` for a finished checkout: `completed`,
/// `declined` (the card was refused; the order cancelled), `compensated` (failed after the order was
/// placed, which was then cancelled) or `failed` (failed before anything needed undoing).
fn outcome_label(row: &CheckoutRow) -> &'static str {
    match row.outcome {
        Outcome::Succeeded => "completed",
        Outcome::Declined => "declined",
        Outcome::Failed if row.step == Step::OrderCancelled => "compensated",
        _ => "failed",
    }
}

/// What the saga does from `step` (with or without the shopper's card at hand), as `Checkouts::step` does it.
fn action(step: Step, with_card: bool) -> &'static str {
    match (step, with_card) {
        (Step::Started, true) => "read cart",
        (Step::Started, false) => "abandon",
        (Step::CartRead, _) => "place order",
        (Step::OrderPlaced, true) => "charge",
        (Step::OrderPlaced, false) => "settle without card",
        (Step::Charged, _) => "mark paid",
        (Step::OrderPaid, _) => "empty cart",
        (Step::CartEmptied | Step::OrderCancelled, _) => "finish",
    }
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Checkouts brought to an end (SUCCEEDED, DECLINED or FAILED), or whose cart was emptied.
    pub finished: usize,
    /// Checkouts that could not be moved on now (a peer unreachable); the next pass tries again.
    pub deferred: usize,
}

/// What cancelling a checkout's order found.
enum Cancelled {
    Yes,
    /// The order was paid meanwhile (its payment succeeded): the saga moved on to CHARGED instead.
    PaidMeanwhile,
    /// The order service refuses to cancel an order that has no successful payment (an admin marked it
    /// paid): the message says why.
    Refused(String),
}

impl Checkouts {
    pub fn new(db: Db, peers: Peers) -> Checkouts {
        Checkouts {
            inner: Arc::new(Inner {
                db,
                cart: CartServiceClient::new(peers.cart),
                order: OrderServiceClient::new(peers.order),
                payment: PaymentServiceClient::new(peers.payment),
            }),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Runs recovery now (in the background, so startup never waits for peers) and then every
    /// [`RECOVER_EVERY`], until `shutdown`.
    pub fn spawn_recovery(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.recover(ABANDONED_AFTER_SECS).await {
                    Ok(r) if r != Recovered::default() => tracing::info!(?r, "checkout recovery pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "checkout recovery pass failed; will try again"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RECOVER_EVERY) => {}
                }
            }
        });
    }

    /// Completes or compensates, without a card, every open checkout untouched for `idle_secs` and not
    /// driven by a live call.
    pub async fn recover(&self, idle_secs: i64) -> Result<Recovered, CheckoutError> {
        let mut done = Recovered::default();
        metrics::counter!("mall_checkout_sweeper_runs_total").increment(1);
        for checkout_id in store::open_idle(self.db(), now_unix() - idle_secs, 100).await? {
            let lease = uuid::Uuid::new_v4().to_string();
            if !store::acquire(self.db(), &checkout_id, &lease).await? {
                continue;
            }
            let Some(mut row) = store::find_by_id(self.db(), &checkout_id).await? else { continue };
            let result = self.drive(&mut row, &lease, None).await;
            self.release(&row, &lease, result.is_ok()).await;
            match result {
                Ok(()) => {
                    done.finished += 1;
                    let action = if row.outcome == Outcome::Succeeded { "completed" } else { "compensated" };
                    metrics::counter!("mall_checkout_sweeper_recovered_total", "action" => action)
                        .increment(1);
                    tracing::info!(
                        checkout_id,
                        step = row.step.as_str(),
                        outcome = row.outcome.as_str(),
                        "checkout recovered"
                    );
                }
                Err(e) => {
                    done.deferred += 1;
                    tracing::warn!(checkout_id, step = row.step.as_str(), error = %e, "checkout recovery deferred");
                }
            }
        }
        Ok(done)
    }

    /// Drives a checkout whose lease is held until it is finished, or until a step cannot be done now
    /// (the error says why; the state stays at the last completed step). `card` is `None` in recovery.
    pub(crate) async fn drive(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        card: Option<&payment_pb::CreditCard>,
    ) -> Result<(), CheckoutError> {
        let was_open = !row.finished();
        while !row.finished() {
            // Named after what the step does (its calls are under it), with the step it starts from.
            let action = action(row.step, card.is_some());
            let span = tracing::trace_span!(target: mall_runtime::TRACE_ONLY, "saga step",
                otel.name = format!("checkout {action}"), checkout.step = row.step.as_str(),
                checkout.action = action);
            if let Err(e) = self.step(row, lease, card).instrument(span).await {
                // Stopped: what got done so far is written, so that the status (GetCheckout) and a
                // resume start from there. A lost lease makes this write nothing, as it should.
                if let Err(write) = store::save(self.db(), row, lease).await {
                    tracing::warn!(checkout_id = %row.checkout_id, error = %write,
                        "cannot write a stopped checkout's progress; a resume redoes its steps");
                }
                return Err(e);
            }
        }
        if was_open {
            metrics::counter!("mall_checkout_outcomes_total", "outcome" => outcome_label(row)).increment(1);
        }
        Ok(())
    }

    /// Takes the step after `row.step` (see [`Checkouts::drive`]).
    async fn step(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        card: Option<&payment_pb::CreditCard>,
    ) -> Result<(), CheckoutError> {
        match (row.step, card) {
            (Step::Started, Some(_)) => self.read_cart(row, lease).await,
            // Nothing was placed yet: nothing to undo.
            (Step::Started, None) => self.fail(row, lease, Code::FailedPrecondition, ABANDONED).await,
            (Step::CartRead, _) => self.place_order(row, lease, card.is_none()).await,
            (Step::OrderPlaced, Some(card)) => self.charge(row, lease, card).await,
            (Step::OrderPlaced, None) => self.settle_without_card(row, lease).await,
            (Step::Charged, _) => self.mark_paid(row, lease).await,
            (Step::OrderPaid, _) => self.empty_cart(row, lease).await,
            (Step::CartEmptied | Step::OrderCancelled, _) => Err(CheckoutError::Internal(format!(
                "checkout {} is at step {} but {}",
                row.checkout_id,
                row.step.as_str(),
                row.outcome.as_str()
            ))),
        }
    }

    fn key(row: &CheckoutRow) -> String {
        format!("checkout:{}", row.checkout_id)
    }

    /// Gives up the lease of a checkout that stopped (`drove_to_end`: the saga ended, and its last write
    /// gave it up already).
    pub(crate) async fn release(&self, row: &CheckoutRow, lease: &str, drove_to_end: bool) {
        if drove_to_end && row.finished() {
            return;
        }
        if let Err(e) = store::release(self.db(), &row.checkout_id, lease).await {
            tracing::warn!(checkout_id = %row.checkout_id, error = %e,
                "cannot release a checkout lease; it will expire");
        }
    }

    /// Writes the row; fails if another call took the checkout over meanwhile.
    async fn commit(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        if store::save(self.db(), row, lease).await? {
            Ok(())
        } else {
            Err(CheckoutError::Aborted("this checkout was taken over by another call; retry shortly".into()))
        }
    }

    /// Ends the checkout FAILED with the status a replay will answer.
    async fn fail(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        code: Code,
        message: &str,
    ) -> Result<(), CheckoutError> {
        row.outcome = Outcome::Failed;
        row.failure_code = code;
        row.failure_message = message.to_owned();
        self.commit(row, lease).await?;
        tracing::info!(checkout_id = %row.checkout_id, step = row.step.as_str(), ?code, message, "checkout failed");
        Ok(())
    }

    /// STARTED → CART_READ: the cart's lines, all of them available.
    async fn read_cart(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        let cart = match self.get_cart(row.user_id).await? {
            Ok(cart) => cart,
            Err(s) => return self.fail(row, lease, s.code(), s.message()).await,
        };
        row.lines = match cart_lines(&cart) {
            Ok(lines) => lines,
            Err((code, message)) => return self.fail(row, lease, code, &message).await,
        };
        row.step = Step::CartRead;
        self.commit(row, lease).await
    }

    /// The user's cart; a transient failure is an error, a definite refusal the inner `Err`.
    async fn get_cart(&self, user_id: i64) -> Result<Result<cart_pb::Cart, tonic::Status>, CheckoutError> {
        let request = cart_pb::GetCartRequest { user_id };
        match self.inner.cart.clone().get_cart(request).await {
            Ok(response) => Ok(Ok(response.into_inner().cart.unwrap_or_default())),
            Err(s) if is_transient(s.code()) => Err(CheckoutError::peer_unavailable("the cart service", &s)),
            Err(s) => Ok(Err(s)),
        }
    }

    /// The key of a checkout that came without one, and the cart's lines it was derived from: the user
    /// and the cart's content version, so that a second checkout of the same unchanged cart (a double
    /// click, a retry) finds the first instead of ordering and charging again, while a checkout after
    /// any change of the cart is a new one. `None` when the cart service gives no version (an older
    /// one, during an upgrade): then every such checkout is a new one, as before.
    pub(crate) async fn cart_key(&self, user_id: i64) -> Result<Option<CartKey>, CheckoutError> {
        let cart = self
            .get_cart(user_id)
            .await?
            .map_err(|s| CheckoutError::Failed { code: s.code(), message: s.message().to_owned() })?;
        let lines = cart_lines(&cart).map_err(|(code, message)| CheckoutError::Failed { code, message })?;
        if cart.version.is_empty() {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        hasher.update(user_id.to_be_bytes());
        hasher.update(cart.version.as_bytes());
        let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Some(CartKey { key: format!("{CART_KEY_PREFIX}{hash}"), lines }))
    }

    /// CART_READ → ORDER_PLACED. In recovery the same call finds the order an interrupted call may
    /// have placed (or places it), so that the next step cancels it.
    async fn place_order(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        recovering: bool,
    ) -> Result<(), CheckoutError> {
        let request = order_pb::PlaceOrderRequest {
            user_id: row.user_id,
            email: row.email.clone(),
            address: Some(row.address.clone()),
            items: row.lines.clone(),
            idempotency_key: Self::key(row),
        };
        let order = match self.inner.order.clone().place_order(request).await {
            Ok(response) => response.into_inner().order.ok_or_else(|| {
                CheckoutError::Internal("the order service answered PlaceOrder without an order".into())
            })?,
            Err(s) if is_transient(s.code()) => {
                return Err(CheckoutError::peer_unavailable("the order service", &s));
            }
            // A refusal places nothing and reserves nothing.
            Err(_) if recovering => return self.fail(row, lease, Code::FailedPrecondition, ABANDONED).await,
            Err(s) => return self.fail(row, lease, s.code(), s.message()).await,
        };
        row.order_id = order.order_id;
        row.total_cents = order.total_cents;
        // Not written yet: PlaceOrder gives the same order again to a resume.
        row.step = Step::OrderPlaced;
        tracing::info!(checkout_id = %row.checkout_id, order_id = %row.order_id, total_cents = row.total_cents,
            "checkout placed its order");
        Ok(())
    }

    /// ORDER_PLACED → ORDER_PAID, or → ORDER_CANCELLED on a decline.
    async fn charge(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        card: &payment_pb::CreditCard,
    ) -> Result<(), CheckoutError> {
        if row.decline_reason != payment_pb::DeclineReason::Unspecified {
            // Declined before; only the cancellation is left to do.
            return self.cancel_declined(row, lease).await;
        }
        let request = payment_pb::ChargeRequest {
            order_id: row.order_id.clone(),
            user_id: row.user_id,
            credit_card: Some(card.clone()),
            idempotency_key: Self::key(row),
        };
        let payment = match self.inner.payment.clone().charge(request).await {
            Ok(response) => response.into_inner().payment.ok_or_else(|| {
                CheckoutError::Internal("the payment service answered Charge without a payment".into())
            })?,
            Err(s) if is_transient(s.code()) => {
                return Err(CheckoutError::peer_unavailable("the payment service", &s));
            }
            // The order cannot be charged (cancelled or expired meanwhile, ...): release its stock.
            Err(s) => return self.cancel_and_fail(row, lease, s.code(), s.message()).await,
        };
        row.transaction_id = payment.transaction_id.clone();
        match payment.status() {
            // The payment service answers SUCCEEDED only once the order is PAID (it voids a charge whose
            // order cannot be paid), so there is no MarkPaid left to ask for.
            payment_pb::PaymentStatus::Succeeded => {
                paid(row);
                Ok(())
            }
            payment_pb::PaymentStatus::Declined => {
                row.decline_reason = match payment.decline_reason() {
                    payment_pb::DeclineReason::Unspecified => payment_pb::DeclineReason::ProcessorDeclined,
                    reason => reason,
                };
                self.commit(row, lease).await?;
                tracing::info!(checkout_id = %row.checkout_id, order_id = %row.order_id,
                    reason = row.decline_reason.as_str_name(), "checkout card declined");
                self.cancel_declined(row, lease).await
            }
            other => {
                Err(CheckoutError::Internal(format!("the payment service answered Charge with {other:?}")))
            }
        }
    }

    /// ORDER_PLACED without a card: finish if the order has a SUCCEEDED payment, cancel it otherwise.
    async fn settle_without_card(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        if row.decline_reason != payment_pb::DeclineReason::Unspecified {
            return self.cancel_declined(row, lease).await;
        }
        match self.succeeded_payment(row).await? {
            Some(transaction_id) => {
                row.transaction_id = transaction_id;
                row.step = Step::Charged;
                self.commit(row, lease).await
            }
            None => self.cancel_and_fail(row, lease, Code::FailedPrecondition, ABANDONED).await,
        }
    }

    /// The transaction id of the order's SUCCEEDED payment, if it has one.
    async fn succeeded_payment(&self, row: &CheckoutRow) -> Result<Option<String>, CheckoutError> {
        let request = payment_pb::GetPaymentRequest {
            user_id: row.user_id,
            lookup: Some(payment_pb::get_payment_request::Lookup::OrderId(row.order_id.clone())),
        };
        match self.inner.payment.clone().get_payment(request).await {
            Ok(response) => Ok(response
                .into_inner()
                .payment
                .filter(|p| p.status() == payment_pb::PaymentStatus::Succeeded)
                .map(|p| p.transaction_id)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(CheckoutError::peer_unavailable("the payment service", &s)),
        }
    }

    /// Cancels the checkout's order (releasing its stock). An order that turns out PAID was paid by
    /// its own payment: the saga moves on to CHARGED with it.
    async fn cancel(&self, row: &mut CheckoutRow, lease: &str) -> Result<Cancelled, CheckoutError> {
        let request = order_pb::CancelOrderRequest { user_id: row.user_id, order_id: row.order_id.clone() };
        match self.inner.order.clone().cancel_order(request).await {
            Ok(_) => Ok(Cancelled::Yes),
            // Nothing of it is left to release.
            Err(s) if s.code() == Code::NotFound => Ok(Cancelled::Yes),
            Err(s) if s.code() == Code::FailedPrecondition => match self.succeeded_payment(row).await? {
                Some(transaction_id) => {
                    tracing::warn!(checkout_id = %row.checkout_id, order_id = %row.order_id,
                        "the order was paid meanwhile; completing the checkout instead of cancelling it");
                    row.transaction_id = transaction_id;
                    row.decline_reason = payment_pb::DeclineReason::Unspecified;
                    row.step = Step::Charged;
                    self.commit(row, lease).await?;
                    Ok(Cancelled::PaidMeanwhile)
                }
                None => Ok(Cancelled::Refused(format!("the order could not be cancelled: {}", s.message()))),
            },
            Err(s) => Err(CheckoutError::peer_unavailable("the order service", &s)),
        }
    }

    async fn cancel_declined(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        match self.cancel(row, lease).await? {
            Cancelled::Yes => {
                row.step = Step::OrderCancelled;
                row.outcome = Outcome::Declined;
                self.commit(row, lease).await
            }
            Cancelled::PaidMeanwhile => Ok(()),
            Cancelled::Refused(message) => self.fail(row, lease, Code::FailedPrecondition, &message).await,
        }
    }

    async fn cancel_and_fail(
        &self,
        row: &mut CheckoutRow,
        lease: &str,
        code: Code,
        message: &str,
    ) -> Result<(), CheckoutError> {
        match self.cancel(row, lease).await? {
            Cancelled::Yes => {
                row.step = Step::OrderCancelled;
                self.fail(row, lease, code, message).await
            }
            Cancelled::PaidMeanwhile => Ok(()),
            Cancelled::Refused(refused) => self.fail(row, lease, Code::FailedPrecondition, &refused).await,
        }
    }

    /// CHARGED → ORDER_PAID (outcome SUCCEEDED): for a payment found rather than made here (a recovered
    /// checkout, or an order paid meanwhile), whose order may not be PAID yet.
    async fn mark_paid(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        let request = order_pb::MarkPaidRequest {
            order_id: row.order_id.clone(),
            transaction_id: row.transaction_id.clone(),
        };
        match self.inner.order.clone().mark_paid(request).await {
            Ok(_) => {
                paid(row);
                Ok(())
            }
            Err(s) if is_transient(s.code()) => Err(CheckoutError::peer_unavailable("the order service", &s)),
            Err(s) => {
                // The payment service voids a charge whose order cannot be paid.
                let message = format!("the order could not be marked paid: {}", s.message());
                self.fail(row, lease, s.code(), &message).await
            }
        }
    }

    /// ORDER_PAID → CART_EMPTIED.
    async fn empty_cart(&self, row: &mut CheckoutRow, lease: &str) -> Result<(), CheckoutError> {
        let request = cart_pb::EmptyCartRequest { user_id: row.user_id };
        match self.inner.cart.clone().empty_cart(request).await {
            Ok(_) => {
                row.step = Step::CartEmptied;
                self.commit(row, lease).await
            }
            Err(s) => Err(CheckoutError::peer_unavailable("the cart service", &s)),
        }
    }
}

/// The order is PAID: ORDER_PAID, outcome SUCCEEDED. Written with the cart emptied, or where the
/// emptying stops.
fn paid(row: &mut CheckoutRow) {
    row.step = Step::OrderPaid;
    row.outcome = Outcome::Succeeded;
    tracing::info!(checkout_id = %row.checkout_id, order_id = %row.order_id,
        transaction_id = %row.transaction_id, "checkout paid");
}
