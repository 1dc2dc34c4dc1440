//! Who is calling: the bearer token checked locally against auth's public keys, then the revocation
//! list. Verified tokens are cached by their hash (an Ed25519 check costs more CPU than a cached
//! product read), so a repeat request only checks revocation and that its key is still accepted.
//! Failures are never cached.
//!
//! The keys are fetched from auth when a token names a key id this gateway does not know (at most
//! once per [`KeyRefresh::unknown_kid_gap`]; concurrent requests wait for the same fetch) and every
//! [`KeyRefresh::every`]. A token whose key is unknown after that, or retired, gets 401: log in again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use mall_proto::auth::v1::ListPublicKeysRequest;
use mall_proto::auth::v1::auth_service_client::AuthServiceClient;
use mall_runtime::CancellationToken;
use mall_storage::Cache;
use mall_tokens::{Claims, PublicKey, Role, TokenError, Verifier, now_unix, revoked_key};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::upstream::Upstream;

/// What the holder of a token signed by a key that is retired (or unknown to auth) is told.
pub const LOG_IN_AGAIN: &str = "the token's signing key is no longer accepted: log in again";

/// When the gateway fetches auth's public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// The shortest time between two fetches, so that tokens with made-up key ids cannot make every
    /// request call auth.
    pub unknown_kid_gap: Duration,
    /// How often the keys are fetched anyway, so that a retired key stops verifying here.
    pub every: Duration,
}

impl Default for KeyRefresh {
    fn default() -> Self {
        KeyRefresh { unknown_kid_gap: Duration::from_secs(5), every: Duration::from_secs(60) }
    }
}

/// Where the public keys come from: auth, or a test's stand-in.
pub trait KeySource: Send + Sync + 'static {
    /// Every key that verifies now; `kid` is the key id of a token that none of ours verifies.
    fn fetch(
        &self,
        kid: Option<&str>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, ApiError>> + Send>>;
}

impl KeySource for AuthServiceClient<Upstream> {
    fn fetch(
        &self,
        kid: Option<&str>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, ApiError>> + Send>> {
        let mut auth = self.clone();
        let request = ListPublicKeysRequest { kid: kid.unwrap_or_default().to_owned() };
        Box::pin(async move {
            let response = auth.list_public_keys(request).await?.into_inner();
            let keys = response.keys.iter().filter_map(|k| match PublicKey::from_slice(&k.kid, &k.key) {
                Ok(key) => Some(key.retiring_at((k.retires_at > 0).then_some(k.retires_at))),
                Err(e) => {
                    tracing::warn!(kid = %k.kid, error = %e, "ignoring a malformed public key from auth");
                    None
                }
            });
            Ok(keys.collect())
        })
    }
}

/// The last fetch: when, and whether it worked.
#[derive(Clone, Copy)]
struct Fetched {
    at: Instant,
    ok: bool,
}

/// A verified token, with the key that signed it.
struct Verified {
    kid: String,
    claims: Arc<Claims>,
}

pub struct TokenCheck {
    source: Box<dyn KeySource>,
    refresh: KeyRefresh,
    verifier: RwLock<Option<Arc<Verifier>>>,
    /// Held while fetching, so that concurrent requests share one fetch.
    last_fetch: Mutex<Option<Fetched>>,
    verified: moka::future::Cache<[u8; 32], Arc<Verified>>,
    cache: Cache,
}

impl TokenCheck {
    pub fn new(source: impl KeySource, cache: Cache, refresh: KeyRefresh) -> TokenCheck {
        TokenCheck {
            source: Box::new(source),
            refresh,
            verifier: RwLock::new(None),
            last_fetch: Mutex::new(None),
            verified: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            cache,
        }
    }

