//! Putting one resolved input on the volume: S3 transfer with resume, or a local copy.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::types::ChecksumMode;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kubestyle_manifest::atomic::{AtomicFile, Clobber};
use kubestyle_manifest::digest::{Hasher, HashingWriter};
use kubestyle_manifest::manifest::media_type_for;
use kubestyle_manifest::{Artifact, ArtifactKind, Sha256Hex, StageError, sha256_file};
use kubestyle_s3::ObjectInfo;
use serde_json::{Map, Value};

use crate::{Outcome, Previous, Resolved, s3_artifact};

#[derive(Debug)]
pub(crate) struct Ctx {
    pub client: Option<Client>,
    pub volume: PathBuf,
    pub force: bool,
    pub max_resumes: u32,
    /// Longest wait for the next piece of a body before the transfer counts as broken.
    pub read_timeout: Option<std::time::Duration>,
    pub previous: Previous,
    pub progress: ProgressBar,
}

/// A byte progress bar on a terminal; hidden (plain log lines only) otherwise.
pub(crate) fn progress_bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

pub(crate) async fn materialise(
    ctx: &Ctx,
    name: String,
    rel: String,
    from: Resolved,
) -> Result<(Artifact, Outcome), StageError> {
    match from {
        Resolved::S3(o) => fetch_s3(ctx, name, rel, o).await,
        Resolved::Local { path, .. } => {
            let volume = ctx.volume.clone();
            let force = ctx.force;
            tokio::task::spawn_blocking(move || local(&volume, name, rel, &path, force))
                .await
                .map_err(|e| StageError::Internal(format!("local copy task: {e}")))?
        }
    }
}

async fn hash_blocking(p: PathBuf) -> Result<(Sha256Hex, u64), StageError> {
    tokio::task::spawn_blocking(move || sha256_file(p))
        .await
        .map_err(|e| StageError::Internal(format!("hash task: {e}")))?
}

async fn fetch_s3(
    ctx: &Ctx,
    name: String,
    rel: String,
    o: ObjectInfo,
) -> Result<(Artifact, Outcome), StageError> {
    let dest = ctx.volume.join(&rel);
    let uri = o.uri();
    let present = if ctx.force {
        None
    } else {
        already_present(ctx, &o, &rel, &dest).await?
    };
    if let Some(exp) = present {
        tracing::info!("skipped {uri}: {rel} already present with the same digest");
        ctx.progress.inc(o.size);
        return Ok((
            s3_artifact(name, rel, &o, exp, o.size, "existing-file-sha256"),
            Outcome::Skipped,
        ));
    }
    let client = ctx
        .client
        .as_ref()
        .ok_or_else(|| StageError::Internal("no S3 client".into()))?;
    // Known from a listing only (size and ETag): read its metadata and checksums now, for the
    // conditional GET and the verification.
    let o = if o.headed {
        o
    } else {
        match kubestyle_s3::head(client, &o.bucket, &o.key).await? {
            Some(h) => h,
            None => {
                return Err(StageError::InputMissing(vec![format!(
                    "{uri} was listed but no longer exists"
                )]));
            }
        }
    };
    let mut file = AtomicFile::create(&dest, Clobber::Replace)?;
    let open = |offset: u64| open_s3(client, &o, offset, ctx.read_timeout);
    // The object's full-object S3 checksum, recomputed here over every byte written (the
    // first GET's and every resumed range's): the SDK checks the checksum of a complete,
    // un-ranged response only, so after a resume only our own computation covers the object.
    let mut local = o
        .checksum
        .as_ref()
        .filter(|c| c.is_full_object())
        .and_then(|c| kubestyle_s3::LocalChecksum::new(c.algorithm).map(|l| (c, l)));
    let copied = resumable_copy_tapped(
        open,
        &mut file,
        o.size,
        ctx.max_resumes,
        &uri,
        &ctx.progress,
        |chunk| {
            if let Some((_, l)) = local.as_mut() {
                l.update(chunk);
            }
        },
    )
    .await?;
    let (sha, n) = (copied.sha256, copied.bytes);
    let checksum = match local {
        Some((c, l)) => {
            let have = l.finish();
            if have != c.value {
                return Err(StageError::Integrity(format!(
                    "{uri}: downloaded data has {} checksum {have}, the object records {}{}",
                    c.algorithm,
                    c.value,
                    if copied.resumes > 0 {
                        format!(" (the transfer was resumed {} times)", copied.resumes)
                    } else {
                        String::new()
                    }
                )));
            }
            Some(c.algorithm)
        }
        None => None,
    };
    // What was actually compared with what the object records: the whole file's SHA-256, else
    // its full-object S3 checksum computed here, else only its size.
    let verified_by = match (&o.sha256, checksum) {
        (Some(exp), _) if exp != &sha => {
            return Err(StageError::Integrity(format!(
                "{uri}: downloaded data has sha256 {sha}, the object records {exp}"
            )));
        }
        (Some(_), _) => "sha256".to_string(),
        (None, Some(alg)) => format!("s3-checksum-{alg}"),
        (None, None) => {
            tracing::warn!(
                "{uri}: the object records no SHA-256 and no full-object checksum: only its size \
                 was checked"
            );
            "size".to_string()
        }
    };
    // Durable under its name before the manifest is written (one fsync per directory).
    file.commit_grouped()?;
    tracing::info!("downloaded {uri} ({n} bytes) -> {rel}");
    let mut a = s3_artifact(name, rel, &o, sha, n, &verified_by);
    if copied.resumes > 0 {
        a.attributes
            .insert("resumes".into(), Value::from(copied.resumes));
    }
    Ok((a, Outcome::Downloaded))
}

