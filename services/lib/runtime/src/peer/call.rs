//! One call through a [`PeerChannel`]: its deadline, its retries, and the member each attempt goes to.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Uri, Version};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::{Code, ConnectError, Status, TimeoutExpired};
use tower::retry::budget::Budget;
use tower::retry::{Policy, Retry};
use tower::{Service, ServiceExt};

use super::Pool;
use crate::deadline::{self, GRPC_TIMEOUT};
use crate::identity::{CALLER_HEADER, Credential, Identity};
use crate::retry_safe::is_retry_safe;
use crate::trace;
use tracing::Instrument;

type BoxError = Box<dyn StdError + Send + Sync>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

/// The budget of a call made outside any request (a background sweep, a test): what a request's
/// deadline is everywhere else.
pub const UNSCOPED_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Attempts of one call at most: the first and two retries.
const MAX_ATTEMPTS: u32 = 3;

/// The pause before retry `n` is `n` times this (none is needed to reach another address, which is
/// what a retry mostly does; a little spares a single address that is restarting).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The channel every generated client uses to call a peer (`XServiceClient<PeerChannel>`); cheap to
/// clone, and every clone shares the peer's connections. Made by [`crate::channel`].
///
/// Each call
/// - carries the deadline of the request being served ([`crate::deadline()`], or
///   [`UNSCOPED_CALL_TIMEOUT`] from now outside any) as its `grpc-timeout`, and fails with
///   DEADLINE_EXCEEDED when it passes, at once if it already has;
/// - goes to the peer's addresses in turn, passing over for a second one whose connection just
///   failed;
/// - is sent again, to another address when there is one, when its connection could not be made
///   (whatever the method: nothing was sent), or when it failed with UNAVAILABLE or a broken
///   connection and its method is safe to repeat ([`crate::is_retry_safe`]). At most two retries,
///   within the deadline and within a budget of retries per peer (a fifth of the calls, and 10 a
///   second), so a failing peer does not get its load multiplied.
///
/// Every Mall method is unary, and the request body is kept (as bytes) for the retries.
#[derive(Clone)]
pub struct PeerChannel {
    pool: Arc<Pool>,
    /// Who this side is, to the peer (see [`crate::identity`]).
    credential: Option<Credential>,
}

impl PeerChannel {
    pub(super) fn new(pool: Arc<Pool>) -> PeerChannel {
        PeerChannel { pool, credential: None }
    }

    /// This channel, with every call carrying `caller`'s identity for `callee`.
    pub fn with_identity(self, caller: &Identity, callee: &str) -> PeerChannel {
        PeerChannel { credential: Some(caller.credential(callee)), ..self }
    }
}

impl fmt::Debug for PeerChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerChannel").field("peer", &self.pool.name).finish()
    }
}

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each attempt waits for its own connection to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        let deadline = deadline::deadline().unwrap_or_else(|| Instant::now() + UNSCOPED_CALL_TIMEOUT);
        let mut request = request;
        if let Some(token) = self.credential.as_ref().and_then(Credential::header) {
            request.headers_mut().insert(CALLER_HEADER, token);
        }
        if let Some(id) = trace::request_id() {
            request.headers_mut().insert(trace::REQUEST_ID_HEADER, id);
        }
        // In a trace that is not recorded no client span is made; the callee continues the caller's.
        let span = if trace::recording() {
            client_span(request.uri().path(), &self.pool.name)
        } else {
            tracing::Span::none()
        };
        if !span.is_none() {
            trace::inject_context(&span, request.headers_mut());
        } else if let Some(cx) = trace::request_context() {
            trace::inject(&cx, request.headers_mut());
        } else {
            trace::inject_context(&tracing::Span::current(), request.headers_mut());
        }
        let sent = send(self.pool.clone(), request, deadline).instrument(span.clone());
        Box::pin(async move {
            let result = sent.await;
            let code = match &result {
                Ok(response) => trace::response_code(response),
                Err(_) => Code::Unavailable,
            };
            trace::record_code(&span, code);
            result
        })
    }
}

/// The span of one call to a peer (every attempt of it), seen by OpenTelemetry only.
fn client_span(path: &str, peer: &str) -> tracing::Span {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    tracing::trace_span!(
        target: crate::TRACE_ONLY,
        "rpc client",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = peer,
    )
}

/// A request as it is sent on every attempt.
#[derive(Clone)]
struct Call {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    deadline: Instant,
    retry_safe: bool,
}

impl Call {
    fn path(&self) -> &str {
        self.uri.path()
    }
}

