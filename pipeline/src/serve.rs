//! Spec → the objects that serve a run's packaged networks over HTTP (`pipeline render
//! --serve`): `stylize serve` in the stylize image, reading the packages where the run's
//! package-model stage put them (`<mount>/runs/<run>/models/<weights stem>` on the run's claim,
//! mounted read-only).
//!
//! * `deployment`: a Deployment and a ClusterIP Service on port 8080, readiness on
//!   `/v2/health/ready` (ready once the packages verified; not ready while draining), liveness
//!   on `/v2/health/live`, a termination grace period longer than the server's drain.
//! * `kserve`: a KServe `InferenceService` (`serving.kserve.io/v1beta1`) with a custom
//!   predictor: `spec.predictor.containers[0]` named `kserve-container`, port 8080.
//!
//! Pods are hardened as the Jobs' are ([`crate::render`]): non-root, read-only root filesystem
//! with a `/tmp` emptyDir, no privilege escalation, every capability dropped, the runtime's
//! default seccomp profile, no service-account token; GPU settings as the stylize Job's.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubestyle_manifest::StageError;
use kubestyle_manifest::command::naming;
use serde::Serialize;

use std::net::SocketAddr;
use std::path::PathBuf;

use kubestyle_manifest::command::StageArgs;
use kubestyle_manifest::command::serve::{SUBCOMMAND, ServeArgs};

use crate::Stage;
use crate::plan::stage_commands;
use crate::render::{
    DATA_VOLUME, IMAGE_PULL_POLICY, RenderOptions, TMP_MOUNT, TMP_VOLUME, claim_name,
    cluster_layout, cluster_settings, container_security_context, on_gpu, pod_security_context,
    resources, stage_image, tmp_volume, tolerations,
};
use crate::spec::{Kubernetes, Loaded};

/// The port `stylize serve` listens on (KServe's default predictor port).
pub const PORT: i32 = 8080;
/// The port's name.
pub const PORT_NAME: &str = "http";
/// The container name KServe expects of a custom predictor.
pub const KSERVE_CONTAINER: &str = "kserve-container";
/// The server's drain on SIGTERM (`stylize serve --drain-s`), in seconds.
pub const DRAIN_S: i64 = 30;
/// The `app.kubernetes.io/component` of the serving objects.
pub const COMPONENT: &str = "serve";

/// Which objects `--serve` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeForm {
    /// A Deployment and a Service.
    Deployment,
    /// A KServe InferenceService.
    Kserve,
}

/// KServe's `InferenceService` (a custom resource: no k8s-openapi type), as much of it as a
/// custom predictor needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceService {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: InferenceServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceServiceSpec {
    pub predictor: Predictor,
}

/// KServe's `PredictorSpec`: a pod spec (inlined) and the component's replica bounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Predictor {
    pub min_replicas: i32,
    #[serde(flatten)]
    pub pod: PodSpec,
}

/// One rendered serving object.
#[derive(Debug, Clone, PartialEq)]
pub enum ServeObject {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    InferenceService(Box<InferenceService>),
}

impl ServeObject {
    pub fn to_yaml(&self) -> Result<String, StageError> {
        let r = match self {
            ServeObject::Deployment(d) => serde_yaml_ng::to_string(d),
            ServeObject::Service(s) => serde_yaml_ng::to_string(s),
            ServeObject::InferenceService(i) => serde_yaml_ng::to_string(i),
        };
        r.map_err(|e| StageError::Internal(format!("serialising a serving object: {e}")))
    }
}

/// Name of the serving objects: `<run>-serve`.
pub fn serve_name(run: &str) -> String {
    format!("{run}-{COMPONENT}")
}

/// Where the run's package-model stage puts each of the spec's models, under the mount path.
pub fn package_dirs(l: &Loaded, k: &Kubernetes) -> Vec<String> {
    let models = naming::run_data_dir(&l.spec.name, "models");
    l.spec
        .sources
        .models
        .iter()
        .map(|m| {
            let file = m.uri.rsplit('/').next().unwrap_or(&m.uri);
            let stem = kubestyle_manifest::manifest::package_name(std::path::Path::new(file));
            format!(
                "{}/{models}/{stem}",
                k.volume.mount_path.trim_end_matches('/')
            )
        })
        .collect()
}

