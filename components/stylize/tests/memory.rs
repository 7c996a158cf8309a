//! stylize's memory does not grow with the number of images: each is decoded when its forward
//! passes run and let go after its outputs are written (before, every image was decoded before
//! the first forward pass and kept: 100 photos of 12 MP took 14 GB).
//!
//! Alone in its test binary: the peak RSS is read with `getrusage(RUSAGE_CHILDREN)`, the
//! maximum over every child this process has waited for.

use nix::sys::resource::{UsageWho, getrusage};

use kubestyle_testkit::assets;

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
            // What the process holds, not what glibc keeps in per-thread arenas: with one arena
            // per thread (main, decoder, writer, workers) the peak sometimes stood ~45 MiB
            // higher whatever the number of images (the libtorch build: 580 or 622 MiB for 16
            // images; with 2 arenas 573–588 MiB every time).
            .env("MALLOC_ARENA_MAX", "2")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        children_peak_mib()
    };
    // The baseline has a few images, so that it already has one decoded ahead while another
    // runs and its outputs are written (issue #14's streaming: with 2 images that overlap is
    // short, and the 16-image peak was 25–65 MiB above it depending on timing).
    let four = run(4);
    let sixteen = run(16);
    eprintln!("peak RSS: 4 images {four:.0} MiB, 16 images {sixteen:.0} MiB");
    // Holding all 16 decoded images would add 12 × 9 = 108 MiB.
    assert!(
        sixteen - four < 45.0,
        "peak RSS grew from {four:.0} MiB (4 images) to {sixteen:.0} MiB (16 images)"
    );
}
