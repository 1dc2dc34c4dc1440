//! What can go wrong while reconciling, each kind with a metric label, and why the API server refused
//! a request, in its own words.

/// A reconcile failure. Its message quotes the API server's refusal (the RBAC rule, admission webhook
/// or quota that said no) rather than the client's debug dump.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spec is invalid: {0}")]
    InvalidSpec(#[from] crate::crd::SpecError),
    #[error("cannot read {kind}: {}", said(.source))]
    Observe {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {kind} {name}: {}", said(.source))]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {}", said(.source))]
    Prune {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the status: {}", said(.0))]
    Status(#[source] kube::Error),
    #[error("the stack has no {0}")]
    MissingField(&'static str),
}

/// What the API server said when it refused a request (its `Status` message), or the client's error
/// when no answer came.
pub fn said(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string(),
    }
}

/// Why a request failed, as a short bounded label: `forbidden` (RBAC, or an admission plugin that
/// forbids), `quota`, `invalid`, `conflict`, `not_found`, `rejected` (another 4xx), `server_error`, or
/// `unanswered` (no answer: connection, timeout, decoding).
pub fn refusal(error: &kube::Error) -> &'static str {
    let kube::Error::Api(status) = error else { return "unanswered" };
    if status.is_forbidden() && status.message.contains("exceeded quota") {
        "quota"
    } else if status.is_forbidden() {
        "forbidden"
    } else if status.is_invalid() {
        "invalid"
    } else if status.is_conflict() {
        "conflict"
    } else if status.is_not_found() {
        "not_found"
    } else if (400..500).contains(&status.code) {
        "rejected"
    } else {
        "server_error"
    }
}

impl Error {
    /// What failed, as a short bounded label for the failures counter.
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

    /// Why the API server refused, for the failures counter's `reason` label (`none` when no request
    /// failed).
    pub fn refusal(&self) -> &'static str {
        match self {
            Error::Observe { source, .. }
            | Error::Apply { source, .. }
            | Error::Prune { source, .. }
            | Error::Status(source) => refusal(source),
            Error::InvalidSpec(_) | Error::MissingField(_) => "none",
        }
    }

    /// The condition reason shown on the stack (`Degraded`), PascalCase as Kubernetes expects: who
    /// refused when that is the news (RBAC or an admission plugin, a quota), else what failed.
    pub fn reason(&self) -> &'static str {
        match (self.refusal(), self.metric_label()) {
            ("quota", _) => "QuotaExceeded",
            ("forbidden", _) => "Forbidden",
            (_, "invalid_spec") => "InvalidSpec",
            (_, "observe") => "ObserveFailed",
            (_, "apply_invalid") => "ApplyRejected",
            (_, "apply_conflict") => "ApplyConflict",
            ("rejected", "apply") => "ApplyRejected",
            (_, "apply") => "ApplyFailed",
            (_, "prune") => "PruneFailed",
            (_, "status") => "StatusFailed",
            _ => "MissingField",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Status::default()
        }))
    }

    #[test]
    fn refusals_are_named_and_quoted() {
        let rbac = api(
            403,
            "Forbidden",
            "pods is forbidden: User \"system:serviceaccount:mall:mall-operator\" cannot list resource \"pods\" in API group \"\" in the namespace \"mall\"",
        );
        let error = Error::Observe { kind: "Pod", source: rbac };
        assert_eq!(
            (error.metric_label(), error.refusal(), error.reason()),
            ("observe", "forbidden", "Forbidden")
        );
        assert_eq!(
            error.to_string(),
            "cannot read Pod: pods is forbidden: User \"system:serviceaccount:mall:mall-operator\" cannot list resource \"pods\" in API group \"\" in the namespace \"mall\""
        );

        let quota = api(
            403,
            "Forbidden",
            "persistentvolumeclaims \"data\" is forbidden: exceeded quota: q, requested: requests.storage=10Gi, used: requests.storage=0, limited: requests.storage=1Gi",
        );
        let error = Error::Apply { kind: "StatefulSet", name: "shop-mysql".into(), source: quota };
        assert_eq!((error.refusal(), error.reason()), ("quota", "QuotaExceeded"));
        assert!(
            error.to_string().starts_with("cannot apply StatefulSet shop-mysql: persistentvolumeclaims"),
            "{error}"
        );

        let webhook =
            api(400, "BadRequest", "admission webhook \"policy.example.com\" denied the request: no");
        let error = Error::Apply { kind: "Deployment", name: "shop-cart".into(), source: webhook };
        assert_eq!(
            (error.metric_label(), error.refusal(), error.reason()),
            ("apply", "rejected", "ApplyRejected")
        );
        assert_eq!(
            error.to_string(),
            "cannot apply Deployment shop-cart: admission webhook \"policy.example.com\" denied the request: no"
        );

        let bare = api(503, "ServiceUnavailable", "");
        let error = Error::Prune { kind: "Job", name: "old".into(), source: bare };
        assert_eq!((error.refusal(), error.reason()), ("server_error", "PruneFailed"));
        assert_eq!(error.to_string(), "cannot delete Job old: ServiceUnavailable (503)");

        let invalid = Error::from(crate::crd::SpecError { field: "spec.x".into(), message: "bad".into() });
        assert_eq!((invalid.refusal(), invalid.reason()), ("none", "InvalidSpec"));
    }
}
