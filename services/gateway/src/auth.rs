//! Who is calling: the bearer token checked locally against auth's public keys, then the revocation
//! list. Verified tokens are cached by their hash (an Ed25519 check costs more CPU than a cached
//! product read), so a repeat request only checks revocation. Failures are never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use mall_proto::auth::v1::ListPublicKeysRequest;
use mall_proto::auth::v1::auth_service_client::AuthServiceClient;
use mall_runtime::PeerChannel;
use mall_storage::Cache;
use mall_tokens::{Claims, PublicKey, Role, TokenError, Verifier, now_unix, revoked_key};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use crate::AppState;
use crate::error::ApiError;

/// How often an unknown key id may trigger a fetch of auth's keys.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

pub struct TokenCheck {
    auth: AuthServiceClient<PeerChannel>,
    verifier: RwLock<Option<Arc<Verifier>>>,
    last_refresh: Mutex<Option<Instant>>,
    verified: moka::future::Cache<[u8; 32], Arc<Claims>>,
    cache: Cache,
}

impl TokenCheck {
    pub fn new(auth: AuthServiceClient<PeerChannel>, cache: Cache) -> TokenCheck {
        TokenCheck {
            auth,
            verifier: RwLock::new(None),
            last_refresh: Mutex::new(None),
            verified: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            cache,
        }
    }

    /// The claims of a valid, unrevoked token.
    pub async fn check(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        let now = now_unix();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified.get(&digest).await {
            Some(claims) if claims.exp > now => claims,
            Some(_) => return Err(ApiError::TokenExpired),
            None => {
                let claims = Arc::new(self.verify(token, now).await?);
                self.verified.insert(digest, claims.clone()).await;
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

    async fn verify(&self, token: &str, now: i64) -> Result<Claims, ApiError> {
        let kid = Verifier::kid_of(token).map_err(token_error)?;
        let mut verifier = self.verifier.read().await.clone();
        if !verifier.as_ref().is_some_and(|v| v.knows(&kid)) {
            verifier = Some(self.refresh(verifier.is_none()).await?);
        }
        let verifier = verifier.unwrap_or_default();
        verifier.verify(token, now).map_err(token_error)
    }

    /// Fetches auth's public keys; at most once per interval unless we have none at all.
    async fn refresh(&self, have_none: bool) -> Result<Arc<Verifier>, ApiError> {
        let mut last = self.last_refresh.lock().await;
        if !have_none && last.is_some_and(|t| t.elapsed() < KEY_REFRESH_INTERVAL) {
            return Ok(self.verifier.read().await.clone().unwrap_or_default());
        }
        let response = self.auth.clone().list_public_keys(ListPublicKeysRequest {}).await?.into_inner();
        let keys = response.keys.iter().filter_map(|k| match PublicKey::from_slice(&k.kid, &k.key) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(kid = %k.kid, error = %e, "ignoring a malformed public key from auth");
                None
            }
        });
        let verifier = Arc::new(Verifier::new(keys));
        *self.verifier.write().await = Some(verifier.clone());
        *last = Some(Instant::now());
        tracing::info!(keys = response.keys.len(), "public keys refreshed from auth");
        Ok(verifier)
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::TokenExpired,
        TokenError::UnknownKey(_) => ApiError::Unauthenticated("the token is not signed by this mall".into()),
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
