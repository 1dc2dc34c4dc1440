//! `mall`: run the whole mall (`up`), one service (`serve`), or one service's migrations (`migrate`).

use clap::Parser;
use mall::config::{Cli, Command};
use mall_user::AdminSeed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mall_runtime::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let options = mall::StartOptions {
                gateway: mall::gateway_config(&args.shared),
                gateway_listen: args.gateway_listen.clone(),
                demo: !args.no_demo,
            };
            let mall = mall::start(&args.shared, options).await?;
            println!();
            println!("  Mall is up: {}   (API docs: {}/docs)", mall.gateway_url(), mall.gateway_url());
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
            mall.run_until_signal().await
        }
        Command::Serve { service, shared, listen, gateway_listen } => {
            mall::serve(service, &shared, &listen, &gateway_listen).await
        }
        Command::Migrate { service, shared } => mall::migrate(service, &shared).await,
    }
}
