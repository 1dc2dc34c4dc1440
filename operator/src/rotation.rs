//! The auth service's token signing keys and their rotation: a pure state machine over the key file.
//!
//! The keys live in one file, `keys.json` of the Secret `<stack>-auth-keys`, mounted into the auth pods
//! (the kubelet updates it in place; auth reads it every 10 s):
//!
//! ```json
//! {"keys":[{"pem":"-----BEGIN PRIVATE KEY-----\n…","signs":true},{"pem":"…","signs":false,"retiresAt":1764900000}]}
//! ```
//!
//! Exactly one key signs. Auth publishes every key whose `retiresAt` (unix seconds, optional) has not
//! passed, and accepts tokens of those keys only; the gateway verifies against what auth publishes.
//!
//! A rotation (`spec.auth.rotateSigningKeyAt`, once that time has come and when it is newer than the
//! last rotation) goes in phases, so that no verifier ever meets a token signed with a key it does not
//! know yet, and no token is refused before it expires:
//!
//! 1. a fresh key is added with `signs: false`: it is only published;
//! 2. after [`PROPAGATION_DELAY`] (every verifier has it by then) it signs, and the key that signed
//!    gets `signs: false` and `retiresAt` = now + the token lifetime + [`PROPAGATION_DELAY`]: an auth pod
//!    that has not reloaded the file yet may still sign with it for up to that delay, and those tokens
//!    live one token lifetime;
//! 3. once `retiresAt` has passed, the old key leaves the file.
//!
//! What the file does not say — when the pending key was published, and which request was last acted
//! on — is kept in annotations of the same Secret, written together with the file (see
//! `builders::auth_keys`). The Secret is read from the API server on every reconcile, so a reconcile
//! that sees a stale copy of the stack's status still never rotates twice; `status.auth.lastRotation`
//! is consulted too (the later of both counts).
//!
//! Nothing here talks to the API server or the clock: [`step`] is given the time, and says when it
//! wants to be called again.

use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::crd::{AuthKeyState, AuthKeyStatus, AuthKeysStatus, MallStackSpec};

/// How long a newly published key waits before it signs, and how long a replaced key is still
/// accepted beyond the token lifetime. It covers, one after the other: the kubelet's refresh of a
/// mounted Secret (its sync period, 60 s by default, plus its cache's TTL), auth's reload of the key
/// file (every 10 s), and the gateway's refresh of auth's published keys (about as often), with a
/// little room for a slow node.
pub const PROPAGATION_DELAY_SECONDS: i64 = 90;

/// One key of the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// PKCS#8 PEM of the Ed25519 private key, as written (kept byte for byte, so the file does not churn).
    pub pem: String,
    /// Its key id (derived from the public key).
    pub kid: String,
    pub signs: bool,
    /// Unix seconds after which the key is neither published nor accepted.
    pub retires_at: Option<i64>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("signs", &self.signs)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn generate(signs: bool) -> Key {
        Key::from_signing_key(&mall_tokens::SigningKey::generate(), signs)
    }

    fn from_signing_key(key: &mall_tokens::SigningKey, signs: bool) -> Key {
        Key { pem: key.to_pkcs8_pem(), kid: key.kid().to_owned(), signs, retires_at: None }
    }

    /// A key read from PEM; `None` when it is not a PKCS#8 Ed25519 private key.
    fn parse(pem: &str, signs: bool, retires_at: Option<i64>) -> Option<Key> {
        let key = mall_tokens::SigningKey::from_pkcs8_pem(pem).ok()?;
        Some(Key { pem: pem.to_owned(), kid: key.kid().to_owned(), signs, retires_at })
    }

    /// Published and waiting to sign.
    fn pending(&self) -> bool {
        !self.signs && self.retires_at.is_none()
    }
}

/// The key file and its bookkeeping: everything the rotation needs to know about where it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    pub keys: Vec<Key>,
    /// The rotation request last acted on (or when the key file was created).
    pub last_rotation: Option<Timestamp>,
    /// When the pending key (if any) was published.
    pub published_at: Option<Timestamp>,
}

/// The file's shape, exactly the contract with auth.
#[derive(Serialize, Deserialize)]
struct FileJson {
    keys: Vec<EntryJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson {
    pem: String,
    #[serde(default)]
    signs: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retires_at: Option<i64>,
}

/// Why a key file could not be read. The messages never quote the file (it holds private keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("keys.json is not a key file (JSON {{\"keys\": [...]}}): error at line {line}, column {column}")]
    NotAKeyFile { line: usize, column: usize },
    #[error("keys.json: key {index} is not a PKCS#8 Ed25519 private key; it was left out")]
    BadKey { index: usize },
}

