//! SIGKILL at random moments (issue #12): `pipeline run` of the demo spec is killed with its
//! running stage — `kill -9` of the whole process group, as a node loss or an OOM kill would —
//! at a random moment, N times, each time resumed by running the same command again. At the end
//! the outputs are the same bytes as an uninterrupted run's and no temp file is left anywhere.
//!
//! `KUBESTYLE_SIGKILL_ROUNDS` (default 8) sets N, `KUBESTYLE_SIGKILL_SEED` replays a sequence
//! (the seed is printed). Prints `N kills, 0 lost`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// The outputs that must not depend on how often the run was interrupted: every published
/// file but the logs, the manifests and the results table and contact sheet (they carry
/// timestamps, timings and paths; SHA256SUMS covers those), and the packaged network on the
/// volume. The skipped files are only checked to exist (and SHA256SUMS to hold).
fn outputs(w: &Workdir) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let published = w.out().join("demo");
    for f in kubestyle_testkit::files(&published) {
        if f.starts_with("logs/")
            || f.starts_with("manifests/")
            || [
                "SHA256SUMS",
                "results.csv",
                "results.json",
                "results.parquet",
                "contact-sheet.jpg",
            ]
            .contains(&f.as_str())
        {
            out.insert(format!("out/{f}"), "(exists)".into());
            continue;
        }
        out.insert(format!("out/{f}"), sha(&published.join(&f)));
    }
    let models = w.volume().join("models");
    for f in kubestyle_testkit::files(&models) {
        out.insert(format!("volume/models/{f}"), sha(&models.join(&f)));
    }
    out
}

/// xorshift64*: enough randomness for kill times, and replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn spec_for(w: &Workdir) -> std::path::PathBuf {
    let images = (
        "- images/",
        format!("- {}/", w.path().join("images").display()),
    );
    w.spec_from_example("demo.yaml", &[images])
}

#[test]
fn sigkill_at_random_moments_then_resume_loses_nothing() {
    let rounds: usize = std::env::var("KUBESTYLE_SIGKILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("KUBESTYLE_SIGKILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("sigkill_resume: {rounds} rounds, KUBESTYLE_SIGKILL_SEED={seed}");
    let mut rng = Rng(seed);

    // Reference: an uninterrupted run, timed.
    let reference = Workdir::new();
    let t0 = Instant::now();
    run_ok(&spec_for(&reference), &[], &[]);
    let full = t0.elapsed();
    let want = outputs(&reference);
    assert!(want.keys().filter(|k| k.contains("/styled/")).count() == 18);

    let w = Workdir::new();
    let spec = spec_for(&w);
    let bins = bin_dir();
    let mut kills = 0;
    let mut attempts = 0;
    let mut complete = false;
    while kills < rounds {
        attempts += 1;
        assert!(
            attempts < rounds * 4 + 8,
            "too many attempts finished before their kill"
        );
        let mut cmd = Command::new(bins.join("pipeline"));
        cmd.args(["run", spec.to_str().unwrap()]);
        // Once a run has completed, redo its work from a random stage so that the next kill
        // still lands in the middle of something.
        if complete {
            let stage =
                ["download", "package-model", "stylize", "upload"][(rng.next() % 4) as usize];
            cmd.args(["--force-stage", stage]);
        }
        let delay = full.mul_f64(1.1 * rng.unit());
        let mut child = cmd
            .env("KUBESTYLE_BIN_DIR", &bins)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn pipeline");
        let pgid = child.id();
        let t = Instant::now();
        let mut finished = None;
        while t.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                finished = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The pipeline and its running stage together (the group survives its leader).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let st = match finished {
            Some(st) => st,
            None => child.wait().unwrap(),
        };
        if st.success() {
            eprintln!("attempt {attempts}: finished before the kill at {delay:?}");
            complete = true;
            continue;
        }
        kills += 1;
        complete = false;
        eprintln!("kill {kills}/{rounds} at {delay:?} ({st})");
    }

    // Resume to the end.
    let out = run_ok(&spec, &[], &[]);
    assert!(out.contains("of 4 stages ran"), "{out}");
    verify_sums(&w.out().join("demo"));
    let got = outputs(&w);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the published files differ from an uninterrupted run's"
    );
    let lost: Vec<&String> = want.keys().filter(|k| got[*k] != want[*k]).collect();
    assert!(
        lost.is_empty(),
        "differ from an uninterrupted run: {lost:?}"
    );
    let temps = temp_files(w.path());
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    assert!(
        no_stage_left(&w.volume()),
        "a killed stage is still running"
    );
    println!("{kills} kills, 0 lost");
}

/// No process still has the volume as an argument (a stage that survived its pipeline).
fn no_stage_left(volume: &Path) -> bool {
    let needle = volume.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    !procs.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&needle))
            .unwrap_or(false)
    })
}
