//! `mall restore-check`: whether a backup may be restored, decided before anything is loaded. The
//! operator's restore Job runs it as an init container in the Mall image; a second container (the
//! MySQL image) then loads each dump the plan lists, `gunzip -c <file> | mysql`.
//!
//! A backup is a directory `<BACKUP_DIR>/<name>/` written by the operator's backup script
//! (`operator/src/builders/backup.sh`): one `<database>.sql.gz` per service database and a
//! `manifest.json` (format 1) with each dump's size, sha256 and the migration versions its database
//! had. The check, in order:
//!
//! 1. the backup is there and complete (a directory with a manifest, not `.partial`) and its manifest
//!    is of format 1;
//! 2. every dump is there, a plain file name inside the backup, of the size and sha256 recorded;
//! 3. every database is a service's of this image (`mall_<service>`), and this image knows every
//!    migration the backup's schema has (an older image would run against a schema it does not know);
//! 4. every one of those databases is empty on the target server (a restore never merges).
//!
//! Then it writes the plan (`<database> <file>`, a line each, in the manifest's order). A check that
//! fails for one of those reasons is a [`Refusal`]: the backup or the database is not fit, and trying
//! again changes nothing. Anything else (an unreachable server, an unreadable disk) is another
//! [`RestoreError`].

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mall_storage::sqlx::{self, MySqlConnection};
use mall_storage::{Backend, StorageError, as_admin, redact_url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SERVICES;
use crate::config::Service;
use crate::database;

/// The manifest's file name in a backup's directory.
pub const MANIFEST: &str = "manifest.json";
/// The one manifest format this image reads.
pub const FORMAT_VERSION: u64 = 1;
/// The suffix of a backup still being written (or abandoned): never complete.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// The exit code of a refusal (1 is every other failure).
pub const EXIT_REFUSED: u8 = 2;
/// Where Kubernetes takes a container's termination message from.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The most of a termination message Kubernetes keeps.
pub const TERMINATION_MESSAGE_MAX: usize = 4096;
/// How many complete backups a refusal for a missing one names.
const LISTED_BACKUPS: usize = 10;
/// The Mall version of this image, whose migrations are embedded in it.
const IMAGE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Longest wait for the administrator's connection and the counting queries, per attempt.
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// The read buffer for hashing a dump.
const HASH_BUFFER: usize = 256 * 1024;

/// A backup's `manifest.json` (format 1), as the backup script writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u64,
    pub name: String,
    /// The Mall version whose schema the backup holds (empty when the backup did not know it).
    #[serde(default)]
    pub image_tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    pub databases: Vec<DatabaseDump>,
}

/// One database of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct DatabaseDump {
    /// The database (`mall_order`).
    pub name: String,
    /// Its dump's file name in the backup's directory (`mall_order.sql.gz`).
    pub file: String,
    /// The dump's size.
    pub bytes: u64,
    /// The dump's sha256, in hex.
    pub sha256: String,
    /// The versions in the database's `_sqlx_migrations` (the successful ones) when it was backed up.
    pub migrations: Vec<i64>,
}

impl DatabaseDump {
    /// Refused unless the file is `len` bytes, as the manifest of backup `name` says.
    pub fn check_size(&self, name: &str, len: u64) -> Result<(), Refusal> {
        if len == self.bytes {
            return Ok(());
        }
        Err(Refusal::WrongSize {
            backup: name.to_owned(),
            file: self.file.clone(),
            expected: self.bytes,
            actual: len,
        })
    }
}

