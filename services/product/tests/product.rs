//! The product service over real gRPC (port 0, `ProductServiceClient`).
//!
//! Every scenario runs twice: on SQLite with the in-process cache (always), and on MariaDB with Redis
//! when `MALL_TEST_DATABASE_URL` (and `MALL_TEST_REDIS_URL`) are set. Each run gets a fresh database
//! (a unique MariaDB database, dropped at the end) and a fresh cache namespace.

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use mall_proto::product::v1 as pb;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_runtime::{CancellationToken, PeerChannel, Served};
use mall_storage::sqlx;
use mall_storage::{Backend, Cache, Db};
use mall_testkit::TestDb;
use tokio::task::JoinSet;
use tonic::{Code, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// SQLite in a temp dir and the in-process cache.
    Embedded,
    /// MariaDB, and Redis when configured (else the in-process cache).
    Servers,
}

/// A started product service and what it runs on.
struct Svc {
    client: ProductServiceClient<PeerChannel>,
    db: Db,
    cache: Cache,
}

impl Svc {
    fn client(&self) -> ProductServiceClient<PeerChannel> {
        self.client.clone()
    }
}

/// Starts a service on `stack`, runs `scenario` against it, stops it and drops its database, then
/// re-raises the scenario's panic if it had one.
async fn run<F>(stack: Stack, scenario: F)
where
    F: AsyncFnOnce(&Svc),
{
    let migrations = mall_product::migrations();
    let (test_db, cache) = match stack {
        Stack::Embedded => {
            (TestDb::sqlite(&migrations).await, Cache::memory(&mall_testkit::unique_name("t")))
        }
        Stack::Servers => {
            let Some(test_db) = TestDb::mariadb(&migrations).await else {
                return;
            };
            assert_eq!(test_db.db.backend(), Backend::MySql);
            let cache = match mall_testkit::redis_cache().await {
                Some(cache) => cache,
                None => Cache::memory(&mall_testkit::unique_name("t")),
            };
            (test_db, cache)
        }
    };
    let shutdown = CancellationToken::new();
    let listener = mall_runtime::bind("127.0.0.1:0").await.expect("bind");
    let served: Served = mall_product::startup(
        mall_product::Config::default(),
        test_db.db.clone(),
        cache.clone(),
        mall_runtime::Access::unchecked(),
        listener,
        shutdown.clone(),
    )
    .await
    .expect("start the product service");
    let channel = mall_runtime::channel(&format!("http://{}", served.addr)).expect("channel");
    let svc = Svc { client: ProductServiceClient::new(channel), db: test_db.db.clone(), cache };

    let outcome = AssertUnwindSafe(scenario(&svc)).catch_unwind().await;

    drop(svc);
    shutdown.cancel();
    let stopped = served.task.await;
    test_db.drop_database().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    stopped.expect("server task").expect("server stopped cleanly");
}

/// One test per scenario and stack.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Stack::Embedded, super::scenarios::$name).await;
                }
            )*
        }
        mod servers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Stack::Servers, super::scenarios::$name).await;
                }
            )*
        }
    };
}

scenarios!(
    create_get_update_delete,
    invalid_arguments,
    list_pages_and_categories,
    categories_count_live_products,
    search_words_literally,
    concurrent_reservations_never_oversell,
    reservations_are_idempotent_and_all_or_nothing,
    reads_are_cached_and_writes_invalidate,
    demo_catalog_loads_once,
    demo_catalog_leaves_a_nonempty_catalog_alone,
    an_unreachable_database_is_unavailable,
);

// ---------------------------------------------------------------------------------------------------
// Helpers

#[track_caller]
fn expect_status<T: Debug>(result: Result<tonic::Response<T>, Status>) -> Status {
    match result {
        Ok(r) => panic!("expected an error, got {:?}", r.into_inner()),
        Err(status) => status,
    }
}

#[track_caller]
fn assert_code<T: Debug>(result: Result<tonic::Response<T>, Status>, code: Code) -> String {
    let status = expect_status(result);
    assert_eq!(status.code(), code, "message: {}", status.message());
    assert!(!status.message().is_empty());
    status.message().to_owned()
}

fn create_request(name: &str, price_cents: i64, stock: i64, categories: &[&str]) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        name: name.into(),
        description: format!("About {name}."),
        picture: format!("https://img.example/{}.jpg", name.len()),
        price_cents,
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        stock,
    }
}

async fn create(svc: &Svc, name: &str, price_cents: i64, stock: i64, categories: &[&str]) -> pb::Product {
    create_with(svc, create_request(name, price_cents, stock, categories)).await
}

