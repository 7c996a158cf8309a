//! The demo spec (`examples/demo.yaml`) on local storage: outputs, SHA256SUMS, results table,
//! contact sheet; then the step cache: an identical rerun, a corrupted cached output, and one
//! input image changed under the same name.

use crate::*;

const STYLES: [&str; 6] = [
    "style-07",
    "style-19",
    "style-23",
    "style-03@0.50+style-12@0.50",
    "style-07~preserve-colour",
    "style-07~strength=0.50",
];
const PHOTOS: [&str; 3] = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"];

fn styled_key(style: &str, photo: &str) -> String {
    format!("styled/multistyle26/{style}/local/images/{photo}")
}

#[test]
fn demo_spec_end_to_end_then_the_step_cache() {
    let w = Workdir::new();
    let spec = w.spec_from_example(
        "demo.yaml",
        &[(
            "- images/",
            format!("- {}/", w.path().join("images").display()),
        )],
    );
    let vol = w.volume();
    let published = w.out().join("demo");

    // 1. First run: every stage runs, every expected output is published and verifies.
    let out = run_ok(&spec, &[], &[]);
    assert!(
        statuses(&out).values().all(|s| s == "ran"),
        "{:?}",
        statuses(&out)
    );
    assert!(out.contains("contact sheet:"), "{out}");
    let keys = verify_sums(&published);
    for style in STYLES {
        for photo in PHOTOS {
            let k = styled_key(style, photo);
            assert!(keys.contains(&k), "{k} not published: {keys:?}");
        }
    }
    for k in [
        "results.csv",
        "results.json",
        "results.parquet",
        "contact-sheet.jpg",
        "manifests/download.manifest.json",
        "manifests/package-model.manifest.json",
        "manifests/stylize.manifest.json",
        "logs/download.log",
        "logs/package-model.log",
        "logs/stylize.log",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not published: {keys:?}");
    }
    let stylize = manifest(&vol, "demo", "stylize");
    assert_eq!(stylize.outputs.len(), 18);
    check_results_match_manifest(
        &std::fs::read(published.join("results.csv")).unwrap(),
        &stylize,
    );
    check_parquet_matches_csv(
        &published.join("results.parquet"),
        &published.join("results.csv"),
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(published.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 18);
    assert_eq!(json["rows"][0]["backend"], "flex");
    // Contact sheet: 3 inputs down, input + 6 styles across.
    let sheet = image::open(published.join("contact-sheet.jpg")).unwrap();
    assert_eq!(sheet.width(), 8 + 7 * 200);
    assert!(sheet.height() > 3 * 200);
    // Every styled output keeps its input's size (max_size 320) and format.
    let astro = image::open(published.join(styled_key("style-07", "astronaut.jpg"))).unwrap();
    assert_eq!((astro.width(), astro.height()), (320, 320));

    // 2. The same command again runs no stage: no manifest is rewritten.
    let before = manifest_bytes(&vol, "demo");
    let out = run_ok(&spec, &[], &[]);
    assert!(
        statuses(&out).values().all(|s| s == "cached"),
        "{:?}",
        statuses(&out)
    );
    assert!(out.contains("0 of 4 stages ran"), "{out}");
    assert_eq!(
        before,
        manifest_bytes(&vol, "demo"),
        "a manifest was rewritten"
    );
    let log = std::fs::read_to_string(vol.join("runs/demo/stylize.log")).unwrap();
    assert!(
        log.contains("18 computed, 0 reused"),
        "a cached run must keep the log of the run that made the outputs: {log}"
    );

    // 3. A cached output corrupted on the volume is detected and recomputed (same bytes).
    let victim = vol
        .join("runs/demo")
        .join(styled_key("style-19", "coffee.jpg"));
    let good = sha(&victim);
    std::fs::write(&victim, b"not an image any more").unwrap();
    let out = run_ok(&spec, &[], &[]);
    let st = statuses(&out);
    assert_eq!(st["download"], "cached");
    assert_eq!(st["package-model"], "cached");
    assert_eq!(st["stylize"], "ran");
    assert_eq!(sha(&victim), good, "recomputed output differs");
    let log = std::fs::read_to_string(vol.join("runs/demo/stylize.log")).unwrap();
    assert!(log.contains("1 computed, 17 reused"), "{log}");
    verify_sums(&published);

    // 4. One input changed under the same name: only its outputs are redone.
    let untouched = vol
        .join("runs/demo")
        .join(styled_key("style-07", "astronaut.jpg"));
    let untouched_mtime = std::fs::metadata(&untouched).unwrap().modified().unwrap();
    let chelsea_old = sha(&vol
        .join("runs/demo")
        .join(styled_key("style-07", "chelsea.jpg")));
    let src = w.path().join("images/chelsea.jpg");
    image::open(&src).unwrap().fliph().save(&src).unwrap();
    let out = run_ok(&spec, &[], &[]);
    let st = statuses(&out);
    assert_eq!(st["download"], "ran");
    assert_eq!(st["package-model"], "cached", "the model did not change");
    assert_eq!(st["stylize"], "ran");
    assert_eq!(st["upload"], "ran");
    let log = std::fs::read_to_string(vol.join("runs/demo/stylize.log")).unwrap();
    assert!(log.contains("6 computed, 12 reused"), "{log}");
    assert_eq!(
        std::fs::metadata(&untouched).unwrap().modified().unwrap(),
        untouched_mtime,
        "an output of an unchanged input was rewritten"
    );
    let chelsea_new = sha(&vol
        .join("runs/demo")
        .join(styled_key("style-07", "chelsea.jpg")));
    assert_ne!(chelsea_new, chelsea_old);
    // The published copy was replaced and everything still verifies.
    assert_eq!(
        sha(&published.join(styled_key("style-07", "chelsea.jpg"))),
        chelsea_new
    );
    verify_sums(&published);
    check_results_match_manifest(
        &std::fs::read(published.join("results.csv")).unwrap(),
        &manifest(&vol, "demo", "stylize"),
    );
    assert!(temp_files(&vol).is_empty(), "{:?}", temp_files(&vol));

    // 5. --force-stage upload re-runs upload only.
    let out = run_ok(&spec, &["--force-stage", "upload"], &[]);
    let st = statuses(&out);
    assert_eq!(st["stylize"], "cached");
    assert_eq!(st["upload"], "ran");
}

#[test]
fn validate_accepts_the_examples() {
    for name in ["demo.yaml", "s3.yaml", "transformer-net.yaml"] {
        let p = repo().join("examples").join(name);
        let out = pipeline(&["validate", p.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{name}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Promise (#23): with `anonymize: true` nothing published names an input — no file name, no
/// path, no source, in any published file (tables, manifest copies, logs, SHA256SUMS, keys) —
/// while the outputs still verify; the IDs are HMAC-SHA-256 of each source with the salt
/// (recomputed here with Python's hmac); another salt gives other IDs; a missing or short salt
/// is a usage error before any stage, with nothing written.
#[test]
fn anonymized_demo_publishes_ids_and_no_input_names() {
    let w = Workdir::new();
    let images = w.path().join("images");
    let spec = w.spec_from_example(
        "demo.yaml",
        &[
            ("- images/", format!("- {}/", images.display())),
            ("output:", "anonymize: true\noutput:".into()),
        ],
    );
    let salt = "kubestyle-test-salt-0123456789".to_string();

    // No salt, then a short one: exit 2, no stage, nothing written.
    for env in [
        vec![],
        vec![("KUBESTYLE_ANONYMIZE_SALT", "short".to_string())],
    ] {
        let out = pipeline(&["run", spec.to_str().unwrap()], &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("KUBESTYLE_ANONYMIZE_SALT"), "{err}");
        assert!(!err.contains("==> [1/4]"), "a stage started: {err}");
        assert!(!w.out().exists());
    }

    let env = [("KUBESTYLE_ANONYMIZE_SALT", salt.clone())];
    run_ok(&spec, &[], &env);
    let published = w.out().join("demo");
    let keys = verify_sums(&published);
    assert!(keys.iter().any(|k| k == "results.parquet"), "{keys:?}");
    let secrets: Vec<String> = PHOTOS
        .iter()
        .flat_map(|p| {
            let stem = p.split('.').next().unwrap().to_string();
            [p.to_string(), stem]
        })
        .chain([images.display().to_string(), "local/images".into()])
        .collect();
    let files = files_under(&published);
    assert!(files.len() > 20, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|x| x == s.as_bytes()),
                "{} names {s:?}",
                f.display()
            );
        }
        assert!(
            !f.display().to_string().contains("local/images"),
            "{}",
            f.display()
        );
    }
    // The salt itself is nowhere on the volume or in what was published.
    for f in files.iter().chain(&files_under(&w.volume())) {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(salt.len()).any(|x| x == salt.as_bytes()),
            "{} holds the salt",
            f.display()
        );
    }
    check_parquet_matches_csv(
        &published.join("results.parquet"),
        &published.join("results.csv"),
    );
    // Each row's input is HMAC-SHA-256(salt, its source), as Python computes it.
    let stylize = manifest(&w.volume(), "demo", "stylize");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(published.join("results.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 18);
    let source_of_id = |id: &str| -> Option<String> {
        stylize.outputs.iter().find_map(|a| {
            let src = a.attributes["input_source"].as_str()?.to_string();
            let py = std::process::Command::new(std::env::var_os("KUBESTYLE_PYTHON").unwrap())
                .args([
                    "-c",
                    "import hmac,hashlib,sys; print('anon-' + hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest()[:32])",
                    &salt,
                    &src,
                ])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&py.stdout).trim() == id).then_some(src)
        })
    };
    let first_id = rows[0]["input"].as_str().unwrap().to_string();
    assert!(first_id.starts_with("anon-"), "{first_id}");
    assert_eq!(rows[0]["input_source"], first_id);
    let src = source_of_id(&first_id).expect("the ID is the HMAC of one input's source");
    assert!(src.contains("/images/"), "{src}");
    assert!(
        rows[0]["output_key"].as_str().unwrap().contains(&first_id),
        "{}",
        rows[0]
    );

    // Another salt: other IDs (only upload runs again: its key names the salt).
    let out = run_ok(
        &spec,
        &[],
        &[("KUBESTYLE_ANONYMIZE_SALT", format!("{salt}-other"))],
    );
    let st = statuses(&out);
    assert_eq!(st["stylize"], "cached");
    assert_eq!(st["upload"], "ran");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(published.join("results.json")).unwrap()).unwrap();
    let ids: Vec<&str> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&first_id.as_str()), "{ids:?}");
    assert!(ids.iter().all(|i| i.starts_with("anon-")), "{ids:?}");
}