/// Why a backup may not be restored (or not into this server): nothing was loaded, and running the
/// check again without a change gives the same answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No complete backup of that name (no directory, no manifest, or still `.partial`).
    #[error("no backup {name} in {} ({})", .dir.display(), backups_there(.there))]
    NoBackup {
        name: String,
        /// The directory it was looked for in.
        dir: PathBuf,
        /// The complete backups that are there, newest first (at most 10).
        there: Vec<String>,
    },
    /// The manifest is not JSON, or not of the shape of format 1.
    #[error("the manifest of backup {backup} cannot be used: {reason}")]
    BadManifest { backup: String, reason: String },
    /// The manifest is of a format this image does not read.
    #[error(
        "the manifest of backup {backup} is of format {found}; this image (Mall {IMAGE_VERSION}) reads \
         format {FORMAT_VERSION} only: made by a newer Mall?"
    )]
    UnsupportedFormat { backup: String, found: u64 },
    /// A dump's file name could leave the backup's directory (or break the plan's lines).
    #[error(
        "backup {backup} names the file {file:?} for {database}: only a plain file name in the backup's \
         directory is accepted (letters, digits, '.', '_', '-'; no '/' and no '..')"
    )]
    UnsafeFileName { backup: String, database: String, file: String },
    /// A dump listed in the manifest is not in the backup.
    #[error("backup {backup} lacks {file}, the dump of {database}")]
    MissingFile { backup: String, database: String, file: String },
    /// A dump is not of the size the manifest records.
    #[error(
        "{file} in backup {backup} has {actual} bytes, the manifest says {expected}: truncated or changed \
         since the backup"
    )]
    WrongSize { backup: String, file: String, expected: u64, actual: u64 },
    /// A dump's content is not what was backed up.
    #[error(
        "{file} in backup {backup} has sha256 {actual}, the manifest says {expected}: changed since the \
         backup"
    )]
    WrongChecksum { backup: String, file: String, expected: String, actual: String },
    /// Databases no service of this image has.
    #[error(
        "backup {backup} holds {}, which no service of this image (Mall {IMAGE_VERSION}) has (it restores \
         {}): made by a newer Mall?",
        .databases.join(", "),
        service_databases().join(", ")
    )]
    UnknownDatabases { backup: String, databases: Vec<String> },
    /// The backup's schema has migrations this image does not know.
    #[error(
        "backup {backup} was made by a newer schema than this image knows: {} that image {IMAGE_VERSION} \
         does not; restore with {}",
        newer(.databases),
        image_to_use(.image_tag)
    )]
    NewerSchema {
        backup: String,
        /// The manifest's `imageTag`.
        image_tag: String,
        /// Each database with the versions this image does not know.
        databases: Vec<(String, Vec<i64>)>,
    },
    /// Databases that already have tables on the target server.
    #[error(
        "{}: a restore goes only into an empty database, so nothing was loaded (restore into a stack whose \
         MySQL is new, before its migrations run)",
        tables(.databases)
    )]
    NotEmpty {
        /// Each non-empty database with its number of tables.
        databases: Vec<(String, u64)>,
    },
}

fn backups_there(backups: &[String]) -> String {
    if backups.is_empty() { "there are none".to_owned() } else { format!("there: {}", backups.join(", ")) }
}

fn newer(databases: &[(String, Vec<i64>)]) -> String {
    let each: Vec<String> =
        databases.iter().map(|(name, versions)| format!("{name} has migrations {versions:?}")).collect();
    each.join(", ")
}

fn image_to_use(image_tag: &str) -> String {
    if image_tag.is_empty() {
        "the image that made it or a newer one".to_owned()
    } else {
        format!("image {image_tag} or newer")
    }
}

fn tables(databases: &[(String, u64)]) -> String {
    let each: Vec<String> = databases
        .iter()
        .map(|(name, n)| format!("database {name} already has {n} table{}", if *n == 1 { "" } else { "s" }))
        .collect();
    each.join(", ")
}

/// What stopped a restore check.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup or the target database is not fit: see [`Refusal`].
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A file of the backup exists but cannot be read.
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The plan cannot be written.
    #[error("cannot write the plan {}", .path.display())]
    WritePlan {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The target server did not answer (within the patience) or refused the administrator.
    #[error("cannot count the tables of the backup's databases at {url}")]
    Database {
        /// The administrator's URL, password redacted.
        url: String,
        #[source]
        source: StorageError,
    },
}

/// A backup whose manifest, dumps and schema passed (steps 1 to 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The backup's name: its directory's.
    pub name: String,
    pub manifest: Manifest,
}

impl Verified {
    /// The databases, in the manifest's order.
    pub fn databases(&self) -> Vec<&str> {
        self.manifest.databases.iter().map(|d| d.name.as_str()).collect()
    }

    /// The plan's text: `<database> <file>`, a line each, in the manifest's order.
    pub fn plan(&self) -> String {
        self.manifest.databases.iter().map(|d| format!("{} {}\n", d.name, d.file)).collect()
    }

