//! The `CartService` gRPC implementation: validation, the product checks, and pricing.

use std::collections::HashMap;

use mall_domain::{ProductId, UserId};
use mall_proto::cart::v1 as pb;
use mall_proto::cart::v1::cart_service_server::CartService;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_proto::product::v1::{BatchGetProductsRequest, Product};
use mall_runtime::PeerChannel;
use mall_storage::Db;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::CartError;
use crate::store::{self, CartLine, MAX_LINE_QUANTITY};

/// Most ids the product service answers in one BatchGetProducts call.
const BATCH_LIMIT: usize = 100;

pub struct Carts {
    db: Db,
    products: ProductServiceClient<PeerChannel>,
}

impl Carts {
    pub fn new(db: Db, product: PeerChannel) -> Carts {
        Carts { db, products: ProductServiceClient::new(product) }
    }

    async fn add_item(&self, req: pb::AddItemRequest) -> Result<pb::Cart, CartError> {
        let user_id = UserId::new(req.user_id)?.get();
        if !(1..=MAX_LINE_QUANTITY).contains(&req.quantity) {
            return Err(CartError::InvalidArgument(format!(
                "quantity must be between 1 and {MAX_LINE_QUANTITY}, got {}",
                req.quantity
            )));
        }
        let product_id = ProductId::new(req.product_id)?.get();
        let known = self.live_products(&[product_id]).await?;
        if known.is_empty() {
            return Err(CartError::ProductNotFound(product_id));
        }
        store::add(&self.db, user_id, product_id, req.quantity).await?;
        self.cart_knowing(user_id, known).await
    }

    async fn set_item(&self, req: pb::SetItemRequest) -> Result<pb::Cart, CartError> {
        let user_id = UserId::new(req.user_id)?.get();
        if !(0..=MAX_LINE_QUANTITY).contains(&req.quantity) {
            return Err(CartError::InvalidArgument(format!(
                "quantity must be between 0 and {MAX_LINE_QUANTITY}, got {}",
                req.quantity
            )));
        }
        let product_id = ProductId::new(req.product_id)?.get();
        if req.quantity == 0 {
            // Not looked up: the line of a product deleted since it was added can still go.
            store::remove(&self.db, user_id, product_id).await?;
            return self.cart(user_id).await;
        }
        let known = self.live_products(&[product_id]).await?;
        if known.is_empty() {
            return Err(CartError::ProductNotFound(product_id));
        }
        store::set(&self.db, user_id, product_id, req.quantity).await?;
        self.cart_knowing(user_id, known).await
    }

    async fn remove_item(&self, req: pb::RemoveItemRequest) -> Result<pb::Cart, CartError> {
        let user_id = UserId::new(req.user_id)?.get();
        let product_id = ProductId::new(req.product_id)?.get();
        store::remove(&self.db, user_id, product_id).await?;
        self.cart(user_id).await
    }

    /// The user's cart, priced now.
    async fn cart(&self, user_id: i64) -> Result<pb::Cart, CartError> {
        self.cart_knowing(user_id, HashMap::new()).await
    }

    /// The user's cart, priced now, with `known` products just read (not asked for again).
    async fn cart_knowing(
        &self,
        user_id: i64,
        mut known: HashMap<i64, Product>,
    ) -> Result<pb::Cart, CartError> {
        let lines = store::lines(&self.db, user_id).await?;
        let ids: Vec<i64> = lines.iter().map(|l| l.product_id).filter(|id| !known.contains_key(id)).collect();
        known.extend(self.live_products(&ids).await?);
        Ok(priced(user_id, &lines, &known))
    }

    /// The live products among `ids`, by id. One BatchGetProducts call per 100 ids (none for none).
    async fn live_products(&self, ids: &[i64]) -> Result<HashMap<i64, Product>, CartError> {
        let mut live = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_LIMIT) {
            let request = BatchGetProductsRequest { product_ids: chunk.to_vec() };
            let response = self
                .products
                .clone()
                .batch_get_products(request)
                .await
                .map_err(CartError::from_product)?
                .into_inner();
            live.extend(response.products.into_iter().map(|p| (p.product_id, p)));
        }
        Ok(live)
    }
}

/// Prices `lines` with today's products; a product that is gone stays as an unavailable line that
/// counts for nothing.
fn priced(user_id: i64, lines: &[CartLine], products: &HashMap<i64, Product>) -> pb::Cart {
    let items: Vec<pb::CartItem> = lines
        .iter()
        .map(|line| match products.get(&line.product_id) {
            Some(p) => pb::CartItem {
                product_id: line.product_id,
                quantity: line.quantity,
                name: p.name.clone(),
                price_cents: p.price_cents,
                line_total_cents: p.price_cents.saturating_mul(line.quantity),
                available: true,
            },
            None => pb::CartItem {
                product_id: line.product_id,
                quantity: line.quantity,
                name: String::new(),
                price_cents: 0,
                line_total_cents: 0,
                available: false,
            },
        })
        .collect();
    let total_cents =
        items.iter().filter(|i| i.available).fold(0i64, |sum, i| sum.saturating_add(i.line_total_cents));
    pb::Cart { user_id, items, total_cents, version: version(lines) }
}

