//! Money at the edge: integer cents inside, `price` (a decimal string with two fractional digits) and
//! `price_cents` in JSON. Parsing is textual, never through floating point.

use mall_domain::Cents;
use serde_json::Value;

use crate::error::ApiError;

/// `1990` → `"19.90"`.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A `price` as the client sent it: a JSON string ("19.9", "19.90") or number (19.9), read as text by
/// [`Cents::parse_decimal`].
pub fn parse_price(value: &Value) -> Result<Cents, ApiError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ApiError::InvalidInput("price must be a decimal like \"19.90\"".into())),
    };
    Ok(Cents::parse_decimal(&text)?)
}

/// The price from a body that may carry `price`, `price_cents`, or both (then they must agree).
pub fn price_from(price: Option<&Value>, price_cents: Option<i64>) -> Result<Option<Cents>, ApiError> {
    let from_price = price.filter(|v| !v.is_null()).map(parse_price).transpose()?;
    let from_cents = price_cents.map(Cents::new).transpose()?;
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

    fn cents(value: Value) -> i64 {
        parse_price(&value).unwrap().get()
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(cents(json!("19.90")), 1990);
        assert_eq!(cents(json!("19.9")), 1990);
        assert_eq!(cents(json!("19")), 1900);
        assert_eq!(cents(json!(19.99)), 1999);
        assert_eq!(cents(json!(0.1)), 10);
        assert_eq!(cents(json!("1000000.00")), Cents::MAX);
        // 0.29 * 100 is 28.999999999999996 in floating point: text parsing gets it right.
        assert_eq!(cents(json!(0.29)), 29);
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
            assert!(matches!(parse_price(&bad), Err(ApiError::InvalidInput(_))), "{bad}");
        }
        assert_eq!(
            parse_price(&json!(-0.5)).unwrap_err(),
            ApiError::InvalidInput("price must not be negative".into())
        );
    }

    #[test]
    fn price_and_cents_must_agree() {
        let price = |cents| Ok(Some(Cents::new(cents).unwrap()));
        assert_eq!(price_from(Some(&json!("1.00")), Some(100)), price(100));
        assert!(price_from(Some(&json!("1.00")), Some(101)).is_err());
        assert_eq!(price_from(None, Some(5)), price(5));
        assert!(price_from(None, Some(-5)).is_err());
        assert!(price_from(None, Some(Cents::MAX + 1)).is_err());
        assert_eq!(price_from(Some(&Value::Null), None), Ok(None));
        assert_eq!(price_from(None, None), Ok(None));
    }
}
