//! The style controls (`~preserve-colour`, `~strength=S`, `--preserve-colour`, `--strength`) on
//! the trained MultiStyle26 network: strength 0 is the photo and strength 1 today's output byte
//! for byte; colour preservation and strength agree with a numpy reference (the YIQ transform
//! with NumPy's inverse matrix, the blend in sRGB values) to within a level, also composed with
//! a blend and under exact tiling; the controls name the output and key its cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use kubestyle_manifest::Manifest;
use kubestyle_manifest::manifest::manifest_path;

use kubestyle_testkit::assets;

fn python() -> PathBuf {
    std::env::var_os("KUBESTYLE_PYTHON")
        .map(PathBuf::from)
        .expect("KUBESTYLE_PYTHON (the test venv's Python with numpy and PIL) is not set: run scripts/test.sh")
}

/// A volume with the packaged MultiStyle26 network and `photo.png` (8-bit RGB, 150×100).
fn volume() -> tempfile::TempDir {
    let vol = tempfile::tempdir().unwrap();
    let a = assets();
    common::package_multistyle26(vol.path());
    image::open(a.join("chelsea.png"))
        .unwrap()
        .resize_exact(150, 100, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(vol.path().join("photo.png"))
        .unwrap();
    vol
}

/// The package run `t` made, from its manifest.
fn package(vol: &Path) -> PathBuf {
    let m = Manifest::read(&manifest_path(vol, "t", "package-model"), vol).unwrap();
    vol.join(m.outputs[0].attributes["package"].as_str().unwrap())
}

fn stylize(vol: &Path, run: &str, args: &[&str]) -> Manifest {
    Command::cargo_bin("stylize")
        .unwrap()
        .args(["--volume", vol.to_str().unwrap(), "--run-id", run])
        .arg("--package")
        .arg(package(vol))
        .arg("--image")
        .arg(vol.join("photo.png"))
        .args(args)
        .assert()
        .success();
    Manifest::read(&manifest_path(vol, run, "stylize"), vol).unwrap()
}

fn out(vol: &Path, run: &str, label: &str) -> PathBuf {
    vol.join(format!("runs/{run}/styled/multistyle26/{label}/photo.png"))
}

fn pixels(p: &Path) -> Vec<u8> {
    image::open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_rgb8()
        .into_raw()
}

/// The numpy reference: the largest difference, in levels, between `controlled` and the
/// controls applied by numpy to `plain` (the network's 8-bit output) and `photo`.
fn reference_diff(
    photo: &Path,
    plain: &Path,
    controlled: &Path,
    preserve: bool,
    strength: f32,
) -> u32 {
    let script = r#"
import sys
import numpy as np
from PIL import Image
photo, plain, controlled, preserve, strength = sys.argv[1:6]
p = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64) / 255
s = np.asarray(Image.open(plain).convert("RGB"), dtype=np.float64) / 255
c = np.asarray(Image.open(controlled).convert("RGB"), dtype=np.float64)
# YIQ, FCC NTSC 1953 (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer").
m = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
if preserve == "1":
    yiq_s, yiq_p = s @ m.T, p @ m.T
    s = np.clip(np.concatenate([yiq_s[..., :1], yiq_p[..., 1:]], axis=-1) @ np.linalg.inv(m).T, 0, 1)
t = float(strength)
ref = np.round(np.clip(p * (1 - t) + s * t, 0, 1) * 255)
print(int(np.abs(ref - c).max()))
"#;
    let o = Std::new(python())
        .args(["-c", script])
        .arg(photo)
        .arg(plain)
        .arg(controlled)
        .arg(if preserve { "1" } else { "0" })
        .arg(strength.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn strength_0_is_the_photo_and_1_is_todays_output_byte_for_byte() {
    let vol = volume();
    let v = vol.path();
    stylize(v, "t", &["--style", "7"]);
    stylize(
        v,
        "ends",
        &[
            "--style",
            "7~strength=0",
            "--style",
            "3:0.5,12:0.5~strength=0",
        ],
    );
    assert_eq!(
        pixels(&out(v, "ends", "style-07~strength=0.00")),
        pixels(&v.join("photo.png"))
    );
    assert_eq!(
        pixels(&out(v, "ends", "style-03@0.50+style-12@0.50~strength=0.00")),
        pixels(&v.join("photo.png"))
    );
    // Strength 1, given per style or as the default, is today's output: same name, same bytes.
    for (run, args) in [
        ("one", vec!["--style", "7~strength=1"]),
        ("flag", vec!["--style", "7", "--strength", "1"]),
    ] {
        stylize(v, run, &args);
        assert_eq!(
            std::fs::read(out(v, run, "style-07")).unwrap(),
            std::fs::read(out(v, "t", "style-07")).unwrap(),
            "{run}"
        );
    }
}

#[test]
fn colour_and_strength_match_a_numpy_reference_composed_and_tiled() {
    let vol = volume();
    let v = vol.path();
    let photo = v.join("photo.png");
    let m = stylize(
        v,
        "t",
        &[
            "--style",
            "7",
            "--style",
            "3:0.5,12:0.5",
            "--style",
            "7~preserve-colour",
            "--style",
            "7~strength=0.6",
            "--style",
            "3:0.5,12:0.5~strength=0.5~preserve-colour",
        ],
    );
    let plain7 = out(v, "t", "style-07");
    let blend = out(v, "t", "style-03@0.50+style-12@0.50");
    for (plain, label, preserve, strength) in [
        (&plain7, "style-07~preserve-colour", true, 1.0),
        (&plain7, "style-07~strength=0.60", false, 0.6),
        (
            &blend,
            "style-03@0.50+style-12@0.50~preserve-colour~strength=0.50",
            true,
            0.5,
        ),
    ] {
        let d = reference_diff(&photo, plain, &out(v, "t", label), preserve, strength);
        assert!(d <= 1, "{label}: {d} levels from the numpy reference");
    }
    // The colours changed: a preserved-colour output is not the plain one.
    assert_ne!(
        pixels(&out(v, "t", "style-07~preserve-colour")),
        pixels(&plain7)
    );
    // The manifest records the controls of each output.
    let a = m
        .outputs
        .iter()
        .find(|a| a.path.contains("style-07~strength=0.60"))
        .unwrap();
    assert_eq!(a.attributes["preserve_colour"], false);
    assert!((a.attributes["strength"].as_f64().unwrap() - 0.6).abs() < 1e-6);

    // Exact tiling: the controls act per pixel on the tiled output.
    let tiled = [
        "--tile-above",
        "4000",
        "--tiling",
        "exact",
        "--band-rows",
        "16",
    ];
    let mut args = vec!["--style", "7", "--preserve-colour", "--strength", "0.7"];
    args.extend(tiled);
    stylize(v, "tiled", &args);
    let mut args = vec!["--style", "7"];
    args.extend(tiled);
    stylize(v, "tiled-plain", &args);
    let d = reference_diff(
        &photo,
        &out(v, "tiled-plain", "style-07"),
        &out(v, "tiled", "style-07~preserve-colour~strength=0.70"),
        true,
        0.7,
    );
    assert!(d <= 1, "tiled: {d} levels from the numpy reference");
}

#[test]
fn controls_key_the_step_cache_and_bad_ones_are_refused() {
    let vol = volume();
    let v = vol.path();
    let m1 = stylize(v, "t", &["--style", "7~strength=0.5"]);
    let key1 = m1.outputs[0].attributes["item_key"].clone();
    let m2 = stylize(v, "t", &["--style", "7~strength=0.5"]);
    assert_eq!(m2.outputs[0].attributes["item_key"], key1);
    let m3 = stylize(
        v,
        "t",
        &["--style", "7", "--strength", "0.5", "--preserve-colour"],
    );
    let a = &m3.outputs[0];
    assert!(
        a.path.contains("style-07~preserve-colour~strength=0.50"),
        "{}",
        a.path
    );
    assert_ne!(a.attributes["item_key"], key1);
    for (args, says) in [
        (vec!["--style", "7~strength=1.5"], "from 0 to 1"),
        (vec!["--style", "7~sepia"], "unknown control"),
        (vec!["--style", "7", "--strength", "2"], "from 0 to 1"),
    ] {
        let o = Command::cargo_bin("stylize")
            .unwrap()
            .args([
                "--volume",
                v.to_str().unwrap(),
                "--run-id",
                "bad",
                "--package",
            ])
            .arg(package(v))
            .arg("--image")
            .arg(v.join("photo.png"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(matches!(o.status.code(), Some(2 | 4)), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!v.join("runs/bad/styled").exists(), "{args:?}");
    }
}