/// The cart's content version: a hash of every line's row id, product, quantity and last write. Row
/// ids only grow (a removed line that comes back is a new row), so a cart emptied and refilled with
/// the same lines never gets an earlier version back; the write time guards against a row id that a
/// database reused after a restart.
pub fn version(lines: &[CartLine]) -> String {
    let mut hasher = Sha256::new();
    for line in lines {
        for n in [line.row_id, line.product_id, line.quantity, line.updated_at] {
            hasher.update(n.to_be_bytes());
        }
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl CartService for Carts {
    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::AddItemResponse>, Status> {
        let cart = Carts::add_item(self, request.into_inner()).await?;
        Ok(Response::new(pb::AddItemResponse { cart: Some(cart) }))
    }

    async fn set_item(
        &self,
        request: Request<pb::SetItemRequest>,
    ) -> Result<Response<pb::SetItemResponse>, Status> {
        let cart = Carts::set_item(self, request.into_inner()).await?;
        Ok(Response::new(pb::SetItemResponse { cart: Some(cart) }))
    }

    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::RemoveItemResponse>, Status> {
        let cart = Carts::remove_item(self, request.into_inner()).await?;
        Ok(Response::new(pb::RemoveItemResponse { cart: Some(cart) }))
    }

    async fn get_cart(
        &self,
        request: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::GetCartResponse>, Status> {
        let user_id = UserId::new(request.into_inner().user_id).map_err(CartError::from)?.get();
        let cart = self.cart(user_id).await?;
        Ok(Response::new(pb::GetCartResponse { cart: Some(cart) }))
    }

    async fn empty_cart(
        &self,
        request: Request<pb::EmptyCartRequest>,
    ) -> Result<Response<pb::EmptyCartResponse>, Status> {
        let user_id = UserId::new(request.into_inner().user_id).map_err(CartError::from)?.get();
        store::empty(&self.db, user_id).await?;
        let cart = pb::Cart { user_id, items: Vec::new(), total_cents: 0, version: version(&[]) };
        Ok(Response::new(pb::EmptyCartResponse { cart: Some(cart) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: i64, name: &str, price_cents: i64) -> Product {
        Product { product_id: id, name: name.into(), price_cents, ..Default::default() }
    }

    #[test]
    fn prices_lines_and_skips_gone_products_in_the_total() {
        let line = |row_id, product_id, quantity| CartLine { product_id, quantity, row_id, updated_at: 100 };
        let lines = [line(1, 2, 3), line(2, 9, 1), line(3, 1, 2)];
        let products: HashMap<i64, Product> =
            [product(1, "Mug", 1990), product(2, "Pen", 5)].into_iter().map(|p| (p.product_id, p)).collect();
        let cart = priced(7, &lines, &products);
        assert_eq!(cart.user_id, 7);
        let ids: Vec<i64> = cart.items.iter().map(|i| i.product_id).collect();
        assert_eq!(ids, [2, 9, 1], "the stored order is kept");
        assert_eq!((cart.items[0].line_total_cents, cart.items[0].available), (15, true));
        assert_eq!(cart.items[1], pb::CartItem { product_id: 9, quantity: 1, ..Default::default() });
        assert_eq!((cart.items[2].name.as_str(), cart.items[2].line_total_cents), ("Mug", 3980));
        assert_eq!(cart.total_cents, 15 + 3980);
        assert_eq!(cart.version, version(&lines));
    }

    #[test]
    fn the_version_follows_every_change_of_content() {
        let line =
            |row_id, product_id, quantity, updated_at| CartLine { product_id, quantity, row_id, updated_at };
        let cart = [line(1, 5, 2, 100), line(2, 6, 1, 100)];
        assert_eq!(version(&cart), version(&cart.clone()), "the same content, the same version");
        assert_eq!(version(&cart).len(), 32);
        let changed = [
            vec![line(1, 5, 3, 101), line(2, 6, 1, 100)],
            vec![line(1, 5, 2, 100)],
            vec![line(1, 5, 2, 100), line(2, 6, 1, 100), line(3, 7, 1, 102)],
            // Emptied and filled again with the same lines: new rows.
            vec![line(3, 5, 2, 100), line(4, 6, 1, 100)],
            // A reused row id, written later.
            vec![line(1, 5, 2, 200), line(2, 6, 1, 200)],
        ];
        for other in changed {
            assert_ne!(version(&other), version(&cart), "{other:?}");
        }
        assert_ne!(version(&[]), version(&cart));
    }
}
