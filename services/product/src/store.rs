//! The product service's tables: products, categories, stock reservations.
//!
//! The SQL is shared by MySQL/MariaDB and SQLite wherever it can be; where the dialects differ the two
//! statements stand side by side. Every write transaction starts with a write, so that on SQLite it
//! takes the write lock at once (and waits for it with `busy_timeout`) instead of failing with
//! "database is locked" when it later upgrades from a read; on MySQL the rows a transaction changes
//! are locked in product-id order, so concurrent transactions never deadlock.

use std::collections::HashMap;

use mall_domain::{Cents, ReservationStatus};
use mall_storage::sqlx::{self, AnyConnection};
use mall_storage::{Backend, Db, now_unix};

use crate::ProductError;
use crate::input::{Category, Line, Page, search_text};

/// A live product as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub picture: String,
    pub price_cents: i64,
    pub stock: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub categories: Vec<String>,
}

type Row = (i64, String, String, String, i64, i64, i64, i64);

/// The columns of [`Row`], for `concat!`.
macro_rules! product_columns {
    () => {
        "p.id, p.name, p.description, p.picture, p.price_cents, p.stock, p.created_at, p.updated_at"
    };
}

fn from_row(row: Row) -> ProductRow {
    let (id, name, description, picture, price_cents, stock, created_at, updated_at) = row;
    ProductRow {
        id,
        name,
        description,
        picture,
        price_cents,
        stock,
        created_at,
        updated_at,
        categories: Vec::new(),
    }
}

/// A product to create, validated.
#[derive(Debug, Clone)]
pub(crate) struct NewProduct {
    pub name: String,
    pub description: String,
    pub picture: String,
    pub price_cents: Cents,
    pub stock: i64,
    pub categories: Vec<Category>,
}

/// The fields an update sets, validated; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changes {
    pub name: Option<String>,
    pub description: Option<String>,
    pub picture: Option<String>,
    pub price_cents: Option<Cents>,
    pub stock: Option<i64>,
    pub categories: Option<Vec<Category>>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.picture.is_none()
            && self.price_cents.is_none()
            && self.stock.is_none()
            && self.categories.is_none()
    }
}

// ---------------------------------------------------------------------------------------------------
// Products

pub(crate) async fn create(db: &Db, new: &NewProduct) -> Result<ProductRow, ProductError> {
    let mut tx = db.pool().begin().await?;
    let id = insert_product(&mut tx, db.backend(), new, now_unix()).await?;
    let product = load(&mut tx, id).await?.ok_or_else(|| vanished(id))?;
    tx.commit().await?;
    Ok(product)
}

/// Inserts a product and its categories; the first statement is a write.
async fn insert_product(
    conn: &mut AnyConnection,
    backend: Backend,
    new: &NewProduct,
    now: i64,
) -> Result<i64, ProductError> {
    let result = sqlx::query(
        "INSERT INTO products \
         (name, description, picture, price_cents, stock, search_text, deleted_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
    )
    .bind(&new.name)
    .bind(&new.description)
    .bind(&new.picture)
    .bind(new.price_cents.get())
    .bind(new.stock)
    .bind(search_text(&new.name, &new.description))
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let id = match backend {
        Backend::MySql => result.last_insert_id(),
        // sqlx's Any driver does not pass SQLite's rowid on; ask for it on the same connection.
        Backend::Sqlite => {
            Some(sqlx::query_scalar::<_, i64>("SELECT last_insert_rowid()").fetch_one(&mut *conn).await?)
        }
    }
    .filter(|id| *id > 0)
    .ok_or_else(|| ProductError::Internal("the database returned no id for the new product".into()))?;
    set_categories(conn, backend, id, &new.categories).await?;
    Ok(id)
}

