//! Restarts without a configuration change. `mall.example.com/restart: <token>` on a MallStack rolls every
//! component; `mall.example.com/restart-<component>: <token>` (`restart-gateway`, `restart-cart`,
//! `restart-mysql`, …) rolls that one. The token is any text, e.g. the time it was asked:
//!
//! ```sh
//! kubectl annotate mallstack shop mall.example.com/restart-gateway="$(date -u +%FT%TZ)" --overwrite
//! ```
//!
//! The token goes onto the component's pod template ([`RESTARTED_ANNOTATION`]), so a restart is an
//! ordinary rolling update (surge, readiness, disruption budgets), a token already applied rolls
//! nothing, and `status.components.<component>.restarted` says which token the pods carry: the
//! acknowledgement. Both tokens, when a component has both, are joined (`<all>,<component>`), so either
//! changing rolls it.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use crate::crd::MallStack;

/// Rolls every component (see the module).
pub const RESTART_ANNOTATION: &str = "mall.example.com/restart";

/// On a pod template: the restart token its pods were made for.
pub const RESTARTED_ANNOTATION: &str = "mall.example.com/restarted";

/// The restart token `component`'s pods should carry, if any restart was asked for it.
pub fn restart_token(stack: &MallStack, component: &str) -> Option<String> {
    let annotations = stack.annotations();
    let token = |key: &str| annotations.get(key).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    match (token(RESTART_ANNOTATION), token(&format!("{RESTART_ANNOTATION}-{component}"))) {
        (Some(all), Some(one)) => Some(format!("{all},{one}")),
        (all, one) => all.or(one),
    }
}

/// Puts `component`'s restart token on its pod template.
pub(crate) fn stamp(stack: &MallStack, component: &str, template: &mut PodTemplateSpec) {
    if let Some(token) = restart_token(stack, component) {
        let meta = template.metadata.get_or_insert_default();
        meta.annotations.get_or_insert_default().insert(RESTARTED_ANNOTATION.to_owned(), token);
    }
}

/// The restart token a pod template carries.
pub fn restarted(template: Option<&PodTemplateSpec>) -> Option<String> {
    template?.metadata.as_ref()?.annotations.as_ref()?.get(RESTARTED_ANNOTATION).cloned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;

    use super::*;
    use crate::builders::{ExistingSecrets, child_name, desired};
    use crate::fixtures::minimal_stack;

    /// Every component's pod template, by component name, as desired.
    fn templates(stack: &MallStack) -> Vec<(String, PodTemplateSpec)> {
        let d = desired(stack, &ExistingSecrets::new());
        let deployments =
            d.deployments.iter().chain(d.migrations.iter().map(|(_, _, deployment)| deployment));
        let mut out: Vec<(String, PodTemplateSpec)> = deployments
            .map(|dep: &Deployment| (dep.name_any(), dep.spec.clone().unwrap().template))
            .collect();
        out.extend(d.stateful_sets.iter().map(|s| (s.name_any(), s.spec.clone().unwrap().template)));
        out
    }

    fn annotated(pairs: &[(&str, &str)]) -> MallStack {
        let mut stack = minimal_stack();
        let annotations = stack.metadata.annotations.get_or_insert_default();
        for (k, v) in pairs {
            annotations.insert((*k).to_owned(), (*v).to_owned());
        }
        stack
    }

    #[test]
    fn nothing_is_stamped_until_a_restart_is_asked_for() {
        for (name, template) in templates(&minimal_stack()) {
            assert_eq!(restarted(Some(&template)), None, "{name}");
        }
        let blank = annotated(&[(RESTART_ANNOTATION, "  ")]);
        assert!(templates(&blank).iter().all(|(_, t)| restarted(Some(t)).is_none()));
    }

    #[test]
    fn one_component_or_all_are_stamped() {
        let stack = minimal_stack();
        let gateway = child_name(&stack, "gateway");
        let one = annotated(&[("mall.example.com/restart-gateway", "t1")]);
        for (name, template) in templates(&one) {
            let want = (name == gateway).then_some("t1");
            assert_eq!(restarted(Some(&template)).as_deref(), want, "{name}");
        }

        let all = annotated(&[(RESTART_ANNOTATION, "t2")]);
        let stamped = templates(&all);
        assert!(stamped.len() >= 10, "gateway, seven services, mysql and redis: {}", stamped.len());
        for (name, template) in &stamped {
            assert_eq!(restarted(Some(template)).as_deref(), Some("t2"), "{name}");
        }

        // Both: either changing rolls the component.
        let both = annotated(&[(RESTART_ANNOTATION, "t2"), ("mall.example.com/restart-mysql", "t3")]);
        assert_eq!(restart_token(&both, "mysql").as_deref(), Some("t2,t3"));
        assert_eq!(restart_token(&both, "cart").as_deref(), Some("t2"));
        let mysql = child_name(&stack, "mysql");
        let (_, template) = templates(&both).into_iter().find(|(n, _)| *n == mysql).unwrap();
        assert_eq!(restarted(Some(&template)).as_deref(), Some("t2,t3"));
    }
}
