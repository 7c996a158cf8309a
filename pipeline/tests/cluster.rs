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
//!   cargo test -p pipeline --test cluster -- --ignored --skip real_node_ --test-threads=1
//! ```
//!
//! The same scenarios run on a real node (kubelet + containerd + CNI, our images:
//! `tests/cluster/real-tier.sh`), which also runs the `real_node_` tests: what only a real
//! runtime shows (securityContext seen from inside, fsGroup, the Secret's reach, SIGTERM on
//! delete, an image that cannot be pulled). On the process kubelet, skip those:
//! `-- --ignored --skip real_node_`.
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
    let (role, binding) = role_and_binding("manifests/base", ns);
    (namespace, sas, role, binding)
}

/// The Role and RoleBinding of a `manifests/` directory, moved into namespace `ns`.
fn role_and_binding(dir: &str, ns: &str) -> (Role, RoleBinding) {
    let read = |f: &str| std::fs::read_to_string(repo().join(dir).join(f)).unwrap();
    let mut role: Role = serde_yaml_ng::from_str(&read("role.yaml")).unwrap();
    role.metadata.namespace = Some(ns.into());
    let mut binding: RoleBinding = serde_yaml_ng::from_str(&read("rolebinding.yaml")).unwrap();
    binding.metadata.namespace = Some(ns.into());
    for s in binding.subjects.iter_mut().flatten() {
        s.namespace = Some(ns.into());
    }
    (role, binding)
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
  registry: {registry}
  tag: {tag}
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
            // The images the node has (the real-kubelet tier imports kubestyle-test/…:ci; the
            // process kubelet runs command[0] from its BIN_DIR whatever the image).
            registry = env_or("KUBESTYLE_TEST_IMAGE_REGISTRY", "ghcr.io/kubestyle"),
            tag = env_or("KUBESTYLE_TEST_IMAGE_TAG", "ci"),
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

    /// A client acting as the controller ServiceAccount (its TokenRequest kubeconfig).
    async fn controller(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
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

// --- What only a real node shows (tests/cluster/real-tier.sh) ----------------------------------

/// The real-node tests run only where `KUBESTYLE_TEST_REAL_NODE=1` (real-tier.sh sets it): on
/// the process kubelet there is no container to look into.
fn require_real_node() {
    assert_eq!(
        std::env::var("KUBESTYLE_TEST_REAL_NODE").as_deref(),
        Ok("1"),
        "a real_node_ test needs the real-kubelet tier (tests/cluster/real-tier.sh); on the process \
         kubelet run with --skip real_node_"
    );
}

/// The `running as …` line each stage logs at start (kubestyle_manifest::runs_as).
fn runs_as_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("running as uid"))
        .unwrap_or_else(|| panic!("no 'running as' line in:\n{log}"))
        .to_string()
}

/// A run on real pods, seen from inside its containers: every stage runs as 65532 with a
/// read-only root filesystem, the volume (a `local` PV made root-owned 0755 by the tier's
/// provisioner) is writable only through the pod's fsGroup (group 65532, setgid), and the S3
/// Secret's variables reach download and upload only — package-model and stylize have none.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn real_node_stages_run_confined_as_rendered() {
    require_real_node();
    let w = World::new("confined").await;
    let spec = w.spec("confined", |t| t);
    let out = w
        .pipeline(&["submit", spec.to_str().unwrap(), "--timeout", "900"])
        .await;
    let t = assert_code(&out, 0);
    assert!(t.contains("run confined: 4 stages complete"), "{t}");
    assert!(w.verify_published("confined").await > 0);
    for (stage, credentials) in [
        ("download", true),
        ("package-model", false),
        ("stylize", false),
        ("upload", true),
    ] {
        let out = w.pipeline(&["logs", "confined", "--stage", stage]).await;
        let log = assert_code(&out, 0);
        let line = runs_as_line(&log);
        eprintln!("{stage}: {line}");
        assert!(
            line.contains("running as uid 65532 gid 65532 groups ["),
            "{line}"
        );
        assert!(line.contains("root filesystem read-only"), "{line}");
        // Owner root, group 65532 with setgid: the kubelet applied fsGroup to the volume.
        assert!(line.contains("volume owner 0 group 65532 mode 2"), "{line}");
        assert!(line.contains("writable (as group)"), "{line}");
        if credentials {
            assert!(
                line.contains("S3 credentials in environment: access key id, secret access key"),
                "{stage}: {line}"
            );
        } else {
            assert!(
                line.contains("S3 credentials in environment: none"),
                "{stage} must not get the Secret: {line}"
            );
        }
        // Whether, never what: moto's secret never shows up in a log.
        assert!(
            !log.contains("AWS_SECRET_ACCESS_KEY=") && !log.contains("testing\n"),
            "{log}"
        );
    }
    w.cleanup().await;
}