/// Makes `categories` exactly the product's categories, in this order, creating the missing ones.
async fn set_categories(
    conn: &mut AnyConnection,
    backend: Backend,
    product_id: i64,
    categories: &[Category],
) -> Result<(), ProductError> {
    sqlx::query("DELETE FROM product_categories WHERE product_id = ?")
        .bind(product_id)
        .execute(&mut *conn)
        .await?;
    // Create (or find) and lock the category rows in key order, so that two transactions sharing new
    // categories take their locks in the same order.
    let mut by_key: Vec<&Category> = categories.iter().collect();
    by_key.sort_by(|a, b| a.key.cmp(&b.key));
    let mut ids = HashMap::with_capacity(categories.len());
    for category in by_key {
        let (upsert, select) = match backend {
            Backend::MySql => (
                "INSERT INTO categories (name, name_key) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE name_key = name_key",
                // A locking read: it sees the latest committed row even if this transaction's
                // snapshot is older (REPEATABLE READ).
                "SELECT id FROM categories WHERE name_key = ? FOR UPDATE",
            ),
            Backend::Sqlite => (
                "INSERT INTO categories (name, name_key) VALUES (?, ?) ON CONFLICT (name_key) DO NOTHING",
                // The transaction holds SQLite's write lock: it sees every committed row.
                "SELECT id FROM categories WHERE name_key = ?",
            ),
        };
        sqlx::query(upsert).bind(&category.name).bind(&category.key).execute(&mut *conn).await?;
        let id: i64 = sqlx::query_scalar(select).bind(&category.key).fetch_one(&mut *conn).await?;
        ids.insert(category.key.as_str(), id);
    }
    for (position, category) in categories.iter().enumerate() {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        sqlx::query("INSERT INTO product_categories (product_id, category_id, position) VALUES (?, ?, ?)")
            .bind(product_id)
            .bind(ids[category.key.as_str()])
            .bind(position)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A live product with its categories, or `None` if unknown or deleted.
pub(crate) async fn find(db: &Db, id: i64) -> Result<Option<ProductRow>, ProductError> {
    let mut conn = db.pool().acquire().await?;
    load(&mut conn, id).await
}

async fn load(conn: &mut AnyConnection, id: i64) -> Result<Option<ProductRow>, ProductError> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products p WHERE p.id = ? AND p.deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut products = vec![from_row(row)];
    attach_categories(conn, &mut products).await?;
    Ok(products.pop())
}

/// Fills in the categories of `products` (at most a page of them) with one query.
async fn attach_categories(
    conn: &mut AnyConnection,
    products: &mut [ProductRow],
) -> Result<(), ProductError> {
    if products.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT pc.product_id, c.name FROM product_categories pc \
         JOIN categories c ON c.id = pc.category_id \
         WHERE pc.product_id IN ({}) ORDER BY pc.product_id, pc.position",
        placeholders(products.len())
    );
    // Only `?` placeholders are interpolated; every value is bound.
    let mut query = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql));
    for p in products.iter() {
        query = query.bind(p.id);
    }
    let mut names: HashMap<i64, Vec<String>> = HashMap::new();
    for (product_id, name) in query.fetch_all(&mut *conn).await? {
        names.entry(product_id).or_default().push(name);
    }
    for p in products.iter_mut() {
        p.categories = names.remove(&p.id).unwrap_or_default();
    }
    Ok(())
}

/// `?, ?, ?` with `n` markers.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The live products among `ids` (each asked once), in no particular order.
pub(crate) async fn find_many(db: &Db, ids: &[i64]) -> Result<Vec<ProductRow>, ProductError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        concat!(
            "SELECT ",
            product_columns!(),
            " FROM products p WHERE p.deleted_at IS NULL AND p.id IN ({})"
        ),
        placeholders(ids.len())
    );
    let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(*id);
    }
    let mut conn = db.pool().acquire().await?;
    let mut products: Vec<ProductRow> =
        query.fetch_all(&mut *conn).await?.into_iter().map(from_row).collect();
    attach_categories(&mut conn, &mut products).await?;
    Ok(products)
}

