//! `pipeline`: run, validate (and render) kubestyle pipelines.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_manifest::telemetry::{Report, finish_as, init_tracing, install_panic_hook};
use kubestyle_pipeline::{Cli, main as pipeline_main};

#[tokio::main]
async fn main() -> ExitCode {
    install_panic_hook(Report::Plain);
    let cli = Cli::parse();
    init_tracing();
    // Before any TLS client exists: rustls cannot choose between the two providers linked.
    kubestyle_pipeline::submit::install_crypto_provider();
    // The stages' finish, reporting as a command people read: `error: …` and the exit code.
    finish_as(pipeline_main(cli).await, Report::Plain)
}