    /// Fetches the keys every [`KeyRefresh::every`] until `stop`, or until the check is dropped.
    pub fn spawn_refresh(this: &Arc<TokenCheck>, stop: CancellationToken) {
        let check: Weak<TokenCheck> = Arc::downgrade(this);
        let every = this.refresh.every;
        let first = Instant::now() + every;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(first, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let Some(check) = check.upgrade() else { break };
                let mut last = check.last_fetch.lock().await;
                if let Err(e) = check.fetch(&mut last, None).await {
                    tracing::warn!(error = %e, "cannot refresh the public keys from auth; keeping the ones we have");
                }
            }
        });
    }

    fn current(&self) -> Option<Arc<Verifier>> {
        // Writers only swap an Arc: a poisoned lock still holds a whole verifier.
        self.verifier.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The claims of a valid, unrevoked token.
    pub async fn check(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        let now = now_unix();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.verified.get(&digest).await;
        let claims = match cached {
            Some(hit) if hit.claims.exp <= now => return Err(ApiError::TokenExpired),
            // Its key may have been retired or withdrawn since.
            Some(hit) if self.current().is_some_and(|v| v.accepts(&hit.kid, now)) => hit.claims.clone(),
            _ => {
                let (kid, claims) = self.verify(token, now).await?;
                let claims = Arc::new(claims);
                self.verified.insert(digest, Arc::new(Verified { kid, claims: claims.clone() })).await;
                claims
            }
        };
        let revoked = self.cache.exists(&revoked_key(&claims.jti)).await.map_err(|e| {
            tracing::error!(error = %e, "revocation list unreachable");
            ApiError::Unavailable("cannot check the token right now: try again shortly".into())
        })?;
        if revoked {
            return Err(ApiError::TokenRevoked);
        }
        Ok(claims)
    }

    async fn verify(&self, token: &str, now: i64) -> Result<(String, Claims), ApiError> {
        let kid = Verifier::kid_of(token).map_err(token_error)?;
        let verifier = match self.current() {
            Some(verifier) if verifier.knows(&kid) => verifier,
            _ => self.keys_for(&kid).await?,
        };
        let claims = verifier.verify(token, now).map_err(token_error)?;
        Ok((kid, claims))
    }

    /// The keys after a fetch for a token with the unknown `kid`, unless the last fetch is more recent
    /// than the gap (or brought that kid meanwhile): then the keys we have.
    async fn keys_for(&self, kid: &str) -> Result<Arc<Verifier>, ApiError> {
        let mut last = self.last_fetch.lock().await;
        let current = self.current();
        if let Some(verifier) = current.as_ref().filter(|v| v.knows(kid)) {
            return Ok(verifier.clone());
        }
        match (*last, current) {
            (Some(fetched), current) if fetched.at.elapsed() < self.refresh.unknown_kid_gap => {
                match (fetched.ok, current) {
                    (true, Some(verifier)) => Ok(verifier),
                    _ => Err(keys_unavailable()),
                }
            }
            _ => self.fetch(&mut last, Some(kid)).await,
        }
    }

    /// Fetches the keys (the caller holds the fetch lock) and makes them the current ones.
    async fn fetch(&self, last: &mut Option<Fetched>, kid: Option<&str>) -> Result<Arc<Verifier>, ApiError> {
        let fetched = self.source.fetch(kid).await;
        *last = Some(Fetched { at: Instant::now(), ok: fetched.is_ok() });
        let keys = fetched?;
        let count = keys.len();
        let verifier = Arc::new(Verifier::new(keys));
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = Some(verifier.clone());
        tracing::debug!(keys = count, "public keys refreshed from auth");
        Ok(verifier)
    }
}

fn keys_unavailable() -> ApiError {
    ApiError::Unavailable("cannot check the token right now: try again shortly".into())
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::TokenExpired,
        TokenError::UnknownKey(_) | TokenError::RetiredKey(_) => {
            ApiError::Unauthenticated(LOG_IN_AGAIN.into())
        }
        _ => ApiError::Unauthenticated("the token is not valid".into()),
    }
}

/// The caller, from a valid `Authorization: Bearer` token. Use it as a handler argument to require one.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user_id: i64,
    pub role: Role,
    pub token: String,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthenticated("log in first: send Authorization: Bearer <token>".into())
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated("the Authorization header must be Bearer <token>".into())
            })?;
        let claims = state.tokens.check(token).await?;
        let user_id = claims.user_id().map_err(token_error)?;
        Ok(CurrentUser { user_id, role: claims.role, token: token.to_owned() })
    }
}

/// Proof that the caller has the admin role; a customer gets 403 (and no token 401).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden("this route is for admins".into()));
        }
        Ok(Admin)
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
