-- Ed25519 signing keys. The newest signs; all of them verify, so tokens outlive a rotation.
CREATE TABLE signing_keys (
    kid TEXT NOT NULL PRIMARY KEY,
    private_key_pem TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
