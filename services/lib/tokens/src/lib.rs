//! Access tokens: the claims Mall puts in a JWT, and Ed25519 signing and verification by key id.
//!
//! Signing needs the private key (only the auth service has it); verifying needs only the public keys,
//! which the gateway fetches from auth, so every request is checked locally.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The only signature algorithm Mall issues or accepts.
pub const ALGORITHM: &str = "EdDSA";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed with an algorithm Mall does not accept")]
    WrongAlgorithm,
    #[error("the token names a key that is not known: {0}")]
    UnknownKey(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the signing key is not a valid Ed25519 key: {0}")]
    BadKey(String),
    #[error("the token could not be signed: {0}")]
    Signing(String),
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: expected customer or admin")),
        }
    }
}

/// The claims of a Mall access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT subjects are strings).
    pub sub: String,
    pub role: Role,
    /// Token id: the key of the revocation denylist.
    pub jti: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
}

impl Claims {
    /// Claims for a new token that lives `ttl_secs` from `now`.
    pub fn new(user_id: i64, role: Role, now: i64, ttl_secs: i64) -> Claims {
        Claims {
            sub: user_id.to_string(),
            role,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
        }
    }

    /// The user id in `sub`; a token whose subject is not a number is malformed.
    pub fn user_id(&self) -> Result<i64, TokenError> {
        self.sub.parse().map_err(|_| TokenError::Malformed)
    }

    /// Seconds of life left at `now` (0 when expired).
    pub fn remaining(&self, now: i64) -> i64 {
        (self.exp - now).max(0)
    }
}

/// The cache key under which a revoked token id is kept until the token would have expired. The auth
/// service writes it; the gateway reads it on every request.
pub fn revoked_key(jti: &str) -> String {
    format!("auth:revoked:{jti}")
}

/// The current time as unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A public key as verifiers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub key: [u8; 32],
}

impl PublicKey {
    /// Builds a key from bytes received over the wire; anything but 32 bytes is refused.
    pub fn from_slice(kid: &str, key: &[u8]) -> Result<PublicKey, TokenError> {
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| TokenError::BadKey(format!("expected 32 bytes, got {}", key.len())))?;
        ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(PublicKey { kid: kid.to_owned(), key })
    }

    /// Reads a key written by [`PublicKey::to_base64`]; its kid is derived from it, as the signer's is.
    pub fn from_base64(text: &str) -> Result<PublicKey, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|e| TokenError::BadKey(format!("not base64url: {e}")))?;
        let key = PublicKey::from_slice("", &bytes)?;
        Ok(PublicKey { kid: kid_of(&key.key), key: key.key })
    }

    /// The 32 key bytes as base64url without padding (how configuration carries a public key).
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key)
    }

    /// The key as `jsonwebtoken` verifies with it.
    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.key)
    }
}

/// The key id of a public key: derived from it, so the same key always has the same id.
fn kid_of(public: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(&public[..12])
}

/// An Ed25519 private key with the id that rides in every token's header.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> SigningKey {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), as stored or configured.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, TokenError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(Self::from_dalek(key))
    }

    /// The key as PKCS#8 PEM, for storing it.
    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .expect("an in-memory Ed25519 key always encodes as PKCS#8")
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> SigningKey {
        let der = key.to_pkcs8_der().expect("an in-memory Ed25519 key always encodes as PKCS#8");
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let kid = kid_of(key.verifying_key().as_bytes());
        SigningKey { kid, key, encoding }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.key.verifying_key().to_bytes() }
    }

    /// Signs the claims into a compact JWT with `alg: EdDSA` and this key's `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.sign_claims(claims)
    }

    /// Signs any claims (a service's call token, say) the same way.
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// Checks tokens against a set of public keys, by the `kid` in each token's header.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
}

impl Verifier {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Verifier {
        let keys = keys.into_iter().map(|k| (k.kid.clone(), k.decoding_key())).collect();
        Verifier { keys }
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key id a token claims to be signed with, read before any check.
    pub fn kid_of(token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        header.kid.ok_or(TokenError::Malformed)
    }

    /// Verifies signature, algorithm and expiry at `now` (unix seconds). Revocation is the caller's.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let kid = Self::kid_of(token)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey(kid))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked below against the caller's clock, with no leeway, so tests can move time.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        claims.user_id()?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests;
