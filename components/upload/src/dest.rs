//! Where results go: an S3 prefix or a local directory, behind one small interface.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use kubestyle_manifest::atomic::{AtomicFile, Clobber};
use kubestyle_manifest::{Location, Sha256Hex, StageError, sha256_file};
use kubestyle_s3::{S3Args, SHA256_METADATA, hex_to_checksum, storage_error};

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
    pub sha256: Option<Sha256Hex>,
    pub etag: Option<String>,
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
            } => Ok(
                kubestyle_s3::head(client, bucket, &format!("{prefix}{key}"))
                    .await?
                    .map(|o| Remote {
                        size: o.size,
                        sha256: o.sha256,
                        etag: o.etag,
                    }),
            ),
            Dest::Local { root } => {
                let p = root.join(key);
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => {
                        let (sha, size) = sha256_file(&p)?;
                        Ok(Some(Remote {
                            size,
                            sha256: Some(sha),
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

    /// Store `item` at its key. Returns the ETag where the destination has one.
    pub async fn put(&self, item: &Item, t: Transfer) -> Result<Option<String>, StageError> {
        match self {
            Dest::S3 {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{}", item.key);
                if item.bytes >= t.multipart_threshold {
                    put_multipart(client, bucket, &key, item, t.part_size).await
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
                Ok(None)
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
    f.commit()
}

async fn put_single(
    client: &Client,
    bucket: &str,
    key: &str,
    item: &Item,
) -> Result<Option<String>, StageError> {
    let uri = format!("s3://{bucket}/{key}");
    let body = ByteStream::from_path(&item.local)
        .await
        .map_err(|e| StageError::Internal(format!("{}: {e}", item.local.display())))?;
    let r = client
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
        .map_err(|e| storage_error(&format!("PUT {uri}"), e))?;
    Ok(r.e_tag().map(str::to_string))
}

/// Multipart upload; on any failure the upload is aborted so no parts are left behind.
pub async fn put_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    item: &Item,
    part_size: u64,
) -> Result<Option<String>, StageError> {
    let uri = format!("s3://{bucket}/{key}");
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(&item.media_type)
        .metadata(SHA256_METADATA, item.sha256.as_str())
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .map_err(|e| storage_error(&format!("CreateMultipartUpload {uri}"), e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| StageError::Storage(format!("{uri}: server returned no upload id")))?
        .to_string();
    let result = upload_parts(client, bucket, key, &upload_id, item, part_size, &uri).await;
    match result {
        Ok(etag) => Ok(etag),
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
) -> Result<Option<String>, StageError> {
    let mut parts = Vec::new();
    let mut offset = 0u64;
    let mut number = 1i32;
    while offset < item.bytes {
        let len = part_size.min(item.bytes - offset);
        let path = item.local.clone();
        let chunk = tokio::task::spawn_blocking(move || read_range(&path, offset, len))
            .await
            .map_err(|e| StageError::Internal(format!("read task: {e}")))??;
        let r = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(chunk))
            .send()
            .await
            .map_err(|e| storage_error(&format!("UploadPart {number} of {uri}"), e))?;
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
    let done = client
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
        .map_err(|e| storage_error(&format!("CompleteMultipartUpload {uri}"), e))?;
    Ok(done.e_tag().map(str::to_string))
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
