//! `mall backup-push` and `mall backup-pull`: backups kept in an S3-compatible bucket.
//!
//! A backup is what the operator's backup script writes (`operator/src/builders/backup.sh`, read by
//! [`crate::restore`]): a directory `<name>/`, its name a UTC time (`20261206T053000Z`), holding one
//! `<database>.sql.gz` per database and a `manifest.json`. In the bucket it is kept under the same
//! names: `<prefix><name>/<file>`. As on disk, a backup is complete once its manifest is there, and
//! only then: a push uploads every other file first and the manifest last, so a push that stops
//! midway leaves an incomplete backup that no pull takes and that a later push's pruning removes once
//! it is a day old.
//!
//! - [`Bucket::push`] uploads `<dir>/<name>/` (refused before anything is uploaded unless it is a
//!   complete backup: a manifest of format 1 whose every dump is there, of the size it records), then
//!   prunes the bucket as the backup script prunes its volume (see [`prune_plan`]).
//! - [`Bucket::pull`] downloads a complete backup's manifest and every dump it lists into
//!   `<dir>/<name>.partial/`, a file at a time streamed to disk, and renames that to `<dir>/<name>/`
//!   once all is there; `mall restore-check` then checks it as any other backup (sizes, sha256,
//!   migrations: a pull does not check them twice).
//!
//! The bucket is named by the `MALL_S3_*` variables ([`BucketSettings`]); requests are path-style
//! (`<endpoint>/<bucket>/<key>`), which S3-compatible servers (MinIO, Ceph, moto) need.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::restore::{MANIFEST, Manifest, PARTIAL_SUFFIX, Refusal, parse_manifest};

/// The bucket's S3 endpoint (`http://minio.storage:9000`; plain http is allowed).
pub const ENDPOINT_VAR: &str = "MALL_S3_ENDPOINT";
/// The bucket's name.
pub const BUCKET_VAR: &str = "MALL_S3_BUCKET";
pub const ACCESS_KEY_ID_VAR: &str = "MALL_S3_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY_VAR: &str = "MALL_S3_SECRET_ACCESS_KEY";
/// Optional: the region requests are signed for ([`DEFAULT_REGION`] unset).
pub const REGION_VAR: &str = "MALL_S3_REGION";
/// Optional: where in the bucket the backups are (`mall/prod/`; a missing final `/` is added).
pub const PREFIX_VAR: &str = "MALL_S3_PREFIX";
pub const DEFAULT_REGION: &str = "us-east-1";
/// Complete backups kept by default, newest first (as the backup script's `BACKUP_RETENTION_COUNT`).
pub const DEFAULT_KEEP: u32 = 7;
/// How long a backup may stay incomplete in the bucket before a push's pruning removes it.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// How many complete backups a refusal for a missing one names (as `restore-check`'s).
const LISTED_BACKUPS: usize = 10;
/// A file up to this size is uploaded in one request; a larger one in parts of at least this size
/// (S3's smallest part but the last).
pub const PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3 takes at most 10,000 parts for one object: the part size grows for files larger than that.
const MAX_PARTS: u64 = 10_000;
/// Parts of one file in flight at once (each held in memory until sent).
const PARTS_IN_FLIGHT: usize = 4;
/// The read buffer of an upload.
const READ_BUFFER: usize = 1024 * 1024;
/// A connection that has not delivered a byte for this long is given up (and the request retried).
/// There is no limit on a whole request: a dump of many GiB downloads in one.
const READ_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Where the backups are kept: an S3-compatible bucket, from the `MALL_S3_*` variables. Its `Debug`
/// shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketSettings {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    secret_access_key: String,
    pub region: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl fmt::Debug for BucketSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketSettings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A bucket setting that is missing or unusable: the message names the variable (never its value when
/// it is the secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "{} not set: backups are kept in an S3-compatible bucket, named by {ENDPOINT_VAR}, {BUCKET_VAR}, \
         {ACCESS_KEY_ID_VAR} and {SECRET_ACCESS_KEY_VAR} (and optionally {REGION_VAR}, {PREFIX_VAR})",
        missing(.vars)
    )]
    Missing { vars: Vec<&'static str> },
    #[error("{var} {reason}")]
    Invalid { var: &'static str, reason: String },
}

fn missing(vars: &[&str]) -> String {
    match vars {
        [one] => format!("{one} is"),
        more => format!("{} are", more.join(", ")),
    }
}

impl BucketSettings {
    /// The settings from the process's environment.
    pub fn from_env() -> Result<BucketSettings, SettingsError> {
        BucketSettings::from_lookup(|var| std::env::var(var).ok())
    }

    /// The settings from `lookup` (a variable's value, if set); blank counts as unset, surrounding
    /// whitespace (a Secret's trailing newline) is dropped.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<BucketSettings, SettingsError> {
        let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = [ENDPOINT_VAR, BUCKET_VAR, ACCESS_KEY_ID_VAR, SECRET_ACCESS_KEY_VAR];
        let vars: Vec<&'static str> = required.into_iter().filter(|var| get(var).is_none()).collect();
        if !vars.is_empty() {
            return Err(SettingsError::Missing { vars });
        }
        let value = |var: &str| get(var).unwrap_or_default();
        let endpoint = value(ENDPOINT_VAR);
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(SettingsError::Invalid {
                var: ENDPOINT_VAR,
                reason: format!(
                    "must be an http:// or https:// URL (like http://minio.storage:9000), not {endpoint:?}"
                ),
            });
        }
        let bucket = value(BUCKET_VAR);
        if bucket.contains('/') {
            return Err(SettingsError::Invalid {
                var: BUCKET_VAR,
                reason: format!(
                    "must be a bucket's name, without '/' (a prefix goes in {PREFIX_VAR}): {bucket:?}"
                ),
            });
        }
        let prefix = normalize_prefix(&get(PREFIX_VAR).unwrap_or_default())
            .map_err(|reason| SettingsError::Invalid { var: PREFIX_VAR, reason })?;
        Ok(BucketSettings {
            endpoint,
            bucket,
            access_key_id: value(ACCESS_KEY_ID_VAR),
            secret_access_key: value(SECRET_ACCESS_KEY_VAR),
            region: get(REGION_VAR).unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            prefix,
        })
    }
}

