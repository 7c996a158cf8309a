//! S3 access shared by the kubestyle stages.
//!
//! Configuration follows the standard AWS chain (environment, profile, SSO, web identity,
//! instance metadata) for credentials and region. `--endpoint-url` / `AWS_ENDPOINT_URL` points
//! at MinIO, moto or any S3-compatible server; addressing is path-style whenever a custom
//! endpoint is set (MinIO's default) unless `--addressing virtual` says otherwise.
//!
//! Nothing here ever logs or returns credentials; endpoints are logged with any user-info
//! stripped ([`redact_endpoint`]).

use std::collections::HashMap;
use std::sync::RwLock;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine;
use kubestyle_manifest::{Sha256Hex, StageError};

pub use aws_sdk_s3;

/// Metadata key (`x-amz-meta-sha256`) under which kubestyle records an object's SHA-256 (hex).
/// Multipart objects only have composite S3 checksums, so this is the one digest every object
/// written by kubestyle carries.
pub const SHA256_METADATA: &str = "sha256";

/// The S3 flags (defined with the stages' command lines in the contract crate).
pub use kubestyle_manifest::command::s3::{
    Addressing, DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_READ_TIMEOUT, S3Args,
};

/// The endpoint of the last client built (redacted), for error messages.
static ENDPOINT: RwLock<Option<String>> = RwLock::new(None);

/// The endpoint requests go to, for messages: redacted, or `"AWS S3 (<region>)"`.
pub fn endpoint_for_messages() -> String {
    ENDPOINT
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| "AWS S3".into())
}

/// What needs the AWS SDK on [`S3Args`]: its timeouts as the SDK's, and the client.
pub trait S3ArgsExt {
    /// The SDK timeouts from the flags.
    fn timeout_config(&self) -> Result<TimeoutConfig, StageError>;
    /// Build a client. Does not contact the server.
    fn client(&self) -> impl std::future::Future<Output = Result<Client, StageError>> + Send;
}

impl S3ArgsExt for S3Args {
    fn timeout_config(&self) -> Result<TimeoutConfig, StageError> {
        // Unset values would be filled in from the SDK defaults; 0 really disables.
        let t = self.timeouts()?;
        let mut b = TimeoutConfig::builder();
        b = match t.connect {
            Some(d) => b.connect_timeout(d),
            None => b.disable_connect_timeout(),
        };
        b = match t.read {
            Some(d) => b.read_timeout(d),
            None => b.disable_read_timeout(),
        };
        b = match t.attempt {
            Some(d) => b.operation_attempt_timeout(d),
            None => b.disable_operation_attempt_timeout(),
        };
        b = match t.operation {
            Some(d) => b.operation_timeout(d),
            None => b.disable_operation_timeout(),
        };
        Ok(b.build())
    }

    async fn client(&self) -> Result<Client, StageError> {
        let timeouts = self.timeout_config()?;
        if let Some(ep) = &self.endpoint_url {
            let u = url::Url::parse(ep).map_err(|e| {
                StageError::Usage(format!(
                    "invalid endpoint URL {:?}: {e}",
                    redact_endpoint(ep)
                ))
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(StageError::Usage(format!(
                    "invalid endpoint URL {:?}: scheme must be http or https",
                    redact_endpoint(ep)
                )));
            }
        }
        let region =
            RegionProviderChain::first_try(self.region.clone().map(aws_config::Region::new))
                .or_default_provider()
                .or_else("us-east-1");
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts.max(1)))
            .timeout_config(timeouts);
        if let Some(ep) = &self.endpoint_url {
            loader = loader.endpoint_url(ep);
        }
        let shared = loader.load().await;
        let shown = match &self.endpoint_url {
            Some(ep) => redact_endpoint(ep),
            None => format!(
                "AWS S3 ({})",
                shared.region().map(|r| r.as_ref()).unwrap_or("us-east-1")
            ),
        };
        if let Ok(mut g) = ENDPOINT.write() {
            *g = Some(shown);
        }
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.path_style())
            .build();
        tracing::debug!(
            endpoint = %self.endpoint_url.as_deref().map(redact_endpoint).unwrap_or_else(|| "aws".into()),
            path_style = self.path_style(),
            "S3 client ready"
        );
        Ok(Client::from_conf(conf))
    }
}

/// Strip user-info (`user:password@`) and query strings from an endpoint for display.
pub fn redact_endpoint(ep: &str) -> String {
    match url::Url::parse(ep) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<unparseable endpoint>".into(),
    }
}

