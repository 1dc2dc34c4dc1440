//! Service identity: every component (the gateway and each gRPC service) has an Ed25519 key of its own,
//! kept in the Secret `<stack>-identity` (one item `<component>.pem`, PKCS#8 PEM), created once and
//! kept; a missing or unreadable item is generated and the others stay. Each component's pods get
//!
//! - `MALL_IDENTITY_KEY`: its own item, by reference (never another component's);
//! - `MALL_IDENTITY_PEERS`: `<component>=<public key>` for every component, comma-separated, in the
//!   order of [`IDENTITY_COMPONENTS`]; a public key is its 32 bytes in base64url without padding.
//!
//! The peers are computed from the Secret's data, so a changed key changes every pod template and the
//! pods roll onto it. Migration Jobs carry no identity.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EnvVar, Secret};
use mall_tokens::SigningKey;

use super::secrets::ExistingSecrets;
use super::workloads::{from_secret, value};
use super::{child_name, metadata};
use crate::crd::MallStack;

/// Every component with an identity, in the order `MALL_IDENTITY_PEERS` lists them.
pub const IDENTITY_COMPONENTS: [&str; 8] =
    ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"];

pub const IDENTITY_KEY_ENV: &str = "MALL_IDENTITY_KEY";
pub const IDENTITY_PEERS_ENV: &str = "MALL_IDENTITY_PEERS";

pub fn identity_secret_name(stack: &MallStack) -> String {
    child_name(stack, "identity")
}

/// `<component>.pem`: the item of the identity Secret holding that component's private key.
pub fn identity_key_name(component: &str) -> String {
    format!("{component}.pem")
}

/// The identity Secret and the peer list derived from it.
#[derive(Clone, Debug)]
pub struct Identity {
    pub secret: Secret,
    /// The value of `MALL_IDENTITY_PEERS`.
    pub peers: String,
}

fn parse(value: &ByteString) -> Option<SigningKey> {
    SigningKey::from_pkcs8_pem(std::str::from_utf8(&value.0).ok()?).ok()
}

/// The identity of `stack`: the keys the cluster holds (`existing`), plus a fresh key for each component
/// that has none (or one that is not a PKCS#8 Ed25519 key).
pub fn identity(stack: &MallStack, existing: &ExistingSecrets) -> Identity {
    let found = existing.get(&identity_secret_name(stack));
    let mut data = BTreeMap::new();
    let mut peers = Vec::with_capacity(IDENTITY_COMPONENTS.len());
    for component in IDENTITY_COMPONENTS {
        let name = identity_key_name(component);
        let kept = found.and_then(|d| d.get(&name)).and_then(|v| Some((v.clone(), parse(v)?)));
        let (pem, key) = kept.unwrap_or_else(|| {
            let key = SigningKey::generate();
            (ByteString(key.to_pkcs8_pem().into_bytes()), key)
        });
        peers.push(format!("{component}={}", URL_SAFE_NO_PAD.encode(key.public_key().key)));
        data.insert(name, pem);
    }
    let secret = Secret {
        metadata: metadata(stack, identity_secret_name(stack), "identity"),
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    Identity { secret, peers: peers.join(",") }
}

/// Gives the pods of `component` its own key and every component's public key.
pub(crate) fn wire(stack: &MallStack, deployment: &mut Deployment, component: &str, peers: &str) {
    let env: [EnvVar; 2] = [
        from_secret(IDENTITY_KEY_ENV, &identity_secret_name(stack), &identity_key_name(component)),
        value(IDENTITY_PEERS_ENV, peers),
    ];
    if let Some(container) =
        deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()).and_then(|p| p.containers.first_mut())
    {
        container.env.get_or_insert_with(Vec::new).extend(env);
    }
}
