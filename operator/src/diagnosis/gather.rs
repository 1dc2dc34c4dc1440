//! The reads the diagnosis needs beyond the children the reconcile applies: the stack's pods and volume
//! claims (by its labels), the namespace's Warning events when an object alone does not say why it is
//! stuck, and the last lines of each failed container worth explaining.

use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};

use super::{logs_wanted, needs_events};
use crate::controller::list;
use crate::crd::MallStack;
use crate::error::{Error, Result, refusal, said};
use crate::metrics;
use crate::status::Observed;

/// How many lines of a failed container's log are read: anyhow's report of a database error
/// (`Error:`, a blank line, `Caused by:` and up to four causes) fits.
pub const LOG_LINES: i64 = 10;
/// At most this many bytes of it.
pub const LOG_BYTES: i64 = 4096;

/// Fills `observed.pods`, `.claims`, `.events` (when needed) and `.logs`. A list the API server refuses
/// is an error (the reconcile goes on, and reports it); a log it refuses is noted in its place.
pub async fn gather(
    client: &Client,
    ns: &str,
    selector: &str,
    stack: &MallStack,
    observed: &mut Observed,
) -> Result<()> {
    observed.pods = list::<Pod>(client, ns, selector).await?;
    observed.claims = list::<PersistentVolumeClaim>(client, ns, selector).await?;
    if needs_events(stack, observed) {
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
        observed.events = events
            .list(&ListParams::default().fields("type=Warning"))
            .await
            .map_err(|source| Error::Observe { kind: "Event", source })?
            .items;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for wanted in logs_wanted(stack, observed) {
        let params = LogParams {
            container: Some(wanted.container.clone()),
            previous: wanted.previous,
            tail_lines: Some(LOG_LINES),
            limit_bytes: Some(LOG_BYTES),
            ..LogParams::default()
        };
        let tail = pods.logs(&wanted.pod, &params).await.map_err(|e| {
            tracing::warn!(pod = %wanted.pod, error = %e, "cannot read a failed container's log");
            metrics::failed("logs", refusal(&e));
            said(&e)
        });
        observed.logs.insert((wanted.pod, wanted.container), tail);
    }
    Ok(())
}
