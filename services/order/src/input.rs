//! Requests parsed once at the edge: PlaceOrder's input into mall-domain's types (the user, a valid
//! email, an address, product ids), with lines merged, and the hashes that idempotency compares; the
//! pages and the status filter of the lists.

use std::collections::BTreeMap;

use mall_domain::{Address, Email, Invalid, OrderStatus, ProductId, UserId};
use mall_proto::order::v1 as pb;
use sha2::{Digest, Sha256};

use crate::OrderError;

/// Most units of one product an order may hold.
pub const MAX_QUANTITY: i64 = 999;
/// Most distinct products in one order (also what BatchGetProducts answers in one call).
pub const MAX_PRODUCTS: usize = 100;
/// Page size when the caller gives 0, and the largest allowed.
const DEFAULT_PAGE_SIZE: i32 = 20;
const MAX_PAGE_SIZE: i32 = 100;

/// A page of a list (ListOrders, ListAllOrders), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: i32,
    pub page_size: i32,
}

impl Page {
    /// `page` from 1 and `page_size` 1–100; 0 in either means the default (page 1, 20 per page).
    pub fn parse(page: i32, page_size: i32) -> Result<Page, OrderError> {
        let page = match page {
            0 => 1,
            p if p > 0 => p,
            p => return Err(OrderError::InvalidArgument(format!("page must be 1 or more, got {p}"))),
        };
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            s if (1..=MAX_PAGE_SIZE).contains(&s) => s,
            s => {
                return Err(OrderError::InvalidArgument(format!(
                    "page_size must be between 1 and {MAX_PAGE_SIZE}, got {s}"
                )));
            }
        };
        Ok(Page { page, page_size })
    }

    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }

    pub fn offset(self) -> i64 {
        (i64::from(self.page) - 1) * i64::from(self.page_size)
    }
}

/// A list's optional status filter: absent means every status; a given status must be a real one
/// (not UNSPECIFIED, not a number this version does not know).
pub fn status_filter(raw: Option<i32>) -> Result<Option<OrderStatus>, OrderError> {
    let Some(raw) = raw else { return Ok(None) };
    let refused = |given: &str| {
        OrderError::InvalidArgument(format!(
            "status must be ORDER_STATUS_PENDING, ORDER_STATUS_PAID or ORDER_STATUS_CANCELLED when given, \
             got {given}"
        ))
    };
    let given = pb::OrderStatus::try_from(raw).map_err(|_| refused(&raw.to_string()))?;
    let status = OrderStatus::try_from(given).map_err(|_| refused(given.as_str_name()))?;
    Ok(Some(status))
}

/// A request to place an order, validated: lines merged by product and ordered by product id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: UserId,
    pub email: Email,
    pub address: Address,
    /// (product_id, quantity), ascending by product_id, each product once.
    pub lines: Vec<(ProductId, i64)>,
    /// The client's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
}

impl NewOrder {
    pub fn parse(req: pb::PlaceOrderRequest) -> Result<NewOrder, OrderError> {
        let user_id = UserId::new(req.user_id)?;
        let email = Email::parse(&req.email)?;
        let address = Address::try_from(req.address.as_ref().ok_or_else(|| Invalid::required("address"))?)?;
        if req.items.is_empty() {
            return Err(OrderError::InvalidArgument("an order needs at least one item".into()));
        }
        let mut merged: BTreeMap<ProductId, i64> = BTreeMap::new();
        for item in &req.items {
            let product_id = ProductId::new(item.product_id)?;
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(quantity_error(product_id, item.quantity));
            }
            *merged.entry(product_id).or_insert(0) += item.quantity;
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
            user_id,
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
        put(self.email.as_str());
        for f in self.address.fields() {
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

fn quantity_error(product_id: ProductId, quantity: i64) -> OrderError {
    OrderError::InvalidArgument(format!(
        "quantity of product {product_id} must be between 1 and {MAX_QUANTITY}, got {quantity}"
    ))
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
    fn merges_and_sorts_lines_and_trims() {
        let order = NewOrder::parse(request(&[(5, 2), (3, 1), (5, 4)])).unwrap();
        let id = |n| ProductId::new(n).unwrap();
        assert_eq!(order.lines, [(id(3), 1), (id(5), 6)]);
        assert_eq!(order.email.as_str(), "a@example.com");
        assert_eq!(order.address.street_address(), "1 Main St");
        assert_eq!(order.address.zip_code(), "01234", "zip codes keep their leading zeros");
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
        assert_eq!(invalid(r), "user_id must be positive, got 0");
        let mut r = request(&[(1, 1)]);
        r.email = "nope".into();
        assert_eq!(invalid(r), "email is not valid: it has no @");
        let mut r = request(&[(1, 1)]);
        r.address = None;
        assert_eq!(invalid(r), "address is required");
        assert_eq!(invalid(request(&[(2, 1), (0, 1)])), "product_id must be positive, got 0");
        for (name, clear) in [
            ("street_address", (|a: &mut pb::Address| a.street_address = " ".into()) as fn(&mut pb::Address)),
            ("city", |a| a.city.clear()),
            ("country", |a| a.country.clear()),
            ("zip_code", |a| a.zip_code.clear()),
        ] {
            let mut r = request(&[(1, 1)]);
            clear(r.address.as_mut().unwrap());
            assert_eq!(invalid(r), format!("address.{name} is required"));
        }
        let mut r = request(&[(1, 1)]);
        r.address.as_mut().unwrap().city = "c".repeat(201);
        assert_eq!(invalid(r), "address.city must be at most 200 characters (it has 201)");
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
    fn pages() {
        assert_eq!(Page::parse(0, 0).unwrap(), Page { page: 1, page_size: 20 });
        let p = Page::parse(3, 100).unwrap();
        assert_eq!((p.page, p.page_size, p.limit(), p.offset()), (3, 100, 100, 200));
        assert_eq!(Page::parse(i32::MAX, 100).unwrap().offset(), (i64::from(i32::MAX) - 1) * 100);
        let invalid = |page, page_size| match Page::parse(page, page_size) {
            Err(OrderError::InvalidArgument(msg)) => msg,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        };
        assert_eq!(invalid(-1, 10), "page must be 1 or more, got -1");
        assert_eq!(invalid(1, -1), "page_size must be between 1 and 100, got -1");
        assert_eq!(invalid(1, 101), "page_size must be between 1 and 100, got 101");
    }

    #[test]
    fn status_filters() {
        assert_eq!(status_filter(None).unwrap(), None);
        for (given, wanted) in [
            (pb::OrderStatus::Pending, OrderStatus::Pending),
            (pb::OrderStatus::Paid, OrderStatus::Paid),
            (pb::OrderStatus::Cancelled, OrderStatus::Cancelled),
        ] {
            assert_eq!(status_filter(Some(given.into())).unwrap(), Some(wanted));
        }
        for (raw, named) in [(0, "ORDER_STATUS_UNSPECIFIED"), (42, "42"), (-1, "-1")] {
            match status_filter(Some(raw)) {
                Err(OrderError::InvalidArgument(msg)) => {
                    assert!(msg.starts_with("status must be"), "{msg}");
                    assert!(msg.ends_with(&format!("got {named}")), "{msg}");
                }
                other => panic!("expected INVALID_ARGUMENT for {raw}, got {other:?}"),
            }
        }
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
