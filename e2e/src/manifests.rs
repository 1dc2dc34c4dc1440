//! Manifests parsed strictly: a document becomes the Rust type of its `apiVersion` and `kind`, and every
//! field of the document must survive the round trip through that type (the `k8s-openapi` types ignore
//! unknown fields when deserializing; this check does not).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mall_operator::MallStack;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every non-empty document of a YAML stream, as JSON values.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("not a YAML document stream")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// [`documents`] of a file.
pub fn read_documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    documents(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Paths (`.spec.template...`) of the fields of `original` that `typed` (its round trip) lost or changed.
pub fn lost_fields(original: &Value, typed: &Value) -> Vec<String> {
    let mut lost = Vec::new();
    compare(original, typed, "", &mut lost);
    lost
}

fn compare(original: &Value, typed: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (key, value) in o {
                let here = format!("{path}.{key}");
                match t.get(key) {
                    // An explicit null means "unset" to the API server too.
                    None if value.is_null() => {}
                    None => lost.push(format!("{here} (unknown field)")),
                    Some(typed) => compare(value, typed, &here, lost),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (o, t)) in o.iter().zip(t).enumerate() {
                compare(o, t, &format!("{path}[{i}]"), lost);
            }
        }
        (Value::Number(o), Value::Number(t)) if o.as_f64() == t.as_f64() => {}
        (o, t) if o == t => {}
        (o, t) => lost.push(format!("{path} ({o} became {t})")),
    }
}

/// `value` as a `T`, or an error naming every field `T` does not carry.
pub fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T> {
    let typed: T = serde_json::from_value(value.clone())?;
    let back = serde_json::to_value(&typed)?;
    let lost = lost_fields(value, &back);
    if !lost.is_empty() {
        bail!("fields the type does not know: {}", lost.join(", "));
    }
    Ok(typed)
}

/// A Prometheus Operator `PrometheusRule` (`monitoring.coreos.com/v1`), which `k8s-openapi` does not
/// have: the fields of its CRD that rules use; any other field is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

/// `PrometheusRule.spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

/// One group of rules, evaluated together.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub rules: Vec<Rule>,
}

/// An alerting rule (`alert`) or a recording rule (`record`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One document parsed into its type.
#[derive(Debug)]
pub enum Object {
    ServiceAccount(Box<ServiceAccount>),
    Service(Box<Service>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    NetworkPolicy(Box<NetworkPolicy>),
    Role(Box<Role>),
    ClusterRole(Box<ClusterRole>),
    RoleBinding(Box<RoleBinding>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    MallStack(Box<MallStack>),
    PrometheusRule(Box<PrometheusRule>),
}

impl Object {
    /// `kind/name`.
    pub fn describe(&self) -> String {
        use kube::ResourceExt;
        let (kind, name) = match self {
            Object::ServiceAccount(o) => ("ServiceAccount", o.name_any()),
            Object::Service(o) => ("Service", o.name_any()),
            Object::Secret(o) => ("Secret", o.name_any()),
            Object::ConfigMap(o) => ("ConfigMap", o.name_any()),
            Object::Pod(o) => ("Pod", o.name_any()),
            Object::Deployment(o) => ("Deployment", o.name_any()),
            Object::NetworkPolicy(o) => ("NetworkPolicy", o.name_any()),
            Object::Role(o) => ("Role", o.name_any()),
            Object::ClusterRole(o) => ("ClusterRole", o.name_any()),
            Object::RoleBinding(o) => ("RoleBinding", o.name_any()),
            Object::ClusterRoleBinding(o) => ("ClusterRoleBinding", o.name_any()),
            Object::CustomResourceDefinition(o) => ("CustomResourceDefinition", o.name_any()),
            Object::MallStack(o) => ("MallStack", o.name_any()),
            Object::PrometheusRule(o) => ("PrometheusRule", o.metadata.name.clone().unwrap_or_default()),
        };
        format!("{kind}/{name}")
    }
}

/// Parses `doc` into the type its `apiVersion` and `kind` name; an unknown kind is an error.
pub fn parse(doc: &Value) -> Result<Object> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let object = match (api_version, kind) {
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(doc)?),
        ("v1", "Service") => Object::Service(strict(doc)?),
        ("v1", "Secret") => Object::Secret(strict(doc)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(doc)?),
        ("v1", "Pod") => Object::Pod(strict(doc)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(doc)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => Object::ClusterRoleBinding(strict(doc)?),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            Object::CustomResourceDefinition(strict(doc)?)
        }
        ("mall.example.com/v1alpha1", "MallStack") => Object::MallStack(strict(doc)?),
        ("monitoring.coreos.com/v1", "PrometheusRule") => Object::PrometheusRule(strict(doc)?),
        _ => bail!("{api_version} {kind} {name}: no type for this kind here (add it to manifests::parse)"),
    };
    Ok(object)
}

/// Every document of `text` parsed; the errors name the document.
pub fn parse_all(text: &str) -> Result<Vec<Object>> {
    documents(text)?
        .iter()
        .map(|doc| {
            parse(doc).with_context(|| {
                format!(
                    "{} {}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_misspelt_field_is_caught() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPrt": 8080}], "selector": {"a": "b"}}
        });
        let err = parse(&doc).unwrap_err().to_string();
        assert!(err.contains(".spec.ports[0].targetPrt"), "{err}");
    }

    #[test]
    fn a_well_formed_object_passes_and_nulls_are_unset() {
        let doc = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "sa", "labels": {"a": "b"}, "annotations": null},
            "automountServiceAccountToken": true
        });
        assert!(matches!(parse(&doc).unwrap(), Object::ServiceAccount(_)));
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let doc = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}});
        assert!(parse(&doc).is_err());
    }

    #[test]
    fn mallstack_fields_are_checked_too() {
        let doc = json!({
            "apiVersion": "mall.example.com/v1alpha1", "kind": "MallStack",
            "metadata": {"name": "shop"},
            "spec": {"image": {"tag": "0.1.0"}, "database": {"managed": {}}, "redis": {"managed": {}},
                     "gateway": {"replicas": 2, "replicaz": 3}}
        });
        let err = parse(&doc).unwrap_err().to_string();
        assert!(err.contains(".spec.gateway.replicaz"), "{err}");
    }

    #[test]
    fn prometheus_rules_are_parsed_strictly() {
        let rule = |extra: Value| {
            let mut rule =
                json!({"alert": "A", "expr": "up == 0", "for": "5m", "labels": {"severity": "page"}});
            rule.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "r"},
                "spec": {"groups": [{"name": "g", "rules": [rule]}]}
            })
        };
        let Object::PrometheusRule(parsed) = parse(&rule(json!({}))).unwrap() else { panic!("not a rule") };
        assert_eq!(parsed.spec.groups[0].rules[0].for_.as_deref(), Some("5m"));
        assert!(parse(&rule(json!({"fro": "5m"}))).is_err(), "a misspelt field is refused");
    }

    #[test]
    fn multi_document_streams_skip_empty_documents() {
        let text =
            "---\n# Source: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n";
        let objects = parse_all(text).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].describe(), "ConfigMap/c");
    }
}