/// `pipeline delete` while stylize runs: the kubelet sends SIGTERM to the stage (PID 1 of its
/// container), which exits 143 — not 137, a SIGKILL after the grace period — and leaves no
/// temp file and no manifest of the interrupted stage on the volume.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn real_node_delete_sends_sigterm_and_nothing_is_half_written() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
    use kube::api::{ListParams, LogParams, WatchEvent, WatchParams};
    require_real_node();
    let w = World::new("sigterm").await;
    // Enough work that stylize is still busy when it is deleted: every style, larger images.
    let styles: Vec<String> = (0..26).map(|i| format!("\"{i}\"")).collect();
    let spec = w.spec("sigterm", |t| {
        t.replace(
            "styles: [\"7\", \"3:0.5,12:0.5\"]",
            &format!("styles: [{}]", styles.join(", ")),
        )
        .replace("max_size: 96", "max_size: 1024")
    });
    let mut submit = {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipeline"));
        cmd.args(["submit", spec.to_str().unwrap(), "--timeout", "900"])
            .env("KUBECONFIG", &w.kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), &w.ns);
    let stylize = ListParams::default().labels("job-name=sigterm-stylize");
    // Wait until a stylize container has started its forward passes.
    let deadline = Instant::now() + Duration::from_secs(600);
    let busy = loop {
        assert!(Instant::now() < deadline, "stylize never got busy");
        let mut found = None;
        for p in pods.list(&stylize).await.unwrap().items {
            let name = p.metadata.name.clone().unwrap();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if phase.as_deref() == Some("Running")
                && let Ok(log) = pods.logs(&name, &LogParams::default()).await
                && log.contains("running as uid")
                && log.lines().count() > 3
            {
                found = Some(name);
            }
        }
        if let Some(name) = found {
            break name;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Watch the stylize pods from now on: the terminated state is in the last update before
    // the pod object goes.
    let rv = pods
        .list(&stylize)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watch = pods
        .watch(
            &WatchParams::default().labels("job-name=sigterm-stylize"),
            &rv,
        )
        .await
        .unwrap();
    // The stylize pods still running now get the SIGTERM (a shard may have finished already).
    let running: Vec<String> = pods
        .list(&stylize)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert!(running.contains(&busy), "{busy} not running: {running:?}");
    let interrupted_shards: BTreeMap<String, String> = pods
        .list(&stylize)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| {
            let index = p
                .metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-completion-index")?
                .clone();
            Some((p.metadata.name?, index))
        })
        .collect();
    let expected = running.clone();
    let codes = tokio::spawn(async move {
        let mut codes: BTreeMap<String, i32> = BTreeMap::new();
        let mut watch = watch.boxed();
        let until = Instant::now() + Duration::from_secs(120);
        while let Ok(Some(ev)) = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            watch.try_next(),
        )
        .await
        .map(|r| r.ok().flatten())
        {
            let (WatchEvent::Modified(p) | WatchEvent::Deleted(p)) = ev else {
                continue;
            };
            let name = p.metadata.name.clone().unwrap();
            for cs in p
                .status
                .and_then(|s| s.container_statuses)
                .into_iter()
                .flatten()
            {
                if let Some(t) = cs.state.and_then(|s| s.terminated) {
                    eprintln!(
                        "{name}: exit {} reason {:?} finished {:?}",
                        t.exit_code,
                        t.reason,
                        t.finished_at.map(|f| f.0.to_string())
                    );
                    codes.insert(name.clone(), t.exit_code);
                }
            }
            if expected.iter().all(|p| codes.contains_key(p)) {
                break;
            }
        }
        codes
    });
    eprintln!("deleting at {:?}", std::time::SystemTime::now());
    let out = w.pipeline(&["delete", "sigterm"]).await;
    let t = assert_code(&out, 0);
    assert!(t.contains("deleted job/sigterm-stylize"), "{t}");
    let codes = codes.await.unwrap();
    eprintln!("stylize containers terminated with {codes:?} (running at delete: {running:?})");
    // Each pod running at the delete either was stopped by the SIGTERM (143) or had just
    // finished (0, its manifest committed before the signal: checked below); never 137 (killed
    // after the grace period) or anything else. At least one was busy enough to be stopped.
    for pod in &running {
        assert!(
            matches!(codes.get(pod), Some(143) | Some(0)),
            "{pod} did not exit 143 on SIGTERM (137: killed after the grace period): {codes:?}"
        );
    }
    assert!(
        codes.values().any(|c| *c == 143),
        "no stylize container was stopped by the SIGTERM: {codes:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(60), submit.wait()).await;
    let _ = submit.kill().await;

    // The volume, as the node sees it: the claim's local PV directory.
    let claim = Api::<PersistentVolumeClaim>::namespaced(w.admin.clone(), &w.ns)
        .get("sigterm-volume")
        .await
        .unwrap();
    let pv_name = claim.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(w.admin.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let root = PathBuf::from(pv.spec.unwrap().local.unwrap().path);
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    let tmp: Vec<_> = files
        .iter()
        .filter(|f| f.contains("kubestyle-tmp"))
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    assert!(
        files
            .iter()
            .any(|f| f == "runs/sigterm/package-model.manifest.json"),
        "the stages before stylize committed: {files:?}"
    );
    // A shard stopped by the signal committed nothing; a shard that exited 0 committed its
    // manifest (the manifest is the commit marker: exit code and volume agree).
    for pod in &running {
        let shard = interrupted_shards
            .get(pod)
            .expect("an Indexed Job's pod has its index");
        let manifest = format!("runs/sigterm/stylize-{shard}-of-2.manifest.json");
        match codes[pod] {
            143 => assert!(
                !files.contains(&manifest),
                "shard {shard} exited 143 but committed {manifest}: {files:?}"
            ),
            _ => assert!(
                files.contains(&manifest),
                "shard {shard} exited 0 without its manifest: {files:?}"
            ),
        }
    }
    // Every stylize pod goes (the garbage collector removes the finished ones too).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods.list(&stylize).await.unwrap().items.is_empty() {
        assert!(Instant::now() < deadline, "stylize pods still there");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w.cleanup().await;
}

/// An image that cannot be pulled (a registry that does not resolve) is reported as such:
/// exit 3 naming the image and the kubelet's pull error, once the pull has backed off past
/// `--pending-timeout`, rather than waiting for the Job's deadline.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn real_node_an_image_that_cannot_be_pulled_is_reported() {
    require_real_node();
    let w = World::new("nopull").await;
    let registry = env_or("KUBESTYLE_TEST_IMAGE_REGISTRY", "ghcr.io/kubestyle");
    let spec = w.spec("nopull", |t| {
        t.replace(
            &format!("registry: {registry}"),
            "registry: registry.invalid/kubestyle",
        )
    });
    let started = Instant::now();
    let out = w
        .pipeline(&[
            "submit",
            spec.to_str().unwrap(),
            "--timeout",
            "600",
            "--pending-timeout",
            "20",
        ])
        .await;
    let t = assert_code(&out, 3);
    eprintln!("{t}");
    assert!(
        t.contains("ErrImagePull") || t.contains("ImagePullBackOff"),
        "{t}"
    );
    assert!(
        t.contains("registry.invalid/kubestyle/kubestyle-download"),
        "{t}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "{:?}",
        started.elapsed()
    );
    w.cleanup().await;
}

