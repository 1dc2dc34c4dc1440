//! Delivery tests for Mall on Kubernetes.
//!
//! - [`manifests`]: YAML documents parsed into their `k8s-openapi` (or `MallStack`, `PrometheusRule`) type
//!   by kind, refusing any field the type does not know, so a typo in a chart or an example fails a test
//!   instead of being dropped silently by the API server's pruning.
//! - [`charts`]: the rendered Helm charts, from `ci/chart-checks.sh` (or `helm` run here).
//! - [`cluster`]: a real cluster from `KUBECONFIG` (its current context only), for the end-to-end test.
//! - [`gateway`]: a small HTTP client for the shop's API.
//! - [`run`]: one run on a cluster: a namespace, the operator chart, a MallStack, diagnostics, cleanup.
//! - [`load`]: a bounded steady load of a few clients through the gateway, with failures and latencies.
//! - [`stacks`]: MallStacks under test: the operator installed, a stack from the example, waiting on its
//!   status.

pub mod charts;
pub mod cluster;
pub mod gateway;
pub mod load;
pub mod manifests;
pub mod run;
pub mod stacks;

use std::path::{Path, PathBuf};

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// Whether this run is CI's (`CI=true`): there, what would be skipped locally must fail instead.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says why a test does nothing, where `cargo test -- --nocapture` shows it.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}
