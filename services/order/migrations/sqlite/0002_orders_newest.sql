-- The admin area lists every shopper's orders newest first (ListAllOrders), optionally of one status:
-- without these, each page sorted the whole table.
CREATE INDEX orders_newest ON orders (created_at, order_id);
CREATE INDEX orders_status_newest ON orders (status, created_at, order_id);
