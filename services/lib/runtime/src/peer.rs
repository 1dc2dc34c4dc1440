//! Channels to peer services, from the addresses in configuration (`MALL_<SERVICE>_ADDR`).
//!
//! Every peer is a [`PeerChannel`]: a small pool of lazily connected HTTP/2 connections, one per
//! address of the peer, that calls take in turn. An address whose host is an IP literal or `localhost`
//! is the pool's one member. A DNS name (a Kubernetes headless Service, say) is resolved by a
//! background task every few seconds, and at once when a call meets a connection error, so calls
//! spread over every replica and follow them as they come and go (servers cap connection age, so
//! long-lived clients rebalance too). An address whose connection fails is set aside for a moment, so
//! the retry of the call (see [`PeerChannel`]) goes to another one.

mod call;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::retry::budget::TpsBudget;

use crate::RuntimeError;

pub use call::{PeerChannel, UNSCOPED_CALL_TIMEOUT};

/// How often a DNS peer address is resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest time between two resolutions that failing calls asked for.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(250);

/// How long an address whose connection failed is passed over while others are left.
const SET_ASIDE_FOR: Duration = Duration::from_secs(1);

/// A lazily connected channel to `addr` (`http://host:port`, or `host:port`): the peer may start after us,
/// and a peer that restarts is reconnected to on the next call. When the host is a DNS name, calls are
/// balanced over every address it resolves to (see [`balanced_channel`]).
pub fn channel(addr: &str) -> Result<PeerChannel, RuntimeError> {
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
    let member = Member::new(Key::AsGiven, configure(endpoint).connect_lazy());
    Ok(PeerChannel::new(Arc::new(Pool::new(addr.to_owned(), vec![member], None))))
}

/// Whether `host` (as a URI spells it: IPv6 in brackets) must be resolved to find its addresses.
fn is_dns_name(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal.parse::<IpAddr>().is_err() && !literal.eq_ignore_ascii_case("localhost")
}

/// The settings of every peer connection. No overall timeout: each call carries its own deadline.
fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(3))
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

/// What a member of a pool connects to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// The address as configured, connected to as is: the one member of a pool for an IP literal or
    /// `localhost`, and of a DNS name's pool while the name has never resolved (so that calls fail
    /// with a connection error instead of waiting for an address forever).
    AsGiven,
    Address(SocketAddr),
}

/// One address of a peer, with its connection.
struct Member {
    key: Key,
    channel: Channel,
    /// Until when calls pass this address over (its connection failed), if they do.
    set_aside_until: Mutex<Option<Instant>>,
}

impl Member {
    fn new(key: Key, channel: Channel) -> Arc<Member> {
        Arc::new(Member { key, channel, set_aside_until: Mutex::new(None) })
    }

    fn set_aside(&self, until: Instant) {
        *self.set_aside_until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    fn is_set_aside(&self, now: Instant) -> bool {
        self.set_aside_until.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|until| until > now)
    }
}

/// Every address of one peer, shared by the clones of its [`PeerChannel`].
struct Pool {
    /// The peer as configured, for logs.
    name: String,
    /// Replaced whole when the addresses change. Empty until a DNS name is first resolved (calls wait
    /// for it).
    members: watch::Sender<Arc<[Arc<Member>]>>,
    /// Turns over the members, one call after the other.
    next: AtomicUsize,
    /// What retries of calls to this peer may spend.
    budget: TpsBudget,
    /// Wakes the resolving task of a DNS name.
    resolve_now: Option<Arc<Notify>>,
    /// Ends the resolving task when the last clone of the channel is gone.
    stop: CancellationToken,
}

impl Pool {
    fn new(name: String, members: Vec<Arc<Member>>, resolve_now: Option<Arc<Notify>>) -> Pool {
        Pool {
            name,
            members: watch::Sender::new(members.into()),
            next: AtomicUsize::new(0),
            // Retries may add a fifth to the calls made in the last 10 s, and 10 a second whatever.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            resolve_now,
            stop: CancellationToken::new(),
        }
    }

    /// The member the next call goes to: the next in turn that is not set aside (or, if all are, the
    /// next in turn all the same). Waits for the first resolution of a DNS name.
    async fn pick(&self) -> Option<Arc<Member>> {
        let mut changes = self.members.subscribe();
        // Never an error: the pool holds the sender.
        let members = changes.wait_for(|members| !members.is_empty()).await.ok()?.clone();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let in_turn = |i: usize| &members[(start + i) % members.len()];
        Some((0..members.len()).map(in_turn).find(|m| !m.is_set_aside(now)).unwrap_or(in_turn(0)).clone())
    }

