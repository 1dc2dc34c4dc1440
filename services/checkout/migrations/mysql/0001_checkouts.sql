-- The persisted state of each checkout saga (see mall/checkout/v1/checkout.proto). NEVER the card
-- number or CVV: `request_hash` covers the card's last four digits and expiry only.
--
-- `idempotency_key` is the client's key, or a generated one (`key_generated` = 1) when it gave none;
-- unique per user. `cart_lines` is the cart as read at CART_READ (JSON [[product_id, quantity], ...]),
-- so that PlaceOrder is retried with exactly the same lines. `lease_owner`/`lease_until` say which call
-- is driving the saga right now (NULL/0 when none); every state write is conditional on holding it.
CREATE TABLE checkouts (
    checkout_id VARCHAR(36) NOT NULL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    key_generated BIGINT NOT NULL,
    request_hash VARCHAR(64) NOT NULL,
    step VARCHAR(16) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    transaction_id VARCHAR(64) NOT NULL,
    total_cents BIGINT NOT NULL,
    decline_reason VARCHAR(48) NOT NULL,
    failure_code BIGINT NOT NULL,
    failure_message TEXT NOT NULL,
    firstname VARCHAR(255) NOT NULL,
    lastname VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL,
    street_address VARCHAR(255) NOT NULL,
    city VARCHAR(255) NOT NULL,
    state VARCHAR(255) NOT NULL,
    country VARCHAR(255) NOT NULL,
    zip_code VARCHAR(255) NOT NULL,
    cart_lines TEXT NOT NULL,
    lease_owner VARCHAR(36) NULL,
    lease_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE KEY checkouts_user_key (user_id, idempotency_key),
    KEY checkouts_open (outcome, step, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
