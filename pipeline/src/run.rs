//! `pipeline run`: the four stages as separate processes of the component binaries, on a local
//! volume, exactly as in a cluster: each reads the previous stage's manifest from
//! `<volume>/runs/<run>/` and writes its own there.
//!
//! * Before any stage starts: the spec validates, the binaries are found, every source is
//!   resolved (objects HEADed, prefixes listed, local paths stat-ed), every bucket is reachable.
//! * Each stage decides itself whether its step cache holds (same cache key, outputs verify);
//!   the runner tells "cached" from "ran" by whether the stage rewrote its manifest.
//! * Stage output is streamed with a stage prefix and saved as `runs/<run>/<stage>.log` — only
//!   when the stage did work, so a cached stage keeps the log of the run that made its outputs.
//! * A failing stage stops the run: its name, exit code and log tail are printed and the
//!   runner exits with the stage's exit code.
//! * `--runner docker` ([`Runner::Docker`]): the same commands, each stage in its image
//!   (`crate::docker`); everything above holds unchanged.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kubestyle_manifest::atomic::{AtomicFile, Clobber};
use kubestyle_manifest::command::naming::{log_path, manifest_path, run_path};
use kubestyle_manifest::{ArtifactKind, Manifest, StageError};
use kubestyle_s3::S3ArgsExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::docker::{self, DockerOptions};
use crate::plan::{Layout, StageCmd, download_command, stage_commands};
use crate::spec::{self, Loaded};
use crate::{PipelineError, STAGES, Stage};

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run every stage even when its step cache holds.
    pub force: bool,
    /// Run this stage and every later one even when cached.
    pub force_stage: Option<Stage>,
    /// Where the component binaries are (default: `KUBESTYLE_BIN_DIR`, else beside `pipeline`).
    pub bin_dir: Option<PathBuf>,
    /// What runs the stages.
    pub runner: Runner,
}

/// What runs the stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Runner {
    /// The component binaries, as processes of this machine.
    #[default]
    Process,
    /// Each stage in its container image ([`crate::docker`]).
    Docker(DockerOptions),
}

/// How one stage is started: the program and its arguments, and for a container its name
/// (signals and kills go through the engine).
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    /// (engine, container name) of a containerised stage.
    container: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    Ran,
    Cached,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: Stage,
    pub status: StageStatus,
    pub seconds: f64,
    pub manifest: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub volume: PathBuf,
    /// Where the run was published (`<output>/<run>/`).
    pub destination: String,
    pub stages: Vec<StageReport>,
}

impl RunReport {
    pub fn ran(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.status == StageStatus::Ran)
            .count()
    }
}

/// Find a component binary: `--bin-dir`, else `KUBESTYLE_BIN_DIR`, else beside this executable.
///
/// `PATH` is never searched: `download` and `upload` are common names, and a foreign program
/// of that name must not be handed the run's volume and credentials. What is found must say it
/// is this build's component ([`identify`]).
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Option<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("KUBESTYLE_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_exe().ok()?.parent()?.to_path_buf(),
        },
    };
    Some(dir.join(name)).filter(|p| p.is_file())
}

/// Check that `bin` is kubestyle's `name` of this very version: `bin --version` must print
/// exactly `<name> <version>` (clap's format) within a few seconds.
pub async fn identify(name: &str, bin: &Path) -> Result<(), String> {
    identify_with(
        name,
        &bin.display().to_string(),
        bin,
        &["--version".into()],
        10,
    )
    .await
}

/// [`identify`] for what `program args` prints (`what` names it in messages).
async fn identify_with(
    name: &str,
    what: &str,
    program: &Path,
    args: &[String],
    seconds: u64,
) -> Result<(), String> {
    let want = format!("{name} {}", env!("CARGO_PKG_VERSION"));
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(seconds), run).await {
        Err(_) => {
            return Err(format!("{what}: `--version` did not answer in {seconds} s"));
        }
        Ok(Err(e)) => return Err(format!("{what}: cannot run it: {e}")),
        Ok(Ok(out)) => out,
    };
    let said = String::from_utf8_lossy(&out.stdout);
    let said = said.trim();
    if out.status.success() && said == want {
        Ok(())
    } else {
        let shown: String = said.chars().take(80).collect();
        Err(format!(
            "{what} is not kubestyle's {want} (`--version` said {shown:?})"
        ))
    }
}

