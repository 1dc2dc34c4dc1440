//! Search is bounded: over real gRPC (port 0), a search that finds every search slot taken waits its
//! short while and is refused with RESOURCE_EXHAUSTED, while the catalog's other calls go on.

use std::time::Duration;

use mall_proto::product::v1 as pb;
use mall_proto::product::v1::product_service_client::ProductServiceClient;
use mall_proto::product::v1::product_service_server::ProductServiceServer;
use mall_runtime::WorkLimit;
use mall_storage::Cache;
use mall_testkit::TestDb;
use tonic::Code;

fn search(query: &str) -> pb::SearchProductsRequest {
    pb::SearchProductsRequest { query: query.into(), page: 1, page_size: 10 }
}

#[tokio::test]
async fn a_search_that_finds_every_slot_taken_is_refused() {
    let t = TestDb::sqlite(&mall_product::migrations()).await;
    let searches = WorkLimit::new("search", 1, Duration::from_millis(50));
    let catalog = mall_product::Catalog::new(
        t.db.clone(),
        Cache::memory(&mall_testkit::unique_name("t")),
        searches.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProductServiceServer::new(catalog))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = ProductServiceClient::new(mall_runtime::channel(&format!("http://{addr}")).unwrap());
    let created = client
        .create_product(pb::CreateProductRequest {
            name: "Blue mug".into(),
            description: "A mug.".into(),
            picture: String::new(),
            price_cents: 990,
            categories: vec![],
            stock: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(client.search_products(search("mug")).await.unwrap().into_inner().total, 1);

    // Take the only slot until told to let go.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (started, is_started) = tokio::sync::oneshot::channel();
    let occupant = tokio::spawn({
        let searches = searches.clone();
        async move {
            searches
                .run(async move {
                    started.send(()).unwrap();
                    released.await.unwrap();
                })
                .await
                .unwrap();
        }
    });
    is_started.await.unwrap();
    let refused = client.search_products(search("mug")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("searches"), "{refused:?}");
    let product = pb::GetProductRequest { product_id: created.product_id };
    assert!(client.get_product(product).await.is_ok(), "reading a product is not held up by searches");

    release.send(()).unwrap();
    occupant.await.unwrap();
    assert_eq!(client.search_products(search("blue mug")).await.unwrap().into_inner().total, 1);
    t.drop_database().await;
}
