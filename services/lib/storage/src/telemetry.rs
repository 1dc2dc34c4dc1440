//! What the database and the cache tell the telemetry.
//!
//! - A span for every SQL statement of a traced request, made from the event sqlx writes when a
//!   statement ends (`sqlx::query`: its first words and its duration), so that none of the service's
//!   queries has to be wrapped: named by the operation (`SELECT`, `INSERT`, …), with `db.system` and
//!   `db.operation`, never the statement's bound values.
//! - `mall_db_pool_acquire_duration_seconds`: how long calls waited for a pooled connection (sqlx's
//!   `sqlx::pool::acquire` event).
//! - `mall_db_pool_connections{db,state}` and `mall_db_pool_max_connections{db}`, sampled by
//!   [`PoolGauges`].
//! - `mall_cache_requests_total{cache,result}`: hits and misses of [`crate::Cache::get`].

use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use sqlx::AnyPool;
use tokio::task::JoinHandle;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The target of sqlx's event at the end of each statement.
pub const STATEMENT_TARGET: &str = "sqlx::query";
/// The target of sqlx's event when a pooled connection is handed out.
pub const ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

/// Histogram of the time spent waiting for a pooled connection.
pub const ACQUIRE_DURATION: &str = "mall_db_pool_acquire_duration_seconds";

/// `db.system` of this process's statements, set by the first [`crate::Db::connect`].
static SYSTEM: OnceLock<&'static str> = OnceLock::new();

pub(crate) fn set_db_system(system: &'static str) {
    let _ = SYSTEM.set(system);
}

/// The layer to add to the subscriber. The caller filters what it sees: [`ACQUIRE_TARGET`] events, and,
/// to make spans, [`STATEMENT_TARGET`] events and the spans a statement may hang under.
pub fn layer() -> Statements {
    Statements { dispatch: RwLock::new(None) }
}

/// See the module's documentation.
pub struct Statements {
    dispatch: RwLock<Option<WeakDispatch>>,
}

impl<S> Layer<S> for Statements
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        *self.dispatch.write().unwrap_or_else(PoisonError::into_inner) = Some(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target == ACQUIRE_TARGET {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if let Some(waited) = fields.acquired_after_secs {
                metrics::histogram!(ACQUIRE_DURATION).record(waited);
            }
            return;
        }
        if target != STATEMENT_TARGET {
            return;
        }
        let Some(parent) = ctx.event_span(event) else { return };
        let dispatch = self.dispatch.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(dispatch) = dispatch.and_then(|d| d.upgrade()) else { return };
        let Some(cx) = tracing_opentelemetry::get_otel_context(&parent.id(), &dispatch) else { return };
        if !cx.span().span_context().is_sampled() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(elapsed) = fields.elapsed_secs else { return };
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_secs_f64(elapsed.max(0.0))).unwrap_or(end);
        let operation = operation(&fields.summary);
        let system = SYSTEM.get().copied().unwrap_or("other_sql");
        let tracer = global::tracer("mall-storage");
        let mut attributes =
            vec![KeyValue::new("db.system", system), KeyValue::new("db.operation", operation)];
        if let Some(rows) = fields.rows_returned {
            attributes.push(KeyValue::new("db.response.returned_rows", rows as i64));
        }
        if let Some(rows) = fields.rows_affected {
            attributes.push(KeyValue::new("db.response.affected_rows", rows as i64));
        }
        let mut span = tracer
            .span_builder(operation)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&tracer, &cx);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

/// The statement's operation, from its first word: one of a fixed set (span names stay few).
fn operation(summary: &str) -> &'static str {
    let first = summary.split_whitespace().next().unwrap_or("");
    // SET: what sqlx-mysql sends on each new connection (sql_mode, time_zone, names).
    const KNOWN: [&str; 13] = [
        "SET",
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "CREATE",
        "PRAGMA",
    ];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(first)).copied().unwrap_or("SQL")
}

/// The fields of sqlx's events that matter here.
#[derive(Default)]
struct Fields {
    summary: String,
    elapsed_secs: Option<f64>,
    acquired_after_secs: Option<f64>,
    rows_returned: Option<u64>,
    rows_affected: Option<u64>,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "elapsed_secs" => self.elapsed_secs = Some(value),
            "acquired_after_secs" => self.acquired_after_secs = Some(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "rows_returned" => self.rows_returned = Some(value),
            "rows_affected" => self.rows_affected = Some(value),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            // The first word is all that is kept.
            self.summary = value.split_whitespace().next().unwrap_or("").to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            let text = format!("{value:?}");
            self.record_str(field, text.trim_matches('"'));
        }
    }
}

/// Keeps `mall_db_pool_connections` and `mall_db_pool_max_connections` of one pool up to date while
/// the pool's [`crate::Db`] is alive (sampled every second; zeroed when it goes).
#[derive(Debug)]
pub(crate) struct PoolGauges {
    db: String,
    task: JoinHandle<()>,
}

/// How often the pool gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl PoolGauges {
    pub(crate) fn start(db: String, pool: AnyPool, max: u32) -> PoolGauges {
        metrics::gauge!("mall_db_pool_max_connections", "db" => db.clone()).set(f64::from(max));
        let label = db.clone();
        let task = tokio::spawn(async move {
            let idle = metrics::gauge!("mall_db_pool_connections", "db" => label.clone(), "state" => "idle");
            let in_use = metrics::gauge!("mall_db_pool_connections", "db" => label, "state" => "in_use");
            loop {
                let open = pool.size();
                let free = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(open);
                idle.set(f64::from(free));
                in_use.set(f64::from(open - free));
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        PoolGauges { db, task }
    }
}

impl Drop for PoolGauges {
    fn drop(&mut self) {
        self.task.abort();
        for state in ["idle", "in_use"] {
            metrics::gauge!("mall_db_pool_connections", "db" => self.db.clone(), "state" => state).set(0.0);
        }
    }
}

/// Counts a lookup of `key` as a hit or a miss, under the kind of thing cached: the key's first
/// segment (`product` of `product:42`), or `other` for a key not written that way, so that the label
/// never carries an id.
pub(crate) fn cache_lookup(key: &str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("mall_cache_requests_total", "cache" => cache_label(key), "result" => result)
        .increment(1);
}

fn cache_label(key: &str) -> String {
    match key.split_once(':') {
        Some((kind, _))
            if !kind.is_empty()
                && kind.len() <= 24
                && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            kind.to_owned()
        }
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn cache_labels_are_kinds_never_ids() {
        assert_eq!(super::cache_label("product:42"), "product");
        assert_eq!(super::cache_label("product:43"), "product");
        for key in ["42", "Product:1", "7:x", ":1", "a-very-long-kind-of-thing-cached:1"] {
            assert_eq!(super::cache_label(key), "other", "{key}");
        }
    }

    #[test]
    fn operations_are_a_closed_set() {
        assert_eq!(operation("select id, name"), "SELECT");
        assert_eq!(operation("INSERT INTO x"), "INSERT");
        assert_eq!(operation("SET sql_mode=(SELECT"), "SET");
        assert_eq!(operation("WITH t AS"), "SQL");
        assert_eq!(operation(""), "SQL");
    }
}
