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
//! `--packages-from output` (a spec with `publish_models: true`): the packages come from the
//! run's published output instead of its claim — an init container in the download image, the
//! only one that sees the S3 Secret, fetches `<output>/<run>/models/<package>/` into an
//! emptyDir, and the server reads them there (and verifies them, as it always does). The pod
//! needs no claim, so it runs on any node, any number of replicas, after the claim is gone.
//!
//! Pods are hardened as the Jobs' are ([`crate::render`]): non-root, read-only root filesystem
//! with a `/tmp` emptyDir, no privilege escalation, every capability dropped, the runtime's
//! default seccomp profile, no service-account token; GPU settings as the stylize Job's.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubestyle_manifest::command::{download, naming};
use kubestyle_manifest::{Location, StageError};
use serde::Serialize;

use std::net::SocketAddr;
use std::path::PathBuf;

use kubestyle_manifest::command::StageArgs;
use kubestyle_manifest::command::serve::{SUBCOMMAND, ServeArgs};

use crate::Stage;
use crate::plan::{download_command, stage_commands};
use crate::render::{
    DATA_VOLUME, IMAGE_PULL_POLICY, RenderOptions, TMP_MOUNT, TMP_VOLUME, claim_name,
    cluster_layout, cluster_settings, container_security_context, on_gpu, pod_security_context,
    resources, s3_env_from, stage_image, tmp_volume, tolerations,
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

/// Where the serving pod reads the packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PackagesFrom {
    /// The run's claim, mounted read-only, where package-model wrote them.
    #[default]
    Claim,
    /// The run's published output (the spec's `publish_models: true`), fetched by an init
    /// container into an emptyDir.
    Output,
}

/// The init container that fetches published packages (`--packages-from output`).
pub const FETCH_CONTAINER: &str = "fetch-packages";
/// The emptyDir it fetches them into, and where both containers mount it.
pub const PACKAGES_VOLUME: &str = "packages";
pub const PACKAGES_MOUNT: &str = "/packages";
/// The fetch's `--dest` under [`PACKAGES_MOUNT`].
pub const FETCH_DEST: &str = "published";

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
    package_stems(l)
        .into_iter()
        .map(|stem| {
            format!(
                "{}/{models}/{stem}",
                k.volume.mount_path.trim_end_matches('/')
            )
        })
        .collect()
}

/// Where upload publishes each of the spec's model packages (`publish_models: true`):
/// `<output>/<run>/` and the package's key below the run's prefix
/// ([`kubestyle_manifest::manifest::published_key`], as upload computes it), as a prefix.
pub fn published_packages(l: &Loaded) -> Result<Vec<Location>, StageError> {
    let run = l.spec.name.as_str();
    let root = l.output().parse::<Location>()?.join(&format!("{run}/"));
    let models = naming::run_data_dir(run, "models");
    Ok(package_stems(l)
        .into_iter()
        .map(|stem| {
            let path = format!("{models}/{stem}");
            root.join(&format!(
                "{}/",
                kubestyle_manifest::manifest::published_key(run, &path)
            ))
        })
        .collect())
}

/// The package names (weights file stems) of the spec's models.
fn package_stems(l: &Loaded) -> Vec<String> {
    l.spec
        .sources
        .models
        .iter()
        .map(|m| {
            let file = m.uri.rsplit('/').next().unwrap_or(&m.uri);
            kubestyle_manifest::manifest::package_name(std::path::Path::new(file))
        })
        .collect()
}

/// The init container's download command: the plan's (its S3 settings), on the published
/// packages, into [`PACKAGES_MOUNT`]`/`[`FETCH_DEST`].
pub fn fetch_args(l: &Loaded, k: &Kubernetes) -> Result<download::Args, StageError> {
    let cmds = stage_commands(l, &cluster_layout(k), [false; 4]);
    let planned = download_command(&cmds).expect("every plan has a download command");
    Ok(download::Args {
        sources: published_packages(l)?
            .iter()
            .map(ToString::to_string)
            .collect(),
        lists: Vec::new(),
        column: None,
        include: Vec::new(),
        allow_roots: Vec::new(),
        dest: Some(FETCH_DEST.into()),
        manifest: None,
        force: false,
        volume: PACKAGES_MOUNT.into(),
        ..planned.clone()
    })
}

