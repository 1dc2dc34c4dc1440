//! A payment card as the shop takes it, and the checks made before any processor is asked: the number
//! (12 to 19 digits after removing spaces and dashes, Luhn), the CVV (3 or 4 digits), the expiry (month
//! 1..12, a four-digit year, not past the end of that month, UTC), and the brand from the number's
//! prefix. Checkout refuses a malformed card with these before it places anything; payment refuses
//! the same cards with the same reasons.
//!
//! A [`Card`] holds the number and the CVV in memory for the length of one charge; its `Debug` shows
//! only the last four digits and the brand. Nothing here logs anything.

use std::fmt;

/// A month of a year, UTC: what "now" is for the expiry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: i32,
    pub month: u8,
}

impl YearMonth {
    /// The current month, UTC.
    pub fn now_utc() -> YearMonth {
        let now = time::OffsetDateTime::now_utc();
        YearMonth { year: now.year(), month: u8::from(now.month()) }
    }
}

/// The card networks recognised from a number's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Unknown,
}

impl Brand {
    /// Lowercase, as stored and returned: "visa", "mastercard", "amex", "discover" or "unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Unknown => "unknown",
        }
    }

    /// The brand of a string of digits: visa 4…; mastercard 51–55 and 2221–2720; amex 34 and 37;
    /// discover 6011, 65 and 644–649; anything else "unknown".
    pub fn detect(digits: &str) -> Brand {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        if digits.starts_with('4') {
            return Brand::Visa;
        }
        if let Some(p2) = prefix(2) {
            if (51..=55).contains(&p2) {
                return Brand::Mastercard;
            }
            if p2 == 34 || p2 == 37 {
                return Brand::Amex;
            }
            if p2 == 65 {
                return Brand::Discover;
            }
        }
        if prefix(3).is_some_and(|p3| (644..=649).contains(&p3)) {
            return Brand::Discover;
        }
        if let Some(p4) = prefix(4) {
            if (2221..=2720).contains(&p4) {
                return Brand::Mastercard;
            }
            if p4 == 6011 {
                return Brand::Discover;
            }
        }
        Brand::Unknown
    }
}

/// What may be kept of a card: its last four digits (empty with fewer than four) and its brand.
/// Computed for every attempt, declined ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSummary {
    pub last4: String,
    pub brand: Brand,
}

impl CardSummary {
    pub fn of(number: &str) -> CardSummary {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let last4 = if digits.len() >= 4 { digits[digits.len() - 4..].to_owned() } else { String::new() };
        CardSummary { last4, brand: Brand::detect(&digits) }
    }
}

/// Why a card is refused before any processor is asked; the checks run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("the card number is not 12 to 19 digits, or fails the Luhn check")]
    InvalidNumber,
    #[error("the CVV is not 3 or 4 digits")]
    InvalidCvv,
    #[error("the expiration month is not 1 to 12, or its year is not four digits")]
    InvalidExpiry,
    #[error("the card has expired")]
    Expired,
}

/// A card that passed every check. Holds the number and CVV for the processor; never stored.
#[derive(Clone)]
pub struct Card {
    digits: String,
    cvv: String,
    pub expiry: YearMonth,
    pub summary: CardSummary,
}

impl Card {
    /// Checks a card as a client sent it, in the order of [`CardError`]'s variants: number, CVV,
    /// expiry format, expiry date. `now` is the current month ([`YearMonth::now_utc`] outside tests).
    pub fn parse(
        number: &str,
        cvv: &str,
        expiration_year: i32,
        expiration_month: i32,
        now: YearMonth,
    ) -> Result<Card, CardError> {
        let digits = normalized_number(number).ok_or(CardError::InvalidNumber)?;
        if !(12..=19).contains(&digits.len()) || !luhn_valid(&digits) {
            return Err(CardError::InvalidNumber);
        }
        if !(3..=4).contains(&cvv.len()) || !cvv.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::InvalidCvv);
        }
        if !(1..=12).contains(&expiration_month) || !(2000..=9999).contains(&expiration_year) {
            return Err(CardError::InvalidExpiry);
        }
        let expiry = YearMonth {
            year: expiration_year,
            month: u8::try_from(expiration_month).map_err(|_| CardError::InvalidExpiry)?,
        };
        // Valid through the last day of its month.
        if expiry < now {
            return Err(CardError::Expired);
        }
        let summary = CardSummary::of(&digits);
        Ok(Card { digits, cvv: cvv.to_owned(), expiry, summary })
    }

    /// The number's digits, for the processor only.
    pub fn number(&self) -> &str {
        &self.digits
    }

    /// The CVV, for the processor only.
    pub fn cvv(&self) -> &str {
        &self.cvv
    }
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Card")
            .field("last4", &self.summary.last4)
            .field("brand", &self.summary.brand)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// The number's digits after removing spaces and dashes; `None` when anything else is in it.
