//! Used from `build.rs` of crates with a `tch` feature. When the feature is on, find libtorch's
//! library directory the way torch-sys does (`LIBTORCH`, or the PyTorch of the `python` on PATH
//! with `LIBTORCH_USE_PYTORCH=1`), then
//!
//! * bake it into the binaries' rpath, so they run without `LD_LIBRARY_PATH`;
//! * when that libtorch has CUDA (`libtorch_cuda.so` beside `libtorch_cpu.so`), link
//!   `libtorch_cuda.so` even though no symbol of it is referenced. rustc links with
//!   `-Wl,--as-needed`, so the `-ltorch_cuda` torch-sys asks for is dropped, the library is never
//!   loaded, its CUDA hooks never register, and libtorch reports zero CUDA devices: the program
//!   silently runs on the CPU (tch-rs issues #907, #980). `--no-as-needed` around it keeps the
//!   `NEEDED` entry. `stylize`'s test `tests/link.rs` checks the entry is there.
//!
//! The library directory is also passed to the crate as `KUBESTYLE_LIBTORCH_LIB` (compile-time
//! environment) so tests can look at what the binaries were linked against.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The CUDA library of libtorch that must stay linked.
pub const TORCH_CUDA_LIB: &str = "libtorch_cuda.so";

/// Emit the rpath (and the CUDA link arguments when libtorch has CUDA) when
/// `CARGO_FEATURE_TCH` is set; do nothing otherwise.
pub fn torch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let Some(dir) = libtorch_lib_dir() else {
        println!(
            "cargo:warning=feature tch: could not locate libtorch (set LIBTORCH, or LIBTORCH_USE_PYTORCH=1 with torch 2.9.0's python first on PATH); binaries will need LD_LIBRARY_PATH"
        );
        return;
    };
    // A torch installed or replaced in the same place (CPU wheel ↔ CUDA wheel) changes the
    // directory's entries.
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rustc-env=KUBESTYLE_LIBTORCH_LIB={}", dir.display());
    for arg in link_args(&dir, dir.join(TORCH_CUDA_LIB).is_file()) {
        println!("cargo:rustc-link-arg={arg}");
    }
}

/// The linker arguments for a libtorch in `dir`: the rpath, and when it has CUDA, the CUDA
/// library linked whatever `--as-needed` would decide. rustc puts `-C link-arg`s after the
/// objects and libraries it passes itself, and `--as-needed` is turned on again afterwards, so
/// nothing else changes.
pub fn link_args(dir: &Path, cuda: bool) -> Vec<String> {
    let mut args = vec![format!("-Wl,-rpath,{}", dir.display())];
    if cuda {
        args.extend([
            "-Wl,--no-as-needed".to_string(),
            format!("-L{}", dir.display()),
            "-ltorch_cuda".to_string(),
            "-Wl,--as-needed".to_string(),
        ]);
    }
    args
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_library_is_linked_without_as_needed_and_as_needed_is_restored() {
        let dir = Path::new("/opt/venv/lib/python3.11/site-packages/torch/lib");
        assert_eq!(
            link_args(dir, false),
            ["-Wl,-rpath,/opt/venv/lib/python3.11/site-packages/torch/lib"]
        );
        let args = link_args(dir, true);
        let pos = |a: &str| args.iter().position(|x| x == a).unwrap();
        assert!(pos("-Wl,--no-as-needed") < pos("-ltorch_cuda"));
        assert!(pos("-ltorch_cuda") < pos("-Wl,--as-needed"));
        assert_eq!(args.last().unwrap(), "-Wl,--as-needed");
    }
}
