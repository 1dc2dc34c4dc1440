//! The `ProductService` gRPC implementation, with GetProduct cached (cache-aside).

use std::collections::HashSet;
use std::time::Duration;

use mall_domain::{Cents, OrderId, ProductId};
use mall_proto::product::v1 as pb;
use mall_proto::product::v1::product_service_server::ProductService;
use mall_runtime::WorkLimit;
use mall_storage::{Cache, Db};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::ProductError;
use crate::input::{self, Line, Page};
use crate::store::{self, Changes, NewProduct, ProductRow, Reservation};

/// How long a product stays in the cache (every write removes it sooner).
const CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// The catalog: products, categories, search and stock, over one database and a cache.
#[derive(Clone, Debug)]
pub struct Catalog {
    db: Db,
    cache: Cache,
    /// Searches scan the catalog with `LIKE` patterns the client chooses; they run in its slots, so a
    /// flood of them neither takes every database connection from GetProduct and ReserveStock nor
    /// piles up.
    searches: WorkLimit,
}

fn cache_key(product_id: i64) -> String {
    format!("product:{product_id}")
}

fn to_proto(p: ProductRow) -> pb::Product {
    pb::Product {
        product_id: p.id,
        name: p.name,
        description: p.description,
        picture: p.picture,
        price_cents: p.price_cents,
        categories: p.categories,
        stock: p.stock,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn product_ids(lines: &[Line]) -> Vec<i64> {
    lines.iter().map(|l| l.product_id).collect()
}

fn to_lines(lines: Vec<Line>) -> Vec<pb::StockLine> {
    lines.into_iter().map(|l| pb::StockLine { product_id: l.product_id, quantity: l.quantity }).collect()
}

impl Catalog {
    pub fn new(db: Db, cache: Cache, searches: WorkLimit) -> Catalog {
        Catalog { db, cache, searches }
    }

    async fn create(&self, req: pb::CreateProductRequest) -> Result<pb::Product, ProductError> {
        let new = NewProduct {
            name: input::name(&req.name)?,
            description: input::description(&req.description)?,
            picture: input::picture(&req.picture)?,
            price_cents: Cents::new(req.price_cents)?,
            stock: input::stock(req.stock)?,
            categories: input::categories(&req.categories)?,
        };
        let product = store::create(&self.db, &new).await?;
        tracing::info!(product_id = product.id, "product created");
        Ok(to_proto(product))
    }

    /// Cache first; on a miss (or any cache trouble) the database, then the cache is filled.
    async fn get(&self, id: ProductId) -> Result<pb::Product, ProductError> {
        let id = id.get();
        let key = cache_key(id);
        match self.cache.get(&key).await {
            Ok(Some(bytes)) => match pb::Product::decode(bytes.as_slice()) {
                Ok(product) => return Ok(product),
                Err(e) => tracing::warn!(error = %e, key, "undecodable cached product; reading the database"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, key, "cache read failed; reading the database"),
        }
        let product = store::find(&self.db, id).await?.map(to_proto).ok_or(ProductError::NotFound(id))?;
        if let Err(e) = self.cache.set(&key, &product.encode_to_vec(), CACHE_TTL).await {
            tracing::warn!(error = %e, key, "cache write failed");
        }
        Ok(product)
    }

    /// Removes products from the cache; runs after the database commit, so the next read sees the
    /// change.
    async fn invalidate(&self, ids: &[i64]) {
        for id in ids {
            let key = cache_key(*id);
            if let Err(e) = self.cache.delete(&key).await {
                tracing::error!(error = %e, key, "cache invalidation failed; the cached product may be stale until it expires");
            }
        }
    }

    async fn batch_get(&self, ids: &[i64]) -> Result<pb::BatchGetProductsResponse, ProductError> {
        if ids.len() > input::MAX_BATCH {
            return Err(ProductError::InvalidArgument(format!(
                "at most {} product ids can be asked for at once ({} were given)",
                input::MAX_BATCH,
                ids.len()
            )));
        }
        let mut seen = HashSet::new();
        let mut asked = Vec::with_capacity(ids.len());
        for &id in ids {
            if seen.insert(ProductId::new(id)?) {
                asked.push(id);
            }
        }
        let mut found: std::collections::HashMap<i64, ProductRow> =
            store::find_many(&self.db, &asked).await?.into_iter().map(|p| (p.id, p)).collect();
        let mut response = pb::BatchGetProductsResponse::default();
        for id in asked {
            match found.remove(&id) {
                Some(product) => response.products.push(to_proto(product)),
                None => response.missing_product_ids.push(id),
            }
        }
        Ok(response)
    }

    async fn list(&self, req: pb::ListProductsRequest) -> Result<pb::ListProductsResponse, ProductError> {
        let page = Page::parse(req.page, req.page_size)?;
        let key = req.category.as_deref().map(input::category_key).filter(|k| !k.is_empty());
        let (items, total) = store::list(&self.db, key.as_deref(), page).await?;
        Ok(pb::ListProductsResponse {
            items: items.into_iter().map(to_proto).collect(),
            page: page.page,
            page_size: page.page_size,
            total,
        })
    }

    async fn categories(&self) -> Result<pb::ListCategoriesResponse, ProductError> {
        let categories = store::categories(&self.db).await?;
        Ok(pb::ListCategoriesResponse {
            categories: categories
                .into_iter()
                .map(|(name, products)| pb::CategoryCount { name, products })
                .collect(),
        })
    }

    async fn search(
        &self,
        req: pb::SearchProductsRequest,
    ) -> Result<pb::SearchProductsResponse, ProductError> {
        let patterns = input::search_patterns(&req.query)?;
        let page = Page::parse(req.page, req.page_size)?;
        let (items, total) = self.searches.run(store::search(&self.db, &patterns, page)).await??;
        Ok(pb::SearchProductsResponse {
            items: items.into_iter().map(to_proto).collect(),
            page: page.page,
            page_size: page.page_size,
            total,
        })
    }

    async fn update(&self, req: pb::UpdateProductRequest) -> Result<pb::Product, ProductError> {
        let changes = Changes {
            name: req.name.as_deref().map(input::name).transpose()?,
            description: req.description.as_deref().map(input::description).transpose()?,
            picture: req.picture.as_deref().map(input::picture).transpose()?,
            price_cents: req.price_cents.map(Cents::new).transpose()?,
            stock: req.stock.map(input::stock).transpose()?,
            categories: req.categories.as_ref().map(|c| input::categories(&c.names)).transpose()?,
        };
        let id = ProductId::new(req.product_id)?;
        let product = store::update(&self.db, id.get(), &changes).await?;
        self.invalidate(&[product.id]).await;
        tracing::info!(product_id = product.id, "product updated");
        Ok(to_proto(product))
    }

    async fn delete(&self, id: ProductId) -> Result<(), ProductError> {
        let id = id.get();
        store::delete(&self.db, id).await?;
        self.invalidate(&[id]).await;
        tracing::info!(product_id = id, "product deleted");
        Ok(())
    }

    async fn reserve(&self, req: pb::ReserveStockRequest) -> Result<pb::ReserveStockResponse, ProductError> {
        let order_id = OrderId::parse(&req.order_id)?;
        let lines = input::lines(req.lines.iter().map(|l| (l.product_id, l.quantity)))?;
        match store::reserve(&self.db, order_id.as_str(), &lines).await? {
            Reservation::Reserved(lines) => {
                self.invalidate(&product_ids(&lines)).await;
                tracing::info!(order_id = order_id.as_str(), lines = lines.len(), "stock reserved");
                Ok(pb::ReserveStockResponse { lines: to_lines(lines), replayed: false })
            }
            Reservation::Replayed(lines) => {
                Ok(pb::ReserveStockResponse { lines: to_lines(lines), replayed: true })
            }
        }
    }

    async fn release(&self, req: pb::ReleaseStockRequest) -> Result<pb::ReleaseStockResponse, ProductError> {
        let order_id = OrderId::parse(&req.order_id)?;
        let released = store::release(&self.db, order_id.as_str()).await?;
        if !released.is_empty() {
            self.invalidate(&product_ids(&released)).await;
            tracing::info!(order_id = order_id.as_str(), lines = released.len(), "stock released");
        }
        Ok(pb::ReleaseStockResponse { released: to_lines(released) })
    }
}

#[tonic::async_trait]
impl ProductService for Catalog {
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let product = self.create(request.into_inner()).await?;
        Ok(Response::new(pb::CreateProductResponse { product: Some(product) }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = ProductId::new(request.into_inner().product_id).map_err(ProductError::from)?;
        let product = self.get(id).await?;
        Ok(Response::new(pb::GetProductResponse { product: Some(product) }))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        Ok(Response::new(self.batch_get(&request.into_inner().product_ids).await?))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn list_categories(
        &self,
        _request: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        Ok(Response::new(self.categories().await?))
    }

    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        Ok(Response::new(self.search(request.into_inner()).await?))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let product = self.update(request.into_inner()).await?;
        Ok(Response::new(pb::UpdateProductResponse { product: Some(product) }))
    }

    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let id = ProductId::new(request.into_inner().product_id).map_err(ProductError::from)?;
        self.delete(id).await?;
        Ok(Response::new(pb::DeleteProductResponse {}))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        Ok(Response::new(self.reserve(request.into_inner()).await?))
    }

    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        Ok(Response::new(self.release(request.into_inner()).await?))
    }
}
