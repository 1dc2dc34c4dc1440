//! Rate limits on login and register, per client address and per email, counted in the shared cache
//! so every gateway replica sees the same counts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use mall_storage::Cache;

use crate::AppState;
use crate::error::ApiError;

/// The client's address for rate limits: the peer of the connection, or, behind `trusted_proxies`
/// proxies (an ingress, a load balancer), the address the outermost trusted one saw — the entry that
/// many places from the right of `X-Forwarded-For`. Entries further left are the client's own claims
/// and are never trusted, so a client cannot spread its attempts over made-up addresses.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let hops = state.config.trusted_proxies;
        let forwarded = (hops > 0)
            .then(|| {
                let header = parts.headers.get_all("x-forwarded-for");
                let entries: Vec<&str> = header
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .collect();
                entries.len().checked_sub(hops).and_then(|i| entries[i].parse::<IpAddr>().ok())
            })
            .flatten();
        forwarded.or(peer).map(ClientAddr).ok_or(ApiError::Internal)
    }
}

/// How many attempts a window allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_address: u64,
    pub per_email: u64,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_address: 30, per_email: 10, window: Duration::from_secs(60) }
    }
}

/// Counts one attempt of `action` by `addr` for `email`; 429 with the wait when either is over.
pub async fn attempt(
    cache: &Cache,
    limits: &Limits,
    action: &str,
    addr: IpAddr,
    email: &str,
) -> Result<(), ApiError> {
    let email: String = email.trim().to_lowercase().chars().take(254).collect();
    let keys = [
        (format!("limit:{action}:addr:{addr}"), limits.per_address),
        (format!("limit:{action}:email:{email}"), limits.per_email),
    ];
    for (key, max) in keys {
        let (count, reset) = cache.hit(&key, limits.window).await.map_err(|e| {
            tracing::error!(error = %e, "rate-limit counter unreachable");
            ApiError::Unavailable("try again shortly".into())
        })?;
        if count > max {
            let retry_after = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
            tracing::info!(action, %addr, "rate limited");
            return Err(ApiError::TooManyRequests { retry_after: retry_after.max(1) });
        }
    }
    Ok(())
}
