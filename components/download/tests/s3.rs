//! `download` against a real S3 server (moto, started by scripts/test.sh).

use std::path::Path;

use assert_cmd::Command;
use kubestyle_download::{Args, Outcome, run};
use kubestyle_manifest::manifest::manifest_path;
use kubestyle_manifest::{Manifest, sha256_bytes};
use kubestyle_testkit::{S3Server, bytes, files};

fn args(s3: &S3Server, volume: &Path, sources: &[String]) -> Args {
    use clap::Parser;
    let mut argv = vec![
        "download".to_string(),
        "--volume".into(),
        volume.display().to_string(),
        "--run-id".into(),
        "test-run".into(),
        "--endpoint-url".into(),
        s3.endpoint.clone(),
    ];
    argv.extend(sources.iter().cloned());
    Args::parse_from(argv)
}

fn bin(s3: &S3Server) -> Command {
    let mut c = Command::cargo_bin("download").unwrap();
    c.envs(s3.env());
    c
}

fn manifest(volume: &Path) -> Manifest {
    Manifest::read(&manifest_path(volume, "test-run", "download"), volume).unwrap()
}

#[tokio::test]
async fn missing_keys_are_all_named_and_nothing_is_written() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("missing").await;
    s3.put(&b, "a.png", b"exists").await;
    let vol = tempfile::tempdir().unwrap();
    let out = bin(&s3)
        .args([
            "--volume",
            vol.path().to_str().unwrap(),
            "--run-id",
            "test-run",
        ])
        .arg(format!("s3://{b}/a.png"))
        .arg(format!("s3://{b}/nope 1.png"))
        .arg(format!("s3://{b}/dir/nope2.jpg"))
        .arg(format!("s3://{b}/empty-prefix/"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for k in [
        "nope 1.png",
        "dir/nope2.jpg",
        "no objects under",
        "empty-prefix/",
    ] {
        assert!(err.contains(k), "stderr should name {k}: {err}");
    }
    assert!(!err.contains(&format!("s3://{b}/a.png does not exist")));
    assert!(
        files(vol.path()).is_empty(),
        "wrote {:?}",
        files(vol.path())
    );
}

#[tokio::test]
async fn missing_bucket_and_malformed_uri() {
    let s3 = S3Server::get().await;
    let vol = tempfile::tempdir().unwrap();
    let out = bin(&s3)
        .args(["--volume", vol.path().to_str().unwrap()])
        .arg("s3://kubestyle-no-such-bucket/a.png")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bucket \"kubestyle-no-such-bucket\" does not exist")
    );
    for bad in ["s3:///key", "gs://bucket/x", "s3://UPPER/x"] {
        let out = bin(&s3)
            .args(["--volume", vol.path().to_str().unwrap(), bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{bad}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("malformed location"));
    }
    // No volume: usage error.
    let out = bin(&s3)
        .args(["--volume", "/nonexistent/volume", "x.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(files(vol.path()).is_empty());
}

#[tokio::test]
async fn prefix_with_filter_keeps_layout() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("prefix").await;
    for k in [
        "photos/a.jpg",
        "photos/b.png",
        "photos/sub/c.jpg",
        "other/d.jpg",
    ] {
        s3.put(&b, k, k.as_bytes()).await;
    }
    let vol = tempfile::tempdir().unwrap();
    let mut a = args(&s3, vol.path(), &[format!("s3://{b}/photos/")]);
    a.include = vec!["*.jpg".into()];
    let s = run(a).await.unwrap();
    assert_eq!(s.outcomes.len(), 2);
    let m = manifest(vol.path());
    let paths: Vec<&str> = m.outputs.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            format!("runs/test-run/inputs/{b}/photos/a.jpg"),
            format!("runs/test-run/inputs/{b}/photos/sub/c.jpg")
        ]
    );
    for a in &m.outputs {
        a.verify(vol.path()).unwrap();
        assert_eq!(
            std::fs::read(a.abs_path(vol.path())).unwrap(),
            a.name.split_once('/').unwrap().1.as_bytes()
        );
        assert!(
            a.source
                .as_deref()
                .unwrap()
                .starts_with(&format!("s3://{b}/photos/"))
        );
    }
}

#[tokio::test]
async fn csv_and_text_lists_with_relative_entries() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("csv").await;
    s3.put(&b, "imgs/one.png", b"one").await;
    s3.put(&b, "imgs/two.png", b"two").await;
    s3.put(&b, "lists/three.png", b"three").await;
    s3.put(
        &b,
        "lists/l.txt",
        b"# relative to the list's prefix\nthree.png\n",
    )
    .await;
    let vol = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("local.png"), b"local").unwrap();
    let csv = data.path().join("inputs.csv");
    std::fs::write(
        &csv,
        format!("id,image\n1,s3://{b}/imgs/one.png\n2,s3://{b}/imgs/two.png\n3,local.png\n"),
    )
    .unwrap();
    let mut a = args(&s3, vol.path(), &[]);
    a.lists = vec![csv.display().to_string(), format!("s3://{b}/lists/l.txt")];
    a.column = None; // picks "image"
    // --column applies to CSV lists only; the text list has none, so leave it unset.
    let s = run(a).await.unwrap();
    assert_eq!(s.count(Outcome::Downloaded), 3);
    assert_eq!(s.count(Outcome::Copied), 1);
    let m = manifest(vol.path());
    let names: Vec<&str> = m.outputs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            format!("{b}/imgs/one.png"),
            format!("{b}/imgs/two.png"),
            format!("{b}/lists/three.png"),
            "runs/test-run/inputs/local/local.png".to_string(),
        ]
    );
}