/// Everything that can be checked before the first stage starts.
pub async fn preflight(l: &Loaded, cmds: &[StageCmd]) -> Result<(), StageError> {
    // `anonymize` needs its salt in the environment upload inherits: said now, not after the
    // forward passes.
    if l.spec.anonymize {
        use kubestyle_manifest::command::upload::{ANONYMIZE_SALT_ENV, check_salt};
        check_salt(std::env::var_os(ANONYMIZE_SALT_ENV)).map_err(StageError::Usage)?;
    }
    // Sources: exactly what download will resolve, with download's own code: its command, and
    // the S3 settings it will take from the environment it inherits from this process.
    let mut args = download_command(cmds)
        .ok_or_else(|| StageError::Internal("no download stage".into()))?
        .clone();
    args.s3 = args
        .s3
        .with_env()
        .map_err(|e| StageError::Internal(format!("download arguments: {e}")))?;
    args.s3.max_attempts = 2;
    let n = kubestyle_download::check(&args).await?;
    tracing::info!("preflight: {n} source files found");
    // The destination bucket.
    if let Ok(kubestyle_manifest::Location::S3 { bucket, .. }) = l.output().parse() {
        let client = args.s3.client().await?;
        if !kubestyle_s3::bucket_exists(&client, &bucket).await? {
            return Err(StageError::InputMissing(vec![format!(
                "output bucket {bucket:?} does not exist"
            )]));
        }
    }
    Ok(())
}

/// Prints stage output and the progress line (a spinner on a terminal, plain lines otherwise).
struct Ui {
    bar: ProgressBar,
}

impl Ui {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_length(STAGES.len() as u64);
        bar.enable_steady_tick(Duration::from_millis(200));
        Ui { bar }
    }

    fn line(&self, s: &str) {
        if self.bar.is_hidden() {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }
}

/// Run the pipeline described by the spec at `spec_path`.
pub async fn run(spec_path: &Path, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    let l = spec::load(spec_path)?;
    let run_id = l.spec.name.clone();

    let programs = match &opts.runner {
        Runner::Process => binaries(opts).await?,
        Runner::Docker(d) => engine_and_images(&l, d).await?,
    };

    let first_forced = if opts.force {
        Some(0)
    } else {
        opts.force_stage.map(|s| s.index())
    };
    let force: [bool; 4] = std::array::from_fn(|i| first_forced.is_some_and(|f| i >= f));
    let volume = l.volume();
    let layout = Layout {
        volume: volume.display().to_string(),
        with_logs: true,
        shards: 1,
        gpu: false,
    };
    let cmds = stage_commands(&l, &layout, force);
    let destination = {
        let loc: kubestyle_manifest::Location = l.output().parse()?;
        loc.join(&format!("{run_id}/")).to_string()
    };

    // Nothing is written before the preflight passes.
    let ui = Ui::new();
    ui.bar.set_message("preflight");
    interrupts();
    preflight(&l, &cmds).await?;

    let run_dir = run_path(&volume, &run_id);
    std::fs::create_dir_all(&run_dir).map_err(|e| StageError::io(&run_dir, e))?;
    if let Runner::Docker(d) = &opts.runner {
        let mounts: Vec<docker::Mount> = cmds
            .iter()
            .flat_map(|c| docker::mounts(&volume, c))
            .collect();
        prepare_mounts(&mounts, d)?;
    }
    // One pipeline per run at a time; the lock goes with the process, so a killed run never
    // blocks the next one.
    let lock_path = run_dir.join(".pipeline.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| StageError::io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(StageError::Conflict(vec![format!(
            "another `pipeline run` is working on run {run_id:?} (lock {})",
            lock_path.display()
        )])
        .into());
    }

    let mut reports = Vec::new();
    for (i, (cmd, program)) in cmds.iter().zip(&programs).enumerate() {
        if let Some(signal) = interrupted_now() {
            return Err(PipelineError::Interrupted {
                stage: cmd.stage(),
                signal,
            });
        }
        ui.bar.set_position(i as u64);
        ui.bar.set_message(cmd.stage().as_str());
        ui.line(&format!(
            "==> [{}/{}] {}",
            i + 1,
            cmds.len(),
            cmd.stage().as_str()
        ));
        let launch = match &opts.runner {
            Runner::Process => Launch {
                program: program.clone(),
                args: cmd.args(),
                container: None,
            },
            Runner::Docker(d) => {
                let name = container_name(&run_id, cmd.stage());
                Launch {
                    program: program.clone(),
                    args: docker::run_args(&l, cmd, &volume, d, &name, &|n| {
                        std::env::var_os(n).is_some()
                    }),
                    container: Some((d.engine.clone(), name)),
                }
            }
        };
        let report = run_stage(cmd, &launch, &volume, &run_id, &ui).await?;
        ui.line(&format!(
            "==> {}: {} ({:.1} s)",
            cmd.stage().as_str(),
            match report.status {
                StageStatus::Ran => "done",
                StageStatus::Cached => "cached, nothing to do",
            },
            report.seconds
        ));
        if cmd.stage() == Stage::PackageModel {
            check_architectures(&l, &report.manifest, &volume)?;
        }
        reports.push(report);
    }
    ui.bar.finish_and_clear();
    drop(lock);
    Ok(RunReport {
        run_id,
        volume,
        destination,
        stages: reports,
    })
}