/// Where the fetch puts each published package (what the server is given).
pub fn fetched_package_dirs(l: &Loaded) -> Result<Vec<String>, StageError> {
    published_packages(l)?
        .into_iter()
        .map(|loc| match loc {
            Location::S3 { bucket, key } => Ok(format!(
                "{PACKAGES_MOUNT}/{}",
                naming::downloaded_path(FETCH_DEST, &bucket, key.trim_end_matches('/'))
            )),
            Location::Local(p) => Err(StageError::Usage(format!(
                "--packages-from output: the output must be s3://, not {}",
                p.display()
            ))),
        })
        .collect()
}

/// `stylize serve`'s arguments: the packages, the port, and the options of the plan's stylize
/// command that shape a result (so that the server answers what the batch stage wrote) —
/// [`ServeArgs::from_batch`] of the same plan the Jobs are rendered from.
pub fn serve_args(l: &Loaded, k: &Kubernetes) -> Vec<String> {
    serve_args_for(l, k, package_dirs(l, k))
}

fn serve_args_for(l: &Loaded, k: &Kubernetes, packages: Vec<String>) -> Vec<String> {
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
        packages.into_iter().map(PathBuf::from).collect(),
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

/// The serving pod: `stylize serve` on the run's claim (read-only) or on the packages an init
/// container fetched from the output, and a `/tmp` emptyDir.
fn pod(
    l: &Loaded,
    k: &Kubernetes,
    container_name: &str,
    from: PackagesFrom,
) -> Result<PodSpec, StageError> {
    let gpu = on_gpu(k, Stage::Stylize);
    let tmp_mount = VolumeMount {
        name: TMP_VOLUME.into(),
        mount_path: TMP_MOUNT.into(),
        ..Default::default()
    };
    let home = EnvVar {
        name: "HOME".into(),
        value: Some(TMP_MOUNT.into()),
        ..Default::default()
    };
    let (packages, data_mount, data_volume, init) = match from {
        PackagesFrom::Claim => (
            package_dirs(l, k),
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: k.volume.mount_path.clone(),
                read_only: Some(true),
                ..Default::default()
            },
            Volume {
                name: DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&l.spec.name, k),
                    read_only: Some(true),
                }),
                ..Default::default()
            },
            None,
        ),
        PackagesFrom::Output => {
            if !l.spec.publish_models {
                return Err(StageError::Usage(
                    "--packages-from output: the spec does not publish its models; set \
                     `publish_models: true` and run it, or serve from the claim"
                        .into(),
                ));
            }
            let fetch = Container {
                name: FETCH_CONTAINER.into(),
                image: Some(stage_image(k, Stage::Download)),
                image_pull_policy: Some(IMAGE_PULL_POLICY.into()),
                command: Some(vec![Stage::Download.as_str().into()]),
                args: Some(fetch_args(l, k)?.to_args()),
                env: Some(vec![home.clone()]),
                // The S3 credentials, as the download Job sees them: only this container.
                env_from: s3_env_from(k, Stage::Download),
                resources: Some(resources(k, Stage::Download)),
                security_context: Some(container_security_context()),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: PACKAGES_VOLUME.into(),
                        mount_path: PACKAGES_MOUNT.into(),
                        ..Default::default()
                    },
                    tmp_mount.clone(),
                ]),
                ..Default::default()
            };
            (
                fetched_package_dirs(l)?,
                VolumeMount {
                    name: PACKAGES_VOLUME.into(),
                    mount_path: PACKAGES_MOUNT.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                Volume {
                    name: PACKAGES_VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
                Some(vec![fetch]),
            )
        }
    };
    let container = Container {
        name: container_name.into(),
        image: Some(stage_image(k, Stage::Stylize)),
        image_pull_policy: Some(IMAGE_PULL_POLICY.into()),
        command: Some(vec![Stage::Stylize.as_str().into()]),
        args: Some(serve_args_for(l, k, packages)),
        env: Some(vec![home]),
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
        volume_mounts: Some(vec![data_mount, tmp_mount]),
        ..Default::default()
    };
    Ok(PodSpec {
        service_account_name: Some(k.service_account.clone()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context()),
        // Longer than the server's drain, so in-flight requests finish before a SIGKILL.
        termination_grace_period_seconds: Some(DRAIN_S + 10),
        init_containers: init,
        containers: vec![container],
        volumes: Some(vec![data_volume, tmp_volume()]),
        node_selector: (gpu && !k.gpu.node_selector.is_empty())
            .then(|| k.gpu.node_selector.clone()),
        tolerations: (gpu && !k.gpu.tolerations.is_empty()).then(|| tolerations(k)),
        runtime_class_name: if gpu {
            k.gpu.runtime_class_name.clone()
        } else {
            None
        },
        ..Default::default()
    })
}