/// A page of live products (optionally of one category, by key), by id, and the total.
pub(crate) async fn list(
    db: &Db,
    category_key: Option<&str>,
    page: Page,
) -> Result<(Vec<ProductRow>, i64), ProductError> {
    let mut conn = db.pool().acquire().await?;
    let (total, rows): (i64, Vec<Row>) = match category_key {
        None => {
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM products p WHERE p.deleted_at IS NULL")
                .fetch_one(&mut *conn)
                .await?;
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products p WHERE p.deleted_at IS NULL ORDER BY p.id LIMIT ? OFFSET ?"
            ))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *conn)
            .await?;
            (total, rows)
        }
        Some(key) => {
            let category: Option<i64> = sqlx::query_scalar("SELECT id FROM categories WHERE name_key = ?")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(category) = category else {
                return Ok((Vec::new(), 0));
            };
            let total = sqlx::query_scalar(
                "SELECT COUNT(*) FROM products p WHERE p.deleted_at IS NULL AND p.id IN \
                 (SELECT pc.product_id FROM product_categories pc WHERE pc.category_id = ?)",
            )
            .bind(category)
            .fetch_one(&mut *conn)
            .await?;
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                product_columns!(),
                " FROM products p WHERE p.deleted_at IS NULL AND p.id IN \
                 (SELECT pc.product_id FROM product_categories pc WHERE pc.category_id = ?) \
                 ORDER BY p.id LIMIT ? OFFSET ?"
            ))
            .bind(category)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *conn)
            .await?;
            (total, rows)
        }
    };
    let mut products: Vec<ProductRow> = rows.into_iter().map(from_row).collect();
    attach_categories(&mut conn, &mut products).await?;
    Ok((products, total))
}

/// Every category with at least one live product, and how many live products it holds, by name.
pub(crate) async fn categories(db: &Db) -> Result<Vec<(String, i64)>, ProductError> {
    // An inner join, so a category without live products has no row to count; a product is in a
    // category at most once (the primary key), so the rows counted are distinct products.
    Ok(sqlx::query_as(
        "SELECT c.name, COUNT(*) FROM categories c \
         JOIN product_categories pc ON pc.category_id = c.id \
         JOIN products p ON p.id = pc.product_id \
         WHERE p.deleted_at IS NULL \
         GROUP BY c.id, c.name \
         ORDER BY c.name",
    )
    .fetch_all(db.pool())
    .await?)
}

/// A page of live products whose search text matches every pattern (`LIKE`, escape `!`), and the total.
pub(crate) async fn search(
    db: &Db,
    patterns: &[String],
    page: Page,
) -> Result<(Vec<ProductRow>, i64), ProductError> {
    // Only fixed fragments are put together here; the patterns are bound.
    let filter: String = " AND p.search_text LIKE ? ESCAPE '!'".repeat(patterns.len());
    let count_sql = format!("SELECT COUNT(*) FROM products p WHERE p.deleted_at IS NULL{filter}");
    let page_sql = format!(
        concat!(
            "SELECT ",
            product_columns!(),
            " FROM products p WHERE p.deleted_at IS NULL{} ORDER BY p.id LIMIT ? OFFSET ?"
        ),
        filter
    );
    let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql));
    let mut rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(page_sql));
    for pattern in patterns {
        count = count.bind(pattern.as_str());
        rows = rows.bind(pattern.as_str());
    }
    let mut conn = db.pool().acquire().await?;
    let total = count.fetch_one(&mut *conn).await?;
    let rows = rows.bind(page.limit()).bind(page.offset()).fetch_all(&mut *conn).await?;
    let mut products: Vec<ProductRow> = rows.into_iter().map(from_row).collect();
    attach_categories(&mut conn, &mut products).await?;
    Ok((products, total))
}

