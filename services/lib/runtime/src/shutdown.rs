//! How a server stops without failing its clients: when asked to stop it first reports not ready and
//! keeps serving for a drain delay (while Kubernetes takes it out of the endpoints, DNS forgets it and
//! clients re-resolve), then stops accepting connections and gives the calls in flight a grace period
//! to finish.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long calls in flight may take to finish once a server stops accepting connections.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// When and how a server stops. Clones share the same state: [`Shutdown::begin`] on one is seen by all.
///
/// Every service's `startup` takes one (or a bare [`CancellationToken`], which stops without a drain).
#[derive(Debug, Clone)]
pub struct Shutdown {
    begun: CancellationToken,
    hurried: CancellationToken,
    drain: Duration,
    grace: Duration,
}

impl Shutdown {
    /// Stops when `token` is cancelled (SIGTERM), with no drain delay and [`DEFAULT_GRACE`].
    pub fn new(token: CancellationToken) -> Shutdown {
        Shutdown {
            begun: token,
            hurried: CancellationToken::new(),
            drain: Duration::ZERO,
            grace: DEFAULT_GRACE,
        }
    }

    /// Keeps serving, reporting not ready, for `drain` once the shutdown begins.
    pub fn with_drain(mut self, drain: Duration) -> Shutdown {
        self.drain = drain;
        self
    }

    /// Gives calls in flight `grace` to finish once the server stops accepting connections.
    pub fn with_grace(mut self, grace: Duration) -> Shutdown {
        self.grace = grace;
        self
    }

    /// Begins the shutdown: what SIGTERM does.
    pub fn begin(&self) {
        self.begun.cancel();
    }

    /// Ends the drain now (a second Ctrl-C; tests). Calls in flight still get their grace period.
    pub fn hurry(&self) {
        self.hurried.cancel();
    }

    /// Cancelled when the shutdown begins: background work stops on it.
    pub fn token(&self) -> &CancellationToken {
        &self.begun
    }

    /// Whether the shutdown has begun (the server is draining or stopping).
    pub fn is_draining(&self) -> bool {
        self.begun.is_cancelled()
    }

    pub fn drain(&self) -> Duration {
        self.drain
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Resolves once the shutdown has begun and the drain is over: the moment to stop accepting.
    pub async fn drained(&self) {
        self.begun.cancelled().await;
        tokio::select! {
            () = tokio::time::sleep(self.drain) => {}
            () = self.hurried.cancelled() => {}
        }
    }

    /// Runs `server` (which stops accepting when [`Shutdown::drained`] resolves, then finishes its calls
    /// in flight) for at most the grace period after the drain; `None` when the grace ran out.
    pub async fn within_grace<F: Future>(&self, server: F) -> Option<F::Output> {
        tokio::select! {
            output = server => Some(output),
            () = async { self.drained().await; tokio::time::sleep(self.grace).await } => None,
        }
    }
}

impl Default for Shutdown {
    /// A shutdown of its own (begun with [`Shutdown::begin`]), with no drain delay.
    fn default() -> Shutdown {
        Shutdown::new(CancellationToken::new())
    }
}

impl From<CancellationToken> for Shutdown {
    fn from(token: CancellationToken) -> Shutdown {
        Shutdown::new(token)
    }
}
