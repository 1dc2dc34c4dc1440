//! A postal address, as checkout and the order service take it.

use crate::{Invalid, Problem};

/// Longest address field, in characters (the width of the order service's columns).
pub const MAX_ADDRESS_FIELD: usize = 200;

/// An address with every field trimmed; street_address, city, country and zip_code non-empty, state
/// possibly empty; each at most [`MAX_ADDRESS_FIELD`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    street_address: String,
    city: String,
    state: String,
    country: String,
    zip_code: String,
}

impl Address {
    /// Checks the fields in this order; the first refusal names its field (`address.city`, ...).
    pub fn parse(
        street_address: &str,
        city: &str,
        state: &str,
        country: &str,
        zip_code: &str,
    ) -> Result<Address, Invalid> {
        Ok(Address {
            street_address: field("address.street_address", street_address, true)?,
            city: field("address.city", city, true)?,
            state: field("address.state", state, false)?,
            country: field("address.country", country, true)?,
            zip_code: field("address.zip_code", zip_code, true)?,
        })
    }

    pub fn street_address(&self) -> &str {
        &self.street_address
    }

    pub fn city(&self) -> &str {
        &self.city
    }

    /// Empty when none was given.
    pub fn state(&self) -> &str {
        &self.state
    }

    pub fn country(&self) -> &str {
        &self.country
    }

    /// Text, so leading zeros stay.
    pub fn zip_code(&self) -> &str {
        &self.zip_code
    }

    /// The five fields in the order of [`Address::parse`].
    pub fn fields(&self) -> [&str; 5] {
        [&self.street_address, &self.city, &self.state, &self.country, &self.zip_code]
    }
}

fn field(name: &'static str, raw: &str, required: bool) -> Result<String, Invalid> {
    let value = raw.trim();
    if required && value.is_empty() {
        return Err(Invalid::required(name));
    }
    let got = value.chars().count();
    if got > MAX_ADDRESS_FIELD {
        return Err(Invalid::new(name, Problem::TooLong { max: MAX_ADDRESS_FIELD, got }));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: [&str; 5]) -> Result<Address, Invalid> {
        let [street, city, state, country, zip] = fields;
        Address::parse(street, city, state, country, zip)
    }

    const OK: [&str; 5] = [" 1 Main St ", "Springfield", "", "US", "01234"];

    fn with(i: usize, value: &str) -> [String; 5] {
        let mut fields = OK.map(str::to_owned);
        fields[i] = value.to_owned();
        fields
    }

    fn refused(fields: [String; 5]) -> String {
        parse(fields.each_ref().map(String::as_str)).expect_err("refused").to_string()
    }

    #[test]
    fn valid_fields_are_trimmed_and_state_may_be_empty() {
        let a = parse(OK).unwrap();
        assert_eq!(a.street_address(), "1 Main St");
        assert_eq!((a.city(), a.state(), a.country()), ("Springfield", "", "US"));
        assert_eq!(a.zip_code(), "01234", "zip codes keep their leading zeros");
        assert_eq!(a.fields(), ["1 Main St", "Springfield", "", "US", "01234"]);
        assert_eq!(parse([" a ", " b ", " IL ", " c ", " d "]).unwrap().state(), "IL");
    }

    #[test]
    fn each_field_holds_200_characters_and_not_201() {
        for i in 0..5 {
            let fits = with(i, &"é".repeat(200));
            assert!(parse(fits.each_ref().map(String::as_str)).is_ok(), "field {i}: characters, not bytes");
            let padded = with(i, &format!("  {}  ", "x".repeat(200)));
            assert!(
                parse(padded.each_ref().map(String::as_str)).is_ok(),
                "field {i}: counted after trimming"
            );
        }
        let names = ["street_address", "city", "state", "country", "zip_code"];
        for (i, name) in names.iter().enumerate() {
            assert_eq!(
                refused(with(i, &"x".repeat(201))),
                format!("address.{name} must be at most 200 characters (it has 201)")
            );
        }
    }

    #[test]
    fn required_fields_must_not_be_blank() {
        for (i, name) in [(0, "street_address"), (1, "city"), (3, "country"), (4, "zip_code")] {
            assert_eq!(refused(with(i, " \t ")), format!("address.{name} is required"));
            assert_eq!(refused(with(i, "")), format!("address.{name} is required"));
        }
        // The first bad field in order is the one named.
        let mut two_bad = with(1, "");
        two_bad[4] = String::new();
        assert_eq!(refused(two_bad), "address.city is required");
    }
}
