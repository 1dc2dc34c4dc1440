//! PlaceOrder's input, validated once at the edge: a plausible email, a complete address, merged lines,
//! and the hashes that idempotency compares.

use std::collections::BTreeMap;

use mall_proto::order::v1 as pb;
use sha2::{Digest, Sha256};

use crate::OrderError;

/// Most units of one product an order may hold.
pub const MAX_QUANTITY: i64 = 999;
/// Most distinct products in one order (also what BatchGetProducts answers in one call).
pub const MAX_PRODUCTS: usize = 100;
/// Longest address field, in characters.
pub const MAX_ADDRESS_FIELD: usize = 200;
/// Longest email, in characters (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

/// A postal address with every field trimmed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub street_address: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub zip_code: String,
}

impl Address {
    /// street_address, city, country and zip_code are required; state may be empty; each at most 200
    /// characters after trimming.
    pub fn parse(address: Option<pb::Address>) -> Result<Address, OrderError> {
        let a = address.ok_or_else(|| OrderError::InvalidArgument("address is required".into()))?;
        Ok(Address {
            street_address: field("street_address", &a.street_address, true)?,
            city: field("city", &a.city, true)?,
            state: field("state", &a.state, false)?,
            country: field("country", &a.country, true)?,
            zip_code: field("zip_code", &a.zip_code, true)?,
        })
    }

    pub fn to_proto(&self) -> pb::Address {
        pb::Address {
            street_address: self.street_address.clone(),
            city: self.city.clone(),
            state: self.state.clone(),
            country: self.country.clone(),
            zip_code: self.zip_code.clone(),
        }
    }
}

fn field(name: &str, value: &str, required: bool) -> Result<String, OrderError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(OrderError::InvalidArgument(format!("address.{name} is required")));
    }
    if value.chars().count() > MAX_ADDRESS_FIELD {
        return Err(OrderError::InvalidArgument(format!(
            "address.{name} is longer than {MAX_ADDRESS_FIELD} characters"
        )));
    }
    Ok(value.to_owned())
}

/// A trimmed email that looks deliverable: `local@domain.tld`, no spaces or control characters.
pub fn parse_email(email: &str) -> Result<String, OrderError> {
    let email = email.trim();
    if email.is_empty() {
        return Err(OrderError::InvalidArgument("email is required".into()));
    }
    let invalid = || OrderError::InvalidArgument(format!("email {email:?} is not a valid address"));
    if email.chars().count() > MAX_EMAIL {
        return Err(OrderError::InvalidArgument(format!("email is longer than {MAX_EMAIL} characters")));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    let labels: Vec<&str> = domain.split('.').collect();
    let plausible = !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if plausible { Ok(email.to_owned()) } else { Err(invalid()) }
}

/// A request to place an order, validated: lines merged by product and ordered by product id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: i64,
    pub email: String,
    pub address: Address,
    /// (product_id, quantity), ascending by product_id, each product once.
    pub lines: Vec<(i64, i64)>,
    /// The client's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
}

impl NewOrder {
    pub fn parse(req: pb::PlaceOrderRequest) -> Result<NewOrder, OrderError> {
        check_user(req.user_id)?;
        let email = parse_email(&req.email)?;
        let address = Address::parse(req.address)?;
        if req.items.is_empty() {
            return Err(OrderError::InvalidArgument("an order needs at least one item".into()));
        }
        let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
        for item in &req.items {
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(quantity_error(item.product_id, item.quantity));
            }
            *merged.entry(item.product_id).or_insert(0) += item.quantity;
        }
        if merged.len() > MAX_PRODUCTS {
            return Err(OrderError::InvalidArgument(format!(
                "an order holds at most {MAX_PRODUCTS} different products, got {}",
                merged.len()
            )));
        }
        if let Some((&product_id, &quantity)) = merged.iter().find(|&(_, &q)| q > MAX_QUANTITY) {
            return Err(quantity_error(product_id, quantity));
        }
        let key = req.idempotency_key.trim();
        Ok(NewOrder {
            user_id: req.user_id,
            email,
            address,
            lines: merged.into_iter().collect(),
            idempotency_key: (!key.is_empty()).then(|| key.to_owned()),
        })
    }

    /// SHA-256 (hex) of what the order asks for: email, address and merged lines. Two requests with
    /// the same key are the same request exactly when these hashes are equal.
    pub fn request_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            // Length-prefixed, so no two different field lists hash the same bytes.
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        put("mall.order.v1/place");
        put(&self.email);
        let a = &self.address;
        for f in [&a.street_address, &a.city, &a.state, &a.country, &a.zip_code] {
            put(f);
        }
        for (product_id, quantity) in &self.lines {
            put(&format!("{product_id}x{quantity}"));
        }
        hex(&h.finalize())
    }

    /// SHA-256 (hex) of the idempotency key, which is what the database keeps (any length fits).
    pub fn key_hash(&self) -> Option<String> {
        self.idempotency_key.as_deref().map(|k| hex(&Sha256::digest(k.as_bytes())))
    }
}

fn quantity_error(product_id: i64, quantity: i64) -> OrderError {
    OrderError::InvalidArgument(format!(
        "quantity of product {product_id} must be between 1 and {MAX_QUANTITY}, got {quantity}"
    ))
}

