//! `pipeline compile` output checked with the engines' own definitions
//! (`scripts/validate_compiled.py`): Kubeflow Pipelines' protobufs (kfp-pipeline-spec,
//! kfp-kubernetes, unknown fields refused) and SDK, and Argo Workflows' schema (hera's models
//! generated from it, unknown fields refused).
//!
//! `scripts/test.sh` installs those packages in its venv (`scripts/requirements-test.txt`) and
//! sets `KUBESTYLE_ENGINES_PYTHON` to the venv's Python; without it these tests fail rather than
//! skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubestyle_pipeline::compile::{self, CompileOptions, KfpVolume, Target};
use kubestyle_pipeline::spec::{self, Loaded};
use serde_json::{Value, json};

fn python() -> PathBuf {
    match std::env::var_os("KUBESTYLE_ENGINES_PYTHON").map(PathBuf::from) {
        Some(p) if p.exists() => p,
        _ => panic!(
            "KUBESTYLE_ENGINES_PYTHON is not set to a Python with kfp, kfp-kubernetes and \
             hera-workflows: run scripts/test.sh (it installs scripts/requirements-test.txt in \
             its venv)"
        ),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the validator on `files`; Err carries its report.
fn validate(target: &str, files: &[PathBuf]) -> Result<String, String> {
    let out = Command::new(python())
        .arg(repo().join("scripts/validate_compiled.py"))
        .arg(target)
        .args(files)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Every example spec: examples/*.yaml and the manifests' specs.
fn example_specs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v.push(repo().join("manifests/example-spec.yaml"));
    v.push(repo().join("manifests/ci/kind-spec.yaml"));
    v
}

/// Variants of the example spec that take the other branches: CPU with one shard, an existing
/// claim, no S3 Secret and anonymized (the salt's Secret alone); a runtime class with shards on
/// one node, no retries, anonymized beside the S3 Secret.
fn variants() -> Vec<(String, Loaded)> {
    let base = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    let mut cpu = base.clone();
    cpu.spec.anonymize = true;
    let k = cpu.spec.kubernetes.as_mut().unwrap();
    k.gpu.enabled = false;
    k.gpu.shards = 1;
    k.volume.claim = Some("shared".into());
    k.s3_secret = None;
    k.resources.clear();
    let mut gpu = base.clone();
    let k = gpu.spec.kubernetes.as_mut().unwrap();
    k.gpu.runtime_class_name = Some("nvidia".into());
    k.gpu.same_node = true;
    k.gpu.shards = 4;
    k.anonymize_secret = Some("run-salts".into());
    gpu.spec.anonymize = true;
    k.volume.storage_class = Some("efs-sc".into());
    k.backoff_limit = 0;
    vec![("cpu-claim".into(), cpu), ("gpu-same-node".into(), gpu)]
}

#[test]
fn every_example_spec_compiles_to_documents_the_engines_accept() {
    let dir = tempfile::tempdir().unwrap();
    let mut loaded: Vec<(String, Loaded)> = Vec::new();
    let mut refused = Vec::new();
    for p in example_specs() {
        let l = spec::load(&p).unwrap();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        // Specs on local paths cannot run in a cluster: every target refuses them as render does.
        if kubestyle_pipeline::render::render(&l).is_err() {
            let e = compile::compile(&l, Target::Argo, &CompileOptions::of_spec(&l)).unwrap_err();
            assert!(e.to_string().contains("S3 only"), "{name}: {e}");
            refused.push(name);
            continue;
        }
        loaded.push((name, l));
    }
    assert_eq!(refused, ["demo", "transformer-net"]);
    assert_eq!(
        loaded.len(),
        3,
        "{loaded:?}",
        loaded = loaded.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    loaded.extend(variants());

    for (target, volumes) in [
        (Target::Kfp, vec![KfpVolume::Workspace, KfpVolume::Pvc]),
        (Target::Argo, vec![KfpVolume::Workspace]),
    ] {
        let mut files = Vec::new();
        for (name, l) in &loaded {
            for v in &volumes {
                let opts = CompileOptions {
                    kfp_volume: *v,
                    ..CompileOptions::of_spec(l)
                };
                let f = dir.path().join(format!("{name}-{target:?}-{v:?}.yaml"));
                std::fs::write(&f, compile::compile(l, target, &opts).unwrap()).unwrap();
                files.push(f);
            }
        }
        let t = if target == Target::Kfp { "kfp" } else { "argo" };
        let report = validate(t, &files).unwrap_or_else(|e| panic!("{t}:\n{e}"));
        assert_eq!(report.matches("ok: ").count(), files.len(), "{report}");
    }
}

/// A change to a KFP pipeline (spec, platform config) or to an Argo Workflow.
type KfpEdit = Box<dyn Fn(&mut Value, &mut Value)>;
type ArgoEdit = Box<dyn Fn(&mut Value)>;

fn write(dir: &Path, name: &str, docs: &[&Value]) -> PathBuf {
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).unwrap())
        .collect();
    let f = dir.join(name);
    std::fs::write(&f, text.join("---\n")).unwrap();
    f
}

/// The validator refuses what the engines refuse: an unknown field or a wrong type anywhere,
/// including inside KFP's Struct-typed executors (so the test above can fail).
#[test]
fn validator_refuses_wrong_documents() {
    let dir = tempfile::tempdir().unwrap();
    let l = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    let opts = CompileOptions::of_spec(&l);

    let (spec, platform) = compile::kfp::documents(&l, &opts).unwrap();
    let good = write(dir.path(), "kfp-good.yaml", &[&spec, &platform]);
    validate("kfp", &[good]).unwrap();
    let kfp_cases: Vec<(&str, KfpEdit)> = vec![
        (
            "unknown executor field",
            Box::new(|s, _| {
                s["deploymentSpec"]["executors"]["exec-download"]["container"]["workingDir"] =
                    json!("/tmp")
            }),
        ),
        (
            "wrong executor type",
            Box::new(|s, _| {
                s["deploymentSpec"]["executors"]["exec-stylize"]["container"]["args"] =
                    json!("--volume /data")
            }),
        ),
        (
            "unknown task field",
            Box::new(|s, _| s["root"]["dag"]["tasks"]["download"]["retries"] = json!(3)),
        ),
        (
            "wrong task type",
            Box::new(|s, _| {
                s["root"]["dag"]["tasks"]["download"]["retryPolicy"]["maxRetryCount"] = json!("two")
            }),
        ),
        (
            "unknown platform executor field",
            Box::new(|_, p| {
                p["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-upload"]["envFrom"] =
                    json!([{ "secretRef": { "name": "kubestyle-s3" } }])
            }),
        ),
        (
            "upper-case pipeline name",
            Box::new(|s, _| s["pipelineInfo"]["name"] = json!("Demo_K8s")),
        ),
        (
            "dependency on a missing task",
            Box::new(|s, _| {
                s["root"]["dag"]["tasks"]["upload"]["dependentTasks"] = json!(["stylize"])
            }),
        ),
    ];
    for (what, f) in kfp_cases {
        let (mut s, mut p) = (spec.clone(), platform.clone());
        f(&mut s, &mut p);
        let bad = write(dir.path(), "kfp-bad.yaml", &[&s, &p]);
        let e = validate("kfp", &[bad]).expect_err(what);
        assert!(e.contains("kfp-bad.yaml"), "{what}: {e}");
    }

    let wf = compile::argo::workflow(&l, &opts).unwrap();
    let good = write(dir.path(), "argo-good.yaml", &[&wf]);
    validate("argo", &[good]).unwrap();
    let argo_cases: Vec<(&str, ArgoEdit)> = vec![
        (
            "unknown container field",
            Box::new(|w| w["spec"]["templates"][1]["container"]["retries"] = json!(3)),
        ),
        (
            "wrong type",
            Box::new(|w| w["spec"]["templates"][0]["parallelism"] = json!("many")),
        ),
        (
            "unknown template",
            Box::new(|w| w["spec"]["templates"][0]["dag"]["tasks"][0]["template"] = json!("get")),
        ),
        (
            "undeclared input",
            Box::new(|w| w["spec"]["templates"][3]["inputs"] = json!({ "parameters": [] })),
        ),
    ];
    for (what, f) in argo_cases {
        let mut w = wf.clone();
        f(&mut w);
        let bad = write(dir.path(), "argo-bad.yaml", &[&w]);
        let e = validate("argo", &[bad]).expect_err(what);
        assert!(e.contains("argo-bad.yaml"), "{what}: {e}");
    }
}

/// The command line: `pipeline compile SPEC --target T -o FILE`.
#[test]
fn compile_command_writes_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo().join("manifests/example-spec.yaml");
    for (t, want) in [
        ("kfp", "\nschemaVersion: 2.1.0\n"),
        ("argo", "\nkind: Workflow\n"),
    ] {
        let f = dir.path().join(format!("{t}.yaml"));
        let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["compile", "--target", t, "-o"])
            .arg(&f)
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains(want), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["compile", "--target", "argo"])
        .arg(repo().join("examples/demo.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