/// The serving objects of a run: a Deployment and a Service, or an InferenceService.
pub fn render_serve(
    l: &Loaded,
    opts: &RenderOptions,
    form: ServeForm,
    from: PackagesFrom,
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
                        spec: Some(pod(l, &k, Stage::Stylize.as_str(), from)?),
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
                    pod: pod(l, &k, KSERVE_CONTAINER, from)?,
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
    from: PackagesFrom,
) -> Result<String, StageError> {
    let mut s = String::new();
    for o in render_serve(l, opts, form, from)? {
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
        let yaml = render_serve_yaml(
            &l,
            &RenderOptions::of_spec(&l),
            ServeForm::Deployment,
            PackagesFrom::Claim,
        )
        .unwrap();
        insta::assert_snapshot!("serve_deployment", yaml);
    }

    #[test]
    fn inference_service_snapshot() {
        let l = example();
        let yaml = render_serve_yaml(
            &l,
            &RenderOptions::of_spec(&l),
            ServeForm::Kserve,
            PackagesFrom::Claim,
        )
        .unwrap();
        insta::assert_snapshot!("serve_kserve", yaml);
    }

    fn publishing() -> Loaded {
        let mut l = example();
        l.spec.publish_models = true;
        l
    }

    #[test]
    fn packages_from_the_output_snapshot() {
        let l = publishing();
        let opts = RenderOptions::of_spec(&l);
        let yaml =
            render_serve_yaml(&l, &opts, ServeForm::Deployment, PackagesFrom::Output).unwrap();
        insta::assert_snapshot!("serve_deployment_from_output", yaml);
    }

    /// Promise: with `--packages-from output` an init container in the download image fetches
    /// what upload published for each model (`<output>/<run>/models/<package>/`) with the
    /// plan's S3 settings and the S3 Secret, into an emptyDir; the server reads the packages
    /// where download puts them, sees no Secret, and the pod mounts no claim. Without
    /// `publish_models` it is a usage error saying so.
    #[test]
    fn packages_from_the_output_are_fetched_by_an_init_container() {
        use clap::Parser;
        let l = publishing();
        let k = cluster_settings(&l).unwrap();
        let published = published_packages(&l).unwrap();
        assert_eq!(
            published
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["s3://kubestyle-results/runs/demo-k8s/models/multistyle26/"]
        );
        for form in [ServeForm::Deployment, ServeForm::Kserve] {
            let objs =
                render_serve(&l, &RenderOptions::of_spec(&l), form, PackagesFrom::Output).unwrap();
            let pod = match &objs[0] {
                ServeObject::Deployment(d) => d.spec.clone().unwrap().template.spec.unwrap(),
                ServeObject::InferenceService(i) => i.spec.predictor.pod.clone(),
                ServeObject::Service(_) => unreachable!(),
            };
            let [fetch] = pod.init_containers.as_deref().unwrap() else {
                panic!("{pod:?}")
            };
            assert_eq!(fetch.name, FETCH_CONTAINER);
            assert!(fetch.image.as_ref().unwrap().contains("kubestyle-download"));
            assert_eq!(fetch.security_context, Some(container_security_context()));
            assert_eq!(
                fetch.env_from.as_ref().unwrap()[0]
                    .secret_ref
                    .as_ref()
                    .unwrap()
                    .name,
                "kubestyle-s3"
            );
            // The fetch parses as the download stage's command, with the plan's S3 settings.
            let mut argv = vec!["download".to_string()];
            argv.extend(fetch.args.clone().unwrap());
            let parsed = download::Args::try_parse_from(&argv).unwrap();
            let cmds = stage_commands(&l, &cluster_layout(&k), [false; 4]);
            let planned = download_command(&cmds).unwrap();
            // (Completed from the environment on both sides, as the stage completes its own.)
            assert_eq!(
                parsed.s3.with_env().unwrap(),
                planned.s3.with_env().unwrap()
            );
            assert_eq!(parsed.sources, [published[0].to_string()]);
            assert_eq!(parsed.volume, PathBuf::from(PACKAGES_MOUNT));
            // The server reads what the fetch writes: download's landing path of the prefix.
            let c = &pod.containers[0];
            assert!(c.env_from.is_none(), "the server sees no Secret");
            let args = c.args.as_ref().unwrap();
            let Location::S3 { bucket, key } = &published[0] else {
                panic!()
            };
            let fetched = format!(
                "{PACKAGES_MOUNT}/{}",
                naming::downloaded_path(
                    parsed.dest.as_deref().unwrap(),
                    bucket,
                    key.trim_end_matches('/')
                )
            );
            assert_eq!(
                args[..3],
                ["serve".to_string(), "--package".into(), fetched]
            );
            // The packages' emptyDir: written by the fetch, read-only for the server.
            let mount = |c: &Container| {
                c.volume_mounts
                    .as_ref()
                    .unwrap()
                    .iter()
                    .find(|m| m.name == PACKAGES_VOLUME)
                    .cloned()
                    .unwrap()
            };
            assert_eq!(mount(fetch).read_only, None);
            assert_eq!(mount(c).read_only, Some(true));
            let volumes = pod.volumes.as_ref().unwrap();
            assert!(volumes.iter().all(|v| v.persistent_volume_claim.is_none()));
            assert!(
                volumes
                    .iter()
                    .any(|v| v.name == PACKAGES_VOLUME && v.empty_dir.is_some())
            );
        }

        let e = render_serve(
            &example(),
            &RenderOptions::of_spec(&l),
            ServeForm::Deployment,
            PackagesFrom::Output,
        )
        .unwrap_err();
        assert!(e.to_string().contains("publish_models: true"), "{e}");
    }

    /// Promise: the server reads the packages where the run's package-model stage writes them,
    /// the probes hit the health endpoints on the
    /// named port, the pod is hardened as the Jobs' are, and the Service selects the pods.
    #[test]
    fn serving_pods_read_the_runs_packages_and_are_hardened() {
        let l = example();
        let objs = render_serve(
            &l,
            &RenderOptions::of_spec(&l),
            ServeForm::Deployment,
            PackagesFrom::Claim,
        )
        .unwrap();
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

        let objs = render_serve(
            &l,
            &RenderOptions::of_spec(&l),
            ServeForm::Kserve,
            PackagesFrom::Claim,
        )
        .unwrap();
        let [ServeObject::InferenceService(i)] = objs.as_slice() else {
            panic!("{objs:?}")
        };
        let c = &i.spec.predictor.pod.containers[0];
        assert_eq!(c.name, KSERVE_CONTAINER);
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(c.args.as_ref(), Some(args));
    }
}
