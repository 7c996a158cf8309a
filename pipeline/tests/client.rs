//! The Kubernetes client as users build it — the `pipeline` binary reading a kubeconfig file
//! (TLS with CA data, a bearer token) or the in-cluster service account — against local
//! endpoints that refuse, hang, present another CA's certificate, refuse the token, or answer.
//! Every case ends with the documented exit code and a clear message naming the server, within
//! a bounded time; never a panic (the last release panicked on every real kubeconfig: two
//! rustls crypto providers linked, none installed), and never the token in the output.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "kubestyle-test-token-do-not-print";

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// What the fake API server does with a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Accept TCP and never say anything.
    TcpHang,
    /// Complete TLS, then never answer.
    TlsHang,
    /// Answer every request 401.
    Unauthorized,
    /// Answer `/version`, and 404 for every Job, checking the bearer token.
    Answer,
}

/// A TLS server on 127.0.0.1; returns its port and the request lines it saw.
async fn serve(p: &Pki, mode: Mode) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    kubestyle_pipeline::submit::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let certs = rustls_pemfile_certs(&p.cert_pem);
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(pem_body(&p.key_pem, "PRIVATE KEY").as_slice())
            .unwrap()
            .clone_key();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if mode == Mode::TcpHang {
                held.push(tcp);
                continue;
            }
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if mode == Mode::TlsHang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let authorized = head.to_ascii_lowercase().contains(&format!(
                        "authorization: bearer {}",
                        TOKEN.to_ascii_lowercase()
                    ));
                    seen.lock()
                        .unwrap()
                        .push(format!("{line} authorized={authorized}"));
                    let (code, body) = if mode == Mode::Unauthorized || !authorized {
                        ("401 Unauthorized", status_json(401, "Unauthorized"))
                    } else if line.contains("/version") {
                        ("200 OK", r#"{"major":"1","minor":"36","gitVersion":"v1.36.2","gitCommit":"x","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.26","compiler":"gc","platform":"linux/amd64"}"#.to_string())
                    } else {
                        ("404 Not Found", status_json(404, "NotFound"))
                    };
                    let resp = format!(
                        "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn status_json(code: u16, reason: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{reason} by the test server","reason":"{reason}","code":{code}}}"#
    )
}

fn pem_body(pem: &str, label: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with(&format!("-----BEGIN {label}")))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    vec![rustls::pki_types::CertificateDer::from(pem_body(
        pem,
        "CERTIFICATE",
    ))]
}

fn kubeconfig(dir: &Path, port: u16, ca_pem: &str) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n    namespace: from-context\ncurrent-context: ctx\n"
    );
    let p = dir.join("kubeconfig");
    std::fs::write(&p, text).unwrap();
    p
}

/// `pipeline ARGS` with only the given configuration in its environment.
async fn pipeline(env: &[(&str, &str)], args: &[&str]) -> (Output, Duration) {
    run_clean(env!("CARGO_BIN_EXE_pipeline"), env, args).await
}

/// `program ARGS` with a clean environment: PATH, an empty HOME, no kubeconfig, and `env`.
async fn run_clean(program: &str, env: &[(&str, &str)], args: &[&str]) -> (Output, Duration) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("pipeline did not finish within 60 s")
        .unwrap();
    (out, started.elapsed())
}

fn check(out: &Output, code: i32, needles: &[&str]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert_eq!(out.status.code(), Some(code), "{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} not in: {text}");
    }
    text
}

