//! `download` through a fault-injecting proxy in front of moto (issue #12): every transient
//! fault injected once is survived (retried by the SDK or resumed with `Range`), and the file is
//! right; injected every time it ends with exit 5 naming the endpoint, with nothing on the
//! volume (no file, no temp file, no manifest). Also: what the manifest says was verified is
//! what was verified, resumed or not.

use std::path::Path;

use assert_cmd::Command;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use kubestyle_manifest::Manifest;
use kubestyle_manifest::manifest::manifest_path;
use kubestyle_testkit::fault_proxy::{Fault, FaultProxy, Request, Rule};
use kubestyle_testkit::{S3Server, bytes, files};

const SIZE: usize = 300_000;

fn download(proxy: &FaultProxy, vol: &Path) -> Command {
    let mut c = Command::cargo_bin("download").unwrap();
    c.env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KUBESTYLE_S3_CONNECT_TIMEOUT", "2")
        .env("KUBESTYLE_S3_READ_TIMEOUT", "1")
        .env("KUBESTYLE_S3_OPERATION_TIMEOUT", "20")
        .args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .args(["--max-attempts", "3", "--max-resumes", "3"])
        .timeout(std::time::Duration::from_secs(60));
    c
}

fn get_of(bucket: &str, key: &str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
    let (b, k) = (bucket.to_string(), key.to_string());
    move |r| r.method == "GET" && r.is_key(&b, &k)
}

fn manifest(vol: &Path) -> Manifest {
    Manifest::read(&manifest_path(vol, "t", "download"), vol).unwrap()
}