/// What S3 knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// The object's full SHA-256, from kubestyle's metadata or a full-object S3 checksum.
    pub sha256: Option<Sha256Hex>,
    /// The full-object S3 SHA-256 checksum, when the server keeps one.
    pub checksum_sha256: Option<Sha256Hex>,
    /// The S3 checksum the server keeps for the object (any algorithm; full-object or
    /// composite), when it reported one to `HEAD` with checksum mode enabled.
    pub checksum: Option<S3Checksum>,
    pub metadata: HashMap<String, String>,
    /// Whether this came from a HEAD (metadata and checksums read) rather than from a listing
    /// (key, size and ETag only).
    pub headed: bool,
}

/// A checksum an S3 server reports for an object (`x-amz-checksum-<algorithm>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Checksum {
    /// `crc32`, `crc32c`, `crc64nvme`, `sha1` or `sha256`.
    pub algorithm: &'static str,
    /// Base64, without a composite `-N` suffix.
    pub value: String,
    /// `Some(N)` for a composite checksum over N parts (a checksum of the parts' checksums,
    /// not of the object); `None` for a full-object checksum. `Some(0)` when the server says
    /// composite without telling the part count.
    pub composite_parts: Option<u32>,
}

impl S3Checksum {
    /// A full-object checksum: one a digest of the whole object can be compared with.
    pub fn is_full_object(&self) -> bool {
        self.composite_parts.is_none()
    }
}

/// A running checksum of one of the S3 algorithms, computed locally to compare with what a
/// server reports.
pub struct LocalChecksum {
    algorithm: &'static str,
    inner: Box<dyn aws_smithy_checksums::http::HttpChecksum>,
}

impl std::fmt::Debug for LocalChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChecksum")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl LocalChecksum {
    /// `None` for an algorithm this build cannot compute.
    pub fn new(algorithm: &'static str) -> Option<LocalChecksum> {
        let alg: aws_smithy_checksums::ChecksumAlgorithm = algorithm.parse().ok()?;
        Some(LocalChecksum {
            algorithm,
            inner: alg.into_impl(),
        })
    }

    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// The checksum, base64 (as S3 reports it).
    pub fn finish(self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.inner.finalize())
    }
}

/// The composite SHA-256 checksum S3 reports for a multipart object uploaded with SHA-256
/// part checksums: SHA-256 over the concatenated binary SHA-256 digests of the parts, base64.
pub fn composite_sha256(part_digests: &[Sha256Hex]) -> String {
    let mut all = Vec::with_capacity(32 * part_digests.len());
    for d in part_digests {
        all.extend_from_slice(&d.to_bytes());
    }
    hex_to_checksum(&kubestyle_manifest::sha256_bytes(&all))
}