/// The manifest a stage writes (upload's is its receipt).
fn stage_manifest(volume: &Path, run_id: &str, stage: Stage) -> PathBuf {
    manifest_path(volume, run_id, stage.as_str())
}

async fn run_stage(
    cmd: &StageCmd,
    launch: &Launch,
    volume: &Path,
    run_id: &str,
    ui: &Ui,
) -> Result<StageReport, PipelineError> {
    let stage = cmd.stage();
    let manifest = stage_manifest(volume, run_id, stage);
    let before = std::fs::read(&manifest).ok();
    let log_path = log_path(volume, run_id, stage);
    let log = Arc::new(Mutex::new(AtomicFile::create(&log_path, Clobber::Replace)?));
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(VecDeque::new()));

    let t0 = Instant::now();
    let mut command = tokio::process::Command::new(&launch.program);
    command.args(&launch.args);
    if launch.container.is_none() {
        command.envs(cmd.env.iter().map(|(k, v)| (k, v)));
    }
    let mut child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            StageError::Internal(format!("cannot start {}: {e}", launch.program.display()))
        })?;

    let prefix = format!("{:>13} | ", stage.as_str());
    let mut readers = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let err = child
        .stderr
        .take()
        .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    for stream in [out, err].into_iter().flatten() {
        let (log, tail, prefix) = (log.clone(), tail.clone(), prefix.clone());
        let bar = ui.bar.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(mut t) = tail.lock() {
                    if t.len() == 30 {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                let shown = format!("{prefix}{line}");
                if bar.is_hidden() {
                    eprintln!("{shown}");
                } else {
                    bar.println(shown);
                }
            }
        }));
    }

    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| StageError::Internal(format!("waiting for {}: {e}", stage.as_str())))?,
        signal = interrupted() => {
            // The stage stops cleanly on the same signal (temp files removed, uploads aborted,
            // no manifest); it is killed only if it does not exit in time.
            match &launch.container {
                None => forward(&child, signal),
                Some((engine, name)) => container_signal(engine, name, Some(signal)).await,
            }
            if tokio::time::timeout(STAGE_STOP_TIMEOUT, child.wait()).await.is_err() {
                tracing::error!("{stage} did not stop within {STAGE_STOP_TIMEOUT:?}: killing it");
                if let Some((engine, name)) = &launch.container {
                    container_signal(engine, name, None).await;
                }
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            for r in readers { let _ = r.await; }
            commit_log(log)?;
            return Err(PipelineError::Interrupted { stage, signal });
        }
    };
    for r in readers {
        let _ = r.await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = std::fs::read(&manifest).ok();
    if !status.success() {
        commit_log(log)?;
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        // `docker run`'s own failures (the container did not start): 125 the engine, 126 the
        // entrypoint cannot be run, 127 it is not in the image.
        if let (Some((engine, _)), Some(code @ 125..=127)) = (&launch.container, status.code()) {
            return Err(StageError::Usage(format!(
                "{engine} could not start the {stage} container (exit {code}): {}",
                tail.join("\n")
            ))
            .into());
        }
        return Err(PipelineError::StageFailed {
            stage,
            code: status.code(),
            log: log_path,
            tail: tail.join("\n"),
        });
    }
    let cached = before.is_some() && before == after;
    if cached && log_path.is_file() {
        // Keep the log of the run that made the outputs; this one said "cached".
        drop(log);
    } else {
        // Ran, or cached without a log (killed after the stage's manifest, before its log was
        // committed): the log is published with the results, so this run's log is kept.
        commit_log(log)?;
    }
    Ok(StageReport {
        stage,
        status: if cached {
            StageStatus::Cached
        } else {
            StageStatus::Ran
        },
        seconds,
        manifest,
    })
}