#[tokio::test]
async fn transient_faults_once_are_survived_and_always_give_exit_5_with_nothing_written() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("dlfaults").await;
    let data = bytes(SIZE, 7);
    s3.put(&b, "photos/a.jpg", &data).await;
    let proxy = FaultProxy::start(&s3.endpoint);
    let mut lines = Vec::new();
    for fault in Fault::TRANSIENT {
        // Once: completed thanks to retries or resumes; the file is whole.
        proxy.clear();
        proxy.add(Rule::once(fault, get_of(&b, "photos/a.jpg")));
        let before = proxy.injected();
        let vol = tempfile::tempdir().unwrap();
        let out = download(&proxy, vol.path())
            .arg(format!("s3://{b}/photos/a.jpg"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{fault:?} once: {err}");
        assert_eq!(proxy.injected() - before, 1, "{fault:?}");
        assert_eq!(
            std::fs::read(vol.path().join(format!("runs/t/inputs/{b}/photos/a.jpg"))).unwrap(),
            data,
            "{fault:?}"
        );
        let m = manifest(vol.path());
        m.outputs[0].verify(vol.path()).unwrap();
        // moto keeps the CRC32 the SDK sent with the PUT: recomputed over the whole file.
        assert_eq!(m.outputs[0].attributes["verified_by"], "s3-checksum-crc32");
        assert_eq!(
            files(vol.path()).len(),
            2,
            "{fault:?}: only the file and the manifest: {:?}",
            files(vol.path())
        );
        lines.push(format!("download, {fault:?} once: completed"));

        // Always: exit 5 naming the endpoint, nothing on the volume.
        proxy.clear();
        proxy.add(Rule::always(fault, get_of(&b, "photos/a.jpg")));
        let before = proxy.injected();
        let vol = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let out = download(&proxy, vol.path())
            .arg(format!("s3://{b}/photos/a.jpg"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{fault:?} always: {err}");
        assert!(
            err.contains(&proxy.addr),
            "{fault:?}: should name the endpoint: {err}"
        );
        assert!(
            files(vol.path()).is_empty(),
            "{fault:?}: wrote {:?}",
            files(vol.path())
        );
        let n = proxy.injected() - before;
        assert!(n >= 2, "{fault:?}: {n}");
        lines.push(format!(
            "download, {fault:?} every time ({n} injected): exit 5 after {:?}, nothing written",
            t.elapsed()
        ));
    }
    for l in &lines {
        println!("{l}");
    }
    println!(
        "fault-proxy (download): {} faults injected, nothing lost",
        proxy.injected()
    );
}

/// A resumed transfer is recorded as verified only by what was really compared over the whole
/// file; a resumed range that comes back corrupted is caught (exit 6, nothing written); an
/// object without any checksum is recorded as size-checked only.
#[tokio::test]
async fn verification_after_a_resume_is_real_and_recorded_truthfully() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("dlverify").await;
    let data = bytes(SIZE, 8);
    s3.put(&b, "a.jpg", &data).await;
    let proxy = FaultProxy::start(&s3.endpoint);

    // Cut once: resumed with a ranged GET, the CRC32 recomputed over both pieces.
    proxy.add(Rule::once(Fault::TruncatedBody, get_of(&b, "a.jpg")));
    let vol = tempfile::tempdir().unwrap();
    let out = download(&proxy, vol.path())
        .arg(format!("s3://{b}/a.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = manifest(vol.path());
    assert_eq!(m.outputs[0].attributes["verified_by"], "s3-checksum-crc32");
    assert_eq!(m.outputs[0].attributes["resumes"], 1);
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|l| l.starts_with("GET") && l.contains("a.jpg"))
            .count()
            >= 2,
        "{:?}",
        proxy.seen()
    );

    // Cut, then the resumed range corrupted on the way: caught, nothing written.
    proxy.clear();
    proxy.add(Rule::once(Fault::TruncatedBody, get_of(&b, "a.jpg")));
    let (bb, kk) = (b.clone(), "a.jpg");
    proxy.add(Rule::once(Fault::CorruptBody, move |r| {
        r.method == "GET" && r.is_key(&bb, kk) && r.header("range").is_some()
    }));
    let vol = tempfile::tempdir().unwrap();
    let out = download(&proxy, vol.path())
        .arg(format!("s3://{b}/a.jpg"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("crc32"), "{err}");
    assert!(
        files(vol.path()).is_empty(),
        "wrote {:?}",
        files(vol.path())
    );

    // No checksum at all on the object: only the size was checked, and that is what is said.
    let conf = s3
        .client
        .config()
        .to_builder()
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .put_object()
        .bucket(&b)
        .key("bare.jpg")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let h = kubestyle_s3::head(&s3.client, &b, "bare.jpg")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.checksum, None, "{h:?}");
    proxy.clear();
    proxy.add(Rule::once(Fault::ResetMidBody, get_of(&b, "bare.jpg")));
    let vol = tempfile::tempdir().unwrap();
    let out = download(&proxy, vol.path())
        .arg(format!("s3://{b}/bare.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let a = &manifest(vol.path()).outputs[0];
    assert_eq!(a.attributes["verified_by"], "size");
    assert_eq!(std::fs::read(a.abs_path(vol.path())).unwrap(), data);
    println!(
        "fault-proxy (download verification): {} faults injected, nothing lost",
        proxy.injected()
    );
}

/// Issue #14: a prefix costs one listing, plus a HEAD and a GET per object fetched; a cached
/// rerun sends the listing alone (no HEAD per object), and what was verified is unchanged.
#[tokio::test]
async fn a_prefix_is_listed_once_and_a_cached_rerun_heads_nothing() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("dlrequests").await;
    for i in 0..3 {
        s3.put(&b, &format!("in/{i}.jpg"), &bytes(1000 + i, i as u32))
            .await;
    }
    let proxy = FaultProxy::start(&s3.endpoint);
    let vol = tempfile::tempdir().unwrap();
    let count = |seen: &[String], method: &str, what: &str| {
        seen.iter()
            .filter(|l| l.starts_with(method) && l.contains(what))
            .count()
    };
    let out = download(&proxy, vol.path())
        .arg(format!("s3://{b}/in/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let first = proxy.seen();
    assert_eq!(count(&first, "GET", "list-type=2"), 1, "{first:?}");
    assert_eq!(count(&first, "HEAD", "/in/"), 3, "{first:?}");
    assert_eq!(count(&first, "GET", "/in/"), 3, "{first:?}");
    let m = manifest(vol.path());
    assert_eq!(m.outputs.len(), 3);
    for a in &m.outputs {
        assert_eq!(a.attributes["verified_by"], "s3-checksum-crc32", "{a:?}");
    }

    let out = download(&proxy, vol.path())
        .arg(format!("s3://{b}/in/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again: Vec<String> = proxy.seen()[first.len()..].to_vec();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cached"),
        "{out:?}"
    );
    assert_eq!(count(&again, "GET", "list-type=2"), 1, "{again:?}");
    assert_eq!(count(&again, "HEAD", "/in/"), 0, "{again:?}");
    assert_eq!(count(&again, "GET", "/in/"), 0, "no object read: {again:?}");
    assert_eq!(again.len(), 1, "only the listing: {again:?}");
}
