//! Both examples parse into the operator's `MallStack` type with no unknown field, pass its validation
//! and its CEL rules, and the production example's Secret references point at the Secrets it ships.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use mall_e2e::manifests::{Object, parse_all};
use mall_e2e::repo_root;
use mall_operator::MallStack;
use mall_operator::crd::SecretKeyRef;

fn example(name: &str) -> Vec<Object> {
    let path = repo_root().join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_all(&text).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn checked_stack(objects: &[Object]) -> MallStack {
    let stacks: Vec<&MallStack> = objects
        .iter()
        .filter_map(|o| if let Object::MallStack(s) = o { Some(s.as_ref()) } else { None })
        .collect();
    assert_eq!(stacks.len(), 1, "one MallStack per example");
    let stack = stacks[0].clone();
    stack.spec.validate().unwrap_or_else(|e| panic!("{}: {e}", stack.name_any()));
    kube::core::cel::validate_cel(&stack).unwrap_or_else(|e| panic!("CEL rules: {e:?}"));
    assert_ne!(stack.spec.image.tag, "latest");
    assert!(stack.metadata.namespace.is_none(), "examples are applied with -n");
    stack
}

#[test]
fn minimal_example_is_a_valid_mallstack() {
    let objects = example("mallstack.yaml");
    let stack = checked_stack(&objects);
    assert_eq!(objects.len(), 1);
    assert!(stack.spec.database.managed.is_some() && stack.spec.redis.managed.is_some());
    assert!(stack.spec.network_policies, "the example shows the default");
}

#[test]
fn production_example_is_a_valid_mallstack_with_its_secrets() {
    let objects = example("mallstack-production.yaml");
    let stack = checked_stack(&objects);
    let secrets: BTreeMap<String, &Secret> = objects
        .iter()
        .filter_map(|o| if let Object::Secret(s) = o { Some((s.name_any(), s.as_ref())) } else { None })
        .collect();
    let spec = &stack.spec;

    let shipped = |r: &SecretKeyRef| {
        let secret = secrets.get(&r.name).unwrap_or_else(|| panic!("no Secret {} in the example", r.name));
        let value = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .unwrap_or_else(|| panic!("Secret {} has no stringData key {}", r.name, r.key));
        assert!(value.contains("REPLACE-ME"), "{}/{} must be a marked placeholder", r.name, r.key);
        value.clone()
    };
    let database = spec.database.external.as_ref().expect("an external database");
    assert!(spec.database.managed.is_none());
    assert!(shipped(&database.secret_ref).starts_with("mysql://"));
    let redis = spec.redis.external.as_ref().expect("an external Redis");
    assert!(spec.redis.managed.is_none());
    assert!(shipped(&redis.secret_ref).starts_with("redis://"));
    shipped(spec.admin.password_secret_ref.as_ref().expect("an admin password Secret"));
    assert_eq!(secrets.len(), 3, "the three Secrets the stack references, no others");

    assert!(spec.network_policies);
    assert!(spec.gateway.replicas > 1 && spec.gateway.autoscaling.is_some());
    assert!(spec.gateway.resources.is_some());
    let services: Vec<_> = spec.services.iter().collect();
    assert!(services.iter().all(|(_, s)| s.resources.is_some()), "every service sized");
    assert!(services.iter().any(|(_, s)| s.autoscaling.is_some()));
    assert!(services.iter().all(|(_, s)| s.replicas > 1 || s.autoscaling.is_some()), "no single points");
}
