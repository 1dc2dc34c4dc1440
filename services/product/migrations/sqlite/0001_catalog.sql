-- The product service's schema (SQLite dialect; the MySQL/MariaDB twin is migrations/mysql).
-- Case-insensitive matching goes through columns that the service lowercases itself
-- (categories.name_key, products.search_text): SQLite's own LOWER() folds ASCII only.

CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    picture TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    stock INTEGER NOT NULL CHECK (stock >= 0),
    -- Lowercased name + newline + lowercased description, written by the service, for search.
    search_text TEXT NOT NULL,
    deleted_at INTEGER NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE categories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- As first given (trimmed).
    name TEXT NOT NULL,
    -- The lowercased name: one category per name, whatever its case.
    name_key TEXT NOT NULL UNIQUE
);

CREATE TABLE product_categories (
    product_id INTEGER NOT NULL REFERENCES products (id),
    category_id INTEGER NOT NULL REFERENCES categories (id),
    -- The category's place in the product's list (order kept as given).
    position INTEGER NOT NULL,
    PRIMARY KEY (product_id, category_id)
);
CREATE INDEX product_categories_category ON product_categories (category_id, product_id);

-- One row per order id that ever reserved (status 'reserved', later 'released') or was released before
-- reserving anything (status 'released'): an order id reserves at most once.
CREATE TABLE stock_orders (
    order_id TEXT NOT NULL PRIMARY KEY,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The lines an order reserved; kept after release (the order's status says whether they are held).
CREATE TABLE stock_reservations (
    order_id TEXT NOT NULL REFERENCES stock_orders (order_id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- Seeds applied once (the demo catalog), so concurrent replicas never seed twice.
CREATE TABLE catalog_seeds (
    name TEXT NOT NULL PRIMARY KEY,
    applied_at INTEGER NOT NULL
);
