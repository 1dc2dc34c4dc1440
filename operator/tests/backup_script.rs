//! The backup script the CronJob's pods run (`mall_operator::builders::BACKUP_SCRIPT`) and the restore
//! Job's load step (`RESTORE_SCRIPT`), run here with `bash -c` exactly as the pods run them, against the
//! real test MariaDB (`MALL_TEST_DATABASE_URL`) and a temp dir in place of the claim. Skipped with a note without the server or the client programs, except
//! in CI (`CI=true`), where either missing fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mall_operator::builders::{BACKUP_SCRIPT, RESTORE_SCRIPT};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where the server is, from a `mysql://user[:password]@host[:port][/db]` URL.
struct Server {
    host: String,
    port: String,
    user: String,
    password: String,
}

fn server(url: &str) -> Server {
    let rest =
        url.strip_prefix("mysql://").or_else(|| url.strip_prefix("mariadb://")).expect("a mysql:// URL");
    let (credentials, address) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let address = address.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
    Server { host: host.into(), port: port.into(), user: user.into(), password: password.into() }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
}

/// The first of `names` found in PATH.
fn program(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| Command::new(n).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(|n| (*n).to_owned())
}

struct Setup {
    server: Server,
    mysql: String,
    mysqldump: String,
}

fn setup() -> Option<Setup> {
    let url = mall_testkit::database_url()?;
    let (Some(mysql), Some(mysqldump)) =
        (program(&["mariadb", "mysql"]), program(&["mariadb-dump", "mysqldump"]))
    else {
        assert!(!ci(), "CI=true but mysql/mysqldump (or mariadb/mariadb-dump) are not installed");
        eprintln!("note: no mysql/mysqldump client; skipping the backup script test");
        return None;
    };
    let setup = Setup { server: server(&url), mysql, mysqldump };
    match setup.sql("SELECT 1") {
        Ok(_) => Some(setup),
        Err(e) if !ci() => {
            eprintln!(
                "note: the test server at {url} does not answer ({e}); skipping the backup script test"
            );
            None
        }
        Err(e) => panic!("CI=true but the test server at {url} does not answer: {e}"),
    }
}

