//! The operator's own metrics, rendered in the Prometheus text format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0];

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    durations: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let mut h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn failed(&self, label: &'static str) {
        *self.failures.lock().unwrap_or_else(|e| e.into_inner()).entry(label).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP mall_operator_reconciles_total Reconciles run.");
        let _ = writeln!(out, "# TYPE mall_operator_reconciles_total counter");
        let _ = writeln!(out, "mall_operator_reconciles_total {}", self.reconciles.load(Ordering::Relaxed));
        let _ =
            writeln!(out, "# HELP mall_operator_reconcile_failures_total Failed reconciles by error kind.");
        let _ = writeln!(out, "# TYPE mall_operator_reconcile_failures_total counter");
        for (label, n) in self.failures.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "mall_operator_reconcile_failures_total{{error=\"{label}\"}} {n}");
        }
        let h = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP mall_operator_reconcile_duration_seconds How long a reconcile took.");
        let _ = writeln!(out, "# TYPE mall_operator_reconcile_duration_seconds histogram");
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "mall_operator_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "mall_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "mall_operator_reconcile_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "mall_operator_reconcile_duration_seconds_count {}", h.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_failures_and_durations() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(30));
        m.reconciled(Duration::from_secs(2));
        m.failed("apply");
        m.failed("apply");
        let text = m.render();
        assert!(text.contains("mall_operator_reconciles_total 2\n"));
        assert!(text.contains("mall_operator_reconcile_failures_total{error=\"apply\"} 2\n"));
        assert!(text.contains("mall_operator_reconcile_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("mall_operator_reconcile_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("mall_operator_reconcile_duration_seconds_count 2\n"));
    }
}