async fn create_with(svc: &Svc, request: pb::CreateProductRequest) -> pb::Product {
    svc.client()
        .create_product(request)
        .await
        .expect("create product")
        .into_inner()
        .product
        .expect("product in response")
}

async fn get(svc: &Svc, product_id: i64) -> Result<pb::Product, Status> {
    let response = svc.client().get_product(pb::GetProductRequest { product_id }).await?;
    Ok(response.into_inner().product.expect("product in response"))
}

async fn update(svc: &Svc, request: pb::UpdateProductRequest) -> Result<pb::Product, Status> {
    let response = svc.client().update_product(request).await?;
    Ok(response.into_inner().product.expect("product in response"))
}

async fn list(svc: &Svc, page: i32, page_size: i32, category: Option<&str>) -> pb::ListProductsResponse {
    svc.client()
        .list_products(pb::ListProductsRequest { page, page_size, category: category.map(String::from) })
        .await
        .expect("list products")
        .into_inner()
}

/// ListCategories as (name, live products) pairs, in the order given.
async fn categories(svc: &Svc) -> Vec<(String, i64)> {
    svc.client()
        .list_categories(pb::ListCategoriesRequest {})
        .await
        .expect("list categories")
        .into_inner()
        .categories
        .into_iter()
        .map(|c| (c.name, c.products))
        .collect()
}

fn counts(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|&(name, products)| (name.to_owned(), products)).collect()
}

async fn search(svc: &Svc, query: &str, page: i32, page_size: i32) -> pb::SearchProductsResponse {
    svc.client()
        .search_products(pb::SearchProductsRequest { query: query.into(), page, page_size })
        .await
        .unwrap_or_else(|e| panic!("search {query:?}: {e}"))
        .into_inner()
}

async fn search_names(svc: &Svc, query: &str) -> Vec<String> {
    search(svc, query, 1, 100).await.items.into_iter().map(|p| p.name).collect()
}

fn lines(pairs: &[(i64, i64)]) -> Vec<pb::StockLine> {
    pairs.iter().map(|&(product_id, quantity)| pb::StockLine { product_id, quantity }).collect()
}

async fn reserve(
    svc: &Svc,
    order_id: &str,
    pairs: &[(i64, i64)],
) -> Result<pb::ReserveStockResponse, Status> {
    let request = pb::ReserveStockRequest { order_id: order_id.into(), lines: lines(pairs) };
    Ok(svc.client().reserve_stock(request).await?.into_inner())
}

async fn release(svc: &Svc, order_id: &str) -> Vec<pb::StockLine> {
    svc.client()
        .release_stock(pb::ReleaseStockRequest { order_id: order_id.into() })
        .await
        .expect("release stock")
        .into_inner()
        .released
}

/// The stock column itself, bypassing the service (and its cache).
async fn stock_in_db(svc: &Svc, product_id: i64) -> i64 {
    sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(product_id)
        .fetch_one(svc.db.pool())
        .await
        .expect("read stock")
}

async fn stock(svc: &Svc, product_id: i64) -> i64 {
    get(svc, product_id).await.expect("get product").stock
}

fn ids(items: &[pb::Product]) -> Vec<i64> {
    items.iter().map(|p| p.product_id).collect()
}

// ---------------------------------------------------------------------------------------------------
// Scenarios

mod scenarios {
    use super::*;

