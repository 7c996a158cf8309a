//! Spec → an Argo Workflows `Workflow` (`argoproj.io/v1alpha1`).
//!
//! * A `dag` of one container template per stage, in stage order; the stylize shards are a
//!   fan-out of the stylize template (`withSequence`, the shard number as the stage's own
//!   `JOB_COMPLETION_INDEX`), at most `gpu.parallelism` at once (the DAG's `parallelism`).
//! * Containers: the plan's command and the pods of `pipeline render` — image, resources,
//!   `HOME`, the S3 Secret by reference (`envFrom`, download and upload only), a read-only root
//!   filesystem with a `/tmp` emptyDir, no privilege escalation, every capability dropped; the
//!   pods run non-root with the runtime's seccomp profile. A GPU stylize gets the node
//!   selector, tolerations, runtime class and (`gpu.same_node`) pod affinity of the spec.
//! * The volume: a `volumeClaimTemplate` per Workflow (`volumeClaimGC: OnWorkflowSuccess`, so
//!   a failed run keeps its data for `argo retry`, which resumes), or the claim the spec names.
//! * Retries: `retryStrategy` with `kubernetes.backoff_limit` retries, a doubling backoff, and
//!   an expression that does not retry the exit codes retrying cannot help (the Jobs'
//!   `podFailurePolicy`). Each step's `activeDeadlineSeconds` is the spec's; `podGC:
//!   OnPodSuccess` keeps failed steps' pods (and logs) until the Workflow's TTL
//!   (`ttlStrategy.secondsAfterCompletion`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource, SecretEnvSource, Volume,
    VolumeMount,
};
use kubestyle_manifest::StageError;
use serde_json::{Value, json};

use super::{
    BACKOFF_FACTOR, BACKOFF_MAX_SECONDS, BACKOFF_SECONDS, CompileOptions, Step, json as to_json,
    parallelism, shard_option, shards, steps, to_yaml,
};
use crate::Stage;
use crate::render;
use crate::spec::{Kubernetes, Loaded};

/// The Workflow's entry template (the DAG).
pub const ENTRYPOINT: &str = "kubestyle";
/// The name Argo gives the step's container.
const MAIN: &str = "main";
/// The stylize template's input parameter carrying the shard number.
const SHARD_PARAM: &str = "shard";

/// The Workflow for `l`, as YAML.
pub fn compile(l: &Loaded, opts: &CompileOptions) -> Result<String, StageError> {
    Ok(format!(
        "# kubestyle run {} compiled for Argo Workflows (pipeline compile --target argo)\n{}",
        l.spec.name,
        to_yaml(&workflow(l, opts)?)?
    ))
}

/// The retry condition: every exit code but those retrying cannot help.
pub fn retry_expression() -> String {
    let codes: Vec<String> = render::non_retryable_exit_codes()
        .iter()
        .map(i32::to_string)
        .collect();
    format!("asInt(lastRetry.exitCode) not in [{}]", codes.join(", "))
}

/// The Workflow object.
pub fn workflow(l: &Loaded, opts: &CompileOptions) -> Result<Value, StageError> {
    let k = render::cluster_settings(l)?;
    let run = l.spec.name.as_str();
    let steps = steps(l, &k, &k.volume.mount_path);
    let sharded = shards(&k) > 1;

    let mut templates = vec![dag(&steps, &k, sharded)];
    templates.extend(steps.iter().map(|s| template(l, &k, s, sharded)));

    let mut metadata = json!({
        "generateName": format!("{run}-"),
        "labels": render::labels(l, None),
        "annotations": { "kubestyle.dev/spec-sha256": l.hash },
    });
    if let Some(ns) = &opts.namespace {
        metadata["namespace"] = json!(ns);
    }

    let mut volumes = vec![to_json(&render::tmp_volume())];
    let mut spec = json!({
        "entrypoint": ENTRYPOINT,
        "serviceAccountName": k.service_account,
        "securityContext": to_json(&render::pod_security_context()),
        "podGC": { "strategy": "OnPodSuccess" },
        "ttlStrategy": { "secondsAfterCompletion": k.ttl_seconds_after_finished },
        "templates": templates,
    });
    match &k.volume.claim {
        Some(claim) => volumes.push(to_json(&Volume {
            name: render::DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        })),
        None => {
            spec["volumeClaimTemplates"] = json!([{
                "metadata": { "name": render::DATA_VOLUME },
                "spec": to_json(&render::claim_spec(&k)),
            }]);
            spec["volumeClaimGC"] = json!({ "strategy": "OnWorkflowSuccess" });
        }
    }
    spec["volumes"] = Value::Array(volumes);

    Ok(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": spec,
    }))
}

