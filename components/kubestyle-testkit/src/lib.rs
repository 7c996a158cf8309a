//! Test helpers: the real S3 server (moto) that `scripts/test.sh` starts on 127.0.0.1.
//!
//! Tests that need S3 call [`S3Server::get`]. When `KUBESTYLE_TEST_S3_ENDPOINT` is not set they
//! fail (they never silently pass): run them through `scripts/test.sh`, or start
//! `moto_server -H 127.0.0.1 -p PORT` yourself and export
//! `KUBESTYLE_TEST_S3_ENDPOINT=http://127.0.0.1:PORT`.

pub mod fault_proxy;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use kubestyle_s3::{S3Args, S3ArgsExt};

pub const ENDPOINT_VAR: &str = "KUBESTYLE_TEST_S3_ENDPOINT";

/// The test assets (the trained MultiStyle26 network and public-domain photos, fetched by
/// `scripts/fetch_assets.py`, which `scripts/test.sh` runs): `KUBESTYLE_ASSETS`, else the
/// repository's `.cache/assets`. Panics, naming the fix, when they are missing: a test never
/// passes without them.
pub fn assets() -> std::path::PathBuf {
    let d = std::env::var_os("KUBESTYLE_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/assets")
        });
    assert!(
        d.join("multistyle26.onnx").exists(),
        "assets missing in {}: run scripts/test.sh (or scripts/fetch_assets.py)",
        d.display()
    );
    d
}

#[derive(Debug, Clone)]
pub struct S3Server {
    pub endpoint: String,
    pub client: Client,
}

impl S3Server {
    pub async fn get() -> S3Server {
        let endpoint = std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| {
            panic!(
                "{ENDPOINT_VAR} is not set: these tests need a real S3 server. \
                 Run scripts/test.sh, which starts moto_server on 127.0.0.1."
            )
        });
        let args = S3Args {
            endpoint_url: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
            ..S3Args::default()
        };
        let client = args.client().await.expect("S3 client");
        S3Server { endpoint, client }
    }

    /// Environment for a child process talking to this server (credentials are moto's dummies).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// A new, empty bucket with a unique name.
    pub async fn bucket(&self, tag: &str) -> String {
        let name = format!("ks-{tag}-{:08x}", rand::random::<u32>());
        self.client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        name
    }

    pub async fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
    }

    pub async fn read(&self, bucket: &str, key: &str) -> Vec<u8> {
        let r = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"));
        r.body.collect().await.expect("body").into_bytes().to_vec()
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        kubestyle_s3::list(&self.client, bucket, prefix, u64::MAX)
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect()
    }
}

/// Deterministic pseudo-random bytes (incompressible enough for multipart tests).
pub fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Files under `dir` (recursively, relative, sorted), temp files included; empty if `dir` is
/// missing.
pub fn files(dir: &std::path::Path) -> Vec<String> {
    kubestyle_manifest::files::walk_all_files(dir).unwrap_or_default()
}
