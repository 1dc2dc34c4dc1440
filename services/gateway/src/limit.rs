//! Rate limits, counted in the shared cache so every gateway replica sees the same counts: login and
//! register per client address and per email, the routes that spend money per user, product search
//! per client address. An IPv6 client is counted by its /64.

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

/// How many requests a window allows, per what is counted. Counts live in the shared cache (Redis when
/// configured), so every gateway replica spends the same budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Logins and registrations per client address (an IPv6 client: per /64).
    pub per_address: u64,
    /// Logins and registrations per email.
    pub per_email: u64,
    /// Requests that spend money (`/payment/charge`, `/checkout`, `/order/place`, together) per user.
    pub per_user: u64,
    /// Product searches per client address (an IPv6 client: per /64).
    pub search_per_address: u64,
    /// The window the counts are kept for.
    pub window: Duration,
}

impl Limits {
    /// What the gateway allows unless configured otherwise.
    pub const DEFAULT: Limits = Limits {
        per_address: 30,
        per_email: 10,
        per_user: 10,
        search_per_address: 60,
        window: Duration::from_secs(60),
    };

    /// Limits no client reaches (benchmarks, tests about something else).
    pub const UNLIMITED: Limits = Limits {
        per_address: u64::MAX,
        per_email: u64::MAX,
        per_user: u64::MAX,
        search_per_address: u64::MAX,
        window: Duration::from_secs(60),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What an address is counted as: an IPv4 address as itself (an IPv4-mapped IPv6 address too), an
/// IPv6 address by its /64, the block one subscriber usually holds whole.
pub fn address_bucket(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Counts one request against `key`; 429 with the wait when it is over `max`.
async fn spend(cache: &Cache, key: &str, max: u64, window: Duration) -> Result<(), ApiError> {
    let (count, reset) = cache.hit(key, window).await.map_err(|e| {
        tracing::error!(error = %e, "rate-limit counter unreachable");
        ApiError::Unavailable("try again shortly".into())
    })?;
    if count > max {
        let retry_after = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        tracing::info!(key, "rate limited");
        return Err(ApiError::TooManyRequests { retry_after: retry_after.max(1) });
    }
    Ok(())
}

/// Counts one attempt of `action` (login, register) by `addr` for `email`; 429 with the wait when
/// either is over its limit.
pub async fn attempt(
    cache: &Cache,
    limits: &Limits,
    action: &str,
    addr: IpAddr,
    email: &str,
) -> Result<(), ApiError> {
    let email: String = email.trim().to_lowercase().chars().take(254).collect();
    let bucket = address_bucket(addr);
    spend(cache, &format!("limit:{action}:addr:{bucket}"), limits.per_address, limits.window).await?;
    spend(cache, &format!("limit:{action}:email:{email}"), limits.per_email, limits.window).await
}

/// Counts one request that spends money for `user_id`.
pub async fn spending(cache: &Cache, limits: &Limits, user_id: i64) -> Result<(), ApiError> {
    spend(cache, &format!("limit:spend:user:{user_id}"), limits.per_user, limits.window).await
}

/// Counts one product search from `addr`.
pub async fn search(cache: &Cache, limits: &Limits, addr: IpAddr) -> Result<(), ApiError> {
    let bucket = address_bucket(addr);
    spend(cache, &format!("limit:search:addr:{bucket}"), limits.search_per_address, limits.window).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_per_64_and_ipv4_per_address() {
        let bucket = |s: &str| address_bucket(s.parse().unwrap());
        assert_eq!(bucket("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
        assert_eq!(bucket("203.0.113.7"), "203.0.113.7");
        assert_ne!(bucket("203.0.113.8"), bucket("203.0.113.7"));
        assert_eq!(bucket("::ffff:203.0.113.7"), "203.0.113.7", "an IPv4 client of a dual-stack socket");
    }

    #[tokio::test]
    async fn each_budget_allows_its_number_then_refuses_with_the_wait() {
        let cache = Cache::memory("limits");
        let limits = Limits { per_user: 2, search_per_address: 3, ..Limits::DEFAULT };
        for _ in 0..2 {
            spending(&cache, &limits, 7).await.unwrap();
        }
        let Err(ApiError::TooManyRequests { retry_after }) = spending(&cache, &limits, 7).await else {
            panic!("the third spending request is refused");
        };
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        spending(&cache, &limits, 8).await.expect("another user has a budget of their own");

        let here: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        for addr in [here, same_64, here] {
            search(&cache, &limits, addr).await.unwrap();
        }
        assert!(search(&cache, &limits, same_64).await.is_err(), "one /64, one budget");
        search(&cache, &limits, "2001:db8:0:1::1".parse().unwrap()).await.expect("another /64");
    }
}