/// `prefix` with a final `/` (empty stays empty), or why it cannot be one.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| format!("{why}: {prefix:?}");
    if prefix.starts_with('/') {
        return Err(bad("must not start with '/'"));
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(bad("must be '/'-separated names, none empty, '.' or '..'"));
    }
    let key = Key::parse(trimmed).map_err(|e| bad(&format!("is not a usable key prefix ({e})")))?;
    if key.as_ref() != trimmed {
        return Err(bad("is not a usable key prefix"));
    }
    Ok(format!("{trimmed}/"))
}

/// Why a push or a pull is refused: the backup is not there, or not fit; nothing was changed in the
/// bucket (a push) or written as the backup (a pull), and trying again without a change gives the same
/// answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BucketRefusal {
    /// No complete backup of that name in the bucket (none at all, or one without its manifest).
    #[error("no backup {name} in {} ({})", place(.bucket, .prefix), backups_there(.there))]
    NoBackup {
        name: String,
        bucket: String,
        prefix: String,
        /// The complete backups that are there, newest first (at most 10).
        there: Vec<String>,
    },
    /// A push of something that is not a complete backup on disk.
    #[error("{} is not a complete backup: {reason}", .dir.display())]
    NotComplete { dir: PathBuf, reason: String },
    /// The backup's manifest or a dump is not fit, as `restore-check` would say.
    #[error(transparent)]
    Backup(#[from] Refusal),
}

fn place(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() { format!("bucket {bucket}") } else { format!("bucket {bucket} under {prefix}") }
}

fn backups_there(backups: &[String]) -> String {
    if backups.is_empty() { "there are none".to_owned() } else { format!("there: {}", backups.join(", ")) }
}

/// What stopped a push or a pull.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error(transparent)]
    Refused(#[from] BucketRefusal),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The bucket did not answer, or refused the request (credentials, permissions, no such bucket).
    #[error("cannot {action} in {place}")]
    Bucket {
        action: String,
        /// `bucket <name>`, `under <prefix>` when there is one.
        place: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A pull into a directory that already has the backup.
    #[error("{} exists already: a backup is pulled only where it is not yet", .path.display())]
    Exists { path: PathBuf },
}

impl From<Refusal> for ObjectsError {
    fn from(refusal: Refusal) -> Self {
        ObjectsError::Refused(refusal.into())
    }
}

/// Which complete backups a push keeps: the newest `keep` (at least 1), and of those none older than
/// `max_age_days` (their names are their UTC times). The one just pushed is always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep: u32,
    pub max_age_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep: DEFAULT_KEEP, max_age_days: None }
    }
}

/// One backup's objects in the bucket (a name of the backup pattern directly under the prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBackup {
    pub name: String,
    /// Whether its manifest is there.
    pub complete: bool,
    /// When its newest object was written.
    pub last_modified: SystemTime,
    /// Every object of it.
    pub objects: Vec<Key>,
}

/// What a push's pruning removes (names, newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Complete backups past the count or the age kept.
    pub complete: Vec<String>,
    /// Incomplete backups (no manifest) whose newest object is older than [`INCOMPLETE_GRACE`].
    pub incomplete: Vec<String>,
}

