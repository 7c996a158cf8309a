//! The real-cluster tier: `pipeline submit | status | logs | delete` — the binary, as users run
//! it — against whatever cluster `KUBESTYLE_TEST_KUBECONFIG` points at (an admin kubeconfig),
//! with real stage processes writing real outputs on the claim and real S3.
//!
//! Skipped in CI (no API server there): every test is `#[ignore = "needs cluster"]`. Run them
//! with a cluster up (`tests/cluster/up.sh` here: a real kube-apiserver, controller-manager and
//! scheduler, and a kubelet stand-in that runs each pod's command as a local process; the kind
//! workflow on GitHub), one at a time:
//!
//! ```sh
//! KUBESTYLE_TEST_KUBECONFIG=… KUBESTYLE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT \
//!   cargo test -p pipeline --test cluster -- --ignored --test-threads=1
//! ```
//!
//! Each test gets its own namespace with `manifests/base` applied into it (Namespace,
//! ServiceAccounts, the least-privilege Role and RoleBinding), its own buckets, and runs the
//! pipeline as the `kubestyle-controller` ServiceAccount (a TokenRequest token in a kubeconfig
//! of its own), so a verb missing from the Role fails the test. Pods reach S3 at
//! `KUBESTYLE_TEST_POD_S3_ENDPOINT` (default: `KUBESTYLE_TEST_S3_ENDPOINT`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use kubestyle_testkit::S3Server;
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;

const KUBECONFIG_VAR: &str = "KUBESTYLE_TEST_KUBECONFIG";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

use kubestyle_testkit::assets;

