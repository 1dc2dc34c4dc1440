//! The key set: which key signs, and which keys verify (each until its retirement).
//!
//! It comes from one source, chosen at start:
//! - a keys file the operator maintains (`MALL_AUTH_KEYS_FILE`, a Secret volume updated in place):
//!   `{"keys":[{"pem":"…","signs":true},{"pem":"…","signs":false,"retiresAt":1764900000}]}`.
//!   Exactly one key signs; every key verifies until its optional `retiresAt` (unix seconds), and a
//!   key past it is neither published nor accepted. Re-read every [`KeyReload::file_every`];
//! - one configured PEM (`MALL_AUTH_SIGNING_KEY`): it signs and verifies, and never changes;
//! - the database (neither is configured: `mall up`): a key is generated once and kept there, so that
//!   tokens survive restarts and every replica signs with the same key. The newest key signs; an older
//!   key retires once the token lifetime has passed since the next newer key was created (no token it
//!   signed can still be alive by then). Re-read every [`KeyReload::database_every`].
//!
//! A configured key is never written to the database (one an older version wrote there is removed at
//! start). Besides the timer, a token with a key id the set does not know makes the set reload (at most once
//! per [`KeyReload::unknown_kid_gap`]), so a key the operator has just added verifies at once. A
//! reload that fails (a file that does not parse, or has no single signer; an unreachable database)
//! keeps the last good set and logs an error: the set is never empty.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use mall_storage::Db;
use mall_tokens::{PublicKey, SigningKey, Verifier};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::AuthError;

/// When the key set is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReload {
    /// How often the keys file is re-read.
    pub file_every: Duration,
    /// How often the database's keys are re-read (another replica may have added one).
    pub database_every: Duration,
    /// The shortest time between two reloads caused by tokens with unknown key ids, so that made-up
    /// key ids cannot make auth read its source on every call.
    pub unknown_kid_gap: Duration,
}

impl Default for KeyReload {
    fn default() -> Self {
        KeyReload {
            file_every: Duration::from_secs(10),
            database_every: Duration::from_secs(30),
            unknown_kid_gap: Duration::from_secs(1),
        }
    }
}

/// Why a keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the keys file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the keys file is not valid JSON of the form {{\"keys\":[{{\"pem\":…,\"signs\":…}}]}}: {0}")]
    Json(String),
    #[error("the keys file must mark exactly one key \"signs\": true, not {0}")]
    Signers(usize),
    #[error("key {index} of the keys file is not an Ed25519 PKCS#8 PEM key: {reason}")]
    BadKey { index: usize, reason: String },
    #[error("key {0} appears twice in the keys file")]
    Duplicate(String),
    #[error("the signing key {0} has a retiresAt: the key that signs cannot retire")]
    SignerRetires(String),
}

#[derive(Deserialize)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
struct FileKey {
    pem: String,
    #[serde(default)]
    signs: bool,
    #[serde(default, rename = "retiresAt")]
    retires_at: Option<i64>,
}

/// The key that signs and every key that verifies (the signing one included), each with its
/// retirement time if it has one. Keys already retired when the set was read are left out.
#[derive(Clone)]
pub struct KeySet {
    pub signing: SigningKey,
    pub keys: Vec<PublicKey>,
    pub verifier: Verifier,
}

impl KeySet {
    fn new(signing: SigningKey, keys: Vec<PublicKey>) -> KeySet {
        let verifier = Verifier::new(keys.iter().cloned());
        KeySet { signing, keys, verifier }
    }

    /// The keys that verify at `now`: what auth publishes.
    pub fn published(&self, now: i64) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().filter(move |k| !k.is_retired(now))
    }

    fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    fn same_as(&self, other: &KeySet) -> bool {
        self.signing.kid() == other.signing.kid() && self.keys == other.keys
    }
}