/// The digest of `dest` if it already holds this object: same size, and a digest that matches
/// what S3 records, or what our previous manifest recorded for the same ETag.
async fn already_present(
    ctx: &Ctx,
    o: &ObjectInfo,
    rel: &str,
    dest: &Path,
) -> Result<Option<Sha256Hex>, StageError> {
    match std::fs::metadata(dest) {
        Ok(m) if m.is_file() && m.len() == o.size => {}
        _ => return Ok(None),
    }
    let expected = o.sha256.clone().or_else(|| {
        ctx.previous
            .get(&o.uri())
            .filter(|(etag, _, path)| etag.is_some() && *etag == o.etag && path == rel)
            .map(|(_, sha, _)| sha.clone())
    });
    let Some(expected) = expected else {
        tracing::info!(
            "{}: no recorded digest to compare {rel} with; downloading again",
            o.uri()
        );
        return Ok(None);
    };
    let (have, _) = hash_blocking(dest.to_path_buf()).await?;
    Ok((have == expected).then_some(expected))
}

type Body = BoxStream<'static, Result<Bytes, String>>;

/// GET the object from `offset` on. Always conditional on the ETag we HEADed, so a resumed body
/// can never splice two versions of an object. A body that yields nothing for `stall` ends with
/// an error (and is resumed like any broken body): the SDK's read timeout stops at the headers.
async fn open_s3(
    client: &Client,
    o: &ObjectInfo,
    offset: u64,
    stall: Option<std::time::Duration>,
) -> Result<Body, StageError> {
    let mut req = client.get_object().bucket(&o.bucket).key(&o.key);
    if let Some(etag) = &o.etag {
        req = req.if_match(etag);
    }
    req = if offset == 0 {
        req.checksum_mode(ChecksumMode::Enabled)
    } else {
        req.range(format!("bytes={offset}-"))
    };
    let uri = o.uri();
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if kubestyle_s3::is_precondition_failed(&e) => {
            return Err(StageError::Integrity(format!(
                "{uri} changed while it was being downloaded (ETag no longer matches)"
            )));
        }
        Err(e) => return Err(kubestyle_s3::storage_error(&format!("GET {uri}"), e).into()),
    };
    // A resume must get exactly the bytes from `offset` on (206 with that Content-Range): an
    // endpoint that ignores the Range and sends the object from its start would otherwise be
    // spliced after the bytes already written.
    if offset > 0 {
        let start = resp
            .content_range()
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<u64>().ok());
        if start != Some(offset) {
            return Err(StageError::Integrity(format!(
                "{uri}: the endpoint answered the resume at byte {offset} with Content-Range {:?}: refusing to splice",
                resp.content_range().unwrap_or("none")
            )));
        }
    }
    let body = resp.body;
    Ok(
        futures::stream::unfold((body, false), move |(mut b, done)| async move {
            if done {
                return None;
            }
            let next = match stall {
                Some(d) => match tokio::time::timeout(d, b.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        let e = format!(
                            "no data from the S3 endpoint {} for {d:?}",
                            kubestyle_s3::endpoint_for_messages()
                        );
                        return Some((Err(e), (b, true)));
                    }
                },
                None => b.next().await,
            };
            next.map(|r| {
                (
                    r.map_err(|e| {
                        kubestyle_s3::scrub(
                            &aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
                        )
                    }),
                    (b, false),
                )
            })
        })
        .boxed(),
    )
}

