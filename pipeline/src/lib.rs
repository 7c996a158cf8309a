//! `pipeline`: the kubestyle controller.
//!
//! * [`spec`]: the YAML pipeline spec (strict, every error with its field and line) and its
//!   JSON Schema.
//! * [`plan`]: spec → the four stage command lines (pure).
//! * [`render`]: spec → Kubernetes objects (`pipeline render`).
//! * [`serve`]: spec → the objects serving the run's packages (`pipeline render --serve`).
//! * [`run`]: `pipeline run`, the stages as local processes with a step cache and resume.
//! * [`docker`]: `pipeline run --runner docker`, each stage in its container image.
//! * [`compile`]: spec → a Kubeflow Pipelines pipeline or an Argo Workflow (`pipeline compile`).

pub mod compile;
pub mod docker;
pub mod plan;
pub mod render;
pub mod run;
pub mod serve;
/// The spec (the `kubestyle-spec` crate).
pub use kubestyle_spec as spec;
pub mod submit;

pub use submit::ClusterArgs;

use std::path::PathBuf;

use kubestyle_manifest::{ExitStatus, StageError};

/// The stages and their binaries, in pipeline order (defined once, in the contract crate).
pub use kubestyle_manifest::{STAGES, Stage};

/// Why a pipeline command failed; [`PipelineError::exit_code`] is its exit code.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Spec(#[from] spec::SpecErrors),
    #[error(
        "stage {stage} failed with exit code {}{}; log {}\n--- last lines of the {stage} log ---\n{tail}",
        code.map(|c| c.to_string()).unwrap_or_else(|| "none (killed by a signal)".into()),
        code.and_then(exit_name).map(|n| format!(" ({n})")).unwrap_or_default(),
        log.display()
    )]
    StageFailed {
        stage: Stage,
        code: Option<i32>,
        log: PathBuf,
        tail: String,
    },
    /// A stage's Job failed on the cluster.
    #[error(
        "stage {stage} failed with exit code {}{}: {place}\n--- last lines of the {stage} log ---\n{tail}",
        code.map(|c| c.to_string()).unwrap_or_else(|| "none (the pod did not run to an exit)".into()),
        code.and_then(exit_name).map(|n| format!(" ({n})")).unwrap_or_default(),
    )]
    JobFailed {
        stage: Stage,
        code: Option<i32>,
        /// The Job, its condition, the failing pod (and shard) and what to do next.
        place: String,
        tail: String,
    },
    #[error(
        "timed out after {after:?} waiting for {stage}; the run goes on in the cluster: `pipeline status`, or submit again to keep following it"
    )]
    Timeout {
        stage: Stage,
        after: std::time::Duration,
    },
    /// SIGINT/SIGTERM: forwarded to the running stage, which stopped cleanly.
    #[error(
        "interrupted by {} during {stage}; run the same command again to resume",
        kubestyle_manifest::cancel::signal_name(*signal)
    )]
    Interrupted { stage: Stage, signal: i32 },
    #[error("{0}")]
    Other(#[from] StageError),
}

fn exit_name(code: i32) -> Option<&'static str> {
    ExitStatus::ALL
        .into_iter()
        .find(|s| i32::from(s.code()) == code)
        .map(ExitStatus::name)
}

impl kubestyle_manifest::error::ExitCoded for PipelineError {
    fn exit_code(&self) -> u8 {
        PipelineError::exit_code(self)
    }
}

impl PipelineError {
    /// Spec errors are usage errors (2); a failed stage's exit code is passed on (1 when it was
    /// killed by a signal); an interrupt is 128 + the signal: 130 (SIGINT), 143 (SIGTERM).
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Spec(_) => ExitStatus::Usage.code(),
            PipelineError::StageFailed { code, .. } | PipelineError::JobFailed { code, .. } => code
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(ExitStatus::Internal.code()),
            PipelineError::Interrupted { signal, .. } => {
                kubestyle_manifest::cancel::exit_code(*signal)
            }
            PipelineError::Timeout { .. } => 124,
            PipelineError::Other(e) => e.exit_status().code(),
        }
    }
}

