//! `upload` against a real S3 server (moto, started by scripts/test.sh).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kubestyle_manifest::manifest::manifest_path;
use kubestyle_manifest::{Manifest, sha256_bytes};
use kubestyle_testkit::{S3Server, bytes, files};
use kubestyle_upload::{Cli, Item, Status, run};

/// A volume with some results and the manifest `download` writes for them (in place).
fn volume_with_results(run_id: &str, big: Option<usize>) -> (tempfile::TempDir, PathBuf) {
    let vol = tempfile::tempdir().unwrap();
    let d = vol.path().join("styled/candy");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("astronaut.png"), bytes(10_000, 1)).unwrap();
    std::fs::write(d.join("chelsea cat ü.jpg"), bytes(20_000, 2)).unwrap();
    if let Some(n) = big {
        std::fs::write(vol.path().join("styled/big.bin"), bytes(n, 3)).unwrap();
    }
    let styled = vol.path().join("styled");
    let args = download_args(&[
        "--volume",
        vol.path().to_str().unwrap(),
        "--run-id",
        run_id,
        styled.to_str().unwrap(),
    ]);
    futures_block_on(kubestyle_download::run(args)).unwrap();
    let m = manifest_path(vol.path(), run_id, "download");
    (vol, m)
}

fn download_args(argv: &[&str]) -> kubestyle_download::Args {
    use clap::Parser;
    kubestyle_download::Args::parse_from(std::iter::once("download").chain(argv.iter().copied()))
}

/// Run a future to completion from sync or async test code.
fn futures_block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| tokio::runtime::Runtime::new().unwrap().block_on(f))
            .join()
            .unwrap()
    })
}

fn cli(argv: &[&str]) -> Cli {
    use clap::Parser;
    Cli::parse_from(std::iter::once("upload").chain(argv.iter().copied()))
}

fn bin(s3: &S3Server) -> Command {
    let mut c = Command::cargo_bin("upload").unwrap();
    c.envs(s3.env());
    c
}

fn publish_argv<'a>(vol: &'a Path, m: &'a Path, to: &'a str, ep: &'a str) -> Vec<&'a str> {
    vec![
        "publish",
        "--volume",
        vol.to_str().unwrap(),
        "--manifest",
        m.to_str().unwrap(),
        "--to",
        to,
        "--endpoint-url",
        ep,
    ]
}

#[tokio::test]
async fn publish_is_idempotent_and_refuses_conflicts() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("pub").await;
    let (vol, m) = volume_with_results("r1", None);
    let to = format!("s3://{b}/results");
    let r = run(cli(&publish_argv(vol.path(), &m, &to, &s3.endpoint)))
        .await
        .unwrap();
    assert_eq!(r.count(Status::Uploaded), 4); // 2 images, manifest, SHA256SUMS
    let keys = s3.keys(&b, "results/r1/").await;
    assert_eq!(
        keys,
        vec![
            "results/r1/SHA256SUMS".to_string(),
            "results/r1/manifests/download.manifest.json".into(),
            "results/r1/styled/candy/astronaut.png".into(),
            "results/r1/styled/candy/chelsea cat ü.jpg".into(),
        ]
    );
    // Each object carries its SHA-256 as metadata and as the S3 checksum.
    let h = kubestyle_s3::head(&s3.client, &b, "results/r1/styled/candy/astronaut.png")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.sha256, Some(sha256_bytes(&bytes(10_000, 1))));
    assert_eq!(h.checksum_sha256, Some(sha256_bytes(&bytes(10_000, 1))));
    // Receipt manifest with keys and ETags.
    let receipt = Manifest::read(&manifest_path(vol.path(), "r1", "upload"), vol.path()).unwrap();
    assert_eq!(receipt.outputs.len(), 4);
    assert!(
        receipt
            .outputs
            .iter()
            .all(|a| a.attributes.contains_key("etag")
                && a.attributes["uri"].as_str().unwrap().starts_with("s3://"))
    );

    // Again: the receipt shows the same files went to the same place (the step cache).
    let r = run(cli(&publish_argv(vol.path(), &m, &to, &s3.endpoint)))
        .await
        .unwrap();
    assert!(r.cached.is_some() && r.published.is_empty());
    // Forced: every object is checked, all identical, nothing sent.
    let mut forced = publish_argv(vol.path(), &m, &to, &s3.endpoint);
    forced.push("--force");
    let r = run(cli(&forced)).await.unwrap();
    assert_eq!(r.count(Status::Unchanged), 4, "{:?}", r.published);

    // Someone else's object at one of our keys: conflict, exit 7, nothing written.
    s3.put(&b, "results/r1/styled/candy/astronaut.png", b"not ours")
        .await;
    let before = s3.read(&b, "results/r1/SHA256SUMS").await;
    let out = bin(&s3).args(&forced).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("astronaut.png already exists with different content")
    );
    assert_eq!(
        s3.read(&b, "results/r1/styled/candy/astronaut.png").await,
        b"not ours"
    );
    assert_eq!(s3.read(&b, "results/r1/SHA256SUMS").await, before);
    // --overwrite replaces it.
    let mut argv = forced.clone();
    argv.push("--overwrite");
    let r = run(cli(&argv)).await.unwrap();
    assert_eq!(r.count(Status::Replaced), 1);
    assert_eq!(
        s3.read(&b, "results/r1/styled/candy/astronaut.png").await,
        bytes(10_000, 1)
    );
}