impl Setup {
    fn sql(&self, statements: &str) -> Result<String, String> {
        let mut command = Command::new(&self.mysql);
        command
            .args(["--batch", "--skip-column-names", "-h", &self.server.host, "-P", &self.server.port])
            .args(["-u", &self.server.user, "-e", statements]);
        if !self.server.password.is_empty() {
            command.env("MYSQL_PWD", &self.server.password);
        }
        let out = command.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs the script as the pod does, on `databases`, into `dir`.
    fn backup(&self, dir: &Path, databases: &[&str], count: u32, max_age_days: Option<u32>) -> Output {
        let mut command = Command::new("bash");
        command
            .args(["-c", BACKUP_SCRIPT, "backup"])
            .env("BACKUP_DATABASES", databases.join(" "))
            .env("BACKUP_HOST", &self.server.host)
            .env("BACKUP_PORT", &self.server.port)
            .env("BACKUP_USER", &self.server.user)
            .env("BACKUP_PASSWORD", &self.server.password)
            .env("BACKUP_DIR", dir)
            .env("BACKUP_RETENTION_COUNT", count.to_string())
            .env("BACKUP_IMAGE_TAG", "0.1.0-test")
            .env("BACKUP_MYSQL", &self.mysql)
            .env("BACKUP_MYSQLDUMP", &self.mysqldump)
            .env_remove("BACKUP_MAX_AGE_DAYS");
        if let Some(days) = max_age_days {
            command.env("BACKUP_MAX_AGE_DAYS", days.to_string());
        }
        command.output().expect("bash runs")
    }

    /// Runs the restore Job's load step as its pod does: the backup `dir`, the `plan` the check wrote.
    fn restore(&self, dir: &Path, plan: &Path) -> Output {
        Command::new("bash")
            .args(["-c", RESTORE_SCRIPT, "restore"])
            .env("RESTORE_DIR", dir)
            .env("RESTORE_PLAN", plan)
            .env("BACKUP_HOST", &self.server.host)
            .env("BACKUP_PORT", &self.server.port)
            .env("BACKUP_USER", &self.server.user)
            .env("BACKUP_PASSWORD", &self.server.password)
            .env("BACKUP_MYSQL", &self.mysql)
            .output()
            .expect("bash runs")
    }

    fn exists(&self, db: &str) -> bool {
        let found = self
            .sql(&format!("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{db}'"))
            .unwrap();
        found.trim() == "1"
    }
}

/// Complete backups in `dir` (a directory named like `20261206T053000Z`), oldest first.
fn complete(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 16 && n.as_bytes()[8] == b'T' && n.ends_with('Z'))
        .collect();
    names.sort();
    names
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn last_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: the last line {line:?} is JSON"))
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "the script failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn gunzip(path: &Path) -> String {
    let out = Command::new("gzip").arg("-dc").arg(path).output().expect("gzip runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn touch_days_ago(path: &PathBuf, days: u32) {
    let status = Command::new("touch")
        .arg("-d")
        .arg(format!("{days} days ago"))
        .arg(path)
        .status()
        .expect("touch runs");
    assert!(status.success());
}

#[tokio::test]
async fn the_backup_script_dumps_verifies_records_and_prunes() {
    let Some(setup) = setup() else { return };
    let prefix = mall_testkit::unique_name("mall_t");
    let (first, second) = (format!("{prefix}_auth"), format!("{prefix}_user"));
    for (db, rows) in
        [(&first, ["apple-of-auth", "pear-of-auth"]), (&second, ["plum-of-user", "fig-of-user"])]
    {
        setup
            .sql(&format!(
                "CREATE DATABASE `{db}`; USE `{db}`;
                 CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                   installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                   checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
                 INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES
                   (20250101000000, 'init', TRUE, x'00', 1), (20250301000000, 'more', TRUE, x'01', 1),
                   (20250401000000, 'broken', FALSE, x'02', 1);
                 CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, raw BLOB);
                 INSERT INTO items VALUES (1, '{}', x'DEADBEEF'), (2, '{}', NULL);",
                rows[0], rows[1]
            ))
            .expect("test databases are made");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let result = std::panic::AssertUnwindSafe(async {
        // One backup: the manifest says what is there, and it is.
        let out = ok(setup.backup(root, &[&first, &second], 2, None));
        let line = last_line(&out);
        let name = line["backup"].as_str().unwrap().to_owned();
        assert_eq!(complete(root), std::slice::from_ref(&name));
        assert_eq!(entries(root), BTreeSet::from([name.clone()]), "no .partial left");
        assert_eq!(line["databases"], 2);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(root.join(&name).join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["formatVersion"], 1);
        assert_eq!(manifest["name"], name.as_str());
        assert_eq!(manifest["imageTag"], "0.1.0-test");
        assert!(manifest["started"].as_str().unwrap() <= manifest["finished"].as_str().unwrap());
        let databases = manifest["databases"].as_array().unwrap();
        assert_eq!(databases.len(), 2);
        let mut total = 0;
        for (entry, (db, rows)) in databases
            .iter()
            .zip([(&first, ["apple-of-auth", "pear-of-auth"]), (&second, ["plum-of-user", "fig-of-user"])])
        {
            assert_eq!(entry["name"], db.as_str());
            let file = root.join(&name).join(entry["file"].as_str().unwrap());
            assert_eq!(entry["file"], format!("{db}.sql.gz"));
            let bytes = std::fs::read(&file).unwrap();
            assert_eq!(entry["bytes"], bytes.len(), "{db}");
            let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(entry["sha256"], sha.as_str(), "{db}");
            assert_eq!(
                entry["migrations"],
                serde_json::json!([20250101000000_i64, 20250301000000_i64]),
                "applied migrations only"
            );
            let sql = gunzip(&file);
            for row in rows {
                assert!(sql.contains(row), "{db}'s dump has {row}");
            }
            assert!(
                sql.contains("CREATE DATABASE") && sql.contains(&format!("USE `{db}`")),
                "{db}: --databases"
            );
            assert!(sql.contains("0xDEADBEEF"), "--hex-blob");
            total += bytes.len();
        }
        assert_eq!(line["bytes"], total);
        eprintln!("a backup of two small databases: {total} bytes ({})", line);

        // Two more: the newest two are kept. A `.partial` of a dead run older than a day goes; a fresh
        // one (a running job's) stays.
        let stale = root.join("20250101T000000Z.partial");
        let fresh = root.join("20990101T000000Z.partial");
        std::fs::create_dir(&stale).unwrap();
        std::fs::create_dir(&fresh).unwrap();
        touch_days_ago(&stale, 2);
        let mut names = vec![name];
        for _ in 0..2 {
            let out = ok(setup.backup(root, &[&first, &second], 2, None));
            names.push(last_line(&out)["backup"].as_str().unwrap().to_owned());
        }
        assert_eq!(BTreeSet::from_iter(names.iter().cloned()).len(), 3, "three distinct names: {names:?}");
        assert_eq!(complete(root), names[1..], "the newest two are kept");
        assert!(!stale.exists(), "a stale .partial is removed");
        assert!(fresh.exists(), "a fresh .partial is left alone");
        std::fs::remove_dir(&fresh).unwrap();

        // maxAgeDays: an old complete backup goes even within the count.
        let old = root.join("20000101T000000Z");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("manifest.json"), "{}").unwrap();
        let out = ok(setup.backup(root, &[&first], 10, Some(30)));
        let newest = last_line(&out)["backup"].as_str().unwrap().to_owned();
        assert!(!old.exists(), "older than maxAgeDays");
        assert_eq!(complete(root), [names[1].clone(), names[2].clone(), newest.clone()]);

        // A dump that fails (no such database) fails the run and leaves nothing that looks like a backup.
        let before = entries(root);
        let missing = format!("{prefix}_missing");
        let out = setup.backup(root, &[&first, &missing], 2, None);
        assert!(!out.status.success(), "a failed dump fails the job");
        assert_eq!(entries(root), before, "no new backup, no .partial, no manifest");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&missing), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("\"backup\""), "no success line");

