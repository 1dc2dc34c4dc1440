//! The product service's data migrations, on a database migrated step by step: rows written under an
//! older schema version, then the rest of the migrations run over them (as on an upgrade).
//!
//! On SQLite always, and on MariaDB when `MALL_TEST_DATABASE_URL` is set (always in CI).

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use mall_storage::sqlx;
use mall_storage::{Backend, Db};

/// The migration that moved the demo pictures from `.jpg` to `.svg`.
const SVG_PICTURES: i64 = 2;

/// A fresh, unmigrated database on `backend`, `scenario` run over it, then the database dropped;
/// re-raises the scenario's panic. Returns early when MariaDB is not configured (never in CI).
async fn on_fresh_database<F>(backend: Backend, scenario: F)
where
    F: AsyncFnOnce(&Db),
{
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, mariadb) = match backend {
        Backend::Sqlite => (mall_storage::sqlite_url_in(dir.path(), "product"), None),
        Backend::MySql => {
            let Some(base) = mall_testkit::database_url() else { return };
            let name = mall_testkit::unique_name("mall_t");
            let url = mall_storage::database_url_with_name(&base, &name).expect("test database URL");
            (url, Some((base, name)))
        }
    };
    let db = Db::connect(&url).await.expect("open the database");
    assert_eq!(db.backend(), backend);
    let outcome = AssertUnwindSafe(scenario(&db)).catch_unwind().await;
    db.close().await;
    if let Some((base, name)) = mariadb {
        mall_testkit::drop_databases(&base, &name).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Inserts a live product with this picture, as a service before the migration could have.
async fn insert(db: &Db, name: &str, picture: &str) -> i64 {
    sqlx::query(
        "INSERT INTO products \
         (name, description, picture, price_cents, stock, search_text, deleted_at, created_at, updated_at) \
         VALUES (?, '', ?, 100, 1, ?, NULL, 1700000000, 1700000000)",
    )
    .bind(name)
    .bind(picture)
    .bind(name.to_lowercase())
    .execute(db.pool())
    .await
    .expect("insert a product");
    sqlx::query_scalar("SELECT id FROM products WHERE name = ?")
        .bind(name)
        .fetch_one(db.pool())
        .await
        .expect("the new product's id")
}

async fn picture_and_updated_at(db: &Db, id: i64) -> (String, i64) {
    sqlx::query_as("SELECT picture, updated_at FROM products WHERE id = ?")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .expect("read the product")
}

async fn demo_jpg_pictures_become_svg(db: &Db) {
    let migrations = mall_product::migrations();
    let migrator = migrations.for_backend(db.backend());
    assert!(migrator.version_exists(SVG_PICTURES));
    migrator.run_to(SVG_PICTURES - 1, db.pool()).await.expect("migrate up to the one before");
    assert_eq!(
        db.pending_migrations(&migrations).await.expect("pending"),
        migrator.iter().map(|m| m.version).filter(|v| *v >= SVG_PICTURES).collect::<Vec<_>>()
    );

    // (picture before, picture after)
    let cases = [
        ("/static/images/products/blue-stoneware-mug.jpg", "/static/images/products/blue-stoneware-mug.svg"),
        // Only the suffix: a ".jpg" inside the name stays.
        ("/static/images/products/a.jpg.jpg", "/static/images/products/a.jpg.svg"),
        ("/static/images/products/.jpg", "/static/images/products/.svg"),
        // Characters, not bytes, are cut.
        ("/static/images/products/crème-brûlée.jpg", "/static/images/products/crème-brûlée.svg"),
        // Everything else is left as it is.
        ("/static/images/products/shouting.JPG", "/static/images/products/shouting.JPG"),
        ("/STATIC/images/products/upper.jpg", "/STATIC/images/products/upper.jpg"),
        ("/static/images/products/lamp.png", "/static/images/products/lamp.png"),
        ("/static/images/products/lamp.jpg?v=2", "/static/images/products/lamp.jpg?v=2"),
        ("/static/images/products/lamp.jpeg", "/static/images/products/lamp.jpeg"),
        ("/static/images/other/lamp.jpg", "/static/images/other/lamp.jpg"),
        (
            "https://cdn.example.com/static/images/products/lamp.jpg",
            "https://cdn.example.com/static/images/products/lamp.jpg",
        ),
        ("", ""),
    ];
    let mut ids = Vec::new();
    for (i, (before, _)) in cases.iter().enumerate() {
        ids.push(insert(db, &format!("Product {i}"), before).await);
    }

    db.migrate(&migrations).await.expect("run the remaining migrations");
    assert!(db.pending_migrations(&migrations).await.expect("pending").is_empty());
    for (&id, (before, after)) in ids.iter().zip(cases) {
        let (picture, updated_at) = picture_and_updated_at(db, id).await;
        assert_eq!(picture, after, "{before:?}");
        assert_eq!(updated_at, 1_700_000_000, "{before:?}: not an edit");
    }

    // Running the migrations again changes nothing.
    db.migrate(&migrations).await.expect("migrate again");
    let (picture, _) = picture_and_updated_at(db, ids[0]).await;
    assert_eq!(picture, "/static/images/products/blue-stoneware-mug.svg");
}

#[tokio::test]
async fn demo_jpg_pictures_become_svg_on_sqlite() {
    on_fresh_database(Backend::Sqlite, demo_jpg_pictures_become_svg).await;
}

#[tokio::test]
async fn demo_jpg_pictures_become_svg_on_mariadb() {
    on_fresh_database(Backend::MySql, demo_jpg_pictures_become_svg).await;
}
