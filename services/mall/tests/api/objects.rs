//! `mall backup-push` and `mall backup-pull` against a real S3-compatible server: moto's, from PyPI
//! (`.ci/run` installs it into `$CARGO_TARGET_DIR/moto`). Each test starts its own on a free loopback
//! port and stops it at the end. The server is `MALL_TEST_S3_SERVER` (a command), else `moto_server`
//! on PATH, else `$CARGO_TARGET_DIR/moto/bin/moto_server`; without one the tests are skipped with a
//! note, and fail when `CI=true`.
//!
//! A push of a directory that is not a complete backup (no manifest, a dump missing or of another
//! size) is refused before anything is uploaded; a push cut short before its manifest is uploaded
//! (simulated by a bucket that fails that request) leaves a backup that is not complete.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::BoxStream;
use mall::objects::{
    self, ACCESS_KEY_ID_VAR, BUCKET_VAR, Bucket, BucketRefusal, BucketSettings, ENDPOINT_VAR, ObjectsError,
    PREFIX_VAR, REGION_VAR, Retention, SECRET_ACCESS_KEY_VAR,
};
use mall::restore::{self, MANIFEST, Refusal};
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::RngCore;

const SECRET: &str = "not-a-real-secret-8f3a";

/// A running S3-compatible server, killed (by its PID) when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    /// Its output, shown when it does not come up.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
}

/// The command that starts the server (program and arguments), if there is one.
fn server_command() -> Option<Vec<String>> {
    if let Some(command) = std::env::var("MALL_TEST_S3_SERVER").ok().filter(|c| !c.trim().is_empty()) {
        return Some(command.split_whitespace().map(str::to_owned).collect());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("moto_server")).collect::<Vec<_>>())
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map(Path::to_path_buf));
    let installed = target.map(|t| t.join("moto/bin/moto_server"));
    let found = on_path.into_iter().chain(installed).find(|p| p.is_file())?;
    Some(vec![found.display().to_string()])
}

impl S3Server {
    /// A new server with the bucket `mall-backups`, or `None` (skip) when there is none to start.
    async fn start() -> Option<S3Server> {
        let Some(command) = server_command() else {
            assert!(
                !ci(),
                "CI=true but no S3 server: set MALL_TEST_S3_SERVER or install moto[server] (.ci/run does); \
                 the bucket tests must not be skipped in CI"
            );
            eprintln!("note: no S3 server (MALL_TEST_S3_SERVER, moto_server); skipping the bucket test");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let output = fs::File::create(&log).unwrap();
        let child = Command::new(&command[0])
            .args(&command[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the S3 server {command:?}: {e}"));
        let mut server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}"), log, _dir: dir };
        server.create_bucket("mall-backups").await;
        Some(server)
    }

    /// Creates `bucket`, waiting up to 60 s for the server to answer.
    async fn create_bucket(&mut self, bucket: &str) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            match client.put(format!("{}/{bucket}", self.endpoint)).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => panic!("creating bucket {bucket}: {}", response.status()),
                Err(_) if started.elapsed() < Duration::from_secs(60) => {}
                Err(e) => panic!("the S3 server did not answer in 60 s ({e}): {}", self.output()),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the S3 server exited ({status}): {}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `MALL_S3_*` variables of bucket `mall-backups` under `prefix`.
    fn env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            (ENDPOINT_VAR, self.endpoint.clone()),
            (BUCKET_VAR, "mall-backups".to_owned()),
            (ACCESS_KEY_ID_VAR, "testing".to_owned()),
            (SECRET_ACCESS_KEY_VAR, SECRET.to_owned()),
            (REGION_VAR, "us-east-1".to_owned()),
            (PREFIX_VAR, prefix.to_owned()),
        ]
    }

