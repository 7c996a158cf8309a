//! Spec → Kubernetes objects (pure functions over k8s-openapi types): a PersistentVolumeClaim
//! per run (unless an existing claim is named) and one Job per stage, mounted at the same path.
//!
//! * Names are deterministic (`<run>-<stage>`, `<run>-volume`); labels carry
//!   `app.kubernetes.io/*`, the run, the stage and the spec hash.
//! * Jobs: `restartPolicy: Never`, `backoffLimit`, `activeDeadlineSeconds`,
//!   `ttlSecondsAfterFinished`, and a `podFailurePolicy` that fails the Job at once on the
//!   stages' usage / input-missing / input-invalid / device-unavailable exit codes (retrying
//!   cannot help) and ignores
//!   pod disruptions (`DisruptionTarget`: preemption, node drain) in the retry count.
//! * Pods run non-root with a read-only root filesystem (the volume and a `/tmp` emptyDir are
//!   writable), no privilege escalation, every capability dropped, the runtime's default seccomp
//!   profile, and no service-account token (the stages never call the API).
//! * S3 credentials only through a Secret reference (`envFrom`), never inlined.
//! * Stylize on GPUs: the CUDA image, an `nvidia.com/gpu` limit, node selector, tolerations and
//!   runtime class from the spec; its work is an Indexed Job (completions = shards, parallelism
//!   = GPU budget) whose per-shard manifests the upload stage merges.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodAffinity, PodAffinityTerm, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext,
    Toleration, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kubestyle_manifest::command::naming;
use kubestyle_manifest::{ExitStatus, Location, StageError};

use crate::Stage;
use crate::plan::{Layout, StageCmd, stage_commands};
use crate::spec::{Backend, Device, Kubernetes, Loaded};

/// The non-root user every image runs as (distroless "nonroot").
pub const RUN_AS: i64 = 65532;

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Claim(Box<PersistentVolumeClaim>),
    Job(Box<Job>),
}

impl Object {
    pub fn name(&self) -> &str {
        let meta = match self {
            Object::Claim(c) => &c.metadata,
            Object::Job(j) => &j.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }

    fn to_yaml(&self) -> Result<String, StageError> {
        let r = match self {
            Object::Claim(c) => serde_yaml_ng::to_string(c),
            Object::Job(j) => serde_yaml_ng::to_string(j),
        };
        r.map_err(|e| StageError::Internal(format!("serialising {}: {e}", self.name())))
    }
}

/// The Kubernetes section in force (the spec's, or the defaults).
pub fn kubernetes_of(l: &Loaded) -> Kubernetes {
    l.spec.kubernetes.clone().unwrap_or_else(|| {
        serde_yaml_ng::from_str("{}").expect("every Kubernetes field has a default")
    })
}

/// Job name of a stage.
pub fn job_name(run: &str, stage: Stage) -> String {
    naming::job_name(run, stage)
}

/// Name of the run's claim: the spec's, else `<run>-volume`.
pub fn claim_name(run: &str, k: &Kubernetes) -> String {
    k.volume
        .claim
        .clone()
        .unwrap_or_else(|| naming::claim_name(run))
}

/// Labels every object of a run carries; `stage` adds the stage's.
pub fn labels(l: &Loaded, stage: Option<Stage>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "kubestyle".to_string(),
        ),
        ("app.kubernetes.io/instance".into(), l.spec.name.clone()),
        ("app.kubernetes.io/part-of".into(), "kubestyle".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "kubestyle-pipeline".into(),
        ),
        (
            "app.kubernetes.io/version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ("kubestyle.dev/run".into(), l.spec.name.clone()),
        // Label values are at most 63 characters: the first 40 hex digits identify a spec.
        ("kubestyle.dev/spec-hash".into(), l.hash[..40].to_string()),
    ]);
    if let Some(s) = stage {
        m.insert("app.kubernetes.io/component".into(), s.as_str().into());
        m.insert("kubestyle.dev/stage".into(), s.as_str().into());
    }
    m
}

