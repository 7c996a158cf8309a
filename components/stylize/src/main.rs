//! `stylize`: apply packaged style-transfer networks to images.
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kubestyle_manifest::cancel;
use kubestyle_manifest::telemetry::{Report, init_tracing, install_panic_hook};
use kubestyle_stylize::{Args, run};

fn main() -> ExitCode {
    install_panic_hook(Report::Log);
    // `stylize serve …`: the HTTP server (its own command line and panic policy; the batch
    // command line is unchanged).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if kubestyle_stylize::serve::is_serve(&argv) {
        return kubestyle_stylize::serve::main(argv);
    }
    let args = Args::parse();
    init_tracing();
    // SIGINT/SIGTERM: temp files removed, nothing committed after it, exit 130/143.
    if let Err(code) = cancel::install_or_exit(|_| {}) {
        return code;
    }
    cancel::finish(run(args), Duration::from_secs(5))
}
