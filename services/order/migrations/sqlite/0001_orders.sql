-- The order service's schema (SQLite dialect; the MySQL/MariaDB twin, with the column comments, is
-- migrations/mysql).

CREATE TABLE orders (
    order_id TEXT NOT NULL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    email TEXT NOT NULL,
    street_address TEXT NOT NULL,
    city TEXT NOT NULL,
    state TEXT NOT NULL,
    country TEXT NOT NULL,
    zip_code TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    transaction_id TEXT NOT NULL DEFAULT '',
    stock_reserved INTEGER NOT NULL DEFAULT 0,
    release_pending INTEGER NOT NULL DEFAULT 0,
    idempotency_key_hash TEXT NULL,
    request_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    UNIQUE (user_id, idempotency_key_hash)
);
CREATE INDEX orders_user_newest ON orders (user_id, created_at, order_id);
CREATE INDEX orders_status_expiry ON orders (status, expires_at);
CREATE INDEX orders_release_pending ON orders (release_pending);

CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    product_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    line_total_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
