//! What can go wrong while reconciling, each kind with a metric label.

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spec is invalid: {0}")]
    InvalidSpec(#[from] crate::crd::SpecError),
    #[error("cannot read {kind}: {source}")]
    Observe {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Prune {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the status: {0}")]
    Status(#[source] kube::Error),
    #[error("the stack has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short, bounded label for the failures counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Observe { .. } => "observe",
            Error::Apply { source: kube::Error::Api(status), .. } if status.is_invalid() => "apply_invalid",
            Error::Apply { source: kube::Error::Api(status), .. } if status.is_conflict() => "apply_conflict",
            Error::Apply { .. } => "apply",
            Error::Prune { .. } => "prune",
            Error::Status(_) => "status",
            Error::MissingField(_) => "missing_field",
        }
    }

    /// The condition reason shown on the stack (`Degraded`), PascalCase as Kubernetes expects.
    pub fn reason(&self) -> &'static str {
        match self.metric_label() {
            "invalid_spec" => "InvalidSpec",
            "observe" => "ObserveFailed",
            "apply_invalid" => "ApplyRejected",
            "apply_conflict" => "ApplyConflict",
            "apply" => "ApplyFailed",
            "prune" => "PruneFailed",
            "status" => "StatusFailed",
            _ => "MissingField",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
