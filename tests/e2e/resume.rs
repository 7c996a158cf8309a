//! A run killed with SIGKILL in the middle of stylize (pipeline and stage together, as a
//! node loss or an OOM kill would) is resumed by running the same command again: the final
//! outputs are the same bytes as an uninterrupted run's, and no temp file is left anywhere.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::*;

fn styled_digests(published: &std::path::Path) -> Vec<(String, String)> {
    let sums = std::fs::read_to_string(published.join("SHA256SUMS")).unwrap();
    sums.lines()
        .filter(|l| l.contains("  styled/"))
        .map(|l| {
            let (d, k) = l.split_once("  ").unwrap();
            (k.to_string(), d.to_string())
        })
        .collect()
}

#[test]
fn sigkill_during_stylize_then_rerun_resumes() {
    // Reference: an uninterrupted run.
    let reference = Workdir::new();
    let images = |w: &Workdir| {
        (
            "- images/",
            format!("- {}/", w.path().join("images").display()),
        )
    };
    let spec = reference.spec_from_example("demo.yaml", &[images(&reference)]);
    run_ok(&spec, &[], &[]);
    let want = styled_digests(&reference.out().join("demo"));
    assert_eq!(want.len(), 18);

    // The same spec elsewhere, killed once the first stylized image is written.
    let w = Workdir::new();
    let spec = w.spec_from_example("demo.yaml", &[images(&w)]);
    let bins = bin_dir();
    let mut child = Command::new(bins.join("pipeline"))
        .args(["run", spec.to_str().unwrap()])
        .env("KUBESTYLE_BIN_DIR", &bins)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn pipeline");
    let pgid = child.id();
    let mut killed = false;
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("stylize |") && line.contains(" → ") {
            // The whole process group: the pipeline and the stylize process under it.
            let st = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status()
                .expect("kill");
            assert!(st.success());
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "stylize never wrote an output: {seen:#?}");
    assert!(!status.success());
    let vol = w.volume();
    assert!(
        !kubestyle_manifest::manifest::manifest_path(&vol, "demo", "stylize").exists(),
        "stylize was killed before its manifest (the commit marker)"
    );

    // Rerun: finished stages are skipped, stylize is redone, the results are the same bytes.
    let out = run_ok(&spec, &[], &[]);
    let st = statuses(&out);
    assert_eq!(st["download"], "cached");
    assert_eq!(st["package-model"], "cached");
    assert_eq!(st["stylize"], "ran");
    assert_eq!(st["upload"], "ran");
    let published = w.out().join("demo");
    verify_sums(&published);
    assert_eq!(styled_digests(&published), want);
    assert!(
        temp_files(&vol).is_empty(),
        "stray temp files: {:?}",
        temp_files(&vol)
    );
    assert!(
        temp_files(&w.out()).is_empty(),
        "stray temp files: {:?}",
        temp_files(&w.out())
    );
}
