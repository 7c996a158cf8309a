//! `stylize` end to end on the trained MultiStyle26 network and real photos (flex backend).

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kubestyle_manifest::Manifest;
use kubestyle_manifest::manifest::manifest_path;
use kubestyle_testkit::files;

use kubestyle_testkit::assets;

/// A volume with the packaged MultiStyle26 network and a few test images.
fn volume() -> tempfile::TempDir {
    let vol = tempfile::tempdir().unwrap();
    let a = assets();
    common::package_multistyle26(vol.path());
    let img = vol.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let chelsea = image::open(a.join("chelsea.png")).unwrap();
    // Odd size, RGB.
    chelsea
        .resize_exact(97, 61, image::imageops::FilterType::Triangle)
        .save(img.join("odd.png"))
        .unwrap();
    // Grayscale 16-bit.
    let g16 = image::DynamicImage::ImageLuma16(
        chelsea
            .resize_exact(64, 48, image::imageops::FilterType::Triangle)
            .to_luma16(),
    );
    g16.save(img.join("gray16.png")).unwrap();
    // RGBA with a gradient alpha.
    let mut rgba = chelsea
        .resize_exact(80, 60, image::imageops::FilterType::Triangle)
        .to_rgba8();
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        p[3] = (x * 3) as u8;
    }
    rgba.save(img.join("alpha.png")).unwrap();
    // A JPEG.
    chelsea
        .resize_exact(120, 80, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(img.join("photo.jpg"))
        .unwrap();
    vol
}

fn stylize(vol: &Path) -> Command {
    let mut c = Command::cargo_bin("stylize").unwrap();
    c.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"]);
    c
}

