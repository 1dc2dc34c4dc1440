//! Which gRPC methods a [`crate::PeerChannel`] may send again after an attempt whose effect is unknown
//! (the peer answered UNAVAILABLE, or the connection broke after the request left). A call that never
//! left (its connection could not be made) is sent again whatever its method: nothing happened yet.
//!
//! Decided per method from its contract in `proto/` and its handler. A method missing here is never
//! repeated; `tests::every_method_in_the_protos_is_decided` makes sure each new rpc gets a decision.

/// Methods whose second execution leaves the same state as the first, grouped by why.
const RETRY_SAFE: &[&str] = &[
    // Reads: they change nothing.
    "/grpc.health.v1.Health/Check",
    "/mall.auth.v1.AuthService/VerifyToken",
    "/mall.auth.v1.AuthService/ListPublicKeys",
    "/mall.user.v1.UserService/Login",
    "/mall.user.v1.UserService/GetUser",
    "/mall.product.v1.ProductService/GetProduct",
    "/mall.product.v1.ProductService/BatchGetProducts",
    "/mall.product.v1.ProductService/ListProducts",
    "/mall.product.v1.ProductService/SearchProducts",
    "/mall.product.v1.ProductService/ListCategories",
    "/mall.cart.v1.CartService/GetCart",
    "/mall.order.v1.OrderService/ListOrders",
    "/mall.order.v1.OrderService/ListAllOrders",
    "/mall.order.v1.OrderService/GetOrder",
    "/mall.payment.v1.PaymentService/GetPayment",
    "/mall.checkout.v1.CheckoutService/GetCheckout",
    // Stores nothing: a token is signed and returned; a second one is simply never used.
    "/mall.auth.v1.AuthService/IssueToken",
    // Idempotent by design: they move a thing to a final state, and doing it again finds it there and
    // succeeds (revoked, deleted, cancelled, emptied, paid with this transaction, released).
    "/mall.auth.v1.AuthService/RevokeToken",
    "/mall.product.v1.ProductService/DeleteProduct",
    "/mall.product.v1.ProductService/ReleaseStock",
    "/mall.cart.v1.CartService/EmptyCart",
    // SetItem writes an absolute quantity and RemoveItem takes a line out: again, the same line.
    "/mall.cart.v1.CartService/SetItem",
    "/mall.cart.v1.CartService/RemoveItem",
    "/mall.order.v1.OrderService/CancelOrder",
    "/mall.order.v1.OrderService/MarkPaid",
    // Keyed by the order: ReserveStock takes an order's stock at most once and replays that reservation;
    // Charge has at most one success per order (a claim row under a UNIQUE index) and replays it, so
    // a repeat can never charge twice (a repeated decline only records another declined attempt).
    "/mall.product.v1.ProductService/ReserveStock",
    "/mall.payment.v1.PaymentService/Charge",
];

/// Methods that are never repeated after an attempt with an unknown effect, and why.
#[cfg(test)]
const NOT_RETRY_SAFE: &[(&str, &str)] = &[
    ("/mall.user.v1.UserService/Register", "a repeat after a lost success answers ALREADY_EXISTS"),
    ("/mall.product.v1.ProductService/CreateProduct", "each call creates another product"),
    (
        "/mall.product.v1.ProductService/UpdateProduct",
        "sets stock absolutely: a repeat after a reservation would undo that reservation's take",
    ),
    ("/mall.cart.v1.CartService/AddItem", "adds to the quantity already there"),
    ("/mall.order.v1.OrderService/PlaceOrder", "without an idempotency key each call places an order"),
    ("/mall.checkout.v1.CheckoutService/Checkout", "without an idempotency key each call is a new checkout"),
];

/// Whether the method at `path` (`/package.Service/Method`) may be repeated (see the module).
pub fn is_retry_safe(path: &str) -> bool {
    RETRY_SAFE.contains(&path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_method_in_the_protos_is_decided() {
        let declared: BTreeSet<String> = mall_proto::METHODS.iter().map(|p| p.to_string()).collect();
        assert!(declared.len() > 20, "found the protos: {declared:?}");

        let safe: BTreeSet<String> = RETRY_SAFE.iter().map(|p| p.to_string()).collect();
        let unsafe_: BTreeSet<String> = NOT_RETRY_SAFE.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(safe.len(), RETRY_SAFE.len(), "listed twice");
        assert!(safe.is_disjoint(&unsafe_), "decided both ways: {:?}", safe.intersection(&unsafe_));
        let decided: BTreeSet<String> = safe.union(&unsafe_).cloned().collect();
        let undecided: Vec<_> = declared.difference(&decided).collect();
        assert!(undecided.is_empty(), "add these to RETRY_SAFE or NOT_RETRY_SAFE: {undecided:?}");
        let unknown: Vec<_> =
            decided.difference(&declared).filter(|p| !p.starts_with("/grpc.health.")).collect();
        assert!(unknown.is_empty(), "no such rpc in the protos: {unknown:?}");
    }

    #[test]
    fn only_listed_methods_are_safe() {
        assert!(is_retry_safe("/mall.cart.v1.CartService/GetCart"));
        assert!(!is_retry_safe("/mall.cart.v1.CartService/AddItem"));
        assert!(!is_retry_safe("/mall.cart.v1.CartService/Unknown"));
        assert!(!is_retry_safe(""));
    }
}