/// Whole seconds, truncating any fraction (times in the file and in status are whole seconds).
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn plus(t: Timestamp, seconds: i64) -> Timestamp {
    t.saturating_add(SignedDuration::from_secs(seconds)).unwrap_or(Timestamp::MAX)
}

/// RFC 3339 of a unix time (as status shows it).
fn rfc3339(seconds: i64) -> String {
    Timestamp::from_second(seconds).map(|t| t.to_string()).unwrap_or_else(|_| seconds.to_string())
}

impl KeyRing {
    /// A new key file: one fresh key that signs. Counts as a rotation at `now`.
    pub fn fresh(now: Timestamp) -> KeyRing {
        KeyRing {
            keys: vec![Key::generate(true)],
            last_rotation: Some(whole_seconds(now)),
            published_at: None,
        }
    }

    /// A key file that starts from the key auth signed with before the key file existed (the Secret
    /// `<stack>-auth-signing-key`), so that tokens it signed stay valid. `None` when that PEM is not a
    /// key. No rotation is recorded: any requested rotation replaces it.
    pub fn adopt(pem: &str) -> Option<KeyRing> {
        let key = Key::parse(pem, true, None)?;
        Some(KeyRing { keys: vec![key], last_rotation: None, published_at: None })
    }

    /// Reads `keys.json`; keys that do not parse are left out, each with the reason.
    pub fn read(
        file: &[u8],
        last_rotation: Option<Timestamp>,
        published_at: Option<Timestamp>,
    ) -> Result<(KeyRing, Vec<KeyFileError>), KeyFileError> {
        let parsed: FileJson = serde_json::from_slice(file)
            .map_err(|e| KeyFileError::NotAKeyFile { line: e.line(), column: e.column() })?;
        let mut skipped = Vec::new();
        let mut keys = Vec::new();
        for (index, entry) in parsed.keys.into_iter().enumerate() {
            match Key::parse(&entry.pem, entry.signs, entry.retires_at) {
                Some(key) => keys.push(key),
                None => skipped.push(KeyFileError::BadKey { index }),
            }
        }
        Ok((KeyRing { keys, last_rotation, published_at }, skipped))
    }

    /// `keys.json`, as auth reads it.
    pub fn file(&self) -> Vec<u8> {
        let file = FileJson {
            keys: self
                .keys
                .iter()
                .map(|k| EntryJson { pem: k.pem.clone(), signs: k.signs, retires_at: k.retires_at })
                .collect(),
        };
        serde_json::to_vec(&file).expect("a key file serializes")
    }

    /// The key that signs.
    pub fn signer(&self) -> Option<&Key> {
        self.keys.iter().find(|k| k.signs)
    }

    fn pending(&self) -> Option<&Key> {
        self.keys.iter().rev().find(|k| k.pending())
    }
}

/// What happened in one [`step`], each worth an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Phase 1: `kid` was added and is published; it signs from `signs_from`.
    Published { kid: String, signs_from: Timestamp },
    /// Phase 2: `kid` signs now; `retiring` (the keys that signed before) are accepted until `retires_at`.
    Activated { kid: String, retiring: Vec<String>, retires_at: Timestamp },
    /// Phase 3: `kid` passed its `retiresAt` and left the file.
    Retired { kid: String },
}

impl Phase {
    /// The event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Phase::Published { .. } => "SigningKeyPublished",
            Phase::Activated { .. } => "SigningKeyActivated",
            Phase::Retired { .. } => "SigningKeyRetired",
        }
    }

    /// The event's note (key ids and times only).
    pub fn note(&self) -> String {
        match self {
            Phase::Published { kid, signs_from } => {
                format!("published the new signing key {kid}; it signs from {signs_from}")
            }
            Phase::Activated { kid, retiring, .. } if retiring.is_empty() => {
                format!("signing key {kid} signs now")
            }
            Phase::Activated { kid, retiring, retires_at } => format!(
                "signing key {kid} signs now; {} no longer signs and is accepted until {retires_at}",
                retiring.join(", ")
            ),
            Phase::Retired { kid } => format!("signing key {kid} retired: it is no longer accepted"),
        }
    }
}

