//! Rate limits on login and register, per client address and per email, counted in the shared cache
//! so every gateway replica sees the same counts.

use std::net::IpAddr;
use std::time::Duration;

use mall_storage::Cache;

use crate::error::ApiError;

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