/// Applies `changes` to a live product and returns it as it now is.
pub(crate) async fn update(db: &Db, id: i64, changes: &Changes) -> Result<ProductRow, ProductError> {
    if changes.is_empty() {
        return find(db, id).await?.ok_or(ProductError::NotFound(id));
    }
    let mut tx = db.pool().begin().await?;
    // The write first: it locks the row (MySQL) or the database (SQLite) for the whole transaction.
    let updated = sqlx::query(
        "UPDATE products SET \
         name = COALESCE(?, name), description = COALESCE(?, description), \
         picture = COALESCE(?, picture), price_cents = COALESCE(?, price_cents), \
         stock = COALESCE(?, stock), updated_at = ? \
         WHERE id = ? AND deleted_at IS NULL",
    )
    .bind(changes.name.as_deref())
    .bind(changes.description.as_deref())
    .bind(changes.picture.as_deref())
    .bind(changes.price_cents.map(Cents::get))
    .bind(changes.stock)
    .bind(now_unix())
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Err(ProductError::NotFound(id));
    }
    if let Some(categories) = &changes.categories {
        set_categories(&mut tx, db.backend(), id, categories).await?;
    }
    // Read only after every write: on MySQL the first plain read fixes the transaction's snapshot.
    let product = load(&mut tx, id).await?.ok_or_else(|| vanished(id))?;
    if changes.name.is_some() || changes.description.is_some() {
        sqlx::query("UPDATE products SET search_text = ? WHERE id = ?")
            .bind(search_text(&product.name, &product.description))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(product)
}

/// Soft-deletes a product; deleting a deleted product succeeds again. `NotFound` for an unknown id.
pub(crate) async fn delete(db: &Db, id: i64) -> Result<(), ProductError> {
    let now = now_unix();
    let deleted =
        sqlx::query("UPDATE products SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL")
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(db.pool())
            .await?
            .rows_affected();
    if deleted > 0 {
        return Ok(());
    }
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT id FROM products WHERE id = ?").bind(id).fetch_optional(db.pool()).await?;
    match exists {
        Some(_) => Ok(()),
        None => Err(ProductError::NotFound(id)),
    }
}

fn vanished(id: i64) -> ProductError {
    ProductError::Internal(format!("product {id} vanished inside its own transaction"))
}

// ---------------------------------------------------------------------------------------------------
// Stock

use ReservationStatus::{Released, Reserved};

/// What ReserveStock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// The stock was taken now.
    Reserved(Vec<Line>),
    /// The order had already reserved exactly these lines; nothing was taken.
    Replayed(Vec<Line>),
}

/// Takes the stock for every line (sorted by product id), all or nothing, once per order id.
pub(crate) async fn reserve(db: &Db, order_id: &str, lines: &[Line]) -> Result<Reservation, ProductError> {
    let now = now_unix();
    let mut tx = db.pool().begin().await?;
    // The order's marker first: a write, and the guard that makes a second reservation impossible. A
    // concurrent duplicate waits here for the first transaction and then fails as a unique violation.
    let marked = sqlx::query(
        "INSERT INTO stock_orders (order_id, status, created_at, updated_at) VALUES (?, ?, ?, ?)",
    )
    .bind(order_id)
    .bind(Reserved.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match marked {
        Ok(_) => {}
        Err(e) if mall_storage::is_unique_violation(&e) => {
            tx.rollback().await?;
            return replay(db, order_id, lines).await;
        }
        Err(e) => return Err(e.into()),
    }
    for line in lines {
        let taken = sqlx::query(
            "UPDATE products SET stock = stock - ? WHERE id = ? AND deleted_at IS NULL AND stock >= ?",
        )
        .bind(line.quantity)
        .bind(line.product_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            let why = shortage(&mut tx, *line).await;
            tx.rollback().await?;
            return Err(why?);
        }
        sqlx::query("INSERT INTO stock_reservations (order_id, product_id, quantity) VALUES (?, ?, ?)")
            .bind(order_id)
            .bind(line.product_id)
            .bind(line.quantity)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Reservation::Reserved(lines.to_vec()))
}

/// Why `line` could not be taken: the product is not for sale, or has too little stock.
async fn shortage(conn: &mut AnyConnection, line: Line) -> Result<ProductError, ProductError> {
    let row: Option<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT name, stock, deleted_at FROM products WHERE id = ?")
            .bind(line.product_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some((name, available, None)) => ProductError::InsufficientStock {
            product_id: line.product_id,
            name,
            requested: line.quantity,
            available,
        },
        _ => ProductError::NotForSale(line.product_id),
    })
}