/// Copy a body of `expected_len` bytes into `out`, hashing it. When the body breaks (an error
/// or an early end), reopen it at the current offset — at most `max_resumes` times, with
/// exponential backoff.
pub async fn resumable_copy<F, Fut>(
    open: F,
    out: &mut impl Write,
    expected_len: u64,
    max_resumes: u32,
    what: &str,
    progress: &ProgressBar,
) -> Result<(Sha256Hex, u64), StageError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Body, StageError>>,
{
    let c =
        resumable_copy_tapped(open, out, expected_len, max_resumes, what, progress, |_| {}).await?;
    Ok((c.sha256, c.bytes))
}

/// What [`resumable_copy_tapped`] copied.
#[derive(Debug)]
pub struct Copied {
    pub sha256: Sha256Hex,
    pub bytes: u64,
    /// How often the body was reopened (with `Range`) after it broke.
    pub resumes: u32,
}

/// [`resumable_copy`], also giving every byte written, in order, to `tap`.
pub async fn resumable_copy_tapped<F, Fut>(
    mut open: F,
    out: &mut impl Write,
    expected_len: u64,
    max_resumes: u32,
    what: &str,
    progress: &ProgressBar,
    mut tap: impl FnMut(&[u8]),
) -> Result<Copied, StageError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Body, StageError>>,
{
    let mut hasher = Hasher::new();
    let mut resumes = 0u32;
    loop {
        let offset = hasher.bytes();
        let mut body = open(offset).await?;
        let broke = loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    if hasher.bytes() + chunk.len() as u64 > expected_len {
                        return Err(StageError::Integrity(format!(
                            "{what}: body longer than the {expected_len} bytes announced"
                        )));
                    }
                    out.write_all(&chunk).map_err(|e| StageError::io(what, e))?;
                    hasher.update(&chunk);
                    tap(&chunk);
                    progress.inc(chunk.len() as u64);
                }
                Some(Err(e)) => break e,
                None if hasher.bytes() == expected_len => {
                    let (sha256, bytes) = hasher.finish();
                    return Ok(Copied {
                        sha256,
                        bytes,
                        resumes,
                    });
                }
                None => {
                    break format!(
                        "body ended after {} of {expected_len} bytes",
                        hasher.bytes()
                    );
                }
            }
        };
        if hasher.bytes() == expected_len {
            // All bytes arrived and the SDK then rejected them: a checksum mismatch.
            return Err(StageError::Integrity(format!("{what}: {broke}")));
        }
        if resumes >= max_resumes {
            return Err(StageError::Storage(format!(
                "{what}: transfer from the S3 endpoint {} broke {} times, giving up at byte {}: \
                 {broke}",
                kubestyle_s3::endpoint_for_messages(),
                resumes + 1,
                hasher.bytes()
            )));
        }
        resumes += 1;
        let delay = std::time::Duration::from_millis(200u64 << resumes.min(6));
        tracing::warn!(
            "{what}: transfer broke at byte {} ({broke}); resuming in {:?} (attempt {resumes}/{max_resumes})",
            hasher.bytes(),
            delay
        );
        tokio::time::sleep(delay).await;
    }
}

