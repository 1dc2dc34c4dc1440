//! Auth's signing keys on the cluster: the Secret `<stack>-auth-keys` whose one item `keys.json` is the
//! key file (see [`crate::rotation`]), and its mount in the auth pods.
//!
//! The Secret is mounted as a whole directory (not through `subPath`, which the kubelet never updates),
//! so a rotation reaches running pods as the file changes in place: the pods do not restart, and the
//! pod template does not depend on the file's content. The rotation's bookkeeping rides on the Secret
//! as annotations, written in the same apply as the file.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::jiff::Timestamp;

use super::secrets::{ExistingSecrets, SIGNING_KEY_KEY, signing_key_secret_name};
use super::workloads::value;
use super::{child_name, metadata};
use crate::crd::MallStack;
use crate::rotation::KeyRing;

/// The item of the Secret holding the key file.
pub const AUTH_KEYS_FILE_KEY: &str = "keys.json";
/// Where auth pods find the Secret's items.
pub const AUTH_KEYS_MOUNT_PATH: &str = "/etc/mall/auth";
/// `MALL_AUTH_KEYS_FILE`.
pub const AUTH_KEYS_FILE: &str = "/etc/mall/auth/keys.json";
pub const AUTH_KEYS_FILE_ENV: &str = "MALL_AUTH_KEYS_FILE";
const VOLUME: &str = "auth-keys";
/// The rotation request last acted on (RFC 3339).
pub const LAST_ROTATION_ANNOTATION: &str = "mall.example.com/last-rotation";
/// When the key waiting to sign was published (RFC 3339); absent when none waits.
pub const PUBLISHED_AT_ANNOTATION: &str = "mall.example.com/key-published-at";

pub fn auth_keys_secret_name(stack: &MallStack) -> String {
    child_name(stack, "auth-keys")
}

/// The Secret holding `ring`'s key file and bookkeeping.
pub fn auth_keys_secret(stack: &MallStack, ring: &KeyRing) -> Secret {
    let mut meta = metadata(stack, auth_keys_secret_name(stack), "auth");
    let annotations: BTreeMap<String, String> =
        [(LAST_ROTATION_ANNOTATION, ring.last_rotation), (PUBLISHED_AT_ANNOTATION, ring.published_at)]
            .into_iter()
            .filter_map(|(name, time)| Some((name.to_owned(), time?.to_string())))
            .collect();
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    Secret {
        metadata: meta,
        data: Some(BTreeMap::from([(AUTH_KEYS_FILE_KEY.to_owned(), ByteString(ring.file()))])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The key ring to go on from: the one in `found` (the stack's `<stack>-auth-keys` as the cluster holds
/// it); without one, the key of the single-key Secret `<stack>-auth-signing-key` that auth used before
/// the key file (so that its tokens stay valid), else a fresh key. Also what could not be read, for the
/// status: a file that is not a key file at all counts as one without keys, which the rotation repairs.
pub fn current_key_ring(
    stack: &MallStack,
    found: Option<&Secret>,
    existing: &ExistingSecrets,
    now: Timestamp,
) -> (KeyRing, Vec<String>) {
    let file = found.and_then(|s| s.data.as_ref()).and_then(|d| d.get(AUTH_KEYS_FILE_KEY));
    let Some(file) = file else {
        let legacy = existing
            .get(&signing_key_secret_name(stack))
            .and_then(|d| d.get(SIGNING_KEY_KEY))
            .and_then(|pem| std::str::from_utf8(&pem.0).ok())
            .and_then(KeyRing::adopt);
        return (legacy.unwrap_or_else(|| KeyRing::fresh(now)), Vec::new());
    };
    let annotation = |name: &str| {
        found
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(name))
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let (last_rotation, published_at) =
        (annotation(LAST_ROTATION_ANNOTATION), annotation(PUBLISHED_AT_ANNOTATION));
    match KeyRing::read(&file.0, last_rotation, published_at) {
        Ok((ring, skipped)) => (ring, skipped.iter().map(ToString::to_string).collect()),
        Err(unreadable) => {
            (KeyRing { keys: Vec::new(), last_rotation, published_at: None }, vec![unreadable.to_string()])
        }
    }
}

/// Mounts the key file into the auth pods and tells auth where it is.
pub(crate) fn wire(deployment: &mut Deployment, stack: &MallStack) {
    let Some(pod) = deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else { return };
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(auth_keys_secret_name(stack)),
            // Read by the pod's user through its group (fsGroup), by no one else.
            default_mode: Some(0o440),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    if let Some(container) = pod.containers.first_mut() {
        container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
            name: VOLUME.to_owned(),
            mount_path: AUTH_KEYS_MOUNT_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        container.env.get_or_insert_with(Vec::new).push(value(AUTH_KEYS_FILE_ENV, AUTH_KEYS_FILE));
    }
}
