//! End-to-end: the `pipeline` binary running the four component binaries, on local storage and
//! against a real S3 server (moto, started by `scripts/test.sh`), with the real trained
//! MultiStyle26 network and real photos.
//!
//! The binaries are the workspace's own build (`cargo build --workspace` first; the test
//! script does it): they are looked up beside this test executable's `deps/` directory.

mod bad_input;
mod containers;
mod local;
mod resume;
mod s3;
mod sigkill_resume;
mod signals;
mod transformer_net;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kubestyle_manifest::Manifest;

/// `target/<profile>/`, where cargo put the component binaries, or `KUBESTYLE_E2E_BIN_DIR`
/// (other binaries under test: a release build, a copy taken right after building).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = match std::env::var_os("KUBESTYLE_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf(),
    };
    for b in ["pipeline", "download", "package-model", "stylize", "upload"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run `cargo build --workspace` before these tests (scripts/test.sh does)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

pub use kubestyle_testkit::assets;

/// A working directory with a copy of the example photos (`images/`), to change at will.
#[derive(Debug)]
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).expect("mkdir");
        for e in std::fs::read_dir(repo().join("examples/images")).expect("examples/images") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), images.join(e.file_name())).expect("copy");
        }
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn volume(&self) -> PathBuf {
        self.path().join("volume")
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// `examples/<name>` rewritten to this directory: volume, output, images and model paths.
    pub fn spec_from_example(&self, name: &str, edits: &[(&str, String)]) -> PathBuf {
        let mut text =
            std::fs::read_to_string(repo().join("examples").join(name)).expect("example spec");
        let model = assets().join("multistyle26.onnx");
        let base: Vec<(&str, String)> = vec![
            (
                "volume: ../.kubestyle/volume",
                format!("volume: {}", self.volume().display()),
            ),
            (
                "output: ../demo-output",
                format!("output: {}", self.out().display()),
            ),
            (
                "../.cache/assets/multistyle26.onnx",
                model.display().to_string(),
            ),
        ];
        for (from, to) in base.iter().chain(edits) {
            text = text.replace(from, to);
        }
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write spec");
        p
    }
}