/// The component binaries, found and identified (process runner).
async fn binaries(opts: &RunOptions) -> Result<Vec<PathBuf>, PipelineError> {
    let mut bins = Vec::new();
    let mut missing = Vec::new();
    for c in STAGES {
        match find_binary(c, opts.bin_dir.as_deref()) {
            Some(p) => bins.push(p),
            None => missing.push(c),
        }
    }
    if !missing.is_empty() {
        let place = match (&opts.bin_dir, std::env::var_os("KUBESTYLE_BIN_DIR")) {
            (Some(d), _) => format!("in --bin-dir {}", d.display()),
            (None, Some(d)) => format!("in KUBESTYLE_BIN_DIR {}", PathBuf::from(d).display()),
            (None, None) => "beside pipeline (PATH is not searched; give --bin-dir)".to_string(),
        };
        return Err(StageError::Usage(format!(
            "component binaries not found {place}: {} (build them with `cargo build --workspace`)",
            missing.join(", ")
        ))
        .into());
    }
    let mut foreign = Vec::new();
    for (c, bin) in STAGES.iter().zip(&bins) {
        if let Err(e) = identify(c, bin).await {
            foreign.push(e);
        }
    }
    if !foreign.is_empty() {
        return Err(StageError::Usage(format!(
            "refusing to run these as stages: {}",
            foreign.join("; ")
        ))
        .into());
    }
    Ok(bins)
}

/// The container engine answers, and every stage's image is there (pulled when it is not) and
/// says it is this version's stage (docker runner). Returns the engine's path once per stage.
async fn engine_and_images(l: &Loaded, d: &DockerOptions) -> Result<Vec<PathBuf>, PipelineError> {
    let engine = PathBuf::from(&d.engine);
    let ask = |args: &[&str]| {
        tokio::process::Command::new(&engine)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
    };
    let said = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr);
        e.lines().last().unwrap_or("").trim().to_string()
    };
    match tokio::time::timeout(Duration::from_secs(20), ask(&["version"])).await {
        Err(_) => {
            return Err(StageError::Usage(format!(
                "container engine `{}` did not answer `version` in 20 s",
                d.engine
            ))
            .into());
        }
        Ok(Err(e)) => {
            return Err(StageError::Usage(format!(
                "container engine `{}` cannot be run: {e} (install docker or podman, or give --engine)",
                d.engine
            ))
            .into());
        }
        Ok(Ok(o)) if !o.status.success() => {
            return Err(StageError::Usage(format!(
                "container engine `{}` is not usable: {}",
                d.engine,
                said(&o)
            ))
            .into());
        }
        Ok(Ok(_)) => {}
    }
    let mut problems = Vec::new();
    for stage in Stage::ALL {
        let image = docker::image(l, d, stage);
        let have = ask(&["image", "inspect", "--format", "{{.Id}}", &image])
            .await
            .is_ok_and(|o| o.status.success());
        if !have {
            tracing::info!("{image} is not here: pulling it");
            match ask(&["pull", &image]).await {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    problems.push(format!(
                        "image {image} is not here and cannot be pulled: {} (build it with \
                         `scripts/build-images.sh`, or give --registry/--tag)",
                        said(&o)
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("image {image}: {e}"));
                    continue;
                }
            }
        }
        let args = docker::version_args(&image, stage, d);
        if let Err(e) = identify_with(
            stage.as_str(),
            &format!("image {image}"),
            &engine,
            &args,
            60,
        )
        .await
        {
            problems.push(e);
        }
    }
    if !problems.is_empty() {
        return Err(StageError::Usage(format!(
            "cannot run the stages in containers: {}",
            problems.join("; ")
        ))
        .into());
    }
    Ok(vec![engine; Stage::ALL.len()])
}

/// The container of a stage: unique to this `pipeline` process.
fn container_name(run_id: &str, stage: Stage) -> String {
    format!(
        "kubestyle-{run_id}-{}-{}",
        stage.as_str(),
        std::process::id()
    )
}