/// `manifests/admin/admission-policy.yaml` on a real API server (#21: least privilege for real):
/// with the policy bound to this test's namespace, the controller ServiceAccount — which may
/// create Jobs and read pod logs, but not Secrets — cannot create a Job that would mount the S3
/// Secret, read another Secret, or run as another ServiceAccount (each denied with the policy's
/// message), cannot read the Secret directly either, and the rendered Jobs are admitted: the run
/// completes under the policy.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn the_admission_policy_denies_jobs_that_could_read_a_secret() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let w = World::new("admit").await;
    let registry = env_or("KUBESTYLE_TEST_IMAGE_REGISTRY", "ghcr.io/kubestyle");
    // The admin's file, as an admin adapts it: this registry, and bound to this namespace only
    // (the other tests' namespaces carry the same label).
    let text = std::fs::read_to_string(repo().join("manifests/admin/admission-policy.yaml"))
        .unwrap()
        .replace("'ghcr.io/kubestyle/'", &format!("'{registry}/'"));
    let mut docs = text.split("\n---\n");
    let mut policy: ValidatingAdmissionPolicy =
        serde_yaml_ng::from_str(docs.next().unwrap()).unwrap();
    let mut binding: ValidatingAdmissionPolicyBinding =
        serde_yaml_ng::from_str(docs.next().unwrap()).unwrap();
    let name = format!("kubestyle-jobs-{}", w.ns);
    policy.metadata.name = Some(name.clone());
    binding.metadata.name = Some(name.clone());
    let bspec = binding.spec.as_mut().unwrap();
    bspec.policy_name = Some(name.clone());
    bspec.match_resources.as_mut().unwrap().namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            w.ns.clone(),
        )])),
        ..Default::default()
    });
    let pp = PostParams::default();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(w.admin.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(w.admin.clone());
    policies.create(&pp, &policy).await.unwrap();
    bindings.create(&pp, &binding).await.unwrap();

    let controller = w.controller().await;
    let jobs: Api<Job> = Api::namespaced(controller.clone(), &w.ns);
    let secrets: Api<Secret> = Api::namespaced(controller.clone(), &w.ns);
    match secrets.get("kubestyle-s3").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the controller read the Secret: {other:?}"),
    }

    let job = |name: &str, pod: serde_json::Value| -> Job {
        let mut spec = serde_json::json!({
            "serviceAccountName": "kubestyle",
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c",
                "image": format!("{registry}/kubestyle-download:ci"),
                "command": ["download", "--version"],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
            }],
        });
        for (k, v) in pod.as_object().unwrap() {
            if k == "container" {
                for (ck, cv) in v.as_object().unwrap() {
                    spec["containers"][0][ck] = cv.clone();
                }
            } else {
                spec[k] = v.clone();
            }
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": spec}},
        }))
        .unwrap()
    };
    let hostile = [
        (
            "secret-volume",
            serde_json::json!({"volumes": [{"name": "s", "secret": {"secretName": "kubestyle-s3"}}],
                               "container": {"volumeMounts": [{"name": "s", "mountPath": "/s"}]}}),
            "kubestyle Jobs mount only the run's claim and an emptyDir",
        ),
        (
            "other-secret",
            serde_json::json!({"container": {"envFrom": [{"secretRef": {"name": "other"}}]}}),
            "kubestyle Jobs read only the S3 Secret",
        ),
        (
            "secret-key-ref",
            serde_json::json!({"container": {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "kubestyle-s3", "key": "AWS_SECRET_ACCESS_KEY"}}}]}}),
            "kubestyle Jobs take no env from Secrets, ConfigMaps or fields",
        ),
        (
            "other-sa",
            serde_json::json!({"serviceAccountName": "kubestyle-controller"}),
            "kubestyle Jobs run as the kubestyle ServiceAccount",
        ),
    ];
    // The policy takes effect once the API server has loaded it: retry the first for a while.
    for (i, (name, pod, message)) in hostile.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(if i == 0 { 30 } else { 5 });
        loop {
            match jobs.create(&pp, &job(name, pod.clone())).await {
                Err(kube::Error::Api(s)) => {
                    assert!(s.message.contains(message), "{name}: {s:?}");
                    assert!(s.code == 422 || s.code == 403, "{name}: {s:?}");
                    break;
                }
                Ok(_) => {
                    jobs.delete(name, &DeleteParams::background())
                        .await
                        .unwrap();
                    assert!(Instant::now() < deadline, "{name} was admitted");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }
    // A Job as the policy wants it is admitted (the same builder, nothing hostile).
    jobs.create(&pp, &job("fine", serde_json::json!({})))
        .await
        .expect("a Job like the rendered ones is admitted");
    jobs.delete("fine", &DeleteParams::background())
        .await
        .unwrap();
    // The serving Deployment that fetches the published packages in an init container
    // (`--packages-from output`) is admitted; the same with a foreign image in its init
    // container, or another Secret there, is not (server-side dry runs: admission runs, nothing
    // is stored).
    {
        use k8s_openapi::api::apps::v1::Deployment;
        let spec = w.spec("admit-serve", |t| format!("{t}publish_models: true\n"));
        let out = w
            .pipeline(&[
                "render",
                spec.to_str().unwrap(),
                "--serve",
                "--packages-from",
                "output",
            ])
            .await;
        let yaml = assert_code(&out, 0);
        let mut d: Deployment = yaml
            .split("\n---\n")
            .map(|doc| doc.trim_start_matches("---\n"))
            .find(|doc| doc.contains("kind: Deployment"))
            .map(|doc| serde_yaml_ng::from_str(doc).unwrap())
            .expect("a Deployment");
        d.metadata.namespace = Some(w.ns.clone());
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        // As the admin (the base Role cannot create Deployments; the policy binds every user).
        let deployments: Api<Deployment> = Api::namespaced(w.admin.clone(), &w.ns);
        fn fetch(d: &mut Deployment) -> &mut k8s_openapi::api::core::v1::Container {
            let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
            &mut pod.init_containers.as_mut().unwrap()[0]
        }
        assert_eq!(fetch(&mut d).name, "fetch-packages");
        deployments
            .create(&dry, &d)
            .await
            .expect("the rendered serving Deployment with its fetch is admitted");
        type Mutation = fn(&mut k8s_openapi::api::core::v1::Container);
        let mutations: [(&str, Mutation); 2] = [
            (
                "kubestyle Jobs run images of the kubestyle registry only",
                |c| c.image = Some("evil.io/cat:1".into()),
            ),
            ("kubestyle Jobs read only the S3 Secret", |c| {
                c.env_from.as_mut().unwrap()[0]
                    .secret_ref
                    .as_mut()
                    .unwrap()
                    .name = "other".into()
            }),
        ];
        for (message, mutate) in mutations {
            let mut hostile = d.clone();
            mutate(fetch(&mut hostile));
            match deployments.create(&dry, &hostile).await {
                Err(kube::Error::Api(s)) => assert!(s.message.contains(message), "{s:?}"),
                other => panic!("a hostile init container was admitted: {other:?}"),
            }
        }
    }
    // And the real thing: the run's four Jobs are admitted and complete.
    let spec = w.spec("admit", |t| t);
    let out = w
        .pipeline(&["submit", spec.to_str().unwrap(), "--timeout", "900"])
        .await;
    let t = assert_code(&out, 0);
    assert!(t.contains("run admit: 4 stages complete"), "{t}");
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    w.cleanup().await;
}

/// `pipeline render --serve deployment` on a real node (#22): with `manifests/serve` applied, the
/// controller ServiceAccount applies the rendered Deployment and Service; the pod becomes ready
/// through its readiness probe (the kubelet calls `/v2/health/ready` once the package on the
/// claim has verified), and an image POSTed to it comes back byte for byte as the batch run
/// published it. Then the same from S3 (`publish_models: true`, `--packages-from output`) after
/// the run's claim is deleted: the init container fetches the published package.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs cluster"]
async fn real_node_the_rendered_serving_deployment_answers_what_the_run_published() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use kube::api::ListParams;
    require_real_node();
    let w = World::new("serve").await;
    let pp = PostParams::default();
    // manifests/serve, moved into this namespace.
    let (role, binding) = role_and_binding("manifests/serve", &w.ns);
    Api::<Role>::namespaced(w.admin.clone(), &w.ns)
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(w.admin.clone(), &w.ns)
        .create(&pp, &binding)
        .await
        .unwrap();

    // `publish_models: true`: the second half serves the package from S3.
    let spec = w.spec("serve", |t| format!("{t}publish_models: true\n"));
    let spec = spec.to_str().unwrap();
    let out = w.pipeline(&["submit", spec, "--timeout", "900"]).await;
    assert_code(&out, 0);
    let published =
        w.s3.read(
            &w.results,
            &format!(
                "runs/serve/styled/multistyle26/style-07/{}/photos/chelsea.jpg",
                w.inputs
            ),
        )
        .await;

    // Applied as the controller: the Role of manifests/serve is all it has for this.
    let controller = w.controller().await;
    let deployments: Api<Deployment> = Api::namespaced(controller.clone(), &w.ns);
    let services: Api<Service> = Api::namespaced(controller.clone(), &w.ns);
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), &w.ns);
    let serving = ListParams::default().labels("app.kubernetes.io/component=serve");
    // Render with these arguments, apply, wait for the readiness probe, POST the photo the run
    // styled to the pod, delete the Deployment (and wait for its pod to go); the answer.
    let serve = |args: &'static [&'static str]| {
        let (w, deployments, services, pods, serving) =
            (&w, &deployments, &services, &pods, &serving);
        async move {
            let mut argv = vec!["render", spec, "--serve", "deployment"];
            argv.extend(args);
            let out = w.pipeline(&argv).await;
            let yaml = String::from_utf8(out.stdout.clone()).unwrap();
            assert_code(&out, 0);
            let pp = PostParams::default();
            let mut name = String::new();
            for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
                let v: serde_json::Value = serde_yaml_ng::from_str(doc).unwrap();
                match v["kind"].as_str() {
                    Some("Deployment") => {
                        let mut d: Deployment = serde_json::from_value(v).unwrap();
                        d.metadata.namespace = Some(w.ns.clone());
                        name = d.metadata.name.clone().unwrap();
                        deployments.create(&pp, &d).await.unwrap();
                    }
                    Some("Service") => {
                        let mut s: Service = serde_json::from_value(v).unwrap();
                        s.metadata.namespace = Some(w.ns.clone());
                        if services
                            .get_opt(s.metadata.name.as_ref().unwrap())
                            .await
                            .unwrap()
                            .is_none()
                        {
                            services.create(&pp, &s).await.unwrap();
                        }
                    }
                    other => panic!("unexpected object {other:?} in:\n{yaml}"),
                }
            }
            let started = Instant::now();
            loop {
                let d = deployments.get(&name).await.unwrap();
                if d.status.and_then(|s| s.ready_replicas) == Some(1) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(180),
                    "{name} ({args:?}) not ready after 3 minutes"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            eprintln!("{name} ({args:?}) ready after {:?}", started.elapsed());
            let pod = pods
                .list(serving)
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
                .expect("a serving pod with an IP");
            let ip = pod.status.unwrap().pod_ip.unwrap();
            let photo = repo().join("examples/images/chelsea.jpg");
            let got = w.dir.path().join("served.jpg");
            let curl = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--fail-with-body",
                    "--max-time",
                    "60",
                    "--data-binary",
                ])
                .arg(format!("@{}", photo.display()))
                .arg("-o")
                .arg(&got)
                .arg(format!("http://{ip}:8080/stylize?style=7"))
                .output()
                .await
                .unwrap();
            assert!(
                curl.status.success(),
                "{}",
                String::from_utf8_lossy(&curl.stderr)
            );
            deployments
                .delete(&name, &DeleteParams::default())
                .await
                .unwrap();
            let started = Instant::now();
            while !pods.list(serving).await.unwrap().items.is_empty() {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "serving pods left"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            std::fs::read(&got).unwrap()
        }
    };

    // 1. From the run's claim, mounted read-only.
    assert!(
        serve(&[]).await == published,
        "the served image (from the claim) differs from the one the run published"
    );
    // 2. From S3, after the run's claim is deleted: the init container fetches what upload
    // published; the server has no claim and no Secret.
    let out = w.pipeline(&["delete", "serve", "--with-data"]).await;
    assert_code(&out, 0);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(w.admin.clone(), &w.ns);
    let started = Instant::now();
    while claims.get_opt("serve-volume").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the claim stays"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        serve(&["--packages-from", "output"]).await == published,
        "the served image (from the output) differs from the one the run published"
    );
    w.cleanup().await;
}
