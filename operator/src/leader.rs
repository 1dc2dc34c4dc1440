//! Leader election on a `coordination.k8s.io` Lease: only the replica holding the lease runs the
//! controller, so two replicas never reconcile at once.
//!
//! The leader renews every `retry_period`; when it has not renewed within `renew_deadline` (an API
//! server that errs, or a call that hangs: each attempt is cut off at the deadline) it stops its work
//! at once. A candidate takes a lease held by another only after seeing its record unchanged for the
//! whole `lease_duration`, measured on its own clock from when it first saw that record (never from
//! the timestamps in it, so clock skew between nodes does not matter). The holder's last renewal
//! started before the candidate saw it, so the holder has stopped `lease_duration - renew_deadline`
//! before anyone can take over.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// How long a lease is held and renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Written into the lease: how long others wait, after its record last changed, to take it.
    pub lease_duration: Duration,
    /// The leader stops when it has not renewed for this long; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Between two attempts to renew (or to acquire).
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The lease could not be held: whatever ran under it has been stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the leader lease was lost")]
pub struct Lost;

/// The record of another holder as this candidate last saw it, and since when.
struct Sighting {
    record: (Option<String>, Option<String>, Option<MicroTime>),
    since: Instant,
}

/// One candidate for a named lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    seen: Mutex<Option<Sighting>>,
}

impl LeaseLock {
    /// # Panics
    /// When `timing.renew_deadline` is not shorter than `timing.lease_duration`: two leaders could
    /// overlap.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> LeaseLock {
        assert!(
            timing.renew_deadline < timing.lease_duration,
            "the renew deadline must end before the lease"
        );
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            seen: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether `lease`, held by another, may be taken: nobody holds it, or its record has not changed
    /// for its whole duration since this candidate first saw it.
    fn expired(&self, lease: &Lease) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let record = (lease.metadata.resource_version.clone(), spec.holder_identity, spec.renew_time);
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.as_ref() {
            Some(sighting) if sighting.record == record => sighting.since.elapsed() >= duration,
            _ => {
                *seen = Some(Sighting { record, since: Instant::now() });
                false
            }
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
        if !ours && !self.expired(&lease) {
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

    /// One attempt, cut off at `deadline`; a cut-off attempt counts as an error.
    async fn attempt(&self, deadline: Instant) -> Result<bool, String> {
        match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("no answer from the API server in time".to_owned()),
        }
    }

    /// Blocks until this candidate holds the lease; when the successful attempt started (the lease
    /// counts from there).
    pub async fn acquire(&self) -> Instant {
        loop {
            let started = Instant::now();
            match self.attempt(started + self.timing.renew_deadline / 2).await {
                Ok(true) => return started,
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads"),
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "cannot read the lease"),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    /// Runs `work` while holding the lease acquired at `since`: its output if it ends first, [`Lost`]
    /// as soon as the lease is not renewed within the renew deadline or another replica took it.
    /// Then `work` is dropped on the spot: nothing it was doing goes on.
    pub async fn hold<F: Future>(&self, since: Instant, work: F) -> Result<F::Output, Lost> {
        tokio::select! {
            output = work => Ok(output),
            () = self.keep(since) => Err(Lost),
        }
    }

    /// Renews the lease until it can no longer be held: returns at the renew deadline at the latest.
    async fn keep(&self, mut renewed: Instant) {
        loop {
            let deadline = renewed + self.timing.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.timing.retry_period).min(deadline)).await;
            let started = Instant::now();
            if started >= deadline {
                tracing::error!(lease = %self.name, "the lease was not renewed in time");
                return;
            }
            match self.attempt(deadline).await {
                Ok(true) => renewed = started,
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica took the lease");
                    return;
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease"),
            }
        }
    }

    /// Gives the lease up (when stopping while leading), so another replica takes it at once instead
    /// of waiting for it to expire. Best effort: failing, the lease simply expires.
    pub async fn release(&self) {
        let deadline = Instant::now() + self.timing.retry_period;
        let release = async {
            let Some(lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let released = LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..spec
            };
            let updated = Lease { metadata: lease.metadata.clone(), spec: Some(released) };
            self.api.replace(&self.name, &PostParams::default(), &updated).await.map(drop)
        };
        match tokio::time::timeout_at(deadline, release).await {
            Ok(Ok(())) => tracing::info!(lease = %self.name, "released the lease"),
            Ok(Err(e)) => tracing::warn!(lease = %self.name, error = %e, "cannot release the lease"),
            Err(_) => tracing::warn!(lease = %self.name, "cannot release the lease: no answer in time"),
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
mod tests;