    pub async fn create_get_update_delete(svc: &Svc) {
        let created = create_with(
            svc,
            pb::CreateProductRequest {
                name: "  Blue mug  ".into(),
                description: "A 350 ml stoneware mug.".into(),
                picture: "https://img.example/mug.jpg".into(),
                price_cents: 1290,
                categories: vec![" Kitchen ".into(), "mugs".into(), "KITCHEN".into(), "".into()],
                stock: 5,
            },
        )
        .await;
        assert!(created.product_id > 0);
        assert_eq!(created.name, "Blue mug", "the name is trimmed");
        assert_eq!(created.description, "A 350 ml stoneware mug.");
        assert_eq!(created.picture, "https://img.example/mug.jpg");
        assert_eq!(created.price_cents, 1290);
        assert_eq!(created.stock, 5);
        assert_eq!(created.categories, ["Kitchen", "mugs"], "trimmed, empty dropped, deduplicated");
        assert!(created.created_at > 1_700_000_000);
        assert_eq!(created.updated_at, created.created_at);
        assert_eq!(get(svc, created.product_id).await.expect("get"), created);

        // A category shared with another product keeps one spelling.
        let other = create(svc, "Teapot", 2500, 3, &["kitchen", "Tea"]).await;
        assert_eq!(other.categories, ["Kitchen", "Tea"]);

        // Partial update: only the price changes.
        let id = created.product_id;
        let updated = update(
            svc,
            pb::UpdateProductRequest { product_id: id, price_cents: Some(1490), ..Default::default() },
        )
        .await
        .expect("update price");
        assert_eq!(updated.price_cents, 1490);
        assert_eq!(
            pb::Product {
                price_cents: created.price_cents,
                updated_at: created.updated_at,
                ..updated.clone()
            },
            created,
            "nothing else changed"
        );
        assert!(updated.updated_at >= created.updated_at);

        // Categories are replaced only when given; an empty list clears them.
        let updated = update(
            svc,
            pb::UpdateProductRequest {
                product_id: id,
                categories: Some(pb::CategoryList { names: vec!["Gifts".into(), " Kitchen".into()] }),
                ..Default::default()
            },
        )
        .await
        .expect("update categories");
        assert_eq!(updated.categories, ["Gifts", "Kitchen"]);
        assert_eq!(updated.price_cents, 1490);
        let updated =
            update(svc, pb::UpdateProductRequest { product_id: id, stock: Some(0), ..Default::default() })
                .await
                .expect("update stock");
        assert_eq!((updated.stock, updated.categories.clone()), (0, vec!["Gifts".into(), "Kitchen".into()]));
        let updated = update(
            svc,
            pb::UpdateProductRequest {
                product_id: id,
                name: Some(" Big blue mug ".into()),
                description: Some(String::new()),
                picture: Some(String::new()),
                categories: Some(pb::CategoryList { names: vec![] }),
                ..Default::default()
            },
        )
        .await
        .expect("update text fields");
        assert_eq!(updated.name, "Big blue mug");
        assert_eq!(updated.description, "", "a present field is set, even to empty");
        assert_eq!(updated.picture, "");
        assert!(updated.categories.is_empty());
        assert_eq!(get(svc, id).await.expect("get"), updated);
        // The new name is searchable, the old description is not.
        assert_eq!(search_names(svc, "big").await, ["Big blue mug"]);
        assert!(search_names(svc, "stoneware").await.is_empty());

        let message = assert_code(
            svc.client()
                .update_product(pb::UpdateProductRequest {
                    product_id: id,
                    name: Some(" ".into()),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert!(message.contains("name"), "{message}");
        assert_code(
            svc.client()
                .update_product(pb::UpdateProductRequest {
                    product_id: id,
                    price_cents: Some(-1),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        assert_code(
            svc.client()
                .update_product(pb::UpdateProductRequest {
                    product_id: 987_654,
                    stock: Some(1),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        assert_code(
            svc.client().get_product(pb::GetProductRequest { product_id: 987_654 }).await,
            Code::NotFound,
        );
        // An id that cannot name a product is malformed, not missing.
        for product_id in [0, -1] {
            let message = assert_code(
                svc.client().get_product(pb::GetProductRequest { product_id }).await,
                Code::InvalidArgument,
            );
            assert_eq!(message, format!("product_id must be positive, got {product_id}"));
        }

        // Batch: in the order asked, duplicates once, unknown ids listed as missing.
        let batch = svc
            .client()
            .batch_get_products(pb::BatchGetProductsRequest {
                product_ids: vec![other.product_id, 987_654, id, other.product_id],
            })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(ids(&batch.products), [other.product_id, id]);
        assert_eq!(batch.products[0], other);
        assert_eq!(batch.missing_product_ids, [987_654]);
        assert_code(
            svc.client()
                .batch_get_products(pb::BatchGetProductsRequest { product_ids: (1..=101).collect() })
                .await,
            Code::InvalidArgument,
        );

        // Soft delete: gone from reads, lists, searches and updates; deleting again is harmless.
        svc.client().delete_product(pb::DeleteProductRequest { product_id: id }).await.expect("delete");
        assert_eq!(get(svc, id).await.expect_err("deleted").code(), Code::NotFound);
        svc.client().delete_product(pb::DeleteProductRequest { product_id: id }).await.expect("delete again");
        assert_code(
            svc.client().delete_product(pb::DeleteProductRequest { product_id: 987_654 }).await,
            Code::NotFound,
        );
        assert_code(
            svc.client()
                .update_product(pb::UpdateProductRequest {
                    product_id: id,
                    price_cents: Some(1),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
        );
        let page = list(svc, 0, 0, None).await;
        assert_eq!((ids(&page.items), page.total), (vec![other.product_id], 1));
        assert!(search_names(svc, "mug").await.is_empty());
        let batch = svc
            .client()
            .batch_get_products(pb::BatchGetProductsRequest { product_ids: vec![id, other.product_id] })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!((ids(&batch.products), batch.missing_product_ids), (vec![other.product_id], vec![id]));
    }

    pub async fn invalid_arguments(svc: &Svc) {
        let ok = create_request("Valid", 100, 1, &["A"]);
        let cases: Vec<(&str, pb::CreateProductRequest, &str)> = vec![
            ("empty name", pb::CreateProductRequest { name: String::new(), ..ok.clone() }, "name"),
            ("blank name", pb::CreateProductRequest { name: " \t ".into(), ..ok.clone() }, "name"),
            ("long name", pb::CreateProductRequest { name: "n".repeat(201), ..ok.clone() }, "name"),
            (
                "price over max",
                pb::CreateProductRequest { price_cents: mall_domain::Cents::MAX + 1, ..ok.clone() },
                "price",
            ),
            ("negative price", pb::CreateProductRequest { price_cents: -1, ..ok.clone() }, "price"),
            ("negative stock", pb::CreateProductRequest { stock: -1, ..ok.clone() }, "stock"),
            ("huge stock", pb::CreateProductRequest { stock: 1_000_000_001, ..ok.clone() }, "stock"),
            (
                "long description",
                pb::CreateProductRequest { description: "d".repeat(5001), ..ok.clone() },
                "description",
            ),
            (
                "long picture",
                pb::CreateProductRequest { picture: format!("/{}", "p".repeat(1000)), ..ok.clone() },
                "picture",
            ),
            (
                "script picture",
                pb::CreateProductRequest { picture: "javascript:alert(1)".into(), ..ok.clone() },
                "picture",
            ),
            (
                "long category",
                pb::CreateProductRequest { categories: vec!["c".repeat(51)], ..ok.clone() },
                "category",
            ),
            (
                "too many categories",
                pb::CreateProductRequest {
                    categories: (0..21).map(|i| format!("c{i}")).collect(),
                    ..ok.clone()
                },
                "categories",
            ),
        ];
        for (what, request, field) in cases {
            let message = assert_code(svc.client().create_product(request).await, Code::InvalidArgument);
            assert!(message.contains(field), "{what}: {message}");
        }
        // The limits themselves are accepted.
        let edge = create_with(
            svc,
            pb::CreateProductRequest {
                name: "é".repeat(200),
                description: "d".repeat(5000),
                picture: format!("/{}", "p".repeat(999)),
                price_cents: mall_domain::Cents::MAX,
                categories: (0..20).map(|i| format!("{i:0>50}")).collect(),
                stock: 1_000_000_000,
            },
        )
        .await;
        assert_eq!(edge.name.chars().count(), 200);
        assert_eq!(edge.categories.len(), 20);
        assert_eq!(get(svc, edge.product_id).await.expect("get"), edge, "stored without truncation");
        assert_eq!(create(svc, "Free sample", 0, 0, &[]).await.price_cents, 0);

        // Pages.
        for (page, page_size) in [(1, 1000), (1, 101), (-1, 10), (1, -1)] {
            assert_code(
                svc.client().list_products(pb::ListProductsRequest { page, page_size, category: None }).await,
                Code::InvalidArgument,
            );
            assert_code(
                svc.client()
                    .search_products(pb::SearchProductsRequest { query: "x".into(), page, page_size })
                    .await,
                Code::InvalidArgument,
            );
        }
        // Queries.
        for query in [String::new(), "   ".into(), "q".repeat(101)] {
            let message = assert_code(
                svc.client()
                    .search_products(pb::SearchProductsRequest { query, page: 1, page_size: 10 })
                    .await,
                Code::InvalidArgument,
            );
            assert!(message.contains("query"), "{message}");
        }
        assert_eq!(search(svc, &format!("  {}  ", "q".repeat(100)), 1, 10).await.total, 0);

        // Reservations.
        let id = edge.product_id;
        let long_order_id = "o".repeat(65);
        let bad: Vec<(&str, Vec<pb::StockLine>)> = vec![
            ("", lines(&[(id, 1)])),
            ("  ", lines(&[(id, 1)])),
            (&long_order_id, lines(&[(id, 1)])),
            ("order-1", vec![]),
            ("order-1", lines(&[(id, 0)])),
            ("order-1", lines(&[(id, -3)])),
            ("order-1", lines(&[(id, 1), (id, 2)])),
        ];
        for (order_id, lines) in bad {
            let request = pb::ReserveStockRequest { order_id: order_id.into(), lines };
            assert_code(svc.client().reserve_stock(request).await, Code::InvalidArgument);
        }
        assert_code(
            svc.client().release_stock(pb::ReleaseStockRequest { order_id: String::new() }).await,
            Code::InvalidArgument,
        );
        assert_eq!(stock(svc, id).await, 1_000_000_000, "nothing was reserved");
    }

    pub async fn list_pages_and_categories(svc: &Svc) {
        let mut all = Vec::new();
        for i in 1..=25 {
            let mut categories = Vec::new();
            if i % 2 == 0 {
                categories.push("Even");
            }
            if i % 5 == 0 {
                categories.push("Fives");
            }
            all.push(create(svc, &format!("Product {i}"), 100 * i, i, &categories).await.product_id);
        }
        svc.client()
            .delete_product(pb::DeleteProductRequest { product_id: all[3] })
            .await
            .expect("delete #4");
        let live: Vec<i64> = all.iter().copied().filter(|id| *id != all[3]).collect();

        let first = list(svc, 0, 0, None).await;
        assert_eq!((first.page, first.page_size, first.total), (1, 20, 24));
        assert_eq!(ids(&first.items), live[..20]);
        let second = list(svc, 2, 0, None).await;
        assert_eq!((second.page, second.total), (2, 24));
        assert_eq!(ids(&second.items), live[20..]);
        let last = list(svc, 4, 7, None).await;
        assert_eq!((ids(&last.items), last.total), (live[21..].to_vec(), 24));
        let beyond = list(svc, 10, 7, None).await;
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, 24);
        assert_eq!(list(svc, 1, 100, Some("")).await.total, 24, "an empty category means all");

        let evens: Vec<i64> = (1..=25).filter(|i| i % 2 == 0 && *i != 4).map(|i| all[i - 1]).collect();
        for name in ["Even", "even", "  EVEN "] {
            let page = list(svc, 1, 100, Some(name)).await;
            assert_eq!((ids(&page.items), page.total), (evens.clone(), 11), "category {name:?}");
        }
        let page = list(svc, 2, 4, Some("even")).await;
        assert_eq!((ids(&page.items), page.total), (evens[4..8].to_vec(), 11));
        let fives = list(svc, 1, 100, Some("fives")).await;
        assert_eq!(ids(&fives.items), [all[4], all[9], all[14], all[19], all[24]]);
        assert_eq!(fives.items[1].categories, ["Even", "Fives"]);
        assert_eq!(fives.items[0].categories, ["Fives"]);
        let unknown = list(svc, 1, 20, Some("No such category")).await;
        assert_eq!((unknown.items.len(), unknown.total), (0, 0));
    }

    pub async fn categories_count_live_products(svc: &Svc) {
        assert!(categories(svc).await.is_empty(), "an empty catalog has no categories");

        create(svc, "Mug", 1200, 5, &["Kitchen", "Gifts"]).await;
        // The same category in another case: counted under its first spelling.
        create(svc, "Pan", 3000, 5, &["kitchen"]).await;
        let kettle = create(svc, "Kettle", 2500, 5, &["Kitchen"]).await.product_id;
        let lamp = create(svc, "Lamp", 4000, 5, &["Lights", "Gifts"]).await.product_id;
        let ghost = create(svc, "Ghost", 100, 5, &["Retired"]).await.product_id;
        create(svc, "Zebra toy", 900, 5, &["Zoo"]).await;
        create(svc, "Apple", 50, 5, &["apples"]).await;
        create(svc, "Uncategorised", 10, 5, &[]).await;
        // By name, byte-wise: upper case before lower case.
        assert_eq!(
            categories(svc).await,
            counts(&[("Gifts", 2), ("Kitchen", 3), ("Lights", 1), ("Retired", 1), ("Zoo", 1), ("apples", 1)])
        );

        // A deleted product is not counted; a category left with only deleted products is omitted.
        for product_id in [kettle, ghost] {
            svc.client().delete_product(pb::DeleteProductRequest { product_id }).await.expect("delete");
        }
        assert_eq!(
            categories(svc).await,
            counts(&[("Gifts", 2), ("Kitchen", 2), ("Lights", 1), ("Zoo", 1), ("apples", 1)])
        );

        // A category whose last product leaves it is omitted too.
        update(
            svc,
            pb::UpdateProductRequest {
                product_id: lamp,
                categories: Some(pb::CategoryList { names: vec![] }),
                ..Default::default()
            },
        )
        .await
        .expect("clear the lamp's categories");
        assert_eq!(categories(svc).await, counts(&[("Gifts", 1), ("Kitchen", 2), ("Zoo", 1), ("apples", 1)]));
        // The counts agree with the category filter of ListProducts.
        for (name, products) in categories(svc).await {
            assert_eq!(list(svc, 1, 100, Some(&name)).await.total, products, "{name}");
        }
    }

    pub async fn search_words_literally(svc: &Svc) {
        let make = |name: &'static str, description: &'static str| pb::CreateProductRequest {
            name: name.into(),
            description: description.into(),
            picture: String::new(),
            price_cents: 500,
            categories: vec![],
            stock: 1,
        };
        for (name, description) in [
            ("100% cotton shirt", "Soft and light"),
            ("50% off voucher", ""),
            ("Item 100", "plain"),
            ("Blue Mug", "A LARGE ceramic mug for tea"),
            ("Red mug", "small"),
            ("snake_case stickers", "for programmers"),
            (r"C:\temp drive", "a backslash"),
            ("ÄRGER Tee", "Kräutertee"),
            ("Wow! Sale", "exclamation"),
        ] {
            create_with(svc, make(name, description)).await;
        }
        assert_eq!(search_names(svc, "100%").await, ["100% cotton shirt"]);
        assert_eq!(search_names(svc, "%").await, ["100% cotton shirt", "50% off voucher"], "% is literal");
        assert!(search_names(svc, "1_0").await.is_empty(), "_ is literal: 1_0 must not match 100");
        assert_eq!(search_names(svc, "_").await, ["snake_case stickers"]);
        assert_eq!(search_names(svc, "100").await, ["100% cotton shirt", "Item 100"]);
        assert_eq!(search_names(svc, "MUG").await, ["Blue Mug", "Red mug"], "case-insensitive");
        assert_eq!(
            search_names(svc, "mug  LARGE").await,
            ["Blue Mug"],
            "words may be in name or description"
        );
        assert_eq!(search_names(svc, "ceramic blue tea").await, ["Blue Mug"]);
        assert!(search_names(svc, "mug small tea").await.is_empty(), "every word must appear");
        assert_eq!(search_names(svc, r"c:\temp").await, [r"C:\temp drive"]);
        assert_eq!(search_names(svc, "ärger").await, ["ÄRGER Tee"], "non-ASCII case folding");
        assert_eq!(search_names(svc, "KRÄUTER").await, ["ÄRGER Tee"]);
        assert_eq!(search_names(svc, "wow!").await, ["Wow! Sale"]);
        assert!(search_names(svc, "mug!").await.is_empty());

        let mut widgets = Vec::new();
        for i in 1..=5 {
            widgets.push(create(svc, &format!("Widget {i}"), 100, 1, &[]).await.product_id);
        }
        let page = search(svc, "widget", 3, 2).await;
        assert_eq!((page.page, page.page_size, page.total), (3, 2, 5));
        assert_eq!(ids(&page.items), [widgets[4]]);
        let page = search(svc, "WIDGET", 0, 0).await;
        assert_eq!((page.page, page.page_size, ids(&page.items)), (1, 20, widgets.clone()));
        svc.client()
            .delete_product(pb::DeleteProductRequest { product_id: widgets[0] })
            .await
            .expect("delete");
        let page = search(svc, "widget", 1, 2).await;
        assert_eq!(
            (ids(&page.items), page.total),
            (widgets[1..3].to_vec(), 4),
            "deleted products are not found"
        );
    }

    pub async fn concurrent_reservations_never_oversell(svc: &Svc) {
        let product = create(svc, "Limited edition print", 4900, 10, &["Art"]).await;
        let id = product.product_id;
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            let mut client = svc.client();
            tasks.spawn(async move {
                let request =
                    pb::ReserveStockRequest { order_id: format!("order-{i:02}"), lines: lines(&[(id, 1)]) };
                client.reserve_stock(request).await.map(|r| r.into_inner())
            });
        }
        let (mut reserved, mut refused) = (0, 0);
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task") {
                Ok(response) => {
                    assert!(!response.replayed);
                    assert_eq!(response.lines, lines(&[(id, 1)]));
                    reserved += 1;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
                    assert!(
                        status.message().starts_with(&format!(
                            "insufficient stock for product {id} \"Limited edition print\": requested 1, available 0"
                        )),
                        "{}",
                        status.message()
                    );
                    refused += 1;
                }
            }
        }
        assert_eq!((reserved, refused), (10, 40));
        assert_eq!(stock_in_db(svc, id).await, 0);
        assert_eq!(stock(svc, id).await, 0);
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock_reservations WHERE product_id = ?")
            .bind(id)
            .fetch_one(svc.db.pool())
            .await
            .expect("count reservations");
        assert_eq!(held, 10);
    }

    pub async fn reservations_are_idempotent_and_all_or_nothing(svc: &Svc) {
        let a = create(svc, "Blue mug", 1290, 10, &[]).await.product_id;
        let b = create(svc, "Teapot", 2500, 2, &[]).await.product_id;

        // Reserved once, in product order; the same lines again (in any order) replay.
        let first = reserve(svc, "order-1", &[(b, 1), (a, 3)]).await.expect("reserve");
        let mut expected = lines(&[(a, 3), (b, 1)]);
        expected.sort_by_key(|l| l.product_id);
        assert_eq!((first.lines.clone(), first.replayed), (expected.clone(), false));
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (7, 1));
        let again = reserve(svc, "order-1", &[(a, 3), (b, 1)]).await.expect("replay");
        assert_eq!((again.lines, again.replayed), (expected.clone(), true));
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (7, 1), "reserved once");
        let message = assert_code(
            svc.client()
                .reserve_stock(pb::ReserveStockRequest {
                    order_id: "order-1".into(),
                    lines: lines(&[(a, 1)]),
                })
                .await,
            Code::AlreadyExists,
        );
        assert!(message.contains("order-1"), "{message}");

        // All or nothing: one short line and nothing is taken; the order id stays usable.
        let status = reserve(svc, "order-2", &[(a, 2), (b, 5)]).await.expect_err("too many");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            format!("insufficient stock for product {b} \"Teapot\": requested 5, available 1")
        );
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (7, 1), "nothing reserved");
        let status = reserve(svc, "order-2", &[(a, 2), (987_654, 1)]).await.expect_err("unknown product");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "product 987654 is not for sale");
        assert_eq!(stock(svc, a).await, 7);
        let second = reserve(svc, "order-2", &[(a, 2)]).await.expect("reserve after a refusal");
        assert!(!second.replayed);
        assert_eq!(stock(svc, a).await, 5);

        // A deleted product is not for sale.
        let gone = create(svc, "Discontinued", 100, 50, &[]).await.product_id;
        svc.client().delete_product(pb::DeleteProductRequest { product_id: gone }).await.expect("delete");
        let status = reserve(svc, "order-3", &[(gone, 1)]).await.expect_err("deleted");
        assert_eq!(
            (status.code(), status.message()),
            (Code::FailedPrecondition, &*format!("product {gone} is not for sale"))
        );

        // Released once: exactly the lines, then nothing; the order id can never reserve again.
        assert_eq!(release(svc, "order-1").await, expected);
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (8, 2));
        assert!(release(svc, "order-1").await.is_empty());
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (8, 2), "released once");
        let status = reserve(svc, "order-1", &[(a, 3), (b, 1)]).await.expect_err("released order");
        assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
        assert_eq!((stock(svc, a).await, stock(svc, b).await), (8, 2));

        // An order released before it reserved (a late retry) cannot take stock afterwards.
        assert!(release(svc, "never-reserved").await.is_empty());
        let status = reserve(svc, "never-reserved", &[(a, 1)]).await.expect_err("released order");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(stock(svc, a).await, 8);

        // Concurrent duplicates of one order: one reservation, the others replay it.
        let mut tasks = JoinSet::new();
        for _ in 0..10 {
            let mut client = svc.client();
            tasks.spawn(async move {
                let request = pb::ReserveStockRequest { order_id: "order-4".into(), lines: lines(&[(a, 2)]) };
                client.reserve_stock(request).await.map(|r| r.into_inner())
            });
        }
        let mut replays = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let response = joined.expect("task").expect("reserve or replay");
            assert_eq!(response.lines, lines(&[(a, 2)]));
            replays.push(response.replayed);
        }
        replays.sort();
        assert_eq!(replays, [vec![false], vec![true; 9]].concat());
        assert_eq!(stock(svc, a).await, 6);

