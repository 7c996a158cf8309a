//! The container tier (issue #25): every stage in its real image, run as the rendered pods run
//! it — user 65532, read-only root, only the volume and a `/tmp` tmpfs writable, no shell —
//! by `pipeline run --runner docker`, and compared byte for byte with the process runner.
//!
//! `#[ignore]`d: they need a container engine and the images. `tests/containers/run.sh` starts
//! dockerd when none answers, builds the images (`scripts/build-images.sh --offline`, tagged
//! `kubestyle-test/…:ci`), starts moto and runs these with `--ignored`; it is not part of
//! `.ci/run`. `KUBESTYLE_TEST_IMAGE_REGISTRY`/`_TAG` and `KUBESTYLE_CONTAINER_ENGINE` choose
//! other images and engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubestyle_testkit::S3Server;

use crate::*;

const STAGES: [&str; 4] = ["download", "package-model", "stylize", "upload"];

fn engine() -> String {
    std::env::var("KUBESTYLE_CONTAINER_ENGINE").unwrap_or_else(|_| "docker".into())
}
fn registry() -> String {
    std::env::var("KUBESTYLE_TEST_IMAGE_REGISTRY").unwrap_or_else(|_| "kubestyle-test".into())
}
fn tag() -> String {
    std::env::var("KUBESTYLE_TEST_IMAGE_TAG").unwrap_or_else(|_| "ci".into())
}
fn image(name: &str) -> String {
    format!("{}/kubestyle-{name}:{}", registry(), tag())
}

