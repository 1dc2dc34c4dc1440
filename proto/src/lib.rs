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

        impl From<&mall_domain::Address> for Address {
            fn from(a: &mall_domain::Address) -> Self {
                Address {
                    street_address: a.street_address().to_owned(),
                    city: a.city().to_owned(),
                    state: a.state().to_owned(),
                    country: a.country().to_owned(),
                    zip_code: a.zip_code().to_owned(),
                }
            }
        }

        /// An address as a caller sent it, checked (`mall_domain::Address::parse`).
        impl TryFrom<&Address> for mall_domain::Address {
            type Error = mall_domain::Invalid;

            fn try_from(a: &Address) -> Result<Self, Self::Error> {
                mall_domain::Address::parse(&a.street_address, &a.city, &a.state, &a.country, &a.zip_code)
            }
        }

        impl From<mall_domain::OrderStatus> for OrderStatus {
            fn from(s: mall_domain::OrderStatus) -> Self {
                match s {
                    mall_domain::OrderStatus::Pending => OrderStatus::Pending,
                    mall_domain::OrderStatus::Paid => OrderStatus::Paid,
                    mall_domain::OrderStatus::Cancelled => OrderStatus::Cancelled,
                }
            }
        }

        impl TryFrom<OrderStatus> for mall_domain::OrderStatus {
            type Error = mall_domain::UnknownStatus;

            fn try_from(s: OrderStatus) -> Result<Self, Self::Error> {
                match s {
                    OrderStatus::Pending => Ok(mall_domain::OrderStatus::Pending),
                    OrderStatus::Paid => Ok(mall_domain::OrderStatus::Paid),
                    OrderStatus::Cancelled => Ok(mall_domain::OrderStatus::Cancelled),
                    OrderStatus::Unspecified => Err(mall_domain::UnknownStatus {
                        kind: "order status",
                        value: s.as_str_name().to_owned(),
                    }),
                }
            }
        }
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

        /// A processing attempt is never shown to callers: it has no status on the wire.
        impl From<mall_domain::PaymentStatus> for PaymentStatus {
            fn from(s: mall_domain::PaymentStatus) -> Self {
                match s {
                    mall_domain::PaymentStatus::Processing => PaymentStatus::Unspecified,
                    mall_domain::PaymentStatus::Succeeded => PaymentStatus::Succeeded,
                    mall_domain::PaymentStatus::Declined => PaymentStatus::Declined,
                    mall_domain::PaymentStatus::Voided => PaymentStatus::Voided,
                }
            }
        }
    }
}

pub mod checkout {
    pub mod v1 {
        tonic::include_proto!("mall.checkout.v1");

        impl From<mall_domain::CheckoutStep> for CheckoutStep {
            fn from(s: mall_domain::CheckoutStep) -> Self {
                use mall_domain::CheckoutStep as S;
                match s {
                    S::Started => CheckoutStep::Started,
                    S::CartRead => CheckoutStep::CartRead,
                    S::OrderPlaced => CheckoutStep::OrderPlaced,
                    S::Charged => CheckoutStep::Charged,
                    S::OrderPaid => CheckoutStep::OrderPaid,
                    S::CartEmptied => CheckoutStep::CartEmptied,
                    S::OrderCancelled => CheckoutStep::OrderCancelled,
                }
            }
        }

        impl From<mall_domain::CheckoutOutcome> for CheckoutOutcome {
            fn from(o: mall_domain::CheckoutOutcome) -> Self {
                use mall_domain::CheckoutOutcome as O;
                match o {
                    O::InProgress => CheckoutOutcome::InProgress,
                    O::Succeeded => CheckoutOutcome::Succeeded,
                    O::Declined => CheckoutOutcome::Declined,
                    O::Failed => CheckoutOutcome::Failed,
                }
            }
        }
    }
}

/// The standard gRPC health service, served by every Mall service.
pub use tonic_health as health;

#[cfg(test)]
mod tests {
    use super::payment::v1::{ChargeRequest, CreditCard};

    #[test]
    fn order_statuses_round_trip_and_unspecified_is_refused() {
        use super::order::v1::OrderStatus as Pb;
        for &status in mall_domain::OrderStatus::ALL {
            assert_eq!(mall_domain::OrderStatus::try_from(Pb::from(status)), Ok(status));
        }
        let e = mall_domain::OrderStatus::try_from(Pb::Unspecified).unwrap_err();
        assert_eq!(e.to_string(), r#""ORDER_STATUS_UNSPECIFIED" is not a known order status"#);
    }

    #[test]
    fn addresses_are_checked_on_the_way_in() {
        use super::order::v1::Address;
        let wire = Address {
            street_address: " 1 Main St ".into(),
            city: "Springfield".into(),
            state: String::new(),
            country: "US".into(),
            zip_code: "01234".into(),
        };
        let parsed = mall_domain::Address::try_from(&wire).unwrap();
        assert_eq!(Address::from(&parsed), Address { street_address: "1 Main St".into(), ..wire.clone() });
        let long = Address { city: "c".repeat(201), ..wire };
        assert_eq!(
            mall_domain::Address::try_from(&long).unwrap_err().to_string(),
            "address.city must be at most 200 characters (it has 201)"
        );
    }

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