/// `stylize serve`'s arguments: the packages, the port, and the options of the plan's stylize
/// command that shape a result (so that the server answers what the batch stage wrote) —
/// [`ServeArgs::from_batch`] of the same plan the Jobs are rendered from.
pub fn serve_args(l: &Loaded, k: &Kubernetes) -> Vec<String> {
    let cmds = stage_commands(l, &cluster_layout(k), [false; 4]);
    let batch = cmds
        .iter()
        .find_map(|c| match &c.command {
            StageArgs::Stylize(a) => Some(a),
            _ => None,
        })
        .expect("every plan has a stylize command");
    let serve = ServeArgs::from_batch(
        batch,
        package_dirs(l, k).into_iter().map(PathBuf::from).collect(),
        SocketAddr::from(([0, 0, 0, 0], PORT as u16)),
        DRAIN_S as u64,
        PathBuf::from(TMP_MOUNT),
    );
    std::iter::once(SUBCOMMAND.to_string())
        .chain(serve.to_args())
        .collect()
}

fn meta(l: &Loaded, opts: &RenderOptions, name: String) -> ObjectMeta {
    let mut labels = serve_labels(l);
    labels.extend(crate::render::labels(l, None));
    ObjectMeta {
        name: Some(name),
        namespace: opts.namespace.clone(),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            "kubestyle.dev/spec-sha256".to_string(),
            l.hash.clone(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The labels that select the serving pods.
fn serve_labels(l: &Loaded) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "kubestyle".to_string(),
        ),
        ("app.kubernetes.io/component".into(), COMPONENT.into()),
        ("kubestyle.dev/run".into(), l.spec.name.clone()),
    ])
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The serving pod: `stylize serve` on the run's claim (read-only) and a `/tmp` emptyDir.
fn pod(l: &Loaded, k: &Kubernetes, container_name: &str) -> PodSpec {
    let gpu = on_gpu(k, Stage::Stylize);
    let container = Container {
        name: container_name.into(),
        image: Some(stage_image(k, Stage::Stylize)),
        image_pull_policy: Some(IMAGE_PULL_POLICY.into()),
        command: Some(vec![Stage::Stylize.as_str().into()]),
        args: Some(serve_args(l, k)),
        env: Some(vec![EnvVar {
            name: "HOME".into(),
            value: Some(TMP_MOUNT.into()),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Ready once the packages are loaded and verified; not ready while draining.
        readiness_probe: Some(probe("/v2/health/ready", 5, 3)),
        liveness_probe: Some(probe("/v2/health/live", 10, 3)),
        // Loading and verifying the packages: up to 5 minutes before liveness counts.
        startup_probe: Some(probe("/v2/health/live", 5, 60)),
        resources: Some(resources(k, Stage::Stylize)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: k.volume.mount_path.clone(),
                read_only: Some(true),
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
    PodSpec {
        service_account_name: Some(k.service_account.clone()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context()),
        // Longer than the server's drain, so in-flight requests finish before a SIGKILL.
        termination_grace_period_seconds: Some(DRAIN_S + 10),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&l.spec.name, k),
                    read_only: Some(true),
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
        ..Default::default()
    }
}

/// The serving objects of a run: a Deployment and a Service, or an InferenceService.
pub fn render_serve(
    l: &Loaded,
    opts: &RenderOptions,
    form: ServeForm,
) -> Result<Vec<ServeObject>, StageError> {
    let k = cluster_settings(l)?;
    if l.spec.sources.models.is_empty() {
        return Err(StageError::Usage(
            "--serve: the spec has no sources.models to serve".into(),
        ));
    }
    let name = serve_name(&l.spec.name);
    Ok(match form {
        ServeForm::Deployment => {
            let deployment = Deployment {
                metadata: meta(l, opts, name.clone()),
                spec: Some(DeploymentSpec {
                    replicas: Some(1),
                    selector: LabelSelector {
                        match_labels: Some(serve_labels(l)),
                        ..Default::default()
                    },
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(meta(l, opts, name.clone()).labels.unwrap_or_default()),
                            ..Default::default()
                        }),
                        spec: Some(pod(l, &k, Stage::Stylize.as_str())),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            };
            let service = Service {
                metadata: meta(l, opts, name),
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    selector: Some(serve_labels(l)),
                    ports: Some(vec![ServicePort {
                        name: Some(PORT_NAME.into()),
                        port: PORT,
                        target_port: Some(IntOrString::String(PORT_NAME.into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            vec![
                ServeObject::Deployment(Box::new(deployment)),
                ServeObject::Service(Box::new(service)),
            ]
        }
        ServeForm::Kserve => vec![ServeObject::InferenceService(Box::new(InferenceService {
            api_version: "serving.kserve.io/v1beta1".into(),
            kind: "InferenceService".into(),
            metadata: meta(l, opts, name),
            spec: InferenceServiceSpec {
                predictor: Predictor {
                    min_replicas: 1,
                    pod: pod(l, &k, KSERVE_CONTAINER),
                },
            },
        }))],
    })
}

/// Multi-document YAML of [`render_serve`]'s objects.
pub fn render_serve_yaml(
    l: &Loaded,
    opts: &RenderOptions,
    form: ServeForm,
) -> Result<String, StageError> {
    let mut s = String::new();
    for o in render_serve(l, opts, form)? {
        s.push_str("---\n");
        s.push_str(&o.to_yaml()?);
    }
    Ok(s)
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
    fn deployment_and_service_snapshot() {
        let l = example();
        let yaml =
            render_serve_yaml(&l, &RenderOptions::of_spec(&l), ServeForm::Deployment).unwrap();
        insta::assert_snapshot!("serve_deployment", yaml);
    }

    #[test]
    fn inference_service_snapshot() {
        let l = example();
        let yaml = render_serve_yaml(&l, &RenderOptions::of_spec(&l), ServeForm::Kserve).unwrap();
        insta::assert_snapshot!("serve_kserve", yaml);
    }

    /// Promise: the server reads the packages where the run's package-model stage writes them,
    /// the probes hit the health endpoints on the
    /// named port, the pod is hardened as the Jobs' are, and the Service selects the pods.
    #[test]
    fn serving_pods_read_the_runs_packages_and_are_hardened() {
        let l = example();
        let objs = render_serve(&l, &RenderOptions::of_spec(&l), ServeForm::Deployment).unwrap();
        let [ServeObject::Deployment(d), ServeObject::Service(s)] = objs.as_slice() else {
            panic!("{objs:?}")
        };
        let spec = d.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let args = c.args.as_ref().unwrap();
        assert_eq!(
            args[..3],
            [
                "serve".to_string(),
                "--package".into(),
                "/data/runs/demo-k8s/models/multistyle26".into()
            ]
        );
        // What package-model writes for that run and model (the contract crate's naming).
        assert!(args[2].ends_with(&format!(
            "{}/multistyle26",
            naming::run_data_dir("demo-k8s", "models")
        )));
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/v2/health/ready")
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/v2/health/live")
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, PORT);
        assert_eq!(c.security_context, Some(container_security_context()));
        assert_eq!(pod.security_context, Some(pod_security_context()));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(pod.termination_grace_period_seconds.unwrap() > DRAIN_S);
        let data = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().read_only,
            Some(true)
        );
        // GPU spec: the CUDA image, asked to run on CUDA, with the GPU limit.
        assert!(c.image.as_ref().unwrap().contains("kubestyle-stylize-cuda"));
        assert!(args.windows(2).any(|w| w == ["--device", "cuda"]));
        assert!(
            c.resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()
                .contains_key("nvidia.com/gpu")
        );
        // The Service and the Deployment select the pods' labels.
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        let sel = s.spec.as_ref().unwrap().selector.as_ref().unwrap();
        for (k, v) in sel
            .iter()
            .chain(spec.selector.match_labels.as_ref().unwrap())
        {
            assert_eq!(pod_labels.get(k), Some(v), "{k}");
        }

        let objs = render_serve(&l, &RenderOptions::of_spec(&l), ServeForm::Kserve).unwrap();
        let [ServeObject::InferenceService(i)] = objs.as_slice() else {
            panic!("{objs:?}")
        };
        let c = &i.spec.predictor.pod.containers[0];
        assert_eq!(c.name, KSERVE_CONTAINER);
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(c.args.as_ref(), Some(args));
    }
}
