//! Spec → a Kubeflow Pipelines v2 pipeline: a `PipelineSpec` (kubeflow/pipelines
//! `api/v2alpha1/pipeline_spec.proto`, schema 2.1.0) and, as a second YAML document, its
//! Kubernetes platform config (`kubernetes_platform/proto/kubernetes_executor_config.proto`).
//!
//! * One container component per stage (`comp-<stage>`, executor `exec-<stage>`): the plan's
//!   image, command, arguments and environment, CPU/memory as strings, the GPU as an
//!   `accelerator`. The stylize shards are a `ParallelFor` (a DAG component with a parameter
//!   iterator over the shard numbers, at most `gpu.parallelism` at once), each shard's number
//!   passed as stylize's own `--shard`.
//! * The volume: the Pipeline Run Workspace (`{{$.workspace_path}}`, one claim per run, from
//!   `kubernetes.volume`), or with [`KfpVolume::Pvc`] a CreatePVC step, `pvcMount`s and a
//!   DeletePVC step after upload (a failed run keeps its claim, to be retried); a claim named
//!   in the spec is mounted as it is.
//! * KFP's cache is off for every step (`cachingOptions.enableCache: false`): its key is the
//!   component and its parameters, blind to what a step reads from the volume
//!   (kubeflow/pipelines#10189: a hit on an unchanged claim name skips work that changed).
//!   The stages' own step cache sees the volume's contents, and it is what skips work.
//! * Retries: `retryPolicy` with `kubernetes.backoff_limit` retries and a doubling backoff.
//!   KFP cannot select exit codes, so a failure retrying cannot help (usage, input missing or
//!   invalid, GPU unusable) is retried too; the stages check their inputs before writing
//!   anything, so such a retry fails again in seconds, writing nothing.
//! * Per step: `activeDeadlineSeconds`, the non-root user (`securityContext`, which also drops
//!   every capability), a `/tmp` emptyDir, pod labels, the S3 Secret's keys as environment
//!   (download and upload only, by reference), and for a GPU stylize the node selector and
//!   tolerations. The run's TTL (`resourceTtlOnCompletion`) comes from
//!   `kubernetes.ttl_seconds_after_finished`.
//! * `results.csv`, `SHA256SUMS` and `contact-sheet.jpg`, as upload published them, are
//!   imported as artifacts after the upload step (importer tasks), so the run's page lists
//!   them with their S3 URIs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kubestyle_manifest::StageError;
use serde_json::{Map, Value, json};

use super::{
    BACKOFF_FACTOR, BACKOFF_MAX_SECONDS, BACKOFF_SECONDS, CompileOptions, KfpVolume, Step,
    parallelism, published_prefix, shard_option, shards, steps, to_yaml,
};
use crate::Stage;
use crate::render;
use crate::spec::{Kubernetes, Loaded};

/// The IR schema version the KFP API server accepts.
pub const SCHEMA_VERSION: &str = "2.1.0";
/// KFP's placeholder of the run's workspace directory; an input parameter holding it is what
/// makes the driver mount the workspace into a step.
pub const WORKSPACE_PATH: &str = "{{$.workspace_path}}";
/// The input parameter of every step that carries [`WORKSPACE_PATH`].
const WORKSPACE_PARAM: &str = "workspace";
/// The stylize input parameter carrying the shard number.
const SHARD_PARAM: &str = "shard";
/// The loop item of the shards' `ParallelFor`.
const SHARD_ITEM: &str = "pipelinechannel--loop-item-param-1";
/// The task running the stylize shards.
const SHARDS_TASK: &str = "stylize-shards";
const CREATE_PVC: &str = "createpvc";
const DELETE_PVC: &str = "deletepvc";

/// Keys of the S3 Secret every S3 step needs, and those it may carry (see the spec's
/// `kubernetes.s3_secret`). KFP maps Secret keys one by one (no `envFrom`).
pub const SECRET_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
pub const OPTIONAL_SECRET_KEYS: [&str; 3] = ["AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"];

/// The run's files upload publishes that the KFP UI lists as artifacts: (task, file, type).
pub const REPORT_ARTIFACTS: [(&str, &str, &str); 3] = [
    ("results-csv", "results.csv", "system.Dataset"),
    ("sha256sums", "SHA256SUMS", "system.Artifact"),
    ("contact-sheet", "contact-sheet.jpg", "system.Artifact"),
];

