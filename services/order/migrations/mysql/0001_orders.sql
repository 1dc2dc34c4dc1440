-- The order service's schema (MySQL/MariaDB dialect; the SQLite twin is migrations/sqlite).

CREATE TABLE orders (
    -- UUID v7, as text.
    order_id VARCHAR(36) NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    email VARCHAR(254) NOT NULL,
    street_address VARCHAR(200) NOT NULL,
    city VARCHAR(200) NOT NULL,
    state VARCHAR(200) NOT NULL,
    country VARCHAR(200) NOT NULL,
    zip_code VARCHAR(200) NOT NULL,
    total_cents BIGINT NOT NULL,
    -- 'pending', 'paid' or 'cancelled'; every change is a conditional UPDATE on the old status.
    status VARCHAR(16) NOT NULL,
    -- The payment's transaction id once paid ('' otherwise, or when an admin marked it paid).
    transaction_id VARCHAR(128) NOT NULL DEFAULT '',
    -- 1 once ProductService.ReserveStock confirmed the reservation. An order is written before its
    -- stock is reserved, so a crash in between leaves a pending order with 0 here, which expiry settles.
    stock_reserved BIGINT NOT NULL DEFAULT 0,
    -- 1 from the moment an order is cancelled until ProductService.ReleaseStock confirmed the release;
    -- the sweeper retries the release of such orders, so no stock stays held by a cancelled order.
    release_pending BIGINT NOT NULL DEFAULT 0,
    -- SHA-256 (hex) of the client's Idempotency-Key, NULL when none was given; unique per user.
    idempotency_key_hash CHAR(64) NULL,
    -- SHA-256 (hex) of what was asked (email, address, merged items), to tell a replay from a conflict.
    request_hash CHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE KEY orders_idempotency (user_id, idempotency_key_hash),
    KEY orders_user_newest (user_id, created_at, order_id),
    KEY orders_status_expiry (status, expires_at),
    KEY orders_release_pending (release_pending)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The order's lines as they were priced when it was placed; later catalog changes do not touch them.
CREATE TABLE order_items (
    order_id VARCHAR(36) NOT NULL,
    product_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    line_total_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_items_order FOREIGN KEY (order_id) REFERENCES orders (order_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
