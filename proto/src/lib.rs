//! Generated gRPC types and stubs for every Mall service, one module per proto package.

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("mall.auth.v1");
    }
}

pub mod user {
    pub mod v1 {
        tonic::include_proto!("mall.user.v1");
    }
}

pub mod product {
    pub mod v1 {
        tonic::include_proto!("mall.product.v1");
    }
}

pub mod cart {
    pub mod v1 {
        tonic::include_proto!("mall.cart.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("mall.order.v1");
    }
}

pub mod payment {
    pub mod v1 {
        tonic::include_proto!("mall.payment.v1");

        /// Redacted: the card number and CVV must never reach a log, so `{:?}` of a card (or of any
        /// request holding one) shows only the last four digits and the expiry.
        impl std::fmt::Debug for CreditCard {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let digits: Vec<char> = self.number.chars().filter(char::is_ascii_digit).collect();
                let last4: String = if digits.len() >= 4 {
                    digits[digits.len() - 4..].iter().collect()
                } else {
                    String::new()
                };
                f.debug_struct("CreditCard")
                    .field("number", &format_args!("****{last4}"))
                    .field("cvv", &format_args!("***"))
                    .field("expiration_year", &self.expiration_year)
                    .field("expiration_month", &self.expiration_month)
                    .finish()
            }
        }

        /// The reason recorded and answered for a card that fails the checks of `mall_domain::card`.
        impl From<mall_domain::card::CardError> for DeclineReason {
            fn from(e: mall_domain::card::CardError) -> Self {
                use mall_domain::card::CardError;
                match e {
                    CardError::InvalidNumber => DeclineReason::InvalidNumber,
                    CardError::InvalidCvv => DeclineReason::InvalidCvv,
                    CardError::InvalidExpiry => DeclineReason::InvalidExpiry,
                    CardError::Expired => DeclineReason::Expired,
                }
            }
        }
    }
}

pub mod checkout {
    pub mod v1 {
        tonic::include_proto!("mall.checkout.v1");
    }
}

/// The standard gRPC health service, served by every Mall service.
pub use tonic_health as health;

#[cfg(test)]
mod tests {
    use super::payment::v1::{ChargeRequest, CreditCard};

    #[test]
    fn credit_card_debug_hides_number_and_cvv() {
        let card = CreditCard {
            number: "4111 1111 1111 1234".to_owned(),
            cvv: "987".to_owned(),
            expiration_year: 2030,
            expiration_month: 7,
        };
        let request = ChargeRequest {
            order_id: "o".to_owned(),
            user_id: 1,
            credit_card: Some(card),
            idempotency_key: String::new(),
        };
        let shown = format!("{request:?} {request:#?}");
        assert!(shown.contains("****1234"), "{shown}");
        assert!(!shown.contains("4111"), "{shown}");
        assert!(!shown.contains("987"), "{shown}");
    }
}