pub fn normalized_number(number: &str) -> Option<String> {
    let mut digits = String::with_capacity(number.len());
    for c in number.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    Some(digits)
}

/// The Luhn checksum over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: YearMonth = YearMonth { year: 2026, month: 5 };

    /// A card as a client sends it: number, CVV, expiration year and month.
    type Form<'a> = (&'a str, &'a str, i32, i32);

    fn card<'a>(number: &'a str, cvv: &'a str, year: i32, month: i32) -> Form<'a> {
        (number, cvv, year, month)
    }

    fn validate((number, cvv, year, month): Form<'_>, now: YearMonth) -> Result<Card, CardError> {
        Card::parse(number, cvv, year, month, now)
    }

    fn check(number: &str) -> Result<Card, CardError> {
        validate(card(number, "123", 2030, 1), NOW)
    }

    /// A Luhn-valid number of `len` digits starting with `prefix`.
    fn luhn_number(prefix: &str, len: usize) -> String {
        let mut body: String = prefix.to_owned();
        while body.len() < len - 1 {
            body.push('0');
        }
        (0..10).map(|d| format!("{body}{d}")).find(|n| luhn_valid(n)).unwrap()
    }

    #[test]
    fn luhn_good_and_bad() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("4000000000000002"));
        assert!(luhn_valid("378282246310005"));
        assert!(luhn_valid("6011111111111117"));
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("41111111111a1111"));
        assert_eq!(check("4111111111111112").unwrap_err(), CardError::InvalidNumber);
        assert!(check("4111111111111111").is_ok());
    }

    #[test]
    fn spaces_and_dashes_are_ignored_and_nothing_else_is() {
        assert!(check("4111 1111 1111 1111").is_ok());
        assert!(check("4111-1111-1111-1111").is_ok());
        assert_eq!(check("4111.1111.1111.1111").unwrap_err(), CardError::InvalidNumber);
        assert_eq!(check("4111x111111111111").unwrap_err(), CardError::InvalidNumber);
        assert_eq!(check("").unwrap_err(), CardError::InvalidNumber);
        assert_eq!(check("   ").unwrap_err(), CardError::InvalidNumber);
    }

    #[test]
    fn lengths_11_12_19_20() {
        for (len, ok) in [(11, false), (12, true), (19, true), (20, false)] {
            let number = luhn_number("4", len);
            assert_eq!(number.len(), len);
            assert!(luhn_valid(&number));
            let result = check(&number);
            if ok {
                assert!(result.is_ok(), "{len} digits should pass");
            } else {
                assert_eq!(result.unwrap_err(), CardError::InvalidNumber, "{len} digits");
            }
        }
    }

    #[test]
    fn cvv_2_3_4_5_digits() {
        let v = |cvv: &str| validate(card("4111111111111111", cvv, 2030, 1), NOW);
        assert_eq!(v("12").unwrap_err(), CardError::InvalidCvv);
        assert!(v("123").is_ok());
        assert!(v("1234").is_ok());
        assert_eq!(v("12345").unwrap_err(), CardError::InvalidCvv);
        assert_eq!(v("12a").unwrap_err(), CardError::InvalidCvv);
        assert_eq!(v("").unwrap_err(), CardError::InvalidCvv);
        assert_eq!(v(" 123").unwrap_err(), CardError::InvalidCvv);
    }

    #[test]
    fn expiry_last_month_this_month_and_format() {
        let v = |year: i32, month: i32| validate(card("4111111111111111", "123", year, month), NOW);
        // Valid through the end of its month.
        assert!(v(2026, 5).is_ok(), "this month");
        assert!(v(2026, 6).is_ok());
        assert!(v(2027, 1).is_ok());
        assert_eq!(v(2026, 4).unwrap_err(), CardError::Expired, "last month");
        assert_eq!(v(2025, 12).unwrap_err(), CardError::Expired);
        // December rolls into January.
        assert_eq!(
            validate(card("4111111111111111", "123", 2025, 12), YearMonth { year: 2026, month: 1 })
                .unwrap_err(),
            CardError::Expired
        );
        assert!(
            validate(card("4111111111111111", "123", 2025, 12), YearMonth { year: 2025, month: 12 }).is_ok()
        );
        // Format.
        assert_eq!(v(2030, 0).unwrap_err(), CardError::InvalidExpiry);
        assert_eq!(v(2030, 13).unwrap_err(), CardError::InvalidExpiry);
        assert_eq!(v(2030, -1).unwrap_err(), CardError::InvalidExpiry);
        assert_eq!(v(30, 1).unwrap_err(), CardError::InvalidExpiry, "two-digit years are refused");
        assert_eq!(v(1999, 1).unwrap_err(), CardError::InvalidExpiry);
        assert_eq!(v(10000, 1).unwrap_err(), CardError::InvalidExpiry);
    }

    #[test]
    fn the_real_clock_is_used_for_now() {
        let now = YearMonth::now_utc();
        assert!(now.year >= 2024 && (1..=12).contains(&now.month), "{now:?}");
        let this_month = card("4111111111111111", "123", now.year, i32::from(now.month));
        assert!(validate(this_month, now).is_ok());
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        // A bad number wins over a bad CVV, which wins over a bad expiry.
        assert_eq!(validate(card("123", "1", 30, 13), NOW).unwrap_err(), CardError::InvalidNumber);
        assert_eq!(validate(card("4111111111111111", "1", 30, 13), NOW).unwrap_err(), CardError::InvalidCvv);
        assert_eq!(
            validate(card("4111111111111111", "123", 2020, 13), NOW).unwrap_err(),
            CardError::InvalidExpiry
        );
    }

    #[test]
    fn brands() {
        let cases = [
            ("4111111111111111", Brand::Visa),
            ("4000000000000002", Brand::Visa),
            ("5105105105105100", Brand::Mastercard),
            ("5555555555554444", Brand::Mastercard),
            ("2221000000000009", Brand::Mastercard),
            ("2720990000000000", Brand::Mastercard),
            ("2220990000000000", Brand::Unknown),
            ("2721000000000000", Brand::Unknown),
            ("5000000000000000", Brand::Unknown),
            ("5600000000000000", Brand::Unknown),
            ("378282246310005", Brand::Amex),
            ("341111111111111", Brand::Amex),
            ("351111111111111", Brand::Unknown),
            ("6011111111111117", Brand::Discover),
            ("6500000000000000", Brand::Discover),
            ("6440000000000000", Brand::Discover),
            ("6490000000000000", Brand::Discover),
            ("6430000000000000", Brand::Unknown),
            ("6012000000000000", Brand::Unknown),
            ("3530111333300000", Brand::Unknown),
            ("", Brand::Unknown),
        ];
        for (number, brand) in cases {
            assert_eq!(Brand::detect(number), brand, "{number}");
        }
        assert_eq!(Brand::Mastercard.as_str(), "mastercard");
        let valid = check("5555-5555-5555-4444").unwrap();
        assert_eq!(valid.summary, CardSummary { last4: "4444".into(), brand: Brand::Mastercard });
        assert_eq!(valid.number(), "5555555555554444");
    }

    #[test]
    fn summary_and_debug_keep_only_last4() {
        assert_eq!(CardSummary::of("12").last4, "");
        assert_eq!(CardSummary::of("4111 1111 1111 1234").last4, "1234");
        let valid = validate(card("4111 1111 1111 1111", "987", 2030, 7), NOW).unwrap();
        assert_eq!(valid.cvv(), "987");
        let shown = format!("{valid:?} {valid:#?}");
        assert!(shown.contains("1111") && shown.contains("Visa"), "{shown}");
        assert!(!shown.contains("41111"), "{shown}");
        assert!(!shown.contains("987"), "{shown}");
    }
}