/// What the backup script does with its volume, for the bucket: newest first, the complete backups
/// past `retention.keep` or older than `retention.max_age_days` go, never `just_pushed`, which is one
/// of the `keep` wherever its name sorts (the script counts it where it sorts: the same when it is the
/// newest, as it is but for a backup pushed again later); incomplete backups go once their newest
/// object is a day old.
pub fn prune_plan(
    backups: &[StoredBackup],
    just_pushed: &str,
    retention: &Retention,
    now: SystemTime,
) -> PrunePlan {
    let cutoff = retention
        .max_age_days
        .map(|days| Duration::from_secs(u64::from(days) * 24 * 60 * 60))
        .map(|age| backup_name_at(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)));
    let mut sorted: Vec<&StoredBackup> = backups.iter().collect();
    sorted.sort_unstable_by(|a, b| b.name.cmp(&a.name));
    let mut plan = PrunePlan::default();
    // The backup just pushed is one of those kept, whatever its place.
    let mut kept = u32::from(backups.iter().any(|b| b.name == just_pushed && b.complete));
    for backup in sorted {
        if backup.name == just_pushed {
            continue;
        }
        if backup.complete {
            let too_old = cutoff.as_deref().is_some_and(|cutoff| backup.name.as_str() < cutoff);
            if kept >= retention.keep || too_old {
                plan.complete.push(backup.name.clone());
            } else {
                kept += 1;
            }
        } else if backup.last_modified + INCOMPLETE_GRACE <= now {
            plan.incomplete.push(backup.name.clone());
        }
    }
    plan
}

/// The backup name of `time`: `YYYYMMDDTHHMMSSZ`, in UTC.
pub fn backup_name_at(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Whether `name` is a backup's name: `^[0-9]{8}T[0-9]{6}Z$`.
pub fn is_backup_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

/// The part size of a multipart upload of `size` bytes: [`PART_SIZE`], or more when that would take
/// more than 10,000 parts (rounded up to a MiB).
pub fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

/// The totals of a backup's manifest: (bytes of its dumps, databases).
fn totals(manifest: &Manifest) -> (u64, usize) {
    (manifest.databases.iter().map(|d| d.bytes).sum(), manifest.databases.len())
}

/// A pushed backup, and what the pruning after it removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub backup: String,
    /// The size of its dumps, from its manifest.
    pub bytes: u64,
    pub databases: usize,
    /// The complete backups pruned, newest first.
    pub pruned: Vec<String>,
    /// The incomplete backups (a day old) removed.
    pub removed_incomplete: Vec<String>,
}

impl Pushed {
    /// `{"backup":"<name>","bytes":N,"databases":M,"pruned":K}`: the backup script's line, and how
    /// many complete backups were pruned.
    pub fn summary_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            backup: &'a str,
            bytes: u64,
            databases: usize,
            pruned: usize,
        }
        let line = Line {
            backup: &self.backup,
            bytes: self.bytes,
            databases: self.databases,
            pruned: self.pruned.len(),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// A pulled backup: `{"pulled":"<name>","bytes":N,"databases":M}` (bytes and databases from its
/// manifest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pulled {
    pub pulled: String,
    pub bytes: u64,
    pub databases: usize,
    /// Where it is now: `<dir>/<name>`.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Pulled {
    pub fn summary_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A backup on disk that may be pushed.
struct LocalBackup {
    name: String,
    dir: PathBuf,
    manifest: Manifest,
    /// Every regular file but the manifest, by name, with its size.
    files: Vec<(String, u64)>,
    manifest_size: u64,
}

/// `<root>/<name>/` if it is a complete backup: a backup's name, a directory with a manifest of format
/// 1, every dump it lists there and of the size it records.
/// The name of the one complete backup in `root` (a backup pod's scratch volume holds only the dump
/// it just made); a refusal when there is none, or more than one.
pub fn only_backup(root: &Path) -> Result<String, ObjectsError> {
    let not_complete = |reason: String| BucketRefusal::NotComplete { dir: root.to_path_buf(), reason };
    match crate::restore::complete_backups(root).as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(not_complete("it holds no complete backup".to_owned()).into()),
        many => Err(not_complete(format!("it holds several backups ({}): name one", many.join(", "))).into()),
    }
}

