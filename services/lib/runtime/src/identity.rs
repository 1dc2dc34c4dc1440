//! Who is calling. Every call between services carries, in the `x-mall-caller` metadata, a short-lived
//! token that the calling service signed with its own Ed25519 key for one callee (`aud`). The callee
//! verifies it against the public keys of the stack's services and lets through only the callers the
//! design names for it ([`CALLERS`]); anything else gets PERMISSION_DENIED before a handler runs.
//!
//! Why signed tokens and not mTLS: the same check runs unchanged in `mall up` (seven services in one
//! process, on loopback), it needs no TLS on the hot path nor certificate reloading in every server,
//! and keys are asymmetric, so a service that is taken over can speak only as itself, never as the
//! gateway. What it does not give: encryption of the traffic between pods (that is the network's, or
//! a mesh's), and a token seen on the wire can be replayed to the same callee until it expires (five
//! minutes). The operator generates one key per component; `mall up` generates them at start.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;
use jsonwebtoken::{Algorithm, Validation};
use mall_tokens::{PublicKey, SigningKey, TokenError, now_unix};
use serde::{Deserialize, Serialize};
use tonic::Status;

/// The metadata key that carries the caller's token.
pub const CALLER_HEADER: &str = "x-mall-caller";

/// How long a call token lives; callers make a new one when half of it has passed.
const TOKEN_LIFETIME: i64 = 300;

/// Clock difference tolerated between pods when checking expiry.
const LEEWAY: u64 = 30;

/// Verified tokens remembered by a callee (each caller reuses its token for minutes, so a hit costs a
/// map lookup instead of a signature check); the map is cleared when it grows past this.
const REMEMBERED: usize = 1024;

/// The callers each service accepts: the design's call graph (gateway → every service; checkout →
/// cart, order, payment; cart → product; order → product; payment → order). Only what the code calls.
pub const CALLERS: &[(&str, &[&str])] = &[
    ("auth", &["gateway"]),
    ("user", &["gateway"]),
    ("product", &["gateway", "cart", "order"]),
    ("cart", &["gateway", "checkout"]),
    ("order", &["gateway", "checkout", "payment"]),
    ("payment", &["gateway", "checkout"]),
    ("checkout", &["gateway"]),
];

/// Every component that has an identity.
pub const COMPONENTS: &[&str] =
    &["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the identity key is not a PKCS#8 PEM Ed25519 key: {0}")]
    Key(TokenError),
    #[error(
        "bad entry {entry:?} in the peers' keys (expected name=base64url-key, comma-separated): {reason}"
    )]
    Peers { entry: String, reason: String },
    #[error("the peers' keys do not include this service's own ({0})")]
    NotAPeer(String),
}

/// The metadata that marks a PERMISSION_DENIED as this check's (not a handler's "not yours").
const REFUSAL_MARK: &str = "x-mall-refused-caller";

/// PERMISSION_DENIED for a caller this service does not accept.
pub fn refusal(message: String) -> Status {
    let mut status = Status::permission_denied(message);
    status.metadata_mut().insert(REFUSAL_MARK, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether `status` is a callee's refusal of its caller's identity.
pub fn is_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::PermissionDenied && status.metadata().contains_key(REFUSAL_MARK)
}

/// Whether `caller` may call the gRPC method at `path` (`/mall.<service>.v1.<Service>/<Method>`).
pub fn may_call(caller: &str, path: &str) -> bool {
    let Some(service) = path.strip_prefix("/mall.").and_then(|rest| rest.split('.').next()) else {
        return false;
    };
    CALLERS.iter().any(|(callee, callers)| *callee == service && callers.contains(&caller))
}

/// The claims of a call token.
#[derive(Debug, Serialize, Deserialize)]
struct CallClaims {
    /// The calling service.
    iss: String,
    /// The called service.
    aud: String,
    iat: i64,
    exp: i64,
}

/// The public keys of the stack's services, by key id.
#[derive(Default)]
struct Keyring {
    by_kid: HashMap<String, (String, jsonwebtoken::DecodingKey)>,
}

/// One service's identity: its name, its private key, and every service's public keys.
#[derive(Clone)]
pub struct Identity {
    name: String,
    key: SigningKey,
    keyring: Arc<Keyring>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("name", &self.name).field("kid", &self.key.kid()).finish()
    }
}

