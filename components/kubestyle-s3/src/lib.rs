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

pub mod canned;

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
            remember_secrets_of(ep);
            check_endpoint(ep)?;
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

/// An endpoint the SDK will take as it is, checked before any client holds it: `http` or
/// `https`, a URI both `url` and `http` (the SDK's two parsers) read, and nothing in it that
/// could be a credential — no user-info, query or fragment (credentials come from
/// `AWS_ACCESS_KEY_ID` and friends). A refused one is a usage error (exit 2) whose message
/// shows the endpoint redacted: the SDK's own refusal ("Custom endpoint `<the raw URL>` was
/// not a valid URI", at the first request) would carry the whole URL into the logs.
pub fn check_endpoint(ep: &str) -> Result<(), StageError> {
    // Shown as its scheme, host and port only: nothing else of a refused endpoint is trusted
    // to be free of secrets.
    let shown = url::Url::parse(ep)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<unparseable endpoint>".into());
    let bad = |why: &str| StageError::Usage(format!("invalid endpoint URL {shown:?}: {why}"));
    let u = url::Url::parse(ep).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "it carries user-info (user:password@): give credentials in AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, never in the endpoint",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() || ep.contains(['?', '#']) {
        return Err(bad("an endpoint has no query string or fragment"));
    }
    if ep.parse::<http::Uri>().is_err() {
        return Err(bad("not a URI the S3 client accepts"));
    }
    Ok(())
}

/// What must never appear in any message: the raw endpoint and its parts that may be secret
/// (user-info, query), and the credential variables' values.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn remember_secrets_of(ep: &str) {
    let mut add = vec![ep.to_string()];
    if let Ok(u) = url::Url::parse(ep) {
        add.extend(
            [
                u.username().to_string(),
                u.password().unwrap_or_default().to_string(),
                u.query().unwrap_or_default().to_string(),
            ]
            .into_iter()
            .filter(|s| s.len() >= 3),
        );
    }
    // The raw user-info and query, as written (the parsed ones are percent-encoded).
    if let Some((_, rest)) = ep.split_once("://") {
        if let Some((info, _)) = rest.split('/').next().unwrap_or_default().rsplit_once('@') {
            add.extend(info.split(':').map(str::to_string).filter(|s| s.len() >= 3));
        }
        if let Some((_, q)) = rest.split_once('?') {
            add.push(q.to_string());
        }
    }
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(v) = std::env::var(var)
            && v.len() >= 3
        {
            add.push(v);
        }
    }
    if let Ok(mut g) = SECRETS.write() {
        for a in add {
            if !g.contains(&a) {
                g.push(a);
            }
        }
        // Longest first: a secret inside another is replaced with it.
        g.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every secret this process knows of (see [`check_endpoint`]) replaced by
/// `<redacted>`: what every S3 error message goes through before it is shown.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(g) = SECRETS.read() {
        for s in g.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
    }
    out
}

/// An SDK error as it may be shown: its whole chain, scrubbed ([`scrub`]). The SDK's error
/// itself is not kept: walking the chain of a [`StageError`] can never reach its raw text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScrubbedError(String);

impl ScrubbedError {
    pub fn new(e: &(dyn std::error::Error + 'static)) -> ScrubbedError {
        let mut text = e.to_string();
        let mut src = e.source();
        while let Some(inner) = src {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            src = inner.source();
        }
        ScrubbedError(scrub(&text))
    }
}

/// Strip user-info (`user:password@`) and query strings from an endpoint for display.
pub fn redact_endpoint(ep: &str) -> String {
    match url::Url::parse(ep) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
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
                size: match h.content_length().map(u64::try_from) {
                    Some(Ok(s)) if s <= MAX_OBJECT_SIZE => s,
                    None => 0,
                    _ => {
                        return Err(StageError::Storage(format!(
                            "HEAD s3://{bucket}/{key}: the S3 endpoint {} reported size {}, \
                             which no S3 object has: refused",
                            endpoint_for_messages(),
                            h.content_length().unwrap_or_default()
                        )));
                    }
                },
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

/// Every object under `prefix` (sizes and ETags; no metadata): at most `max_objects` of them
/// (`--max-listed-objects`), else an error (exit 4) as soon as a page passes the bound.
pub async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
    max_objects: u64,
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
            let size = listed_size(bucket, prefix, key, o.size())?;
            out.push(ObjectInfo {
                bucket: bucket.into(),
                key: key.into(),
                size,
                etag: o.e_tag().map(str::to_string),
                sha256: None,
                checksum_sha256: None,
                checksum: None,
                metadata: HashMap::new(),
                headed: false,
            });
        }
        if out.len() as u64 > max_objects {
            return Err(StageError::InputInvalid(format!(
                "LIST s3://{bucket}/{prefix}: more than --max-listed-objects {max_objects} \
                 objects: refused (narrow the prefix or raise the bound)"
            )));
        }
    }
    Ok(out)
}