/// Make the mounts usable by the containers' user: create the read-write ones, and when the
/// stages run as the images' user (a root caller), hand them to it (as a pod's `fsGroup` would
/// make the volume the pod's).
fn prepare_mounts(mounts: &[docker::Mount], d: &DockerOptions) -> Result<(), StageError> {
    for m in mounts.iter().filter(|m| !m.read_only) {
        std::fs::create_dir_all(&m.path).map_err(|e| StageError::io(&m.path, e))?;
    }
    if d.user != docker::IMAGE_USER || !nix_is_root() {
        return Ok(());
    }
    let (uid, gid) = (65532, 65532);
    fn walk(p: &Path, uid: u32, gid: u32) -> Result<(), StageError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(p).map_err(|e| StageError::io(p, e))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| StageError::io(p, e))?;
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p).map_err(|e| StageError::io(p, e))? {
                let e = e.map_err(|e| StageError::io(p, e))?;
                walk(&e.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    for m in mounts.iter().filter(|m| !m.read_only) {
        walk(&m.path, uid, gid)?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Send `signal` (None: kill) to a container through its engine.
async fn container_signal(engine: &str, name: &str, signal: Option<i32>) {
    let mut c = tokio::process::Command::new(engine);
    c.arg("kill");
    if let Some(s) = signal {
        c.arg("--signal").arg(s.to_string());
    }
    let run = c
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    if !matches!(
        tokio::time::timeout(Duration::from_secs(20), run).await,
        Ok(Ok(s)) if s.success()
    ) {
        tracing::warn!("{engine} kill {name} did not succeed (the container may have stopped)");
    }
}

fn commit_log(log: Arc<Mutex<AtomicFile>>) -> Result<(), StageError> {
    match Arc::try_unwrap(log) {
        Ok(m) => m
            .into_inner()
            .map_err(|_| StageError::Internal("log writer poisoned".into()))?
            .commit(),
        Err(_) => Err(StageError::Internal("log still in use".into())),
    }
}

/// How long a stage may take to stop after the signal is forwarded (its own clean-up is
/// bounded by 25 s) before it is killed.
const STAGE_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The first SIGINT/SIGTERM this process received (0: none yet). Listening starts on the
/// first call, from then on a signal no longer kills the runner: it is checked between stages
/// and forwarded to the running stage.
fn interrupts() -> tokio::sync::watch::Receiver<i32> {
    static RX: std::sync::OnceLock<tokio::sync::watch::Receiver<i32>> = std::sync::OnceLock::new();
    RX.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(0);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                tokio::spawn(async move {
                    let sig = tokio::select! {
                        _ = int.recv() => SignalKind::interrupt(),
                        _ = term.recv() => SignalKind::terminate(),
                    };
                    let _ = tx.send(sig.as_raw_value());
                    // Keep listening (later signals are not the default kill).
                    loop {
                        tokio::select! {
                            _ = int.recv() => {},
                            _ = term.recv() => {},
                        }
                    }
                });
            }
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(2);
            }
        });
        rx
    })
    .clone()
}

/// The signal received so far, if any.
fn interrupted_now() -> Option<i32> {
    Some(*interrupts().borrow()).filter(|&s| s != 0)
}

/// Resolves on SIGINT or SIGTERM, with its number.
async fn interrupted() -> i32 {
    let mut rx = interrupts();
    match rx.wait_for(|&s| s != 0).await {
        Ok(s) => *s,
        Err(_) => std::future::pending().await,
    }
}

/// Send `signal` to the running stage.
fn forward(child: &tokio::process::Child, signal: i32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let (Some(pid), Ok(sig)) = (child.id(), Signal::try_from(signal)) else {
            return;
        };
        let Ok(pid) = i32::try_from(pid) else { return };
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            tracing::warn!("forwarding {sig} to the stage (pid {pid}): {e}");
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (child, signal);
    }
}

/// The packaged networks must be of the architecture the spec declares for them.
fn check_architectures(l: &Loaded, manifest: &Path, volume: &Path) -> Result<(), StageError> {
    let m = Manifest::read(manifest, volume)?;
    let mut problems = Vec::new();
    for model in &l.spec.sources.models {
        let Some(want) = model.architecture else {
            continue;
        };
        let pkg = spec::model_package_name(&model.uri);
        let got = m
            .outputs
            .iter()
            .filter(|a| a.kind == ArtifactKind::Package)
            .find(|a| {
                a.attributes
                    .get("package")
                    .and_then(|v| v.as_str())
                    .is_some_and(|p| p.rsplit('/').next() == Some(pkg.as_str()))
            })
            .and_then(|a| a.attributes.get("architecture"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        match got {
            Some(g) if g == want.as_str() => {}
            Some(g) => problems.push(format!(
                "{} holds a {g} network, the spec says {}",
                model.uri,
                want.as_str()
            )),
            None => problems.push(format!("{} was not packaged", model.uri)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StageError::InputInvalid(problems.join("; ")))
    }
}

/// The closing summary, for stdout.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    for st in &r.stages {
        s.push_str(&format!(
            "{:<14} {:<7} {:>7.1} s\n",
            st.stage.as_str(),
            match st.status {
                StageStatus::Ran => "ran",
                StageStatus::Cached => "cached",
            },
            st.seconds
        ));
    }
    let dest = r.destination.trim_end_matches('/');
    s.push_str(&format!(
        "run {} — {} of {} stages ran\nresults:       {dest}/\ncontact sheet: {dest}/contact-sheet.jpg\ntable:         {dest}/results.csv\nvolume:        {}\n",
        r.run_id,
        r.ran(),
        r.stages.len(),
        r.volume.display()
    ));
    s
}