fn local_backup(root: &Path, name: &str) -> Result<LocalBackup, ObjectsError> {
    let dir = root.join(name);
    let not_complete =
        |reason: &str| BucketRefusal::NotComplete { dir: dir.clone(), reason: reason.to_owned() };
    if name.ends_with(PARTIAL_SUFFIX) {
        return Err(not_complete("it is still being written (.partial)").into());
    }
    if !is_backup_name(name) {
        return Err(not_complete("its name is not a backup's (a UTC time, like 20261206T053000Z)").into());
    }
    let manifest_path = dir.join(MANIFEST);
    let text = match fs::read(&manifest_path) {
        Ok(text) => text,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            let reason = if dir.is_dir() { "it has no manifest.json" } else { "there is no such directory" };
            return Err(not_complete(reason).into());
        }
        Err(source) => return Err(ObjectsError::Read { path: manifest_path, source }),
    };
    let manifest = parse_manifest(name, &text)?;
    for dump in &manifest.databases {
        let path = dir.join(&dump.file);
        let missing = || Refusal::MissingFile {
            backup: name.to_owned(),
            database: dump.name.clone(),
            file: dump.file.clone(),
        };
        let metadata = match fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => return Err(missing().into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing().into()),
            Err(source) => return Err(ObjectsError::Read { path, source }),
        };
        dump.check_size(name, metadata.len()).map_err(BucketRefusal::from)?;
    }
    let read_error = |source| ObjectsError::Read { path: dir.clone(), source };
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let Ok(file) = entry.file_name().into_string() else {
            tracing::warn!(path = %entry.path().display(), "not uploaded: the name is not UTF-8");
            continue;
        };
        let metadata = fs::metadata(entry.path()).map_err(read_error)?;
        if !metadata.is_file() {
            tracing::warn!(path = %entry.path().display(), "not uploaded: not a file");
        } else if file != MANIFEST {
            files.push((file, metadata.len()));
        }
    }
    files.sort_unstable();
    let manifest_size = u64::try_from(text.len()).unwrap_or(u64::MAX);
    Ok(LocalBackup { name: name.to_owned(), dir, manifest, files, manifest_size })
}

/// The bucket the backups are kept in.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Empty, or ending with `/`.
    prefix: String,
}

impl Bucket {
    /// A client of the bucket `settings` name (nothing is requested yet).
    pub fn open(settings: &BucketSettings) -> Result<Bucket, ObjectsError> {
        let options = ClientOptions::new()
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_timeout_disabled()
            .with_read_timeout(READ_TIMEOUT);
        let store = AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .build()
            .map_err(|source| ObjectsError::Bucket {
                action: "set up the S3 client".to_owned(),
                place: place(&settings.bucket, &settings.prefix),
                source: Box::new(source),
            })?;
        Bucket::with_store(Arc::new(store), &settings.bucket, &settings.prefix)
    }