#[tokio::test]
async fn skip_unless_force_and_redownload_when_changed() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("skip").await;
    s3.put(&b, "a.png", &bytes(50_000, 1)).await;
    let vol = tempfile::tempdir().unwrap();
    let src = vec![format!("s3://{b}/a.png")];
    let first = run(args(&s3, vol.path(), &src)).await.unwrap();
    assert_eq!(first.count(Outcome::Downloaded), 1);
    let again = run(args(&s3, vol.path(), &src)).await.unwrap();
    assert_eq!(again.count(Outcome::Skipped), 1, "{:?}", again.outcomes);
    let mut forced = args(&s3, vol.path(), &src);
    forced.force = true;
    assert_eq!(run(forced).await.unwrap().count(Outcome::Downloaded), 1);
    // Same size, new content: the ETag changed, so it is fetched again.
    s3.put(&b, "a.png", &bytes(50_000, 2)).await;
    let changed = run(args(&s3, vol.path(), &src)).await.unwrap();
    assert_eq!(changed.count(Outcome::Downloaded), 1);
    assert_eq!(
        manifest(vol.path()).outputs[0].sha256,
        sha256_bytes(&bytes(50_000, 2))
    );
    // A corrupted local copy is replaced.
    let p = manifest(vol.path()).outputs[0].abs_path(vol.path());
    std::fs::write(&p, bytes(50_000, 3)).unwrap();
    let repaired = run(args(&s3, vol.path(), &src)).await.unwrap();
    assert_eq!(repaired.count(Outcome::Downloaded), 1);
    manifest(vol.path()).outputs[0].verify(vol.path()).unwrap();
}

#[tokio::test]
async fn keys_with_spaces_and_non_ascii() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("names").await;
    let key = "dir with space/ünïcödé ✓ (1).png";
    s3.put(&b, key, b"pixels").await;
    let vol = tempfile::tempdir().unwrap();
    run(args(&s3, vol.path(), &[format!("s3://{b}/{key}")]))
        .await
        .unwrap();
    let m = manifest(vol.path());
    assert_eq!(m.outputs[0].path, format!("runs/test-run/inputs/{b}/{key}"));
    assert_eq!(
        std::fs::read(vol.path().join(&m.outputs[0].path)).unwrap(),
        b"pixels"
    );
}

#[tokio::test]
async fn unsafe_keys_are_refused_before_writing() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("unsafe").await;
    s3.put(&b, "a/../../escape.png", b"x").await;
    s3.put(&b, "ok.png", b"x").await;
    let vol = tempfile::tempdir().unwrap();
    let e = run(args(&s3, vol.path(), &[format!("s3://{b}/")]))
        .await
        .unwrap_err();
    assert_eq!(e.exit_status().code(), 4, "{e}");
    assert!(e.to_string().contains("escape.png"));
    assert!(files(vol.path()).is_empty());
}

#[tokio::test]
async fn local_inputs_in_place_or_copied() {
    let s3 = S3Server::get().await;
    let vol = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(vol.path().join("mine")).unwrap();
    std::fs::write(vol.path().join("mine/in.png"), b"inside").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("set/sub")).unwrap();
    std::fs::write(outside.path().join("set/sub/x.jpg"), b"x").unwrap();
    std::fs::write(outside.path().join("set/y.txt"), b"y").unwrap();
    let mut a = args(
        &s3,
        vol.path(),
        &[
            vol.path().join("mine/in.png").display().to_string(),
            format!("file://{}", outside.path().join("set").display()),
        ],
    );
    a.include = vec!["*.jpg".into()];
    let s = run(a).await.unwrap();
    assert_eq!(s.count(Outcome::InPlace), 1);
    assert_eq!(s.count(Outcome::Copied), 1);
    let m = manifest(vol.path());
    let paths: Vec<&str> = m.outputs.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["mine/in.png", "runs/test-run/inputs/local/set/sub/x.jpg"]
    );
    // Missing local file: exit 3, named.
    let out = bin(&s3)
        .args([
            "--volume",
            vol.path().to_str().unwrap(),
            "/nonexistent/photo.png",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/photo.png"));
}

#[tokio::test]
async fn credentials_never_reach_logs_or_manifest() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("secret").await;
    s3.put(&b, "a.png", b"x").await;
    let vol = tempfile::tempdir().unwrap();
    let secret = "KSsecretMARKER0123456789abcdefSECRET";
    let key_id = "AKIAKSMARKERKEYID";
    let out = bin(&s3)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("RUST_LOG", "debug")
        .args([
            "--volume",
            vol.path().to_str().unwrap(),
            "--run-id",
            "test-run",
        ])
        .arg(format!("s3://{b}/a.png"))
        .arg(format!("s3://{b}/missing.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out2 = bin(&s3)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("RUST_LOG", "debug")
        .args([
            "--volume",
            vol.path().to_str().unwrap(),
            "--run-id",
            "test-run",
        ])
        .arg(format!("s3://{b}/a.png"))
        .output()
        .unwrap();
    assert!(out2.status.success(), "{out2:?}");
    let mut all = String::from_utf8_lossy(&out.stderr).into_owned();
    all += &String::from_utf8_lossy(&out2.stderr);
    all += &String::from_utf8_lossy(&out2.stdout);
    all += &std::fs::read_to_string(manifest_path(vol.path(), "test-run", "download")).unwrap();
    assert!(!all.contains(secret), "secret leaked");
    assert!(!all.contains(&secret[..12]), "secret prefix leaked");
}