/// Reads a keys file's text into a key set, leaving out the keys retired at `now`.
pub fn parse_file(text: &str, now: i64) -> Result<KeySet, KeyFileError> {
    let file: FileKeys = serde_json::from_str(text).map_err(|e| KeyFileError::Json(e.to_string()))?;
    let signers = file.keys.iter().filter(|k| k.signs).count();
    if signers != 1 {
        return Err(KeyFileError::Signers(signers));
    }
    let mut signing = None;
    let mut keys: Vec<PublicKey> = Vec::with_capacity(file.keys.len());
    for (index, entry) in file.keys.iter().enumerate() {
        let key = SigningKey::from_pkcs8_pem(&entry.pem)
            .map_err(|e| KeyFileError::BadKey { index, reason: e.to_string() })?;
        if keys.iter().any(|k| k.kid == key.kid()) {
            return Err(KeyFileError::Duplicate(key.kid().to_owned()));
        }
        if entry.signs {
            if entry.retires_at.is_some() {
                return Err(KeyFileError::SignerRetires(key.kid().to_owned()));
            }
            signing = Some(key.clone());
        }
        let public = key.public_key().retiring_at(entry.retires_at);
        if public.is_retired(now) {
            continue;
        }
        keys.push(public);
    }
    let signing = signing.ok_or(KeyFileError::Signers(0))?;
    Ok(KeySet::new(signing, keys))
}

fn read_file(path: &Path, now: i64) -> Result<KeySet, KeyFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyFileError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    parse_file(&text, now)
}

/// Where the set comes from.
enum Source {
    File(PathBuf),
    /// One configured key: the set never changes.
    Fixed,
    Database,
}

/// The live key set of one auth process, reloaded from its source.
pub struct Keys {
    source: Source,
    db: Db,
    ttl_secs: i64,
    reload: KeyReload,
    current: RwLock<Arc<KeySet>>,
    /// Serialises reloads, so that an older read never replaces a newer one.
    reloading: Mutex<()>,
    /// When a token with an unknown key id last made the set reload.
    unknown_reload: Mutex<Option<Instant>>,
}

impl Keys {
    /// Loads the set from the configured source; an unusable source is an error (nothing to serve).
    /// The keys file wins over a configured key.
    pub async fn open(
        keys_file: Option<&Path>,
        signing_key_pem: Option<&str>,
        db: Db,
        ttl_secs: i64,
        reload: KeyReload,
    ) -> Result<Arc<Keys>, AuthError> {
        let (source, set) = match (keys_file, signing_key_pem) {
            (Some(path), pem) => {
                if pem.is_some() {
                    tracing::warn!(
                        path = %path.display(),
                        "both a keys file and a signing key are configured: the keys file is used"
                    );
                }
                let set = read_file(path, mall_storage::now_unix())
                    .map_err(|e| AuthError::Config(e.to_string()))?;
                (Source::File(path.to_owned()), set)
            }
            (None, Some(pem)) => {
                let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| AuthError::Config(e.to_string()))?;
                let public = vec![key.public_key()];
                (Source::Fixed, KeySet::new(key, public))
            }
            (None, None) => (Source::Database, load_database(&db, ttl_secs, mall_storage::now_unix()).await?),
        };
        if !matches!(source, Source::Database) {
            forget_configured(&db, &set).await?;
        }
        tracing::info!(signing = set.signing.kid(), verifying = ?set.kids(), "signing keys loaded");
        let keys = Arc::new(Keys {
            source,
            db,
            ttl_secs,
            reload,
            current: RwLock::new(Arc::new(set)),
            reloading: Mutex::new(()),
            unknown_reload: Mutex::new(None),
        });
        keys.spawn_reloads();
        Ok(keys)
    }

    /// The set as last loaded.
    pub fn current(&self) -> Arc<KeySet> {
        // A writer never panics while holding the lock (it only swaps an Arc), so a poisoned lock
        // still holds a whole set.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the source again. On failure the last good set stays and the error is logged.
    pub async fn reload(&self) -> Arc<KeySet> {
        let _one_at_a_time = self.reloading.lock().await;
        let now = mall_storage::now_unix();
        let loaded = match &self.source {
            Source::Fixed => return self.current(),
            Source::File(path) => read_file(path, now).map_err(|e| e.to_string()),
            Source::Database => load_database(&self.db, self.ttl_secs, now).await.map_err(|e| e.to_string()),
        };
        let set = match loaded {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(%error, "cannot reload the signing keys; keeping the last good set");
                return self.current();
            }
        };
        let previous = self.current();
        if previous.same_as(&set) {
            return previous;
        }
        tracing::info!(signing = set.signing.kid(), verifying = ?set.kids(), "signing keys reloaded");
        let set = Arc::new(set);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = set.clone();
        set
    }

    /// The set, reloaded first if it does not know `kid` and the last such reload is at least
    /// [`KeyReload::unknown_kid_gap`] ago. Concurrent callers share one reload.
    pub async fn knowing(&self, kid: &str) -> Arc<KeySet> {
        let current = self.current();
        if current.verifier.knows(kid) || matches!(self.source, Source::Fixed) {
            return current;
        }
        let mut last = self.unknown_reload.lock().await;
        let current = self.current();
        if current.verifier.knows(kid) || last.is_some_and(|t| t.elapsed() < self.reload.unknown_kid_gap) {
            return current;
        }
        *last = Some(Instant::now());
        tracing::info!(kid, "a token names a key this set does not have: reloading");
        self.reload().await
    }

    /// Reloads on a timer while the service holds the set.
    fn spawn_reloads(self: &Arc<Self>) {
        let every = match self.source {
            Source::File(_) => self.reload.file_every,
            Source::Database => self.reload.database_every,
            Source::Fixed => return,
        };
        let keys: Weak<Keys> = Arc::downgrade(self);
        let first = Instant::now() + every;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(first, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(keys) = keys.upgrade() else { break };
                keys.reload().await;
            }
        });
    }
}

