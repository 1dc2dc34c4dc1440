-- Every charge attempt, approved or declined. NEVER the card number or the CVV: only the last four
-- digits and the brand.
--
-- `succeeded_order_id` holds the order id while an approved charge is being asked of the processor
-- (status 'processing') and once it succeeded; it is NULL for declined and voided attempts. Its UNIQUE
-- index makes two successful charges of one order impossible, whatever the concurrency.
-- `idempotency_key` is the caller's key (NULL when none), unique per user.
CREATE TABLE payments (
    transaction_id TEXT NOT NULL PRIMARY KEY,
    order_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    card_last4 TEXT NOT NULL,
    card_brand TEXT NOT NULL,
    status TEXT NOT NULL,
    decline_reason TEXT NOT NULL,
    idempotency_key TEXT NULL,
    succeeded_order_id TEXT NULL UNIQUE,
    order_marked_paid INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX payments_order ON payments (order_id, created_at);
CREATE INDEX payments_status ON payments (status, updated_at);