async fn send(
    pool: Arc<Pool>,
    request: http::Request<Body>,
    deadline: Instant,
) -> Result<http::Response<Body>, BoxError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    // A timeout the caller set on this request (`tonic::Request::set_timeout`) can only shorten it.
    let deadline = match deadline::parse_grpc_timeout(&parts.headers) {
        Some(timeout) => deadline.min(Instant::now() + timeout),
        None => deadline,
    };
    if Instant::now() >= deadline {
        return Ok(deadline_exceeded(&pool, &path));
    }
    let body = body.collect().await?.to_bytes();
    let call = Call {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
        deadline,
        retry_safe: is_retry_safe(&path),
    };
    pool.budget.deposit();
    let attempts = Retry::new(CallPolicy { pool: pool.clone(), attempts: 1 }, Attempt { pool: pool.clone() });
    let outcome = tokio::time::timeout_at(deadline, attempts.oneshot(call)).await;
    // The peer (tonic) gives up at the same moment, as CANCELLED: whoever is first, the caller sees
    // DEADLINE_EXCEEDED.
    let late = Instant::now() >= deadline;
    match outcome {
        Err(_elapsed) => Ok(deadline_exceeded(&pool, &path)),
        Ok(Err(e)) if late || caused_by::<TimeoutExpired>(&*e) => Ok(deadline_exceeded(&pool, &path)),
        Ok(Ok(response))
            if late && matches!(grpc_status(&response), Some(Code::Cancelled | Code::DeadlineExceeded)) =>
        {
            Ok(deadline_exceeded(&pool, &path))
        }
        Ok(outcome) => outcome,
    }
}

fn deadline_exceeded(pool: &Pool, path: &str) -> http::Response<Body> {
    Status::deadline_exceeded(format!("{path} on {}: the request's deadline has passed", pool.name))
        .into_http()
}

/// The status of a response that carries it in its headers (an error without a body, which is how
/// servers answer failed unary calls).
fn grpc_status(response: &http::Response<Body>) -> Option<Code> {
    response.headers().get("grpc-status").map(|v| Code::from_bytes(v.as_bytes()))
}

/// Whether `error` or one of its sources is an `E`.
fn caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// One attempt: to the next member in turn, with what is left of the deadline as its `grpc-timeout`.
#[derive(Clone)]
struct Attempt {
    pool: Arc<Pool>,
}

impl Service<Call> for Attempt {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> ResponseFuture {
        let pool = self.pool.clone();
        Box::pin(async move {
            let Some(member) = pool.pick().await else {
                return Ok(Status::unavailable(format!("{}: no address to call", pool.name)).into_http());
            };
            let mut request = http::Request::new(Body::new(Full::new(call.body)));
            *request.method_mut() = call.method;
            *request.uri_mut() = call.uri;
            *request.version_mut() = call.version;
            *request.headers_mut() = call.headers;
            let left = call.deadline.saturating_duration_since(Instant::now());
            request.headers_mut().insert(GRPC_TIMEOUT, deadline::grpc_timeout_value(left));
            match member.channel.clone().oneshot(request).await {
                Ok(response) => {
                    if grpc_status(&response) == Some(Code::Unavailable) {
                        pool.failed(&member, false);
                    }
                    Ok(response)
                }
                Err(e) => {
                    let e = BoxError::from(e);
                    if !caused_by::<TimeoutExpired>(&*e) {
                        tracing::debug!(peer = %pool.name, key = ?member.key, error = %e, "peer connection failed");
                        pool.failed(&member, true);
                    }
                    Err(e)
                }
            }
        })
    }
}

/// When an attempt is followed by another (see [`PeerChannel`]).
#[derive(Clone)]
struct CallPolicy {
    pool: Arc<Pool>,
    /// Attempts made so far.
    attempts: u32,
}

impl Policy<Call, http::Response<Body>, BoxError> for CallPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<http::Response<Body>, BoxError>,
    ) -> Option<tokio::time::Sleep> {
        let again = match result {
            Ok(response) => call.retry_safe && grpc_status(response) == Some(Code::Unavailable),
            Err(e) if caused_by::<TimeoutExpired>(&**e) => false,
            // Never connected: the request did not leave.
            Err(e) if caused_by::<ConnectError>(&**e) => true,
            // Broken mid-call: the peer may have acted on it.
            Err(_) => call.retry_safe,
        };
        if !again || self.attempts >= MAX_ATTEMPTS {
            return None;
        }
        let pause = RETRY_PAUSE * self.attempts;
        if Instant::now() + pause >= call.deadline {
            return None;
        }
        if !self.pool.budget.withdraw() {
            tracing::debug!(peer = %self.pool.name, method = call.path(), "retry budget spent; not retrying");
            return None;
        }
        self.attempts += 1;
        tracing::debug!(peer = %self.pool.name, method = call.path(), attempt = self.attempts, "retrying");
        Some(tokio::time::sleep(pause))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}