/// The checksum a `HEAD` (or `GET`) answer reports, strongest algorithm first.
fn reported_checksum(
    values: [(&'static str, Option<&str>); 5],
    kind: Option<&ChecksumType>,
) -> Option<S3Checksum> {
    let (algorithm, raw) = values
        .into_iter()
        .find_map(|(a, v)| v.filter(|v| !v.is_empty()).map(|v| (a, v)))?;
    let (value, suffix) = match raw.rsplit_once('-') {
        Some((v, n)) => (v, Some(n.parse::<u32>().unwrap_or(0))),
        None => (raw, None),
    };
    let composite_parts = match (kind, suffix) {
        (_, Some(n)) => Some(n),
        (Some(ChecksumType::Composite), None) => Some(0),
        _ => None,
    };
    Some(S3Checksum {
        algorithm,
        value: value.to_string(),
        composite_parts,
    })
}

impl ObjectInfo {
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// A full-object base64 SHA-256 checksum as hex. Composite checksums (`…-N`) are not digests
/// of the object and give `None`.
pub fn checksum_to_hex(b64: &str) -> Option<Sha256Hex> {
    if b64.contains('-') {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let arr: [u8; 32] = raw.try_into().ok()?;
    Some(Sha256Hex::from_bytes(arr))
}

pub fn hex_to_checksum(d: &Sha256Hex) -> String {
    base64::engine::general_purpose::STANDARD.encode(d.to_bytes())
}

/// HEAD an object. `Ok(None)` when it (or its bucket) does not exist.
pub async fn head(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<ObjectInfo>, StageError> {
    let r = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await;
    match r {
        Ok(h) => {
            let metadata = h.metadata().cloned().unwrap_or_default();
            // A multipart object's checksum is composite unless the server says FULL_OBJECT;
            // some servers (moto) omit both the type and the `-N` suffix.
            let multipart_etag = h
                .e_tag()
                .and_then(|e| e.trim_matches('"').rsplit_once('-'))
                .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
            let kind = match h.checksum_type() {
                None if multipart_etag => Some(&ChecksumType::Composite),
                k => k,
            };
            let full = !matches!(kind, Some(ChecksumType::Composite));
            let checksum_sha256 = h
                .checksum_sha256()
                .filter(|_| full)
                .and_then(checksum_to_hex);
            let meta_sha = metadata
                .get(SHA256_METADATA)
                .and_then(|s| s.parse::<Sha256Hex>().ok());
            let checksum = reported_checksum(
                [
                    ("sha256", h.checksum_sha256()),
                    ("sha1", h.checksum_sha1()),
                    ("crc64nvme", h.checksum_crc64_nvme()),
                    ("crc32c", h.checksum_crc32_c()),
                    ("crc32", h.checksum_crc32()),
                ],
                kind,
            );
            Ok(Some(ObjectInfo {
                bucket: bucket.into(),
                key: key.into(),
                size: h.content_length().unwrap_or(0).max(0) as u64,
                etag: h.e_tag().map(str::to_string),
                sha256: meta_sha.or_else(|| checksum_sha256.clone()),
                checksum_sha256,
                checksum,
                metadata,
                headed: true,
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(storage_error(&format!("HEAD s3://{bucket}/{key}"), e).into()),
    }
}

/// Whether the bucket exists (and we may see it).
pub async fn bucket_exists(client: &Client, bucket: &str) -> Result<bool, StageError> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(storage_error(&format!("HEAD bucket {bucket}"), e).into()),
    }
}

/// Every object under `prefix` (sizes and ETags; no metadata).
pub async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, StageError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => {
                return Err(StageError::InputMissing(vec![format!(
                    "bucket {bucket:?} does not exist"
                )]));
            }
            Err(e) => {
                return Err(storage_error(&format!("LIST s3://{bucket}/{prefix}"), e).into());
            }
        };
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            out.push(ObjectInfo {
                bucket: bucket.into(),
                key: key.into(),
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().map(str::to_string),
                sha256: None,
                checksum_sha256: None,
                checksum: None,
                metadata: HashMap::new(),
                headed: false,
            });
        }
    }
    Ok(out)
}

fn status_of<E, R: HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HasStatus::status_u16)
}

/// Response types whose HTTP status we can read.
pub trait HasStatus {
    fn status_u16(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_u16(&self) -> u16 {
        self.status().as_u16()
    }
}

pub fn is_not_found<E: ProvideErrorMetadata, R: HasStatus>(e: &SdkError<E, R>) -> bool {
    status_of(e) == Some(404) || matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket" | "NotFound"))
}

pub fn is_precondition_failed<E: ProvideErrorMetadata, R: HasStatus>(e: &SdkError<E, R>) -> bool {
    status_of(e) == Some(412) || e.code() == Some("PreconditionFailed")
}

/// An S3 request that failed, with what was being done; the SDK's error is its source.
/// [`From<S3Error> for StageError`] is where it gets its exit code: a missing key or bucket is
/// input missing (3), anything else storage (5).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{what}: {detail}")]
    NotFound {
        what: String,
        detail: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}: access denied ({detail}); check the credentials and the bucket policy")]
    AccessDenied {
        what: String,
        detail: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}: could not reach the S3 endpoint {endpoint} ({detail})")]
    Unreachable {
        what: String,
        endpoint: String,
        detail: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}: HTTP {status} from the S3 endpoint {endpoint}: {detail}")]
    Http {
        what: String,
        status: u16,
        endpoint: String,
        detail: String,
        #[source]
        source: BoxError,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<S3Error> for StageError {
    fn from(e: S3Error) -> StageError {
        match e {
            S3Error::NotFound { .. } => StageError::InputMissing(vec![e.to_string()]),
            other => StageError::Remote {
                message: other.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// Map an SDK error to an [`S3Error`] with a message that says what was being done.
pub fn storage_error<E, R>(what: &str, e: SdkError<E, R>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: HasStatus + std::fmt::Debug + Send + Sync + 'static,
{
    let status = status_of(&e);
    let code = e.code().map(str::to_string);
    let detail = match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    let what = what.to_string();
    let source: BoxError = Box::new(e);
    match (status, code.as_deref()) {
        (Some(404), _) | (_, Some("NoSuchBucket" | "NoSuchKey")) => S3Error::NotFound {
            what,
            detail,
            source,
        },
        (Some(403), _)
        | (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
            S3Error::AccessDenied {
                what,
                detail,
                source,
            }
        }
        (None, _) => S3Error::Unreachable {
            what,
            endpoint: endpoint_for_messages(),
            detail,
            source,
        },
        (Some(status), _) => S3Error::Http {
            what,
            status,
            endpoint: endpoint_for_messages(),
            detail,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_sdk_failure_keeps_its_source_up_to_the_stage_error() {
        use aws_sdk_s3::config::http::HttpResponse;
        use aws_sdk_s3::operation::head_object::HeadObjectError;
        let e: SdkError<HeadObjectError, HttpResponse> = SdkError::timeout_error("too slow");
        let s3 = storage_error("HEAD s3://b/k", e);
        assert!(matches!(s3, S3Error::Unreachable { .. }), "{s3:?}");
        assert!(std::error::Error::source(&s3).is_some());
        let text = s3.to_string();
        assert!(
            text.starts_with("HEAD s3://b/k: could not reach the S3 endpoint"),
            "{text}"
        );
        let stage = StageError::from(s3);
        assert_eq!(stage.exit_status(), kubestyle_manifest::ExitStatus::Storage);
        assert_eq!(stage.to_string(), format!("storage: {text}"));
        // StageError → S3Error → the SDK's error.
        let s3_again = std::error::Error::source(&stage).expect("the S3 error");
        assert!(std::error::Error::source(s3_again).is_some());
    }

    #[test]
    fn endpoint_redaction_drops_credentials() {
        let r = redact_endpoint("http://AKIA:supersecret@127.0.0.1:9000/?X-Amz-Signature=abc");
        assert!(
            !r.contains("supersecret") && !r.contains("AKIA") && !r.contains("abc"),
            "{r}"
        );
        assert!(r.starts_with("http://127.0.0.1:9000"), "{r}");
    }

    #[test]
    fn checksum_conversion() {
        let d = kubestyle_manifest::sha256_bytes(b"abc");
        let b64 = hex_to_checksum(&d);
        assert_eq!(b64, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        assert_eq!(checksum_to_hex(&b64), Some(d));
        assert_eq!(
            checksum_to_hex("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=-3"),
            None
        );
        assert_eq!(checksum_to_hex("bm90IDMyIGJ5dGVz"), None);
    }

    #[test]
    fn composite_and_reported_checksums() {
        // What moto 5.2.5 (and S3) report for parts of 5 MiB of 'a' and 100 'b' uploaded with
        // SHA-256 part checksums.
        let parts = [
            kubestyle_manifest::sha256_bytes(&vec![b'a'; 5 * 1024 * 1024]),
            kubestyle_manifest::sha256_bytes(&[b'b'; 100]),
        ];
        assert_eq!(
            composite_sha256(&parts),
            "7n1ZEEGpZyRgQtPvGMqYL80UbaFJA89T+2OobG6XQAs="
        );
        let none = [("sha256", None), ("sha1", None), ("crc64nvme", None)];
        let r = |v: [(&'static str, Option<&str>); 3], k| {
            let [a, b, c] = v;
            reported_checksum([a, b, c, ("crc32c", None), ("crc32", None)], k)
        };
        assert_eq!(r(none, None), None);
        let c = r(
            [
                ("sha256", Some("abc=-3")),
                ("sha1", None),
                ("crc64nvme", None),
            ],
            None,
        )
        .unwrap();
        assert_eq!((c.value.as_str(), c.composite_parts), ("abc=", Some(3)));
        let c = r(
            [
                ("sha256", None),
                ("sha1", None),
                ("crc64nvme", Some("xyz=")),
            ],
            Some(&ChecksumType::FullObject),
        )
        .unwrap();
        assert!(c.is_full_object() && c.algorithm == "crc64nvme");
        let c = r(
            [
                ("sha256", Some("abc=")),
                ("sha1", None),
                ("crc64nvme", None),
            ],
            Some(&ChecksumType::Composite),
        )
        .unwrap();
        assert!(!c.is_full_object());
        let mut l = LocalChecksum::new("crc32").unwrap();
        l.update(b"hello");
        assert_eq!(l.finish(), "NhCmhg==");
        assert!(LocalChecksum::new("md7").is_none());
    }

    #[test]
    fn path_style_follows_endpoint() {
        let mut a = S3Args::default();
        assert!(!a.path_style());
        a.endpoint_url = Some("http://127.0.0.1:9000".into());
        assert!(a.path_style());
        a.addressing = Addressing::Virtual;
        assert!(!a.path_style());
    }

    #[test]
    fn timeouts_from_flags() {
        let a = S3Args::default();
        let t = a.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(t.read_timeout(), Some(Duration::from_secs(120)));
        assert_eq!(t.operation_attempt_timeout(), None);
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(600)));
        let a = S3Args {
            read_timeout: 0.0,
            attempt_timeout: 1.5,
            ..S3Args::default()
        };
        let t = a.timeout_config().unwrap();
        assert_eq!(t.read_timeout(), None);
        assert_eq!(a.read_timeout(), None);
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(1500))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let a = S3Args {
                operation_timeout: bad,
                ..S3Args::default()
            };
            let e = a.timeout_config().unwrap_err();
            assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Usage);
        }
    }

    #[tokio::test]
    async fn bad_endpoint_is_usage_error() {
        let a = S3Args {
            endpoint_url: Some("ftp://user:pw@host".into()),
            ..S3Args::default()
        };
        let e = a.client().await.unwrap_err();
        assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Usage);
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