#[test]
fn styles_blends_and_every_kind_of_image() {
    let vol = volume();
    let out = stylize(vol.path())
        .args([
            "--image",
            vol.path().join("img").to_str().unwrap(),
            "--style",
            "7",
            "--style",
            "3:0.5,12:0.5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // On the CPU `auto` runs the fused kernels in both builds (a tch build takes a GPU if any).
    assert!(
        err.contains("backend flex on cpu (fused kernels)")
            || (cfg!(feature = "tch") && err.contains("backend tch on cuda")),
        "{err}"
    );
    let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
    assert_eq!(m.outputs.len(), 8);
    for a in &m.outputs {
        a.verify(vol.path()).unwrap();
        for k in [
            "width",
            "height",
            "style",
            "backend",
            "device",
            "kernels",
            "device_requested",
            "forward_ms",
        ] {
            assert!(a.attributes.contains_key(k), "{k} missing in {a:?}");
        }
        let input = vol
            .path()
            .join("img")
            .join(Path::new(&a.path).file_name().unwrap());
        let (iw, ih) = image::image_dimensions(&input).unwrap();
        let (ow, oh) = image::image_dimensions(a.abs_path(vol.path())).unwrap();
        assert_eq!((iw, ih), (ow, oh), "{}", a.path);
    }
    let paths: Vec<&str> = m.outputs.iter().map(|a| a.path.as_str()).collect();
    assert!(
        paths.contains(&"runs/t/styled/multistyle26/style-07/photo.jpg"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"runs/t/styled/multistyle26/style-03@0.50+style-12@0.50/odd.png"),
        "{paths:?}"
    );
    // Alpha is carried through unchanged.
    let src = image::open(vol.path().join("img/alpha.png"))
        .unwrap()
        .to_rgba8();
    let dst = image::open(
        vol.path()
            .join("runs/t/styled/multistyle26/style-07/alpha.png"),
    )
    .unwrap()
    .to_rgba8();
    assert!(src.pixels().zip(dst.pixels()).all(|(a, b)| a[3] == b[3]));
    // The stylised image is not the input.
    let odd_in = image::open(vol.path().join("img/odd.png"))
        .unwrap()
        .to_rgb8();
    let odd_out = image::open(
        vol.path()
            .join("runs/t/styled/multistyle26/style-07/odd.png"),
    )
    .unwrap()
    .to_rgb8();
    let mean_diff: f64 = odd_in
        .as_raw()
        .iter()
        .zip(odd_out.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / odd_in.as_raw().len() as f64;
    assert!(
        mean_diff > 10.0,
        "output looks like the input (mean diff {mean_diff})"
    );
}

fn sha(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// `stylize --style 7` on `img/odd.png` into `out` with `extra` flags, which must succeed;
/// returns its log and the output file.
fn style7_odd(vol: &Path, out: &str, extra: &[&str]) -> (String, PathBuf) {
    let img = vol.join("img/odd.png");
    let o = stylize(vol)
        .args([
            "--image",
            img.to_str().unwrap(),
            "--style",
            "7",
            "--out",
            out,
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{extra:?}: {o:?}");
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    (log, vol.join(out).join("multistyle26/style-07/odd.png"))
}

#[test]
fn deterministic_and_known_digest() {
    let vol = volume();
    let run = |out: &str| sha(&style7_odd(vol.path(), out, &[]).1);
    let a = run("one");
    let b = run("two");
    assert_eq!(a, b, "same input twice must give the same bytes");
    println!("digest of style-07/odd.png: {a}");
    let want = std::env::var("KUBESTYLE_EXPECT_DIGEST").unwrap_or_else(|_| GOLDEN.to_string());
    assert_eq!(a, want, "the output changed: if intended, update GOLDEN");
}

/// The other kernels: burn's tensor ops on flex (and libtorch in the tch build) give the same
/// picture as the fused kernels, within 1/255 per channel; asking for fused kernels on libtorch is
/// a usage error.
#[test]
fn every_backend_and_kernel_choice_gives_the_same_picture() {
    let vol = volume();
    let img = vol.path().join("img/odd.png");
    let run = |extra: &[&str], out: &str| {
        let (err, path) = style7_odd(vol.path(), out, extra);
        (err, image::open(path).unwrap().to_rgb8())
    };
    let (err, fused) = run(&["--backend", "flex", "--kernels", "fused"], "fused");
    assert!(err.contains("(fused kernels)"), "{err}");
    let mut others = vec![(
        "flex/burn",
        run(&["--backend", "flex", "--kernels", "burn"], "burn"),
    )];
    if cfg!(feature = "tch") {
        others.push(("tch", run(&["--backend", "tch", "--device", "cpu"], "tch")));
        let o = stylize(vol.path())
            .args(["--image", img.to_str().unwrap(), "--backend", "tch"])
            .args(["--kernels", "fused"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("flex backend only"));
    }
    for (name, (err, pic)) in others {
        assert!(err.contains("(burn kernels)"), "{name}: {err}");
        let max = pic
            .as_raw()
            .iter()
            .zip(fused.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        println!("{name} vs fused kernels: max diff {max}/255");
        assert!(max <= 1, "{name} vs fused: max diff {max}/255");
    }
}

/// SHA-256 of `stylize --style 7` on the 97x61 chelsea crop, x86-64 (fused kernels; burn-flex
/// and libtorch give the same bytes here).
const GOLDEN: &str = "27c04eae84e629e919a0738693decf9afaec9f85f3f64156411f1cbef897370d";

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let vol = volume();
    let img = vol.path().join("img");
    std::fs::write(img.join("fake.png"), b"this is not a png").unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["--image".into(), img.join("fake.png").display().to_string()],
            4,
            "fake.png",
        ),
        (
            vec![
                "--image".into(),
                img.join("odd.png").display().to_string(),
                "--style".into(),
                "26".into(),
            ],
            4,
            "0 to 25",
        ),
        (
            vec![
                "--image".into(),
                img.join("odd.png").display().to_string(),
                "--style".into(),
                "nope".into(),
            ],
            4,
            "unknown style",
        ),
        (
            vec![
                "--image".into(),
                img.join("odd.png").display().to_string(),
                "--max-pixels".into(),
                "1000".into(),
            ],
            4,
            "decompression bomb",
        ),
        (
            vec![
                "--image".into(),
                img.join("odd.png").display().to_string(),
                "--device".into(),
                "cuda:999".into(),
            ],
            9,
            "--device cuda:999",
        ),
        (
            vec![
                "--image".into(),
                img.join("odd.png").display().to_string(),
                "--backend".into(),
                "flex".into(),
                "--device".into(),
                "cuda".into(),
            ],
            2,
            "flex backend runs on the CPU only",
        ),
        (
            vec![
                "--image".into(),
                img.join("missing.png").display().to_string(),
            ],
            3,
            "missing.png",
        ),
    ];
    for (args, code, needle) in cases {
        let out = stylize(vol.path()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !vol.path().join("runs/t/styled").exists(),
            "{args:?} wrote {:?}",
            files(&vol.path().join("runs/t/styled"))
        );
        assert!(!manifest_path(vol.path(), "t", "stylize").exists());
    }
}

/// CUDA devices libtorch sees (none in a build without libtorch).
fn gpus() -> i64 {
    #[cfg(feature = "tch")]
    {
        tch::Cuda::device_count()
    }
    #[cfg(not(feature = "tch"))]
    {
        0
    }
}

/// A GPU asked for by name that the build or the node cannot give fails at start — before the
/// volume is even looked at — with exit 9 (device-unavailable) and the reason; it never falls
/// back to the CPU.
#[test]
fn a_missing_gpu_fails_at_start_with_exit_9() {
    let vol = tempfile::tempdir().unwrap();
    let missing = vol.path().join("no-such-volume");
    let why = if !cfg!(feature = "tch") {
        "built without the tch feature"
    } else if gpus() == 0 {
        "libtorch sees 0 CUDA devices"
    } else {
        "no CUDA device 999"
    };
    let mut devices = vec!["cuda:999"];
    if gpus() == 0 {
        devices.push("cuda");
    }
    for device in devices {
        let out = Command::cargo_bin("stylize")
            .unwrap()
            .args(["--volume", missing.to_str().unwrap(), "--run-id", "t"])
            .args(["--device", device])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{err}");
        assert_eq!(out.status.code(), Some(9), "--device {device}: {err}");
        assert!(
            err.contains(&format!("device unavailable: --device {device}")),
            "{err}"
        );
        assert!(err.contains(why), "--device {device}: {err}");
        assert!(err.contains("exit 9 device-unavailable"), "{err}");
        // The "backend … on … (… kernels)" line comes after the device check.
        assert!(!err.contains("kernels)"), "work started: {err}");
        assert!(!missing.exists());
    }
}

/// `--device auto` without a usable GPU runs on the CPU and says so: a warning naming why, and
/// `device_requested`/`device_fallback` beside `device` in the manifest. An explicit CPU
/// backend or device is no fallback.
#[test]
fn auto_without_a_gpu_falls_back_to_the_cpu_and_says_why() {
    let vol = volume();
    let attrs = |vol: &Path| {
        let m = Manifest::read(&manifest_path(vol, "t", "stylize"), vol).unwrap();
        m.outputs[0].attributes.clone()
    };
    let (log, _) = style7_odd(vol.path(), "auto", &["--device", "auto"]);
    let a = attrs(vol.path());
    assert_eq!(a["device_requested"], "auto");
    if gpus() > 0 {
        assert!(log.contains("backend tch on cuda:0"), "{log}");
        assert!(!a.contains_key("device_fallback"), "{a:?}");
    } else {
        let why = a["device_fallback"].as_str().expect("device_fallback");
        assert_eq!(a["device"], "cpu");
        assert!(
            why.contains(if cfg!(feature = "tch") {
                "libtorch sees 0 CUDA devices"
            } else {
                "built without the tch feature"
            }),
            "{why}"
        );
        assert!(log.contains("WARN"), "{log}");
        assert!(
            log.contains(&format!(
                "--device auto: no usable GPU, running on the CPU: {why}"
            )),
            "{log}"
        );
    }
    for (out, extra) in [
        ("cpu", ["--device", "cpu"]),
        ("flex", ["--backend", "flex"]),
    ] {
        let (log, _) = style7_odd(vol.path(), out, &extra);
        let a = attrs(vol.path());
        assert!(!log.contains("no usable GPU"), "{extra:?}: {log}");
        assert!(!a.contains_key("device_fallback"), "{extra:?}: {a:?}");
        assert_eq!(a["device"], "cpu");
    }
}

#[test]
fn tiled_result_stays_close_to_untiled() {
    use clap::Parser;
    let a = assets();
    let vol = volume();
    let img = image::open(a.join("astronaut.png")).unwrap().resize_exact(
        384,
        384,
        image::imageops::FilterType::Triangle,
    );
    let p = vol.path().join("astro.png");
    img.save(&p).unwrap();
    let args = kubestyle_stylize::Args::parse_from([
        "stylize",
        "--volume",
        vol.path().to_str().unwrap(),
        "--tile",
        "256",
        "--overlap",
        "64",
        "--tile-above",
        "1000",
        "--tiling",
        "approximate",
    ]);
    let (_, net) = kubestyle_models::load_package(
        &vol.path().join("runs/t/models/multistyle26"),
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    let planar = kubestyle_stylize::image_io::load(&p, u64::MAX, None).unwrap();
    let mut w = vec![0.0; 26];
    w[7] = 1.0;
    let fused = kubestyle_models::FusedNet::new(&net);
    let mut whole_args = args.clone();
    whole_args.tile_above = u64::MAX;
    let flex = burn::tensor::Device::flex();
    let diff = |a: &[f32], b: &[f32]| {
        let d: Vec<f32> = a
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs() * 255.0)
            .collect();
        let max = d.iter().cloned().fold(0.0, f32::max);
        (max, d.iter().sum::<f32>() / d.len() as f32)
    };
    // burn's ops: every tile normalises with its own statistics.
    let (tiled, n) =
        kubestyle_stylize::stylize_planar(&net, None, &planar, &w, &flex, &args).unwrap();
    assert_eq!(n, kubestyle_stylize::TileRun::Approximate(4));
    let (whole, one) =
        kubestyle_stylize::stylize_planar(&net, None, &planar, &w, &flex, &whole_args).unwrap();
    assert_eq!(one, kubestyle_stylize::TileRun::Whole);
    let (own_max, own_mean) = diff(&tiled, &whole);
    // Fused kernels: statistics shared by all tiles, recorded on a downscaled copy.
    let (tiled_f, n) =
        kubestyle_stylize::stylize_planar(&net, Some(&fused), &planar, &w, &flex, &args).unwrap();
    assert_eq!(n, kubestyle_stylize::TileRun::Approximate(4));
    let (whole_f, _) =
        kubestyle_stylize::stylize_planar(&net, Some(&fused), &planar, &w, &flex, &whole_args)
            .unwrap();
    let (shared_max, shared_mean) = diff(&tiled_f, &whole_f);
    println!(
        "tiled (4 tiles of 256, overlap 64) vs untiled on 384x384, in 1/255: per-tile statistics \
         max {own_max:.1} mean {own_mean:.2}; shared statistics max {shared_max:.1} mean \
         {shared_mean:.2}"
    );
    // Per-tile statistics: README "Large images" (measured 12.9 mean). Guard, not zero.
    assert!(own_mean < 16.0, "per-tile statistics: mean diff {own_mean}");
    // Shared statistics (recorded on a 256x256 copy) must improve on that: measured 9.0 mean,
    // 131 max. (Exact whole-image statistics replayed in the tiles would give 0.4 mean: the
    // rest is the downscaled copy's statistics, README "Large images".)
    assert!(
        shared_mean < own_mean * 0.8,
        "shared statistics: mean diff {shared_mean} vs per-tile {own_mean}"
    );
    // Exact tiling (the default on the fused kernels): bands of 20 rows through scratch files,
    // whole-image statistics: the untiled picture.
    let mut exact_args = args.clone();
    exact_args.tiling = kubestyle_stylize::Tiling::Auto;
    exact_args.band_rows = Some(20);
    let (exact, how) =
        kubestyle_stylize::stylize_planar(&net, Some(&fused), &planar, &w, &flex, &exact_args)
            .unwrap();
    assert_eq!(how, kubestyle_stylize::TileRun::Exact);
    let (exact_max, exact_mean) = diff(&exact, &whole_f);
    println!("exact tiling vs untiled: max {exact_max:.4} mean {exact_mean:.5} (1/255)");
    assert!(exact_max <= 1.0, "exact tiling: max diff {exact_max}/255");
}

#[test]
fn max_size_keeps_the_aspect_ratio() {
    let vol = volume();
    let out = stylize(vol.path())
        .args([
            "--image",
            vol.path().join("img/odd.png").to_str().unwrap(),
            "--max-size",
            "32",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (w, h) = image::image_dimensions(
        vol.path()
            .join("runs/t/styled/multistyle26/style-00/odd.png"),
    )
    .unwrap();
    assert_eq!((w, h), (32, 20));
}

/// The way `pipeline run` chains the stages: each reads the previous stage's manifest.
#[test]
fn inputs_come_from_the_previous_manifests() {
    use clap::Parser;
    let vol = volume();
    let img = vol.path().join("img");
    let argv = [
        "download",
        "--volume",
        vol.path().to_str().unwrap(),
        "--run-id",
        "t",
        img.to_str().unwrap(),
    ];
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kubestyle_download::run(
            kubestyle_download::Args::parse_from(argv),
        ))
        .unwrap();
    let out = stylize(vol.path())
        .args(["--style", "style-19"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
    assert_eq!(m.outputs.len(), 4, "one per image of the download manifest");
    let names: Vec<&str> = m.inputs.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&"multistyle26/model.bpk"), "{names:?}");
    assert!(
        m.inputs.iter().any(|a| a.path == "img/alpha.png"),
        "{names:?}"
    );
    assert!(
        m.outputs.iter().all(|a| a
            .path
            .starts_with("runs/t/styled/multistyle26/style-19/img/")),
        "{:?}",
        m.outputs
    );
}

#[test]
fn shards_split_the_work_and_together_equal_one_run() {
    let vol = volume();
    let img = vol.path().join("img");
    let base = |c: &mut Command| {
        c.args([
            "--image",
            img.to_str().unwrap(),
            "--style",
            "7",
            "--style",
            "3:0.5,12:0.5",
        ]);
    };
    let mut whole = stylize(vol.path());
    base(&mut whole);
    whole.args(["--out", "whole", "--manifest"]);
    whole.arg(vol.path().join("whole.json"));
    assert!(whole.output().unwrap().status.success());
    let whole = Manifest::read(&vol.path().join("whole.json"), vol.path()).unwrap();
    assert_eq!(whole.outputs.len(), 8);

    let mut sharded: Vec<(String, String)> = Vec::new();
    for shard in ["0", "1", "2"] {
        let mut c = stylize(vol.path());
        base(&mut c);
        c.args(["--out", "whole", "--shards", "3"])
            .env("JOB_COMPLETION_INDEX", shard);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        let p = vol
            .path()
            .join(format!("runs/t/stylize-{shard}-of-3.manifest.json"));
        let m = Manifest::read(&p, vol.path()).unwrap();
        // By image (4 images, 3 shards): each image's two styles in one shard.
        assert!([2, 4].contains(&m.outputs.len()), "{}", m.outputs.len());
        sharded.extend(
            m.outputs
                .iter()
                .map(|a| (a.path.clone(), a.sha256.to_string())),
        );
    }
    sharded.sort();
    let mut want: Vec<(String, String)> = whole
        .outputs
        .iter()
        .map(|a| (a.path.clone(), a.sha256.to_string()))
        .collect();
    want.sort();
    assert_eq!(sharded, want);

    let o = stylize(vol.path())
        .args([
            "--image",
            img.to_str().unwrap(),
            "--shards",
            "2",
            "--shard",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// A JPEG whose EXIF says "rotate 90° clockwise" (orientation 6), as phone cameras write them.
fn jpeg_with_orientation_6(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
    let mut plain = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut plain),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    assert_eq!(&plain[..2], &[0xFF, 0xD8]);
    // APP1: "Exif\0\0" + big-endian TIFF header + one IFD entry: Orientation (0x0112) SHORT 6.
    let mut tiff = vec![b'M', b'M', 0, 0x2A, 0, 0, 0, 8];
    tiff.extend([0, 1]);
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    tiff.extend([0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(len.to_be_bytes());
    out.extend(app1);
    out.extend(&plain[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let vol = volume();
    let p = vol.path().join("img/phone.jpg");
    std::fs::write(&p, jpeg_with_orientation_6(80, 40)).unwrap();
    // Stored 80 wide, 40 high; displayed (after the EXIF rotation) 40 wide, 80 high.
    let stored = image::open(&p).unwrap();
    assert_eq!((stored.width(), stored.height()), (80, 40));
    let o = stylize(vol.path())
        .args(["--image", p.to_str().unwrap(), "--style", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
    let a = &m.outputs[0];
    assert_eq!(
        (
            a.attributes["width"].as_u64(),
            a.attributes["height"].as_u64()
        ),
        (Some(40), Some(80))
    );
    let out = image::open(vol.path().join(&a.path)).unwrap();
    assert_eq!((out.width(), out.height()), (40, 80));
}

/// A failure while writing an output (here: a file stands where the output directory must go)
/// stops the stage with a clear message and no manifest, even though outputs are written on a
/// separate thread while the next forward pass runs.
#[test]
fn a_write_failure_stops_the_stage_without_a_manifest() {
    let vol = volume();
    let img = vol.path().join("img");
    std::fs::create_dir_all(vol.path().join("runs/t/styled/multistyle26")).unwrap();
    std::fs::write(
        vol.path().join("runs/t/styled/multistyle26/style-07"),
        b"in the way",
    )
    .unwrap();
    let out = stylize(vol.path())
        .args([
            "--image",
            img.to_str().unwrap(),
            "--style",
            "3",
            "--style",
            "7",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(err.contains("style-07"), "{err}");
    assert!(!manifest_path(vol.path(), "t", "stylize").exists());
}

/// The same style given twice — by index, name, `PACKAGE/SPEC` or as the same blend in another
/// order or scale — is computed once, with a warning naming the repeats (it used to do all the
/// work, then refuse to write a manifest with a duplicate artifact name, exit 1). Two different
/// blends that would get one name are refused before any work.
#[test]
fn the_same_style_twice_is_done_once() {
    let vol = volume();
    let img = vol.path().join("img/odd.png");
    let out = stylize(vol.path())
        .args(["--image", img.to_str().unwrap()])
        .args([
            "--style",
            "7",
            "--style",
            "style-07",
            "--style",
            "multistyle26/7",
        ])
        .args(["--style", "3:0.5,12:0.5", "--style", "12:1,style-03:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert!(out.status.success(), "{err}");
    for repeat in ["\"style-07\"", "\"multistyle26/7\"", "\"12:1,style-03:1\""] {
        assert!(
            err.contains(&format!("--style {repeat} is the same style as")),
            "{repeat}: {err}"
        );
    }
    assert!(err.contains("WARN"), "{err}");
    let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
    let mut paths: Vec<&str> = m.outputs.iter().map(|a| a.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "runs/t/styled/multistyle26/style-03@0.50+style-12@0.50/odd.png",
            "runs/t/styled/multistyle26/style-07/odd.png",
        ]
    );
    assert_eq!(files(&vol.path().join("runs/t/styled")).len(), 2);

    // Different blends under one name: refused, nothing written.
    let vol = volume();
    let out = stylize(vol.path())
        .args(["--image", img.to_str().unwrap()])
        .args(["--style", "3:0.5,12:0.5", "--style", "3:0.501,12:0.499"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("style-03@0.50+style-12@0.50"), "{err}");
    assert!(!vol.path().join("runs/t/styled").exists());
    assert!(!manifest_path(vol.path(), "t", "stylize").exists());
}

/// Two inputs whose outputs land on one path (`a.jpg` and `a.png` with `--format png`, given
/// as files or found in a directory) are refused with exit 4 naming both inputs and the output,
/// before any forward pass: no output, no manifest.
#[test]
fn two_inputs_with_one_output_path_are_refused_before_any_work() {
    let vol = volume();
    let dir = vol.path().join("clash");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(vol.path().join("img/photo.jpg"), dir.join("a.jpg")).unwrap();
    std::fs::copy(vol.path().join("img/odd.png"), dir.join("a.png")).unwrap();
    std::fs::copy(vol.path().join("img/alpha.png"), dir.join("b.png")).unwrap();
    let (a_jpg, a_png) = (dir.join("a.jpg"), dir.join("a.png"));
    let cases: Vec<Vec<String>> = vec![
        vec![
            "--image".into(),
            a_jpg.display().to_string(),
            "--image".into(),
            a_png.display().to_string(),
        ],
        vec!["--image".into(), dir.display().to_string()],
    ];
    for case in cases {
        let out = stylize(vol.path())
            .args(&case)
            .args(["--style", "7", "--style", "3", "--format", "png"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{err}");
        assert_eq!(out.status.code(), Some(4), "{case:?}: {err}");
        for needle in [
            a_jpg.display().to_string(),
            a_png.display().to_string(),
            "runs/t/styled/multistyle26/style-07/a.png".into(),
        ] {
            assert!(err.contains(&needle), "{case:?}: {needle} not named: {err}");
        }
        assert!(!err.contains("b.png"), "{err}");
        // Refused in planning: no forward pass ran, nothing was written.
        assert!(!err.contains(" ms)"), "work was done: {err}");
        assert!(
            !vol.path().join("runs/t/styled").exists(),
            "{case:?} wrote {:?}",
            files(&vol.path().join("runs/t/styled"))
        );
        assert!(!manifest_path(vol.path(), "t", "stylize").exists());
    }
}

/// Any size runs on every kernel choice: sides below the networks' minimum (8 px) are extended
/// by mirroring and cropped back, so the output has exactly the input's size (1×1, 1×5000,
/// 5000×1, 2×3, 4×64, 64×4, 7×7 panicked before).
#[test]
fn tiny_and_thin_images_keep_their_size_on_every_kernel_choice() {
    let vol = volume();
    let dir = vol.path().join("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let chelsea = image::open(assets().join("chelsea.png")).unwrap();
    let sizes = [
        (1u32, 1u32),
        (1, 5000),
        (5000, 1),
        (2, 3),
        (4, 64),
        (64, 4),
        (7, 7),
    ];
    let mut images = Vec::new();
    for (w, h) in sizes {
        let name = format!("{w}x{h}.png");
        chelsea
            .resize_exact(w, h, image::imageops::FilterType::Triangle)
            .to_rgb8()
            .save(dir.join(&name))
            .unwrap();
        images.push(name);
    }
    let mut kernels = vec!["fused", "burn"];
    if cfg!(feature = "tch") {
        kernels.push("tch");
    }
    for k in kernels {
        let mut c = stylize(vol.path());
        c.args(["--style", "7", "--out", k]);
        if k == "tch" {
            c.args(["--backend", "tch", "--device", "cpu"]);
        } else {
            c.args(["--backend", "flex", "--kernels", k]);
        }
        for name in &images {
            c.args(["--image", dir.join(name).to_str().unwrap()]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{k}: {o:?}");
        for ((w, h), name) in sizes.iter().zip(&images) {
            let out = vol.path().join(k).join("multistyle26/style-07").join(name);
            let got = image::image_dimensions(&out)
                .unwrap_or_else(|e| panic!("{k}: {}: {e}", out.display()));
            assert_eq!(got, (*w, *h), "{k}: {name}");
        }
        // Tiled: 1-px-high tiles of a thin image (and, on the fused kernels, the shared statistics
        // of its 1-px-high copy) are extended the same way.
        let thin = dir.join("5000x1.png");
        let o = stylize(vol.path())
            .args(["--style", "7", "--out", &format!("{k}-tiled")])
            .args(["--image", thin.to_str().unwrap()])
            .args(["--tile-above", "1000", "--tile", "256", "--overlap", "32"])
            .args(if k == "tch" {
                ["--backend", "tch", "--device", "cpu"]
            } else {
                ["--backend", "flex", "--kernels", k]
            })
            .output()
            .unwrap();
        assert!(o.status.success(), "{k} tiled: {o:?}");
        let out = vol
            .path()
            .join(format!("{k}-tiled/multistyle26/style-07/5000x1.png"));
        assert_eq!(
            image::image_dimensions(out).unwrap(),
            (5000, 1),
            "{k} tiled"
        );
    }
}

#[test]
fn a_manifest_naming_a_package_outside_the_volume_is_refused() {
    let vol = volume();
    let mpath = manifest_path(vol.path(), "t", "package-model");
    let original = std::fs::read_to_string(&mpath).unwrap();
    for hostile in ["../elsewhere", "/etc", "models/../../x"] {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        let mut named = 0;
        for a in m["outputs"].as_array_mut().unwrap() {
            if a["attributes"].get("package").is_some() {
                a["attributes"]["package"] = serde_json::json!(hostile);
                named += 1;
            }
        }
        assert!(named > 0, "no artifact names its package: {original}");
        std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let img = vol.path().join("img/odd.png");
        let out = stylize(vol.path())
            .args(["--style", "7", "--image", img.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{hostile}: {err}");
        assert!(err.contains("names package"), "{hostile}: {err}");
        assert!(!manifest_path(vol.path(), "t", "stylize").exists());
        assert!(!vol.path().join("runs/t/styled").exists());
    }
}

#[test]
fn a_rebuilt_binary_does_not_reuse_the_old_ones_outputs() {
    let vol = volume();
    let img = vol.path().join("img/odd.png");
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("stylize");
    std::fs::copy(assert_cmd::cargo::cargo_bin("stylize"), &copy).unwrap();
    let run = |exe: &Path| {
        // A file just written can be "busy" for a moment when another test thread forks while
        // its descriptor is open (the child holds it until it execs): retry that only.
        let mut tries = 0;
        let out = loop {
            match std::process::Command::new(exe)
                .args(["--volume", vol.path().to_str().unwrap(), "--run-id", "t"])
                .args(["--style", "7", "--image", img.to_str().unwrap()])
                .output()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other.unwrap(),
            }
        };
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
        (m.cache_key.to_string(), err)
    };
    let (first, _) = run(&copy);
    let (again, log) = run(&copy);
    assert_eq!(first, again);
    assert!(
        log.contains("cached"),
        "the same binary reuses its outputs: {log}"
    );
    // Same version number, other code (here: one byte more, as a changed kernel would be).
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.push(0);
    std::fs::write(&copy, bytes).unwrap();
    let (rebuilt, log) = run(&copy);
    assert_ne!(
        first, rebuilt,
        "another binary must not hit the old cache key"
    );
    assert!(log.contains("1 computed"), "{log}");
}

#[test]
fn two_runs_on_one_volume_keep_their_own_outputs() {
    let vol = volume();
    let img = vol.path().join("img/odd.png");
    let pm = Manifest::read(&manifest_path(vol.path(), "t", "package-model"), vol.path()).unwrap();
    let pkg = pm
        .outputs
        .iter()
        .find_map(|a| a.attributes.get("package").and_then(|v| v.as_str()))
        .map(|p| vol.path().join(p))
        .unwrap();
    // Same package, style and image, other options: other pixels under the same names.
    for (run, size) in [("t", "48"), ("u", "32")] {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("stylize"))
            .args(["--volume", vol.path().to_str().unwrap(), "--run-id", run])
            .args(["--package", pkg.to_str().unwrap(), "--style", "7"])
            .args(["--max-size", size, "--image", img.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for run in ["t", "u"] {
        let m = Manifest::read(&manifest_path(vol.path(), run, "stylize"), vol.path()).unwrap();
        assert_eq!(m.outputs.len(), 1);
        assert!(
            m.outputs[0]
                .path
                .starts_with(&format!("runs/{run}/styled/")),
            "{:?}",
            m.outputs
        );
        // Run t's result was not overwritten by run u's.
        m.outputs[0].verify(vol.path()).unwrap();
    }
}

#[test]
fn outputs_an_encoder_cannot_write_are_refused_before_any_work() {
    let vol = volume();
    let wide = vol.path().join("img/wide.png");
    image::RgbImage::from_pixel(20_000, 8, image::Rgb([90, 120, 200]))
        .save(&wide)
        .unwrap();
    let long = vol.path().join("img/long.png");
    image::RgbImage::from_pixel(8, 70_000, image::Rgb([90, 120, 200]))
        .save(&long)
        .unwrap();
    for (format, img, limit) in [("webp", &wide, "16383"), ("jpeg", &long, "65535")] {
        let t0 = std::time::Instant::now();
        let out = stylize(vol.path())
            .args(["--style", "7", "--format", format])
            .args(["--image", img.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{format}: {err}");
        assert!(
            err.contains(limit) && err.contains(img.to_str().unwrap()),
            "{err}"
        );
        assert!(!err.contains("ms)"), "a forward pass ran: {err}");
        assert!(t0.elapsed().as_secs() < 30);
        assert!(!manifest_path(vol.path(), "t", "stylize").exists());
        assert!(!vol.path().join("runs/t/styled").exists());
    }
    // The same image within the limit (--max-size) goes through.
    let out = stylize(vol.path())
        .args(["--style", "7", "--format", "webp", "--max-size", "4000"])
        .args(["--image", wide.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #14: small images run side by side, one per core (`--lanes`). The files are the same
/// bytes whichever way they ran, and each output records how many ran at once.
#[test]
fn lanes_make_the_same_files_as_one_image_at_a_time() {
    let vol = volume();
    let images = vol.path().join("img");
    let mut outputs = Vec::new();
    for (lanes, out) in [("1", "one"), ("3", "three")] {
        let run = stylize(vol.path())
            .args([
                "--image",
                images.to_str().unwrap(),
                "--style",
                "7",
                "--style",
                "19",
                "--lanes",
                lanes,
                "--out",
                out,
                "--manifest",
            ])
            .arg(vol.path().join(format!("{out}.json")))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let m = Manifest::read(&vol.path().join(format!("{out}.json")), vol.path()).unwrap();
        assert_eq!(m.outputs.len(), 8);
        let mut files: Vec<(String, Vec<u8>)> = m
            .outputs
            .iter()
            .map(|a| {
                assert_eq!(
                    a.attributes.get("forward_lanes").and_then(|v| v.as_u64()),
                    Some(lanes.parse().unwrap()),
                    "{a:?}"
                );
                let rel = a.path.strip_prefix(out).unwrap().to_string();
                (rel, std::fs::read(a.abs_path(vol.path())).unwrap())
            })
            .collect();
        files.sort();
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1]);
    let zero = stylize(vol.path())
        .args([
            "--image",
            images.to_str().unwrap(),
            "--style",
            "7",
            "--lanes",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
}

/// Issue #14: images larger than the contact sheet's cells get thumbnails (of the input and of
/// each output), recorded with their digests for upload's sheet; small ones do not.
#[test]
fn large_enough_images_leave_thumbnails_for_the_contact_sheet() {
    let vol = volume();
    let img = vol.path().join("img");
    image::open(assets().join("coffee.png"))
        .unwrap()
        .resize_exact(300, 200, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(img.join("big.jpg"))
        .unwrap();
    let out = stylize(vol.path())
        .args(["--image", img.to_str().unwrap(), "--style", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Manifest::read(&manifest_path(vol.path(), "t", "stylize"), vol.path()).unwrap();
    let thumb = |a: &kubestyle_manifest::Artifact, k: &str| {
        a.attributes.get(k).map(|t| {
            let rel = t["path"].as_str().unwrap();
            let (sha, _) = kubestyle_manifest::sha256_file(vol.path().join(rel)).unwrap();
            assert_eq!(t["sha256"].as_str(), Some(sha.as_str()), "{rel}");
            image::image_dimensions(vol.path().join(rel)).unwrap()
        })
    };
    for a in &m.outputs {
        let big = a.path.ends_with("big.jpg");
        let (t, i) = (thumb(a, "thumbnail"), thumb(a, "input_thumbnail"));
        if big {
            assert_eq!(t, Some((192, 128)), "{a:?}");
            assert_eq!(i, Some((192, 128)), "{a:?}");
        } else {
            assert_eq!((t, i), (None, None), "{a:?}");
        }
    }
}
