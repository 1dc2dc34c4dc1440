//! Leader election on a `coordination.k8s.io` Lease: only the replica holding the lease runs the
//! controller, so two replicas never reconcile at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// One candidate for a named lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Takes the lease if it is free or expired, renews it if ours; whether we hold it now. Losing a
    /// race (a conflict) is not an error: someone else holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, now, 0)),
            };
            return settle(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
        let expired = spec.holder_identity.as_deref().is_none_or(str::is_empty)
            || spec.renew_time.as_ref().is_none_or(|t| t.0 + held_for < now);
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if ours {
            self.spec(now, spec.acquire_time.map_or(now, |t| t.0), transitions)
        } else {
            self.spec(now, now, transitions + 1)
        };
        // The resourceVersion in the metadata makes this a compare-and-swap.
        let updated = Lease { metadata: lease.metadata.clone(), spec: Some(next) };
        settle(self.api.replace(&self.name, &PostParams::default(), &updated).await)
    }

    /// Blocks until this candidate holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads"),
                Err(e) => tracing::warn!(error = %e, "cannot read the lease"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the lease until it can no longer be held (lost or not renewed within its duration).
    pub async fn keep(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if last_renewed.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}

fn settle(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::mock_client;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/mall-operator";

    fn lock(client: Client) -> LeaseLock {
        LeaseLock::new(client, "ops", "mall-operator", "pod-a", Duration::from_secs(15))
    }

    fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "mall-operator", "namespace": "ops", "resourceVersion": "42"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(renewed), "acquireTime": MicroTime(renewed), "leaseTransitions": transitions}
        })
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
    }

    #[tokio::test]
    async fn creates_a_missing_lease() {
        let (client, mut server) = mock_client();
        let script = tokio::spawn(async move {
            server.expect(Method::GET, LEASE).await.respond(StatusCode::NOT_FOUND, &not_found());
            let create =
                server.expect(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/ops/leases").await;
            assert_eq!(create.body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
            assert!(create.body["spec"]["renewTime"].is_string());
            let body = create.body.clone();
            create.respond(StatusCode::CREATED, &body);
        });
        assert!(lock(client).try_acquire_or_renew().await.unwrap());
        script.await.unwrap();
    }

    #[tokio::test]
    async fn leaves_a_fresh_lease_of_another_alone() {
        let (client, mut server) = mock_client();
        let script = tokio::spawn(async move {
            server.expect(Method::GET, LEASE).await.ok(&lease("pod-b", Timestamp::now(), 3));
        });
        assert!(!lock(client).try_acquire_or_renew().await.unwrap());
        script.await.unwrap();
    }

    #[tokio::test]
    async fn takes_over_an_expired_lease_and_renews_its_own() {
        let (client, mut server) = mock_client();
        let stale = Timestamp::now() - SignedDuration::from_secs(60);
        let script = tokio::spawn(async move {
            server.expect(Method::GET, LEASE).await.ok(&lease("pod-b", stale, 3));
            let put = server.expect(Method::PUT, LEASE).await;
            assert_eq!(put.body["metadata"]["resourceVersion"], "42", "a compare-and-swap");
            assert_eq!(put.body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(put.body["spec"]["leaseTransitions"], 4);
            let body = put.body.clone();
            put.ok(&body);
            // Renewing our own lease keeps the transition count.
            server.expect(Method::GET, LEASE).await.ok(&lease("pod-a", Timestamp::now(), 4));
            let put = server.expect(Method::PUT, LEASE).await;
            assert_eq!(put.body["spec"]["leaseTransitions"], 4);
            // Someone else won the race: a conflict means "not leader", not an error.
            put.respond(
                StatusCode::CONFLICT,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
            );
        });
        let lock = lock(client);
        assert!(lock.try_acquire_or_renew().await.unwrap());
        assert!(!lock.try_acquire_or_renew().await.unwrap());
        script.await.unwrap();
    }
}
