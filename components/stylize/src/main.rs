//! `stylize`: apply packaged style-transfer networks to images.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_manifest::telemetry::{finish, init_tracing};
use kubestyle_stylize::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    finish(run(args))
}
