//! The card processor: the one thing that actually moves money, kept behind a small trait so a real
//! one (a payment gateway's API) can be plugged in with [`crate::startup_with_processor`].
//!
//! The payment service asks the processor only for cards that passed every check of
//! [`mall_domain::card`], and names each attempt by its transaction id, which a real processor should
//! use as its own idempotency key (so a retried request can never charge twice).

use mall_domain::card::Card;

use crate::DECLINED_TEST_CARD;

/// One charge, as asked of the processor.
#[derive(Debug)]
pub struct ProcessorCharge<'a> {
    /// Our transaction id (UUID v7); the processor's idempotency key for this charge.
    pub transaction_id: &'a str,
    pub order_id: &'a str,
    pub amount_cents: i64,
    pub card: &'a Card,
}

/// The processor's answer to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorDecision {
    Approved,
    /// Refused; nothing was charged.
    Declined,
}

/// The processor could not be asked. For `authorize`, this must mean nothing was charged (a processor
/// that cannot tell should void before answering it).
#[derive(Debug, thiserror::Error)]
#[error("card processor unavailable: {0}")]
pub struct ProcessorUnavailable(pub String);

/// A card processor.
#[tonic::async_trait]
pub trait CardProcessor: Send + Sync + 'static {
    /// Charges (or refuses) `charge.amount_cents` to the card.
    async fn authorize(
        &self,
        charge: &ProcessorCharge<'_>,
    ) -> Result<ProcessorDecision, ProcessorUnavailable>;

    /// Cancels an approved charge (nothing is kept). Voiding an unknown or already voided transaction
    /// succeeds.
    async fn void(&self, transaction_id: &str) -> Result<(), ProcessorUnavailable>;
}

/// The built-in processor: approves every card that passed the checks except the documented test
/// number [`DECLINED_TEST_CARD`], which it refuses so that declines can be exercised end to end.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltInProcessor;

#[tonic::async_trait]
impl CardProcessor for BuiltInProcessor {
    async fn authorize(
        &self,
        charge: &ProcessorCharge<'_>,
    ) -> Result<ProcessorDecision, ProcessorUnavailable> {
        if charge.card.number() == DECLINED_TEST_CARD {
            Ok(ProcessorDecision::Declined)
        } else {
            Ok(ProcessorDecision::Approved)
        }
    }

    async fn void(&self, _transaction_id: &str) -> Result<(), ProcessorUnavailable> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mall_domain::card::YearMonth;

    use super::*;

    async fn decide(number: &str) -> ProcessorDecision {
        let valid = Card::parse(number, "123", 2030, 1, YearMonth { year: 2026, month: 1 }).unwrap();
        let charge = ProcessorCharge { transaction_id: "t", order_id: "o", amount_cents: 100, card: &valid };
        BuiltInProcessor.authorize(&charge).await.unwrap()
    }

    #[tokio::test]
    async fn built_in_declines_only_the_test_card() {
        assert_eq!(decide(DECLINED_TEST_CARD).await, ProcessorDecision::Declined);
        assert_eq!(decide("4000 0000 0000 0002").await, ProcessorDecision::Declined, "spaces are ignored");
        assert_eq!(decide("4111111111111111").await, ProcessorDecision::Approved);
        assert_eq!(decide("5555555555554444").await, ProcessorDecision::Approved);
        assert!(BuiltInProcessor.void("t").await.is_ok());
    }
}
