//! `upload`: publish a run's outputs, manifests and SHA256SUMS; or push local inputs.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_manifest::telemetry::{finish, init_tracing};
use kubestyle_upload::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    finish(run(cli).await)
}