    pub fn checked(&self) -> Checked {
        Checked {
            restore_checked: self.name.clone(),
            databases: self.manifest.databases.len(),
            bytes: self.manifest.databases.iter().map(|d| d.bytes).sum(),
        }
    }
}

/// What a passed check prints: `{"restoreChecked":"<name>","databases":N,"bytes":TOTAL}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub restore_checked: String,
    pub databases: usize,
    pub bytes: u64,
}

impl Checked {
    pub fn summary_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The whole check of `backup` (its directory) for a restore through `admin_url`, waiting up to
/// `patience` for a server that is not reachable yet; on success the plan is written to `plan`
/// (nothing is written otherwise).
pub async fn check(
    backup: &Path,
    plan: &Path,
    admin_url: &str,
    patience: Duration,
) -> Result<Checked, RestoreError> {
    let dir = backup.to_path_buf();
    // Hashing reads every dump: off the async threads.
    let verified = tokio::task::spawn_blocking(move || verify(&dir))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    check_empty(admin_url, &verified.databases(), patience).await?;
    write_plan(plan, &verified.plan())?;
    tracing::info!(backup = %verified.name, databases = verified.manifest.databases.len(), "restore checked");
    Ok(verified.checked())
}

/// Steps 1 to 3: the manifest, every dump's size and checksum, the databases and their migrations.
pub fn verify(backup: &Path) -> Result<Verified, RestoreError> {
    let name = backup_name(backup);
    let manifest = read_manifest(backup, &name)?;
    check_dumps(backup, &name, &manifest)?;
    check_schema(&name, &manifest)?;
    Ok(Verified { name, manifest })
}

fn backup_name(backup: &Path) -> String {
    backup.file_name().map_or_else(|| backup.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Step 1: the manifest of a complete backup, of format 1.
fn read_manifest(backup: &Path, name: &str) -> Result<Manifest, RestoreError> {
    let missing = || {
        let dir = backup.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Refusal::NoBackup { name: name.to_owned(), dir: dir.to_path_buf(), there: complete_backups(dir) }
    };
    if name.ends_with(PARTIAL_SUFFIX) {
        return Err(missing().into());
    }
    let path = backup.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Err(missing().into());
        }
        Err(source) => return Err(RestoreError::Read { path, source }),
    };
    let manifest = parse_manifest(name, text.as_bytes())?;
    if manifest.name != name {
        tracing::warn!(backup = name, manifest = %manifest.name, "the manifest names another backup");
    }
    Ok(manifest)
}

/// The manifest `text` of backup `name`: format 1 (checked first: a later format may not parse as
/// this one), at least one database, none twice, each dump a plain file name in the backup's
/// directory. `mall backup-push` and `backup-pull` read manifests the same way.
pub fn parse_manifest(name: &str, text: &[u8]) -> Result<Manifest, Refusal> {
    let bad = |reason: String| Refusal::BadManifest { backup: name.to_owned(), reason };
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let found = value
        .get("formatVersion")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("it has no formatVersion".to_owned()))?;
    if found != FORMAT_VERSION {
        return Err(Refusal::UnsupportedFormat { backup: name.to_owned(), found });
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if manifest.databases.is_empty() {
        return Err(bad("it lists no database".to_owned()));
    }
    let mut seen = HashSet::new();
    if let Some(twice) = manifest.databases.iter().find(|d| !seen.insert(d.name.as_str())) {
        return Err(bad(format!("it lists {} twice", twice.name)));
    }
    if let Some(dump) = manifest.databases.iter().find(|d| !is_plain_file_name(&d.file)) {
        return Err(Refusal::UnsafeFileName {
            backup: name.to_owned(),
            database: dump.name.clone(),
            file: dump.file.clone(),
        });
    }
    Ok(manifest)
}

/// The complete backups in `dir` (directories with a manifest, not `.partial`), newest first (their
/// names are UTC times), at most [`LISTED_BACKUPS`]; none when `dir` cannot be read.
pub fn complete_backups(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let complete = !name.ends_with(PARTIAL_SUFFIX) && entry.path().join(MANIFEST).is_file();
            complete.then_some(name)
        })
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    names.truncate(LISTED_BACKUPS);
    names
}

