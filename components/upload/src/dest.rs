//! Where results go: an S3 prefix or a local directory, behind one small interface.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use kubestyle_manifest::atomic::{AtomicFile, Clobber};
use kubestyle_manifest::cancel;
use kubestyle_manifest::{Location, Sha256Hex, StageError, sha256_file};
use kubestyle_s3::{S3Args, S3ArgsExt, SHA256_METADATA, hex_to_checksum, storage_error};

/// Multipart settings.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub multipart_threshold: u64,
    pub part_size: u64,
}

/// What the destination holds at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub size: u64,
    /// The object's SHA-256: our `x-amz-meta-sha256` (what we claimed when we wrote it), else
    /// the server's full-object checksum.
    pub sha256: Option<Sha256Hex>,
    /// The full-object SHA-256 checksum the server itself reports (S3 checks it against the
    /// body it receives), when it keeps one.
    pub checksum_sha256: Option<Sha256Hex>,
    pub etag: Option<String>,
}

/// What a PUT left at the destination, as far as its response tells.
#[derive(Debug, Clone, Default)]
pub struct Put {
    pub etag: Option<String>,
    /// The server's response carries a full-object SHA-256 checksum equal to ours: it checked
    /// the body it received against it (S3 refuses a PUT whose body does not match), so the
    /// object need not be looked up again to verify it.
    pub confirmed: bool,
}

/// One file to publish.
#[derive(Debug, Clone)]
pub struct Item {
    /// Key relative to the destination root (`/`-separated).
    pub key: String,
    pub local: PathBuf,
    pub sha256: Sha256Hex,
    pub bytes: u64,
    pub media_type: String,
}

#[derive(Debug, Clone)]
pub enum Dest {
    S3 {
        client: Client,
        bucket: String,
        prefix: String,
        /// `--max-listed-objects`: the most objects a listing of the prefix may hold.
        max_listed: u64,
    },
    Local {
        root: PathBuf,
    },
}

impl Dest {
    /// `to` joined with `sub` (e.g. the run id). S3 destinations must name a bucket.
    pub async fn open(to: &str, sub: Option<&str>, s3: &S3Args) -> Result<Dest, StageError> {
        let mut loc: Location = to.parse()?;
        if let Some(sub) = sub {
            loc = loc.join(&format!("{sub}/"));
        }
        match loc {
            Location::S3 { bucket, key } => {
                let client = s3.client().await?;
                if !kubestyle_s3::bucket_exists(&client, &bucket).await? {
                    return Err(StageError::InputMissing(vec![format!(
                        "destination bucket {bucket:?} does not exist"
                    )]));
                }
                let prefix = if key.is_empty() || key.ends_with('/') {
                    key
                } else {
                    format!("{key}/")
                };
                Ok(Dest::S3 {
                    client,
                    bucket,
                    prefix,
                    max_listed: s3.max_listed_objects,
                })
            }
            Location::Local(root) => Ok(Dest::Local { root }),
        }
    }

    pub fn uri(&self, key: &str) -> String {
        match self {
            Dest::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}{key}"),
            Dest::Local { root } => root.join(key).display().to_string(),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<Remote>, StageError> {
        match self {
            Dest::S3 {
                client,
                bucket,
                prefix,
                ..
            } => Ok(unless_cancelled(kubestyle_s3::head(
                client,
                bucket,
                &format!("{prefix}{key}"),
            ))
            .await?
            .map(|o| Remote {
                size: o.size,
                sha256: o.sha256,
                checksum_sha256: o.checksum_sha256,
                etag: o.etag,
            })),
            Dest::Local { root } => {
                let p = root.join(key);
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => {
                        let (sha, size) = sha256_file(&p)?;
                        Ok(Some(Remote {
                            size,
                            sha256: Some(sha.clone()),
                            checksum_sha256: Some(sha),
                            etag: None,
                        }))
                    }
                    Ok(_) => Err(StageError::Conflict(vec![format!(
                        "{} exists and is not a file",
                        p.display()
                    )])),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(StageError::io(&p, e)),
                }
            }
        }
    }

    /// The keys (relative to the destination root) already there, when one listing tells them
    /// (S3: one paginated LIST of the prefix instead of a HEAD per key: 20 requests for 20,000
    /// new objects instead of 20,000); `None` for a local directory, where looking a key up is
    /// a `stat`.
    pub async fn listing(&self) -> Result<Option<std::collections::HashSet<String>>, StageError> {
        match self {
            Dest::S3 {
                client,
                bucket,
                prefix,
                max_listed,
            } => Ok(Some(
                unless_cancelled(kubestyle_s3::list(client, bucket, prefix, *max_listed))
                    .await?
                    .into_iter()
                    .filter_map(|o| o.key.strip_prefix(prefix.as_str()).map(str::to_string))
                    .collect(),
            )),
            Dest::Local { .. } => Ok(None),
        }
    }