const STATUS: [&str; 4] = ["status", "demo", "--request-timeout", "2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_against_a_server_that_answers_works_with_the_contexts_namespace() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = serve(&p, Mode::Answer).await;
    let kc = kubeconfig(dir.path(), port, &p.ca_pem);
    let (out, _) = pipeline(&[("KUBECONFIG", kc.to_str().unwrap())], &STATUS).await;
    let text = check(&out, 0, &["demo-download", "not created"]);
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines.iter().all(|l| l.ends_with("authorized=true")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/apis/batch/v1/namespaces/from-context/jobs/demo-download")),
        "{lines:?} / {text}"
    );
    // -n wins over the context.
    let (out, _) = pipeline(
        &[("KUBECONFIG", kc.to_str().unwrap())],
        &[&STATUS[..], &["-n", "flagged"]].concat(),
    )
    .await;
    check(&out, 0, &[]);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.contains("/namespaces/flagged/jobs/")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_storage_error_naming_the_server() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kc = kubeconfig(dir.path(), port, &p.ca_pem);
    let (out, _) = pipeline(&[("KUBECONFIG", kc.to_str().unwrap())], &STATUS).await;
    check(
        &out,
        5,
        &[&format!("127.0.0.1:{port}"), "onnection refused"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_is_given_up_within_the_request_timeout() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    for mode in [Mode::TcpHang, Mode::TlsHang] {
        let (port, _) = serve(&p, mode).await;
        let kc = kubeconfig(dir.path(), port, &p.ca_pem);
        let (out, took) = pipeline(&[("KUBECONFIG", kc.to_str().unwrap())], &STATUS).await;
        check(&out, 5, &[&format!("127.0.0.1:{port}")]);
        assert!(took < Duration::from_secs(15), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_certificate_and_a_refused_token_are_storage_errors() {
    let p = pki();
    let other = pki();
    let dir = tempfile::tempdir().unwrap();
    let (port, _) = serve(&p, Mode::Answer).await;
    let kc = kubeconfig(dir.path(), port, &other.ca_pem);
    let (out, _) = pipeline(&[("KUBECONFIG", kc.to_str().unwrap())], &STATUS).await;
    check(&out, 5, &[&format!("127.0.0.1:{port}"), "certificate"]);

    let (port, _) = serve(&p, Mode::Unauthorized).await;
    let kc = kubeconfig(dir.path(), port, &p.ca_pem);
    let (out, _) = pipeline(&[("KUBECONFIG", kc.to_str().unwrap())], &STATUS).await;
    check(&out, 5, &["unauthorized"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_or_broken_configuration_is_a_usage_error() {
    let (out, _) = pipeline(&[], &STATUS).await;
    check(&out, 2, &["no usable Kubernetes configuration"]);
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("garbage", "{{{ not yaml"),
        (
            "bad-ca",
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: '%%%'\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: t}\ncurrent-context: x\n",
        ),
        (
            "no-context",
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\ncurrent-context: missing\n",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (out, _) = pipeline(&[("KUBECONFIG", p.to_str().unwrap())], &STATUS).await;
        let code = out.status.code();
        let text = check(&out, code.unwrap_or(-1), &[]);
        assert!(matches!(code, Some(2) | Some(5)), "{name}: {text}");
    }
    let (out, _) = pipeline(&[], &["status", "demo", "--context", "nope"]).await;
    check(&out, 2, &["nope"]);
}

/// In a pod: `KUBERNETES_SERVICE_HOST`/`PORT` and the service account's files. Those live at a
/// fixed path, so the binary runs in a private mount namespace (root only; CI runs as root)
/// with a tmpfs over /run holding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_configuration_from_env_and_token_file() {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root (unshare -m): {probe:?}"
        );
        eprintln!("skipped: needs root for a private mount namespace (unshare -m)");
        return;
    }
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &p.ca_pem).unwrap();
    std::fs::write(dir.path().join("namespace"), "in-cluster-ns").unwrap();
    let (port, seen) = serve(&p, Mode::Answer).await;
    let run = |port: u16, files: bool| {
        let script = format!(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && {} exec {} {}",
            if files {
                format!(
                    "cp {}/* /run/secrets/kubernetes.io/serviceaccount/ &&",
                    dir.path().display()
                )
            } else {
                String::new()
            },
            env!("CARGO_BIN_EXE_pipeline"),
            STATUS.join(" ")
        );
        let port = port.to_string();
        async move {
            run_clean(
                "unshare",
                &[
                    ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                    ("KUBERNETES_SERVICE_PORT", &port),
                ],
                &["-m", "--propagation", "private", "sh", "-c", &script],
            )
            .await
        }
    };
    let (out, _) = run(port, true).await;
    check(&out, 0, &["demo-upload", "not created"]);
    assert!(
        seen.lock().unwrap().iter().any(
            |l| l.contains("/namespaces/in-cluster-ns/jobs/") && l.ends_with("authorized=true")
        ),
        "{:?}",
        seen.lock().unwrap()
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (out, _) = run(closed, true).await;
    check(&out, 5, &[&format!("127.0.0.1:{closed}")]);
    // The env without the service account's files.
    let (out, _) = run(port, false).await;
    check(&out, 2, &["no usable Kubernetes configuration"]);
}
