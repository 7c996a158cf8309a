//! `package-model`: weights (.pth, .safetensors, ONNX) → a burn model package.
use std::process::ExitCode;

use clap::Parser;
use kubestyle_manifest::telemetry::{finish, init_tracing};
use kubestyle_package_model::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    finish(run(args))
}
