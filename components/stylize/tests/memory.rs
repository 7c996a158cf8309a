//! stylize's memory does not grow with the number of images: each is decoded when its forward
//! passes run and let go after its outputs are written (before, every image was decoded before
//! the first forward pass and kept: 100 photos of 12 MP took 14 GB).
//!
//! Alone in its test binary: the peak RSS is read with `getrusage(RUSAGE_CHILDREN)`, the
//! maximum over every child this process has waited for.

use std::path::{Path, PathBuf};

use nix::sys::resource::{UsageWho, getrusage};

fn assets() -> PathBuf {
    std::env::var_os("KUBESTYLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/assets"))
}

/// Peak RSS in MiB of the children waited for so far.
fn children_peak_mib() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    usage.max_rss() as f64 / 1024.0 // kB on Linux
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_images() {
    let vol = tempfile::tempdir().unwrap();
    let onnx = assets().join("multistyle26.onnx");
    assert!(onnx.exists(), "assets missing: run scripts/test.sh");
    let ok = std::process::Command::new(assert_cmd::cargo::cargo_bin("package-model"))
        .args(["--volume", vol.path().to_str().unwrap(), "--run-id", "m"])
        .arg(&onnx)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let pkg = vol.path().join("runs/m/models/multistyle26");
    let photo = image::open(assets().join("chelsea.png")).unwrap();
    // 1024×768: 9 MiB of planar floats per decoded image.
    let run = |n: usize| {
        let dir = vol.path().join(format!("in{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            photo
                .resize_exact(1024, 768, image::imageops::FilterType::Triangle)
                .huerotate(i as i32 * 20)
                .save(dir.join(format!("p{i:02}.png")))
                .unwrap();
        }
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("stylize"))
            .args([
                "--volume",
                vol.path().to_str().unwrap(),
                "--run-id",
                &format!("r{n}"),
            ])
            .args(["--package", pkg.to_str().unwrap(), "--style", "7"])
            .args(["--image", dir.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        children_peak_mib()
    };
    let two = run(2);
    let sixteen = run(16);
    eprintln!("peak RSS: 2 images {two:.0} MiB, 16 images {sixteen:.0} MiB");
    // Holding all 16 decoded images would add 14 × 9 = 126 MiB.
    assert!(
        sixteen - two < 45.0,
        "peak RSS grew from {two:.0} MiB (2 images) to {sixteen:.0} MiB (16 images)"
    );
}
