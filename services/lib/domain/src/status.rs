//! Every status the services keep, each with its one text form: the value stored in its database
//! column, and (for orders and payments) the one the API shows. `as_str` and `FromStr` are the only
//! places these strings are written; SQL binds them rather than spelling them.

use std::fmt;
use std::str::FromStr;

use crate::UnknownStatus;

macro_rules! status {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<$name, UnknownStatus> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    other => Err(UnknownStatus { kind: $kind, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status!(
    /// An order's state; every change is a conditional update on the state it leaves.
    OrderStatus, "order status" {
        /// Placed, waiting for its payment; holds its stock until it expires.
        Pending = "pending",
        Paid = "paid",
        /// Cancelled by its user, by a declined checkout or by expiry; its stock is given back.
        Cancelled = "cancelled",
    }
);

status!(
    /// A charge attempt's state.
    PaymentStatus, "payment status" {
        /// The order is claimed and the processor is being asked. Internal: never shown to callers.
        Processing = "processing",
        Succeeded = "succeeded",
        Declined = "declined",
        /// Approved, then voided because the order could not be marked paid.
        Voided = "voided",
    }
);

status!(
    /// The last step a checkout saga completed.
    CheckoutStep, "checkout step" {
        Started = "started",
        CartRead = "cart_read",
        OrderPlaced = "order_placed",
        Charged = "charged",
        OrderPaid = "order_paid",
        CartEmptied = "cart_emptied",
        OrderCancelled = "order_cancelled",
    }
);

status!(
    /// How a checkout ended, or that it has not yet.
    CheckoutOutcome, "checkout outcome" {
        InProgress = "in_progress",
        Succeeded = "succeeded",
        Declined = "declined",
        Failed = "failed",
    }
);

status!(
    /// An order id's stock reservation at the product service: an order id reserves at most once.
    ReservationStatus, "stock reservation status" {
        Reserved = "reserved",
        /// Given back (or released before anything was reserved): the order id can never reserve.
        Released = "released",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<S>(all: &[S], texts: &[&str])
    where
        S: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownStatus>,
    {
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(shown, texts, "the stored strings must never change (no migration)");
        for (status, text) in all.iter().zip(texts) {
            assert_eq!(text.parse::<S>().unwrap(), *status);
        }
    }

    #[test]
    fn stored_strings_are_exactly_the_existing_ones() {
        round_trips(OrderStatus::ALL, &["pending", "paid", "cancelled"]);
        round_trips(PaymentStatus::ALL, &["processing", "succeeded", "declined", "voided"]);
        round_trips(
            CheckoutStep::ALL,
            &[
                "started",
                "cart_read",
                "order_placed",
                "charged",
                "order_paid",
                "cart_emptied",
                "order_cancelled",
            ],
        );
        round_trips(CheckoutOutcome::ALL, &["in_progress", "succeeded", "declined", "failed"]);
        round_trips(ReservationStatus::ALL, &["reserved", "released"]);
        assert_eq!(OrderStatus::Paid.as_str(), "paid");
    }

    #[test]
    fn unknown_text_is_refused_and_named() {
        let e = "Paid".parse::<OrderStatus>().unwrap_err();
        assert_eq!(e.to_string(), r#""Paid" is not a known order status"#);
        assert_eq!("".parse::<PaymentStatus>().unwrap_err().kind, "payment status");
        assert!("in progress".parse::<CheckoutOutcome>().is_err());
        assert!("done".parse::<CheckoutStep>().is_err());
        assert!("held".parse::<ReservationStatus>().is_err());
    }
}
