//! `upload`: publish a run's outputs, manifests and SHA256SUMS; or push local inputs.
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kubestyle_manifest::StageError;
use kubestyle_manifest::cancel;
use kubestyle_manifest::telemetry::{Report, finish, init_tracing, install_panic_hook};
use kubestyle_upload::{Cli, run};

/// How long the multipart aborts may take (Kubernetes allows 30 s after SIGTERM by default).
const ABORT_WITHIN: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    install_panic_hook(Report::Log);
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return finish(Err::<(), _>(StageError::Internal(format!("runtime: {e}")))),
    };
    // SIGINT/SIGTERM: temp files removed, multipart uploads in flight aborted, nothing
    // committed after it, exit 130/143.
    let handle = rt.handle().clone();
    let abort = move |_| handle.block_on(kubestyle_upload::abort::abort_in_flight(ABORT_WITHIN));
    if let Err(code) = cancel::install_or_exit(abort) {
        return code;
    }
    let result = rt.block_on(run(cli));
    cancel::finish(result, ABORT_WITHIN + Duration::from_secs(5))
}
