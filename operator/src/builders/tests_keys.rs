//! Service identities and auth's key file, as the builders wire them.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret};
use k8s_openapi::jiff::Timestamp;
use mall_tokens::SigningKey;

use super::*;
use crate::fixtures::{full_stack, minimal_stack};
use crate::rotation::KeyRing;

/// Every serving Deployment with its component: the gateway, then each service.
fn serving(d: &Desired) -> Vec<(&'static str, &Deployment)> {
    let gateway = d.deployments.iter().find(|x| x.metadata.name.as_deref() == Some("shop-gateway")).unwrap();
    std::iter::once(("gateway", gateway))
        .chain(d.migrations.iter().map(|(s, _, dep)| (s.name(), dep)))
        .collect()
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn env(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env.clone().unwrap_or_default().into_iter().map(|e| (e.name.clone(), e)).collect()
}

/// `(secret, key)` of every variable that comes from a Secret.
fn secret_refs(c: &Container) -> Vec<(String, String, String)> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect()
}

fn secret<'a>(d: &'a Desired, name: &str) -> &'a Secret {
    d.secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name)).unwrap()
}

fn existing_of(secrets: &[Secret]) -> ExistingSecrets {
    secrets.iter().map(|s| (s.metadata.name.clone().unwrap(), s.data.clone().unwrap())).collect()
}

fn hash(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
        [CONFIG_HASH_ANNOTATION]
        .clone()
}

