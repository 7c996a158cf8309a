//! The admission policy a cluster admin applies (`manifests/admin/admission-policy.yaml`),
//! evaluated offline with a CEL interpreter the way the API server evaluates it (its
//! `variables` in order, then every validation with `object` and `variables`): every Job
//! `pipeline render` makes passes, and each way the Role's `jobs create` could be used to read
//! a Secret or a token (or run a foreign image) is denied.

use std::collections::HashMap;
use std::path::Path;

use cel::{Context, Program};
use kubestyle_pipeline::render::render_yaml;
use kubestyle_pipeline::spec;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn policy() -> Value {
    let text =
        std::fs::read_to_string(repo().join("manifests/admin/admission-policy.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    docs.into_iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap()
}

/// The messages of the validations `job` fails (an evaluation error counts as a failure, as
/// with `failurePolicy: Fail`).
fn denied(policy: &Value, job: &Value) -> Vec<String> {
    let mut vars: HashMap<String, cel::Value> = HashMap::new();
    for v in policy["spec"]["variables"].as_array().unwrap() {
        let mut ctx = Context::default();
        ctx.add_variable("object", job).unwrap();
        ctx.add_variable_from_value("variables", vars.clone());
        let p = Program::compile(v["expression"].as_str().unwrap()).unwrap();
        let value = p.execute(&ctx).unwrap();
        vars.insert(v["name"].as_str().unwrap().to_string(), value);
    }
    let mut ctx = Context::default();
    ctx.add_variable("object", job).unwrap();
    ctx.add_variable_from_value("variables", vars);
    policy["spec"]["validations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            let p = Program::compile(v["expression"].as_str().unwrap()).unwrap();
            !matches!(p.execute(&ctx), Ok(cel::Value::Bool(true)))
        })
        .map(|v| v["message"].as_str().unwrap().to_string())
        .collect()
}

fn rendered_jobs(spec_file: &str) -> Vec<Value> {
    let l = spec::load(&repo().join(spec_file)).unwrap();
    let yaml = render_yaml(&l).unwrap();
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| d["kind"] == "Job")
        .collect()
}

/// Promise: the admission policy admits every Job `pipeline render` makes (the example's
/// four, GPU shards and the S3 Secret included).
#[test]
fn rendered_jobs_are_admitted() {
    let p = policy();
    let jobs = rendered_jobs("manifests/example-spec.yaml");
    assert_eq!(jobs.len(), 4);
    for j in &jobs {
        assert_eq!(
            denied(&p, j),
            Vec::<String>::new(),
            "{}",
            j["metadata"]["name"]
        );
    }
}

/// Promise: the policy also admits the serving Deployment `pipeline render --serve deployment`
/// makes (manifests/serve lets the controller apply it; the policy covers Deployments, whose pod
/// template sits where a Job's does), and refuses one that mounts a Secret.
#[test]
fn the_rendered_serving_deployment_is_admitted_and_a_hostile_one_is_not() {
    use kubestyle_pipeline::render::RenderOptions;
    use kubestyle_pipeline::serve::{PackagesFrom, ServeForm, render_serve_yaml};
    let p = policy();
    let mut l = spec::load(&repo().join("manifests/example-spec.yaml")).unwrap();
    l.spec.publish_models = true;
    let rendered = |from| {
        let yaml =
            render_serve_yaml(&l, &RenderOptions::default(), ServeForm::Deployment, from).unwrap();
        serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .find(|d: &Value| d["kind"] == "Deployment")
            .unwrap()
    };
    // With the packages from the output too: its init container is held to the same rules.
    let fetching: Value = rendered(PackagesFrom::Output);
    assert_eq!(denied(&p, &fetching), Vec::<String>::new());
    let deployment: Value = rendered(PackagesFrom::Claim);
    assert_eq!(denied(&p, &deployment), Vec::<String>::new());
    let rule = p["spec"]["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["apiGroups"] == json!(["apps"]) && r["resources"] == json!(["deployments"]));
    assert!(rule, "the policy does not match Deployments");
    let mut hostile = deployment.clone();
    hostile["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "s", "secret": {"secretName": "other"}}));
    assert!(
        !denied(&p, &hostile).is_empty(),
        "a Deployment mounting a Secret is admitted"
    );
    // An init container is held to every container's rules.
    type Mutation = fn(&mut Value);
    let hostile_init: [(&str, Mutation); 3] = [
        ("a foreign image", |c| c["image"] = json!("evil.io/cat:1")),
        ("another Secret", |c| {
            c["envFrom"] = json!([{"secretRef": {"name": "other"}}]);
        }),
        ("env from a Secret", |c| {
            c["env"] = json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}]);
        }),
    ];
    for (what, mutate) in hostile_init {
        let mut d = fetching.clone();
        mutate(&mut d["spec"]["template"]["spec"]["initContainers"][0]);
        assert!(
            !denied(&p, &d).is_empty(),
            "a serving Deployment whose init container has {what} is admitted"
        );
    }
}

/// Promise: least privilege for real: a Job made with the Role's `jobs create` cannot mount
/// another Secret, a projected token or a host path, take env from a Secret, run as another
/// ServiceAccount or with its token, run a foreign image or an init container.
#[test]
fn jobs_that_could_read_a_secret_are_denied() {
    let p = policy();
    let base = rendered_jobs("manifests/example-spec.yaml")
        .into_iter()
        .find(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("download")
        })
        .unwrap();
    type Mutation = fn(&mut Value);
    let hostile: [(&str, Mutation); 9] = [
        ("a secret volume", |j| {
            let pod = &mut j["spec"]["template"]["spec"];
            pod["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "s", "secret": {"secretName": "other"}}));
        }),
        ("a projected token", |j| {
            let pod = &mut j["spec"]["template"]["spec"];
            pod["volumes"].as_array_mut().unwrap().push(
                json!({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}),
            );
        }),
        ("a host path", |j| {
            let pod = &mut j["spec"]["template"]["spec"];
            pod["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "h", "hostPath": {"path": "/"}}));
        }),
        ("another Secret through envFrom", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
                json!([{"secretRef": {"name": "other"}}]);
        }),
        ("a secretKeyRef", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}));
        }),
        ("another ServiceAccount", |j| {
            j["spec"]["template"]["spec"]["serviceAccountName"] = json!("default");
        }),
        ("the token mounted", |j| {
            j["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true);
        }),
        ("a foreign image", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil.io/cat:1");
        }),
        ("an init container", |j| {
            j["spec"]["template"]["spec"]["initContainers"] =
                json!([{"name": "i", "image": "ghcr.io/kubestyle/kubestyle-download:0.1.0"}]);
        }),
    ];
    for (what, mutate) in hostile {
        let mut j = base.clone();
        mutate(&mut j);
        assert!(!denied(&p, &j).is_empty(), "{what} is admitted");
    }
}