impl Identity {
    /// `name`'s identity: its `key` and the public keys of the services it may hear from.
    pub fn new(
        name: &str,
        key: SigningKey,
        peers: impl IntoIterator<Item = (String, PublicKey)>,
    ) -> Identity {
        let by_kid = peers
            .into_iter()
            .map(|(service, public)| (public.kid.clone(), (service, public.decoding_key())))
            .collect();
        Identity { name: name.to_owned(), key, keyring: Arc::new(Keyring { by_kid }) }
    }

    /// From configuration (`MALL_IDENTITY_KEY`, `MALL_IDENTITY_PEERS`): a PEM private key and
    /// `name=base64url-public-key,…` for the stack's services (this one included, as a check that the
    /// two settings belong together).
    pub fn from_config(name: &str, key_pem: &str, peers: &str) -> Result<Identity, IdentityError> {
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(IdentityError::Key)?;
        let peers = parse_peers(peers)?;
        let own = key.public_key();
        if !peers.iter().any(|(service, public)| service == name && *public == own) {
            return Err(IdentityError::NotAPeer(name.to_owned()));
        }
        Ok(Identity::new(name, key, peers))
    }

    /// Fresh identities for every component that know each other (`mall up`, tests).
    pub fn generate_all() -> HashMap<String, Identity> {
        let keys: Vec<(&str, SigningKey)> = COMPONENTS.iter().map(|&c| (c, SigningKey::generate())).collect();
        let peers: Vec<(String, PublicKey)> =
            keys.iter().map(|(c, k)| (c.to_string(), k.public_key())).collect();
        keys.into_iter().map(|(c, key)| (c.to_owned(), Identity::new(c, key, peers.clone()))).collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this service attaches to its calls to `callee`.
    pub fn credential(&self, callee: &str) -> Credential {
        Credential(Arc::new(CredentialInner {
            caller: self.clone(),
            audience: callee.to_owned(),
            current: Mutex::new(None),
        }))
    }

    /// The check this service's server runs on every call.
    pub fn access(&self) -> Access {
        Access {
            checker: Some(Arc::new(Checker {
                identity: self.clone(),
                remembered: Mutex::new(HashMap::new()),
            })),
        }
    }
}

/// `name=key,name=key` → pairs; a name may appear more than once (a key being replaced).
pub fn parse_peers(text: &str) -> Result<Vec<(String, PublicKey)>, IdentityError> {
    let mut peers = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: String| IdentityError::Peers { entry: entry.to_owned(), reason };
        let (name, key) = entry.split_once('=').ok_or_else(|| bad("no '='".to_owned()))?;
        let public = PublicKey::from_base64(key).map_err(|e| bad(e.to_string()))?;
        peers.push((name.trim().to_owned(), public));
    }
    Ok(peers)
}

/// The configuration form of the peers' keys, as [`parse_peers`] reads it.
pub fn format_peers<'a>(peers: impl IntoIterator<Item = (&'a str, &'a PublicKey)>) -> String {
    peers.into_iter().map(|(name, key)| format!("{name}={}", key.to_base64())).collect::<Vec<_>>().join(",")
}

/// A caller's token for one callee, made again when half its life has passed.
#[derive(Clone)]
pub struct Credential(Arc<CredentialInner>);

struct CredentialInner {
    caller: Identity,
    audience: String,
    /// The token and when to make the next one.
    current: Mutex<Option<(HeaderValue, i64)>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("caller", &self.0.caller.name)
            .field("audience", &self.0.audience)
            .finish()
    }
}

impl Credential {
    /// The header value to send now.
    pub fn header(&self) -> Option<HeaderValue> {
        let now = now_unix();
        let mut current = self.0.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((value, renew_at)) = current.as_ref()
            && now < *renew_at
        {
            return Some(value.clone());
        }
        let claims = CallClaims {
            iss: self.0.caller.name.clone(),
            aud: self.0.audience.clone(),
            iat: now,
            exp: now + TOKEN_LIFETIME,
        };
        match self.0.caller.key.sign_claims(&claims).map(HeaderValue::try_from) {
            Ok(Ok(value)) => {
                *current = Some((value.clone(), now + TOKEN_LIFETIME / 2));
                Some(value)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a call token is not a valid header value");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a call token");
                None
            }
        }
    }
}