/// Whether `file` is a plain name in the backup's directory that the plan's lines carry as they are.
fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with(['.', '-'])
        && !file.contains("..")
        && file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Step 2: every dump is there, of the size and sha256 the manifest records.
fn check_dumps(backup: &Path, name: &str, manifest: &Manifest) -> Result<(), RestoreError> {
    for dump in &manifest.databases {
        let (backup_name, database, file) = (name.to_owned(), dump.name.clone(), dump.file.clone());
        let missing = || Refusal::MissingFile { backup: backup_name.clone(), database, file };
        let path = backup.join(&dump.file);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing().into()),
            Err(source) => return Err(RestoreError::Read { path, source }),
        };
        let read_error = |source| RestoreError::Read { path: path.clone(), source };
        let metadata = file.metadata().map_err(read_error)?;
        if !metadata.is_file() {
            return Err(missing().into());
        }
        dump.check_size(name, metadata.len())?;
        let actual = sha256_hex(file).map_err(read_error)?;
        if !actual.eq_ignore_ascii_case(dump.sha256.trim()) {
            return Err(Refusal::WrongChecksum {
                backup: name.to_owned(),
                file: dump.file.clone(),
                expected: dump.sha256.clone(),
                actual,
            }
            .into());
        }
    }
    Ok(())
}

/// The sha256 of everything `reader` gives, in lowercase hex, read a buffer at a time.
pub fn sha256_hex(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_BUFFER];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The database of `service`: `mall_<service>`, as the operator provisions and backs it up.
pub fn database_name(service: Service) -> String {
    format!("mall_{}", service.name())
}

/// Every database this image's services have, in the order `mall up` starts them.
pub fn service_databases() -> Vec<String> {
    SERVICES.iter().map(|&s| database_name(s)).collect()
}

fn service_of(database: &str) -> Option<Service> {
    SERVICES.iter().copied().find(|&s| database_name(s) == database)
}

/// The MySQL migration versions embedded in this image for `service`.
pub fn known_migrations(service: Service) -> BTreeSet<i64> {
    // `SERVICES` holds no gateway, the one service without migrations.
    database::migrations(service).map_or_else(
        |_| BTreeSet::new(),
        |m| {
            m.for_backend(Backend::MySql)
                .iter()
                .filter(|m| m.migration_type.is_up_migration())
                .map(|m| m.version)
                .collect()
        },
    )
}

/// Step 3: every database is a service's, and this image knows every migration the backup recorded
/// (one it lacks may still come later: the migration Job runs after the restore).
fn check_schema(name: &str, manifest: &Manifest) -> Result<(), Refusal> {
    let unknown: Vec<String> =
        manifest.databases.iter().filter(|d| service_of(&d.name).is_none()).map(|d| d.name.clone()).collect();
    if !unknown.is_empty() {
        return Err(Refusal::UnknownDatabases { backup: name.to_owned(), databases: unknown });
    }
    let newer: Vec<(String, Vec<i64>)> = manifest
        .databases
        .iter()
        .filter_map(|d| {
            let known = service_of(&d.name).map(known_migrations).unwrap_or_default();
            let versions: BTreeSet<i64> =
                d.migrations.iter().copied().filter(|v| !known.contains(v)).collect();
            (!versions.is_empty()).then(|| (d.name.clone(), versions.into_iter().collect()))
        })
        .collect();
    if !newer.is_empty() {
        return Err(Refusal::NewerSchema {
            backup: name.to_owned(),
            image_tag: manifest.image_tag.clone(),
            databases: newer,
        });
    }
    Ok(())
}

