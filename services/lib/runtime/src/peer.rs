//! Channels to peer services, from the addresses in configuration (`MALL_<SERVICE>_ADDR`).
//!
//! An address whose host is an IP literal or `localhost` gets one lazily connected channel. A DNS name
//! (a Kubernetes headless Service, say) gets a balanced channel instead: a background task resolves the
//! name every few seconds and keeps one connection per address, so calls spread over every replica and
//! follow them as they come and go (servers cap connection age, so long-lived clients rebalance too).

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::RuntimeError;

/// How often a DNS peer address is resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// Room for endpoint changes not yet taken in by the balancer (it takes them on the next call).
const CHANGES_CAPACITY: usize = 128;

/// A lazily connected channel to `addr` (`http://host:port`, or `host:port`): the peer may start after us,
/// and a peer that restarts is reconnected to on the next call. When the host is a DNS name, calls are
/// balanced over every address it resolves to (see [`balanced_channel`]).
pub fn channel(addr: &str) -> Result<Channel, RuntimeError> {
    let text = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let bad = |reason: String| RuntimeError::PeerAddress { addr: addr.to_owned(), reason };
    let uri = text.parse::<Uri>().map_err(|e| bad(e.to_string()))?;
    let host = uri.host().ok_or_else(|| bad("no host".to_owned()))?;
    if is_dns_name(host) {
        let scheme = uri.scheme_str().unwrap_or("http");
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        // Fail now, not in the background, if no endpoint can be made of this scheme and name.
        Endpoint::from_shared(format!("{scheme}://{host}:{port}")).map_err(|e| bad(e.to_string()))?;
        return Ok(balanced_channel(scheme, host, port, DnsResolver, RESOLVE_INTERVAL));
    }
    let endpoint = Endpoint::from_shared(text).map_err(|e| bad(e.to_string()))?;
    Ok(configure(endpoint).connect_lazy())
}

/// Whether `host` (as a URI spells it: IPv6 in brackets) must be resolved to find its addresses.
fn is_dns_name(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal.parse::<IpAddr>().is_err() && !literal.eq_ignore_ascii_case("localhost")
}

/// The settings of every peer connection.
fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
}

/// What [`Resolver::resolve`] returns.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Finds the addresses behind a peer's host name.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> Resolution;
}

/// The system resolver (`getaddrinfo`, through `tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsResolver;

impl Resolver for DnsResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolution {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The balancer's key for one endpoint.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Key {
    /// The name itself, connected to as is: used only while the name has never resolved, so that calls
    /// fail with a connection error instead of waiting for an address forever.
    Unresolved,
    Address(SocketAddr),
}

/// A channel balanced over the addresses `resolver` finds for `host:port`, resolved again every
/// `interval`. New addresses are connected to (lazily), vanished ones dropped; when resolution fails or
/// finds nothing, the last addresses found are kept. Requests carry `scheme://host:port` as their
/// authority. The resolving task ends once every clone of the channel is dropped. Must be called inside
/// a Tokio runtime.
pub fn balanced_channel(
    scheme: &str,
    host: &str,
    port: u16,
    resolver: impl Resolver,
    interval: Duration,
) -> Channel {
    let (channel, changes) = Channel::balance_channel::<Key>(CHANGES_CAPACITY);
    let peer = Peer { scheme: scheme.to_owned(), host: host.to_owned(), port };
    tokio::spawn(keep_resolved(peer, resolver, interval, changes));
    channel
}

struct Peer {
    scheme: String,
    host: String,
    port: u16,
}

impl Peer {
    fn endpoint(&self, key: Key) -> Option<Endpoint> {
        let uri = match key {
            Key::Unresolved => format!("{}://{}:{}", self.scheme, self.host, self.port),
            Key::Address(addr) => format!("{}://{addr}", self.scheme),
        };
        let origin = format!("{}://{}:{}", self.scheme, self.host, self.port);
        match (Endpoint::from_shared(uri), origin.parse::<Uri>()) {
            (Ok(endpoint), Ok(origin)) => Some(configure(endpoint).origin(origin)),
            (Err(e), _) => {
                tracing::warn!(peer = %self.host, ?key, error = %e, "cannot make an endpoint");
                None
            }
            (_, Err(e)) => {
                tracing::warn!(peer = %self.host, error = %e, "cannot make the origin");
                None
            }
        }
    }
}

/// The channel was dropped: nothing is listening for changes any more.
struct Closed;

/// Resolves `peer` every `interval` and sends the balancer what changed, until the channel is gone.
async fn keep_resolved(
    peer: Peer,
    resolver: impl Resolver,
    interval: Duration,
    changes: Sender<Change<Key, Endpoint>>,
) {
    let mut current: HashSet<Key> = HashSet::new();
    let mut failing = false;
    loop {
        let resolved = tokio::select! {
            () = changes.closed() => return,
            resolved = resolver.resolve(&peer.host, peer.port) => resolved,
        };
        let found: HashSet<Key> = match resolved {
            Ok(addrs) if !addrs.is_empty() => {
                if failing {
                    tracing::info!(peer = %peer.host, addresses = addrs.len(), "the peer resolves again");
                }
                failing = false;
                addrs.into_iter().map(Key::Address).collect()
            }
            outcome => {
                if !failing {
                    let error = outcome.err().map_or_else(|| "no address".to_owned(), |e| e.to_string());
                    tracing::warn!(peer = %peer.host, %error, kept = current.len(), "cannot resolve the peer; keeping its last addresses");
                }
                failing = true;
                if current.is_empty() {
                    // Never resolved yet: let calls try the name itself (and fail) rather than wait.
                    HashSet::from([Key::Unresolved])
                } else {
                    current.clone()
                }
            }
        };
        if let Err(Closed) = update(&peer, &mut current, found, &changes).await {
            return;
        }
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Sends the balancer the difference between `current` and `next` (additions first, so that a peer is
/// never left without endpoints), and makes `current` what it now holds.
async fn update(
    peer: &Peer,
    current: &mut HashSet<Key>,
    next: HashSet<Key>,
    changes: &Sender<Change<Key, Endpoint>>,
) -> Result<(), Closed> {
    let added: Vec<Key> = next.difference(current).copied().collect();
    let removed: Vec<Key> = current.difference(&next).copied().collect();
    for key in &added {
        if let Some(endpoint) = peer.endpoint(*key) {
            changes.send(Change::Insert(*key, endpoint)).await.map_err(|_| Closed)?;
            current.insert(*key);
        }
    }
    if !next.iter().any(|key| current.contains(key)) {
        // Not one of the new endpoints could be made: better the old ones than none.
        return Ok(());
    }
    for key in &removed {
        changes.send(Change::Remove(*key)).await.map_err(|_| Closed)?;
        current.remove(key);
    }
    if !added.is_empty() || !removed.is_empty() {
        tracing::debug!(peer = %peer.host, added = added.len(), removed = removed.len(), now = current.len(), "peer addresses changed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