async fn admin() -> (Client, kube::Config) {
    kubestyle_pipeline::submit::install_crypto_provider();
    let path = std::env::var(KUBECONFIG_VAR).unwrap_or_else(|_| {
        panic!("{KUBECONFIG_VAR} is not set: these tests need a real cluster (tests/cluster/up.sh)")
    });
    let kc = kube::config::Kubeconfig::read_from(&path).expect("admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("admin kubeconfig");
    (Client::try_from(config.clone()).unwrap(), config)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One test's world: a namespace with `manifests/base` in it, the S3 Secret, buckets with the
/// demo photos and the trained model, and a kubeconfig for the controller ServiceAccount.
struct World {
    admin: Client,
    ns: String,
    s3: S3Server,
    inputs: String,
    models: String,
    results: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// `manifests/base` objects, moved into namespace `ns`.
fn base_objects(ns: &str) -> (Namespace, Vec<ServiceAccount>, Role, RoleBinding) {
    let read = |f: &str| std::fs::read_to_string(repo().join("manifests/base").join(f)).unwrap();
    let mut namespace: Namespace = serde_yaml_ng::from_str(&read("namespace.yaml")).unwrap();
    namespace.metadata.name = Some(ns.into());
    let sas: Vec<ServiceAccount> = read("serviceaccount.yaml")
        .split("\n---\n")
        .map(|d| {
            let mut sa: ServiceAccount = serde_yaml_ng::from_str(d).unwrap();
            sa.metadata.namespace = Some(ns.into());
            sa
        })
        .collect();
    let mut role: Role = serde_yaml_ng::from_str(&read("role.yaml")).unwrap();
    role.metadata.namespace = Some(ns.into());
    let mut binding: RoleBinding = serde_yaml_ng::from_str(&read("rolebinding.yaml")).unwrap();
    binding.metadata.namespace = Some(ns.into());
    for s in binding.subjects.iter_mut().flatten() {
        s.namespace = Some(ns.into());
    }
    (namespace, sas, role, binding)
}

impl World {
    async fn new(tag: &str) -> World {
        let (admin, config) = admin().await;
        let ns = format!("ks-{tag}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let (namespace, sas, role, binding) = base_objects(&ns);
        let pp = PostParams::default();
        Api::<Namespace>::all(admin.clone())
            .create(&pp, &namespace)
            .await
            .unwrap();
        for sa in &sas {
            Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
                .create(&pp, sa)
                .await
                .unwrap();
        }
        Api::<Role>::namespaced(admin.clone(), &ns)
            .create(&pp, &role)
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), &ns)
            .create(&pp, &binding)
            .await
            .unwrap();

        let s3 = S3Server::get().await;
        let pod_endpoint =
            std::env::var("KUBESTYLE_TEST_POD_S3_ENDPOINT").unwrap_or_else(|_| s3.endpoint.clone());
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("kubestyle-s3".into()),
                ..Default::default()
            },
            // The credentials this test uses (moto's dummies, or the kind workflow's MinIO).
            string_data: Some(BTreeMap::from([
                (
                    "AWS_ACCESS_KEY_ID".to_string(),
                    env_or("AWS_ACCESS_KEY_ID", "testing"),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    env_or("AWS_SECRET_ACCESS_KEY", "testing"),
                ),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_ENDPOINT_URL".into(), pod_endpoint),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(admin.clone(), &ns)
            .create(&pp, &secret)
            .await
            .unwrap();

        let inputs = s3.bucket("in").await;
        let models = s3.bucket("models").await;
        let results = s3.bucket("results").await;
        for entry in std::fs::read_dir(repo().join("examples/images")).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".jpg") || name.ends_with(".png") {
                s3.put(
                    &inputs,
                    &format!("photos/{name}"),
                    &std::fs::read(&p).unwrap(),
                )
                .await;
            }
        }
        let model = std::fs::read(assets().join("multistyle26.onnx"))
            .expect("the trained model (scripts/fetch_assets.py .cache/assets)");
        s3.put(&models, "multistyle26.onnx", &model).await;

        // The controller ServiceAccount's own kubeconfig: what the Role allows is all it has.
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
            .create_token_request(
                "kubestyle-controller",
                &pp,
                &TokenRequest {
                    spec: TokenRequestSpec {
                        audiences: vec![],
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .status
            .unwrap()
            .token;
        let dir = tempfile::tempdir().unwrap();
        let ca = config
            .root_cert
            .as_ref()
            .and_then(|c| c.first())
            .map(|der| {
                use base64::Engine;
                let pem = format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::engine::general_purpose::STANDARD.encode(der)
                );
                base64::engine::general_purpose::STANDARD.encode(pem)
            })
            .expect("the admin kubeconfig has CA data");
        let kubeconfig = dir.path().join("controller.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: controller\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: controller\n    namespace: {ns}\ncurrent-context: c\n",
                config.cluster_url
            ),
        )
        .unwrap();
        World {
            admin,
            ns,
            s3,
            inputs,
            models,
            results,
            dir,
            kubeconfig,
        }
    }

    /// A spec for this world: the example spec's run on the CPU, stylize as 2 shards on one
    /// node, `edit` applied to its text.
    fn spec(&self, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let text = format!(
            "version: 1
name: {name}
sources:
  images:
    - s3://{inputs}/photos/
  models:
    - uri: s3://{models}/multistyle26.onnx
      architecture: multistyle26
styles: [\"7\", \"3:0.5,12:0.5\"]
output: s3://{results}/runs/
stylize:
  max_size: 96
kubernetes:
  registry: ghcr.io/kubestyle
  tag: ci
  s3_secret: kubestyle-s3
  volume:
    size: 1Gi
  gpu:
    enabled: false
    shards: 2
    parallelism: 2
    same_node: true
  backoff_limit: 0
  active_deadline_seconds: 600
",
            inputs = self.inputs,
            models = self.models,
            results = self.results,
        );
        let p = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, edit(text)).unwrap();
        p
    }

    /// `pipeline ARGS` as the controller ServiceAccount.
    async fn pipeline(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipeline"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("KUBERNETES_SERVICE_HOST");
        tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("pipeline did not finish within 10 minutes")
            .unwrap()
    }

    /// Every object published under `runs/<run>/` matches the published SHA256SUMS; returns
    /// how many styled images there are.
    async fn verify_published(&self, run: &str) -> usize {
        let prefix = format!("runs/{run}/");
        let sums = self
            .s3
            .read(&self.results, &format!("{prefix}SHA256SUMS"))
            .await;
        let sums = String::from_utf8(sums).unwrap();
        let mut styled = 0;
        for line in sums.lines() {
            let (digest, key) = line.split_once("  ").unwrap();
            let body = self.s3.read(&self.results, &format!("{prefix}{key}")).await;
            assert_eq!(hex::encode(Sha256::digest(&body)), digest, "{key}");
            styled += usize::from(key.starts_with("styled/"));
        }
        styled
    }

    async fn job(&self, name: &str) -> Option<Job> {
        Api::<Job>::namespaced(self.admin.clone(), &self.ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.admin.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_code(o: &Output, code: i32) -> String {
    let t = text(o);
    assert!(!t.contains("panicked"), "{t}");
    // The Role grants everything the controller reads, events included.
    assert!(!t.contains("cannot read events"), "{t}");
    assert_eq!(o.status.code(), Some(code), "{t}");
    t
}

/// The example run end to end: claim, four Jobs in order, stylize as an Indexed Job of 2
/// shards, real outputs published and verified against SHA256SUMS; then `status`, `logs`, a
/// second submit that keeps everything, and `delete` without and with `--with-data`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn example_run_end_to_end_as_the_controller() {
    let w = World::new("e2e").await;
    let spec = w.spec("e2e", |t| t);
    let spec = spec.to_str().unwrap();
    let started = Instant::now();
    let out = w
        .pipeline(&["submit", spec, "--watch", "--timeout", "900"])
        .await;
    let t = assert_code(&out, 0);
    eprintln!("submit took {:?}\n{t}", started.elapsed());
    assert!(t.contains("run e2e: 4 stages complete"), "{t}");
    // --watch streamed the stages' own log lines.
    assert!(
        t.contains(" stylize | ") && t.contains("shard 1 of 2"),
        "{t}"
    );
    let st = w.job("e2e-stylize").await.unwrap();
    assert_eq!(
        st.spec.as_ref().unwrap().completion_mode.as_deref(),
        Some("Indexed")
    );
    assert_eq!(st.status.as_ref().unwrap().succeeded, Some(2));
    let images = std::fs::read_dir(repo().join("examples/images"))
        .unwrap()
        .filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .to_string();
            n.ends_with(".jpg") || n.ends_with(".png")
        })
        .count();
    assert_eq!(w.verify_published("e2e").await, images * 2);

    let out = w.pipeline(&["status", "e2e"]).await;
    let t = assert_code(&out, 0);
    assert_eq!(t.matches(" complete").count(), 4, "{t}");
    let out = w.pipeline(&["logs", "e2e", "--stage", "stylize"]).await;
    let t = assert_code(&out, 0);
    assert!(
        t.contains("stylize[0] |") && t.contains("stylize[1] |"),
        "{t}"
    );

    // Submitting again keeps every complete stage.
    let out = w.pipeline(&["submit", spec, "--timeout", "120"]).await;
    let t = assert_code(&out, 0);
    assert_eq!(t.matches("complete already, kept").count(), 4, "{t}");

    let out = w.pipeline(&["delete", "e2e"]).await;
    let t = assert_code(&out, 0);
    assert!(
        t.contains("deleted job/e2e-upload") && t.contains("kept persistentvolumeclaim/e2e-volume"),
        "{t}"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(w.admin.clone(), &w.ns);
    assert!(claims.get_opt("e2e-volume").await.unwrap().is_some());
    let out = w.pipeline(&["delete", "e2e", "--with-data"]).await;
    let t = assert_code(&out, 0);
    assert!(
        t.contains("deleted persistentvolumeclaim/e2e-volume"),
        "{t}"
    );
    w.cleanup().await;
}

/// A stage exiting 4 fails its Job at once (podFailurePolicy FailJob): submit exits 4 with the
/// stage, reason, pod and log tail; `pipeline logs` shows the failed pod's log.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn a_stage_exiting_4_fails_the_job_with_its_log_tail() {
    let w = World::new("fail4").await;
    w.s3.put(&w.models, "multistyle26.onnx", b"this is not an ONNX model")
        .await;
    let spec = w.spec("fail4", |t| t);
    let out = w
        .pipeline(&["submit", spec.to_str().unwrap(), "--timeout", "300"])
        .await;
    let t = assert_code(&out, 4);
    eprintln!("{t}");
    for needle in [
        "stage package-model failed with exit code 4 (input-invalid)",
        "PodFailurePolicy",
        "pod fail4-package-model-",
        "last lines of the package-model log",
        "multistyle26.onnx",
    ] {
        assert!(t.contains(needle), "{needle:?} in {t}");
    }
    assert!(w.job("fail4-stylize").await.is_none());
    let out = w
        .pipeline(&["logs", "fail4", "--stage", "package-model"])
        .await;
    let t = assert_code(&out, 0);
    assert!(
        t.contains("exit code 4") && t.contains("multistyle26.onnx"),
        "{t}"
    );
    let out = w.pipeline(&["status", "fail4"]).await;
    let t = assert_code(&out, 0);
    assert!(t.contains("failed: PodFailurePolicy"), "{t}");
    w.cleanup().await;
}

/// Resume on the cluster: upload fails (its bucket does not exist yet: exit 3); once the bucket
/// exists, the same spec submitted again keeps the three complete stages, replaces the failed
/// upload Job, and the run completes with every published object verified.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn a_resubmitted_run_resumes_from_the_failed_stage() {
    let w = World::new("resume").await;
    let missing = format!("ks-later-{:08x}", rand::random::<u32>());
    let spec = w.spec("resume", |t| {
        t.replace(
            &format!("s3://{}/runs/", w.results),
            &format!("s3://{missing}/runs/"),
        )
    });
    let spec = spec.to_str().unwrap();
    let out = w.pipeline(&["submit", spec, "--timeout", "600"]).await;
    let t = assert_code(&out, 3);
    assert!(t.contains("stage upload failed with exit code 3"), "{t}");

    w.s3.client
        .create_bucket()
        .bucket(&missing)
        .send()
        .await
        .unwrap();
    let out = w.pipeline(&["submit", spec, "--timeout", "600"]).await;
    let t = assert_code(&out, 0);
    for stage in ["download", "package-model", "stylize"] {
        assert!(
            t.contains(&format!("job resume-{stage}: complete already, kept")),
            "{stage}: {t}"
        );
    }
    assert!(
        t.contains("job resume-upload: replacing it: it had failed"),
        "{t}"
    );
    let sums = w.s3.read(&missing, "runs/resume/SHA256SUMS").await;
    assert!(String::from_utf8(sums).unwrap().contains("  styled/"));
    w.cleanup().await;
}

/// A missing S3 Secret leaves the download pod in CreateContainerConfigError: exit 3 naming the
/// Secret, at once rather than at the Job's deadline.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn a_missing_secret_is_named() {
    let w = World::new("nosecret").await;
    let spec = w.spec("nosecret", |t| {
        t.replace("s3_secret: kubestyle-s3", "s3_secret: no-such-secret")
    });
    let started = Instant::now();
    let out = w
        .pipeline(&["submit", spec.to_str().unwrap(), "--timeout", "300"])
        .await;
    let t = assert_code(&out, 3);
    assert!(t.contains("CreateContainerConfigError"), "{t}");
    assert!(t.contains("no-such-secret"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    w.cleanup().await;
}

/// A GPU stylize stage on a cluster with no matching node: the pod stays Unschedulable and the
/// run stops after `--pending-timeout` with exit 3 and the scheduler's reason. Then a Job deleted
/// while it is followed is reported (exit 3), not waited on.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn unschedulable_and_deleted_jobs_are_reported() {
    let w = World::new("sched").await;
    let gpu = |t: String| {
        t.replace(
            "    enabled: false\n",
            "    enabled: true\n    node_selector:\n      kubestyle.dev/no-such-node: \"true\"\n",
        )
    };
    let spec = w.spec("sched", gpu);
    let spec = spec.to_str().unwrap();
    let out = w
        .pipeline(&[
            "submit",
            spec,
            "--timeout",
            "600",
            "--pending-timeout",
            "10",
        ])
        .await;
    let t = assert_code(&out, 3);
    eprintln!("{t}");
    assert!(t.contains("sched-stylize"), "{t}");
    assert!(t.contains("Unschedulable"), "{t}");
    assert!(
        t.contains("node affinity/selector") || t.contains("node(s) didn't match"),
        "{t}"
    );

    // The same run followed again (stylize still pending), and its Job deleted meanwhile: once
    // submit says it follows the stylize Job.
    let mut child = {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipeline"));
        cmd.args([
            "submit",
            spec,
            "--timeout",
            "600",
            "--pending-timeout",
            "600",
        ])
        .env("KUBECONFIG", &w.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let following = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("job sched-stylize: running already, following it") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(following, Ok(true)), "{seen}");
    Api::<Job>::namespaced(w.admin.clone(), &w.ns)
        .delete("sched-stylize", &DeleteParams::background())
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("submit kept waiting for a deleted Job");
    assert_eq!(code.code(), Some(3), "{seen}");
    assert!(
        seen.contains("sched-stylize was deleted while being followed"),
        "{seen}"
    );
    assert!(!seen.contains("panicked"), "{seen}");
    w.cleanup().await;
}

/// A Job whose pods cannot be created (the ServiceAccount the spec names does not exist): the
/// Job controller's FailedCreate event is reported, exit 3, instead of a wait for the timeout.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn a_job_that_cannot_create_pods_is_reported() {
    let w = World::new("nosa").await;
    let spec = w.spec("nosa", |t| {
        t.replace(
            "  s3_secret: kubestyle-s3\n",
            "  s3_secret: kubestyle-s3\n  service_account: no-such-sa\n",
        )
    });
    let started = Instant::now();
    let out = w
        .pipeline(&["submit", spec.to_str().unwrap(), "--timeout", "300"])
        .await;
    let t = assert_code(&out, 3);
    assert!(t.contains("cannot create its pods: FailedCreate"), "{t}");
    assert!(t.contains("no-such-sa"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    w.cleanup().await;
}
