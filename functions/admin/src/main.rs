//! `mesh-admin`: administer keys, prices, balances and usage in the configured store.

use std::process::ExitCode;

use clap::Parser;
use mesh::config::Config;
use mesh_admin::admin::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    mesh::install_crypto_provider();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("mesh-admin: {err}");
            return ExitCode::from(2);
        }
    };
    let stores = match mesh::store::open(&config.store).await {
        Ok(stores) => stores,
        Err(err) => {
            eprintln!("mesh-admin: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match run(cli, &config, &stores, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh-admin: {err}");
            ExitCode::FAILURE
        }
    }
}
