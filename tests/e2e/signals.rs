//! SIGTERM and SIGINT stop every stage cleanly (issue #12): each stage binary is stopped in the
//! middle of real work; it exits 143 (SIGTERM) or 130 (SIGINT), leaves no temp file, writes no
//! manifest, and `upload` leaves no multipart upload behind. `pipeline run` forwards the signal
//! to its running stage, waits for it and exits with the same code; the stage is gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kubestyle_manifest::manifest::manifest_path;
use kubestyle_testkit::S3Server;

use crate::*;

/// A stage (or pipeline) process with its stderr in a file.
struct Running {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Running {
    fn spawn(mut cmd: Command, log: PathBuf) -> Running {
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn");
        Running { child, log, what }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll `ready` (every few ms) until it holds; fails if the process exits first.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Running) -> bool) {
        let t0 = Instant::now();
        while !ready(self) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{} exited ({st}) before {what}:\n{}", self.what, self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    fn finish(mut self) -> (ExitStatus, String) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let log = self.log();
                eprintln!("--- {}: {st}\n{log}", self.what);
                return (st, log);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "{} did not stop after the signal:\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -s {sig} {pid}");
}

fn bin(name: &str) -> Command {
    Command::new(bin_dir().join(name))
}

fn no_temp_files(dir: &Path) {
    let t = temp_files(dir);
    assert!(t.is_empty(), "temp files left in {}: {t:?}", dir.display());
}

fn assert_stopped_by(st: ExitStatus, log: &str, sig: &str, code: i32) {
    assert_eq!(st.code(), Some(code), "{log}");
    assert!(
        log.contains(&format!("SIG{sig} received")),
        "the stage did not handle SIG{sig}:\n{log}"
    );
}