/// The kubestyle controller.
#[derive(Debug, clap::Parser)]
#[command(name = "pipeline", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run every stage locally, as separate processes or each in its container image (`--runner
    /// docker`), skipping stages whose step cache holds.
    Run {
        /// The pipeline spec (YAML).
        spec: PathBuf,
        /// Run every stage, cached or not.
        #[arg(long)]
        force: bool,
        /// Run this stage and every later one, cached or not.
        #[arg(long, value_name = "STAGE")]
        force_stage: Option<Stage>,
        /// Where the component binaries are (default: KUBESTYLE_BIN_DIR, else beside pipeline; never PATH).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// What runs each stage: `process` (the component binaries) or `docker` (each stage in
        /// its container image, as the pods run it).
        #[arg(long, value_enum, default_value_t = RunnerKind::Process)]
        runner: RunnerKind,
        #[command(flatten)]
        containers: ContainerArgs,
    },
    /// Check a spec: every error with its field and line; exit 0 when it is valid.
    Validate { spec: PathBuf },
    /// Print the run's Kubernetes objects (claim and Jobs) as multi-document YAML, without a
    /// cluster.
    Render {
        spec: PathBuf,
        /// Namespace of the objects (default: the spec's; none: left out, for `kubectl apply -n`).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Instead, the objects that serve the run's packages over HTTP (`stylize serve` on the
        /// run's claim): `deployment` (a Deployment and a Service, the default) or `kserve` (a
        /// KServe InferenceService).
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "deployment", value_name = "FORM")]
        serve: Option<serve::ServeForm>,
        /// With `--serve`: where the server reads the packages — `claim` (the run's volume,
        /// read-only) or `output` (what the run published with `publish_models: true`, fetched
        /// by an init container; no claim needed).
        #[arg(
            long,
            value_enum,
            default_value_t,
            requires = "serve",
            value_name = "FROM"
        )]
        packages_from: serve::PackagesFrom,
    },
    /// Create the run's claim and Jobs on a cluster, each Job after the previous one completed,
    /// and follow them to the end (re-submitting adopts the run).
    Submit {
        spec: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Follow each stage's pod logs live, printed with a stage prefix.
        #[arg(long)]
        watch: bool,
        /// Give up following after this many seconds (the Jobs keep running).
        #[arg(long, default_value_t = 7200, value_name = "SECONDS")]
        timeout: u64,
        /// Stop when a pod stays unschedulable or waiting on its volume this long.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        pending_timeout: u64,
        /// Replace every stage's Job and run every stage (`--force` to each), whatever the
        /// state or spec of the existing ones; the claim and its data are kept.
        #[arg(long)]
        force: bool,
        /// Replace this stage's Job and every later one.
        #[arg(long, value_name = "STAGE")]
        force_stage: Option<Stage>,
    },
    /// The state of each stage Job of a run.
    Status {
        run: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// The pod logs of a run's stages.
    Logs {
        run: String,
        #[arg(long)]
        stage: Option<Stage>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Delete a run's Jobs and pods; its claim (the data) only with --with-data.
    Delete {
        run: String,
        /// Also delete the run's PersistentVolumeClaim `<run>-volume` and so its data.
        #[arg(long)]
        with_data: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Compile the run for a workflow engine: a Kubeflow Pipelines pipeline (PipelineSpec YAML
    /// with its Kubernetes platform config) or an Argo Workflow, without a cluster.
    Compile {
        spec: PathBuf,
        /// The engine.
        #[arg(long, value_enum)]
        target: compile::Target,
        /// Write the document here instead of to stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// KFP: how the steps share the volume: the Pipeline Run Workspace (KFP 2.17 and later)
        /// or kfp-kubernetes CreatePVC/mount_pvc/DeletePVC (older backends).
        #[arg(long, value_enum, default_value_t = compile::KfpVolume::Workspace)]
        kfp_volume: compile::KfpVolume,
        /// Argo: namespace of the Workflow (default: the spec's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Print the JSON Schema of the spec.
    Schema,
}

/// What `pipeline run` runs the stages with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerKind {
    Process,
    Docker,
}

/// Options of `pipeline run --runner docker`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Containers (--runner docker)")]
pub struct ContainerArgs {
    /// The container engine's command (docker, podman or a path).
    #[arg(
        long,
        env = "KUBESTYLE_CONTAINER_ENGINE",
        default_value = "docker",
        value_name = "CMD"
    )]
    pub engine: String,
    /// Image registry (default: the spec's kubernetes.registry, ghcr.io/kubestyle).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// Image tag (default: the spec's kubernetes.tag, else this build's version).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// The containers' network (`host`: 127.0.0.1 is this machine's, as for the processes).
    #[arg(long, default_value = "host", value_name = "NETWORK")]
    pub network: String,
}

impl ContainerArgs {
    /// The runner's options; the stages run as 65532 (the images' user) for a root caller, as
    /// the caller otherwise.
    pub fn options(&self) -> docker::DockerOptions {
        docker::DockerOptions {
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            tag: self.tag.clone(),
            network: self.network.clone(),
            user: docker::DockerOptions::user_for(
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        }
    }
}

/// Print to stdout; a closed stdout (`pipeline logs RUN | head`) ends the output quietly instead
/// of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// An admin command (`status`, `logs`, `delete`) under an overall deadline of a few requests.
async fn admin<T>(
    c: &submit::Cluster,
    fut: impl std::future::Future<Output = Result<T, PipelineError>>,
) -> Result<T, PipelineError> {
    tokio::time::timeout(c.request_timeout * 10, fut)
        .await
        .unwrap_or_else(|_| {
            Err(StageError::Storage(format!(
                "the API server at {} stopped answering (--request-timeout)",
                c.server
            ))
            .into())
        })
}

/// Run one command; what it prints for people goes to stdout.
pub async fn main(cli: Cli) -> Result<(), PipelineError> {
    match cli.command {
        Command::Run {
            spec,
            force,
            force_stage,
            bin_dir,
            runner,
            containers,
        } => {
            let opts = run::RunOptions {
                force,
                force_stage,
                bin_dir,
                runner: match runner {
                    RunnerKind::Process => run::Runner::Process,
                    RunnerKind::Docker => run::Runner::Docker(containers.options()),
                },
            };
            let report = run::run(&spec, &opts).await?;
            out!("{}", run::summary(&report));
            Ok(())
        }
        Command::Validate { spec } => {
            let l = spec::load(&spec)?;
            let s = &l.spec;
            outln!(
                "{}: valid — run {:?}, {} image source{}, {} model{}, output {}",
                spec.display(),
                s.name,
                s.sources.images.len() + s.sources.lists.len(),
                if s.sources.images.len() + s.sources.lists.len() == 1 {
                    ""
                } else {
                    "s"
                },
                s.sources.models.len(),
                if s.sources.models.len() == 1 { "" } else { "s" },
                l.output()
            );
            Ok(())
        }
        Command::Render {
            spec,
            namespace,
            serve: form,
            packages_from,
        } => {
            let l = spec::load(&spec)?;
            let mut opts = render::RenderOptions::of_spec(&l);
            opts.namespace = namespace.or(opts.namespace);
            match form {
                Some(form) => out!(
                    "{}",
                    serve::render_serve_yaml(&l, &opts, form, packages_from)?
                ),
                None => out!("{}", render::render_yaml_with(&l, &opts)?),
            }
            Ok(())
        }
        Command::Submit {
            spec,
            cluster,
            watch,
            timeout,
            pending_timeout,
            force,
            force_stage,
        } => {
            let l = spec::load(&spec)?;
            render::render(&l)?;
            let c = cluster.connect().await?;
            let k = render::kubernetes_of(&l);
            let mut opts = submit::SubmitOptions::new(std::time::Duration::from_secs(timeout));
            opts.namespace =
                Some(c.namespace(cluster.namespace.as_deref(), k.namespace.as_deref()));
            opts.logs = watch;
            opts.pending_timeout = std::time::Duration::from_secs(pending_timeout);
            opts.force = submit::Force {
                all: force,
                from: force_stage,
            };
            opts.request_timeout = cluster.timeout();
            let done = submit::submit(c.client, &l, &opts).await?;
            outln!("run {}: {} stages complete", l.spec.name, done.len());
            Ok(())
        }
        Command::Status { run, cluster } => {
            let c = cluster.connect().await?;
            let ns = c.namespace(cluster.namespace.as_deref(), None);
            out!(
                "{}",
                admin(&c, submit::status(c.client.clone(), &ns, &run)).await?
            );
            Ok(())
        }
        Command::Logs {
            run,
            stage,
            cluster,
        } => {
            let c = cluster.connect().await?;
            let ns = c.namespace(cluster.namespace.as_deref(), None);
            let stages: Vec<Stage> = match stage {
                Some(s) => vec![s],
                None => Stage::ALL.to_vec(),
            };
            out!(
                "{}",
                admin(&c, submit::logs(c.client.clone(), &ns, &run, &stages)).await?
            );
            Ok(())
        }
        Command::Delete {
            run,
            with_data,
            cluster,
        } => {
            let c = cluster.connect().await?;
            let ns = c.namespace(cluster.namespace.as_deref(), None);
            let claim = kubestyle_manifest::command::naming::claim_name(&run);
            let gone = admin(
                &c,
                submit::delete(c.client.clone(), &ns, &run, &claim, with_data),
            )
            .await?;
            for g in &gone {
                outln!("deleted {g}");
            }
            if !with_data {
                outln!(
                    "kept persistentvolumeclaim/{claim} (the run's data): add --with-data to delete it"
                );
            }
            Ok(())
        }
        Command::Compile {
            spec,
            target,
            output,
            kfp_volume,
            namespace,
        } => {
            let l = spec::load(&spec)?;
            let mut opts = compile::CompileOptions::of_spec(&l);
            opts.kfp_volume = kfp_volume;
            opts.namespace = namespace.or(opts.namespace);
            let doc = compile::compile(&l, target, &opts)?;
            match output {
                Some(path) => kubestyle_manifest::write_atomic(
                    &path,
                    doc.as_bytes(),
                    kubestyle_manifest::Clobber::Replace,
                )?,
                None => out!("{doc}"),
            }
            Ok(())
        }
        Command::Schema => {
            outln!("{}", spec_schema_json());
            Ok(())
        }
    }
}

/// The spec's JSON Schema, pretty-printed (committed as `schemas/pipeline-spec-v1.schema.json`).
pub fn spec_schema_json() -> String {
    let schema = schemars::schema_for!(spec::Spec);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema is what the types generate. Regenerate with
    /// `KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline`.
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/pipeline-spec-v1.schema.json"
        );
        let want = format!("{}\n", spec_schema_json());
        if std::env::var_os("KUBESTYLE_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is stale: run KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline"
        );
    }

    /// `pipeline render SPEC --serve [deployment|kserve]` (the README's command; what it prints
    /// is `serve::render_serve_yaml`, snapshot-tested in `serve.rs`).
    #[test]
    fn render_serve_takes_an_optional_form() {
        use clap::Parser;
        let form = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Render { serve, .. }) => Ok(serve),
            Ok(_) => panic!("not render"),
            Err(e) => Err(e.to_string()),
        };
        let spec = "manifests/example-spec.yaml";
        assert_eq!(form(&["pipeline", "render", spec]), Ok(None));
        assert_eq!(
            form(&["pipeline", "render", spec, "--serve"]),
            Ok(Some(serve::ServeForm::Deployment))
        );
        assert_eq!(
            form(&["pipeline", "render", "--serve", "kserve", spec]),
            Ok(Some(serve::ServeForm::Kserve))
        );
        assert!(form(&["pipeline", "render", spec, "--serve", "helm"]).is_err());
    }

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().unwrap(), s);
        }
        assert!(
            "styler"
                .parse::<Stage>()
                .unwrap_err()
                .contains("stages: download")
        );
    }
}
