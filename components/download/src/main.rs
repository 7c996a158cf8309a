//! `download`: fetch inputs from S3 or local paths onto the shared volume.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_download::{Args, run};
use kubestyle_manifest::telemetry::{finish, init_tracing};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    finish(run(args).await)
}