#[tokio::test]
async fn round_trip_and_sha256sum_check() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("trip").await;
    let (vol, m) = volume_with_results("r2", Some(11 * 1024 * 1024 + 17));
    let to = format!("s3://{b}/out");
    let mut argv = publish_argv(vol.path(), &m, &to, &s3.endpoint);
    argv.extend(["--multipart-threshold", "5MiB", "--part-size", "5MiB"]);
    run(cli(&argv)).await.unwrap();
    // The big object went up in parts: its S3 checksum is composite, its metadata digest whole.
    let h = kubestyle_s3::head(&s3.client, &b, "out/r2/styled/big.bin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.size, 11 * 1024 * 1024 + 17);
    assert_eq!(
        h.sha256,
        Some(sha256_bytes(&bytes(11 * 1024 * 1024 + 17, 3)))
    );
    assert!(h.etag.unwrap().contains("-3"), "multipart ETag");

    // Download the whole published prefix into a fresh volume.
    let vol2 = tempfile::tempdir().unwrap();
    let src = format!("s3://{b}/out/r2/");
    kubestyle_download::run(download_args(&[
        "--volume",
        vol2.path().to_str().unwrap(),
        "--run-id",
        "r2",
        "--endpoint-url",
        &s3.endpoint,
        &src,
    ]))
    .await
    .unwrap();
    let back = Manifest::read(&manifest_path(vol2.path(), "r2", "download"), vol2.path()).unwrap();
    let original = Manifest::read(&m, vol.path()).unwrap();
    for a in &original.outputs {
        let twin = back
            .outputs
            .iter()
            .find(|x| x.path.ends_with(&format!("out/r2/{}", a.path)))
            .unwrap();
        assert_eq!(twin.sha256, a.sha256, "{}", a.path);
        assert_eq!(twin.attributes["verified_by"], "sha256");
    }
    // GNU sha256sum accepts the published SHA256SUMS.
    let dir = vol2.path().join(format!("runs/r2/inputs/{b}/out/r2"));
    let st = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(
        String::from_utf8_lossy(&st.stdout).matches(": OK").count(),
        4
    );
}

