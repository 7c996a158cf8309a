//! Used from `build.rs` of crates with a `tch` feature: when the feature is on, find libtorch's
//! library directory the way torch-sys does (`LIBTORCH`, or the PyTorch of the `python` on PATH
//! with `LIBTORCH_USE_PYTORCH=1`) and bake it into the binaries' rpath, so they run without
//! `LD_LIBRARY_PATH`.

use std::path::PathBuf;
use std::process::Command;

/// Emit the rpath when `CARGO_FEATURE_TCH` is set; do nothing otherwise.
pub fn torch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    match libtorch_lib_dir() {
        Some(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display()),
        None => println!(
            "cargo:warning=feature tch: could not locate libtorch (set LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with torch 2.9.0's python first on PATH); binaries will need LD_LIBRARY_PATH"
        ),
    }
}

fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Some(l) = std::env::var_os("LIBTORCH") {
        return Some(PathBuf::from(l).join("lib"));
    }
    let out = Command::new("python")
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(s.trim()))
}
