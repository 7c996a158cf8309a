//! Decoding parity with PIL (libjpeg-turbo), the decoder of the PyTorch/onnxruntime pipelines
//! kubestyle's outputs are compared with.
//!
//! `tests/fixtures/decode/gen_corpus.py` wrote small JPEGs (4:4:4, 4:2:2, 4:2:0, progressive,
//! restart markers, grayscale, CMYK, YCCK, RGB without transform, tiny and odd sizes, EXIF
//! orientations 1-8) and PNGs (palette ± tRNS, RGBA, LA, 1/2/4-bit gray, 16-bit), each with
//! `NAME.ref.png`: PIL's `exif_transpose(open(p)).convert("RGB")`, stored losslessly. Every file
//! goes through `image_io::load` — what stylize feeds the network, as floats in 0..1 — and is
//! quantised back to 8 bits the way stylize writes outputs; the result must equal the reference
//! exactly. 16-bit PNGs are the documented exception (references: exact rounding; PIL's own
//! decode beside them as `NAME.pil.png`).

use std::path::{Path, PathBuf};

use kubestyle_manifest::StageError;
use kubestyle_stylize::image_io::{self, Planar, quantise};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode")
}

/// Inputs of the corpus (files with a `.ref.png` beside them).
fn inputs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !n.ends_with(".ref.png")
                && !n.ends_with(".pil.png")
                && with_suffix(p, ".ref.png").exists()
        })
        .collect();
    v.sort();
    v
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let stem = p.file_stem().and_then(|s| s.to_str()).expect("name");
    p.with_file_name(format!("{stem}{suffix}"))
}

/// What stylize would write back for the decoded planes: interleaved 8-bit RGB.
fn rgb8(img: &Planar) -> Vec<u8> {
    let plane = img.width * img.height;
    (0..plane)
        .flat_map(|i| [0, 1, 2].map(|c| quantise(img.rgb[c * plane + i])))
        .collect()
}

fn reference(p: &Path) -> (usize, usize, Vec<u8>) {
    let r = image::open(p).expect("reference png").to_rgb8();
    (r.width() as usize, r.height() as usize, r.into_raw())
}

/// (max, mean) absolute difference in levels.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let (max, sum) = d.fold((0u8, 0u64), |(m, s), v| (m.max(v), s + u64::from(v)));
    (max, sum as f64 / a.len().max(1) as f64)
}

#[test]
fn decoded_pixels_match_pil() {
    let files = inputs();
    let jpegs = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .count();
    assert!(
        jpegs >= 42 && files.len() >= 54,
        "corpus incomplete: {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for p in &files {
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        let img = image_io::load(p, u64::MAX, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h, want) = reference(&with_suffix(p, ".ref.png"));
        if (img.width, img.height) != (w, h) {
            failures.push(format!(
                "{name}: {}x{} instead of {w}x{h}",
                img.width, img.height
            ));
            continue;
        }
        let (max, mean) = diff(&rgb8(&img), &want);
        if max > 0 {
            failures.push(format!("{name}: max {max} levels, mean {mean:.3}"));
        }
        if name.starts_with("png16_") {
            let (_, _, pil) = reference(&with_suffix(p, ".pil.png"));
            let (pmax, _) = diff(&rgb8(&img), &pil);
            if !name.starts_with("png16_gray") {
                // RGB, RGBA, LA: PIL keeps the high byte (truncates), within one level of
                // exact rounding.
                assert!(pmax <= 1, "{name}: {pmax} levels from PIL");
            } else {
                // PIL opens 16-bit gray as I;16 and convert("RGB") clips it at 255: our ramp
                // is nearly all white there. We do not follow that (see README).
                let white = pil.iter().filter(|&&v| v == 255).count();
                assert!(
                    white * 10 > pil.len() * 9,
                    "{name}: PIL's clipping changed?"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differences from PIL:\n{}",
        failures.join("\n")
    );
}

#[test]
fn jpeg_header_probe_and_orientation() {
    for o in 1..=8 {
        let p = corpus().join(format!("exif{o}_420_45x29.jpg"));
        let (format, dims) = image_io::probe(&p, u64::MAX).expect("probe");
        assert_eq!(format, Some(image::ImageFormat::Jpeg));
        // probe gives the stored size; load the displayed one (5-8 swap the sides).
        assert_eq!(dims, (45, 29));
        let img = image_io::load(&p, u64::MAX, None).expect("load");
        let want = if o >= 5 { (29, 45) } else { (45, 29) };
        assert_eq!((img.width, img.height), want, "orientation {o}");
        assert_eq!(img.format, Some(image::ImageFormat::Jpeg));
        assert!(img.alpha.is_none());
    }
}

fn expect_invalid<T: std::fmt::Debug>(
    r: Result<T, impl Into<StageError>>,
    path: &Path,
    what: &str,
) -> String {
    // As the stage reports it (the exit code comes from the StageError).
    match r.map_err(Into::into) {
        Err(StageError::InputInvalid(m)) => {
            assert!(
                m.contains(&path.display().to_string()),
                "{what}: no path in {m:?}"
            );
            m
        }
        other => panic!("{what}: expected InputInvalid, got {other:?}"),
    }
}

#[test]
fn jpeg_over_max_pixels_is_refused_from_the_header() {
    let p = corpus().join("s420_q75_127x83.jpg");
    let m = expect_invalid(image_io::probe(&p, 127 * 83 - 1), &p, "probe");
    assert!(m.contains("--max-pixels"), "{m}");
    let m = expect_invalid(image_io::load(&p, 127 * 83 - 1, None), &p, "load");
    assert!(m.contains("--max-pixels"), "{m}");
    assert!(image_io::load(&p, 127 * 83, None).is_ok());
}

#[test]
fn hostile_jpegs_are_input_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read(corpus().join("prog420_q80_101x91.jpg")).expect("read");
    let base = std::fs::read(corpus().join("s420_q75_127x83.jpg")).expect("read");
    // A pseudo-random garbage tail (xorshift), no 0xFF bytes' meaning assumed.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut sos_corrupt = base.clone();
    let sos = base
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("SOS");
    sos_corrupt.truncate(sos + 20);
    sos_corrupt.extend_from_slice(&garbage);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated-half", base[..base.len() / 2].to_vec()),
        ("truncated-header", base[..base.len().min(300)].to_vec()),
        ("no-eoi", base[..base.len() - 2].to_vec()),
        ("progressive-truncated", good[..good.len() * 2 / 3].to_vec()),
        ("garbage-after-soi", [&[0xFF, 0xD8][..], &garbage].concat()),
        ("soi-only", vec![0xFF, 0xD8, 0xFF]),
        ("garbage-scan", sos_corrupt),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(format!("{name}.jpg"));
        std::fs::write(&p, &bytes).expect("write");
        let r = std::panic::catch_unwind(|| image_io::load(&p, u64::MAX, None));
        let r = r.unwrap_or_else(|_| panic!("{name}: panicked"));
        let m = expect_invalid(r, &p, name);
        assert!(m.contains("JPEG") || m.contains("image"), "{name}: {m}");
    }
    // Trailing bytes after EOI are fine (PIL accepts them too).
    let p = dir.path().join("trailing.jpg");
    std::fs::write(&p, [&base[..], b"trailing"].concat()).expect("write");
    let img = image_io::load(&p, u64::MAX, None).expect("trailing bytes");
    let (_, _, want) = reference(&corpus().join("s420_q75_127x83.ref.png"));
    assert_eq!(diff(&rgb8(&img), &want).0, 0);
}
