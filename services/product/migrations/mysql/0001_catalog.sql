-- The product service's schema (MySQL/MariaDB dialect; the SQLite twin is migrations/sqlite).
-- Binary collation: comparisons are byte-exact on both backends; case-insensitive matching goes through
-- columns that the service lowercases itself (categories.name_key, products.search_text).

CREATE TABLE products (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    picture VARCHAR(1000) NOT NULL,
    price_cents BIGINT NOT NULL,
    stock BIGINT NOT NULL,
    -- Lowercased name + newline + lowercased description, written by the service, for search.
    search_text TEXT NOT NULL,
    deleted_at BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT products_price_range CHECK (price_cents >= 0),
    CONSTRAINT products_stock_nonnegative CHECK (stock >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE categories (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- As first given (trimmed).
    name VARCHAR(50) NOT NULL,
    -- The lowercased name: one category per name, whatever its case.
    name_key VARCHAR(200) NOT NULL,
    UNIQUE KEY categories_name_key (name_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE product_categories (
    product_id BIGINT NOT NULL,
    category_id BIGINT NOT NULL,
    -- The category's place in the product's list (order kept as given).
    position INT NOT NULL,
    PRIMARY KEY (product_id, category_id),
    KEY product_categories_category (category_id, product_id),
    CONSTRAINT product_categories_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT product_categories_category FOREIGN KEY (category_id) REFERENCES categories (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per order id that ever reserved (status 'reserved', later 'released') or was released before
-- reserving anything (status 'released'): an order id reserves at most once.
CREATE TABLE stock_orders (
    order_id VARCHAR(64) NOT NULL PRIMARY KEY,
    status VARCHAR(16) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The lines an order reserved; kept after release (the order's status says whether they are held).
CREATE TABLE stock_reservations (
    order_id VARCHAR(64) NOT NULL,
    product_id BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT stock_reservations_order FOREIGN KEY (order_id) REFERENCES stock_orders (order_id),
    CONSTRAINT stock_reservations_product FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Seeds applied once (the demo catalog), so concurrent replicas never seed twice.
CREATE TABLE catalog_seeds (
    name VARCHAR(32) NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
