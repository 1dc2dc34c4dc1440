-- The cart service's schema (MySQL/MariaDB dialect; the SQLite twin is migrations/sqlite).
-- One row per (user, product). `id` only orders a cart's lines by when each product was first added:
-- adding more of a product updates its row in place, so the line keeps its place.
-- The CHECK makes the 1..999 limit hold even for two concurrent additions to the same line.
CREATE TABLE cart_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE KEY cart_items_line (user_id, product_id),
    CONSTRAINT cart_items_quantity CHECK (quantity BETWEEN 1 AND 999)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