/// The entry DAG: the stages in order, the stylize shards fanned out.
fn dag(steps: &[Step], k: &Kubernetes, sharded: bool) -> Value {
    let mut tasks = Vec::new();
    let mut previous: Option<&str> = None;
    for s in steps {
        let mut t = json!({ "name": s.name(), "template": s.name() });
        if let Some(p) = previous {
            t["dependencies"] = json!([p]);
        }
        if s.stage == Stage::Stylize && sharded {
            t["withSequence"] = json!({ "count": shards(k).to_string() });
            t["arguments"] = json!({
                "parameters": [{ "name": SHARD_PARAM, "value": "{{item}}" }]
            });
        }
        tasks.push(t);
        previous = Some(s.name());
    }
    let mut d = json!({ "name": ENTRYPOINT, "dag": { "tasks": tasks } });
    if sharded {
        d["parallelism"] = json!(parallelism(k));
    }
    d
}

/// A stage's container template.
fn template(l: &Loaded, k: &Kubernetes, s: &Step, sharded: bool) -> Value {
    let shard_input = s.stage == Stage::Stylize && sharded;
    let mut env: Vec<EnvVar> = s
        .env
        .iter()
        .map(|(n, v)| EnvVar {
            name: n.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    env.extend(s.salt_secret.as_deref().map(render::salt_env));
    if shard_input {
        env.push(EnvVar {
            name: shard_option().1,
            value: Some(format!("{{{{inputs.parameters.{SHARD_PARAM}}}}}")),
            ..Default::default()
        });
    }
    let container = Container {
        name: MAIN.into(),
        image: Some(s.image.clone()),
        image_pull_policy: Some(render::IMAGE_PULL_POLICY.into()),
        command: Some(vec![s.cmd.program().into()]),
        args: Some(s.cmd.args()),
        env: Some(env),
        env_from: s.secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        resources: Some(s.resources.clone()),
        security_context: Some(render::container_security_context()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: render::DATA_VOLUME.into(),
                mount_path: k.volume.mount_path.clone(),
                ..Default::default()
            },
            VolumeMount {
                name: render::TMP_VOLUME.into(),
                mount_path: render::TMP_MOUNT.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };

    let mut t = json!({
        "name": s.name(),
        "metadata": {
            "labels": render::labels(l, Some(s.stage)),
            "annotations": { "kubestyle.dev/spec-sha256": l.hash },
        },
        "container": to_json(&container),
        "activeDeadlineSeconds": k.active_deadline_seconds,
    });
    if k.backoff_limit > 0 {
        t["retryStrategy"] = json!({
            "limit": k.backoff_limit,
            "retryPolicy": "Always",
            "expression": retry_expression(),
            "backoff": {
                "duration": format!("{BACKOFF_SECONDS}s"),
                "factor": BACKOFF_FACTOR,
                "maxDuration": format!("{BACKOFF_MAX_SECONDS}s"),
            },
        });
    }
    if shard_input {
        t["inputs"] = json!({ "parameters": [{ "name": SHARD_PARAM }] });
    }
    if s.gpu {
        if !k.gpu.node_selector.is_empty() {
            t["nodeSelector"] = json!(k.gpu.node_selector);
        }
        if !k.gpu.tolerations.is_empty() {
            t["tolerations"] = to_json(&render::tolerations(k));
        }
        // A template has no runtimeClassName of its own: a pod spec patch sets it.
        if let Some(rc) = &k.gpu.runtime_class_name {
            let patch = BTreeMap::from([("runtimeClassName", rc)]);
            t["podSpecPatch"] = json!(serde_json::to_string(&patch).expect("a string map"));
        }
    }
    if shard_input && k.gpu.same_node {
        t["affinity"] = to_json(&render::same_node(&l.spec.name));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::load;

    #[test]
    fn example_spec() {
        let l = load("manifests/example-spec.yaml");
        insta::assert_snapshot!(
            "argo_example",
            compile(&l, &CompileOptions::of_spec(&l)).unwrap()
        );
    }

    #[test]
    fn kind_spec() {
        let l = load("manifests/ci/kind-spec.yaml");
        insta::assert_snapshot!(
            "argo_kind",
            compile(&l, &CompileOptions::of_spec(&l)).unwrap()
        );
    }

    #[test]
    fn retries_skip_the_failures_retrying_cannot_help() {
        assert_eq!(
            retry_expression(),
            "asInt(lastRetry.exitCode) not in [2, 3, 4, 9]"
        );
    }

    /// The containers are `pipeline render`'s: the same commands, images, resources,
    /// environment and security settings.
    #[test]
    fn containers_are_the_rendered_jobs() {
        let l = load("manifests/example-spec.yaml");
        let wf = workflow(&l, &CompileOptions::of_spec(&l)).unwrap();
        let jobs: Vec<_> = render::render(&l)
            .unwrap()
            .into_iter()
            .filter_map(|o| match o {
                render::Object::Job(j) => Some(j),
                _ => None,
            })
            .collect();
        let templates = wf["spec"]["templates"].as_array().unwrap();
        for j in jobs {
            let pod = j.spec.unwrap().template.spec.unwrap();
            let job_c = &pod.containers[0];
            let stage = job_c.name.as_str();
            let t = templates.iter().find(|t| t["name"] == stage).unwrap();
            let c: Container = serde_json::from_value(t["container"].clone()).unwrap();
            assert_eq!(c.args, job_c.args, "{stage}");
            assert_eq!(c.command, job_c.command, "{stage}");
            assert_eq!(c.image, job_c.image, "{stage}");
            assert_eq!(c.resources, job_c.resources, "{stage}");
            assert_eq!(c.security_context, job_c.security_context, "{stage}");
            assert_eq!(c.env_from, job_c.env_from, "{stage}");
            assert_eq!(c.volume_mounts, job_c.volume_mounts, "{stage}");
            let extra: Vec<_> = c
                .env
                .unwrap()
                .into_iter()
                .filter(|e| !job_c.env.as_ref().unwrap().contains(e))
                .map(|e| e.name)
                .collect();
            let want: Vec<String> = if stage == "stylize" {
                vec!["JOB_COMPLETION_INDEX".into()]
            } else {
                vec![]
            };
            assert_eq!(extra, want, "{stage}");
            assert_eq!(
                to_json(&pod.security_context.unwrap()),
                wf["spec"]["securityContext"]
            );
        }
    }

    #[test]
    fn one_shard_has_no_fan_out_and_an_existing_claim_is_mounted() {
        let mut l = load("manifests/example-spec.yaml");
        let k = l.spec.kubernetes.as_mut().unwrap();
        k.gpu.shards = 1;
        k.volume.claim = Some("shared".into());
        let wf = workflow(&l, &CompileOptions::of_spec(&l)).unwrap();
        let y = serde_json::to_string(&wf).unwrap();
        assert!(!y.contains("withSequence") && !y.contains("JOB_COMPLETION_INDEX"));
        assert!(wf["spec"].get("volumeClaimTemplates").is_none());
        assert!(wf["spec"].get("volumeClaimGC").is_none());
        assert_eq!(
            wf["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"],
            json!("shared")
        );
    }
}