/// The result of one [`step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What the key file (and its bookkeeping) must be now.
    pub ring: KeyRing,
    /// `status.auth`.
    pub status: AuthKeysStatus,
    /// When the next phase is due, if one is: call [`step`] again by then.
    pub requeue_after: Option<Duration>,
    pub phases: Vec<Phase>,
}

/// A token lifetime as the stack writes it (`90s`, `30m`, `24h`, `7d`, or plain seconds), in seconds.
pub fn token_ttl_seconds(ttl: &str) -> Option<i64> {
    let (digits, unit) = match ttl.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&ttl[..i], c),
        _ => (ttl, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The time `spec.auth.rotateSigningKeyAt` asks for: `Ok(None)` when unset, `Err` (the status's
/// problem) when it is not an RFC 3339 timestamp.
pub fn requested_rotation(spec: &MallStackSpec) -> Result<Option<Timestamp>, String> {
    let Some(text) = spec.auth.rotate_signing_key_at.as_deref() else { return Ok(None) };
    text.trim().parse::<Timestamp>().map(Some).map_err(|_| {
        format!(
            "spec.auth.rotateSigningKeyAt: {text:?} is not an RFC 3339 timestamp (like 2025-12-05T10:00:00Z); no rotation is done"
        )
    })
}

/// From whole seconds until `then`, at least one (a requeue of zero would spin).
fn until(now: Timestamp, then: Timestamp) -> Duration {
    let seconds = then.duration_since(now).as_secs_f64().ceil().max(1.0);
    Duration::from_secs(seconds as u64)
}

/// One step of the key file at `now`: retire what has passed, carry a rotation one phase on when it is
/// due, and say when to come back. `previous` is the stack's `status.auth` as last written.
pub fn step(
    current: &KeyRing,
    spec: &MallStackSpec,
    previous: Option<&AuthKeysStatus>,
    now: Timestamp,
) -> Outcome {
    let mut ring = current.clone();
    let mut phases = Vec::new();
    let mut problems = Vec::new();
    let mut wake = Vec::new();
    let second = now.as_second();

    // Phase 3: keys past their retirement leave the file.
    ring.keys.retain(|k| match k.retires_at {
        Some(at) if !k.signs && at <= second => {
            phases.push(Phase::Retired { kid: k.kid.clone() });
            false
        }
        _ => true,
    });

    let recorded =
        previous.and_then(|p| p.last_rotation.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    ring.last_rotation = ring.last_rotation.max(recorded);

    let ttl = token_ttl_seconds(&spec.token_ttl);
    match ttl {
        None => problems.push(format!(
            "spec.tokenTtl: {:?} is not a duration; signing keys are neither repaired nor rotated",
            spec.token_ttl
        )),
        Some(ttl) => repair(&mut ring, now, ttl, &mut problems),
    }

    let request = requested_rotation(spec).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let acted_on = |ring: &KeyRing, at: Timestamp| ring.last_rotation.is_some_and(|last| at <= last);

    if let (Some(pending), Some(ttl)) = (ring.pending().cloned(), ttl) {
        // Phase 1 done: phase 2 once the key has had time to reach every verifier. A key whose
        // publication time is not known (its bookkeeping lost) is taken as published now: later is safe.
        let published = ring
            .published_at
            .or_else(|| signs_from_in(previous, &pending.kid).map(|t| plus(t, -PROPAGATION_DELAY_SECONDS)))
            .unwrap_or_else(|| whole_seconds(now));
        ring.published_at = Some(published);
        let due = plus(published, PROPAGATION_DELAY_SECONDS);
        if now >= due {
            let retires_at = second.saturating_add(ttl).saturating_add(PROPAGATION_DELAY_SECONDS);
            let mut retiring = Vec::new();
            for key in &mut ring.keys {
                if key.kid == pending.kid && key.pending() {
                    key.signs = true;
                } else if key.retires_at.is_none() {
                    key.signs = false;
                    key.retires_at = Some(retires_at);
                    retiring.push(key.kid.clone());
                }
            }
            ring.published_at = None;
            phases.push(Phase::Activated {
                kid: pending.kid.clone(),
                retiring,
                retires_at: Timestamp::from_second(retires_at).unwrap_or(Timestamp::MAX),
            });
            // Another rotation asked for meanwhile starts on the next call.
            if request.is_some_and(|at| at <= now && !acted_on(&ring, at)) {
                wake.push(Duration::from_secs(1));
            }
        } else {
            wake.push(until(now, due));
        }
    } else if ring.pending().is_none() {
        ring.published_at = None;
        if let (Some(at), Some(_)) = (request, ttl)
            && at <= now
            && !acted_on(&ring, at)
        {
            // Phase 1.
            let key = Key::generate(false);
            let published = whole_seconds(now);
            phases.push(Phase::Published {
                kid: key.kid.clone(),
                signs_from: plus(published, PROPAGATION_DELAY_SECONDS),
            });
            ring.keys.push(key);
            ring.last_rotation = Some(at);
            ring.published_at = Some(published);
            wake.push(Duration::from_secs(PROPAGATION_DELAY_SECONDS as u64));
        }
    }

    // A rotation asked for later: wake up then.
    if let Some(at) = request.filter(|at| *at > now) {
        wake.push(until(now, at));
    }
    // Phase 3 for every retiring key, when its time comes.
    for at in ring.keys.iter().filter(|k| !k.signs).filter_map(|k| k.retires_at) {
        wake.push(until(now, Timestamp::from_second(at).unwrap_or(Timestamp::MAX)));
    }

    let status = status_of(&ring, problems);
    Outcome { ring, status, requeue_after: wake.into_iter().min(), phases }
}

/// The `signsFrom` that `previous` shows for `kid`.
fn signs_from_in(previous: Option<&AuthKeysStatus>, kid: &str) -> Option<Timestamp> {
    previous?
        .keys
        .iter()
        .find(|k| k.kid == kid && k.state == AuthKeyState::Published)?
        .signs_from
        .as_deref()?
        .parse()
        .ok()
}

/// Makes the file hold exactly one signing key (what auth needs to start): a file with no key gets a
/// fresh one; without a signer, the newest key not retiring signs; of several signers the first keeps
/// signing and the others retire as a replaced key does. Each repair is a problem to report.
fn repair(ring: &mut KeyRing, now: Timestamp, ttl: i64, problems: &mut Vec<String>) {
    if ring.keys.is_empty() {
        let last_rotation = ring.last_rotation.max(Some(whole_seconds(now)));
        *ring = KeyRing { last_rotation, ..KeyRing::fresh(now) };
        problems.push(
            "the key file held no usable key: a new signing key was made (tokens signed before are refused)"
                .to_owned(),
        );
        return;
    }
    let signers: Vec<usize> = ring.keys.iter().enumerate().filter(|(_, k)| k.signs).map(|(i, _)| i).collect();
    match signers.as_slice() {
        [] => {
            let chosen =
                ring.keys.iter().rposition(|k| k.retires_at.is_none()).unwrap_or(ring.keys.len() - 1);
            let key = &mut ring.keys[chosen];
            key.signs = true;
            key.retires_at = None;
            if ring.pending().is_none() {
                ring.published_at = None;
            }
            problems.push(format!("no key of the key file signed: {} signs now", ring.keys[chosen].kid));
        }
        [first, rest @ ..] => {
            ring.keys[*first].retires_at = None;
            let signer = ring.keys[*first].kid.clone();
            let retires_at = now.as_second().saturating_add(ttl).saturating_add(PROPAGATION_DELAY_SECONDS);
            for &i in rest {
                let key = &mut ring.keys[i];
                key.signs = false;
                key.retires_at = Some(retires_at);
                problems.push(format!(
                    "{} signed as well as {signer}: it no longer signs and retires at {}",
                    key.kid,
                    rfc3339(retires_at)
                ));
            }
        }
    }
}

fn status_of(ring: &KeyRing, problems: Vec<String>) -> AuthKeysStatus {
    let keys = ring
        .keys
        .iter()
        .map(|k| {
            let state = match (k.signs, k.retires_at) {
                (true, _) => AuthKeyState::Signing,
                (false, None) => AuthKeyState::Published,
                (false, Some(_)) => AuthKeyState::Retiring,
            };
            AuthKeyStatus {
                kid: k.kid.clone(),
                state,
                signs_from: (state == AuthKeyState::Published)
                    .then(|| ring.published_at.map(|t| plus(t, PROPAGATION_DELAY_SECONDS).to_string()))
                    .flatten(),
                retires_at: (state == AuthKeyState::Retiring).then(|| k.retires_at.map(rfc3339)).flatten(),
            }
        })
        .collect();
    AuthKeysStatus {
        active_kid: ring.signer().map(|k| k.kid.clone()),
        keys,
        last_rotation: ring.last_rotation.map(|t| t.to_string()),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests;