/// Every stored key: the newest signs; an older one retires `ttl_secs` after the next newer one was
/// created. A database without keys gets one (replicas racing here both re-read the same newest).
async fn load_database(db: &Db, ttl_secs: i64, now: i64) -> Result<KeySet, AuthError> {
    let mut rows = stored(db).await?;
    if rows.is_empty() {
        insert_if_missing(db, &SigningKey::generate()).await?;
        rows = stored(db).await?;
    }
    let mut keys = Vec::new();
    let mut signing = None;
    // Newest first; `newer` is the creation time of the key before this one in that order.
    let mut newer: Option<i64> = None;
    for (kid, pem, created_at) in rows {
        let key = match SigningKey::from_pkcs8_pem(&pem) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(kid, error = %e, "skipping an unreadable stored signing key");
                continue;
            }
        };
        let retires_at = newer.map(|created| created.saturating_add(ttl_secs));
        newer = Some(created_at);
        let public = key.public_key().retiring_at(retires_at);
        if public.is_retired(now) {
            continue;
        }
        keys.push(public);
        signing.get_or_insert(key);
    }
    let signing =
        signing.ok_or_else(|| AuthError::Config("no readable signing key in the database".into()))?;
    Ok(KeySet::new(signing, keys))
}

async fn stored(db: &Db) -> Result<Vec<(String, String, i64)>, AuthError> {
    Ok(sqlx::query_as(
        "SELECT kid, private_key_pem, created_at FROM signing_keys ORDER BY created_at DESC, kid",
    )
    .fetch_all(db.pool())
    .await?)
}

async fn insert_if_missing(db: &Db, key: &SigningKey) -> Result<(), AuthError> {
    let result = sqlx::query("INSERT INTO signing_keys (kid, private_key_pem, created_at) VALUES (?, ?, ?)")
        .bind(key.kid())
        .bind(key.to_pkcs8_pem())
        .bind(mall_storage::now_unix())
        .execute(db.pool())
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if mall_storage::is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Configured private keys live in their Secret only: removes any that an older version of auth
/// copied into the database.
async fn forget_configured(db: &Db, set: &KeySet) -> Result<(), AuthError> {
    for key in &set.keys {
        let removed =
            sqlx::query("DELETE FROM signing_keys WHERE kid = ?").bind(&key.kid).execute(db.pool()).await?;
        if removed.rows_affected() > 0 {
            tracing::info!(kid = %key.kid, "removed a configured key from the database");
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
