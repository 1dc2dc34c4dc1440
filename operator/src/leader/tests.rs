//! The lease against a scripted API server, on paused time: retry periods and deadlines pass at once
//! and exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode};
use k8s_openapi::jiff::SignedDuration;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{ApiServerVerifier, mock_client};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/mall-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn lock(client: Client) -> LeaseLock {
    LeaseLock::new(client, "ops", "mall-operator", "pod-a", Timing::default())
}

fn lease(holder: &str, version: &str, renewed: Timestamp, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "mall-operator", "namespace": "ops", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": MicroTime(renewed), "acquireTime": MicroTime(renewed), "leaseTransitions": transitions}
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason})
}

/// Answers a GET of the lease with `body`.
async fn get(server: &mut ApiServerVerifier, body: Value) {
    server.expect(Method::GET, LEASE).await.ok(&body);
}

/// Answers a PUT of the lease with what was sent; the body sent.
async fn put(server: &mut ApiServerVerifier) -> Value {
    let put = server.expect(Method::PUT, LEASE).await;
    let body = put.body.clone();
    put.ok(&body);
    body
}

/// The script of a first acquisition: no lease yet, so it is created.
async fn created(server: &mut ApiServerVerifier) {
    server.expect(Method::GET, LEASE).await.respond(StatusCode::NOT_FOUND, &status(404, "NotFound"));
    let create = server.expect(Method::POST, LEASES).await;
    let body = create.body.clone();
    create.respond(StatusCode::CREATED, &body);
}