/// `MALL_IDENTITY_PEERS` as it must be for these identity keys, computed here from the PEMs.
fn peers_of(data: &BTreeMap<String, ByteString>) -> String {
    ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"]
        .iter()
        .map(|c| {
            let pem = std::str::from_utf8(&data[&format!("{c}.pem")].0).unwrap();
            let key = SigningKey::from_pkcs8_pem(pem).unwrap();
            format!("{c}={}", URL_SAFE_NO_PAD.encode(key.public_key().key))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn peers_env(d: &Deployment) -> String {
    env(container(d))[IDENTITY_PEERS_ENV].value.clone().unwrap()
}

#[test]
fn each_component_gets_its_own_identity_key_and_every_public_key() {
    for stack in [minimal_stack(), full_stack()] {
        let d = desired(&stack, &ExistingSecrets::new());
        let identity = secret(&d, "shop-identity");
        let data = identity.data.as_ref().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "auth.pem",
                "cart.pem",
                "checkout.pem",
                "gateway.pem",
                "order.pem",
                "payment.pem",
                "product.pem",
                "user.pem"
            ]
        );
        let kids: std::collections::BTreeSet<String> = data
            .values()
            .map(|v| SigningKey::from_pkcs8_pem(std::str::from_utf8(&v.0).unwrap()).unwrap().kid().to_owned())
            .collect();
        assert_eq!(kids.len(), 8, "a key of its own for each component");
        assert_eq!(
            identity.metadata.owner_references.as_ref().unwrap()[0].name,
            "shop",
            "owned by the stack"
        );

        let expected = peers_of(data);
        let serving = serving(&d);
        assert_eq!(serving.len(), 8);
        for (component, deployment) in serving {
            let c = container(deployment);
            let identity_refs: Vec<_> =
                secret_refs(c).into_iter().filter(|(_, secret, _)| secret == "shop-identity").collect();
            assert_eq!(
                identity_refs,
                [(IDENTITY_KEY_ENV.to_owned(), "shop-identity".to_owned(), format!("{component}.pem"))],
                "{component} reads its own key and no other"
            );
            let peers = peers_env(deployment);
            assert_eq!(peers, expected, "{component}");
            let listed: Vec<(&str, Vec<u8>)> = peers
                .split(',')
                .map(|p| {
                    let (name, key) = p.split_once('=').unwrap();
                    (name, URL_SAFE_NO_PAD.decode(key).unwrap())
                })
                .collect();
            assert_eq!(
                listed.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                ["gateway", "auth", "user", "product", "cart", "order", "payment", "checkout"]
            );
            assert!(listed.iter().all(|(_, key)| key.len() == 32));
        }
    }
}

#[test]
fn identity_keys_are_kept_completed_and_roll_the_pods_when_they_change() {
    let stack = minimal_stack();
    let first = desired(&stack, &ExistingSecrets::new());
    let existing = existing_of(&first.secrets);
    let again = desired(&stack, &existing);
    assert_eq!(secret(&again, "shop-identity"), secret(&first, "shop-identity"), "kept as they are");
    for ((_, a), (_, b)) in serving(&first).into_iter().zip(serving(&again)) {
        assert_eq!(hash(a), hash(b));
        assert_eq!(a, b);
    }

    // One key missing, one unreadable: both made anew, the others kept.
    let mut damaged = existing.clone();
    let identity = damaged.get_mut("shop-identity").unwrap();
    identity.remove("cart.pem");
    identity.insert("order.pem".into(), ByteString(b"not a key".to_vec()));
    let repaired = desired(&stack, &damaged);
    let before = secret(&first, "shop-identity").data.clone().unwrap();
    let after = secret(&repaired, "shop-identity").data.clone().unwrap();
    assert_eq!(after.len(), 8);
    for (name, value) in &after {
        let changed = name == "cart.pem" || name == "order.pem";
        assert_eq!(value != &before[name], changed, "{name}");
    }
    assert_eq!(peers_env(&repaired.deployments[1]), peers_of(&after), "the peers come from the Secret");
    // Every component learns the new public keys: each pod template changes, so the pods roll.
    for ((component, a), (_, b)) in serving(&first).into_iter().zip(serving(&repaired)) {
        assert_ne!(hash(a), hash(b), "{component}");
    }

    // A key replaced in the cluster is what the pods are told.
    let mut replaced = existing.clone();
    let key = SigningKey::generate();
    replaced
        .get_mut("shop-identity")
        .unwrap()
        .insert("auth.pem".into(), ByteString(key.to_pkcs8_pem().into_bytes()));
    let d = desired(&stack, &replaced);
    let peers = peers_env(&d.migrations[0].2);
    assert!(peers.contains(&format!("auth={}", URL_SAFE_NO_PAD.encode(key.public_key().key))), "{peers}");
}

#[test]
fn auth_reads_its_signing_keys_from_the_mounted_file() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    for (component, deployment) in serving(&d) {
        let c = container(deployment);
        let env = env(c);
        assert!(!env.contains_key("MALL_AUTH_SIGNING_KEY"), "{component}: the single key is gone");
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        let volumes = pod(deployment).volumes.clone().unwrap_or_default();
        let keys_mount = mounts.iter().find(|m| m.mount_path == "/etc/mall/auth");
        let keys_volume = volumes.iter().find(|v| v.secret.is_some());
        if component != "auth" {
            assert!(keys_mount.is_none() && keys_volume.is_none(), "{component}");
            assert!(!env.contains_key(AUTH_KEYS_FILE_ENV), "{component}");
            continue;
        }
        assert_eq!(env["MALL_AUTH_KEYS_FILE"].value.as_deref(), Some("/etc/mall/auth/keys.json"));
        let mount = keys_mount.expect("the key file is mounted");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.sub_path, None, "a subPath mount would never see the file change");
        let volume = keys_volume.unwrap();
        assert_eq!(volume.name, mount.name);
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("shop-auth-keys"));
        assert_eq!(source.items, None, "the whole Secret: keys.json");
        assert_eq!(source.optional, Some(false));
    }
}

