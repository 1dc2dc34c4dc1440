//! Secrets the operator generates once and never regenerates: the MySQL passwords and the admin
//! password. The builder reuses whatever data the cluster already holds. (Service identities are in
//! `identity`, auth's signing keys in `auth_keys`; the single-key Secret `<stack>-auth-signing-key` of
//! earlier versions is no longer made, only read once to carry its key over.)
//!
//! The MySQL Secret goes with the data volume: while `retainOnDelete` keeps the volume, the Secret has
//! no owner reference either, so deleting the stack leaves both, and a stack created again with the
//! same name finds the passwords the data was initialised with (the reconciler lists Secrets by the
//! stack's labels, not by owner).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distributions::Alphanumeric;

use super::{child_name, metadata};
use crate::crd::MallStack;

pub const SIGNING_KEY_KEY: &str = "signing-key.pem";
pub const DB_PASSWORD_KEY: &str = "password";
pub const DB_ROOT_PASSWORD_KEY: &str = "root-password";
pub const ADMIN_PASSWORD_KEY: &str = "password";

/// The data of the generated Secrets found in the cluster, by Secret name.
pub type ExistingSecrets = BTreeMap<String, BTreeMap<String, ByteString>>;

/// The Secret auth's single signing key was kept in before the key file (`auth_keys`).
pub fn signing_key_secret_name(stack: &MallStack) -> String {
    child_name(stack, "auth-signing-key")
}

pub fn mysql_secret_name(stack: &MallStack) -> String {
    child_name(stack, "mysql")
}

pub fn admin_secret_name(stack: &MallStack) -> String {
    child_name(stack, "admin")
}

/// The generated Secrets of `stack`: each key keeps its existing value, and only a missing key is
/// generated.
pub fn generated_secrets(stack: &MallStack, existing: &ExistingSecrets) -> Vec<Secret> {
    let mut secrets = Vec::new();
    if let Some(db) = &stack.spec.database.managed {
        let mut mysql = secret(
            stack,
            mysql_secret_name(stack),
            "mysql",
            existing,
            &[(DB_PASSWORD_KEY, password), (DB_ROOT_PASSWORD_KEY, password)],
        );
        if db.retain_on_delete {
            mysql.metadata.owner_references = None;
        }
        secrets.push(mysql);
    }
    if stack.spec.admin.password_secret_ref.is_none() {
        secrets.push(secret(
            stack,
            admin_secret_name(stack),
            "user",
            existing,
            &[(ADMIN_PASSWORD_KEY, password)],
        ));
    }
    secrets
}

type Generator = fn() -> String;

fn secret(
    stack: &MallStack,
    name: String,
    component: &str,
    existing: &ExistingSecrets,
    keys: &[(&str, Generator)],
) -> Secret {
    let found = existing.get(&name);
    let data = keys
        .iter()
        .map(|(key, generate)| {
            let value = found
                .and_then(|data| data.get(*key))
                .filter(|v| !v.0.is_empty())
                .cloned()
                .unwrap_or_else(|| ByteString(generate().into_bytes()));
            ((*key).to_owned(), value)
        })
        .collect();
    Secret {
        metadata: metadata(stack, name, component),
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// 32 alphanumeric characters (safe inside a URL without escaping).
fn password() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}
