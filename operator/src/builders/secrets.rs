//! Secrets the operator generates once and never regenerates: the MySQL passwords and the admin
//! password. The builder reuses whatever data the cluster already holds. (Service identities are in
//! `identity`, auth's signing keys in `auth_keys`; the single-key Secret `<stack>-auth-signing-key` of
//! earlier versions is no longer made, only read once to carry its key over.)
//!
//! The MySQL Secrets go with the data volume: while `retainOnDelete` keeps the volume, they have no
//! owner reference either, so deleting the stack leaves them all, and a stack created again with the
//! same name finds the passwords the data was initialised with (the reconciler lists Secrets by the
//! stack's labels, not by owner). That is the root password (`<stack>-mysql`) and one Secret per
//! service (`<stack>-mysql-<service>`) with its own user's password and the URL it connects with.
//!
//! The managed Redis requires a password, generated into `<stack>-redis` with the URL every component
//! connects with. A URL is derived from its kept password each time, never generated.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distributions::Alphanumeric;

use super::workloads::{MYSQL_PORT, REDIS_PORT, service_host};
use super::{child_name, metadata};
use crate::crd::{MallStack, ManagedDatabase, Service};

pub const SIGNING_KEY_KEY: &str = "signing-key.pem";
/// In `<stack>-mysql`: the password of the shared user `mall` that earlier versions had every service
/// connect with. No pod reads it any more (each service has its own user); it stays so that a pod of
/// the previous version that restarts during the upgrade still starts.
pub const DB_PASSWORD_KEY: &str = "password";
pub const DB_ROOT_PASSWORD_KEY: &str = "root-password";
pub const ADMIN_PASSWORD_KEY: &str = "password";
/// The generated password in a service's database Secret and in the Redis Secret.
pub const PASSWORD_KEY: &str = "password";
/// The URL (with the password) a service's database Secret and the Redis Secret hold.
pub const URL_KEY: &str = "url";

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
        secrets.extend(database_account_secrets(stack, db, existing));
    }
    if stack.spec.redis.managed.is_some() {
        secrets.push(redis_secret(stack, existing));
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

/// `<stack>-mysql-<service>`: the service's own MySQL user, its password and the URL it connects with.
pub fn database_secret_name(stack: &MallStack, service: Service) -> String {
    child_name(stack, &format!("mysql-{}", service.name()))
}

/// `<stack>-redis`: the managed Redis's password and the URL every component connects with.
pub fn redis_secret_name(stack: &MallStack) -> String {
    child_name(stack, "redis")
}

/// `mall_<service>`: on the managed MySQL, the service's database and the user allowed into it (and
/// into nothing else; see `mall provision`).
pub fn database_user(service: Service) -> String {
    format!("mall_{}", service.name())
}

/// One Secret per service: a generated password for its own user on the managed MySQL, and the URL
/// `mysql://mall_<service>:<password>@<stack>-mysql...:3306/mall_<service>`. Kept with the volume
/// like the root password's Secret.
fn database_account_secrets(
    stack: &MallStack,
    db: &ManagedDatabase,
    existing: &ExistingSecrets,
) -> Vec<Secret> {
    let host = service_host(stack, "mysql");
    Service::ALL
        .into_iter()
        .map(|service| {
            let name = database_secret_name(stack, service);
            let mut secret = secret(stack, name, "mysql", existing, &[(PASSWORD_KEY, password)]);
            let user = database_user(service);
            with_url(&mut secret, |password| format!("mysql://{user}:{password}@{host}:{MYSQL_PORT}/{user}"));
            if db.retain_on_delete {
                secret.metadata.owner_references = None;
            }
            secret
        })
        .collect()
}

/// The managed Redis's password and `redis://:<password>@<stack>-redis...:6379`. It goes with the stack:
/// Redis keeps nothing that outlives it.
fn redis_secret(stack: &MallStack, existing: &ExistingSecrets) -> Secret {
    let host = service_host(stack, "redis");
    let mut secret = secret(stack, redis_secret_name(stack), "redis", existing, &[(PASSWORD_KEY, password)]);
    with_url(&mut secret, |password| format!("redis://:{password}@{host}:{REDIS_PORT}"));
    secret
}

/// Adds `url`, made from the Secret's password (percent-encoded: a password edited by hand may hold
/// characters a URL cannot).
fn with_url(secret: &mut Secret, url: impl FnOnce(&str) -> String) {
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    let password = data.get(PASSWORD_KEY).map(|p| percent_encode(&p.0)).unwrap_or_default();
    data.insert(URL_KEY.to_owned(), ByteString(url(&password).into_bytes()));
}

/// `bytes` with everything but URL-unreserved characters (`A-Z a-z 0-9 - . _ ~`) percent-encoded.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