#[test]
fn migration_jobs_carry_no_identity_and_no_keys() {
    let d = desired(&minimal_stack(), &ExistingSecrets::new());
    for (service, job, _) in &d.migrations {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let env = env(c);
        for name in [IDENTITY_KEY_ENV, IDENTITY_PEERS_ENV, AUTH_KEYS_FILE_ENV, "MALL_AUTH_SIGNING_KEY"] {
            assert!(!env.contains_key(name), "{service:?}: {name}");
        }
        assert!(
            secret_refs(c)
                .iter()
                .all(|(_, secret, _)| secret != "shop-identity" && secret != "shop-auth-keys")
        );
        assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()), "{service:?}");
    }
}

#[test]
fn the_key_file_secret_carries_the_file_and_its_bookkeeping() {
    let stack = minimal_stack();
    let now: Timestamp = "2025-12-01T10:00:00Z".parse().unwrap();
    let ring = KeyRing { published_at: Some(now), ..KeyRing::fresh(now) };
    let secret = auth_keys_secret(&stack, &ring);
    assert_eq!(secret.metadata.name.as_deref(), Some("shop-auth-keys"));
    assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].name, "shop");
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"], "shop");
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["keys.json"], "one item only");
    assert_eq!(data["keys.json"].0, ring.file());
    assert_eq!(
        secret.metadata.annotations.clone().unwrap(),
        BTreeMap::from([
            (LAST_ROTATION_ANNOTATION.to_owned(), "2025-12-01T10:00:00Z".to_owned()),
            (PUBLISHED_AT_ANNOTATION.to_owned(), "2025-12-01T10:00:00Z".to_owned()),
        ])
    );
    // Read back as the cluster returns it: the same ring.
    let (back, problems) = current_key_ring(&stack, Some(&secret), &ExistingSecrets::new(), now);
    assert_eq!((back, problems), (ring.clone(), vec![]));
    // Nothing pending: no publication time.
    let settled = auth_keys_secret(&stack, &KeyRing { published_at: None, ..ring });
    assert!(!settled.metadata.annotations.unwrap().contains_key(PUBLISHED_AT_ANNOTATION));
}

#[test]
fn the_first_key_file_starts_from_the_single_key_auth_had() {
    let stack = minimal_stack();
    let now: Timestamp = "2025-12-01T10:00:00Z".parse().unwrap();

    // A new stack: a fresh key.
    let (fresh, problems) = current_key_ring(&stack, None, &ExistingSecrets::new(), now);
    assert!(problems.is_empty());
    assert_eq!(fresh.keys.len(), 1);
    assert!(fresh.keys[0].signs);
    assert_eq!(fresh.last_rotation, Some(now));

    // A stack from before the key file: the key of `<stack>-auth-signing-key` keeps signing.
    let legacy = SigningKey::generate();
    let existing = ExistingSecrets::from([(
        "shop-auth-signing-key".to_owned(),
        BTreeMap::from([("signing-key.pem".to_owned(), ByteString(legacy.to_pkcs8_pem().into_bytes()))]),
    )]);
    let (adopted, problems) = current_key_ring(&stack, None, &existing, now);
    assert!(problems.is_empty());
    assert_eq!(adopted.keys.len(), 1);
    assert_eq!((adopted.keys[0].kid.as_str(), adopted.keys[0].signs), (legacy.kid(), true));
    assert_eq!(adopted.keys[0].pem, legacy.to_pkcs8_pem());
    assert_eq!(adopted.last_rotation, None);
    // Once the key file exists, it is what counts.
    let file = auth_keys_secret(&stack, &fresh);
    let (kept, _) = current_key_ring(&stack, Some(&file), &existing, now);
    assert_eq!(kept.keys, fresh.keys);

    // A file that is not a key file: no key (the rotation makes one and says so), the reason reported.
    let mut broken = file.clone();
    broken.data = Some(BTreeMap::from([("keys.json".to_owned(), ByteString(b"{\"keys\": 7}".to_vec()))]));
    let (empty, problems) = current_key_ring(&stack, Some(&broken), &existing, now);
    assert!(empty.keys.is_empty());
    assert_eq!(empty.last_rotation, Some(now), "its bookkeeping is kept");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("keys.json is not a key file"), "{problems:?}");
}
