//! Hostile weight files (issue #12): files of a few KB that declare tensors of gigabytes
//! (expanded views, lying strides, overflowing shapes), unknown names or wrong shapes, and
//! files larger than `--max-weight-bytes`. `package-model` must refuse each with exit 4 and a
//! message naming the offending tensor (or file), quickly, under a 512 MiB address-space
//! limit (the whole process, so any allocation from a declared size aborts it), writing
//! nothing. A valid file packages under the same limit.
//!
//! The `.pth`/safetensors/ONNX fixtures come from `models/tests/fixtures/hostile/gen.py`,
//! which `scripts/test.sh` runs; these tests fail, never skip, when they are missing.
//! `KUBESTYLE_PACKAGE_MODEL_BIN` runs them against another build of the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kubestyle_testkit::files;

/// Address-space limit for every run, in KiB (512 MiB: a valid TransformerNet packages
/// within it; the hostile files declare 6 to 40 GB).
const LIMIT_KIB: u64 = 512 * 1024;
/// A refusal reads headers only; a debug build does that in well under a second.
const QUICK: Duration = Duration::from_secs(10);

fn fixture(dir: &str, name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kubestyle-models/tests/fixtures")
        .join(dir)
        .join("generated")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/test.sh (it runs models/tests/fixtures/{dir}/gen.py)",
        p.display()
    );
    p
}

fn hostile(name: &str) -> PathBuf {
    fixture("hostile", name)
}

fn binary() -> PathBuf {
    std::env::var_os("KUBESTYLE_PACKAGE_MODEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_package-model")))
}

/// Run package-model on `args` under the memory limit; returns the output and how long it took.
fn limited(vol: &Path, args: &[&std::ffi::OsStr]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit -v {LIMIT_KIB} && exec "$0" "$@""#))
        .arg(binary())
        .args(["--volume".as_ref(), vol.as_os_str()])
        .args(["--run-id", "t"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (out, start.elapsed())
}

/// Exit 4, quickly, a message with every needle, and nothing written to the volume.
fn refused(file: &Path, extra: &[&str], needles: &[&str]) {
    let vol = tempfile::tempdir().unwrap();
    let mut args: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_ref()).collect();
    args.push(file.as_os_str());
    let (out, took) = limited(vol.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    let name = file.file_name().unwrap().to_string_lossy();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{name}: {:?}\n{err}",
        out.status
    );
    for n in needles.iter().chain([&name.as_ref()]) {
        assert!(
            err.contains(n),
            "{name}: stderr should mention {n:?}: {err}"
        );
    }
    assert!(took < QUICK, "{name}: took {took:?}");
    let left = files(vol.path());
    assert!(left.is_empty(), "{name}: wrote {left:?}");
}

#[test]
fn valid_weights_package_under_the_same_memory_limit() {
    for f in ["tn_zip.pth", "tn_legacy.pth"] {
        let vol = tempfile::tempdir().unwrap();
        let (out, _) = limited(vol.path(), &[fixture("transformer_net", f).as_os_str()]);
        assert!(out.status.success(), "{f}: {out:?}");
    }
}

#[test]
fn expanded_views_are_refused_from_the_header() {
    // conv1.conv2d.weight = zeros(1).expand(45000, 45000): 8.1 GB once read.
    for f in ["expand_zip.pth", "expand_legacy.pth"] {
        refused(
            &hostile(f),
            &[],
            &["conv1.conv2d.weight has shape [45000, 45000], expected [32, 3, 9, 9]"],
        );
    }
    // Every conv an expanded (40000, 40000) view: 6.4 GB each.
    refused(
        &hostile("many_zip.pth"),
        &[],
        &[
            "conv1.conv2d.weight has shape [40000, 40000], expected [32, 3, 9, 9]",
            "res4.conv1.conv2d.bias has shape [40000, 40000], expected [128]",
            "(62 problems)",
        ],
    );
}

#[test]
fn unknown_names_are_refused_before_their_data_is_read() {
    for f in ["unknown_zip.pth", "unknown_legacy.pth"] {
        refused(&hostile(f), &[], &["unexpected evil.weight [45000, 45000]"]);
    }
    refused(
        &hostile("nameless_zip.pth"),
        &[],
        &["not a known style-transfer network"],
    );
    // Forced architecture: the unknown name is reported, not read.
    refused(
        &hostile("nameless_zip.pth"),
        &["--architecture", "transformer-net"],
        &["unexpected evil.weight [45000, 45000]"],
    );
}

#[test]
fn wrong_shapes_and_lying_strides_are_refused() {
    refused(
        &hostile("wrong_shape_zip.pth"),
        &[],
        &["conv1.conv2d.weight has shape [32, 3, 9, 8], expected [32, 3, 9, 9]"],
    );
    // (100000, 100000) with stride (100000, 1) over a 4-element storage: pytorch-reader
    // refuses the view at open, before any name is attached to it.
    for f in ["liar_zip.pth", "liar_legacy.pth"] {
        refused(&hostile(f), &[], &["[100000, 100000]", "declares 4"]);
    }
}

#[test]
fn hostile_safetensors_and_onnx_headers_are_refused() {
    refused(
        &hostile("huge_shape.safetensors"),
        &[],
        &["not a safetensors file"],
    );
    refused(
        &hostile("overflow_shape.safetensors"),
        &[],
        &["not a safetensors file", "overflow"],
    );
    refused(
        &hostile("neg_dim.onnx"),
        &[],
        &["initializer conv1.conv2d.weight has a negative dimension (-1)"],
    );
    refused(
        &hostile("huge_dims.onnx"),
        &[],
        &[
            "conv1.conv2d.weight declares shape [1099511627776, 1099511627776], whose element count overflows",
        ],
    );
    refused(
        &hostile("short_raw.onnx"),
        &[],
        &["initializer conv1.conv2d.weight holds 2 values for shape [32, 3, 9, 9]"],
    );
}

#[test]
fn files_over_max_weight_bytes_are_refused_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    // Sparse 1 GiB files: reading one whole would exceed the memory limit.
    for f in ["big.safetensors", "big.onnx", "big.pth"] {
        let p = dir.path().join(f);
        std::fs::File::create(&p).unwrap().set_len(1 << 30).unwrap();
        refused(
            &p,
            &[],
            &["is 1073741824 bytes, above the 268435456-byte limit (--max-weight-bytes)"],
        );
    }
    // The limit is configuration: a real 6.7 MB file under a 1 MB limit is refused, and
    // packages under the default.
    let tn = fixture("transformer_net", "tn_zip.pth");
    refused(
        &tn,
        &["--max-weight-bytes", "1000000"],
        &["above the 1000000-byte limit (--max-weight-bytes)"],
    );
}