    /// Store `item` at its key. Returns the ETag where the destination has one, and whether
    /// its response confirmed our SHA-256.
    pub async fn put(&self, item: &Item, t: Transfer) -> Result<Put, StageError> {
        match self {
            Dest::S3 {
                client,
                bucket,
                prefix,
                ..
            } => {
                let key = format!("{prefix}{}", item.key);
                if item.bytes >= t.multipart_threshold {
                    let (etag, confirmed) =
                        put_multipart(client, bucket, &key, item, t.part_size).await?;
                    Ok(Put { etag, confirmed })
                } else {
                    put_single(client, bucket, &key, item).await
                }
            }
            Dest::Local { root } => {
                let target = root.join(&item.key);
                let src = item.local.clone();
                let expect = item.sha256.clone();
                tokio::task::spawn_blocking(move || copy_verified(&src, &target, &expect))
                    .await
                    .map_err(|e| StageError::Internal(format!("copy task: {e}")))??;
                Ok(Put::default())
            }
        }
    }
}

fn copy_verified(src: &Path, target: &Path, expect: &Sha256Hex) -> Result<(), StageError> {
    let mut f = AtomicFile::create(target, Clobber::Replace)?;
    let mut input = std::fs::File::open(src).map_err(|e| StageError::read(src, e))?;
    let mut w = kubestyle_manifest::digest::HashingWriter::new(&mut f);
    std::io::copy(&mut input, &mut w).map_err(|e| StageError::io(target, e))?;
    let (_, d, _) = w.finish();
    if &d != expect {
        return Err(StageError::Integrity(format!(
            "{} changed after it was hashed (now {d}, expected {expect})",
            src.display()
        )));
    }
    // Its directory is fsynced once, before upload's manifest is written.
    f.commit_grouped()
}

async fn put_single(
    client: &Client,
    bucket: &str,
    key: &str,
    item: &Item,
) -> Result<Put, StageError> {
    let uri = format!("s3://{bucket}/{key}");
    cancel::check()?;
    let body = ByteStream::from_path(&item.local)
        .await
        .map_err(|e| StageError::Internal(format!("{}: {e}", item.local.display())))?;
    let r = unless_cancelled(async {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .content_type(&item.media_type)
            .metadata(SHA256_METADATA, item.sha256.as_str())
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(hex_to_checksum(&item.sha256))
            .send()
            .await
            .map_err(|e| storage_error(&format!("PUT {uri}"), e).into())
    })
    .await?;
    Ok(Put {
        etag: r.e_tag().map(str::to_string),
        confirmed: r.checksum_sha256() == Some(hex_to_checksum(&item.sha256).as_str()),
    })
}

/// Multipart upload; on any failure the upload is aborted so no parts are left behind.
/// Returns the ETag, and whether the server's own composite checksum confirmed the data (the
/// parts sent, whose whole SHA-256 is the manifest's).
pub async fn put_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    item: &Item,
    part_size: u64,
) -> Result<(Option<String>, bool), StageError> {
    let uri = format!("s3://{bucket}/{key}");
    // Aborted by the SIGINT/SIGTERM handler if the process is stopped meanwhile.
    let slot = crate::abort::Slot::begin(client, bucket, key)?;
    // Not `unless_cancelled`: once sent, the server may make the upload whether or not we
    // wait, and only its answer names it; dropped, it would stay open (billed) for good. The
    // signal handler waits for this answer and aborts what it names.
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(&item.media_type)
        .metadata(SHA256_METADATA, item.sha256.as_str())
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_type(ChecksumType::Composite)
        .send()
        .await
        .map_err(|e| storage_error(&format!("CreateMultipartUpload {uri}"), e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| StageError::Storage(format!("{uri}: server returned no upload id")))?
        .to_string();
    slot.started(&upload_id);
    let result = upload_parts(client, bucket, key, &upload_id, item, part_size, &uri).await;
    match result {
        Ok(etag) => {
            slot.finish();
            Ok(etag)
        }
        // Stopped by a signal: the signal handler aborts the upload (`abort_in_flight`); the
        // slot, dropped here, stays for it.
        Err(e) if cancel::is_cancelled() => Err(e),
        Err(e) => {
            tracing::warn!("{uri}: multipart upload failed, aborting it: {e}");
            if let Err(abort) = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::error!(
                    "{uri}: could not abort multipart upload {upload_id}: {}",
                    storage_error("AbortMultipartUpload", abort)
                );
            }
            slot.finish();
            Err(e)
        }
    }
}

async fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    item: &Item,
    part_size: u64,
    uri: &str,
) -> Result<(Option<String>, bool), StageError> {
    let mut parts = Vec::new();
    let mut digests = Vec::new();
    // The whole object's SHA-256 over the bytes actually sent, compared with the one the
    // manifest recorded before the upload is completed: a file rewritten since (even at the
    // same size) is never published under the recorded digest.
    let mut whole = kubestyle_manifest::digest::Hasher::new();
    let mut offset = 0u64;
    let mut number = 1i32;
    while offset < item.bytes {
        let len = part_size.min(item.bytes - offset);
        let path = item.local.clone();
        let chunk = tokio::task::spawn_blocking(move || read_range(&path, offset, len))
            .await
            .map_err(|e| StageError::Internal(format!("read task: {e}")))??;
        digests.push(kubestyle_manifest::sha256_bytes(&chunk));
        whole.update(&chunk);
        let r = unless_cancelled(async {
            client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| storage_error(&format!("UploadPart {number} of {uri}"), e).into())
        })
        .await?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(r.e_tag().map(str::to_string))
                .set_checksum_sha256(r.checksum_sha256().map(str::to_string))
                .build(),
        );
        offset += len;
        number += 1;
    }
    let (sent, _) = whole.finish();
    if sent != item.sha256 {
        return Err(StageError::Integrity(format!(
            "{}: the data sent has SHA-256 {sent}, the manifest records {}: the file changed \
             after it was recorded; not published",
            item.local.display(),
            item.sha256
        )));
    }
    let done = unless_cancelled(async {
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| storage_error(&format!("CompleteMultipartUpload {uri}"), e).into())
    })
    .await?;
    // The object exists now. Check what the server made of the bytes it received against what
    // we sent: its composite checksum (SHA-256 over the SHA-256 of each part, which S3 computes
    // from the data of each part) against the same over our file. A mismatch deletes the
    // object: no corrupted object stays behind carrying our (correct) `x-amz-meta-sha256`.
    let confirmed = match verify_composite(client, bucket, key, &digests, uri).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{uri}: {e}; deleting the object");
            if let Err(d) = client.delete_object().bucket(bucket).key(key).send().await {
                tracing::error!("{}", storage_error(&format!("DELETE {uri}"), d));
            }
            return Err(e);
        }
    };
    Ok((done.e_tag().map(str::to_string), confirmed))
}

/// Compare the composite SHA-256 checksum the server reports for a completed multipart object
/// with the one of `parts` (our parts' digests, in order). `Ok(true)` when the server's own
/// value matched, `Ok(false)` when it reports none (only the size can be checked then).
async fn verify_composite(
    client: &Client,
    bucket: &str,
    key: &str,
    parts: &[Sha256Hex],
    uri: &str,
) -> Result<bool, StageError> {
    let expected = kubestyle_s3::composite_sha256(parts);
    let info = unless_cancelled(kubestyle_s3::head(client, bucket, key))
        .await?
        .ok_or_else(|| StageError::Integrity(format!("{uri} is missing right after upload")))?;
    match info.checksum.as_ref().filter(|c| c.algorithm == "sha256") {
        Some(c) if c.value == expected => {
            if let Some(n) = c
                .composite_parts
                .filter(|&n| n != 0 && n as usize != parts.len())
            {
                return Err(StageError::Integrity(format!(
                    "{uri}: the server assembled {n} parts, we sent {}",
                    parts.len()
                )));
            }
            Ok(true)
        }
        Some(c) => Err(StageError::Integrity(format!(
            "{uri}: the server's composite SHA-256 of the {} parts is {}, the data sent has {expected}: \
             the data was corrupted on the way",
            parts.len(),
            c.value
        ))),
        None => {
            tracing::warn!(
                "{uri}: the S3 endpoint {} reports no SHA-256 checksum for the multipart object: \
                 only its size could be checked",
                kubestyle_s3::endpoint_for_messages()
            );
            Ok(false)
        }
    }
}

/// Run one request unless the process is cancelled (SIGINT/SIGTERM): one not yet sent is never
/// sent, and one in flight is dropped at the signal (its connection closed, a body cut short:
/// S3 stores nothing of a request whose body did not arrive whole). Every S3 request of a
/// transfer goes through here but `CreateMultipartUpload` (see `put_multipart`), so nothing is
/// sent after the signal but the handler's aborts.
pub(crate) async fn unless_cancelled<T>(
    request: impl std::future::Future<Output = Result<T, StageError>>,
) -> Result<T, StageError> {
    cancel::check()?;
    let signalled = async {
        loop {
            if let Some(s) = cancel::signal() {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        biased;
        s = signalled => Err(cancel::interrupted(s)),
        r = request => r,
    }
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, StageError> {
    let mut f = std::fs::File::open(path).map_err(|e| StageError::read(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| StageError::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StageError::Integrity(format!(
                "{} shrank while it was being uploaded",
                path.display()
            ))
        } else {
            StageError::io(path, e)
        }
    })?;
    Ok(buf)
}
