//! The pre-check decode (every image decoded once before the first forward pass) keeps the
//! memory bound of the forward passes: images larger than a lane's are decoded one at a time,
//! not one per core at once (issue #21: 1.5 GB per 100 MP image, times the cores).
//!
//! Alone in its test binary: the peak RSS is read with `getrusage(RUSAGE_CHILDREN)`, the
//! maximum over every child this process has waited for. A corrupt last image ends each run
//! right after the pre-check (exit 4), so no forward pass runs and the peak is the pre-check's.

use nix::sys::resource::{UsageWho, getrusage};

use kubestyle_testkit::assets;

fn children_peak_mib() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    usage.max_rss() as f64 / 1024.0
}

/// Promise: the pre-check decodes large images one at a time, whatever the number of cores:
/// with 8 worker threads, 8 images of 2048² (48 MiB each as planar floats) peak no higher
/// than 1 of them.
#[test]
fn the_precheck_decodes_large_images_one_at_a_time() {
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
    let big = image::open(assets().join("chelsea.png"))
        .unwrap()
        .resize_exact(2048, 2048, image::imageops::FilterType::Nearest);
    let run = |n: usize| {
        let dir = vol.path().join(format!("in{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            big.save(dir.join(format!("p{i:02}.png"))).unwrap();
        }
        // Last in input order, and only its data is broken (its header probes fine): reported
        // after every other image was decoded.
        let mut png = std::io::Cursor::new(Vec::new());
        big.resize_exact(256, 256, image::imageops::FilterType::Nearest)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let png = png.into_inner();
        std::fs::write(dir.join("zz-corrupt.png"), &png[..png.len() / 2]).unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("stylize"))
            .args([
                "--volume",
                vol.path().to_str().unwrap(),
                "--run-id",
                &format!("r{n}"),
            ])
            .args(["--package", pkg.to_str().unwrap(), "--style", "7"])
            .args(["--image", dir.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "8")
            .env("MALLOC_ARENA_MAX", "2")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("zz-corrupt.png"), "{err}");
        children_peak_mib()
    };
    let one = run(1);
    let eight = run(8);
    eprintln!("pre-check peak RSS: 1 image {one:.0} MiB, 8 images {eight:.0} MiB");
    // Eight decoded at once would add 7 × 48 = 336 MiB.
    assert!(
        eight - one < 100.0,
        "peak RSS grew from {one:.0} MiB (1 image) to {eight:.0} MiB (8 images)"
    );
}