    /// A call to `member` failed in a way that says nothing about the request: its connection broke or
    /// could not be made (`connection`), or the peer answered UNAVAILABLE. Later calls go elsewhere for
    /// a while; a broken connection also has the name resolved again at once, as the address may be
    /// gone.
    fn failed(&self, member: &Member, connection: bool) {
        member.set_aside(Instant::now() + SET_ASIDE_FOR);
        if connection && let Some(resolve_now) = &self.resolve_now {
            resolve_now.notify_one();
        }
    }

    /// Makes the members those of `addrs`, keeping the connections of the addresses already known.
    /// Nothing changes when no endpoint can be made of any of them.
    fn set_addresses(&self, name: &Name, addrs: Vec<SocketAddr>) {
        let wanted: BTreeSet<SocketAddr> = addrs.into_iter().collect();
        let members = self.members.borrow().clone();
        let next: Vec<Arc<Member>> = wanted
            .iter()
            .filter_map(|addr| {
                let key = Key::Address(*addr);
                members.iter().find(|m| m.key == key).cloned().or_else(|| name.member(key))
            })
            .collect();
        if next.is_empty() {
            return;
        }
        let kept = next.iter().filter(|m| members.iter().any(|old| old.key == m.key)).count();
        if kept != next.len() || kept != members.len() {
            tracing::debug!(peer = %self.name, added = next.len() - kept, removed = members.len() - kept,
                now = next.len(), "peer addresses changed");
        }
        self.members.send_replace(next.into());
    }

    /// The name has never resolved: let calls try the name itself (and fail) rather than wait.
    fn fall_back_to(&self, name: &Name) {
        if self.members.borrow().is_empty()
            && let Some(member) = name.member(Key::AsGiven)
        {
            self.members.send_replace(Arc::from([member]));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A channel balanced over the addresses `resolver` finds for `host:port`, resolved again every
/// `interval` (and sooner after a connection error, at most every 250 ms). New addresses are
/// connected to (lazily), vanished ones dropped; when resolution fails or finds nothing, the last
/// addresses found are kept. Requests carry `scheme://host:port` as their authority. The resolving
/// task ends once every clone of the channel is dropped. Must be called inside a Tokio runtime.
pub fn balanced_channel(
    scheme: &str,
    host: &str,
    port: u16,
    resolver: impl Resolver,
    interval: Duration,
) -> PeerChannel {
    let name = Name { scheme: scheme.to_owned(), host: host.to_owned(), port };
    let resolve_now = Arc::new(Notify::new());
    let pool = Arc::new(Pool::new(format!("{host}:{port}"), Vec::new(), Some(resolve_now.clone())));
    let stop = pool.stop.clone();
    tokio::spawn(keep_resolved(name, resolver, interval, Arc::downgrade(&pool), resolve_now, stop));
    PeerChannel::new(pool)
}

/// A DNS peer: what it is resolved from, and the authority its requests carry.
struct Name {
    scheme: String,
    host: String,
    port: u16,
}

impl Name {
    fn member(&self, key: Key) -> Option<Arc<Member>> {
        let uri = match key {
            Key::AsGiven => format!("{}://{}:{}", self.scheme, self.host, self.port),
            Key::Address(addr) => format!("{}://{addr}", self.scheme),
        };
        let origin = format!("{}://{}:{}", self.scheme, self.host, self.port);
        match (Endpoint::from_shared(uri), origin.parse::<Uri>()) {
            (Ok(endpoint), Ok(origin)) => {
                Some(Member::new(key, configure(endpoint).origin(origin).connect_lazy()))
            }
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

/// Resolves `name` every `interval`, or when a call asks through `resolve_now` (at most once per
/// [`MIN_RESOLVE_GAP`]), and gives the pool what it found, until `stop`.
async fn keep_resolved(
    name: Name,
    resolver: impl Resolver,
    interval: Duration,
    pool: Weak<Pool>,
    resolve_now: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let resolved = tokio::select! {
            () = stop.cancelled() => return,
            resolved = resolver.resolve(&name.host, name.port) => resolved,
        };
        let resolved_at = Instant::now();
        let Some(pool) = pool.upgrade() else { return };
        match resolved {
            Ok(addrs) if !addrs.is_empty() => {
                if failing {
                    tracing::info!(peer = %name.host, addresses = addrs.len(), "the peer resolves again");
                }
                failing = false;
                pool.set_addresses(&name, addrs);
            }
            outcome => {
                if !failing {
                    let error = outcome.err().map_or_else(|| "no address".to_owned(), |e| e.to_string());
                    let kept = pool.members.borrow().len();
                    tracing::warn!(peer = %name.host, %error, kept, "cannot resolve the peer; keeping its last addresses");
                }
                failing = true;
                pool.fall_back_to(&name);
            }
        }
        drop(pool);
        let asked = tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => false,
            () = resolve_now.notified() => true,
        };
        if asked {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(resolved_at + MIN_RESOLVE_GAP) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
