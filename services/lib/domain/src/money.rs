//! A price: integer minor units (cents), from 0 to 1,000,000.00, read exactly from text (never through
//! floating point).

use crate::{Invalid, Problem};

/// A price from 0 to [`Cents::MAX`] cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cents(i64);

const FIELD: &str = "price";

impl Cents {
    /// The largest price the shop takes: 1,000,000.00.
    pub const MAX: i64 = 100_000_000;

    /// An amount of cents within 0..=[`Cents::MAX`].
    pub fn new(cents: i64) -> Result<Cents, Invalid> {
        if cents < 0 {
            return Err(Invalid::new(FIELD, Problem::Negative));
        }
        if cents > Cents::MAX {
            return Err(too_large());
        }
        Ok(Cents(cents))
    }

    /// A decimal as people write prices: digits, then optionally a dot and one or two digits ("19",
    /// "19.9", "19.90"); surrounding spaces are ignored.
    pub fn parse_decimal(text: &str) -> Result<Cents, Invalid> {
        let text = text.trim();
        if text.starts_with('-') {
            return Err(Invalid::new(FIELD, Problem::Negative));
        }
        let not_decimal = || Invalid::new(FIELD, Problem::NotADecimal(text.to_owned()));
        let (units, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if units.is_empty() || !digits(units) || !digits(fraction) || text.ends_with('.') {
            return Err(not_decimal());
        }
        if fraction.len() > 2 {
            return Err(Invalid::new(FIELD, Problem::TooManyDecimals(text.to_owned())));
        }
        // Only digits are left: a parse failure is an overflow.
        let units: i64 = units.parse().map_err(|_| too_large())?;
        let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| not_decimal())?;
        let cents = units.checked_mul(100).and_then(|c| c.checked_add(fraction)).ok_or_else(too_large)?;
        Cents::new(cents)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

fn too_large() -> Invalid {
    Invalid::new(FIELD, Problem::AboveMax("1,000,000.00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        Cents::parse_decimal(text).expect_err(text).to_string()
    }

    #[test]
    fn whole_cents_from_0_to_the_maximum() {
        assert_eq!(Cents::new(0).unwrap().get(), 0);
        assert_eq!(Cents::new(Cents::MAX).unwrap().get(), 100_000_000);
        assert_eq!(Cents::new(-1).unwrap_err().to_string(), "price must not be negative");
        assert_eq!(Cents::new(Cents::MAX + 1).unwrap_err().to_string(), "price must be at most 1,000,000.00");
        assert!(Cents::new(i64::MIN).is_err() && Cents::new(i64::MAX).is_err());
    }

    #[test]
    fn decimals_parse_exactly() {
        let cents = |text: &str| Cents::parse_decimal(text).unwrap().get();
        assert_eq!(cents("19.90"), 1990);
        assert_eq!(cents("19.9"), 1990);
        assert_eq!(cents(" 19 "), 1900);
        assert_eq!(cents("0.29"), 29);
        assert_eq!(cents("0"), 0);
        assert_eq!(cents("1000000.00"), Cents::MAX);
    }

    #[test]
    fn bad_decimals_say_why() {
        assert_eq!(refused("19.999"), r#"price "19.999" has more than two decimals"#);
        assert_eq!(refused("-1"), "price must not be negative");
        assert_eq!(refused("1000000.01"), "price must be at most 1,000,000.00");
        assert_eq!(refused("99999999999999999999"), "price must be at most 1,000,000.00");
        for bad in ["abc", "", "1.", ".5", "1e3", "1,5", "+1", "1.2.3", "١٢"] {
            assert_eq!(refused(bad), format!("price {bad:?} is not a decimal like \"19.90\""));
        }
    }
}