/// The check a server runs on each gRPC call: who is calling, and may they.
#[derive(Clone, Default)]
pub struct Access {
    checker: Option<Arc<Checker>>,
}

struct Checker {
    identity: Identity,
    /// Verified tokens: the caller and the token's expiry.
    remembered: Mutex<HashMap<String, (String, i64)>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.checker {
            Some(c) => write!(f, "Access({})", c.identity.name),
            None => f.write_str("Access(unchecked)"),
        }
    }
}

impl Access {
    /// No check at all: a service's own unit tests, which call it directly. Never in a running mall.
    pub fn unchecked() -> Access {
        Access { checker: None }
    }

    /// Allows the call at `path` or says why not. Only Mall's own services are checked: the standard
    /// health service and the HTTP probes answer anyone.
    pub fn check(&self, path: &str, token: Option<&HeaderValue>) -> Result<(), Status> {
        let Some(checker) = &self.checker else { return Ok(()) };
        if !path.starts_with("/mall.") {
            return Ok(());
        }
        let me = &checker.identity.name;
        let token = token
            .and_then(|t| t.to_str().ok())
            .ok_or_else(|| refusal(format!("{path}: the call carries no caller identity")))?;
        let caller = checker.caller(token)?;
        if may_call(&caller, path) {
            Ok(())
        } else {
            tracing::warn!(caller = %caller, path, "refused a caller the design does not name");
            Err(refusal(format!("{caller} may not call {path} on {me}")))
        }
    }
}