        // Stock held for a product deleted meanwhile still comes back.
        reserve(svc, "order-5", &[(b, 2)]).await.expect("reserve the last teapots");
        svc.client().delete_product(pb::DeleteProductRequest { product_id: b }).await.expect("delete");
        assert_eq!(release(svc, "order-5").await, lines(&[(b, 2)]));
        assert_eq!(stock_in_db(svc, b).await, 2);
    }

    pub async fn reads_are_cached_and_writes_invalidate(svc: &Svc) {
        let product = create(svc, "Cached lamp", 1000, 10, &["Lights"]).await;
        let id = product.product_id;
        let key = format!("product:{id}");
        assert_eq!(get(svc, id).await.expect("get").price_cents, 1000);
        assert!(svc.cache.exists(&key).await.expect("cache"), "the read filled the cache");

        // Changed behind the service's back: the cached product is served.
        sqlx::query("UPDATE products SET price_cents = ? WHERE id = ?")
            .bind(4242_i64)
            .bind(id)
            .execute(svc.db.pool())
            .await
            .expect("change the row directly");
        assert_eq!(get(svc, id).await.expect("get").price_cents, 1000, "served from the cache");

        // An update through the service is visible at once.
        let updated = update(
            svc,
            pb::UpdateProductRequest { product_id: id, price_cents: Some(2000), ..Default::default() },
        )
        .await
        .expect("update");
        assert_eq!(updated.price_cents, 2000);
        assert_eq!(get(svc, id).await.expect("get").price_cents, 2000);
        assert!(svc.cache.exists(&key).await.expect("cache"));

        // Reservations and releases change the stock that reads show.
        assert_eq!(stock(svc, id).await, 10);
        reserve(svc, "cache-order", &[(id, 3)]).await.expect("reserve");
        assert_eq!(stock(svc, id).await, 7);
        release(svc, "cache-order").await;
        assert_eq!(stock(svc, id).await, 10);

        // A cache entry that cannot be decoded is ignored, and replaced.
        svc.cache
            .set(&key, b"\xff\xfe not a product", std::time::Duration::from_secs(60))
            .await
            .expect("set");
        assert_eq!(get(svc, id).await.expect("get despite a bad cache entry").price_cents, 2000);
        let cached = svc.cache.get(&key).await.expect("cache").expect("refilled");
        assert_ne!(cached, b"\xff\xfe not a product");

        // Deleting removes it from reads at once.
        svc.client().delete_product(pb::DeleteProductRequest { product_id: id }).await.expect("delete");
        assert_eq!(get(svc, id).await.expect_err("deleted").code(), Code::NotFound);
        assert!(!svc.cache.exists(&key).await.expect("cache"));
    }

    pub async fn demo_catalog_loads_once(svc: &Svc) {
        // Two replicas starting together: one loads, the other sees it done.
        let (first, second) =
            tokio::join!(mall_product::load_demo_catalog(&svc.db), mall_product::load_demo_catalog(&svc.db));
        let mut outcomes = [first.expect("load"), second.expect("load")];
        outcomes.sort();
        assert_eq!(outcomes, [false, true]);
        let all = list(svc, 1, 100, None).await;
        assert_eq!(all.total, 30);
        assert!(!mall_product::load_demo_catalog(&svc.db).await.expect("load again"));
        assert_eq!(list(svc, 1, 100, None).await.total, 30, "never duplicated");

        assert!(all.items.iter().all(|p| p.price_cents > 0 && (20..=200).contains(&p.stock)));
        assert!(
            all.items
                .iter()
                .all(|p| p.picture.starts_with("/static/images/products/") && p.picture.ends_with(".svg")),
            "the demo pictures are the storefront's SVGs"
        );
        let demo_categories = categories(svc).await;
        let names: Vec<&str> = demo_categories.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Apparel", "Books", "Electronics", "Kitchen", "Outdoors"]);
        for (name, products) in &demo_categories {
            assert_eq!(list(svc, 1, 100, Some(name)).await.total, *products, "{name}");
        }
        let kitchen = list(svc, 1, 100, Some("kitchen")).await;
        assert!(kitchen.total >= 5, "{}", kitchen.total);
        assert!(kitchen.items.iter().all(|p| p.categories.iter().any(|c| c == "Kitchen")));
        assert_eq!(search_names(svc, "mug").await, ["Blue Stoneware Mug"]);
    }

    pub async fn demo_catalog_leaves_a_nonempty_catalog_alone(svc: &Svc) {
        create(svc, "Our own product", 100, 1, &[]).await;
        assert!(!mall_product::load_demo_catalog(&svc.db).await.expect("load"));
        assert_eq!(list(svc, 1, 100, None).await.total, 1);
    }

    pub async fn an_unreachable_database_is_unavailable(svc: &Svc) {
        let id = create(svc, "Survivor", 100, 1, &[]).await.product_id;
        get(svc, id).await.expect("cached now");
        svc.db.close().await;
        assert_eq!(get(svc, id).await.expect("served from the cache").name, "Survivor");
        let status = get(svc, id + 1).await.expect_err("the database is gone");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        let status = reserve(svc, "outage", &[(id, 1)]).await.expect_err("the database is gone");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    }
}