    fn settings(&self, prefix: &str) -> BucketSettings {
        let env = self.env(prefix);
        BucketSettings::from_lookup(|var| env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.clone()))
            .unwrap()
    }

    /// The backups under `prefix`, as `mall` reaches them.
    fn bucket(&self, prefix: &str) -> Bucket {
        Bucket::open(&self.settings(prefix)).unwrap()
    }

    /// The bucket itself (every key, no prefix), for looking behind `mall`'s back.
    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name("mall-backups")
                .with_region("us-east-1")
                .with_access_key_id("testing")
                .with_secret_access_key(SECRET)
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Writes backup `<root>/<name>/` as the backup script does: each dump and a manifest of format 1
/// (with no migrations, which every image knows).
fn write_backup(root: &Path, name: &str, dumps: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = write_dumps(root, name, dumps);
    let databases: Vec<serde_json::Value> = dumps
        .iter()
        .map(|(database, content)| {
            serde_json::json!({
                "name": database,
                "file": format!("{database}.sql.gz"),
                "bytes": content.len(),
                "sha256": restore::sha256_hex(content.as_slice()).unwrap(),
                "migrations": [],
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "formatVersion": 1, "name": name, "imageTag": "0.1.0", "databases": databases,
    });
    fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    dir
}

/// The dumps of a backup, without a manifest.
fn write_dumps(root: &Path, name: &str, dumps: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for (database, content) in dumps {
        fs::write(dir.join(format!("{database}.sql.gz")), content).unwrap();
    }
    dir
}

fn small_backup(root: &Path, name: &str) -> PathBuf {
    write_backup(root, name, &[("mall_user", random_bytes(100)), ("mall_order", random_bytes(200))])
}

/// Every key in `store`, sorted.
async fn keys_in(store: &(impl ObjectStore + ?Sized)) -> Vec<String> {
    let listed = futures::TryStreamExt::try_collect::<Vec<ObjectMeta>>(store.list(None)).await.unwrap();
    let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    keys
}

fn keep(keep: u32) -> Retention {
    Retention { keep, max_age_days: None }
}

#[tokio::test]
async fn push_then_pull_round_trips_every_byte() {
    let Some(s3) = S3Server::start().await else { return };
    let bucket = s3.bucket("");
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let name = "20261206T053000Z";
    // Over 5 MiB: uploaded in two parts.
    let large = random_bytes(6 * 1024 * 1024 + 12_345);
    let dumps = [
        ("mall_user", random_bytes(1000)),
        ("mall_product", random_bytes(300 * 1024)),
        ("mall_order", large.clone()),
    ];
    let dir = write_backup(&backups, name, &dumps);
    // A file the manifest does not list is pushed too (every file is), and not pulled.
    fs::write(dir.join("notes.txt"), "not a dump").unwrap();

    let pushed = bucket.push(&backups, name, &Retention::default(), SystemTime::now()).await.unwrap();
    let total: usize = dumps.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(
        pushed.summary_line(),
        format!(r#"{{"backup":"{name}","bytes":{total},"databases":3,"pruned":0}}"#)
    );

    let store = s3.store();
    let keys = keys_in(&store).await;
    let expected: Vec<String> =
        ["mall_order.sql.gz", "mall_product.sql.gz", "mall_user.sql.gz", "manifest.json", "notes.txt"]
            .iter()
            .map(|f| format!("{name}/{f}"))
            .collect();
    assert_eq!(keys, expected);
    // S3 gives an object uploaded in parts the ETag `<md5 of the parts' md5s>-<parts>`.
    let large_meta = store.head(&Key::from(format!("{name}/mall_order.sql.gz"))).await.unwrap();
    let e_tag = large_meta.e_tag.unwrap_or_default();
    assert!(e_tag.trim_matches('"').ends_with("-2"), "uploaded in 2 parts: {e_tag}");
    assert_eq!(large_meta.size, large.len() as u64);

    let restore_dir = root.path().join("restore");
    let pulled = bucket.pull(name, &restore_dir).await.unwrap();
    assert_eq!(pulled.path, restore_dir.join(name));
    assert_eq!(pulled.summary_line(), format!(r#"{{"pulled":"{name}","bytes":{total},"databases":3}}"#));
    for (database, content) in &dumps {
        let file = fs::read(pulled.path.join(format!("{database}.sql.gz"))).unwrap();
        assert!(file == *content, "{database}: {} bytes pulled, {} pushed", file.len(), content.len());
    }
    assert_eq!(fs::read(pulled.path.join(MANIFEST)).unwrap(), fs::read(dir.join(MANIFEST)).unwrap());
    let mut pulled_files: Vec<String> =
        fs::read_dir(&pulled.path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pulled_files.sort();
    assert_eq!(
        pulled_files,
        ["mall_order.sql.gz", "mall_product.sql.gz", "mall_user.sql.gz", "manifest.json"]
    );
    assert!(!restore_dir.join(format!("{name}.partial")).exists());
    // What restore-check checks of a backup: every dump's size and sha256 as the manifest records.
    let verified = restore::verify(&pulled.path).unwrap();
    assert_eq!(verified.name, name);

    // A pull never replaces a backup that is there.
    let again = bucket.pull(name, &restore_dir).await.unwrap_err();
    assert!(
        matches!(again, ObjectsError::Exists { ref path } if *path == restore_dir.join(name)),
        "{again:?}"
    );
}

/// A bucket that records the uploads made through it and fails the upload of a chosen file.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    uploads: Mutex<Vec<String>>,
    fail: Option<&'static str>,
}

impl Recording {
    fn new(inner: Arc<dyn ObjectStore>, fail: Option<&'static str>) -> Arc<Recording> {
        Arc::new(Recording { inner, uploads: Mutex::new(Vec::new()), fail })
    }

    /// The files uploaded, in order (a multipart upload where it began).
    fn uploads(&self) -> Vec<String> {
        self.uploads.lock().unwrap().clone()
    }

    fn record(&self, location: &Key) -> object_store::Result<()> {
        let file = location.filename().unwrap_or_default().to_owned();
        if self.fail == Some(file.as_str()) {
            return Err(object_store::Error::Generic {
                store: "test",
                source: "the push is cut here".into(),
            });
        }
        self.uploads.lock().unwrap().push(file);
        Ok(())
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.record(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.record(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Key, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Key>>,
    ) -> BoxStream<'static, object_store::Result<Key>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Key, to: &Key, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn the_manifest_is_uploaded_last_and_a_push_cut_before_it_leaves_no_complete_backup() {
    let Some(s3) = S3Server::start().await else { return };
    let root = tempfile::tempdir().unwrap();
    let name = "20261206T053000Z";
    write_backup(
        root.path(),
        name,
        &[("mall_user", random_bytes(100)), ("mall_order", random_bytes(5 * 1024 * 1024 + 1))],
    );
    fs::write(root.path().join(name).join("zz-last-by-name.txt"), "x").unwrap();

    // Cut short: every dump is in the bucket, the manifest is not.
    let cut = Recording::new(s3.store(), Some(MANIFEST));
    let bucket = Bucket::with_store(cut.clone(), "mall-backups", "").unwrap();
    let e = bucket.push(root.path(), name, &Retention::default(), SystemTime::now()).await.unwrap_err();
    assert!(matches!(e, ObjectsError::Bucket { .. }), "{e:?}");
    assert_eq!(cut.uploads(), ["mall_order.sql.gz", "mall_user.sql.gz", "zz-last-by-name.txt"]);
    let stored = bucket.backups().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].name.as_str(), stored[0].complete, stored[0].objects.len()), (name, false, 3));
    assert_eq!(bucket.complete_backups().await.unwrap(), Vec::<String>::new());
    let restore_dir = root.path().join("restore");
    let e = bucket.pull(name, &restore_dir).await.unwrap_err();
    let ObjectsError::Refused(BucketRefusal::NoBackup { ref there, .. }) = e else { panic!("{e:?}") };
    assert!(there.is_empty(), "an incomplete backup is not offered: {there:?}");
    assert!(!restore_dir.join(name).exists() && !restore_dir.join(format!("{name}.partial")).exists());

    // Pushed again in full: the manifest goes after every other file, whatever their names.
    let recording = Recording::new(s3.store(), None);
    let bucket = Bucket::with_store(recording.clone(), "mall-backups", "").unwrap();
    bucket.push(root.path(), name, &Retention::default(), SystemTime::now()).await.unwrap();
    assert_eq!(
        recording.uploads(),
        ["mall_order.sql.gz", "mall_user.sql.gz", "zz-last-by-name.txt", MANIFEST]
    );
    assert_eq!(bucket.complete_backups().await.unwrap(), [name]);
    bucket.pull(name, &restore_dir).await.unwrap();
    restore::verify(&restore_dir.join(name)).unwrap();
}

#[tokio::test]
async fn a_directory_that_is_not_a_complete_backup_is_refused_before_anything_is_uploaded() {
    let Some(s3) = S3Server::start().await else { return };
    let bucket = s3.bucket("");
    let root = tempfile::tempdir().unwrap();
    let push = |name: &'static str| {
        let (bucket, root) = (bucket.clone(), root.path().to_path_buf());
        async move { bucket.push(&root, name, &Retention::default(), SystemTime::now()).await }
    };

    // Dumps without a manifest: what a backup script that died midway leaves.
    write_dumps(root.path(), "20261201T000000Z", &[("mall_user", random_bytes(10))]);
    let e = push("20261201T000000Z").await.unwrap_err();
    let ObjectsError::Refused(BucketRefusal::NotComplete { ref reason, .. }) = e else { panic!("{e:?}") };
    assert_eq!(reason, "it has no manifest.json");
    assert!(
        e.to_string().ends_with("20261201T000000Z is not a complete backup: it has no manifest.json"),
        "{e}"
    );

    // No such directory; a `.partial` one; a name that is no backup's.
    let e = push("20261202T000000Z").await.unwrap_err();
    assert!(e.to_string().ends_with("is not a complete backup: there is no such directory"), "{e}");
    small_backup(root.path(), "20261203T000000Z.partial");
    let e = push("20261203T000000Z.partial").await.unwrap_err();
    assert!(matches!(e, ObjectsError::Refused(BucketRefusal::NotComplete { .. })), "{e:?}");
    small_backup(root.path(), "latest");
    let e = push("latest").await.unwrap_err();
    assert!(matches!(e, ObjectsError::Refused(BucketRefusal::NotComplete { .. })), "{e:?}");

    // A dump the manifest lists is missing, or not of its size.
    let dir = small_backup(root.path(), "20261204T000000Z");
    fs::remove_file(dir.join("mall_order.sql.gz")).unwrap();
    let e = push("20261204T000000Z").await.unwrap_err();
    assert!(matches!(e, ObjectsError::Refused(BucketRefusal::Backup(Refusal::MissingFile { .. }))), "{e:?}");
    let dir = small_backup(root.path(), "20261205T000000Z");
    fs::write(dir.join("mall_order.sql.gz"), "truncated").unwrap();
    let e = push("20261205T000000Z").await.unwrap_err();
    assert!(matches!(e, ObjectsError::Refused(BucketRefusal::Backup(Refusal::WrongSize { .. }))), "{e:?}");

    let listed = futures::TryStreamExt::try_collect::<Vec<ObjectMeta>>(s3.store().list(None)).await.unwrap();
    assert!(listed.is_empty(), "nothing uploaded: {listed:?}");
}

#[tokio::test]
async fn pruning_keeps_the_newest_complete_backups_and_drops_the_too_old() {
    let Some(s3) = S3Server::start().await else { return };
    // Under a prefix (given without its final '/'): what is outside it is no concern of this bucket's.
    let bucket = s3.bucket("mall/prod");
    let store = s3.store();
    let root = tempfile::tempdir().unwrap();
    let put = |key: &str| {
        let (store, key) = (store.clone(), Key::from(key));
        async move { store.put(&key, PutPayload::from_static(b"x")).await.unwrap() }
    };
    // Not backups of this prefix, or not backups at all: never pruned.
    put("20200101T000000Z/manifest.json").await;
    put("mall/prod/notes/readme.txt").await;
    put("mall/prod/20200109T000000Z.partial/mall_user.sql.gz").await;
    // An incomplete backup of an hour ago: maybe a push still running; kept for a day.
    put("mall/prod/20200101T120000Z/mall_user.sql.gz").await;

    let names: Vec<String> = (1..=5).map(|day| format!("2020010{day}T000000Z")).collect();
    let mut pruned = Vec::new();
    for name in &names {
        small_backup(root.path(), name);
        let pushed = bucket.push(root.path(), name, &keep(3), SystemTime::now()).await.unwrap();
        pruned.extend(pushed.pruned);
        assert!(pushed.removed_incomplete.is_empty());
    }
    assert_eq!(pruned, ["20200101T000000Z", "20200102T000000Z"]);
    assert_eq!(
        bucket.complete_backups().await.unwrap(),
        ["20200105T000000Z", "20200104T000000Z", "20200103T000000Z"]
    );
    let incomplete: Vec<String> =
        bucket.backups().await.unwrap().into_iter().filter(|b| !b.complete).map(|b| b.name).collect();
    assert_eq!(incomplete, ["20200101T120000Z"]);

    // Max age: a backup of now, keeping 10 but none older than 30 days.
    let now = SystemTime::now();
    let current = objects::backup_name_at(now);
    small_backup(root.path(), &current);
    let retention = Retention { keep: 10, max_age_days: Some(30) };
    let pushed = bucket.push(root.path(), &current, &retention, now).await.unwrap();
    assert_eq!(pushed.pruned, ["20200105T000000Z", "20200104T000000Z", "20200103T000000Z"]);
    assert!(pushed.summary_line().ends_with(r#""databases":2,"pruned":3}"#), "{}", pushed.summary_line());
    assert_eq!(bucket.complete_backups().await.unwrap(), [current.as_str()]);

    // The backup just pushed is never pruned, however old its name.
    let pushed = bucket.push(root.path(), "20200101T000000Z", &retention, now).await.unwrap();
    assert!(pushed.pruned.is_empty(), "{:?}", pushed.pruned);
    assert_eq!(bucket.complete_backups().await.unwrap(), [current.clone(), "20200101T000000Z".to_owned()]);
    // Keeping one: the newest goes, not the one just pushed.
    let pushed = bucket.push(root.path(), "20200101T000000Z", &keep(1), now).await.unwrap();
    assert_eq!(pushed.pruned, [current.as_str()]);

    let keys = keys_in(&store).await;
    assert_eq!(
        keys,
        [
            "20200101T000000Z/manifest.json",
            "mall/prod/20200101T000000Z/mall_order.sql.gz",
            "mall/prod/20200101T000000Z/mall_user.sql.gz",
            "mall/prod/20200101T000000Z/manifest.json",
            "mall/prod/20200101T120000Z/mall_user.sql.gz",
            "mall/prod/20200109T000000Z.partial/mall_user.sql.gz",
            "mall/prod/notes/readme.txt",
        ]
    );
}

/// Runs the `mall` binary with no bucket settings but `env`'s; the secret shows in none of its output.
fn mall(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mall"));
    command.args(args).stdin(Stdio::null());
    for var in [ENDPOINT_VAR, BUCKET_VAR, ACCESS_KEY_ID_VAR, SECRET_ACCESS_KEY_VAR, REGION_VAR, PREFIX_VAR] {
        command.env_remove(var);
    }
    let output = command.envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!all.contains(SECRET), "the secret is never shown: {all}");
    output
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().last().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_binary_pushes_pulls_and_refuses_a_missing_backup_with_exit_2() {
    let Some(s3) = S3Server::start().await else { return };
    let env = s3.env("");
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let dir = backups.to_str().unwrap();
    for name in ["20200101T000000Z", "20200102T000000Z"] {
        small_backup(&backups, name);
        let output = mall(&["backup-push", "--dir", dir, "--name", name, "--keep", "5"], &env);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            last_line(&output.stdout),
            format!(r#"{{"backup":"{name}","bytes":300,"databases":2,"pruned":0}}"#)
        );
    }
    // Not complete: refused, exit 2.
    write_dumps(&backups, "20200103T000000Z", &[("mall_user", random_bytes(10))]);
    let output = mall(&["backup-push", "--dir", dir, "--name", "20200103T000000Z"], &env);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("refused: {}/20200103T000000Z is not a complete backup: it has no manifest.json\n", dir)
    );

    let restore_dir = root.path().join("restore");
    let to = restore_dir.to_str().unwrap();
    let output = mall(&["backup-pull", "--name", "20200103T000000Z", "--dir", to], &env);
    assert_eq!(output.status.code(), Some(i32::from(restore::EXIT_REFUSED)), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "refused: no backup 20200103T000000Z in bucket mall-backups (there: 20200102T000000Z, 20200101T000000Z)\n"
    );
    assert!(!restore_dir.join("20200103T000000Z").exists());

    let output = mall(&["backup-pull", "--name", "20200102T000000Z", "--dir", to], &env);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(last_line(&output.stdout), r#"{"pulled":"20200102T000000Z","bytes":300,"databases":2}"#);
    restore::verify(&restore_dir.join("20200102T000000Z")).unwrap();
}

#[test]
fn the_binary_names_the_missing_bucket_settings_and_never_shows_the_secret() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_str().unwrap();
    let output = mall(&["backup-pull", "--name", "20200101T000000Z", "--dir", dir], &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "MALL_S3_ENDPOINT, MALL_S3_BUCKET, MALL_S3_ACCESS_KEY_ID, MALL_S3_SECRET_ACCESS_KEY are not set"
        ),
        "{stderr}"
    );

    let env = vec![
        (ENDPOINT_VAR, "http://127.0.0.1:9".to_owned()),
        (ACCESS_KEY_ID_VAR, "testing".to_owned()),
        (SECRET_ACCESS_KEY_VAR, SECRET.to_owned()),
    ];
    small_backup(root.path(), "20200101T000000Z");
    let output = mall(&["backup-push", "--dir", dir, "--name", "20200101T000000Z"], &env);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MALL_S3_BUCKET is not set: "), "{stderr}");
    assert!(stderr.contains("pushing backup 20200101T000000Z"), "{stderr}");
}
