//! The tch build really links libtorch's CUDA library.
//!
//! rustc links with `--as-needed`; `stylize` references no symbol of `libtorch_cuda.so`, so
//! without kubestyle-build's `--no-as-needed` around `-ltorch_cuda` the library is dropped from
//! the binary, never loaded, and libtorch sees no CUDA device even on a GPU node (tch-rs issues
//! #907, #980): the CUDA image would run on the CPU. This test reads the binary's dynamic section
//! (what `readelf -d` shows) and checks at run time that the library is loaded.
//!
//! It needs a libtorch with CUDA (the PyPI torch 2.9.0 wheel scripts/test.sh installs has it):
//! with a CPU-only libtorch it fails, unless `KUBESTYLE_ALLOW_CPU_LIBTORCH=1` says that is
//! intended (then it checks that nothing asks for the missing library).
#![cfg(feature = "tch")]

use std::path::{Path, PathBuf};

/// Opt-out for builds against a CPU-only libtorch.
const ALLOW_CPU: &str = "KUBESTYLE_ALLOW_CPU_LIBTORCH";

/// `DT_NEEDED` and `DT_RUNPATH`/`DT_RPATH` entries of a 64-bit little-endian ELF file.
fn dynamic_section(path: &Path) -> (Vec<String>, Vec<String>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!((b[4], b[5]), (2, 1), "not a 64-bit little-endian ELF");
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3A), u16_at(0x3C));
    let section = |i: usize| shoff + i * shentsize;
    const SHT_DYNAMIC: usize = 6;
    let dynamic = (0..shnum)
        .map(section)
        .find(|&s| u32_at(s + 4) == SHT_DYNAMIC)
        .expect("no dynamic section: a static binary?");
    let strtab = u64_at(section(u32_at(dynamic + 40)) + 24);
    let string = |off: usize| {
        let s = &b[strtab + off..];
        String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
    };
    let (start, size) = (u64_at(dynamic + 24), u64_at(dynamic + 32));
    let (mut needed, mut runpath) = (Vec::new(), Vec::new());
    for e in (start..start + size).step_by(16) {
        match u64_at(e) {
            0 => break,
            1 => needed.push(string(u64_at(e + 8))),
            15 | 29 => runpath.extend(string(u64_at(e + 8)).split(':').map(String::from)),
            _ => {}
        }
    }
    (needed, runpath)
}

#[test]
fn stylize_links_libtorch_cuda_when_libtorch_has_it() {
    let bin = Path::new(env!("CARGO_BIN_EXE_stylize"));
    let lib = PathBuf::from(env!(
        "KUBESTYLE_LIBTORCH_LIB",
        "kubestyle-build did not find libtorch when stylize was built (LIBTORCH, or \
         LIBTORCH_USE_PYTORCH=1 with torch's python on PATH)"
    ));
    let (needed, runpath) = dynamic_section(bin);
    println!("{}: NEEDED {needed:?}, RUNPATH {runpath:?}", bin.display());
    assert!(
        runpath.iter().any(|p| Path::new(p) == lib),
        "rpath lacks {}: {runpath:?}",
        lib.display()
    );
    assert!(needed.iter().any(|n| n == "libtorch_cpu.so"), "{needed:?}");

    let has_cuda = lib.join("libtorch_cuda.so").is_file();
    if !has_cuda {
        assert!(
            std::env::var_os(ALLOW_CPU).is_some_and(|v| v == "1"),
            "{} has no libtorch_cuda.so: this libtorch cannot use a GPU, so the CUDA build \
             cannot be checked. Install the CUDA build of torch 2.9.0 (PyPI's default on Linux), \
             or set {ALLOW_CPU}=1 if a CPU-only libtorch is intended",
            lib.display()
        );
        assert!(!needed.iter().any(|n| n == "libtorch_cuda.so"));
        println!("{ALLOW_CPU}=1: CPU-only libtorch accepted, nothing to link");
        return;
    }
    assert!(
        needed.iter().any(|n| n == "libtorch_cuda.so"),
        "the --as-needed linker dropped libtorch_cuda.so: libtorch would see no GPU. NEEDED: \
         {needed:?}"
    );

    // At run time: libtorch_cuda.so is loaded. With a GPU `--device cuda` passes the device
    // check (and stops at the missing volume); without one, the message tells a loaded CUDA
    // library that sees no device from a library that is not there.
    let missing = tempfile::tempdir().unwrap().path().join("none");
    let out = std::process::Command::new(bin)
        .args(["--volume", missing.to_str().unwrap(), "--device", "cuda"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    if out.status.code() == Some(9) {
        assert!(err.contains("no NVIDIA GPU or driver visible"), "{err}");
    }
    assert!(!err.contains("is not loaded"), "{err}");
}