/// How the steps see the volume.
#[derive(Debug, Clone, PartialEq)]
enum Volume {
    Workspace,
    Created,
    Existing(String),
}

/// The pipeline for `l`: the PipelineSpec, then the platform config, as two YAML documents.
pub fn compile(l: &Loaded, opts: &CompileOptions) -> Result<String, StageError> {
    let (spec, platform) = documents(l, opts)?;
    Ok(format!(
        "# kubestyle run {} compiled for Kubeflow Pipelines (pipeline compile --target kfp)\n{}---\n{}",
        l.spec.name,
        to_yaml(&spec)?,
        to_yaml(&platform)?
    ))
}

/// The PipelineSpec and the platform config.
pub fn documents(l: &Loaded, opts: &CompileOptions) -> Result<(Value, Value), StageError> {
    let k = render::cluster_settings(l)?;
    let run = l.spec.name.as_str();
    let volume = match (&k.volume.claim, opts.kfp_volume) {
        (Some(c), _) => Volume::Existing(c.clone()),
        (None, KfpVolume::Workspace) => Volume::Workspace,
        (None, KfpVolume::Pvc) => Volume::Created,
    };
    let root = match volume {
        Volume::Workspace => format!("{{{{$.inputs.parameters['{WORKSPACE_PARAM}']}}}}"),
        _ => k.volume.mount_path.clone(),
    };
    let steps = steps(l, &k, &root);
    let sharded = shards(&k) > 1;

    let mut components = Map::new();
    let mut executors = Map::new();
    let mut platform_executors = Map::new();
    let mut tasks = Map::new();

    if volume == Volume::Created {
        create_delete_pvc(&k, &mut components, &mut executors, &mut tasks);
    }

    let mut previous: Option<String> = (volume == Volume::Created).then(|| CREATE_PVC.into());
    for step in &steps {
        let name = step.name();
        let comp = format!("comp-{name}");
        let exec = format!("exec-{name}");
        let shard_input = step.stage == Stage::Stylize && sharded;

        let mut params = Map::new();
        if volume == Volume::Workspace {
            params.insert(WORKSPACE_PARAM.into(), json!({"parameterType": "STRING"}));
        }
        if shard_input {
            params.insert(
                SHARD_PARAM.into(),
                json!({"parameterType": "NUMBER_INTEGER"}),
            );
        }
        let mut component = json!({ "executorLabel": exec });
        if !params.is_empty() {
            component["inputDefinitions"] = json!({ "parameters": params });
        }
        components.insert(comp.clone(), component);
        executors.insert(
            exec.clone(),
            json!({ "container": container(step, shard_input) }),
        );
        platform_executors.insert(exec, executor_config(l, &k, step, &volume));

        // The task: in the root DAG, or for the shards inside the ParallelFor's DAG.
        let mut task = json!({
            "taskInfo": { "name": name },
            "componentRef": { "name": comp },
            "cachingOptions": { "enableCache": false },
        });
        let mut inputs = Map::new();
        if volume == Volume::Workspace {
            inputs.insert(
                WORKSPACE_PARAM.into(),
                json!({ "runtimeValue": { "constant": WORKSPACE_PATH } }),
            );
        }
        if shard_input {
            inputs.insert(
                SHARD_PARAM.into(),
                json!({ "componentInputParameter": SHARD_ITEM }),
            );
        }
        if !inputs.is_empty() {
            task["inputs"] = json!({ "parameters": inputs });
        }
        if k.backoff_limit > 0 {
            task["retryPolicy"] = json!({
                "maxRetryCount": k.backoff_limit,
                "backoffDuration": format!("{BACKOFF_SECONDS}s"),
                "backoffFactor": BACKOFF_FACTOR,
                "backoffMaxDuration": format!("{BACKOFF_MAX_SECONDS}s"),
            });
        }

        let task_name = if shard_input {
            // The shards: a DAG component over the shard numbers.
            let loop_comp = format!("comp-{SHARDS_TASK}");
            components.insert(
                loop_comp.clone(),
                json!({
                    "dag": { "tasks": { name: task } },
                    "inputDefinitions": {
                        "parameters": { SHARD_ITEM: { "parameterType": "NUMBER_INTEGER" } }
                    },
                }),
            );
            let items: Vec<u32> = (0..shards(&k)).collect();
            let mut t = json!({
                "taskInfo": { "name": SHARDS_TASK },
                "componentRef": { "name": loop_comp },
                "parameterIterator": {
                    "itemInput": SHARD_ITEM,
                    "items": { "raw": serde_json::to_string(&items).expect("numbers") },
                },
                "iteratorPolicy": { "parallelismLimit": shard_parallelism(&k) },
            });
            depend(&mut t, previous.as_deref());
            tasks.insert(SHARDS_TASK.into(), t);
            SHARDS_TASK.to_string()
        } else {
            depend(&mut task, previous.as_deref());
            tasks.insert(name.into(), task);
            name.to_string()
        };
        previous = Some(task_name);
    }

    // The run's report files, as published, listed as artifacts after upload.
    if let Some(prefix) = published_prefix(&steps, run) {
        for (task, file, kind) in REPORT_ARTIFACTS {
            let uri = format!("{prefix}{file}");
            let comp = format!("comp-{task}");
            let exec = format!("exec-{task}");
            let type_schema = json!({ "schemaTitle": kind, "schemaVersion": "0.0.1" });
            components.insert(
                comp.clone(),
                json!({
                    "executorLabel": exec,
                    "inputDefinitions": { "parameters": { "uri": { "parameterType": "STRING" } } },
                    "outputDefinitions": {
                        "artifacts": { "artifact": { "artifactType": type_schema } }
                    },
                }),
            );
            executors.insert(
                exec,
                json!({ "importer": {
                    "artifactUri": { "constant": uri },
                    "typeSchema": type_schema,
                }}),
            );
            tasks.insert(
                task.into(),
                json!({
                    "taskInfo": { "name": task },
                    "componentRef": { "name": comp },
                    "dependentTasks": [Stage::Upload.as_str()],
                    "inputs": { "parameters": { "uri": { "runtimeValue": { "constant": uri } } } },
                    "cachingOptions": { "enableCache": false },
                }),
            );
        }
    }

    if volume == Volume::Created {
        tasks
            .get_mut(DELETE_PVC)
            .expect("the delete task")
            .as_object_mut()
            .expect("an object")
            .insert(
                "dependentTasks".into(),
                json!([CREATE_PVC, Stage::Upload.as_str()]),
            );
    }

    let mut info = json!({ "name": run });
    if let Some(d) = &l.spec.description {
        info["description"] = json!(d);
    }
    let spec = json!({
        "pipelineInfo": info,
        "schemaVersion": SCHEMA_VERSION,
        "sdkVersion": format!("kubestyle-pipeline-{}", env!("CARGO_PKG_VERSION")),
        "components": components,
        "deploymentSpec": { "executors": executors },
        "root": { "dag": { "tasks": tasks } },
    });

    let mut kubernetes = json!({ "deploymentSpec": { "executors": platform_executors } });
    if volume == Volume::Workspace {
        // The run's workspace (KFP 2.15) and TTL (2.17): the API server parses this strictly.
        let mut patch = json!({ "accessModes": [k.volume.access_mode] });
        if let Some(c) = &k.volume.storage_class {
            patch["storageClassName"] = json!(c);
        }
        kubernetes["pipelineConfig"] = json!({
            "workspace": {
                "size": k.volume.size,
                "kubernetes": { "pvcSpecPatch": patch },
            },
            "resourceTtlOnCompletion": k.ttl_seconds_after_finished,
        });
    }
    let platform = json!({ "platforms": { "kubernetes": kubernetes } });
    Ok((spec, platform))
}

