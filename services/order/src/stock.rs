//! Calls to the product service: pricing lines, reserving and releasing an order's stock.

use std::collections::HashMap;

use mall_proto::product::v1 as product;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::PeerChannel;
use tonic::Code;

use crate::OrderError;

/// What ReserveStock answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The stock is held for the order (now, or since an earlier call with the same order id).
    Held,
    /// Refused: a product is short, unknown or deleted, or the order id's reservation was released.
    /// The product service's message, which names the product.
    Refused(String),
}

/// The product service, as the order service uses it.
#[derive(Clone)]
pub struct Stock {
    client: ProductServiceClient<PeerChannel>,
}

impl Stock {
    pub fn new(channel: PeerChannel) -> Stock {
        Stock { client: ProductServiceClient::new(channel) }
    }

    /// The live products among `ids` (at most 100), by id; the ids that are unknown or deleted are
    /// absent.
    pub async fn products(&self, ids: &[i64]) -> Result<HashMap<i64, product::Product>, OrderError> {
        let request = product::BatchGetProductsRequest { product_ids: ids.to_vec() };
        let response = self
            .client
            .clone()
            .batch_get_products(request)
            .await
            .map_err(OrderError::from_product)?
            .into_inner();
        Ok(response.products.into_iter().map(|p| (p.product_id, p)).collect())
    }

    /// Reserves `lines` (product_id, quantity) for the order, all or nothing; idempotent per order id.
    pub async fn reserve(&self, order_id: &str, lines: &[(i64, i64)]) -> Result<Reservation, OrderError> {
        let request = product::ReserveStockRequest {
            order_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| product::StockLine { product_id, quantity })
                .collect(),
        };
        match self.client.clone().reserve_stock(request).await {
            Ok(_) => Ok(Reservation::Held),
            Err(status) if status.code() == Code::FailedPrecondition => {
                Ok(Reservation::Refused(status.message().to_owned()))
            }
            Err(status) => Err(OrderError::from_product(status)),
        }
    }

    /// Gives back whatever the order holds; idempotent, and after it the order id can never reserve.
    pub async fn release(&self, order_id: &str) -> Result<(), OrderError> {
        let request = product::ReleaseStockRequest { order_id: order_id.to_owned() };
        self.client.clone().release_stock(request).await.map_err(OrderError::from_product)?;
        Ok(())
    }
}
