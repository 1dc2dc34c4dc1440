//! Channels to peer services, from the addresses in configuration (`MALL_<SERVICE>_ADDR`).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::RuntimeError;

/// A lazily connected channel to `addr` (`http://host:port`, or `host:port`): the peer may start after us,
/// and a peer that restarts is reconnected to on the next call.
pub fn channel(addr: &str) -> Result<Channel, RuntimeError> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| RuntimeError::PeerAddress { addr: addr.to_owned(), reason: e.to_string() })?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}
