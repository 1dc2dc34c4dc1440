-- Every charge attempt, approved or declined. NEVER the card number or the CVV: only the last four
-- digits and the brand.
--
-- `succeeded_order_id` holds the order id while an approved charge is being asked of the processor
-- (status 'processing') and once it succeeded; it is NULL for declined and voided attempts. Its UNIQUE
-- index makes two successful charges of one order impossible, whatever the concurrency.
-- `idempotency_key` is the caller's key (NULL when none), unique per user.
CREATE TABLE payments (
    transaction_id VARCHAR(36) NOT NULL PRIMARY KEY,
    order_id VARCHAR(64) NOT NULL,
    user_id BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    card_last4 VARCHAR(4) NOT NULL,
    card_brand VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    decline_reason VARCHAR(64) NOT NULL,
    idempotency_key VARCHAR(255) NULL,
    succeeded_order_id VARCHAR(64) NULL,
    order_marked_paid BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE KEY payments_succeeded_order (succeeded_order_id),
    UNIQUE KEY payments_user_key (user_id, idempotency_key),
    KEY payments_order (order_id, created_at),
    KEY payments_status (status, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
