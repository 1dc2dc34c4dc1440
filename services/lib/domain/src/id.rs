//! Ids: users and products have positive integer ids; orders have opaque text ids (UUID v7 when the
//! order service makes them).

use std::fmt;
use std::str::FromStr;

use crate::{Invalid, Problem};

/// Longest order id anything stores (the width of every column that holds one).
pub const MAX_ORDER_ID: usize = 64;

macro_rules! positive_id {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// An id of 1 or more.
            pub fn new(id: i64) -> Result<$name, Invalid> {
                if id <= 0 {
                    return Err(Invalid::new($field, Problem::NotPositive(id)));
                }
                Ok($name(id))
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        /// From text (a path segment): a positive whole number, surrounding spaces ignored.
        impl FromStr for $name {
            type Err = Invalid;

            fn from_str(text: &str) -> Result<$name, Invalid> {
                match text.trim().parse::<i64>() {
                    Ok(id) if id > 0 => Ok($name(id)),
                    _ => Err(Invalid::new($field, Problem::NotAWholeNumber(text.to_owned()))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A user's id: 1 or more.
    UserId,
    "user_id"
);

positive_id!(
    /// A product's id: 1 or more.
    ProductId,
    "product_id"
);

/// An order id as a caller gives it: trimmed, 1 to [`MAX_ORDER_ID`] characters. Nothing more is
/// assumed of its form: an id that names no order is not found, not malformed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: &str) -> Result<OrderId, Invalid> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(Invalid::required("order_id"));
        }
        let got = id.chars().count();
        if got > MAX_ORDER_ID {
            return Err(Invalid::new("order_id", Problem::TooLong { max: MAX_ORDER_ID, got }));
        }
        Ok(OrderId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_ids() {
        assert_eq!(UserId::new(1).unwrap().get(), 1);
        assert_eq!(ProductId::new(i64::MAX).unwrap().get(), i64::MAX);
        assert_eq!(UserId::new(0).unwrap_err().to_string(), "user_id must be positive, got 0");
        assert_eq!(ProductId::new(-3).unwrap_err().to_string(), "product_id must be positive, got -3");
        assert_eq!(ProductId::new(i64::MIN).unwrap_err().field, "product_id");
    }

    #[test]
    fn ids_from_text() {
        assert_eq!(" 42 ".parse::<ProductId>().unwrap(), ProductId::new(42).unwrap());
        assert_eq!("7".parse::<UserId>().unwrap().to_string(), "7");
        for bad in ["0", "-1", "abc", "", "1.5", "99999999999999999999"] {
            assert_eq!(
                bad.parse::<ProductId>().unwrap_err().to_string(),
                format!("product_id must be a positive whole number, not {bad:?}")
            );
        }
    }

    #[test]
    fn order_ids() {
        let uuid = "01890000-0000-7000-8000-000000000000";
        assert_eq!(OrderId::parse(&format!(" {uuid}\n")).unwrap().as_str(), uuid);
        assert_eq!(OrderId::parse("nope").unwrap().to_string(), "nope", "any text names an order or not");
        assert!(OrderId::parse(&"é".repeat(64)).is_ok());
        assert_eq!(OrderId::parse("").unwrap_err().to_string(), "order_id is required");
        assert_eq!(OrderId::parse("  ").unwrap_err().to_string(), "order_id is required");
        assert_eq!(
            OrderId::parse(&"o".repeat(65)).unwrap_err().to_string(),
            "order_id must be at most 64 characters (it has 65)"
        );
    }
}
