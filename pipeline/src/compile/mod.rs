//! Spec → the document a workflow engine runs (`pipeline compile`): a Kubeflow Pipelines
//! `PipelineSpec` ([`kfp`]) or an Argo `Workflow` ([`argo`]).
//!
//! One plan, several targets: each step's command is the plan's ([`crate::plan::stage_commands`],
//! the same typed commands `pipeline run` and `pipeline render` use), and its image, resources,
//! environment, Secret, security settings, GPU placement and the exit codes that are not retried
//! come from [`crate::render`]'s helpers, so no flag or setting is written twice. Each target is
//! a pure function of the spec; the checks a cluster run needs (S3 only, a GPU stylize that
//! computes on the GPU) are [`render::cluster_settings`]'s.

pub mod argo;
pub mod kfp;

use clap::CommandFactory;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kubestyle_manifest::StageError;
use kubestyle_manifest::command::{StageArgs, stylize, upload};
use serde_json::Value;

use crate::Stage;
use crate::plan::{Layout, StageCmd, stage_commands};
use crate::render;
use crate::spec::{Kubernetes, Loaded};

/// The engines `pipeline compile` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Kubeflow Pipelines v2: a PipelineSpec (IR YAML) and its Kubernetes platform config.
    Kfp,
    /// Argo Workflows: a Workflow.
    Argo,
}

/// How a KFP run's steps share the volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KfpVolume {
    /// The Pipeline Run Workspace: KFP creates one claim per run (with the run's TTL and the
    /// non-root security context: KFP 2.17 and later).
    #[default]
    Workspace,
    /// kfp-kubernetes CreatePVC / mount_pvc / DeletePVC, without the fields older backends
    /// refuse (backends before 2.17).
    Pvc,
}

/// What a compilation is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// KFP: how the volume is handed over (a claim named in the spec is always mounted).
    pub kfp_volume: KfpVolume,
    /// Argo: namespace of the Workflow (default: the spec's; none: left out, for
    /// `argo submit -n`).
    pub namespace: Option<String>,
}

impl CompileOptions {
    /// The spec's own namespace, the KFP workspace.
    pub fn of_spec(l: &Loaded) -> Self {
        CompileOptions {
            kfp_volume: KfpVolume::default(),
            namespace: render::kubernetes_of(l).namespace,
        }
    }
}

/// The document for `target`, as YAML.
pub fn compile(l: &Loaded, target: Target, opts: &CompileOptions) -> Result<String, StageError> {
    match target {
        Target::Kfp => kfp::compile(l, opts),
        Target::Argo => argo::compile(l, opts),
    }
}

/// One step of a compiled run: the plan's command and what its container needs.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub cmd: StageCmd,
    pub stage: Stage,
    pub image: String,
    /// `HOME` and the plan's environment (never credentials).
    pub env: Vec<(String, String)>,
    pub resources: ResourceRequirements,
    /// The S3 credentials Secret (download and upload only).
    pub secret: Option<String>,
    /// The Secret holding `anonymize`'s salt (upload only, when the spec anonymizes).
    pub salt_secret: Option<String>,
    /// On GPU nodes (node selector, tolerations, runtime class).
    pub gpu: bool,
}

impl Step {
    pub fn name(&self) -> &'static str {
        self.stage.as_str()
    }
}

/// The steps of a cluster run whose volume the stages see at `volume`.
pub(crate) fn steps(l: &Loaded, k: &Kubernetes, volume: &str) -> Vec<Step> {
    let layout = Layout {
        volume: volume.to_string(),
        // In a cluster the stage logs are the pods' logs.
        with_logs: false,
        shards: shards(k),
        gpu: k.gpu.enabled,
    };
    stage_commands(l, &layout, [false; 4])
        .into_iter()
        .map(|cmd| {
            let stage = cmd.stage();
            Step {
                stage,
                image: render::stage_image(k, stage),
                env: render::env(&cmd),
                resources: render::resources(k, stage),
                secret: render::s3_secret(k, stage).map(str::to_string),
                salt_secret: render::anonymize_secret(l, k, stage).map(str::to_string),
                gpu: render::on_gpu(k, stage),
                cmd,
            }
        })
        .collect()
}

