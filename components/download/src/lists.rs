//! Source lists: reading a list (local, with the same refusals as a source, or from S3) and
//! parsing it (CSV with a header row, or one entry per line), entries resolved against the
//! list's own location.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use aws_sdk_s3::Client;
use kubestyle_manifest::{Location, StageError};

use crate::sources::special_file;

/// The text of a local list. The list itself may be a regular file or a pipe
/// (`--list <(…)`), not a pseudo-file (`/proc/self/environ` would print the environment in the
/// "does not exist" messages), device, socket or directory.
pub(crate) fn read_local_list(p: &Path, max_bytes: u64) -> Result<String, StageError> {
    let meta = std::fs::metadata(p).map_err(|e| StageError::read(p, e))?;
    let refused = if meta.file_type().is_fifo() {
        None
    } else {
        let canonical = p.canonicalize().map_err(|e| StageError::read(p, e))?;
        if meta.is_dir() {
            Some("is a directory".to_string())
        } else {
            special_file(&canonical, &meta)
        }
    };
    if let Some(why) = refused {
        return Err(StageError::InputInvalid(format!(
            "list {} {why}: refused",
            p.display()
        )));
    }
    // At most one byte more than the bound is read (a pipe may say nothing of its length).
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|e| StageError::read(p, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(&p.display().to_string(), max_bytes));
    }
    String::from_utf8(bytes)
        .map_err(|_| StageError::InputInvalid(format!("list {} is not UTF-8 text", p.display())))
}

fn too_large(list: &str, max_bytes: u64) -> StageError {
    StageError::InputInvalid(format!(
        "list {list} is larger than --max-list-bytes {max_bytes}: refused"
    ))
}

/// A list file from S3. Lists are small: the whole body must arrive within `stall` (the SDK's
/// read timeout stops at the response headers), and at most `max_bytes` of it is read (a
/// larger `Content-Length` is refused before the body; a body longer than it says, as soon as
/// it passes the bound).
pub(crate) async fn read_s3_text(
    client: &Client,
    bucket: &str,
    key: &str,
    stall: Option<std::time::Duration>,
    max_bytes: u64,
) -> Result<String, StageError> {
    let what = format!("s3://{bucket}/{key}");
    let resp = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(r) => r,
        Err(e) if kubestyle_s3::is_not_found(&e) => {
            return Err(StageError::InputMissing(vec![format!(
                "list {what} does not exist"
            )]));
        }
        Err(e) => return Err(kubestyle_s3::storage_error(&format!("GET {what}"), e).into()),
    };
    if resp
        .content_length()
        .is_some_and(|n| u64::try_from(n).map_or(true, |n| n > max_bytes))
    {
        return Err(too_large(&what, max_bytes));
    }
    let mut body = resp.body;
    let collect = async {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                StageError::Storage(format!(
                    "GET {what}: {}",
                    kubestyle_s3::scrub(&e.to_string())
                ))
            })?;
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large(&what, max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = match stall {
        Some(d) => tokio::time::timeout(d, collect).await.map_err(|_| {
            StageError::Storage(format!(
                "GET {what}: the body did not arrive from the S3 endpoint {} within {d:?}",
                kubestyle_s3::endpoint_for_messages()
            ))
        })??,
        None => collect.await?,
    };
    String::from_utf8(bytes)
        .map_err(|_| StageError::InputInvalid(format!("list {what} is not UTF-8 text")))
}

/// The entries of a list file. CSV: header row, then one row per source. Text: one per line.
pub fn parse_list(text: &str, is_csv: bool, column: Option<&str>) -> Result<Vec<String>, String> {
    if !is_csv {
        if column.is_some() {
            return Err("--column only applies to .csv lists".into());
        }
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect());
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| format!("bad CSV header: {e}"))?
        .clone();
    let idx = match column {
        Some(c) => match c.parse::<usize>() {
            Ok(i) if i < headers.len() => i,
            Ok(i) => {
                return Err(format!(
                    "column index {i} out of range ({} columns)",
                    headers.len()
                ));
            }
            Err(_) => headers.iter().position(|h| h == c).ok_or_else(|| {
                format!(
                    "no column named {c:?} (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })?,
        },
        None => ["uri", "url", "path", "key", "image", "source"]
            .iter()
            .find_map(|want| headers.iter().position(|h| h.eq_ignore_ascii_case(want)))
            .unwrap_or(0),
    };
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("line {}: {e}", i + 2))?;
        let v = rec.get(idx).unwrap_or("").trim();
        if !v.is_empty() {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

/// An entry of a list: absolute URIs and paths as they are, relative ones against the list's
/// directory (local list) or prefix (S3 list). A list fetched from S3 names S3 objects only:
/// a local path in it (absolute or `file://`) is refused.
pub fn resolve_entry(entry: &str, list: &Location) -> Result<Location, StageError> {
    if entry.contains("://") || entry.starts_with('/') {
        let loc: Location = entry.parse()?;
        if let (Location::Local(_), Location::S3 { .. }) = (&loc, list) {
            return Err(StageError::InputInvalid(format!(
                "{entry:?} is a local path; a list fetched from S3 names only S3 objects"
            )));
        }
        return Ok(loc);
    }
    match list {
        Location::Local(p) => Ok(Location::Local(
            p.parent().unwrap_or(Path::new(".")).join(entry),
        )),
        Location::S3 { bucket, key } => {
            let dir = key
                .rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default();
            Ok(Location::s3(bucket.clone(), format!("{dir}{entry}")))
        }
    }
}
