-- The cart service's schema (SQLite dialect; the MySQL/MariaDB twin is migrations/mysql).
-- One row per (user, product). `id` only orders a cart's lines by when each product was first added:
-- adding more of a product updates its row in place, so the line keeps its place.
-- The CHECK makes the 1..999 limit hold even for two concurrent additions to the same line.
CREATE TABLE cart_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 999),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (user_id, product_id)
);