/// `gpu.same_node` cannot be said to KFP (its driver applies no pod affinity): the shards then
/// run one at a time, which a `ReadWriteOnce` claim allows on any node.
fn shard_parallelism(k: &Kubernetes) -> u32 {
    if k.gpu.same_node { 1 } else { parallelism(k) }
}

fn depend(task: &mut Value, on: Option<&str>) {
    if let Some(on) = on {
        task["dependentTasks"] = json!([on]);
    }
}

/// The executor's container: the plan's command; a shard's number as stylize's `--shard`.
fn container(step: &Step, shard_input: bool) -> Value {
    let mut args = step.cmd.args();
    if shard_input {
        let (flag, _) = shard_option();
        args.push(flag);
        args.push(format!("{{{{$.inputs.parameters['{SHARD_PARAM}']}}}}"));
    }
    let env: Vec<Value> = step
        .env
        .iter()
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect();
    let mut c = json!({
        "image": step.image,
        "command": [step.cmd.program()],
        "args": args,
        "env": env,
    });
    let r = resources(&step.resources);
    if !r.as_object().is_some_and(Map::is_empty) {
        c["resources"] = r;
    }
    c
}

/// Kubernetes requests and limits as KFP's `ResourceSpec` (strings; the GPU as an accelerator).
fn resources(r: &ResourceRequirements) -> Value {
    let mut out = Map::new();
    let empty = BTreeMap::new();
    for (which, list) in [
        ("Request", r.requests.as_ref().unwrap_or(&empty)),
        ("Limit", r.limits.as_ref().unwrap_or(&empty)),
    ] {
        for (name, q) in list {
            match name.as_str() {
                "cpu" => {
                    out.insert(format!("resourceCpu{which}"), json!(q.0));
                }
                "memory" => {
                    out.insert(format!("resourceMemory{which}"), json!(q.0));
                }
                other => {
                    out.insert(
                        "accelerator".into(),
                        json!({ "resourceType": other, "resourceCount": q.0 }),
                    );
                }
            }
        }
    }
    Value::Object(out)
}