/// Everything a cluster run needs must be reachable from a pod: S3 sources and output only.
pub fn check_cluster_locations(l: &Loaded) -> Result<(), StageError> {
    let s = &l.spec;
    let local: Vec<&String> = s
        .sources
        .images
        .iter()
        .chain(&s.sources.lists)
        .chain(s.sources.models.iter().map(|m| &m.uri))
        .chain(std::iter::once(&s.output))
        .filter(|u| !matches!(u.parse::<Location>(), Ok(Location::S3 { .. })))
        .collect();
    if local.is_empty() {
        Ok(())
    } else {
        Err(StageError::Usage(format!(
            "a cluster run reads and writes S3 only; these are local paths: {}",
            local
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// What a rendering is for: the namespace the objects go to (`None`: left out, for `kubectl
/// apply -n`) and the stages whose commands get `--force`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    pub namespace: Option<String>,
    pub force: [bool; 4],
}

impl RenderOptions {
    /// The spec's own namespace, no forcing.
    pub fn of_spec(l: &Loaded) -> Self {
        RenderOptions {
            namespace: kubernetes_of(l).namespace,
            force: [false; 4],
        }
    }
}

/// A GPU stylize stage must compute on a GPU: `--device cuda` (a pod without a usable GPU then
/// fails at start instead of computing on the node's CPU); `cpu` contradicts the request.
pub fn check_gpu_device(l: &Loaded, k: &Kubernetes) -> Result<(), StageError> {
    let st = &l.spec.stylize;
    if k.gpu.enabled
        && (st.device_kind() == Ok(Device::Cpu) || st.backend_kind() == Ok(Backend::Flex))
    {
        return Err(StageError::Usage(format!(
            "kubernetes.gpu.enabled asks for GPU nodes but stylize runs on the CPU (device {:?}, backend {:?}): \
             set kubernetes.gpu.enabled: false, or stylize.device: auto/cuda",
            l.spec.stylize.device, l.spec.stylize.backend
        )));
    }
    Ok(())
}

/// Where the stages see things in a cluster: the claim at the mount path, stylize as
/// `gpu.shards` shards (on GPU nodes when enabled), no stage logs published (the pods' logs are
/// the cluster's).
pub(crate) fn cluster_layout(k: &Kubernetes) -> Layout {
    Layout {
        volume: k.volume.mount_path.clone(),
        with_logs: false,
        shards: k.gpu.shards.max(1),
        gpu: k.gpu.enabled,
    }
}

/// The objects of a run for its spec's namespace ([`render_with`]).
pub fn render(l: &Loaded) -> Result<Vec<Object>, StageError> {
    render_with(l, &RenderOptions::of_spec(l))
}

/// The objects of a run, in creation order: the claim (unless an existing one is named), then
/// the Jobs in stage order.
pub fn render_with(l: &Loaded, opts: &RenderOptions) -> Result<Vec<Object>, StageError> {
    let k = cluster_settings(l)?;
    let shards = k.gpu.shards.max(1);
    let cmds = stage_commands(l, &cluster_layout(&k), opts.force);
    let mut out = Vec::new();
    if k.volume.claim.is_none() {
        out.push(Object::Claim(Box::new(claim(l, &k, opts))));
    }
    for cmd in &cmds {
        out.push(Object::Job(Box::new(job(l, &k, opts, cmd, shards))));
    }
    Ok(out)
}

/// Multi-document YAML of [`render`]'s objects.
pub fn render_yaml(l: &Loaded) -> Result<String, StageError> {
    render_yaml_with(l, &RenderOptions::of_spec(l))
}

/// Multi-document YAML of [`render_with`]'s objects.
pub fn render_yaml_with(l: &Loaded, opts: &RenderOptions) -> Result<String, StageError> {
    let objs = render_with(l, opts)?;
    let mut s = String::new();
    for o in &objs {
        s.push_str("---\n");
        s.push_str(&o.to_yaml()?);
    }
    Ok(s)
}

fn meta(l: &Loaded, opts: &RenderOptions, name: String, stage: Option<Stage>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: opts.namespace.clone(),
        labels: Some(labels(l, stage)),
        annotations: Some(BTreeMap::from([(
            "kubestyle.dev/spec-sha256".to_string(),
            l.hash.clone(),
        )])),
        ..ObjectMeta::default()
    }
}

fn claim(l: &Loaded, k: &Kubernetes, opts: &RenderOptions) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(l, opts, claim_name(&l.spec.name, k), None),
        spec: Some(claim_spec(k)),
        ..Default::default()
    }
}

/// The spec of a run's claim: access mode, class and size from the spec.
pub fn claim_spec(k: &Kubernetes) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec![k.volume.access_mode.clone()]),
        storage_class_name: k.volume.storage_class.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(k.volume.size.clone()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image of `component`: `<registry>/kubestyle-<component>:<tag>`.
pub fn image(k: &Kubernetes, component: &str) -> String {
    let tag = k
        .tag
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    format!(
        "{}/kubestyle-{component}:{tag}",
        k.registry.trim_end_matches('/')
    )
}

/// Name of the volume holding the run's data in every pod (the claim).
pub const DATA_VOLUME: &str = "data";
/// The writable scratch directory of every container (an emptyDir: the root is read-only).
pub const TMP_VOLUME: &str = "tmp";
/// Where [`TMP_VOLUME`] is mounted.
pub const TMP_MOUNT: &str = "/tmp";
/// Size limit of [`TMP_VOLUME`].
pub const TMP_SIZE: &str = "1Gi";
/// How the stage images are pulled.
pub const IMAGE_PULL_POLICY: &str = "IfNotPresent";

/// Whether `stage` runs on GPU nodes (stylize, when the spec asks for GPUs).
pub fn on_gpu(k: &Kubernetes, stage: Stage) -> bool {
    stage == Stage::Stylize && k.gpu.enabled
}

/// The image a stage runs: its component's, the CUDA build for a GPU stylize.
pub fn stage_image(k: &Kubernetes, stage: Stage) -> String {
    image(
        k,
        if on_gpu(k, stage) {
            "stylize-cuda"
        } else {
            stage.as_str()
        },
    )
}

/// The stage's CPU/memory requests and memory limit from the spec, and its GPUs.
pub fn resources(k: &Kubernetes, stage: Stage) -> ResourceRequirements {
    let mut resources = ResourceRequirements::default();
    if let Some(r) = k.resources.get(stage.as_str()) {
        let mut q = BTreeMap::new();
        if let Some(c) = &r.cpu {
            q.insert("cpu".to_string(), Quantity(c.clone()));
        }
        if let Some(m) = &r.memory {
            q.insert("memory".to_string(), Quantity(m.clone()));
        }
        if !q.is_empty() {
            resources.requests = Some(q.clone());
            // Memory is a hard limit (an OOM kill is retried, and resumes); CPU is not capped.
            resources.limits = q
                .get("memory")
                .map(|m| BTreeMap::from([("memory".to_string(), m.clone())]));
        }
    }
    if on_gpu(k, stage) {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.into(), Quantity(k.gpu.per_pod.to_string()));
    }
    resources
}

