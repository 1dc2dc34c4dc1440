//! The operator's own metrics, recorded with the `metrics` macros into the process-wide Prometheus
//! recorder of `mall-runtime` and rendered on `/metrics`.

use std::sync::Once;
use std::time::Duration;

/// Reconciles run.
pub const RECONCILES: &str = "mall_operator_reconciles_total";
/// Failed reconciles (and refused reads of a failed container's log), by what failed (`error` label:
/// [`crate::error::Error::metric_label`], or `logs`) and why (`reason` label: [`crate::error::refusal`]).
pub const FAILURES: &str = "mall_operator_reconcile_failures_total";
/// How long a reconcile took (a histogram: `mall-runtime` gives `*_duration_seconds` buckets).
pub const DURATION: &str = "mall_operator_reconcile_duration_seconds";

/// Installs the recorder if nothing did yet, and describes the operator's series (once).
pub fn install() {
    static DESCRIBED: Once = Once::new();
    mall_runtime::metrics_handle();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(RECONCILES, "Reconciles run.");
        metrics::describe_counter!(
            FAILURES,
            "Failed reconciles by what failed and why the API server refused."
        );
        metrics::describe_histogram!(DURATION, "How long a reconcile took.");
        // Shown as 0 before the first reconcile, rather than missing.
        metrics::counter!(RECONCILES).increment(0);
    });
}

/// Records one reconcile (successful or not) and how long it took.
pub fn reconciled(took: Duration) {
    metrics::counter!(RECONCILES).increment(1);
    metrics::histogram!(DURATION).record(took.as_secs_f64());
}

/// Records one failure: what failed (`error`) and why (`reason`), both from bounded sets.
pub fn failed(error: &'static str, reason: &'static str) {
    metrics::counter!(FAILURES, "error" => error, "reason" => reason).increment(1);
}

/// Everything recorded, in the Prometheus text format.
pub fn render() -> String {
    install();
    mall_runtime::metrics_handle().render()
}

/// The value of one series (`name` or `name{labels}`, as rendered), if recorded. Tests share the
/// process-wide recorder, so they compare values before and after rather than expect exact counts.
#[cfg(test)]
pub(crate) fn value(series: &str) -> Option<f64> {
    render().lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_failures_and_durations() {
        install();
        let before = value(RECONCILES).expect("the counter is shown from the start");
        reconciled(Duration::from_millis(30));
        reconciled(Duration::from_secs(2));
        failed("metrics_test", "forbidden");
        failed("metrics_test", "forbidden");
        let text = render();
        assert!(text.contains("# TYPE mall_operator_reconciles_total counter\n"), "{text}");
        assert!(value(RECONCILES).unwrap() >= before + 2.0, "{text}");
        assert!(
            text.contains(
                "mall_operator_reconcile_failures_total{error=\"metrics_test\",reason=\"forbidden\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE mall_operator_reconcile_duration_seconds histogram\n"), "{text}");
        for series in [
            "mall_operator_reconcile_duration_seconds_bucket{le=\"0.05\"}",
            "mall_operator_reconcile_duration_seconds_bucket{le=\"5\"}",
            "mall_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"}",
            "mall_operator_reconcile_duration_seconds_count",
        ] {
            assert!(value(series).is_some_and(|n| n >= 1.0), "{series} in {text}");
        }
        assert!(value("mall_operator_reconcile_duration_seconds_sum").is_some_and(|s| s >= 2.03), "{text}");
    }
}