        // Nothing to dump into: refused before anything is made.
        let out = setup.backup(&root.join("nowhere"), &[&first], 2, None);
        assert!(!out.status.success());
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    mall_testkit::drop_databases(&mall_testkit::database_url().unwrap(), &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The plan `mall restore-check` writes for the backup in `dir`: `<database> <file>` per line, in the
/// manifest's order.
fn plan_of(dir: &Path, at: &Path) {
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let lines: Vec<String> = manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["name"].as_str().unwrap(), d["file"].as_str().unwrap()))
        .collect();
    std::fs::write(at, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn the_restore_script_loads_a_backup_and_undoes_a_failed_load() {
    let Some(setup) = setup() else { return };
    let prefix = mall_testkit::unique_name("mall_t");
    let (first, second) = (format!("{prefix}_order"), format!("{prefix}_product"));
    for db in [&first, &second] {
        setup
            .sql(&format!(
                "CREATE DATABASE `{db}`; USE `{db}`;
                 CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, stock BIGINT, raw BLOB);
                 INSERT INTO items VALUES (1, 'lamp in {db}', 5, x'00FF'), (2, 'it''s \\\\ \\n odd', 7, NULL);"
            ))
            .expect("test databases are made");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let result = std::panic::AssertUnwindSafe(async {
        let before: Vec<String> = [&first, &second]
            .iter()
            .map(|db| {
                setup.sql(&format!("SELECT id, name, stock, HEX(raw) FROM `{db}`.items ORDER BY id")).unwrap()
            })
            .collect();
        let out = ok(setup.backup(root, &[&first, &second], 2, None));
        let name = last_line(&out)["backup"].as_str().unwrap().to_owned();
        let backup = root.join(&name);
        let plan = root.join("plan");

        // No plan, no restore: the check must have run.
        setup.sql(&format!("DROP DATABASE `{first}`; DROP DATABASE `{second}`")).unwrap();
        let out = setup.restore(&backup, &plan);
        assert!(!out.status.success(), "no plan");
        assert!(String::from_utf8_lossy(&out.stderr).contains("restore-check must run first"));
        assert!(!setup.exists(&first));

        // The stack's data is gone; the backup brings every row back, byte for byte.
        plan_of(&backup, &plan);
        let out = ok(setup.restore(&backup, &plan));
        let line = last_line(&out);
        assert_eq!(line["restored"], name.as_str());
        assert_eq!(line["databases"], 2);
        assert!(line["bytes"].as_u64().unwrap() > 0);
        let after: Vec<String> = [&first, &second]
            .iter()
            .map(|db| {
                setup.sql(&format!("SELECT id, name, stock, HEX(raw) FROM `{db}`.items ORDER BY id")).unwrap()
            })
            .collect();
        assert_eq!(after, before);

        // A dump that breaks halfway (the second is not gzip): the first, loaded already, is dropped
        // again, so nothing half-written is left and the restore can be tried once more.
        setup.sql(&format!("DROP DATABASE `{first}`; DROP DATABASE `{second}`")).unwrap();
        std::fs::write(backup.join(format!("{second}.sql.gz")), b"not gzip at all").unwrap();
        let out = setup.restore(&backup, &plan);
        assert!(!out.status.success(), "a broken dump fails the load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("loading {second}")), "{stderr}");
        assert!(!setup.exists(&first), "the database loaded before the failure is dropped again");
        assert!(!setup.exists(&second));

        // A plan line that tries to leave the backup's directory is refused.
        std::fs::write(&plan, format!("{first} ../../etc/passwd\n")).unwrap();
        let out = setup.restore(&backup, &plan);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected file name"));
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    mall_testkit::drop_databases(&mall_testkit::database_url().unwrap(), &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