/// The extended resource a GPU stylize pod asks for.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The container's environment: `HOME` on the writable scratch directory, then the plan's.
pub fn env(cmd: &StageCmd) -> Vec<(String, String)> {
    std::iter::once(("HOME".to_string(), TMP_MOUNT.to_string()))
        .chain(cmd.env.iter().cloned())
        .collect()
}

/// Only download and upload talk to S3, so only they see the credentials Secret.
pub fn talks_to_s3(stage: Stage) -> bool {
    matches!(stage, Stage::Download | Stage::Upload)
}

/// The S3 credentials of `stage`: the spec's Secret, as a reference, for download and upload.
pub fn s3_secret(k: &Kubernetes, stage: Stage) -> Option<&str> {
    k.s3_secret.as_deref().filter(|_| talks_to_s3(stage))
}

/// `envFrom` of `stage`'s container: the S3 Secret, by reference, where [`s3_secret`] gives one.
pub fn s3_env_from(k: &Kubernetes, stage: Stage) -> Option<Vec<EnvFromSource>> {
    s3_secret(k, stage).map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    })
}

/// The Secret whose key [`ANONYMIZE_SALT_KEY`] is `anonymize`'s salt, for `stage`: upload
/// only, and only when the spec anonymizes. Referenced, never inlined.
pub fn anonymize_secret<'a>(l: &Loaded, k: &'a Kubernetes, stage: Stage) -> Option<&'a str> {
    (l.spec.anonymize && stage == Stage::Upload).then(|| {
        k.anonymize_secret
            .as_deref()
            .unwrap_or(DEFAULT_ANONYMIZE_SECRET)
    })
}