    /// The bucket `bucket` as `store` reaches it, the backups under `prefix` (a final `/` is added).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        bucket: &str,
        prefix: &str,
    ) -> Result<Bucket, ObjectsError> {
        let prefix =
            normalize_prefix(prefix).map_err(|reason| SettingsError::Invalid { var: PREFIX_VAR, reason })?;
        Ok(Bucket { store, bucket: bucket.to_owned(), prefix })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    /// `<prefix><name>/<file>`.
    pub fn key(&self, name: &str, file: &str) -> Key {
        Key::from(format!("{}{name}/{file}", self.prefix))
    }

    fn failed(&self, action: impl Into<String>) -> impl FnOnce(object_store::Error) -> ObjectsError + '_ {
        let action = action.into();
        move |source| ObjectsError::Bucket {
            action,
            place: place(&self.bucket, &self.prefix),
            source: Box::new(source),
        }
    }

    /// Every backup in the bucket (a name of the pattern directly under the prefix), complete or not,
    /// newest first. Other objects are not backups and are left alone.
    pub async fn backups(&self) -> Result<Vec<StoredBackup>, ObjectsError> {
        let prefix = Key::from(self.prefix.trim_end_matches('/'));
        let listing =
            if self.prefix.is_empty() { self.store.list(None) } else { self.store.list(Some(&prefix)) };
        let objects: Vec<object_store::ObjectMeta> =
            listing.try_collect().await.map_err(self.failed("list the backups"))?;
        let mut backups: BTreeMap<String, StoredBackup> = BTreeMap::new();
        for meta in objects {
            let Some(mut parts) = meta.location.prefix_match(&prefix) else { continue };
            let Some(name) = parts.next().map(|part| part.as_ref().to_owned()) else { continue };
            if !is_backup_name(&name) {
                continue;
            }
            let rest: Vec<String> = parts.map(|part| part.as_ref().to_owned()).collect();
            let modified = SystemTime::from(meta.last_modified);
            let backup = backups.entry(name.clone()).or_insert_with(|| StoredBackup {
                name,
                complete: false,
                last_modified: SystemTime::UNIX_EPOCH,
                objects: Vec::new(),
            });
            backup.complete |= rest.len() == 1 && rest[0] == MANIFEST;
            backup.last_modified = backup.last_modified.max(modified);
            backup.objects.push(meta.location);
        }
        Ok(backups.into_values().rev().collect())
    }

    /// The complete backups' names, newest first.
    pub async fn complete_backups(&self) -> Result<Vec<String>, ObjectsError> {
        Ok(self.backups().await?.into_iter().filter(|b| b.complete).map(|b| b.name).collect())
    }

    async fn no_backup(&self, name: &str) -> ObjectsError {
        match self.complete_backups().await {
            Ok(mut there) => {
                there.truncate(LISTED_BACKUPS);
                BucketRefusal::NoBackup {
                    name: name.to_owned(),
                    bucket: self.bucket.clone(),
                    prefix: self.prefix.clone(),
                    there,
                }
                .into()
            }
            Err(e) => e,
        }
    }

    /// `mall backup-push`: uploads the complete backup `<root>/<name>/` (every file, the manifest
    /// last), then prunes the bucket ([`prune_plan`] at `now`).
    pub async fn push(
        &self,
        root: &Path,
        name: &str,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<Pushed, ObjectsError> {
        let local = local_backup(root, name)?;
        self.upload(&local).await?;
        let (bytes, databases) = totals(&local.manifest);
        tracing::info!(backup = name, bucket = %self.bucket, bytes, "backup pushed");
        let backups = self.backups().await?;
        let plan = prune_plan(&backups, name, retention, now);
        for doomed in plan.complete.iter().chain(&plan.incomplete) {
            let objects =
                backups.iter().find(|b| &b.name == doomed).map(|b| b.objects.clone()).unwrap_or_default();
            self.delete(objects).await.map_err(self.failed(format!("prune backup {doomed}")))?;
            tracing::info!(backup = %doomed, "pruned");
        }
        Ok(Pushed {
            backup: name.to_owned(),
            bytes,
            databases,
            pruned: plan.complete,
            removed_incomplete: plan.incomplete,
        })
    }

    async fn delete(&self, objects: Vec<Key>) -> Result<(), object_store::Error> {
        let locations = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
        self.store.delete_stream(locations).try_collect::<Vec<Key>>().await.map(drop)
    }

    async fn upload(&self, local: &LocalBackup) -> Result<(), ObjectsError> {
        let name = &local.name;
        let manifest = self.key(name, MANIFEST);
        // A backup of this name pushed before (a push tried again): incomplete while it is replaced.
        self.store.delete(&manifest).await.map_err(self.failed(format!("replace backup {name}")))?;
        for (file, size) in &local.files {
            self.upload_file(&local.dir.join(file), &self.key(name, file), *size).await?;
            tracing::info!(backup = %name, file = %file, bytes = size, "uploaded");
        }
        self.upload_file(&local.dir.join(MANIFEST), &manifest, local.manifest_size).await
    }

    /// Uploads the file `path` (of `size` bytes) to `key`: in one request up to [`PART_SIZE`], else in
    /// parts, read a buffer at a time (an upload that fails is aborted, leaving no parts behind).
    async fn upload_file(&self, path: &Path, key: &Key, size: u64) -> Result<(), ObjectsError> {
        let read_error = |source| ObjectsError::Read { path: path.to_path_buf(), source };
        let action = || format!("upload {key}");
        let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
        if size <= PART_SIZE {
            let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut content).await.map_err(read_error)?;
            self.store.put(key, PutPayload::from(content)).await.map_err(self.failed(action()))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(key).await.map_err(self.failed(action()))?;
        let chunk = usize::try_from(part_size(size)).unwrap_or(usize::MAX);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, chunk);
        let mut buffer = vec![0; READ_BUFFER];
        loop {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.failed(action())(e));
            }
            match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => writer.write(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(read_error(e));
                }
            }
        }
        writer.finish().await.map_err(self.failed(action()))?;
        Ok(())
    }

    /// `mall backup-pull`: downloads the complete backup `name` into `<root>/<name>/` (through
    /// `<root>/<name>.partial/`, renamed once every file is there).
    pub async fn pull(&self, name: &str, root: &Path) -> Result<Pulled, ObjectsError> {
        if !is_backup_name(name) {
            return Err(self.no_backup(name).await);
        }
        let manifest_key = self.key(name, MANIFEST);
        let text = match self.store.get(&manifest_key).await {
            Ok(result) => result.bytes().await.map_err(self.failed(format!("download {manifest_key}")))?,
            Err(object_store::Error::NotFound { .. }) => return Err(self.no_backup(name).await),
            Err(e) => return Err(self.failed(format!("download {manifest_key}"))(e)),
        };
        let manifest = parse_manifest(name, &text)?;
        let target = root.join(name);
        if fs::symlink_metadata(&target).is_ok() {
            return Err(ObjectsError::Exists { path: target });
        }
        let partial = root.join(format!("{name}{PARTIAL_SUFFIX}"));
        let pulled = self.download_into(name, &manifest, &text, &partial).await;
        let renamed = pulled.and_then(|()| {
            fs::rename(&partial, &target)
                .map_err(|source| ObjectsError::Write { path: target.clone(), source })
        });
        if let Err(e) = renamed {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
        let (bytes, databases) = totals(&manifest);
        tracing::info!(backup = name, bucket = %self.bucket, bytes, "backup pulled");
        Ok(Pulled { pulled: name.to_owned(), bytes, databases, path: target })
    }

    /// Every dump `manifest` lists, then the manifest, into `partial` (made anew).
    async fn download_into(
        &self,
        name: &str,
        manifest: &Manifest,
        text: &[u8],
        partial: &Path,
    ) -> Result<(), ObjectsError> {
        let write_error = |source| ObjectsError::Write { path: partial.to_path_buf(), source };
        // What a pull that died left.
        match fs::remove_dir_all(partial) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(e)),
        }
        fs::create_dir_all(partial).map_err(write_error)?;
        for dump in &manifest.databases {
            let key = self.key(name, &dump.file);
            let result = match self.store.get(&key).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(Refusal::MissingFile {
                        backup: name.to_owned(),
                        database: dump.name.clone(),
                        file: dump.file.clone(),
                    }
                    .into());
                }
                Err(e) => return Err(self.failed(format!("download {key}"))(e)),
            };
            let path = partial.join(&dump.file);
            let write_error = |source| ObjectsError::Write { path: path.clone(), source };
            let mut file = tokio::fs::File::create(&path).await.map_err(write_error)?;
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.try_next().await.map_err(self.failed(format!("download {key}")))? {
                file.write_all(&chunk).await.map_err(write_error)?;
            }
            file.sync_all().await.map_err(write_error)?;
            tracing::info!(backup = name, file = %dump.file, "downloaded");
        }
        let path = partial.join(MANIFEST);
        fs::write(&path, text).map_err(|source| ObjectsError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const ALL: &[(&str, &str)] = &[
        (ENDPOINT_VAR, "http://minio.storage:9000"),
        (BUCKET_VAR, "mall-backups"),
        (ACCESS_KEY_ID_VAR, "AKIDEXAMPLE"),
        (SECRET_ACCESS_KEY_VAR, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<(&str, &str)> =
            ALL.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).copied().collect();
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn settings_come_from_the_variables_with_defaults() {
        let settings = BucketSettings::from_lookup(env(ALL)).unwrap();
        assert_eq!(settings.endpoint, "http://minio.storage:9000");
        assert_eq!(settings.bucket, "mall-backups");
        assert_eq!(settings.access_key_id, "AKIDEXAMPLE");
        assert_eq!(settings.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "trimmed");
        assert_eq!(settings.region, "us-east-1");
        assert_eq!(settings.prefix, "");

        let settings =
            BucketSettings::from_lookup(env(&with(&[(REGION_VAR, "eu-west-3"), (PREFIX_VAR, "mall/prod")])))
                .unwrap();
        assert_eq!((settings.region.as_str(), settings.prefix.as_str()), ("eu-west-3", "mall/prod/"));
        let settings = BucketSettings::from_lookup(env(&with(&[(PREFIX_VAR, "backups/")]))).unwrap();
        assert_eq!(settings.prefix, "backups/");
    }

    #[test]
    fn missing_settings_are_named_and_the_secret_never_shown() {
        let e = BucketSettings::from_lookup(env(&[])).unwrap_err();
        assert_eq!(
            e,
            SettingsError::Missing {
                vars: vec![ENDPOINT_VAR, BUCKET_VAR, ACCESS_KEY_ID_VAR, SECRET_ACCESS_KEY_VAR]
            }
        );
        assert!(
            e.to_string().starts_with(
                "MALL_S3_ENDPOINT, MALL_S3_BUCKET, MALL_S3_ACCESS_KEY_ID, MALL_S3_SECRET_ACCESS_KEY are not set"
            ),
            "{e}"
        );
        let only_secret: Vec<_> = ALL.iter().filter(|(k, _)| *k != SECRET_ACCESS_KEY_VAR).copied().collect();
        let e = BucketSettings::from_lookup(env(&only_secret)).unwrap_err();
        assert!(e.to_string().starts_with("MALL_S3_SECRET_ACCESS_KEY is not set: "), "{e}");
        // Blank is unset.
        let e = BucketSettings::from_lookup(env(&with(&[(BUCKET_VAR, "  ")]))).unwrap_err();
        assert_eq!(e, SettingsError::Missing { vars: vec![BUCKET_VAR] });

        let settings = BucketSettings::from_lookup(env(ALL)).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("EXAMPLEKEY") && shown.contains("<redacted>"), "{shown}");
        // Nor the client's (object_store's own redaction); opening it requests nothing.
        let shown = format!("{:?}", Bucket::open(&settings).unwrap());
        assert!(!shown.contains("EXAMPLEKEY") && shown.contains("mall-backups"), "{shown}");
    }

    #[test]
    fn unusable_settings_are_named() {
        for (var, value) in [
            (ENDPOINT_VAR, "minio.storage:9000"),
            (ENDPOINT_VAR, "ftp://minio"),
            (BUCKET_VAR, "mall/backups"),
            (PREFIX_VAR, "/backups"),
            (PREFIX_VAR, "a//b"),
            (PREFIX_VAR, "a/../b"),
        ] {
            let e = BucketSettings::from_lookup(env(&with(&[(var, value)]))).unwrap_err();
            assert!(matches!(e, SettingsError::Invalid { var: v, .. } if v == var), "{var}={value}: {e:?}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let https = BucketSettings::from_lookup(env(&with(&[(ENDPOINT_VAR, "https://s3.example")]))).unwrap();
        assert_eq!(https.endpoint, "https://s3.example");
    }

    #[test]
    fn backup_names_are_utc_times() {
        for name in ["20261206T053000Z", "20200101T000000Z"] {
            assert!(is_backup_name(name), "{name}");
        }
        for name in [
            "",
            "20261206T053000Z.partial",
            "20261206T053000",
            "20261206t053000Z",
            "2026120T0530000Z",
            "x0261206T053000Z",
        ] {
            assert!(!is_backup_name(name), "{name}");
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_535_000);
        assert_eq!(backup_name_at(t), "20261206T053000Z");
        assert_eq!(backup_name_at(SystemTime::UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn large_files_go_in_parts_of_at_least_5_mib_and_at_most_10000() {
        assert_eq!(part_size(6 * 1024 * 1024), PART_SIZE);
        assert_eq!(part_size(PART_SIZE * 10_000), PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024; // 200 GiB
        assert!(part_size(huge) * 10_000 >= huge && part_size(huge).is_multiple_of(1024 * 1024));
        assert_eq!(part_size(huge), 21 * 1024 * 1024);
    }

    fn stored(name: &str, complete: bool, age: Duration, now: SystemTime) -> StoredBackup {
        StoredBackup { name: name.to_owned(), complete, last_modified: now - age, objects: Vec::new() }
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_the_one_just_pushed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_535_000); // 20261206T053000Z
        let hour = Duration::from_secs(3600);
        let days = |n: u64| Duration::from_secs(n * 86_400);
        let backups = vec![
            stored("20261206T053000Z", true, hour, now),
            stored("20261205T053000Z", true, days(1), now),
            stored("20261204T053000Z", true, days(2), now),
            stored("20261130T053000Z", true, days(6), now),
            stored("20261101T053000Z", true, days(35), now),
            // Incomplete: one fresh (maybe a push still running), one two days old.
            stored("20261206T060000Z", false, hour, now),
            stored("20261203T053000Z", false, days(2), now),
        ];
        let plan = prune_plan(&backups, "20261206T053000Z", &Retention { keep: 3, max_age_days: None }, now);
        assert_eq!(plan.complete, vec!["20261130T053000Z".to_owned(), "20261101T053000Z".to_owned()]);
        assert_eq!(plan.incomplete, vec!["20261203T053000Z".to_owned()]);

        // Max age: 3 days drops all but the last three days' (keep would have allowed more).
        let plan =
            prune_plan(&backups, "20261206T053000Z", &Retention { keep: 7, max_age_days: Some(3) }, now);
        assert_eq!(plan.complete, vec!["20261130T053000Z".to_owned(), "20261101T053000Z".to_owned()]);

        // The one just pushed is kept whatever its age, and counts as one kept.
        let plan =
            prune_plan(&backups, "20261101T053000Z", &Retention { keep: 1, max_age_days: Some(1) }, now);
        assert_eq!(
            plan.complete,
            vec![
                "20261206T053000Z".to_owned(),
                "20261205T053000Z".to_owned(),
                "20261204T053000Z".to_owned(),
                "20261130T053000Z".to_owned()
            ]
        );
        let plan = prune_plan(&backups, "20261206T053000Z", &Retention { keep: 1, max_age_days: None }, now);
        assert_eq!(plan.complete.len(), 4);
        assert!(!plan.complete.contains(&"20261206T053000Z".to_owned()));
    }

    #[test]
    fn manifests_are_read_as_restore_check_reads_them() {
        let good = br#"{"formatVersion":1,"name":"20261206T053000Z","databases":[
            {"name":"mall_user","file":"mall_user.sql.gz","bytes":3,"sha256":"ab","migrations":[1]}]}"#;
        let manifest = parse_manifest("20261206T053000Z", good).unwrap();
        assert_eq!(totals(&manifest), (3, 1));
        let newer = br#"{"formatVersion":2,"whatever":true}"#;
        assert_eq!(
            parse_manifest("20261206T053000Z", newer),
            Err(Refusal::UnsupportedFormat { backup: "20261206T053000Z".into(), found: 2 })
        );
        let escaping = String::from_utf8_lossy(good)
            .replace("\"file\":\"mall_user.sql.gz\"", "\"file\":\"../../etc/x\"");
        assert!(matches!(
            parse_manifest("20261206T053000Z", escaping.as_bytes()),
            Err(Refusal::UnsafeFileName { ref file, .. }) if file == "../../etc/x"
        ));
        assert!(matches!(parse_manifest("n", b"{"), Err(Refusal::BadManifest { .. })));
    }

    #[test]
    fn commands_parse() {
        let cli =
            Cli::try_parse_from(["mall", "backup-push", "--dir", "/backups", "--name", "20261206T053000Z"])
                .unwrap();
        let Command::BackupPush { dir, name, keep, max_age_days } = cli.command else {
            panic!("backup-push")
        };
        assert_eq!((dir.as_path(), name.as_deref()), (Path::new("/backups"), Some("20261206T053000Z")));
        assert_eq!((keep, max_age_days), (DEFAULT_KEEP, None));
        let cli = Cli::try_parse_from([
            "mall",
            "backup-push",
            "--dir=/b",
            "--name=20261206T053000Z",
            "--keep=3",
            "--max-age-days=30",
        ])
        .unwrap();
        let Command::BackupPush { keep, max_age_days, .. } = cli.command else { panic!("backup-push") };
        assert_eq!((keep, max_age_days), (3, Some(30)));
        for bad in ["--keep=0", "--max-age-days=0", "--keep=-1"] {
            let args = ["mall", "backup-push", "--dir=/b", "--name=20261206T053000Z", bad];
            assert!(Cli::try_parse_from(args).is_err(), "{bad}");
        }
        let cli =
            Cli::try_parse_from(["mall", "backup-pull", "--name", "20261206T053000Z", "--dir", "/restore"])
                .unwrap();
        let Command::BackupPull { name, dir } = cli.command else { panic!("backup-pull") };
        assert_eq!((name.as_str(), dir.as_path()), ("20261206T053000Z", Path::new("/restore")));
        assert!(
            Cli::try_parse_from(["mall", "backup-pull", "--dir", "/restore"]).is_err(),
            "the name is required"
        );
    }

    #[test]
    fn refusals_name_the_bucket_and_what_is_there() {
        let refusal = BucketRefusal::NoBackup {
            name: "20261205T000000Z".into(),
            bucket: "mall-backups".into(),
            prefix: String::new(),
            there: vec!["20261206T053000Z".into(), "20261204T053000Z".into()],
        };
        assert_eq!(
            refusal.to_string(),
            "no backup 20261205T000000Z in bucket mall-backups (there: 20261206T053000Z, 20261204T053000Z)"
        );
        let refusal = BucketRefusal::NoBackup {
            name: "x".into(),
            bucket: "b".into(),
            prefix: "mall/prod/".into(),
            there: vec![],
        };
        assert_eq!(refusal.to_string(), "no backup x in bucket b under mall/prod/ (there are none)");
    }

    #[test]
    fn without_a_name_the_one_complete_backup_in_the_directory_is_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |e: ObjectsError| e.to_string();
        assert!(refused(only_backup(dir.path()).unwrap_err()).contains("holds no complete backup"));
        std::fs::create_dir(dir.path().join("20261206T053000Z.partial")).unwrap();
        std::fs::create_dir(dir.path().join("20261206T053000Z")).unwrap();
        assert!(only_backup(dir.path()).is_err(), "no manifest: not complete");
        std::fs::write(dir.path().join("20261206T053000Z").join(MANIFEST), "{}").unwrap();
        assert_eq!(only_backup(dir.path()).unwrap(), "20261206T053000Z");
        std::fs::create_dir(dir.path().join("20261207T053000Z")).unwrap();
        std::fs::write(dir.path().join("20261207T053000Z").join(MANIFEST), "{}").unwrap();
        let e = refused(only_backup(dir.path()).unwrap_err());
        assert!(e.contains("several backups (20261207T053000Z, 20261206T053000Z): name one"), "{e}");
    }
}
