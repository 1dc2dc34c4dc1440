//! A checkout request, checked and reduced to what may be kept: the buyer's names, email and address
//! (parsed by mall-domain's rules, the same the order service applies), and a hash that identifies the
//! request without the card's number or CVV.

use mall_domain::{Address, Email, Invalid, UserId};
use mall_proto::checkout::v1 as pb;
use mall_proto::payment::v1::CreditCard;
use sha2::{Digest, Sha256};

use crate::CheckoutError;

/// Longest first or last name (the width of their columns).
const MAX_NAME: usize = 255;
pub const MAX_KEY: usize = 255;

/// A valid request, trimmed. The card is kept apart: it is handed to payment and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buyer {
    pub user_id: UserId,
    pub firstname: String,
    pub lastname: String,
    pub email: Email,
    pub address: Address,
    /// SHA-256 (hex) over the fields above and the card's last four digits and expiry.
    pub request_hash: String,
}

fn name(value: &str, field: &str) -> Result<String, CheckoutError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CheckoutError::InvalidArgument(format!("{field} is required")));
    }
    if value.chars().count() > MAX_NAME {
        return Err(CheckoutError::InvalidArgument(format!("{field} must be at most {MAX_NAME} characters")));
    }
    Ok(value.to_owned())
}

/// Checks a request (INVALID_ARGUMENT for anything missing or malformed) and returns the buyer and the
/// card.
pub fn check(req: &pb::CheckoutRequest) -> Result<(Buyer, &CreditCard), CheckoutError> {
    let user_id = UserId::new(req.user_id)?;
    if req.idempotency_key.chars().count() > MAX_KEY {
        return Err(CheckoutError::InvalidArgument(format!(
            "the idempotency key must be at most {MAX_KEY} characters"
        )));
    }
    let firstname = name(&req.firstname, "firstname")?;
    let lastname = name(&req.lastname, "lastname")?;
    let email = Email::parse(&req.email)?;
    let address = Address::try_from(req.address.as_ref().ok_or_else(|| Invalid::required("address"))?)?;
    let Some(card) = req.credit_card.as_ref() else {
        return Err(CheckoutError::InvalidArgument("credit_card is required".into()));
    };
    let request_hash = request_hash(&firstname, &lastname, &email, &address, card);
    Ok((Buyer { user_id, firstname, lastname, email, address, request_hash }, card))
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
    email: &Email,
    address: &Address,
    card: &CreditCard,
) -> String {
    let mut hasher = Sha256::new();
    let last4 = last4(&card.number);
    let expiry = format!("{}/{}", card.expiration_year, card.expiration_month);
    let [street_address, city, state, country, zip_code] = address.fields();
    for part in
        [firstname, lastname, email.as_str(), street_address, city, state, country, zip_code, &last4, &expiry]
    {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mall_proto::order::v1::Address;

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
    fn address_fields_follow_the_order_services_rule() {
        let mut at_limit = request();
        at_limit.address.as_mut().unwrap().street_address = "s".repeat(200);
        assert!(check(&at_limit).is_ok());
        let mut over = request();
        over.address.as_mut().unwrap().street_address = "s".repeat(201);
        match check(&over) {
            Err(CheckoutError::InvalidArgument(msg)) => {
                assert_eq!(msg, "address.street_address must be at most 200 characters (it has 201)");
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
        let mut shouting = request();
        shouting.email = " Ada@Example.COM ".into();
        assert_eq!(check(&shouting).unwrap().0.email.as_str(), "ada@example.com");
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