/// The Secret `anonymize_secret` names by default.
pub const DEFAULT_ANONYMIZE_SECRET: &str = "kubestyle-anonymize";
/// Its key holding the salt.
pub const ANONYMIZE_SALT_KEY: &str = "salt";

/// The salt from `secret`, as the upload container's `KUBESTYLE_ANONYMIZE_SALT`.
pub fn salt_env(secret: &str) -> EnvVar {
    EnvVar {
        name: kubestyle_manifest::command::upload::ANONYMIZE_SALT_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: ANONYMIZE_SALT_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Every container: no privilege escalation, a read-only root filesystem, non-root, every
/// capability dropped.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Every pod: the distroless non-root user and group (and as the volume's group), the
/// runtime's default seccomp profile.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The scratch volume ([`TMP_VOLUME`]).
pub fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(TMP_SIZE.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The GPU stylize pod's tolerations from the spec.
pub fn tolerations(k: &Kubernetes) -> Vec<Toleration> {
    k.gpu
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            ..Default::default()
        })
        .collect()
}

/// Exit codes that retrying cannot help: a bad command line, a missing or invalid input, or a
/// GPU node whose GPU is not usable (a retry lands on the same node class with the same image).
/// Every other failure is retried (the stages resume).
pub fn non_retryable_exit_codes() -> Vec<i32> {
    [
        ExitStatus::Usage,
        ExitStatus::InputMissing,
        ExitStatus::InputInvalid,
        ExitStatus::DeviceUnavailable,
    ]
    .iter()
    .map(|s| i32::from(s.code()))
    .collect()
}

/// The checks every cluster target makes (S3 locations only, a GPU stylize that computes on the
/// GPU) and the Kubernetes section in force.
pub fn cluster_settings(l: &Loaded) -> Result<Kubernetes, StageError> {
    check_cluster_locations(l)?;
    let k = kubernetes_of(l);
    check_gpu_device(l, &k)?;
    Ok(k)
}

fn job(l: &Loaded, k: &Kubernetes, opts: &RenderOptions, cmd: &StageCmd, shards: u32) -> Job {
    let stage = cmd.stage();
    let run = l.spec.name.as_str();
    let gpu = on_gpu(k, stage);
    let indexed = stage == Stage::Stylize && shards > 1;

    let mut env_vars: Vec<EnvVar> = env(cmd)
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        })
        .collect();
    env_vars.extend(anonymize_secret(l, k, stage).map(salt_env));
    let env_from = s3_env_from(k, stage);

    let container = Container {
        name: stage.as_str().into(),
        image: Some(stage_image(k, stage)),
        image_pull_policy: Some(IMAGE_PULL_POLICY.into()),
        command: Some(vec![cmd.program().into()]),
        args: Some(cmd.args()),
        env: Some(env_vars),
        env_from,
        resources: Some(resources(k, stage)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: k.volume.mount_path.clone(),
                ..Default::default()
            },
            VolumeMount {
                name: TMP_VOLUME.into(),
                mount_path: TMP_MOUNT.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };

    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(k.service_account.clone()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context()),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(run, k),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            tmp_volume(),
        ]),
        node_selector: (gpu && !k.gpu.node_selector.is_empty())
            .then(|| k.gpu.node_selector.clone()),
        tolerations: (gpu && !k.gpu.tolerations.is_empty()).then(|| tolerations(k)),
        runtime_class_name: if gpu {
            k.gpu.runtime_class_name.clone()
        } else {
            None
        },
        affinity: (indexed && k.gpu.same_node).then(|| same_node(run)),
        ..Default::default()
    };

    // Retrying cannot help on these: the Job fails at once.
    let fail_codes = non_retryable_exit_codes();
    Job {
        metadata: meta(l, opts, job_name(run, stage), Some(stage)),
        spec: Some(JobSpec {
            backoff_limit: Some(k.backoff_limit),
            active_deadline_seconds: Some(k.active_deadline_seconds),
            ttl_seconds_after_finished: Some(k.ttl_seconds_after_finished),
            completion_mode: indexed.then(|| "Indexed".to_string()),
            completions: indexed.then_some(shards as i32),
            parallelism: indexed.then_some(k.gpu.parallelism.min(shards) as i32),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(stage.as_str().into()),
                            operator: "In".into(),
                            values: fail_codes,
                        }),
                        ..Default::default()
                    },
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                        ..Default::default()
                    },
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(l, Some(stage))),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Required pod affinity of the stylize shards to each other (one node), so parallel shards
/// can share a `ReadWriteOnce` claim. The first shard goes anywhere (a pod that matches its own
/// affinity term may start a topology domain); the others join its node.
pub fn same_node(run: &str) -> Affinity {
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        ("kubestyle.dev/run".to_string(), run.to_string()),
                        (
                            "kubestyle.dev/stage".to_string(),
                            Stage::Stylize.as_str().to_string(),
                        ),
                    ])),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn example() -> Loaded {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/example-spec.yaml"
        );
        spec::load(std::path::Path::new(p)).expect("example spec")
    }

    #[test]
    fn example_spec_renders_claim_and_jobs() {
        let yaml = render_yaml(&example()).unwrap();
        insta::assert_snapshot!("example_spec", yaml);
    }

    /// `anonymize`: the salt reaches the upload container only, from its Secret by reference
    /// (never inlined), and upload is told to anonymize.
    #[test]
    fn the_anonymize_salt_reaches_upload_only_by_reference() {
        let mut l = example();
        l.spec.anonymize = true;
        let salt_of = |objs: &[Object]| -> Vec<(String, Option<String>)> {
            objs.iter()
                .filter(|o| matches!(o, Object::Job(_)))
                .flat_map(|o| {
                    let c = &pod(o).containers[0];
                    c.env.iter().flatten().filter_map(move |e| {
                        (e.name == "KUBESTYLE_ANONYMIZE_SALT").then(|| {
                            assert_eq!(e.value, None, "inlined");
                            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                            assert_eq!(r.key, "salt");
                            Some((c.name.clone(), Some(r.name.clone())))
                        })?
                    })
                })
                .collect()
        };
        let objs = render(&l).unwrap();
        assert_eq!(
            salt_of(&objs),
            [(
                "upload".to_string(),
                Some("kubestyle-anonymize".to_string())
            )]
        );
        let upload = objs.iter().find(|o| o.name() == "demo-k8s-upload").unwrap();
        assert!(
            pod(upload).containers[0]
                .args
                .iter()
                .flatten()
                .any(|a| a == "--anonymize")
        );
        l.spec.kubernetes.as_mut().unwrap().anonymize_secret = Some("salts".into());
        assert_eq!(
            salt_of(&render(&l).unwrap()),
            [("upload".to_string(), Some("salts".to_string()))]
        );
        l.spec.anonymize = false;
        assert!(salt_of(&render(&l).unwrap()).is_empty());
    }

    #[test]
    fn gpu_off_one_shard_and_existing_claim() {
        let mut l = example();
        let k = l.spec.kubernetes.as_mut().unwrap();
        k.gpu.enabled = false;
        k.gpu.shards = 1;
        k.gpu.parallelism = 1;
        k.volume.claim = Some("shared-data".into());
        k.s3_secret = None;
        let objs = render(&l).unwrap();
        let names: Vec<&str> = objs.iter().map(Object::name).collect();
        assert_eq!(
            names,
            [
                "demo-k8s-download",
                "demo-k8s-package-model",
                "demo-k8s-stylize",
                "demo-k8s-upload"
            ]
        );
        let Object::Job(st) = &objs[2] else { panic!() };
        let spec = st.spec.as_ref().unwrap();
        assert_eq!(spec.completion_mode, None);
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/kubestyle/kubestyle-stylize:0.1.0")
        );
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .get("nvidia.com/gpu")
                .is_none()
        );
        assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "shared-data"
        );
        assert!(c.env_from.is_none());
        // Upload merges the one stylize manifest.
        let Object::Job(up) = &objs[3] else { panic!() };
        let args = up
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.contains(&"/data/runs/demo-k8s/stylize.manifest.json".to_string()));
    }

    #[test]
    fn nothing_secret_is_inlined_and_pods_are_locked_down() {
        let yaml = render_yaml(&example()).unwrap();
        for needle in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "password",
            "token:",
        ] {
            assert!(!yaml.contains(needle), "{needle} in rendered YAML");
        }
        for o in render(&example()).unwrap() {
            let Object::Job(j) = o else { continue };
            let pod = j.spec.unwrap().template.spec.unwrap();
            let psc = pod.security_context.unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            let c = &pod.containers[0];
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
            assert_eq!(pod.automount_service_account_token, Some(false));
        }
    }

    #[test]
    fn local_paths_cannot_run_in_a_cluster() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.yaml");
        let l = spec::load(std::path::Path::new(p)).unwrap();
        let e = render(&l).unwrap_err();
        assert_eq!(e.exit_status(), ExitStatus::Usage);
        assert!(e.to_string().contains("S3 only"), "{e}");
    }

    fn pod(o: &Object) -> &PodSpec {
        let Object::Job(j) = o else {
            panic!("not a job")
        };
        j.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn stylize_args(objs: &[Object]) -> Vec<String> {
        objs.iter()
            .find_map(|o| match o {
                Object::Job(j) if j.metadata.name.as_deref() == Some("demo-k8s-stylize") => {
                    j.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                        .args
                        .clone()
                }
                _ => None,
            })
            .unwrap()
    }

    /// Objects carry the namespace they are created in: the flag's, else the spec's; none at
    /// all leaves it out (for `kubectl apply -n`).
    #[test]
    fn namespace_follows_the_options() {
        let l = example();
        let ns_of = |opts: &RenderOptions| -> Vec<Option<String>> {
            render_with(&l, opts)
                .unwrap()
                .iter()
                .map(|o| match o {
                    Object::Claim(c) => c.metadata.namespace.clone(),
                    Object::Job(j) => j.metadata.namespace.clone(),
                })
                .collect()
        };
        assert!(
            ns_of(&RenderOptions::of_spec(&l))
                .iter()
                .all(|n| n.as_deref() == Some("kubestyle"))
        );
        let other = RenderOptions {
            namespace: Some("other".into()),
            ..RenderOptions::default()
        };
        assert!(ns_of(&other).iter().all(|n| n.as_deref() == Some("other")));
        let yaml = render_yaml_with(&l, &RenderOptions::default()).unwrap();
        assert!(!yaml.contains("namespace:"), "{yaml}");
    }

    /// A GPU stylize stage asks for the GPU: `--device cuda`, never a silent CPU fallback;
    /// asking for GPU nodes with a CPU device is refused.
    #[test]
    fn gpu_stylize_asks_for_cuda() {
        let mut l = example();
        let args = stylize_args(&render(&l).unwrap()).join(" ");
        assert!(args.contains("--device cuda"), "{args}");
        l.spec.kubernetes.as_mut().unwrap().gpu.enabled = false;
        let args = stylize_args(&render(&l).unwrap()).join(" ");
        assert!(args.contains("--device auto"), "{args}");
        l.spec.kubernetes.as_mut().unwrap().gpu.enabled = true;
        l.spec.stylize.device = "cpu".into();
        let e = render(&l).unwrap_err();
        assert_eq!(e.exit_status(), ExitStatus::Usage);
        assert!(e.to_string().contains("kubernetes.gpu.enabled"), "{e}");
    }

    /// `gpu.same_node`: the shards require each other's node.
    #[test]
    fn same_node_shards_get_pod_affinity() {
        let mut l = example();
        l.spec.kubernetes.as_mut().unwrap().gpu.same_node = true;
        let objs = render(&l).unwrap();
        let term = &pod(&objs[3])
            .affinity
            .as_ref()
            .unwrap()
            .pod_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let labels = term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(labels["kubestyle.dev/stage"], "stylize");
        assert_eq!(labels["kubestyle.dev/run"], "demo-k8s");
        assert!(pod(&objs[1]).affinity.is_none());
    }
}
