//! `download`: fetch inputs from S3 or local paths onto the shared volume.
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kubestyle_download::{Args, run};
use kubestyle_manifest::cancel;
use kubestyle_manifest::telemetry::{Report, init_tracing, install_panic_hook};

#[tokio::main]
async fn main() -> ExitCode {
    install_panic_hook(Report::Log);
    let args = Args::parse();
    init_tracing();
    // SIGINT/SIGTERM: temp files removed, nothing committed after it, exit 130/143.
    if let Err(code) = cancel::install_or_exit(|_| {}) {
        return code;
    }
    let result = run(args).await;
    cancel::finish(result, Duration::from_secs(5))
}