/// The step's Kubernetes executor config.
fn executor_config(l: &Loaded, k: &Kubernetes, step: &Step, volume: &Volume) -> Value {
    let mut c = json!({
        "imagePullPolicy": render::IMAGE_PULL_POLICY,
        "activeDeadlineSeconds": k.active_deadline_seconds.to_string(),
        "emptyDirMounts": [{
            "volumeName": render::TMP_VOLUME,
            "mountPath": render::TMP_MOUNT,
            "sizeLimit": render::TMP_SIZE,
        }],
        "podMetadata": {
            "labels": render::labels(l, Some(step.stage)),
            "annotations": { "kubestyle.dev/spec-sha256": l.hash },
        },
    });
    // The KFP 2.16 securityContext (it also drops every capability); older backends run the
    // images' own non-root user.
    if *volume == Volume::Workspace {
        let sc = render::pod_security_context();
        c["securityContext"] = json!({
            "runAsUser": sc.run_as_user.map(|u| u.to_string()),
            "runAsGroup": sc.run_as_group.map(|g| g.to_string()),
            "runAsNonRoot": sc.run_as_non_root,
        });
    }
    if let Some(secret) = &step.secret {
        let keys = |keys: &[&str]| -> Vec<Value> {
            keys.iter()
                .map(|k| json!({ "secretKey": k, "envVar": k }))
                .collect()
        };
        c["secretAsEnv"] = json!([
            {
                "secretName": secret,
                "secretNameParameter": { "runtimeValue": { "constant": secret } },
                "keyToEnv": keys(&SECRET_KEYS[..]),
                "optional": false,
            },
            {
                "secretName": secret,
                "secretNameParameter": { "runtimeValue": { "constant": secret } },
                "keyToEnv": keys(&OPTIONAL_SECRET_KEYS[..]),
                "optional": true,
            },
        ]);
    }
    if let Some(secret) = &step.salt_secret {
        let salt = json!({
            "secretName": secret,
            "secretNameParameter": { "runtimeValue": { "constant": secret } },
            "keyToEnv": [{
                "secretKey": render::ANONYMIZE_SALT_KEY,
                "envVar": kubestyle_manifest::command::upload::ANONYMIZE_SALT_ENV,
            }],
            "optional": false,
        });
        match c.get_mut("secretAsEnv").and_then(Value::as_array_mut) {
            Some(list) => list.push(salt),
            None => c["secretAsEnv"] = json!([salt]),
        }
    }
    if step.gpu {
        if !k.gpu.node_selector.is_empty() {
            c["nodeSelector"] = json!({ "labels": k.gpu.node_selector });
        }
        if !k.gpu.tolerations.is_empty() {
            c["tolerations"] = super::json(&render::tolerations(k));
        }
    }
    match volume {
        Volume::Workspace => {}
        Volume::Created => {
            let out = json!({ "outputParameterKey": "name", "producerTask": CREATE_PVC });
            c["pvcMount"] = json!([{
                "mountPath": k.volume.mount_path,
                "taskOutputParameter": out,
                "pvcNameParameter": { "taskOutputParameter": out },
            }]);
        }
        Volume::Existing(claim) => {
            c["pvcMount"] = json!([{
                "mountPath": k.volume.mount_path,
                "constant": claim,
                "pvcNameParameter": { "runtimeValue": { "constant": claim } },
            }]);
        }
    }
    c
}