/// A volume with the MultiStyle26 package (run `t`), made by the real `package-model`.
fn packaged_volume(w: &Workdir) -> PathBuf {
    let vol = w.volume();
    std::fs::create_dir_all(&vol).unwrap();
    let out = bin("package-model")
        .args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .arg(assets().join("multistyle26.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vol
}

#[test]
fn sigint_stops_stylize_mid_run() {
    let w = Workdir::new();
    let vol = packaged_volume(&w);
    let mut cmd = bin("stylize");
    cmd.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .arg("--image")
        .arg(w.path().join("images"))
        .args(["--max-size", "640"]);
    for s in ["1", "2", "3", "4", "5", "6"] {
        cmd.args(["--style", s]);
    }
    let mut p = Running::spawn(cmd, w.path().join("stylize.log"));
    // The first of 18 images is written: the others are still to come.
    p.wait_until("the first stylized image", |p| p.log().contains(" → "));
    p.signal("INT");
    let (st, log) = p.finish();
    assert_stopped_by(st, &log, "INT", 130);
    let written = log.matches(" → ").count();
    assert!(written < 18, "stylize finished before the signal:\n{log}");
    assert!(!manifest_path(&vol, "t", "stylize").exists());
    no_temp_files(&vol);
}

#[test]
fn sigterm_stops_package_model_mid_run() {
    let w = Workdir::new();
    let vol = w.volume();
    std::fs::create_dir_all(&vol).unwrap();
    // A hundred networks to package (a few ms each).
    let weights = w.path().join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    let mut cmd = bin("package-model");
    cmd.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"]);
    for i in 0..100 {
        let p = weights.join(format!("m{i:03}.onnx"));
        std::fs::copy(assets().join("multistyle26.onnx"), &p).unwrap();
        cmd.arg(p);
    }
    let mut p = Running::spawn(cmd, w.path().join("package-model.log"));
    p.wait_until("the first package", |p| p.log().contains("packaged"));
    p.signal("TERM");
    let (st, log) = p.finish();
    assert_stopped_by(st, &log, "TERM", 143);
    assert!(
        log.matches("packaged").count() < 100,
        "package-model finished before the signal:\n{log}"
    );
    assert!(!manifest_path(&vol, "t", "package-model").exists());
    no_temp_files(&vol);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_download_mid_transfer() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("sigdl").await;
    let chunk = kubestyle_testkit::bytes(1 << 20, 7);
    for i in 0..4 {
        let data: Vec<u8> = (0..48u8)
            .flat_map(|k| chunk.iter().map(move |x| x ^ k ^ i))
            .collect();
        s3.put(&b, &format!("big/{i}.bin"), &data).await;
    }
    let w = Workdir::new();
    let vol = w.volume();
    std::fs::create_dir_all(&vol).unwrap();
    let mut cmd = bin("download");
    cmd.args([
        "--volume",
        vol.to_str().unwrap(),
        "--run-id",
        "t",
        "-j",
        "1",
    ])
    .arg(format!("s3://{b}/big/"))
    .envs(s3.env());
    let mut p = Running::spawn(cmd, w.path().join("download.log"));
    // An object is being written to the volume.
    p.wait_until("a download in progress", |_| !temp_files(&vol).is_empty());
    p.signal("TERM");
    let (st, log) = p.finish();
    assert_stopped_by(st, &log, "TERM", 143);
    assert!(!manifest_path(&vol, "t", "download").exists());
    no_temp_files(&vol);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_aborts_multipart_uploads_in_flight() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("sigup").await;
    let w = Workdir::new();
    let vol = w.volume();
    let data = vol.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let chunk = kubestyle_testkit::bytes(1 << 20, 9);
    for name in ["a.bin", "b.bin"] {
        let big: Vec<u8> = (0..160u8)
            .flat_map(|k| chunk.iter().map(move |x| x ^ k))
            .collect();
        std::fs::write(data.join(name), big).unwrap();
    }
    let out = bin("download")
        .args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest_path(&vol, "t", "download");
    let mut cmd = bin("upload");
    cmd.args(["publish", "--volume", vol.to_str().unwrap()])
        .arg("--manifest")
        .arg(&m)
        .args(["--to", &format!("s3://{b}/")])
        .args([
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
            "-j",
            "2",
        ])
        .envs(s3.env());
    let mut p = Running::spawn(cmd, w.path().join("upload.log"));
    // Wait for parts to be in the bucket.
    let t0 = Instant::now();
    loop {
        let up = s3
            .client
            .list_multipart_uploads()
            .bucket(&b)
            .send()
            .await
            .unwrap();
        if !up.uploads().is_empty() {
            break;
        }
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!(
                "upload exited ({st}) before any multipart upload:\n{}",
                p.log()
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", p.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.signal("TERM");
    let (st, log) = tokio::task::spawn_blocking(move || p.finish())
        .await
        .unwrap();
    assert_stopped_by(st, &log, "TERM", 143);
    assert!(log.contains("aborted"), "{log}");
    let up = s3
        .client
        .list_multipart_uploads()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    assert!(
        up.uploads().is_empty(),
        "multipart uploads left: {:?}",
        up.uploads()
    );
    assert!(!manifest_path(&vol, "t", "upload").exists());
    // Nothing half-published either: the big objects never completed.
    let keys = s3.keys(&b, "").await;
    assert!(!keys.iter().any(|k| k.ends_with(".bin")), "{keys:?}");
    no_temp_files(&vol);
}

/// The pids of `pid`'s children (every thread's).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn pipeline_stopped_during_stylize(sig: &str, code: i32) {
    let w = Workdir::new();
    let images = (
        "- images/",
        format!("- {}/", w.path().join("images").display()),
    );
    let spec = w.spec_from_example(
        "demo.yaml",
        &[images, ("max_size: 320", "max_size: 640".to_string())],
    );
    let bins = bin_dir();
    let mut cmd = Command::new(bins.join("pipeline"));
    cmd.args(["run", spec.to_str().unwrap()])
        .env("KUBESTYLE_BIN_DIR", &bins);
    let mut p = Running::spawn(cmd, w.path().join("pipeline.log"));
    p.wait_until("stylize writing its first image", |p| {
        p.log()
            .lines()
            .any(|l| l.contains("stylize |") && l.contains(" → "))
    });
    let stage = children(p.child.id());
    assert_eq!(stage.len(), 1, "one stage process: {stage:?}");
    // The signal goes to the pipeline process only.
    p.signal(sig);
    let (st, log) = p.finish();
    assert_eq!(st.code(), Some(code), "{log}");
    assert!(
        log.contains(&format!("interrupted by SIG{sig} during stylize")),
        "{log}"
    );
    // The stage got the signal and stopped cleanly (not killed), and it is gone.
    assert!(
        log.lines()
            .any(|l| l.contains("stylize | ") && l.contains(&format!("SIG{sig} received"))),
        "the signal was not forwarded:\n{log}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", stage[0])).exists(),
        "the stage process {} is still there",
        stage[0]
    );
    let vol = w.volume();
    assert!(!manifest_path(&vol, "demo", "stylize").exists());
    assert!(!manifest_path(&vol, "demo", "upload").exists());
    no_temp_files(&vol);
    no_temp_files(w.path());
    // And the run resumes.
    let out = run_ok(&spec, &[], &[]);
    let st = statuses(&out);
    assert_eq!(st["package-model"], "cached");
    assert_eq!(st["stylize"], "ran");
    no_temp_files(w.path());
}

#[test]
fn pipeline_forwards_sigterm_to_its_stage() {
    pipeline_stopped_during_stylize("TERM", 143);
}

#[test]
fn pipeline_forwards_sigint_to_its_stage() {
    pipeline_stopped_during_stylize("INT", 130);
}