/// Stylize shards of a cluster run.
pub(crate) fn shards(k: &Kubernetes) -> u32 {
    k.gpu.shards.max(1)
}

/// Shards running at once.
pub(crate) fn parallelism(k: &Kubernetes) -> u32 {
    k.gpu.parallelism.clamp(1, shards(k))
}

/// stylize's shard option as the stage defines it: its flag (`--shard`) and the variable it
/// reads when the flag is absent (`JOB_COMPLETION_INDEX`).
pub(crate) fn shard_option() -> (String, String) {
    let cmd = stylize::Args::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == "shard")
        .expect("stylize has a --shard option");
    let flag = format!("--{}", arg.get_long().expect("--shard is a long option"));
    let env = arg
        .get_env()
        .expect("--shard has an environment variable")
        .to_string_lossy()
        .into_owned();
    (flag, env)
}

/// Where the upload step publishes the run (`<output>/<run>/`), from its planned command.
pub(crate) fn published_prefix(steps: &[Step], run: &str) -> Option<String> {
    steps.iter().find_map(|s| match &s.cmd.command {
        StageArgs::Upload(upload::Cli {
            command: upload::Command::Publish(p),
            ..
        }) => {
            let to: kubestyle_manifest::Location = p.to.parse().ok()?;
            Some(to.join(&format!("{run}/")).to_string())
        }
        _ => None,
    })
}

/// Retry backoff of a failed step: 10 s, doubling, at most 5 minutes.
pub(crate) const BACKOFF_SECONDS: u32 = 10;
pub(crate) const BACKOFF_FACTOR: u32 = 2;
pub(crate) const BACKOFF_MAX_SECONDS: u32 = 300;

pub(crate) fn to_yaml(v: &Value) -> Result<String, StageError> {
    serde_yaml_ng::to_string(v).map_err(|e| StageError::Internal(format!("serialising: {e}")))
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("Kubernetes objects serialise")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec;

    pub fn load(rel: &str) -> Loaded {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel);
        spec::load(&p).expect("spec loads")
    }

    #[test]
    fn shard_option_is_the_stages() {
        let (flag, env) = shard_option();
        assert_eq!(flag, "--shard");
        assert_eq!(env, "JOB_COMPLETION_INDEX");
    }

    #[test]
    fn local_paths_are_refused_by_every_target() {
        let l = load("examples/demo.yaml");
        for t in [Target::Kfp, Target::Argo] {
            let e = compile(&l, t, &CompileOptions::of_spec(&l)).unwrap_err();
            assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Usage);
            assert!(e.to_string().contains("S3 only"), "{e}");
        }
    }

    #[test]
    fn results_are_published_under_the_run() {
        let l = load("manifests/example-spec.yaml");
        let k = render::kubernetes_of(&l);
        let steps = steps(&l, &k, "/data");
        assert_eq!(
            published_prefix(&steps, "demo-k8s").as_deref(),
            Some("s3://kubestyle-results/runs/demo-k8s/")
        );
    }

    /// Nothing secret is inlined in any target: the Secret is referenced by name only.
    #[test]
    fn no_credentials_in_compiled_documents() {
        for rel in [
            "manifests/example-spec.yaml",
            "manifests/ci/kind-spec.yaml",
            "examples/s3.yaml",
        ] {
            let l = load(rel);
            for t in [Target::Kfp, Target::Argo] {
                let mut opts = CompileOptions::of_spec(&l);
                for v in [KfpVolume::Workspace, KfpVolume::Pvc] {
                    opts.kfp_volume = v;
                    let y = compile(&l, t, &opts).unwrap();
                    for needle in ["testing", "password", "token:", "AKIA"] {
                        assert!(!y.contains(needle), "{needle} in {rel} {t:?}");
                    }
                    // The secret's keys appear only as references (KFP: key → variable).
                    assert!(!y.contains("AWS_SECRET_ACCESS_KEY=") && !y.contains("value: AWS"));
                }
            }
        }
    }
}