/// The largest object S3 stores (5 TiB): a listed or reported size beyond it is no object's.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// A listed entry as the caller may use it: a key below the prefix asked for, and a size an
/// object can have. Anything else is a hostile or broken server (storage, exit 5): refused
/// here, before a caller slices the key at the prefix's length or sums the sizes.
fn listed_size(
    bucket: &str,
    prefix: &str,
    key: &str,
    size: Option<i64>,
) -> Result<u64, StageError> {
    let uri = format!("s3://{bucket}/{prefix}");
    if !key.starts_with(prefix) {
        return Err(StageError::Storage(format!(
            "LIST {uri}: the S3 endpoint {} listed {key:?}, which is not below the prefix: refused",
            endpoint_for_messages()
        )));
    }
    match size.map(u64::try_from) {
        Some(Ok(s)) if s <= MAX_OBJECT_SIZE => Ok(s),
        None => Ok(0),
        _ => Err(StageError::Storage(format!(
            "LIST {uri}: the S3 endpoint {} listed {key:?} with size {}, which no S3 object has \
             (0 to {MAX_OBJECT_SIZE} bytes): refused",
            endpoint_for_messages(),
            size.unwrap_or_default()
        ))),
    }
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
    let detail = scrub(&match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => DisplayErrorContext(&e).to_string(),
    });
    let what = scrub(what);
    let source: BoxError = Box::new(ScrubbedError::new(&e));
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

    /// Promise: credentials never reach any output. An endpoint carrying user-info, a query
    /// or characters the SDK's resolver refuses is a usage error (exit 2) before any client
    /// holds it, its message redacted; the SDK would otherwise echo the raw URL ("Custom
    /// endpoint `…` was not a valid URI") at the first request.
    #[tokio::test]
    async fn an_endpoint_with_credentials_is_refused_before_use_and_never_shown() {
        for ep in [
            "http://AKIAEXAMPLE:s3cr3t-pw@127.0.0.1:9000",
            "http://AKIAEXAMPLE:s3cr3t^{|pw@127.0.0.1:9000",
            "http://127.0.0.1:9000/?X-Amz-Security-Token=s3cr3t-tok",
            "http://127.0.0.1:9000/#s3cr3t-frag",
            "http://127.0.0.1:9000/a b s3cr3t",
        ] {
            let a = S3Args {
                endpoint_url: Some(ep.into()),
                ..S3Args::default()
            };
            let e = a.client().await.expect_err(ep);
            assert_eq!(
                e.exit_status(),
                kubestyle_manifest::ExitStatus::Usage,
                "{ep}: {e}"
            );
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        check_endpoint("http://127.0.0.1:9000").unwrap();
        check_endpoint("https://s3.example.com/base/").unwrap();
    }

    /// Promise: an SDK error that quotes the endpoint is scrubbed, in the message and in the
    /// whole source chain a caller may walk.
    #[test]
    fn sdk_errors_quoting_the_endpoint_are_scrubbed_through_the_chain() {
        use aws_sdk_s3::config::http::HttpResponse;
        use aws_sdk_s3::operation::head_object::HeadObjectError;
        let ep = "http://AKIAX:pa55-word^{|@h:1/?X-Amz-Security-Token=tok3n-value";
        remember_secrets_of(ep);
        let e: SdkError<HeadObjectError, HttpResponse> =
            SdkError::construction_failure(format!("Custom endpoint `{ep}` was not a valid URI"));
        let stage = StageError::from(storage_error("HEAD s3://b/k", e));
        let mut shown = stage.to_string();
        let mut src = std::error::Error::source(&stage);
        while let Some(s) = src {
            shown.push_str(&format!(" / {s} / {s:?}"));
            src = s.source();
        }
        for secret in ["pa55-word", "tok3n-value", "AKIAX"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    /// Promise: a HEAD answer whose size no S3 object has (over 5 TiB, or not a number the SDK
    /// reads as a length) is refused (storage, exit 5) naming the object, not taken as a size
    /// to allocate or sum; a possible size passes.
    #[tokio::test]
    async fn a_head_with_an_impossible_size_is_refused() {
        let answer = |len: &'static str| {
            canned::client_with_headers(move |_| {
                (200, vec![("content-length".into(), len.into())], Vec::new())
            })
        };
        let ok = head(&answer("1234"), "bkt", "a.jpg")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.size, 1234);
        let huge = (MAX_OBJECT_SIZE + 1).to_string().leak();
        for len in [&*huge, "-1"] {
            match head(&answer(len), "bkt", "a.jpg").await {
                Err(e) => {
                    assert_eq!(
                        e.exit_status(),
                        kubestyle_manifest::ExitStatus::Storage,
                        "{e}"
                    );
                    assert!(e.to_string().contains("s3://bkt/a.jpg"), "{e}");
                    if len == huge {
                        assert!(e.to_string().contains("which no S3 object has"), "{e}");
                    }
                }
                Ok(r) => panic!("Content-Length {len} taken: {r:?}"),
            }
        }
    }

    /// Promise: a listed entry outside the prefix asked for, or with a size no object has, is
    /// refused (storage, exit 5) before a caller slices or sums it.
    #[test]
    fn listed_entries_outside_the_prefix_or_with_impossible_sizes_are_refused() {
        assert_eq!(
            listed_size("b", "photos/", "photos/a", Some(10)).unwrap(),
            10
        );
        assert_eq!(listed_size("b", "", "a", None).unwrap(), 0);
        for (key, size) in [
            ("a", Some(1)),
            ("photo", Some(1)),
            ("other/photos/a", Some(1)),
            ("photos/a", Some(-1)),
            ("photos/a", Some(i64::MAX)),
            ("photos/a", Some(MAX_OBJECT_SIZE as i64 + 1)),
        ] {
            let e = listed_size("b", "photos/", key, size).unwrap_err();
            assert_eq!(
                e.exit_status(),
                kubestyle_manifest::ExitStatus::Storage,
                "{key}"
            );
            assert!(e.to_string().contains("refused"), "{e}");
        }
    }

    /// Promise: a hostile listing (as the SDK parses it from the server's XML) is refused by
    /// `list` (exit 5), never handed on: a key outside the prefix, shorter than it; sizes of
    /// i64::MAX; a negative size. A sound page is listed.
    #[tokio::test]
    async fn list_refuses_a_hostile_page() {
        let max = i64::MAX.to_string();
        for entries in [
            vec![("a", "10")],
            vec![
                ("photos/a.jpg", max.as_str()),
                ("photos/b.jpg", max.as_str()),
            ],
            vec![("photos/a.jpg", "-1")],
        ] {
            let page = canned::listing("photos/", &entries);
            let c = canned::client(move |_| (200, page.clone()));
            let e = list(&c, "bkt", "photos/", 100).await.unwrap_err();
            assert_eq!(
                e.exit_status(),
                kubestyle_manifest::ExitStatus::Storage,
                "{entries:?}: {e}"
            );
        }
        let page = canned::listing("photos/", &[("photos/a.jpg", "10")]);
        let c = canned::client(move |_| (200, page.clone()));
        let l = list(&c, "bkt", "photos/", 100).await.unwrap();
        assert_eq!((l[0].key.as_str(), l[0].size), ("photos/a.jpg", 10));
    }

    /// Promise: a listing is bounded by configuration (`--max-listed-objects`): one that goes
    /// past it is refused (exit 4) at the page that passes it.
    #[tokio::test]
    async fn a_listing_past_max_listed_objects_is_refused() {
        let page = canned::listing("p/", &[("p/a", "1"), ("p/b", "1"), ("p/c", "1")]);
        let c = canned::client(move |_| (200, page.clone()));
        let e = list(&c, "bkt", "p/", 2).await.unwrap_err();
        assert_eq!(
            e.exit_status(),
            kubestyle_manifest::ExitStatus::InputInvalid,
            "{e}"
        );
        assert!(e.to_string().contains("--max-listed-objects 2"), "{e}");
        assert_eq!(list(&c, "bkt", "p/", 3).await.unwrap().len(), 3);
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