impl Checker {
    /// The verified caller of `token`.
    fn caller(&self, token: &str) -> Result<String, Status> {
        let now = now_unix();
        {
            let remembered = self.remembered.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((caller, exp)) = remembered.get(token)
                && now <= exp + LEEWAY as i64
            {
                return Ok(caller.clone());
            }
        }
        let refuse = |why: &str| refusal(format!("the caller's identity is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| refuse("not a token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(refuse("wrong algorithm"));
        }
        let kid = header.kid.ok_or_else(|| refuse("no key id"))?;
        let (service, key) = self.identity.keyring.by_kid.get(&kid).ok_or_else(|| refuse("unknown key"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY;
        validation.set_audience(&[&self.identity.name]);
        validation.set_issuer(&[service]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<CallClaims>(token, key, &validation)
            .map_err(|e| refuse(&e.to_string()))?
            .claims;
        let mut remembered = self.remembered.lock().unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(token.to_owned(), (claims.iss.clone(), claims.exp));
        Ok(claims.iss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADD_ITEM: &str = "/mall.cart.v1.CartService/AddItem";

    fn header(credential: &Credential) -> HeaderValue {
        credential.header().expect("a token")
    }

    #[test]
    fn the_call_graph_is_the_designs() {
        assert!(may_call("gateway", "/mall.auth.v1.AuthService/IssueToken"));
        assert!(may_call("checkout", ADD_ITEM));
        assert!(may_call("payment", "/mall.order.v1.OrderService/MarkPaid"));
        assert!(!may_call("payment", "/mall.auth.v1.AuthService/IssueToken"));
        assert!(!may_call("cart", "/mall.order.v1.OrderService/MarkPaid"));
        assert!(!may_call("checkout", "/mall.product.v1.ProductService/ReserveStock"));
        assert!(!may_call("gateway", "/grpc.health.v1.Health/Check"), "not a Mall service");
        assert!(!may_call("gateway", "/mall.nothing.v1.X/Y"));
    }

    #[test]
    fn every_method_has_its_callers() {
        for path in mall_proto::METHODS {
            assert!(may_call("gateway", path), "the gateway calls every service: {path}");
        }
        assert_eq!(CALLERS.len() + 1, COMPONENTS.len(), "every component but the gateway serves gRPC");
    }

    #[test]
    fn a_named_caller_passes_and_others_are_refused() {
        let ids = Identity::generate_all();
        let cart = ids["cart"].access();
        assert!(cart.check(ADD_ITEM, Some(&header(&ids["gateway"].credential("cart")))).is_ok());
        assert!(cart.check(ADD_ITEM, Some(&header(&ids["checkout"].credential("cart")))).is_ok());

        let refused = cart.check(ADD_ITEM, Some(&header(&ids["payment"].credential("cart")))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("payment may not call"), "{}", refused.message());

        let none = cart.check(ADD_ITEM, None).unwrap_err();
        assert!(is_refusal(&none) && is_refusal(&refused));
        assert!(!is_refusal(&Status::permission_denied("not your order")));
        assert!(none.message().contains("no caller identity"));
    }

    #[test]
    fn a_token_for_another_callee_or_from_an_unknown_key_is_refused() {
        let ids = Identity::generate_all();
        let cart = ids["cart"].access();
        // The gateway's token for order, replayed to cart.
        let elsewhere = cart.check(ADD_ITEM, Some(&header(&ids["gateway"].credential("order")))).unwrap_err();
        assert_eq!(elsewhere.code(), tonic::Code::PermissionDenied);

        // A stranger who calls itself the gateway: another stack's key.
        let stranger = Identity::generate_all();
        let forged =
            cart.check(ADD_ITEM, Some(&header(&stranger["gateway"].credential("cart")))).unwrap_err();
        assert!(forged.message().contains("unknown key"), "{}", forged.message());

        // Garbage, and a token whose signature was tampered with.
        let garbage = HeaderValue::from_static("not-a-token");
        assert_eq!(cart.check(ADD_ITEM, Some(&garbage)).unwrap_err().code(), tonic::Code::PermissionDenied);
        let mut token = header(&ids["gateway"].credential("cart")).to_str().unwrap().to_owned();
        let last = token.pop().unwrap();
        token.push(if last == 'A' { 'B' } else { 'A' });
        let tampered = HeaderValue::try_from(token).unwrap();
        assert_eq!(cart.check(ADD_ITEM, Some(&tampered)).unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn a_key_claiming_another_name_is_refused() {
        // Payment's own key, signing a token that says it is the gateway.
        let ids = Identity::generate_all();
        let impostor = Identity { name: "gateway".to_owned(), ..ids["payment"].clone() };
        let refused =
            ids["cart"].access().check(ADD_ITEM, Some(&header(&impostor.credential("cart")))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn health_and_unchecked_servers_answer_anyone() {
        let ids = Identity::generate_all();
        assert!(ids["cart"].access().check("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(Access::unchecked().check(ADD_ITEM, None).is_ok());
    }

    #[test]
    fn configuration_round_trips_and_must_belong_together() {
        let keys: Vec<(&str, SigningKey)> =
            ["gateway", "cart"].iter().map(|&c| (c, SigningKey::generate())).collect();
        let publics: Vec<(&str, PublicKey)> = keys.iter().map(|(c, k)| (*c, k.public_key())).collect();
        let peers = format_peers(publics.iter().map(|(c, k)| (*c, k)));
        let cart = Identity::from_config("cart", &keys[1].1.to_pkcs8_pem(), &peers).unwrap();
        let gateway = Identity::from_config("gateway", &keys[0].1.to_pkcs8_pem(), &peers).unwrap();
        assert!(cart.access().check(ADD_ITEM, Some(&header(&gateway.credential("cart")))).is_ok());

        let stray = SigningKey::generate().to_pkcs8_pem();
        assert!(matches!(Identity::from_config("cart", &stray, &peers), Err(IdentityError::NotAPeer(_))));
        assert!(matches!(Identity::from_config("cart", "junk", &peers), Err(IdentityError::Key(_))));
        assert!(matches!(parse_peers("cart"), Err(IdentityError::Peers { .. })));
        assert!(matches!(parse_peers("cart=!!"), Err(IdentityError::Peers { .. })));
    }

    #[test]
    fn a_credential_reuses_its_token_until_half_its_life() {
        let ids = Identity::generate_all();
        let credential = ids["gateway"].credential("cart");
        assert_eq!(credential.header(), credential.header());
    }
}
