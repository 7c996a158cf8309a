//! `download` against a hostile or buggy S3 endpoint (issue #21): what the server says is
//! input, checked before it is used. No moto needed: a proxy answers every request itself.

use std::path::Path;

use assert_cmd::Command;
use kubestyle_testkit::fault_proxy::{Fault, FaultProxy, Rule};

fn download(endpoint: &str, vol: &Path) -> Command {
    let mut c = Command::cargo_bin("download").unwrap();
    c.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIAHOSTILE")
        .env("AWS_SECRET_ACCESS_KEY", "hostile-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KUBESTYLE_S3_CONNECT_TIMEOUT", "2")
        .env("KUBESTYLE_S3_OPERATION_TIMEOUT", "20")
        .args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .args(["--max-attempts", "1"])
        .timeout(std::time::Duration::from_secs(60));
    c
}

fn listing(entries: &[(&str, &str)]) -> &'static str {
    let contents: String = entries
        .iter()
        .map(|(k, size)| {
            format!("<Contents><Key>{k}</Key><Size>{size}</Size><ETag>\"e\"</ETag></Contents>")
        })
        .collect();
    Box::leak(
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name>\
             <Prefix>photos/</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>\
             <IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
            entries.len()
        )
        .into_boxed_str(),
    )
}

/// Promise: a listing the server should never send (a key outside the prefix, shorter than
/// it; sizes no object has, whose sum overflows) ends `download` with exit 5 and one line
/// naming the problem: never a panic (101), nothing written to the volume.
#[test]
fn a_hostile_listing_is_refused_with_exit_5_never_a_panic() {
    let max = i64::MAX.to_string();
    for (what, xml) in [
        ("a key outside the prefix", listing(&[("a", "10")])),
        (
            "sizes of i64::MAX",
            listing(&[
                ("photos/a.jpg", &max),
                ("photos/b.jpg", &max),
                ("photos/c.jpg", &max),
            ]),
        ),
        ("a negative size", listing(&[("photos/a.jpg", "-1")])),
    ] {
        let proxy = FaultProxy::start("http://127.0.0.1:9");
        proxy.add(Rule::always(Fault::Answer(xml), |r| r.method == "GET"));
        let vol = tempfile::tempdir().unwrap();
        let out = download(&proxy.endpoint, vol.path())
            .arg("s3://bkt/photos/")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains("refused"), "{what}: {stderr}");
        assert!(
            kubestyle_testkit::files(vol.path()).is_empty(),
            "{what}: {:?}",
            kubestyle_testkit::files(vol.path())
        );
    }
}

/// Promise: credentials never reach any output, whatever the endpoint: one the SDK's resolver
/// would refuse at the first request (echoing it whole) is a usage error (exit 2) first, its
/// password and token nowhere in stderr.
#[test]
fn credentials_in_the_endpoint_never_reach_stderr() {
    for ep in [
        "http://AKIAUSER:pa55^{|word@127.0.0.1:9",
        "http://127.0.0.1:9/?X-Amz-Security-Token=t0ken-value",
    ] {
        let vol = tempfile::tempdir().unwrap();
        let out = download(ep, vol.path())
            .arg("s3://bkt/photos/")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ep}: {stderr}");
        for secret in ["pa55", "t0ken-value", "hostile-secret-key"] {
            assert!(!stderr.contains(secret), "{secret} in {stderr}");
        }
    }
}

/// Promise: a `--list` file is read up to `--max-list-bytes` and no further (exit 4 past it),
/// from S3 (the server's answer is 5,000 bytes) and from a local file alike; one within the
/// bound is read.
#[test]
fn a_list_file_over_max_list_bytes_is_refused_unread() {
    let big: &'static str = Box::leak("s3://bkt/photos/a.jpg\n".repeat(230).into_boxed_str());
    let proxy = FaultProxy::start("http://127.0.0.1:9");
    proxy.add(Rule::always(Fault::Answer(big), |r| r.method == "GET"));
    let vol = tempfile::tempdir().unwrap();
    let out = download(&proxy.endpoint, vol.path())
        .args([
            "--list",
            "s3://bkt/lists/big.txt",
            "--max-list-bytes",
            "1000",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("larger than --max-list-bytes 1000"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("big.txt");
    std::fs::write(&list, big).unwrap();
    let out = download(&proxy.endpoint, vol.path())
        .args(["--list", list.to_str().unwrap(), "--max-list-bytes", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("larger than --max-list-bytes 1000"),
        "{stderr}"
    );
    // Within the bound, the list is read (its entry is then looked up: a missing file, exit 3).
    std::fs::write(&list, "missing.jpg\n").unwrap();
    let out = download(&proxy.endpoint, vol.path())
        .args(["--list", list.to_str().unwrap(), "--max-list-bytes", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
}
