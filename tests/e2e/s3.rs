//! `examples/s3.yaml` against a real S3 server (moto): inputs pushed with `upload push`, the
//! run, then every published object downloaded and checked against the published SHA256SUMS;
//! the results table matches the manifests; a second run runs no stage.

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

    // Second identical run: nothing runs, nothing is rewritten.
    let before = manifest_bytes(&vol, "demo-s3");
    let out = run_ok(&spec, &[], &env_ref);
    assert!(statuses(&out).values().all(|s| s == "cached"), "{out}");
    assert_eq!(before, manifest_bytes(&vol, "demo-s3"));
}
