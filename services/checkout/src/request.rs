//! A checkout request, checked and reduced to what may be kept: the buyer's names, email and address,
//! and a hash that identifies the request without the card's number or CVV.

use mall_proto::checkout::v1 as pb;
use mall_proto::order::v1::Address;
use mall_proto::payment::v1::CreditCard;
use sha2::{Digest, Sha256};

use crate::CheckoutError;

const MAX_FIELD: usize = 255;
const MAX_EMAIL: usize = 254;
pub const MAX_KEY: usize = 255;

/// A valid request, trimmed. The card is kept apart: it is handed to payment and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buyer {
    pub user_id: i64,
    pub firstname: String,
    pub lastname: String,
    pub email: String,
    pub address: Address,
    /// SHA-256 (hex) over the fields above and the card's last four digits and expiry.
    pub request_hash: String,
}

fn field(value: &str, name: &str, required: bool) -> Result<String, CheckoutError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(CheckoutError::InvalidArgument(format!("{name} is required")));
    }
    if value.chars().count() > MAX_FIELD {
        return Err(CheckoutError::InvalidArgument(format!("{name} must be at most {MAX_FIELD} characters")));
    }
    Ok(value.to_owned())
}

/// A plausible address: one `@`, something before it, a dotted domain after it, no spaces.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && email.len() <= MAX_EMAIL
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Checks a request (INVALID_ARGUMENT for anything missing or malformed) and returns the buyer and the
/// card.
pub fn check(req: &pb::CheckoutRequest) -> Result<(Buyer, &CreditCard), CheckoutError> {
    if req.user_id <= 0 {
        return Err(CheckoutError::InvalidArgument("user_id must be positive".into()));
    }
    if req.idempotency_key.chars().count() > MAX_KEY {
        return Err(CheckoutError::InvalidArgument(format!(
            "the idempotency key must be at most {MAX_KEY} characters"
        )));
    }
    let firstname = field(&req.firstname, "firstname", true)?;
    let lastname = field(&req.lastname, "lastname", true)?;
    let email = req.email.trim().to_owned();
    if !valid_email(&email) {
        return Err(CheckoutError::InvalidArgument("email is not a valid address".into()));
    }
    let Some(given) = req.address.as_ref() else {
        return Err(CheckoutError::InvalidArgument("address is required".into()));
    };
    let address = Address {
        street_address: field(&given.street_address, "address.street_address", true)?,
        city: field(&given.city, "address.city", true)?,
        state: field(&given.state, "address.state", false)?,
        country: field(&given.country, "address.country", true)?,
        zip_code: field(&given.zip_code, "address.zip_code", true)?,
    };
    let Some(card) = req.credit_card.as_ref() else {
        return Err(CheckoutError::InvalidArgument("credit_card is required".into()));
    };
    let request_hash = request_hash(&firstname, &lastname, &email, &address, card);
    Ok((Buyer { user_id: req.user_id, firstname, lastname, email, address, request_hash }, card))
}

/// The last four digits of the card number (fewer if it has fewer).
fn last4(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

/// Every field is length-prefixed, so no two different requests can be framed alike.
fn request_hash(
    firstname: &str,
    lastname: &str,
    email: &str,
    address: &Address,
    card: &CreditCard,
) -> String {
    let mut hasher = Sha256::new();
    let last4 = last4(&card.number);
    let expiry = format!("{}/{}", card.expiration_year, card.expiration_month);
    for part in [
        firstname,
        lastname,
        email,
        &address.street_address,
        &address.city,
        &address.state,
        &address.country,
        &address.zip_code,
        &last4,
        &expiry,
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::CheckoutRequest {
        pb::CheckoutRequest {
            user_id: 1,
            idempotency_key: String::new(),
            firstname: " Ada ".into(),
            lastname: "Lovelace".into(),
            email: "ada@example.com".into(),
            address: Some(Address {
                street_address: "1 Main St".into(),
                city: "London".into(),
                state: String::new(),
                country: "UK".into(),
                zip_code: "N1 9GU".into(),
            }),
            credit_card: Some(CreditCard {
                number: "4111 1111 1111 1111".into(),
                cvv: "123".into(),
                expiration_year: 2030,
                expiration_month: 1,
            }),
        }
    }

    #[test]
    fn checks_trims_and_hashes_without_the_number_or_cvv() {
        let req = request();
        let (buyer, _) = check(&req).unwrap();
        assert_eq!(buyer.firstname, "Ada");
        assert_eq!(buyer.request_hash.len(), 64);

        // Another number with the same last four, another CVV: the same request.
        let mut same = request();
        let card = same.credit_card.as_mut().unwrap();
        card.number = "5555-5555-5555-1111".into();
        card.cvv = "999".into();
        assert_eq!(check(&same).unwrap().0.request_hash, buyer.request_hash);

        let mut other = request();
        other.credit_card.as_mut().unwrap().expiration_month = 2;
        assert_ne!(check(&other).unwrap().0.request_hash, buyer.request_hash);
        let mut other = request();
        other.address.as_mut().unwrap().zip_code = "N1 9GV".into();
        assert_ne!(check(&other).unwrap().0.request_hash, buyer.request_hash);
        let mut other = request();
        other.credit_card.as_mut().unwrap().number = "4111 1111 1111 1112".into();
        assert_ne!(check(&other).unwrap().0.request_hash, buyer.request_hash);
        // Framing: moving a character between fields changes the hash.
        let mut other = request();
        other.firstname = "Ad".into();
        other.lastname = "aLovelace".into();
        assert_ne!(check(&other).unwrap().0.request_hash, buyer.request_hash);
    }

    #[test]
    fn refuses_incomplete_requests() {
        type Spoil = Box<dyn Fn(&mut pb::CheckoutRequest)>;
        let bad: Vec<Spoil> = vec![
            Box::new(|r| r.user_id = 0),
            Box::new(|r| r.firstname = "  ".into()),
            Box::new(|r| r.lastname = String::new()),
            Box::new(|r| r.email = "not-an-email".into()),
            Box::new(|r| r.email = "a@b".into()),
            Box::new(|r| r.email = "a b@example.com".into()),
            Box::new(|r| r.address = None),
            Box::new(|r| r.address.as_mut().unwrap().city = String::new()),
            Box::new(|r| r.address.as_mut().unwrap().zip_code = " ".into()),
            Box::new(|r| r.credit_card = None),
            Box::new(|r| r.firstname = "x".repeat(256)),
            Box::new(|r| r.idempotency_key = "k".repeat(256)),
        ];
        for (i, spoil) in bad.iter().enumerate() {
            let mut req = request();
            spoil(&mut req);
            assert!(matches!(check(&req), Err(CheckoutError::InvalidArgument(_))), "case {i}");
        }
        let mut no_state = request();
        no_state.address.as_mut().unwrap().state = String::new();
        assert!(check(&no_state).is_ok(), "state may be empty");
    }

    #[test]
    fn last_four() {
        assert_eq!(last4("4111 1111 1111 1234"), "1234");
        assert_eq!(last4("12"), "12");
        assert_eq!(last4(""), "");
    }
}