/// The answer to a reservation for an order id that already has a marker.
async fn replay(db: &Db, order_id: &str, lines: &[Line]) -> Result<Reservation, ProductError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM stock_orders WHERE order_id = ?")
        .bind(order_id)
        .fetch_optional(db.pool())
        .await?;
    match status.map(|s| s.parse::<ReservationStatus>()).transpose()? {
        Some(Reserved) => {}
        Some(Released) => return Err(ProductError::ReservationReleased(order_id.to_owned())),
        None => {
            return Err(ProductError::Internal(format!(
                "order {order_id:?} was reserved but its marker is gone"
            )));
        }
    }
    let held = reserved_lines(db.pool(), order_id).await?;
    if held == lines {
        Ok(Reservation::Replayed(held))
    } else {
        Err(ProductError::ReservationConflict(order_id.to_owned()))
    }
}

/// The lines an order reserved, by product id.
async fn reserved_lines<'c, E>(executor: E, order_id: &str) -> Result<Vec<Line>, ProductError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT product_id, quantity FROM stock_reservations WHERE order_id = ? ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|(product_id, quantity)| Line { product_id, quantity }).collect())
}

/// Gives back what an order holds, once; returns the lines given back (none on a second call or for
/// an order that never reserved). Either way the order id can never reserve afterwards.
pub(crate) async fn release(db: &Db, order_id: &str) -> Result<Vec<Line>, ProductError> {
    let now = now_unix();
    let mut tx = db.pool().begin().await?;
    let released =
        sqlx::query("UPDATE stock_orders SET status = ?, updated_at = ? WHERE order_id = ? AND status = ?")
            .bind(Released.as_str())
            .bind(now)
            .bind(order_id)
            .bind(Reserved.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if released == 0 {
        // Unknown or already released. Remember the release, so that a reservation for this order
        // arriving late (a retry after a timeout) cannot take stock for an order that will never be paid.
        let tombstone = sqlx::query(
            "INSERT INTO stock_orders (order_id, status, created_at, updated_at) VALUES (?, ?, ?, ?)",
        )
        .bind(order_id)
        .bind(Released.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match tombstone {
            Ok(_) => {}
            Err(e) if mall_storage::is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let lines = reserved_lines(&mut *tx, order_id).await?;
    for line in &lines {
        sqlx::query("UPDATE products SET stock = stock + ? WHERE id = ?")
            .bind(line.quantity)
            .bind(line.product_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(lines)
}

// ---------------------------------------------------------------------------------------------------
// Seeds

/// Inserts `products` in one transaction if the products table is empty and this seed never ran;
/// true when it inserted them.
pub(crate) async fn seed(db: &Db, seed_name: &str, products: &[NewProduct]) -> Result<bool, ProductError> {
    let now = now_unix();
    let mut tx = db.pool().begin().await?;
    // The seed's marker first: a write (SQLite's lock) and the guard against a concurrent seeder.
    let marked = sqlx::query("INSERT INTO catalog_seeds (name, applied_at) VALUES (?, ?)")
        .bind(seed_name)
        .bind(now)
        .execute(&mut *tx)
        .await;
    match marked {
        Ok(_) => {}
        Err(e) if mall_storage::is_unique_violation(&e) => {
            tx.rollback().await?;
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(&mut *tx).await?;
    if existing > 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    for product in products {
        insert_product(&mut tx, db.backend(), product, now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders() {
        assert_eq!(super::placeholders(1), "?");
        assert_eq!(super::placeholders(3), "?, ?, ?");
    }
}
