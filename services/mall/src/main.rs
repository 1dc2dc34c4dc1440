//! `mall`: run the whole mall (`up`), one service (`serve`), one service's migrations (`migrate`),
//! create one service's MySQL database and user (`provision`), check a backup before a restore
//! (`restore-check`), or keep backups in an S3-compatible bucket (`backup-push`, `backup-pull`).

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use mall::config::{Cli, Command};
use mall::objects::{Bucket, BucketSettings, ObjectsError, Retention};
use mall::restore::{self, RestoreError};
use mall_user::AdminSeed;

/// jemalloc, because it gives memory back. Measured on `mall up` (debug build, 2 CPUs) through the burst
/// of `tests/api/process.rs` (25 registrations one at a time, then 200 concurrent logins and 20
/// registrations, two hashing threads): peak RSS, and RSS 15 s after the burst.
///
/// - glibc malloc: 403 / 403 MiB. It keeps what argon2 frees (19 MiB a hash): RSS grew by about that
///   much with each of the first registrations, even one at a time on two threads, and never came back.
///   `MALLOC_ARENA_MAX=2` made it worse (683 / 683 MiB, measured with hashing on tokio's blocking
///   threads, where plain glibc gave 440 / 441 MiB).
/// - mimalloc: 114 / 75 MiB (145 MiB with hashing on tokio's blocking threads).
/// - jemalloc: 87 / 50 MiB (86 MiB with hashing on tokio's blocking threads): the lowest peak, and
///   what the burst used goes back to the system.
///
/// Before hashing was bounded the same burst took glibc to 4279 MiB (3898 MiB 15 s later), and
/// jemalloc to 1131 MiB (72 MiB later): the bound keeps the peak down, the allocator gives it back.
/// The operator keeps glibc: it makes no large short-lived allocations.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    mall_runtime::init_tracing();
    let cli = Cli::parse();
    let result = run(cli).await;
    // Spans still buffered for the OTLP collector go before the process does.
    mall_runtime::flush_tracing();
    result
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => {
            let options = mall::StartOptions {
                gateway: mall::gateway_config(&args.shared),
                gateway_listen: args.gateway_listen.clone(),
                demo: !args.no_demo,
            };
            let mall = mall::start(&args.shared, options).await?;
            println!();
            let url = mall.gateway_url();
            println!("  Mall is up: the shop at {url}/   (admin: {url}/shop/admin, API docs: {url}/docs)");
            for s in &mall.services {
                println!("    {:<9} gRPC on {}", s.name, s.addr);
            }
            match &mall.admin {
                AdminSeed::Created { password, .. } => {
                    println!("  Admin account created: {} / {}", mall.admin_email, password);
                    println!("  (shown once; set MALL_ADMIN_PASSWORD to choose it)");
                }
                AdminSeed::Existing { .. } => println!("  Admin account: {}", mall.admin_email),
            }
            match &args.shared.database_url {
                Some(_) => println!("  Storage: MALL_DATABASE_URL, cache: {}", mall.cache.kind()),
                None => println!(
                    "  Storage: SQLite in {}, cache: {}",
                    args.shared.data_dir.display(),
                    mall.cache.kind()
                ),
            }
            println!("  Ctrl-C stops it.");
            println!();
            mall.run_until_signal().await?
        }
        Command::Serve { service, shared, listen, gateway_listen, identity } => {
            mall::serve(service, &shared, &listen, &gateway_listen, &identity).await?
        }
        Command::Migrate { service, shared } => mall::migrate(service, &shared).await?,
        Command::Provision { service, shared, admin_url } => {
            mall::provision(service, &shared, &admin_url).await?
        }
        Command::RestoreCheck { backup, plan, admin_url } => {
            return restore_check(&backup, &plan, &admin_url).await;
        }
        Command::BackupPush { dir, name, keep, max_age_days } => {
            let retention = Retention { keep, max_age_days };
            let name = name.map_or_else(|| mall::objects::only_backup(&dir), Ok);
            let what = format!("pushing backup {}", name.as_deref().unwrap_or("?"));
            let pushed = async {
                let name = name?;
                let bucket = Bucket::open(&BucketSettings::from_env()?)?;
                bucket.push(&dir, &name, &retention, SystemTime::now()).await
            };
            return report(pushed.await.map(|p| p.summary_line()), || what);
        }
        Command::BackupPull { name, dir } => {
            let pulled = async { Bucket::open(&BucketSettings::from_env()?)?.pull(&name, &dir).await };
            return report(pulled.await.map(|p| p.summary_line()), || format!("pulling backup {name}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mall restore-check`: exit 0 with the plan written and the summary line on stdout; 2
/// ([`restore::EXIT_REFUSED`]) when the backup or the target database is refused; 1 on any other
/// failure (an unreachable database, an unreadable file). See [`end`].
async fn restore_check(backup: &Path, plan: &Path, admin_url: &str) -> anyhow::Result<ExitCode> {
    end(match restore::check(backup, plan, admin_url, mall::database::PATIENCE).await {
        Ok(checked) => Ending::Done(checked.summary_line()),
        Err(RestoreError::Refused(refusal)) => Ending::Refused(refusal.to_string()),
        Err(e) => {
            Ending::Failed(anyhow::Error::new(e).context(format!("checking backup {}", backup.display())))
        }
    })
}

/// How `mall backup-push` and `mall backup-pull` end, as `mall restore-check` does (see [`end`]).
fn report(
    outcome: Result<String, ObjectsError>,
    context: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    end(match outcome {
        Ok(line) => Ending::Done(line),
        Err(ObjectsError::Refused(refusal)) => Ending::Refused(refusal.to_string()),
        Err(e) => Ending::Failed(anyhow::Error::new(e).context(context())),
    })
}

/// How a backup or restore step ended.
enum Ending {
    /// The summary line.
    Done(String),
    /// Why the backup or the database is not fit.
    Refused(String),
    Failed(anyhow::Error),
}

/// Exit 0 with the summary line on stdout; 2 ([`restore::EXIT_REFUSED`]) with `refused: …` on stderr;
/// 1 on any other failure. The line that is the outcome is also the container's termination message,
/// which the operator quotes in the stack's status.
fn end(ending: Ending) -> anyhow::Result<ExitCode> {
    match ending {
        Ending::Done(line) => {
            println!("{line}");
            restore::write_termination_message(&line);
            Ok(ExitCode::SUCCESS)
        }
        Ending::Refused(why) => {
            let line = format!("refused: {why}");
            eprintln!("{line}");
            restore::write_termination_message(&line);
            Ok(ExitCode::from(restore::EXIT_REFUSED))
        }
        Ending::Failed(e) => {
            restore::write_termination_message(&format!("{e:#}"));
            Err(e)
        }
    }
}