/// kfp-kubernetes' CreatePVC and DeletePVC steps (run by the KFP driver, no container of ours).
fn create_delete_pvc(
    k: &Kubernetes,
    components: &mut Map<String, Value>,
    executors: &mut Map<String, Value>,
    tasks: &mut Map<String, Value>,
) {
    let param = |t: &str, optional: bool| {
        let mut p = json!({ "parameterType": t });
        if optional {
            p["isOptional"] = json!(true);
        }
        p
    };
    components.insert(
        format!("comp-{CREATE_PVC}"),
        json!({
            "executorLabel": format!("exec-{CREATE_PVC}"),
            "inputDefinitions": { "parameters": {
                "access_modes": param("LIST", false),
                "annotations": param("STRUCT", true),
                "data_source": param("STRUCT", true),
                "pvc_name": param("STRING", true),
                "pvc_name_suffix": param("STRING", true),
                "size": param("STRING", false),
                "storage_class_name": param("STRING", true),
                "volume_name": param("STRING", true),
            }},
            "outputDefinitions": { "parameters": { "name": { "parameterType": "STRING" } } },
        }),
    );
    components.insert(
        format!("comp-{DELETE_PVC}"),
        json!({
            "executorLabel": format!("exec-{DELETE_PVC}"),
            "inputDefinitions": { "parameters": { "pvc_name": param("STRING", false) } },
        }),
    );
    executors.insert(
        format!("exec-{CREATE_PVC}"),
        json!({ "container": { "image": "argostub/createpvc" } }),
    );
    executors.insert(
        format!("exec-{DELETE_PVC}"),
        json!({ "container": { "image": "argostub/deletepvc" } }),
    );
    let constant = |v: Value| json!({ "runtimeValue": { "constant": v } });
    let mut inputs = json!({
        "access_modes": constant(json!([k.volume.access_mode])),
        "pvc_name_suffix": constant(json!("-volume")),
        "size": constant(json!(k.volume.size)),
    });
    // KFP's CreatePVC asks for the class "standard" when none is given.
    if let Some(c) = &k.volume.storage_class {
        inputs["storage_class_name"] = constant(json!(c));
    }
    tasks.insert(
        CREATE_PVC.into(),
        json!({
            "taskInfo": { "name": CREATE_PVC },
            "componentRef": { "name": format!("comp-{CREATE_PVC}") },
            "inputs": { "parameters": inputs },
            "cachingOptions": { "enableCache": false },
        }),
    );
    tasks.insert(
        DELETE_PVC.into(),
        json!({
            "taskInfo": { "name": DELETE_PVC },
            "componentRef": { "name": format!("comp-{DELETE_PVC}") },
            "inputs": { "parameters": { "pvc_name": {
                "taskOutputParameter": { "outputParameterKey": "name", "producerTask": CREATE_PVC }
            }}},
            "cachingOptions": { "enableCache": false },
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::load;
    use clap::Parser;
    use kubestyle_manifest::command::stylize;

    fn example() -> Loaded {
        load("manifests/example-spec.yaml")
    }

    #[test]
    fn example_spec_workspace() {
        let l = example();
        insta::assert_snapshot!(
            "kfp_example_workspace",
            compile(&l, &CompileOptions::of_spec(&l)).unwrap()
        );
    }

    #[test]
    fn kind_spec_pvc() {
        let l = load("manifests/ci/kind-spec.yaml");
        let opts = CompileOptions {
            kfp_volume: KfpVolume::Pvc,
            ..CompileOptions::of_spec(&l)
        };
        insta::assert_snapshot!("kfp_kind_pvc", compile(&l, &opts).unwrap());
    }

    /// The stage commands are the plan's: the same as `pipeline render`'s Jobs, on the
    /// workspace; a shard's command parses back to its shard.
    #[test]
    fn commands_are_the_plans() {
        let l = example();
        let (spec, _) = documents(&l, &CompileOptions::of_spec(&l)).unwrap();
        let ex = &spec["deploymentSpec"]["executors"];
        let args = |s: &str| -> Vec<String> {
            serde_json::from_value(ex[format!("exec-{s}")]["container"]["args"].clone()).unwrap()
        };
        let k = render::kubernetes_of(&l);
        let want = crate::compile::steps(&l, &k, "{{$.inputs.parameters['workspace']}}");
        assert_eq!(args("download"), want[0].cmd.args());
        assert_eq!(args("upload"), want[3].cmd.args());
        let mut st = args("stylize");
        let n = st.len();
        assert_eq!(st[n - 1], "{{$.inputs.parameters['shard']}}");
        st[n - 1] = "1".into();
        let argv = std::iter::once("stylize".to_string()).chain(
            st.into_iter()
                .map(|a| a.replace("{{$.inputs.parameters['workspace']}}", "/kfp-workspace")),
        );
        let parsed = stylize::Args::try_parse_from(argv).unwrap();
        assert_eq!((parsed.shard, parsed.shards), (1, 2));
        assert_eq!(parsed.device, "cuda");
        assert_eq!(
            parsed.volume.as_path(),
            std::path::Path::new("/kfp-workspace")
        );
    }

    #[test]
    fn caching_is_off_and_retries_follow_the_spec() {
        let l = example();
        let (spec, _) = documents(&l, &CompileOptions::of_spec(&l)).unwrap();
        let tasks = spec["root"]["dag"]["tasks"].as_object().unwrap();
        for (name, t) in tasks {
            // The ParallelFor's own task runs no container (the SDK gives it no cache option).
            if name != SHARDS_TASK {
                assert_eq!(t["cachingOptions"]["enableCache"], json!(false), "{name}");
            }
        }
        assert_eq!(tasks["download"]["retryPolicy"]["maxRetryCount"], json!(2));
        let inner = &spec["components"]["comp-stylize-shards"]["dag"]["tasks"]["stylize"];
        assert_eq!(inner["cachingOptions"]["enableCache"], json!(false));
        assert_eq!(
            tasks["stylize-shards"]["iteratorPolicy"]["parallelismLimit"],
            json!(2)
        );
    }

    #[test]
    fn secret_only_on_s3_steps_and_gpu_only_on_stylize() {
        let l = example();
        let (spec, platform) = documents(&l, &CompileOptions::of_spec(&l)).unwrap();
        let ex = &platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"];
        for s in Stage::ALL {
            let c = &ex[format!("exec-{s}")];
            assert_eq!(
                c.get("secretAsEnv").is_some(),
                matches!(s, Stage::Download | Stage::Upload),
                "{s}"
            );
            assert_eq!(c.get("tolerations").is_some(), s == Stage::Stylize, "{s}");
            let r =
                &spec["deploymentSpec"]["executors"][format!("exec-{s}")]["container"]["resources"];
            assert_eq!(r.get("accelerator").is_some(), s == Stage::Stylize, "{s}");
        }
        assert_eq!(
            spec["deploymentSpec"]["executors"]["exec-stylize"]["container"]["image"],
            json!("ghcr.io/kubestyle/kubestyle-stylize-cuda:0.1.0")
        );
    }

    #[test]
    fn an_existing_claim_is_mounted() {
        let mut l = example();
        l.spec.kubernetes.as_mut().unwrap().volume.claim = Some("shared".into());
        let (spec, platform) = documents(&l, &CompileOptions::of_spec(&l)).unwrap();
        let k8s = &platform["platforms"]["kubernetes"];
        assert!(k8s.get("pipelineConfig").is_none());
        assert_eq!(
            k8s["deploymentSpec"]["executors"]["exec-upload"]["pvcMount"][0]["constant"],
            json!("shared")
        );
        let tasks = spec["root"]["dag"]["tasks"].as_object().unwrap();
        assert!(!tasks.contains_key(CREATE_PVC));
        assert!(
            spec["deploymentSpec"]["executors"]["exec-download"]["container"]["args"]
                .as_array()
                .unwrap()
                .contains(&json!("/data"))
        );
    }
}
