-- The persisted state of each checkout saga (see mall/checkout/v1/checkout.proto). NEVER the card
-- number or CVV: `request_hash` covers the card's last four digits and expiry only.
--
-- `idempotency_key` is the client's key, or a generated one (`key_generated` = 1) when it gave none;
-- unique per user. `cart_lines` is the cart as read at CART_READ (JSON [[product_id, quantity], ...]),
-- so that PlaceOrder is retried with exactly the same lines. `lease_owner`/`lease_until` say which call
-- is driving the saga right now (NULL/0 when none); every state write is conditional on holding it.
CREATE TABLE checkouts (
    checkout_id TEXT NOT NULL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    key_generated INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    step TEXT NOT NULL,
    outcome TEXT NOT NULL,
    order_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    decline_reason TEXT NOT NULL,
    failure_code INTEGER NOT NULL,
    failure_message TEXT NOT NULL,
    firstname TEXT NOT NULL,
    lastname TEXT NOT NULL,
    email TEXT NOT NULL,
    street_address TEXT NOT NULL,
    city TEXT NOT NULL,
    state TEXT NOT NULL,
    country TEXT NOT NULL,
    zip_code TEXT NOT NULL,
    cart_lines TEXT NOT NULL,
    lease_owner TEXT NULL,
    lease_until INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX checkouts_open ON checkouts (outcome, step, updated_at);