/// A local input: inside the volume it is used in place; outside it is copied in.
fn local(
    volume: &Path,
    name: String,
    rel: String,
    src: &Path,
    force: bool,
) -> Result<(Artifact, Outcome), StageError> {
    let dest = volume.join(&rel);
    let mut attributes = Map::new();
    let outcome = if dest == src {
        Outcome::InPlace
    } else {
        let (src_sha, src_len) = sha256_file(src)?;
        let same = !force
            && std::fs::metadata(&dest).is_ok_and(|m| m.len() == src_len)
            && sha256_file(&dest).is_ok_and(|(d, _)| d == src_sha);
        if same {
            tracing::info!(
                "skipped {}: {rel} already present with the same digest",
                src.display()
            );
            Outcome::Skipped
        } else {
            let mut f = AtomicFile::create(&dest, Clobber::Replace)?;
            let mut input = std::fs::File::open(src).map_err(|e| StageError::read(src, e))?;
            let mut w = HashingWriter::new(&mut f);
            std::io::copy(&mut input, &mut w).map_err(|e| StageError::io(&dest, e))?;
            let (_, d, _) = w.finish();
            if d != src_sha {
                return Err(StageError::Integrity(format!(
                    "{} changed while it was being copied",
                    src.display()
                )));
            }
            f.commit_grouped()?;
            tracing::info!("copied {} -> {rel}", src.display());
            Outcome::Copied
        }
    };
    if outcome == Outcome::InPlace {
        tracing::info!("using {rel} in place");
    }
    attributes.insert("origin".into(), Value::String("local".into()));
    let mut a = Artifact::from_file(volume, &rel, name, ArtifactKind::guess(&rel))?;
    a.media_type = media_type_for(&rel);
    a.source = Some(src.display().to_string());
    a.attributes = attributes;
    Ok((a, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn data() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 251) as u8).collect()
    }

    /// A source that serves `data` from the requested offset but breaks after `cut` bytes for
    /// its first `breaks` openings; records the offsets asked for.
    fn flaky(
        data: Vec<u8>,
        cut: usize,
        breaks: usize,
        log: Arc<Mutex<Vec<u64>>>,
    ) -> impl FnMut(u64) -> std::future::Ready<Result<Body, StageError>> {
        let mut opened = 0usize;
        move |offset| {
            log.lock().unwrap().push(offset);
            opened += 1;
            let rest = data[offset as usize..].to_vec();
            let chunks: Vec<Result<Bytes, String>> = if opened <= breaks {
                let n = cut.min(rest.len());
                vec![
                    Ok(Bytes::copy_from_slice(&rest[..n / 2])),
                    Ok(Bytes::copy_from_slice(&rest[n / 2..n])),
                    Err("connection reset".into()),
                ]
            } else {
                rest.chunks(8192)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect()
            };
            std::future::ready(Ok(futures::stream::iter(chunks).boxed()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resumes_from_the_break_and_hashes_the_whole_object() {
        let d = data();
        let log = Arc::new(Mutex::new(vec![]));
        let mut out = Vec::new();
        let pb = ProgressBar::hidden();
        let (sha, n) = resumable_copy(
            flaky(d.clone(), 30_000, 2, log.clone()),
            &mut out,
            d.len() as u64,
            5,
            "t",
            &pb,
        )
        .await
        .unwrap();
        assert_eq!(out, d);
        assert_eq!(
            (sha, n),
            (kubestyle_manifest::sha256_bytes(&d), d.len() as u64)
        );
        assert_eq!(*log.lock().unwrap(), vec![0, 30_000, 60_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_resumes() {
        let d = data();
        let log = Arc::new(Mutex::new(vec![]));
        let pb = ProgressBar::hidden();
        let e = resumable_copy(
            flaky(d.clone(), 10, 100, log.clone()),
            &mut Vec::new(),
            d.len() as u64,
            3,
            "t",
            &pb,
        )
        .await
        .unwrap_err();
        assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Storage);
        assert_eq!(log.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn early_end_is_resumed_and_overlong_body_refused() {
        let d = data();
        let pb = ProgressBar::hidden();
        // Body one byte too long.
        let mut long = d.clone();
        long.push(0);
        let open = move |_o: u64| {
            std::future::ready(Ok::<Body, StageError>(
                futures::stream::iter(vec![Ok(Bytes::from(long.clone()))]).boxed(),
            ))
        };
        let e = resumable_copy(open, &mut Vec::new(), d.len() as u64, 0, "t", &pb)
            .await
            .unwrap_err();
        assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Integrity);
        // Error after the last byte: a checksum failure, not resumable.
        let dd = d.clone();
        let open = move |_o: u64| {
            std::future::ready(Ok::<Body, StageError>(
                futures::stream::iter(vec![
                    Ok(Bytes::from(dd.clone())),
                    Err("checksum mismatch".to_string()),
                ])
                .boxed(),
            ))
        };
        let e = resumable_copy(open, &mut Vec::new(), d.len() as u64, 3, "t", &pb)
            .await
            .unwrap_err();
        assert_eq!(e.exit_status(), kubestyle_manifest::ExitStatus::Integrity);
    }
}
