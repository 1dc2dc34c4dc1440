//! Money at the edge: integer cents inside, `price` (a decimal string with two fractional digits) and
//! `price_cents` in JSON. Parsing is textual, never through floating point.

use serde_json::Value;

use crate::error::ApiError;

/// The largest price the shop takes: 1,000,000.00.
pub const MAX_CENTS: i64 = 100_000_000;

/// `1990` → `"19.90"`.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A `price` as the client sent it: a JSON string ("19.9", "19.90") or number (19.9), read as text.
pub fn parse_price(value: &Value) -> Result<i64, ApiError> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ApiError::InvalidInput("price must be a decimal like \"19.90\"".into())),
    };
    let bad = || ApiError::InvalidInput(format!("price {text:?} is not a decimal like \"19.90\""));
    if text.starts_with('-') {
        return Err(ApiError::InvalidInput("price must not be negative".into()));
    }
    let (units, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if fraction.len() > 2 {
        return Err(ApiError::InvalidInput(format!("price {text:?} has more than two decimals")));
    }
    if text.ends_with('.') {
        return Err(bad());
    }
    let units: i64 = units.parse().map_err(|_| too_large())?;
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    let cents = units.checked_mul(100).and_then(|c| c.checked_add(fraction)).ok_or_else(too_large)?;
    check_cents(cents)
}

fn too_large() -> ApiError {
    ApiError::InvalidInput(format!("price must be at most {}", format_cents(MAX_CENTS)))
}

/// A price in cents within 0..=1,000,000.00.
pub fn check_cents(cents: i64) -> Result<i64, ApiError> {
    if cents < 0 {
        return Err(ApiError::InvalidInput("price must not be negative".into()));
    }
    if cents > MAX_CENTS {
        return Err(too_large());
    }
    Ok(cents)
}

/// The price from a body that may carry `price`, `price_cents`, or both (then they must agree).
pub fn price_from(price: Option<&Value>, price_cents: Option<i64>) -> Result<Option<i64>, ApiError> {
    let from_price = price.filter(|v| !v.is_null()).map(parse_price).transpose()?;
    let from_cents = price_cents.map(check_cents).transpose()?;
    match (from_price, from_cents) {
        (Some(a), Some(b)) if a != b => {
            Err(ApiError::InvalidInput("price and price_cents disagree: give one of them".into()))
        }
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cents_format_with_two_decimals() {
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(1990), "19.90");
        assert_eq!(format_cents(100_000_000), "1000000.00");
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(parse_price(&json!("19.90")), Ok(1990));
        assert_eq!(parse_price(&json!("19.9")), Ok(1990));
        assert_eq!(parse_price(&json!("19")), Ok(1900));
        assert_eq!(parse_price(&json!(19.99)), Ok(1999));
        assert_eq!(parse_price(&json!(0.1)), Ok(10));
        assert_eq!(parse_price(&json!("1000000.00")), Ok(MAX_CENTS));
        // 0.29 * 100 is 28.999999999999996 in floating point: text parsing gets it right.
        assert_eq!(parse_price(&json!(0.29)), Ok(29));
    }

    #[test]
    fn bad_prices_are_refused() {
        for bad in [
            json!("19.999"),
            json!(1.005),
            json!("-1"),
            json!(-0.5),
            json!("1000000.01"),
            json!("abc"),
            json!(""),
            json!("1."),
            json!(".5"),
            json!("1e3"),
            json!(true),
            json!("99999999999999999999"),
        ] {
            assert!(parse_price(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn price_and_cents_must_agree() {
        assert_eq!(price_from(Some(&json!("1.00")), Some(100)), Ok(Some(100)));
        assert!(price_from(Some(&json!("1.00")), Some(101)).is_err());
        assert_eq!(price_from(None, Some(5)), Ok(Some(5)));
        assert!(price_from(None, Some(-5)).is_err());
        assert_eq!(price_from(None, None), Ok(None));
    }
}