/// `pipeline <args>`, with extra environment.
pub fn pipeline(args: &[&str], env: &[(&str, String)]) -> Output {
    let bins = bin_dir();
    let out = Command::new(bins.join("pipeline"))
        .args(args)
        .env("KUBESTYLE_BIN_DIR", &bins)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run pipeline");
    eprintln!(
        "--- pipeline {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `upload push PATHS --to TO` with `env`: how the README fills a bucket; must succeed.
pub fn push(paths: &[PathBuf], to: &str, env: &[(&str, String)]) {
    let out = Command::new(bin_dir().join("upload"))
        .arg("push")
        .args(paths)
        .args(["--to", to])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn run_ok(spec: &Path, extra: &[&str], env: &[(&str, String)]) -> String {
    let mut args = vec!["run", spec.to_str().expect("utf-8 path")];
    args.extend(extra);
    let out = pipeline(&args, env);
    assert!(out.status.success(), "pipeline run failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stage → "ran"/"cached", from the run summary.
pub fn statuses(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (stage, status) = (w.next()?, w.next()?);
            (["download", "package-model", "stylize", "upload"].contains(&stage)
                && ["ran", "cached"].contains(&status))
            .then(|| (stage.to_string(), status.to_string()))
        })
        .collect()
}

pub fn sha(p: &Path) -> String {
    kubestyle_manifest::sha256_file(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .0
        .to_string()
}

/// Check every line of `<dir>/SHA256SUMS` against the files in `dir`; returns the keys.
pub fn verify_sums(dir: &Path) -> Vec<String> {
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut keys = Vec::new();
    for line in sums.lines() {
        let (digest, key) = line.split_once("  ").expect("sum line");
        assert_eq!(
            sha(&dir.join(key)),
            digest,
            "{key} does not match SHA256SUMS"
        );
        keys.push(key.to_string());
    }
    assert!(!keys.is_empty());
    keys
}

pub fn manifest(volume: &Path, run: &str, stage: &str) -> Manifest {
    let p = kubestyle_manifest::manifest::manifest_path(volume, run, stage);
    Manifest::read(&p, volume).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every manifest of a run, as bytes (to show nothing was rewritten).
pub fn manifest_bytes(volume: &Path, run: &str) -> BTreeMap<String, Vec<u8>> {
    ["download", "package-model", "stylize", "upload"]
        .iter()
        .map(|s| {
            let p = kubestyle_manifest::manifest::manifest_path(volume, run, s);
            (s.to_string(), std::fs::read(&p).expect("manifest"))
        })
        .collect()
}

/// Files under `dir` whose names are AtomicFile temp names (left by a killed writer).
pub fn temp_files(dir: &Path) -> Vec<String> {
    kubestyle_testkit::files(dir)
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f);
            kubestyle_manifest::atomic::is_temp_name(name)
        })
        .collect()
}

/// `results.parquet` read back as a user reads it (pandas over pyarrow, the test venv's
/// `KUBESTYLE_PYTHON`) holds the CSV's rows and columns with their types: sizes as integers,
/// times as floats, the digest as 32 bytes, the timestamp as a UTC timestamp.
pub fn check_parquet_matches_csv(parquet: &Path, csv: &Path) {
    let python = std::env::var_os("KUBESTYLE_PYTHON")
        .expect("KUBESTYLE_PYTHON (the test venv's Python with pandas and pyarrow) is not set: run scripts/test.sh");
    let script = r#"
import sys
import pandas as pd
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
types = {f.name: str(f.type) for f in t.schema}
want = {"width": "uint32", "height": "uint32", "milliseconds": "double",
        "sha256": "fixed_size_binary[32]", "stylized_at": "timestamp[us, tz=UTC]",
        "input": "string", "style": "string", "output_key": "string"}
for k, v in want.items():
    assert types[k] == v, (k, types[k], v)
p = t.to_pandas()
c = pd.read_csv(sys.argv[2], dtype=str, keep_default_na=False)
assert list(p.columns) == list(c.columns), (list(p.columns), list(c.columns))
assert len(p) == len(c) > 0, (len(p), len(c))
for col in c.columns:
    if col == "sha256":
        got = [b.hex() for b in p[col]]
    elif col == "milliseconds":
        got = [f"{x:.1f}" for x in p[col]]
    elif col == "stylized_at":
        got = [x.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for x in p[col]]
    else:
        got = [str(x) for x in p[col]]
    assert got == list(c[col]), (col, got[:3], list(c[col])[:3])
print(len(p))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(parquet)
        .arg(csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "results.parquet differs from results.csv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The results table's rows must be exactly the stylize manifest's outputs.
pub fn check_results_match_manifest(results_csv: &[u8], m: &Manifest) {
    let mut rdr = csv::Reader::from_reader(results_csv);
    let headers = rdr.headers().expect("header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (k, s, w, h) = (
        col("output_key"),
        col("sha256"),
        col("width"),
        col("height"),
    );
    let mut rows: Vec<(String, String, String, String)> = rdr
        .records()
        .map(|r| {
            let r = r.expect("row");
            (r[k].into(), r[s].into(), r[w].into(), r[h].into())
        })
        .collect();
    let mut want: Vec<(String, String, String, String)> = m
        .outputs
        .iter()
        .map(|a| {
            (
                // Published below the run's prefix by its path within the run's directory.
                kubestyle_manifest::manifest::published_key(&m.run_id, &a.path).to_string(),
                a.sha256.to_string(),
                a.attributes["width"].to_string(),
                a.attributes["height"].to_string(),
            )
        })
        .collect();
    rows.sort();
    want.sort();
    assert_eq!(
        rows, want,
        "results.csv rows differ from the stylize manifest"
    );
}
