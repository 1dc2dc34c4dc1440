//! One time budget per request, from the gateway to the last hop.
//!
//! The deadline of the request being served lives in a task-local. The gateway sets it when a request
//! comes in (its configured budget); every gRPC server sets it from the incoming `grpc-timeout` header
//! (a layer that [`crate::serve`] puts in front of every service); and every call through a
//! [`crate::PeerChannel`] sends what is left of it as its own `grpc-timeout`, so a hop never waits
//! longer than the caller at the top is still willing to. Work handed to `tokio::spawn` leaves the
//! task-local behind: wrap it in [`keep_deadline`].

use std::future::Future;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use tracing::Instrument;

/// The header that carries a call's remaining time (gRPC over HTTP/2).
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the request this task serves, if it has one.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The time left before [`deadline`] (zero once it has passed), if there is one.
pub fn remaining() -> Option<Duration> {
    deadline().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Runs `work` with `deadline` as its deadline, or with the current one if that comes first (a budget
/// can only shrink on the way down).
pub async fn with_deadline<F: Future>(deadline: Instant, work: F) -> F::Output {
    let deadline = self::deadline().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, work).await
}

/// `work` under the deadline, the request id and the span of the current task, wherever it is
/// polled: for futures given to `tokio::spawn`, which do not inherit task-locals.
pub fn keep_deadline<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let current = deadline();
    let work = crate::trace::keep_request_id(work).in_current_span();
    async move {
        match current {
            Some(deadline) => DEADLINE.scope(deadline, work).await,
            None => work.await,
        }
    }
}

/// The server side: runs the handler of a gRPC request under the deadline its `grpc-timeout` names.
/// (Tonic's server also stops the handler at that time; this makes the deadline visible to the calls
/// the handler makes.)
pub(crate) async fn scope_incoming(request: Request, next: Next) -> Response {
    match parse_grpc_timeout(request.headers()) {
        Some(timeout) => {
            let deadline = Instant::now() + timeout;
            DEADLINE.scope(deadline, next.run(request)).await
        }
        None => next.run(request).await,
    }
}

/// The `grpc-timeout` of `headers`, if present and well formed: at most 8 digits and a unit.
pub fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value, rounded up to the millisecond: the callee then never gives up
/// before the caller, so the caller is the one that reports the deadline.
pub(crate) fn grpc_timeout_value(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let text =
        if millis <= MAX { format!("{millis}m") } else { format!("{}S", timeout.as_secs().min(MAX as u64)) };
    HeaderValue::from_str(&text).expect("digits and a unit are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("10S", Duration::from_secs(10)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("5n", Duration::from_nanos(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_grpc_timeout(&headers(text)), Some(expected), "{text}");
        }
        for bad in ["", "m", "10", "10x", "-1S", "123456789m", "1.5S", "+1S"] {
            assert_eq!(parse_grpc_timeout(&headers(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn grpc_timeouts_are_written_rounded_up_and_read_back() {
        for (timeout, text) in [
            (Duration::from_millis(500), "500m"),
            (Duration::from_micros(1500), "2m"),
            (Duration::from_nanos(1), "1m"),
            (Duration::ZERO, "0m"),
            (Duration::from_secs(200_000), "200000S"),
        ] {
            let value = grpc_timeout_value(timeout);
            assert_eq!(value, text);
            let back = parse_grpc_timeout(&headers(value.to_str().unwrap())).unwrap();
            assert!(back >= timeout, "{text}");
        }
    }

    #[tokio::test]
    async fn a_nested_deadline_only_shrinks_the_budget_and_spawned_work_keeps_it() {
        assert_eq!(deadline(), None);
        let soon = Instant::now() + Duration::from_secs(1);
        let later = soon + Duration::from_secs(60);
        with_deadline(soon, async {
            assert_eq!(deadline(), Some(soon));
            with_deadline(later, async { assert_eq!(deadline(), Some(soon)) }).await;
            let spawned = tokio::spawn(keep_deadline(async { deadline() }));
            assert_eq!(spawned.await.unwrap(), Some(soon));
            assert_eq!(tokio::spawn(async { deadline() }).await.unwrap(), None, "task-locals stay behind");
        })
        .await;
        with_deadline(later, async {
            with_deadline(soon, async { assert_eq!(deadline(), Some(soon)) }).await;
            assert!(remaining().unwrap() > Duration::from_secs(59));
        })
        .await;
    }
}