/// `<engine> <args>`: status, stdout, stderr.
fn engine_run(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(engine())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("container engine");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pipeline run --runner docker` with the test images.
fn docker_run_args<'a>(spec: &'a str, reg: &'a str, tag: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        spec,
        "--runner",
        "docker",
        "--registry",
        reg,
        "--tag",
        tag,
    ]
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The outputs that must be identical between runners: the styled images, thumbnails and the
/// packaged networks (results tables and manifests carry timings and are not).
fn deterministic(all: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    all.iter()
        .filter(|(k, _)| {
            k.contains("/styled/")
                || k.starts_with("styled/")
                || k.ends_with(".png")
                || k.ends_with(".jpg") && !k.ends_with("contact-sheet.jpg")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn uid_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().uid()
}

/// Each image: runs as 65532:65532 with a read-only root and no network, answers `--version`
/// with this version and `--help`, has no shell, and its entrypoint is its stage.
#[test]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
fn every_image_runs_as_the_pods_run_it() {
    let version = env!("CARGO_PKG_VERSION");
    for name in STAGES.iter().chain(&["pipeline"]) {
        let img = image(name);
        let (st, user, err) =
            engine_run(&["image", "inspect", "--format", "{{.Config.User}}", &img]);
        assert!(st.success(), "{img} is not built: {err}");
        assert_eq!(user.trim(), "65532:65532", "{img}'s user");
        let base = [
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "65532:65532",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ];
        // The entrypoint, as the image is run without a command.
        let (st, out, err) = engine_run(&[&base[..], &[img.as_str(), "--version"]].concat());
        assert!(st.success(), "{img} --version: {err}");
        assert_eq!(out.trim(), format!("{name} {version}"), "{img}");
        // By name on PATH, as the Jobs' `command: [<stage>]`.
        let (st, out, err) =
            engine_run(&[&base[..], &["--entrypoint", name, img.as_str(), "--help"]].concat());
        assert!(st.success(), "{img} {name} --help: {err}");
        assert!(out.contains("Usage:"), "{img} --help: {out}");
        // No shell, no package manager.
        for prog in ["/bin/sh", "/bin/bash", "/usr/bin/apt-get"] {
            let (st, _, err) =
                engine_run(&[&base[..], &["--entrypoint", prog, img.as_str()]].concat());
            assert!(!st.success(), "{img} has {prog}");
            assert!(
                err.contains("no such file") || err.contains("not found"),
                "{img} {prog}: {err}"
            );
        }
    }
}

/// The demo spec end to end with every stage in its image, on local storage: the styled
/// images, thumbnails and packages are byte-identical to the process runner's; the files the
/// stages wrote belong to 65532 (the caller is root: the volume was handed to the images'
/// user); a second run finds every stage cached (the step cache works across the mounts).
#[test]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
fn demo_in_containers_is_byte_identical_to_processes() {
    let (reg, tg) = (registry(), tag());
    let procs = Workdir::new();
    let spec_p = procs.spec_from_example("demo.yaml", &[]);
    let out = run_ok(&spec_p, &[], &[]);
    assert!(statuses(&out).values().all(|s| s == "ran"), "{out}");

    let boxed = Workdir::new();
    let spec_c = boxed.spec_from_example("demo.yaml", &[]);
    let spec_c = spec_c.to_str().unwrap();
    let args = docker_run_args(spec_c, &reg, &tg);
    let run = pipeline(&args, &[]);
    assert!(run.status.success(), "pipeline run --runner docker failed");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(statuses(&stdout).len(), 4, "{stdout}");
    assert!(statuses(&stdout).values().all(|s| s == "ran"), "{stdout}");

    let a = files(&procs.out().join("demo"));
    let b = files(&boxed.out().join("demo"));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the runners published different files"
    );
    let (da, db) = (deterministic(&a), deterministic(&b));
    assert!(da.len() >= 12, "styled outputs: {:?}", da.keys());
    for (k, v) in &da {
        assert!(
            db[k] == *v,
            "{k} differs between the process and docker runners"
        );
    }
    verify_sums(&boxed.out().join("demo"));
    // The packaged network on the volume, too.
    let pkgs = |w: &Workdir| {
        files(&w.volume().join("runs/demo"))
            .into_iter()
            .filter(|(k, _)| k.starts_with("models/"))
            .collect::<BTreeMap<_, _>>()
    };
    let (pa, pb) = (pkgs(&procs), pkgs(&boxed));
    assert!(!pa.is_empty());
    assert_eq!(pa, pb, "packages differ between the runners");

    if nix_root() {
        let m = boxed.volume().join("runs/demo/stylize.manifest.json");
        assert_eq!(uid_of(&m), 65532, "{} written as 65532", m.display());
        assert_eq!(uid_of(&boxed.out().join("demo/SHA256SUMS")), 65532);
    }
    // The stage logs of the containers are kept as the process runner keeps them.
    let log = std::fs::read_to_string(boxed.volume().join("runs/demo/stylize.log")).unwrap();
    assert!(!log.is_empty());

    // Again: every stage cached.
    let again = pipeline(&args, &[]);
    assert!(again.status.success());
    let s = String::from_utf8_lossy(&again.stdout);
    assert!(statuses(&s).values().all(|s| s == "cached"), "{s}");
    // No container is left behind.
    let (_, left, _) = engine_run(&[
        "ps",
        "-a",
        "--filter",
        "label=kubestyle.dev/run=demo",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left.trim(), "", "containers left: {left}");
}

/// Whether this test runs as root (from /proc: the tests crate has no libc binding).
fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `examples/s3.yaml` against moto with every stage in its image (the containers reach moto on
/// the host's network; credentials go to download and upload only, by name): the published
/// objects verify against SHA256SUMS and the styled ones are byte-identical to a process run's.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
async fn s3_in_containers_is_byte_identical_to_processes() {
    let s3 = S3Server::get().await;
    let inputs = s3.bucket("inputs").await;
    let models = s3.bucket("models").await;
    let env = s3.env();
    let env_ref: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let w = Workdir::new();
    push(&[w.path().join("images")], &format!("s3://{inputs}/"), &env);
    push(
        &[assets().join("multistyle26.onnx")],
        &format!("s3://{models}/"),
        &env,
    );
    let mut published = Vec::new();
    for runner in ["process", "docker", "kfp-local"] {
        let results = s3.bucket(&format!("results-{runner}")).await;
        let wd = Workdir::new();
        let spec = wd.spec_from_example(
            "s3.yaml",
            &[
                (
                    "s3://kubestyle-inputs/photos/",
                    format!("s3://{inputs}/images/"),
                ),
                ("kubestyle-models", models.clone()),
                ("kubestyle-results", results.clone()),
            ],
        );
        let spec = spec.to_str().unwrap().to_string();
        let (reg, tg) = (registry(), tag());
        if runner == "kfp-local" {
            run_with_kfp_local(&spec, &wd, &env_ref);
        } else {
            let args = if runner == "docker" {
                docker_run_args(&spec, &reg, &tg)
            } else {
                vec!["run", spec.as_str()]
            };
            let out = pipeline(&args, &env_ref);
            assert!(out.status.success(), "{runner} run failed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(statuses(&stdout).values().all(|s| s == "ran"), "{stdout}");
        }
        // Credentials never in the logs the stages wrote.
        let secret = env
            .iter()
            .find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY")
            .map(|(_, v)| v.clone())
            .unwrap();
        for s in STAGES {
            let log = std::fs::read_to_string(wd.volume().join(format!("runs/demo-s3/{s}.log")))
                .unwrap_or_default();
            assert!(
                !log.contains(&secret) || secret.len() < 8,
                "{s}.log holds the secret"
            );
        }
        let prefix = "runs/demo-s3/";
        let local = wd.path().join("downloaded");
        let mut got = BTreeMap::new();
        for k in s3.keys(&results, prefix).await {
            let bytes = s3.read(&results, &k).await;
            let rel = k.strip_prefix(prefix).unwrap().to_string();
            let p = local.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
            got.insert(rel, bytes);
        }
        verify_sums(&local);
        published.push(got);
    }
    let a = &published[0];
    let da = deterministic(a);
    assert!(da.len() >= 12, "styled outputs: {:?}", da.keys());
    for (runner, b) in ["docker", "kfp-local"].iter().zip(&published[1..]) {
        // The KFP run's stylize is 2 shards (the spec's kubernetes section): its manifests are
        // per shard, so only the styled outputs and thumbnails are compared by name there.
        if *runner == "docker" {
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        }
        assert_eq!(
            da,
            deterministic(b),
            "styled outputs differ between the process and {runner} runners"
        );
    }
}

/// The same spec through `pipeline compile --target kfp` (the spec's `kubernetes` section with
/// the test images, stylize as 2 CPU shards) and the kfp SDK's local DockerRunner
/// (`scripts/kfp_local.py`): every step in its image, the volume handed over by the Pipeline
/// Run Workspace, upload publishing to the same S3.
fn run_with_kfp_local(spec: &str, wd: &Workdir, env: &[(&str, String)]) {
    let python = std::env::var("KUBESTYLE_ENGINES_PYTHON").expect(
        "KUBESTYLE_ENGINES_PYTHON: a Python with the kfp SDK (scripts/test-env.sh sets it)",
    );
    let text = std::fs::read_to_string(spec).unwrap();
    let cluster = format!(
        "{text}\nkubernetes:\n  registry: {}\n  tag: {}\n  s3_secret: kubestyle-s3\n  volume:\n    size: 1Gi\n    access_mode: ReadWriteMany\n  gpu:\n    enabled: false\n    shards: 2\n    parallelism: 2\n",
        registry(),
        tag()
    );
    let cluster_spec = wd.path().join("s3-kfp.yaml");
    std::fs::write(&cluster_spec, cluster).unwrap();
    let compiled = wd.path().join("s3.kfp.yaml");
    let out = pipeline(
        &[
            "compile",
            cluster_spec.to_str().unwrap(),
            "--target",
            "kfp",
            "-o",
            compiled.to_str().unwrap(),
        ],
        env,
    );
    assert!(out.status.success(), "compile failed");
    let started = Instant::now();
    let out = Command::new(python)
        .arg(repo().join("scripts/kfp_local.py"))
        .arg(&compiled)
        .arg("--workspace")
        .arg(wd.path().join("kfp"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // kfp's local logger colours task names and statuses: drop the escape sequences.
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let text = plain;
    eprintln!(
        "--- kfp_local.py in {:?}: {}\n{text}",
        started.elapsed(),
        out.status
    );
    assert!(out.status.success(), "the KFP local run failed:\n{text}");
    assert!(text.contains("succeeded"), "{text}");
    for step in ["download", "package-model", "stylize", "upload"] {
        assert!(
            text.contains(&format!("Task '{step}' finished with status SUCCESS")),
            "{step}: {text}"
        );
    }
}

/// A missing image is a usage error naming it, before anything is written; a missing engine
/// too.
#[test]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
fn a_missing_image_or_engine_is_named() {
    let w = Workdir::new();
    let spec = w.spec_from_example("demo.yaml", &[]);
    let spec = spec.to_str().unwrap();
    let reg = registry();
    let out = pipeline(&docker_run_args(spec, &reg, "no-such-tag"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{reg}/kubestyle-download:no-such-tag")),
        "{err}"
    );
    assert!(!w.volume().join("runs").exists(), "nothing written");

    let out = pipeline(
        &[
            "run",
            spec,
            "--runner",
            "docker",
            "--engine",
            "/nonexistent/docker",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/docker"), "{err}");
}

/// SIGTERM to `pipeline run --runner docker` while stylize computes in its container: the
/// signal reaches the stage inside (through the engine), which stops cleanly — `pipeline`
/// exits 143, no stylize manifest, no temp file on the volume, no container left — and the
/// next run resumes.
#[test]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
fn sigterm_reaches_the_stage_in_its_container() {
    let w = Workdir::new();
    // Every one of the 26 styles (78 outputs, some seconds), so that stylize is still
    // computing when the signal comes.
    let all: String = (0..26).map(|i| format!("  - \"{i}\"\n")).collect();
    let spec = w.spec_from_example("demo.yaml", &[("  - \"7\"\n", all)]);
    let bins = bin_dir();
    let (reg, tg) = (registry(), tag());
    let log = w.path().join("pipeline.log");
    let mut child = Command::new(bins.join("pipeline"))
        .args(docker_run_args(spec.to_str().unwrap(), &reg, &tg))
        .env("KUBESTYLE_BIN_DIR", &bins)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Wait until stylize's container is running.
    loop {
        let (_, names, _) = engine_run(&[
            "ps",
            "--filter",
            "label=kubestyle.dev/stage=stylize",
            "--format",
            "{{.Names}}",
        ]);
        if !names.trim().is_empty()
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("stylize |")
        {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "pipeline ended early");
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "stylize never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    e2e_signal(child.id(), "TERM");
    let st = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(143), "{text}");
    assert!(
        text.contains("interrupted by SIGTERM during stylize"),
        "{text}"
    );
    assert!(!w.volume().join("runs/demo/stylize.manifest.json").exists());
    let temps: Vec<PathBuf> = files(&w.volume())
        .keys()
        .filter(|k| k.contains(".tmp"))
        .map(PathBuf::from)
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    let (_, left, _) = engine_run(&[
        "ps",
        "-a",
        "--filter",
        "label=kubestyle.dev/stage=stylize",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(left.trim(), "", "containers left: {left}");
    // Resume: the cached stages are kept, stylize and upload run.
    let again = pipeline(&docker_run_args(spec.to_str().unwrap(), &reg, &tg), &[]);
    assert!(again.status.success());
    let s = statuses(&String::from_utf8_lossy(&again.stdout));
    assert_eq!(s["download"], "cached");
    assert_eq!(s["stylize"], "ran");
}

fn e2e_signal(pid: u32, sig: &str) {
    crate::signals::signal(pid, sig);
}

/// The CUDA image (`kubestyle-stylize-cuda`, when built: `tests/containers/run.sh` builds it
/// with `KUBESTYLE_CUDA=1`): stylize on libtorch inside it, as 65532 with a read-only root —
/// `--backend tch --device cpu` styles the demo's photos from a process run's packages (the
/// image's libtorch and CUDA libraries load without the node's driver), and `--device cuda` on
/// this GPU-less machine exits 9 (device unavailable), never computing on the CPU instead.
#[test]
#[ignore = "needs a container engine and the images: tests/containers/run.sh"]
fn the_cuda_image_runs_libtorch_and_refuses_a_missing_gpu() {
    let img = image("stylize-cuda");
    let (st, _, _) = engine_run(&["image", "inspect", &img]);
    if !st.success() {
        eprintln!("{img} not built (KUBESTYLE_CUDA=1 tests/containers/run.sh builds it): skipped");
        return;
    }
    let w = Workdir::new();
    let spec = w.spec_from_example("demo.yaml", &[]);
    run_ok(&spec, &[], &[]);
    let vol = w.volume().display().to_string();
    if nix_root() {
        // The process run wrote the volume as root: hand it to the images' user, as the docker
        // runner does.
        let st = Command::new("chown")
            .args(["-R", "65532:65532", &vol])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mount = format!("type=bind,src={vol},dst={vol}");
    let stylize = |device: &str| {
        engine_run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "65532:65532",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777",
            "--cap-drop",
            "ALL",
            "--mount",
            &mount,
            "--entrypoint",
            "stylize",
            &img,
            "--volume",
            &vol,
            "--run-id",
            "demo",
            "--style",
            "multistyle26/7",
            "--backend",
            "tch",
            "--device",
            device,
            "--force",
        ])
    };
    let (st, out, err) = stylize("cpu");
    assert!(
        st.success(),
        "tch on the CPU in the CUDA image:\n{out}{err}"
    );
    let m = manifest(&w.volume(), "demo", "stylize");
    assert!(m.outputs.len() >= 3, "{:?}", m.outputs.len());
    let (st, out, err) = stylize("cuda");
    assert_eq!(
        st.code(),
        Some(9),
        "--device cuda without a GPU:\n{out}{err}"
    );
}
