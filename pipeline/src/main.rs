//! `pipeline`: run, validate (and render) kubestyle pipelines.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_manifest::telemetry::init_tracing;
use kubestyle_pipeline::{Cli, main as pipeline_main};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // Before any TLS client exists: rustls cannot choose between the two providers linked.
    kubestyle_pipeline::submit::install_crypto_provider();
    match pipeline_main(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