pub fn check_user(user_id: i64) -> Result<(), OrderError> {
    if user_id <= 0 {
        return Err(OrderError::InvalidArgument(format!("user_id must be positive, got {user_id}")));
    }
    Ok(())
}

/// An order id as the caller gave it: required (an unknown one is NOT_FOUND later).
pub fn check_order_id(order_id: &str) -> Result<&str, OrderError> {
    let order_id = order_id.trim();
    if order_id.is_empty() {
        return Err(OrderError::InvalidArgument("order_id is required".into()));
    }
    Ok(order_id)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> pb::Address {
        pb::Address {
            street_address: " 1 Main St ".into(),
            city: "Springfield".into(),
            state: String::new(),
            country: "US".into(),
            zip_code: "01234".into(),
        }
    }

    fn request(items: &[(i64, i64)]) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            user_id: 1,
            email: " a@example.com ".into(),
            address: Some(address()),
            items: items
                .iter()
                .map(|&(product_id, quantity)| pb::OrderLine { product_id, quantity })
                .collect(),
            idempotency_key: String::new(),
        }
    }

    fn invalid(req: pb::PlaceOrderRequest) -> String {
        match NewOrder::parse(req) {
            Err(OrderError::InvalidArgument(msg)) => msg,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@example.com", "first.last+tag@sub.example.co.uk", "x@a-b.io"] {
            assert_eq!(parse_email(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "  ",
            "a",
            "a@",
            "@example.com",
            "a@example",
            "a b@example.com",
            "a@exa mple.com",
            "a@.com",
            "a@example..com",
            "a@-x.com",
            "a@@example.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn merges_and_sorts_lines_and_trims() {
        let order = NewOrder::parse(request(&[(5, 2), (3, 1), (5, 4)])).unwrap();
        assert_eq!(order.lines, [(3, 1), (5, 6)]);
        assert_eq!(order.email, "a@example.com");
        assert_eq!(order.address.street_address, "1 Main St");
        assert_eq!(order.address.zip_code, "01234", "zip codes keep their leading zeros");
        assert_eq!(order.idempotency_key, None);
    }

    #[test]
    fn refuses_bad_requests() {
        assert!(invalid(request(&[])).contains("at least one item"));
        assert!(invalid(request(&[(1, 0)])).contains("between 1 and 999"));
        assert!(invalid(request(&[(1, 1000)])).contains("between 1 and 999"));
        assert!(invalid(request(&[(1, -3)])).contains("between 1 and 999"));
        assert!(invalid(request(&[(1, 500), (1, 500)])).contains("product 1"), "merged lines are checked");
        let many: Vec<(i64, i64)> = (1..=101).map(|id| (id, 1)).collect();
        assert!(invalid(request(&many)).contains("at most 100"));
        assert!(NewOrder::parse(request(&many[..100])).is_ok());

        let mut r = request(&[(1, 1)]);
        r.user_id = 0;
        assert!(invalid(r).contains("user_id"));
        let mut r = request(&[(1, 1)]);
        r.email = "nope".into();
        assert!(invalid(r).contains("email"));
        let mut r = request(&[(1, 1)]);
        r.address = None;
        assert!(invalid(r).contains("address"));
        for (name, clear) in [
            ("street_address", (|a: &mut pb::Address| a.street_address = " ".into()) as fn(&mut pb::Address)),
            ("city", |a| a.city.clear()),
            ("country", |a| a.country.clear()),
            ("zip_code", |a| a.zip_code.clear()),
        ] {
            let mut r = request(&[(1, 1)]);
            clear(r.address.as_mut().unwrap());
            assert!(invalid(r).contains(name), "{name}");
        }
        let mut r = request(&[(1, 1)]);
        r.address.as_mut().unwrap().city = "c".repeat(201);
        assert!(invalid(r).contains("longer than 200"));
        let mut r = request(&[(1, 1)]);
        r.address.as_mut().unwrap().city = "é".repeat(200);
        assert!(NewOrder::parse(r).is_ok(), "the limit counts characters, not bytes");
    }

    #[test]
    fn request_hash_ignores_line_order_and_splitting_but_not_content() {
        let a = NewOrder::parse(request(&[(5, 2), (3, 1), (5, 4)])).unwrap();
        let b = NewOrder::parse(request(&[(3, 1), (5, 6)])).unwrap();
        assert_eq!(a.request_hash(), b.request_hash());
        let c = NewOrder::parse(request(&[(3, 1), (5, 5)])).unwrap();
        assert_ne!(a.request_hash(), c.request_hash());
        let mut d = request(&[(3, 1), (5, 6)]);
        d.address.as_mut().unwrap().state = "IL".into();
        assert_ne!(a.request_hash(), NewOrder::parse(d).unwrap().request_hash());
        let mut e = request(&[(3, 1), (5, 6)]);
        e.email = "b@example.com".into();
        assert_ne!(a.request_hash(), NewOrder::parse(e).unwrap().request_hash());
        assert_eq!(a.request_hash().len(), 64);
    }

    #[test]
    fn key_hash() {
        let mut r = request(&[(1, 1)]);
        r.idempotency_key = "  ".into();
        assert_eq!(NewOrder::parse(r.clone()).unwrap().key_hash(), None);
        r.idempotency_key = "k-1".into();
        let h = NewOrder::parse(r).unwrap().key_hash().unwrap();
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