/// Step 4: every one of `databases` is empty (or absent) on the server of `admin_url`; the server is
/// waited for up to `patience` while unreachable. A non-empty one is a [`Refusal::NotEmpty`] naming
/// each.
pub async fn check_empty(
    admin_url: &str,
    databases: &[&str],
    patience: Duration,
) -> Result<(), RestoreError> {
    let counts =
        database::retry_while_unreachable("restore check", patience, || count_tables(admin_url, databases))
            .await
            .map_err(|source| RestoreError::Database { url: redact_url(admin_url), source })?;
    let non_empty: Vec<(String, u64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    if non_empty.is_empty() { Ok(()) } else { Err(Refusal::NotEmpty { databases: non_empty }.into()) }
}

/// How many tables (and views) each of `databases` has, as the administrator of `admin_url`.
async fn count_tables(admin_url: &str, databases: &[&str]) -> Result<Vec<(String, u64)>, StorageError> {
    as_admin(admin_url, COUNT_TIMEOUT, async |conn: &mut MySqlConnection| {
        let mut counts = Vec::with_capacity(databases.len());
        for &database in databases {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?")
                    .bind(database)
                    .fetch_one(&mut *conn)
                    .await?;
            counts.push((database.to_owned(), u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    })
    .await
}

/// Step 5: writes `text` to `plan` whole or not at all (a temporary file in the same directory,
/// renamed over it).
pub fn write_plan(plan: &Path, text: &str) -> Result<(), RestoreError> {
    let failed = |source| RestoreError::WritePlan { path: plan.to_path_buf(), source };
    let file_name = plan
        .file_name()
        .ok_or_else(|| failed(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file")))?;
    let dir = plan.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, plan)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temporary);
        failed(e)
    })
}

/// Makes `line` the container's termination message (Kubernetes shows it in the pod's status, where
/// the operator quotes it), when [`TERMINATION_LOG`] is there and writable; outside a pod it is not.
pub fn write_termination_message(line: &str) {
    write_termination_message_to(Path::new(TERMINATION_LOG), line);
}

/// Writes `line` to the existing file `path`, cut to [`TERMINATION_MESSAGE_MAX`] bytes (at a character
/// boundary); whether it did. A missing file is not created.
pub fn write_termination_message_to(path: &Path, line: &str) -> bool {
    let mut end = line.len().min(TERMINATION_MESSAGE_MAX);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let Ok(mut file) = OpenOptions::new().write(true).truncate(true).open(path) else { return false };
    file.write_all(&line.as_bytes()[..end]).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `data` as a gzip file (stored, uncompressed deflate blocks), as `gunzip -c` reads it.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let blocks: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(65_535).collect() };
        for (i, block) in blocks.iter().enumerate() {
            out.push(u8::from(i + 1 == blocks.len()));
            let len = u16::try_from(block.len()).unwrap();
            out.extend(len.to_le_bytes());
            out.extend((!len).to_le_bytes());
            out.extend(*block);
        }
        out.extend(crc32(data).to_le_bytes());
        out.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// Every version this image knows for `service`'s database.
    fn known(database: &str) -> Vec<i64> {
        known_migrations(service_of(database).unwrap()).into_iter().collect()
    }

    /// A backup `name` in `root` as the backup script writes it: a gzipped dump per database (with its
    /// size and sha256, both computed here independently of the check) and the manifest.
    fn write_backup(root: &Path, name: &str, databases: &[(&str, Vec<i64>)]) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut entries = Vec::new();
        for (database, migrations) in databases {
            let sql = format!("CREATE DATABASE IF NOT EXISTS `{database}`;\nUSE `{database}`;\n");
            let gz = gzip(sql.repeat(50).as_bytes());
            let file = format!("{database}.sql.gz");
            fs::write(dir.join(&file), &gz).unwrap();
            entries.push(json!({
                "name": database,
                "file": file,
                "bytes": gz.len(),
                "sha256": format!("{:x}", Sha256::digest(&gz)),
                "migrations": migrations,
            }));
        }
        write_manifest(
            &dir,
            &json!({
                "formatVersion": 1,
                "name": name,
                "imageTag": "0.3.0",
                "started": "2026-12-06T05:30:00Z",
                "finished": "2026-12-06T05:30:07Z",
                "databases": entries,
            }),
        );
        dir
    }

    fn write_manifest(dir: &Path, manifest: &serde_json::Value) {
        fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
    }

    /// Changes the manifest of the backup in `dir` with `edit`.
    fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(MANIFEST)).unwrap()).unwrap();
        edit(&mut manifest);
        write_manifest(dir, &manifest);
    }

    fn refusal(result: Result<Verified, RestoreError>) -> Refusal {
        match result {
            Err(RestoreError::Refused(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn every_service() -> Vec<(&'static str, Vec<i64>)> {
        let names = ["mall_auth", "mall_user", "mall_product", "mall_cart", "mall_order", "mall_payment"];
        let mut all: Vec<(&str, Vec<i64>)> = names.iter().map(|&n| (n, known(n))).collect();
        // A database whose service never migrated: no versions at all.
        all.push(("mall_checkout", Vec::new()));
        all
    }

    #[test]
    fn the_test_dumps_are_gzip_files_as_rfc_1952_lays_them_out() {
        // Known CRC-32 of "123456789"; the layout is that of RFC 1952.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let gz = gzip(b"abc");
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(&gz[gz.len() - 4..], &3u32.to_le_bytes());
    }

    #[test]
    fn sha256_is_streamed_over_many_buffers() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let big: Vec<u8> = (0..HASH_BUFFER * 3 + 17).map(|i| (i % 251) as u8).collect();
        assert_eq!(sha256_hex(&big[..]).unwrap(), format!("{:x}", Sha256::digest(&big)));
    }

    #[test]
    fn a_good_backup_passes_and_the_plan_lists_each_dump_in_manifest_order() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        assert!(known("mall_order").len() > 1, "the order service has migrations to check against");

        let verified = verify(&dir).unwrap();
        assert_eq!(verified.name, "20261206T053000Z");
        assert_eq!(
            verified.databases(),
            [
                "mall_auth",
                "mall_user",
                "mall_product",
                "mall_cart",
                "mall_order",
                "mall_payment",
                "mall_checkout"
            ]
        );
        let total: u64 =
            verified.manifest.databases.iter().map(|d| fs::metadata(dir.join(&d.file)).unwrap().len()).sum();
        let checked = verified.checked();
        assert_eq!(
            checked,
            Checked { restore_checked: "20261206T053000Z".into(), databases: 7, bytes: total }
        );
        assert_eq!(
            checked.summary_line(),
            format!(r#"{{"restoreChecked":"20261206T053000Z","databases":7,"bytes":{total}}}"#)
        );

        let plan = root.path().join("plan").join("plan.txt");
        fs::create_dir(plan.parent().unwrap()).unwrap();
        fs::write(&plan, "an older plan that is replaced whole\n").unwrap();
        write_plan(&plan, &verified.plan()).unwrap();
        assert_eq!(
            fs::read_to_string(&plan).unwrap(),
            "mall_auth mall_auth.sql.gz\nmall_user mall_user.sql.gz\nmall_product mall_product.sql.gz\n\
             mall_cart mall_cart.sql.gz\nmall_order mall_order.sql.gz\nmall_payment mall_payment.sql.gz\n\
             mall_checkout mall_checkout.sql.gz\n"
        );
        let left: Vec<_> =
            fs::read_dir(plan.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["plan.txt"], "no temporary file is left behind");

        // An older backup (fewer migrations than this image has) passes too: the migrations run after.
        let older = vec![("mall_order", known("mall_order")[..1].to_vec())];
        verify(&write_backup(root.path(), "20261101T000000Z", &older)).unwrap();
    }

    #[test]
    fn a_tampered_dump_is_refused_by_its_checksum() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        let path = dir.join("mall_order.sql.gz");
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let e = refusal(verify(&dir));
        let Refusal::WrongChecksum { ref file, ref actual, ref expected, .. } = e else { panic!("{e:?}") };
        assert_eq!(file, "mall_order.sql.gz");
        assert_eq!(actual, &format!("{:x}", Sha256::digest(&bytes)));
        assert_ne!(actual, expected);
        let message = e.to_string();
        assert!(
            message.starts_with("mall_order.sql.gz in backup 20261206T053000Z has sha256 ")
                && message.contains(&format!("the manifest says {expected}")),
            "{message}"
        );
    }

    #[test]
    fn a_dump_of_another_size_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        let path = dir.join("mall_cart.sql.gz");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();

        let e = refusal(verify(&dir));
        let expected = u64::try_from(bytes.len()).unwrap();
        assert_eq!(
            e,
            Refusal::WrongSize {
                backup: "20261206T053000Z".into(),
                file: "mall_cart.sql.gz".into(),
                expected,
                actual: expected - 10,
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "mall_cart.sql.gz in backup 20261206T053000Z has {} bytes, the manifest says {expected}: \
                 truncated or changed since the backup",
                expected - 10
            )
        );
    }

    #[test]
    fn a_missing_dump_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        fs::remove_file(dir.join("mall_user.sql.gz")).unwrap();
        assert_eq!(
            refusal(verify(&dir)).to_string(),
            "backup 20261206T053000Z lacks mall_user.sql.gz, the dump of mall_user"
        );
    }

    #[test]
    fn a_missing_backup_lists_the_complete_ones_there_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let e = refusal(verify(&root.path().join("20261205T000000Z")));
        assert_eq!(
            e.to_string(),
            format!("no backup 20261205T000000Z in {} (there are none)", root.path().display())
        );

        let one = vec![("mall_cart", Vec::new())];
        // Twelve complete backups, in no particular order of creation.
        for day in [3, 1, 12, 7, 2, 9, 4, 11, 5, 10, 8, 6] {
            write_backup(root.path(), &format!("202612{day:02}T053000Z"), &one);
        }
        // Not complete: still being written, or without a manifest; not a directory.
        write_backup(root.path(), "20261213T053000Z.partial", &one);
        fs::create_dir(root.path().join("20261214T053000Z")).unwrap();
        fs::write(root.path().join("20261215T053000Z"), "a file").unwrap();

        let e = refusal(verify(&root.path().join("20261205T000000Z")));
        let newest: Vec<String> = (3..=12).rev().map(|day| format!("202612{day:02}T053000Z")).collect();
        assert_eq!(
            e,
            Refusal::NoBackup {
                name: "20261205T000000Z".into(),
                dir: root.path().to_path_buf(),
                there: newest.clone(),
            }
        );
        assert_eq!(
            e.to_string(),
            format!("no backup 20261205T000000Z in {} (there: {})", root.path().display(), newest.join(", "))
        );
        // A directory without a manifest and a `.partial` one are no backups either.
        for incomplete in ["20261214T053000Z", "20261213T053000Z.partial"] {
            let e = refusal(verify(&root.path().join(incomplete)));
            assert!(matches!(e, Refusal::NoBackup { ref name, .. } if name == incomplete), "{e:?}");
        }
    }

    #[test]
    fn manifests_of_another_format_or_shape_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        edit_manifest(&dir, |m| m["formatVersion"] = json!(2));
        assert_eq!(
            refusal(verify(&dir)).to_string(),
            format!(
                "the manifest of backup 20261206T053000Z is of format 2; this image (Mall {IMAGE_VERSION}) \
                 reads format 1 only: made by a newer Mall?"
            )
        );
        edit_manifest(&dir, |m| {
            m["formatVersion"] = json!(1);
            m["databases"][1]["name"] = json!("mall_auth");
        });
        let e = refusal(verify(&dir));
        assert!(e.to_string().ends_with("cannot be used: it lists mall_auth twice"), "{e}");
        edit_manifest(&dir, |m| m["databases"] = json!([]));
        assert!(matches!(refusal(verify(&dir)), Refusal::BadManifest { .. }));
        edit_manifest(&dir, |m| m.as_object_mut().unwrap().remove("formatVersion").map(drop).unwrap());
        assert!(
            matches!(refusal(verify(&dir)), Refusal::BadManifest { ref reason, .. } if reason.contains("formatVersion"))
        );
        fs::write(dir.join(MANIFEST), "{\"formatVersion\":1,").unwrap();
        assert!(matches!(refusal(verify(&dir)), Refusal::BadManifest { .. }));
    }

    #[test]
    fn file_names_that_leave_the_backup_or_break_the_plan_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        // The same dump outside the backup: a path would reach it, the check does not follow one.
        fs::copy(dir.join("mall_order.sql.gz"), root.path().join("mall_order.sql.gz")).unwrap();
        let outside = format!("{}/mall_order.sql.gz", root.path().display());
        for file in [
            "../mall_order.sql.gz",
            outside.as_str(),
            "sub/mall_order.sql.gz",
            "..",
            "mall order.sql.gz",
            "x\nmall_user y",
            "-rf",
            ".hidden",
            "",
        ] {
            edit_manifest(&dir, |m| m["databases"][4]["file"] = json!(file));
            let e = refusal(verify(&dir));
            assert_eq!(
                e,
                Refusal::UnsafeFileName {
                    backup: "20261206T053000Z".into(),
                    database: "mall_order".into(),
                    file: file.into()
                },
                "{file:?}"
            );
        }
    }

    #[test]
    fn an_unknown_database_is_refused_as_made_by_a_newer_mall() {
        let root = tempfile::tempdir().unwrap();
        let mut databases = every_service();
        databases.push(("mall_loyalty", vec![20270101000000]));
        databases.push(("mysql", Vec::new()));
        let dir = write_backup(root.path(), "20261206T053000Z", &databases);
        let e = refusal(verify(&dir));
        assert_eq!(
            e,
            Refusal::UnknownDatabases {
                backup: "20261206T053000Z".into(),
                databases: vec!["mall_loyalty".into(), "mysql".into()]
            }
        );
        let message = e.to_string();
        assert!(
            message.starts_with("backup 20261206T053000Z holds mall_loyalty, mysql, which no service"),
            "{message}"
        );
        assert!(
            message.contains(
                "mall_auth, mall_user, mall_product, mall_cart, mall_order, mall_payment, mall_checkout"
            ),
            "{message}"
        );
        assert!(message.ends_with("made by a newer Mall?"), "{message}");
    }

    #[test]
    fn a_migration_this_image_does_not_know_is_refused_with_the_image_to_use() {
        let root = tempfile::tempdir().unwrap();
        let mut databases = every_service();
        databases[4].1.push(20270101000000);
        databases[1].1.extend([20270202000000, 20270101000000]);
        let dir = write_backup(root.path(), "20261206T053000Z", &databases);
        let e = refusal(verify(&dir));
        assert_eq!(
            e.to_string(),
            format!(
                "backup 20261206T053000Z was made by a newer schema than this image knows: mall_user has \
                 migrations [20270101000000, 20270202000000], mall_order has migrations [20270101000000] \
                 that image {IMAGE_VERSION} does not; restore with image 0.3.0 or newer"
            )
        );
        edit_manifest(&dir, |m| m["imageTag"] = json!(""));
        assert!(
            refusal(verify(&dir)).to_string().ends_with("restore with the image that made it or a newer one")
        );
    }

    #[tokio::test]
    async fn a_refused_backup_writes_no_plan_and_an_unreachable_server_is_no_refusal() {
        let root = tempfile::tempdir().unwrap();
        let plan = root.path().join("plan.txt");
        // Nothing listens there: the server is never reached.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let admin = format!("mysql://root:secret@127.0.0.1:{port}");

        let e =
            check(&root.path().join("20261206T053000Z"), &plan, &admin, Duration::ZERO).await.unwrap_err();
        assert!(matches!(e, RestoreError::Refused(Refusal::NoBackup { .. })), "{e:?}");
        assert!(!plan.exists());

        let dir = write_backup(root.path(), "20261206T053000Z", &every_service());
        let e = check(&dir, &plan, &admin, Duration::ZERO).await.unwrap_err();
        let RestoreError::Database { ref url, ref source } = e else { panic!("{e:?}") };
        assert!(database::is_unreachable(source), "{source}");
        assert!(!url.contains("secret"), "the password is redacted: {url}");
        assert!(!plan.exists(), "no plan without the emptiness check");
    }

    #[test]
    fn the_termination_message_is_cut_at_4096_bytes_and_only_where_kubernetes_made_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("termination-log");
        assert!(!write_termination_message_to(&missing, "refused: x"));
        assert!(!missing.exists(), "not created outside a pod");

        fs::write(&missing, "an earlier, longer message").unwrap();
        assert!(write_termination_message_to(&missing, "refused: short"));
        assert_eq!(fs::read_to_string(&missing).unwrap(), "refused: short");

        // 4095 ASCII bytes, then a two-byte character that would end past the limit.
        let long = format!("{}é and more", "x".repeat(4095));
        assert!(write_termination_message_to(&missing, &long));
        assert_eq!(fs::read_to_string(&missing).unwrap(), "x".repeat(4095));
        let exact = "y".repeat(5000);
        write_termination_message_to(&missing, &exact);
        assert_eq!(fs::read(&missing).unwrap().len(), TERMINATION_MESSAGE_MAX);
    }
}
