//! Every rendered object, and every object of the `manifests/` base, validates against the
//! real Kubernetes OpenAPI schemas (PyPI `kubernetes-validate`, strict: unknown fields are
//! errors) for the oldest API we target (1.33) and the validator's newest (1.37).
//!
//! `scripts/test.sh` installs the validator in its venv and sets `KUBESTYLE_KUBERNETES_VALIDATE`;
//! without it these tests fail rather than skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use kubestyle_pipeline::render::render_yaml;
use kubestyle_pipeline::spec;

const VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

fn validator() -> PathBuf {
    let p = std::env::var_os("KUBESTYLE_KUBERNETES_VALIDATE").map(PathBuf::from);
    match p {
        Some(p) if p.exists() => p,
        _ => panic!(
            "KUBESTYLE_KUBERNETES_VALIDATE is not set to the kubernetes-validate executable: \
             run scripts/test.sh (it installs kubernetes-validate in its venv)"
        ),
    }
}

fn validate(yaml: &str, name: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    for v in VERSIONS {
        let out = Command::new(validator())
            .args(["--strict", "--quiet", "-k", v])
            .arg(&f)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "{name} fails against Kubernetes {v}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn rendered_objects_validate() {
    let example = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    validate(&render_yaml(&example).unwrap(), "example").unwrap();

    // CPU only, one shard, an existing claim, no S3 Secret, no resources; anonymized (the
    // salt from its Secret, upload only).
    let mut cpu = example.clone();
    cpu.spec.anonymize = true;
    let k = cpu.spec.kubernetes.as_mut().unwrap();
    k.gpu.enabled = false;
    k.gpu.shards = 1;
    k.gpu.parallelism = 1;
    k.volume.claim = Some("shared".into());
    k.volume.storage_class = Some("standard".into());
    k.s3_secret = None;
    k.resources.clear();
    validate(&render_yaml(&cpu).unwrap(), "cpu").unwrap();

    // The kind workflow's spec (CPU, Indexed stylize Job on CPU) and its MinIO.
    let kind = spec::load(&repo().join("manifests/ci/kind-spec.yaml")).unwrap();
    validate(&render_yaml(&kind).unwrap(), "kind").unwrap();
    validate(
        &std::fs::read_to_string(repo().join("manifests/ci/minio.yaml")).unwrap(),
        "minio",
    )
    .unwrap();

    // A spec without a kubernetes section: every default.
    let s3 = spec::load(&repo().join("examples/s3.yaml")).unwrap();
    validate(&render_yaml(&s3).unwrap(), "defaults").unwrap();
}

/// The validator is strict: an unknown field and a wrong type are caught (so the test above
/// can fail).
#[test]
fn validator_catches_mistakes() {
    let example = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    let good = render_yaml(&example).unwrap();
    let unknown = good.replacen("  backoffLimit: 2", "  backoffLimit: 2\n  retries: 3", 1);
    assert_ne!(unknown, good);
    assert!(validate(&unknown, "unknown-field").is_err());
    let wrong = good.replacen("  backoffLimit: 2", "  backoffLimit: two", 1);
    assert!(validate(&wrong, "wrong-type").is_err());
}

#[test]
fn manifests_base_and_serve_validate() {
    for (dir, at_least) in [("manifests/base", 4), ("manifests/serve", 2)] {
        let base = repo().join(dir);
        let mut n = 0;
        for e in std::fs::read_dir(&base).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".yaml") || name == "kustomization.yaml" {
                continue;
            }
            validate(&std::fs::read_to_string(&p).unwrap(), &name).unwrap();
            n += 1;
        }
        assert!(
            n >= at_least,
            "only {n} objects files in {}",
            base.display()
        );
    }
}

/// The admission policy a cluster admin applies (`manifests/admin/`) is valid for every API
/// we target, and the namespace of the base carries the label its binding selects.
#[test]
fn manifests_admin_validates_and_binds_the_base_namespace() {
    let p = repo().join("manifests/admin/admission-policy.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    validate(&text, "admission-policy").unwrap();
    assert!(text.contains("kubestyle.dev/admission: enforce"));
    let ns = std::fs::read_to_string(repo().join("manifests/base/namespace.yaml")).unwrap();
    assert!(
        ns.contains("kubestyle.dev/admission: enforce"),
        "manifests/base/namespace.yaml lacks the label the policy binding selects"
    );
}

/// `pipeline render --serve`: the Deployment and Service validate (GPU and CPU specs). The
/// InferenceService is a KServe CRD the validator has no schema for: what can be validated is —
/// its predictor, which KServe inlines as a PodSpec, is validated as the spec of a Pod with the
/// same metadata; its `apiVersion`, `kind` and `kserve-container` are checked by the unit tests
/// and the snapshot (`pipeline/src/serve.rs`).
#[test]
fn serving_objects_validate() {
    use kubestyle_pipeline::render::RenderOptions;
    use kubestyle_pipeline::serve::{
        PackagesFrom, ServeForm, ServeObject, render_serve, render_serve_yaml,
    };
    let mut example = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    example.spec.publish_models = true;
    let mut cpu = example.clone();
    let k = cpu.spec.kubernetes.as_mut().unwrap();
    k.gpu.enabled = false;
    k.volume.claim = Some("shared".into());
    k.resources.clear();
    for ((l, name), from) in [(&example, "gpu"), (&cpu, "cpu")]
        .into_iter()
        .flat_map(|x| [(x, PackagesFrom::Claim), (x, PackagesFrom::Output)])
    {
        let name = format!("{name}-{from:?}");
        let opts = RenderOptions::of_spec(l);
        let yaml = render_serve_yaml(l, &opts, ServeForm::Deployment, from).unwrap();
        // The packages from the output: an init container fetches them, the pod has no claim.
        assert_eq!(
            yaml.contains("initContainers"),
            from == PackagesFrom::Output
        );
        assert_eq!(
            yaml.contains("persistentVolumeClaim"),
            from == PackagesFrom::Claim
        );
        assert!(yaml.contains("kind: Deployment") && yaml.contains("kind: Service"));
        validate(&yaml, &format!("serve-{name}")).unwrap();
        // The validator is strict on these too.
        let wrong = yaml.replacen("  replicas: 1", "  replicas: one", 1);
        assert_ne!(wrong, yaml);
        assert!(validate(&wrong, "serve-wrong-type").is_err());

        let objs = render_serve(l, &opts, ServeForm::Kserve, from).unwrap();
        let [ServeObject::InferenceService(isvc)] = objs.as_slice() else {
            panic!("{objs:?}")
        };
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": isvc.metadata,
            "spec": isvc.spec.predictor.pod,
        });
        validate(
            &serde_yaml_ng::to_string(&pod).unwrap(),
            &format!("kserve-predictor-{name}"),
        )
        .unwrap();
    }
}