/// Sets its flag when dropped: tells whether the work under a lease was stopped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Work that runs until stopped: (started, dropped) flags and the future.
fn endless_work() -> (Arc<AtomicBool>, Arc<AtomicBool>, impl Future<Output = ()>) {
    let (started, dropped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let work = {
        let (started, guard) = (started.clone(), Dropped(dropped.clone()));
        async move {
            let _guard = guard;
            started.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    };
    (started, dropped, work)
}

#[tokio::test]
#[should_panic(expected = "renew deadline")]
async fn a_renew_deadline_as_long_as_the_lease_is_refused() {
    let (client, _server) = mock_client();
    let timing = Timing { renew_deadline: Duration::from_secs(15), ..Timing::default() };
    LeaseLock::new(client, "ops", "mall-operator", "pod-a", timing);
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (client, mut server) = mock_client();
    let script = tokio::spawn(async move {
        server.expect(Method::GET, LEASE).await.respond(StatusCode::NOT_FOUND, &status(404, "NotFound"));
        let create = server.expect(Method::POST, LEASES).await;
        assert_eq!(create.body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
        assert!(create.body["spec"]["renewTime"].is_string());
        let body = create.body.clone();
        create.respond(StatusCode::CREATED, &body);
    });
    assert!(lock(client).try_acquire_or_renew().await.unwrap());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn takes_another_holders_lease_only_after_seeing_it_unchanged_for_its_duration() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    // Its renewTime says a minute ago (another node's clock): not trusted, the lease is left alone.
    let skewed = Timestamp::now() - SignedDuration::from_secs(60);
    let (first, ()) =
        tokio::join!(lock.try_acquire_or_renew(), get(&mut server, lease("pod-b", "42", skewed, 3)));
    assert!(!first.unwrap(), "first sighting");
    tokio::time::advance(Duration::from_secs(10)).await;
    // Renewed meanwhile: a new record, so the wait starts again.
    let (renewed, ()) =
        tokio::join!(lock.try_acquire_or_renew(), get(&mut server, lease("pod-b", "43", skewed, 3)));
    assert!(!renewed.unwrap(), "seen afresh");
    tokio::time::advance(Duration::from_secs(14)).await;
    let (unchanged, ()) =
        tokio::join!(lock.try_acquire_or_renew(), get(&mut server, lease("pod-b", "43", skewed, 3)));
    assert!(!unchanged.unwrap(), "unchanged for 14 s only");
    tokio::time::advance(Duration::from_secs(1)).await;
    // Unchanged for 15 s now: taken, by compare-and-swap.
    let (taken, taken_body) = tokio::join!(lock.try_acquire_or_renew(), async {
        get(&mut server, lease("pod-b", "43", skewed, 3)).await;
        put(&mut server).await
    });
    assert!(taken.unwrap(), "unchanged for 15 s");
    assert_eq!(taken_body["metadata"]["resourceVersion"], "43", "a compare-and-swap");
    assert_eq!(taken_body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(taken_body["spec"]["leaseTransitions"], 4);

    let (renewal, ()) = tokio::join!(lock.try_acquire_or_renew(), async {
        // Renewing our own lease keeps the transition count...
        get(&mut server, lease("pod-a", "44", Timestamp::now(), 4)).await;
        let put = server.expect(Method::PUT, LEASE).await;
        assert_eq!(put.body["spec"]["leaseTransitions"], 4);
        // ...and someone else won the race: a conflict means "not leader", not an error.
        put.respond(StatusCode::CONFLICT, &status(409, "Conflict"));
    });
    assert!(!renewal.unwrap());
}

#[tokio::test]
async fn takes_a_released_lease_at_once() {
    let (client, mut server) = mock_client();
    let script = tokio::spawn(async move {
        get(&mut server, lease("", "7", Timestamp::now(), 2)).await;
        let taken = put(&mut server).await;
        assert_eq!(
            (taken["spec"]["holderIdentity"].as_str(), taken["spec"]["leaseTransitions"].as_i64()),
            (Some("pod-a"), Some(3))
        );
    });
    assert!(lock(client).try_acquire_or_renew().await.unwrap());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn losing_the_lease_to_another_stops_the_work_at_once() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    let script = tokio::spawn(async move {
        created(&mut server).await;
        // Renewed once, two seconds in.
        get(&mut server, lease("pod-a", "2", Timestamp::now(), 0)).await;
        put(&mut server).await;
        // Then another replica holds it (this one was partitioned away, say).
        get(&mut server, lease("pod-b", "9", Timestamp::now(), 1)).await;
    });
    let since = lock.acquire().await;
    let (started, dropped, work) = endless_work();
    assert_eq!(lock.hold(since, work).await, Err(Lost));
    assert!(started.load(Ordering::SeqCst) && dropped.load(Ordering::SeqCst), "the work ran and was stopped");
    assert_eq!(since.elapsed(), 2 * Timing::default().retry_period, "at the first renewal that failed");
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_stop_the_work_at_the_renew_deadline_before_the_lease_ends() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    let script = tokio::spawn(async move {
        created(&mut server).await;
        // Renewals at 2, 4, 6 and 8 s meet an API server in trouble; at 10 s the deadline has passed.
        for _ in 0..4 {
            server
                .expect(Method::GET, LEASE)
                .await
                .respond(StatusCode::INTERNAL_SERVER_ERROR, &status(500, "InternalError"));
        }
    });
    let since = lock.acquire().await;
    let (_, dropped, work) = endless_work();
    assert_eq!(lock.hold(since, work).await, Err(Lost));
    assert!(dropped.load(Ordering::SeqCst));
    let timing = Timing::default();
    assert_eq!(since.elapsed(), timing.renew_deadline);
    assert!(since.elapsed() < timing.lease_duration, "stopped before anyone may take over");
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_renewal_without_answer_is_cut_off_at_the_renew_deadline() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    let (hung_tx, hung_rx) = tokio::sync::oneshot::channel();
    let script = tokio::spawn(async move {
        created(&mut server).await;
        // The renewal's GET never gets an answer (kept, not dropped: the connection just hangs).
        let hung = server.expect(Method::GET, LEASE).await;
        hung_tx.send((hung, server)).ok();
    });
    let since = lock.acquire().await;
    let (_, dropped, work) = endless_work();
    assert_eq!(lock.hold(since, work).await, Err(Lost));
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(since.elapsed(), Timing::default().renew_deadline);
    script.await.unwrap();
    drop(hung_rx);
}

#[tokio::test]
async fn work_that_ends_while_leading_returns_its_output() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    let script = tokio::spawn(async move { created(&mut server).await });
    let since = lock.acquire().await;
    assert_eq!(lock.hold(since, async { 7 }).await, Ok(7));
    script.await.unwrap();
}

#[tokio::test]
async fn release_hands_over_only_our_own_lease() {
    let (client, mut server) = mock_client();
    let lock = lock(client);
    let script = tokio::spawn(async move {
        get(&mut server, lease("pod-a", "5", Timestamp::now(), 2)).await;
        let released = put(&mut server).await;
        assert_eq!(released["metadata"]["resourceVersion"], "5");
        assert!(released["spec"].get("holderIdentity").is_none(), "{released}");
        assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(released["spec"]["leaseTransitions"], 2);
        // Another's lease is left alone: no PUT follows.
        get(&mut server, lease("pod-b", "6", Timestamp::now(), 3)).await;
    });
    lock.release().await;
    lock.release().await;
    script.await.unwrap();
}