#[tokio::test]
async fn failed_multipart_upload_is_aborted() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("abort").await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short.bin");
    std::fs::write(&p, bytes(6 * 1024 * 1024, 4)).unwrap();
    // Claims more bytes than the file holds: the second part cannot be read.
    let item = Item {
        key: "k.bin".into(),
        local: p.clone(),
        sha256: sha256_bytes(b""),
        bytes: 12 * 1024 * 1024,
        media_type: "application/octet-stream".into(),
    };
    let e = kubestyle_upload::dest::put_multipart(&s3.client, &b, "k.bin", &item, 5 * 1024 * 1024)
        .await
        .unwrap_err();
    assert_eq!(e.exit_status().code(), 6, "{e}");
    let uploads = s3
        .client
        .list_multipart_uploads()
        .bucket(&b)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "orphan uploads: {:?}",
        uploads.uploads()
    );
    assert!(s3.keys(&b, "").await.is_empty());
}

#[tokio::test]
async fn push_only_where_absent() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("push").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("photos/sub")).unwrap();
    std::fs::write(dir.path().join("photos/a.png"), b"a").unwrap();
    std::fs::write(dir.path().join("photos/sub/b.png"), b"b").unwrap();
    let to = format!("s3://{b}/in/");
    let photos = dir.path().join("photos");
    let argv = [
        "push",
        photos.to_str().unwrap(),
        "--to",
        &to,
        "--endpoint-url",
        &s3.endpoint,
    ];
    let r = run(cli(&argv)).await.unwrap();
    assert_eq!(r.count(Status::Uploaded), 2);
    assert_eq!(
        s3.keys(&b, "in/").await,
        vec!["in/photos/a.png", "in/photos/sub/b.png"]
    );
    let r = run(cli(&argv)).await.unwrap();
    assert_eq!(r.count(Status::Unchanged), 2);
    std::fs::write(dir.path().join("photos/a.png"), b"changed").unwrap();
    let out = bin(&s3).args(argv).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(s3.read(&b, "in/photos/a.png").await, b"a");
}

#[tokio::test]
async fn bad_input_exit_codes() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("bad").await;
    let (vol, m) = volume_with_results("r3", None);
    let to = format!("s3://{b}/x");
    // Missing bucket.
    let out = bin(&s3)
        .args(publish_argv(
            vol.path(),
            &m,
            "s3://kubestyle-missing-bucket/x",
            &s3.endpoint,
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Malformed destination.
    let out = bin(&s3)
        .args(publish_argv(vol.path(), &m, "s3://", &s3.endpoint))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    // A manifest pointing outside the volume.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["outputs"][0]["path"] = "../../etc/passwd".into();
    let evil = vol.path().join("runs/r3/evil.manifest.json");
    std::fs::write(&evil, v.to_string()).unwrap();
    let out = bin(&s3)
        .args(publish_argv(vol.path(), &evil, &to, &s3.endpoint))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("'..'"));
    // A result changed after its manifest was written.
    std::fs::write(vol.path().join("styled/candy/astronaut.png"), b"tampered").unwrap();
    let out = bin(&s3)
        .args(publish_argv(vol.path(), &m, &to, &s3.endpoint))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(s3.keys(&b, "").await.is_empty(), "nothing may be uploaded");
    // Unreachable endpoint: storage error.
    let out = bin(&s3)
        .args(publish_argv(vol.path(), &m, &to, "http://127.0.0.1:9"))
        .args(["--max-attempts", "1"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(5) | Some(6)), "{out:?}");
}

#[tokio::test]
async fn publish_to_a_local_directory() {
    let (vol, m) = volume_with_results("r4", None);
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("published");
    let argv = [
        "publish",
        "--volume",
        vol.path().to_str().unwrap(),
        "--manifest",
        m.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ];
    let r = run(cli(&argv)).await.unwrap();
    assert_eq!(r.count(Status::Uploaded), 4);
    assert_eq!(
        files(&to),
        vec![
            "r4/SHA256SUMS",
            "r4/manifests/download.manifest.json",
            "r4/styled/candy/astronaut.png",
            "r4/styled/candy/chelsea cat ü.jpg",
        ]
    );
    let st = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(to.join("r4"))
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert!(run(cli(&argv)).await.unwrap().cached.is_some());
    let mut argv = argv.to_vec();
    argv.push("--force");
    assert_eq!(run(cli(&argv)).await.unwrap().count(Status::Unchanged), 4);
}
