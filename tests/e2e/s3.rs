//! `examples/s3.yaml` against a real S3 server (moto): inputs pushed with `upload push`, the
//! run, then every published object downloaded and checked against the published SHA256SUMS;
//! the results table matches the manifests; a second run runs no stage. Then the published
//! model package is served as `pipeline render --serve --packages-from output` lays the pod out:
//! its init container's download and its server's command run here as processes, and the
//! server answers the image the run published.

use kubestyle_testkit::S3Server;

use crate::*;

#[tokio::test(flavor = "multi_thread")]
async fn s3_spec_against_moto() {
    let s3 = S3Server::get().await;
    let inputs = s3.bucket("inputs").await;
    let models = s3.bucket("models").await;
    let results = s3.bucket("results").await;
    let w = Workdir::new();
    let env = s3.env();

    // Fill the buckets the way the README says: `upload push`.
    push(&[w.path().join("images")], &format!("s3://{inputs}/"), &env);
    push(
        &[assets().join("multistyle26.onnx")],
        &format!("s3://{models}/"),
        &env,
    );
    let spec = w.spec_from_example(
        "s3.yaml",
        &[
            (
                "s3://kubestyle-inputs/photos/",
                format!("s3://{inputs}/images/"),
            ),
            ("kubestyle-models", models.clone()),
            ("kubestyle-results", results.clone()),
            // The serving pod on CPU nodes (GPU nodes are the default), so that its command
            // runs here.
            (
                "publish_models: true\n",
                "publish_models: true\nkubernetes:\n  gpu:\n    enabled: false\n".into(),
            ),
        ],
    );

    let env_ref: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let out = run_ok(&spec, &[], &env_ref);
    assert!(statuses(&out).values().all(|s| s == "ran"), "{out}");
    assert!(
        out.contains(&format!("s3://{results}/runs/demo-s3/contact-sheet.jpg")),
        "{out}"
    );

    // Download everything published and check it against the published SHA256SUMS.
    let prefix = "runs/demo-s3/";
    let keys = s3.keys(&results, prefix).await;
    let local = w.path().join("downloaded");
    for k in &keys {
        let p = local.join(k.strip_prefix(prefix).unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, s3.read(&results, k).await).unwrap();
    }
    let listed = verify_sums(&local);
    let mut published: Vec<String> = keys
        .iter()
        .map(|k| k.strip_prefix(prefix).unwrap().to_string())
        .filter(|k| k != "SHA256SUMS")
        .collect();
    published.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(published, listed_sorted, "objects and SHA256SUMS disagree");
    assert_eq!(
        listed.iter().filter(|k| k.starts_with("styled/")).count(),
        12
    );

    let vol = w.volume();
    let stylize = manifest(&vol, "demo-s3", "stylize");
    check_results_match_manifest(&std::fs::read(local.join("results.csv")).unwrap(), &stylize);
    // Inputs are recorded by their S3 source.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("results.json")).unwrap()).unwrap();
    let src = json["rows"][0]["input_source"].as_str().unwrap();
    assert!(src.starts_with(&format!("s3://{inputs}/images/")), "{src}");
    assert!(
        json["rows"][0]["output_uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("s3://{results}/runs/demo-s3/styled/")),
        "{json}"
    );
    // No credential reached a manifest, log or table.
    for k in &listed {
        let text = String::from_utf8_lossy(&std::fs::read(local.join(k)).unwrap()).into_owned();
        assert!(!text.contains("AWS_SECRET_ACCESS_KEY"), "{k}");
    }

    // The package is published (`publish_models: true`) and verifies like the rest.
    for k in [
        "models/multistyle26/model.bpk",
        "models/multistyle26/model.json",
    ] {
        assert!(
            listed.iter().any(|l| l == k),
            "{k} not published: {listed:?}"
        );
    }
    serve_from_the_output(&spec, &w, &env_ref, &local, &listed);

    // Second identical run: nothing runs, nothing is rewritten.
    let before = manifest_bytes(&vol, "demo-s3");
    let out = run_ok(&spec, &[], &env_ref);
    assert!(statuses(&out).values().all(|s| s == "cached"), "{out}");
    assert_eq!(before, manifest_bytes(&vol, "demo-s3"));
}

/// The pod of `pipeline render SPEC --serve --packages-from output`, as processes: its init
/// container's command (download, with the S3 environment its Secret would give) and then its
/// server's, with the pod's paths moved into a scratch directory and the port onto loopback.
/// The server must answer what the run published for a photo and style.
fn serve_from_the_output(
    spec: &std::path::Path,
    w: &Workdir,
    env: &[(&str, String)],
    published: &std::path::Path,
    listed: &[String],
) {
    use std::process::{Command, Stdio};
    let out = pipeline(
        &[
            "render",
            spec.to_str().unwrap(),
            "--serve",
            "--packages-from",
            "output",
        ],
        env,
    );
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).unwrap();
    let deployment: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_json::Value| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let scratch = w.path().join("pod");
    let (packages, tmp) = (scratch.join("packages"), scratch.join("tmp"));
    std::fs::create_dir_all(&packages).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = |c: &serde_json::Value| -> Vec<String> {
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                let moved = |mount: &str, to: &std::path::Path| {
                    let rest = a.strip_prefix(mount)?;
                    (rest.is_empty() || rest.starts_with('/'))
                        .then(|| format!("{}{rest}", to.display()))
                };
                moved("/packages", &packages)
                    .or_else(|| moved("/tmp", &tmp))
                    .unwrap_or_else(|| a.replace("0.0.0.0:8080", &format!("127.0.0.1:{port}")))
            })
            .collect()
    };
    let command = |c: &serde_json::Value| c["command"][0].as_str().unwrap().to_string();

    // The init container: the download stage fetches the published package.
    let fetch = &pod["initContainers"][0];
    assert_eq!(command(fetch), "download");
    let st = Command::new(bin_dir().join("download"))
        .args(args(fetch))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .unwrap();
    assert!(st.success(), "the fetch failed: {st}");

    // The server, on what the fetch wrote; no S3 environment.
    let server = &pod["containers"][0];
    assert_eq!(command(server), "stylize");
    assert!(server.get("envFrom").is_none());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(bin_dir().join("stylize"))
            .args(args(server))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let t0 = std::time::Instant::now();
    while http(port, "GET", "/v2/health/ready", b"").map(|r| r.0) != Some(200) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the server never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let key = listed
        .iter()
        .find(|k| k.starts_with("styled/multistyle26/style-07/") && k.ends_with("chelsea.jpg"))
        .unwrap_or_else(|| panic!("no style-07 chelsea.jpg among {listed:?}"));
    let photo = std::fs::read(w.path().join("images/chelsea.jpg")).unwrap();
    let (status, body) = http(port, "POST", "/stylize?style=7", &photo).expect("an answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        body == std::fs::read(published.join(key)).unwrap(),
        "the served image differs from {key} as the run published it"
    );
}

/// One HTTP/1.1 request on loopback (`Connection: close`): (status, body), `None` when nobody
/// answers.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let end = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&all[..end]);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    Some((status, all[end + 4..].to_vec()))
}
