//! Parse sources and lists, and resolve them against S3 and the local filesystem.
//!
//! Resolution only reads: every object is HEADed, every prefix listed, every local file opened.
//! Everything missing is collected and reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use kubestyle_manifest::{Location, StageError};
use kubestyle_s3::ObjectInfo;

use crate::Args;

/// An input that exists.
#[derive(Debug, Clone)]
pub enum Resolved {
    S3(ObjectInfo),
    Local {
        /// Canonical absolute path.
        path: PathBuf,
        /// For files found under a directory source: `<dir name>/<path below it>`.
        below: Option<String>,
    },
}

impl Resolved {
    /// A stable string naming the input (its URI or path).
    pub fn identity(&self) -> String {
        match self {
            Resolved::S3(o) => o.uri(),
            Resolved::Local { path, .. } => path.display().to_string(),
        }
    }
}

#[derive(Debug)]
pub struct Resolver {
    client: Option<Client>,
}

impl Resolver {
    /// Parses every direct source (so malformed ones fail before any network I/O) and creates
    /// an S3 client when one could be needed.
    pub async fn new(args: &Args) -> Result<Self, StageError> {
        let mut needs_s3 = false;
        for s in args.sources.iter().chain(&args.lists) {
            needs_s3 |= matches!(s.parse::<Location>()?, Location::S3 { .. });
        }
        let client = if needs_s3 {
            Some(args.s3.client().await?)
        } else {
            None
        };
        Ok(Resolver { client })
    }

    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    async fn ensure_client(&mut self, args: &Args) -> Result<Client, StageError> {
        if self.client.is_none() {
            self.client = Some(args.s3.client().await?);
        }
        self.client
            .clone()
            .ok_or_else(|| StageError::Internal("no S3 client".into()))
    }

    /// Every input, or an error naming every missing one.
    pub async fn resolve_all(
        mut self,
        args: &Args,
    ) -> Result<(Vec<Resolved>, Option<Client>), StageError> {
        let filter = build_globs(&args.include)?;
        let mut locations: Vec<Location> = args
            .sources
            .iter()
            .map(|s| s.parse::<Location>())
            .collect::<Result<_, _>>()?;
        for list in &args.lists {
            let list_loc: Location = list.parse()?;
            let text = match &list_loc {
                Location::Local(p) => {
                    std::fs::read_to_string(p).map_err(|e| StageError::read(p, e))?
                }
                Location::S3 { bucket, key } => {
                    let client = self.ensure_client(args).await?;
                    read_s3_text(&client, bucket, key).await?
                }
            };
            let is_csv = list.to_ascii_lowercase().ends_with(".csv");
            for entry in parse_list(&text, is_csv, args.column.as_deref())
                .map_err(|e| StageError::InputInvalid(format!("list {list}: {e}")))?
            {
                locations.push(
                    resolve_entry(&entry, &list_loc)
                        .map_err(|e| StageError::InputInvalid(format!("list {list}: {e}")))?,
                );
            }
        }
        if locations.is_empty() {
            return Err(StageError::InputInvalid("the lists name no sources".into()));
        }
        let mut missing = Vec::new();
        let mut out = Vec::new();
        let mut objects = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        let mut seen_local = BTreeSet::new();
        for loc in locations {
            match loc {
                Location::S3 { bucket, key } if key.is_empty() || key.ends_with('/') => {
                    prefixes.insert((bucket, key));
                }
                Location::S3 { bucket, key } => {
                    objects.insert((bucket, key));
                }
                Location::Local(p) => {
                    if seen_local.insert(p.clone()) {
                        resolve_local(&p, &filter, &mut out, &mut missing);
                    }
                }
            }
        }
        if !objects.is_empty() || !prefixes.is_empty() {
            let client = self.ensure_client(args).await?;
            for (bucket, prefix) in &prefixes {
                match kubestyle_s3::list(&client, bucket, prefix).await {
                    Ok(listed) => {
                        let before = objects.len();
                        for o in listed {
                            let below = &o.key[prefix.len()..];
                            if below.is_empty() || o.key.ends_with('/') {
                                continue; // "directory" marker objects
                            }
                            if filter.as_ref().is_none_or(|f| f.is_match(below)) {
                                objects.insert((o.bucket, o.key));
                            }
                        }
                        if objects.len() == before {
                            missing.push(format!(
                                "no objects under s3://{bucket}/{prefix}{}",
                                if args.include.is_empty() {
                                    String::new()
                                } else {
                                    format!(" matching {}", args.include.join(", "))
                                }
                            ));
                        }
                    }
                    Err(StageError::InputMissing(m)) => missing.extend(m),
                    Err(e) => return Err(e),
                }
            }
            let heads: Vec<_> = futures::stream::iter(objects.into_iter().map(|(b, k)| {
                let client = client.clone();
                async move {
                    let r = kubestyle_s3::head(&client, &b, &k).await;
                    (b, k, r)
                }
            }))
            .buffer_unordered(args.jobs as usize)
            .collect()
            .await;
            let mut missing_objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (b, k, r) in heads {
                match r? {
                    Some(info) => out.push(Resolved::S3(info)),
                    None => missing_objects.entry(b).or_default().push(k),
                }
            }
            for (bucket, keys) in missing_objects {
                let bucket_ok = kubestyle_s3::bucket_exists(&client, &bucket).await?;
                for k in keys {
                    if bucket_ok {
                        missing.push(format!("s3://{bucket}/{k} does not exist"));
                    } else {
                        missing.push(format!(
                            "s3://{bucket}/{k}: bucket {bucket:?} does not exist"
                        ));
                    }
                }
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(StageError::InputMissing(missing));
        }
        Ok((out, self.client))
    }
}

fn build_globs(include: &[String]) -> Result<Option<GlobSet>, StageError> {
    if include.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in include {
        b.add(Glob::new(g).map_err(|e| StageError::Usage(format!("--include {g:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| StageError::Usage(format!("--include: {e}")))
}

fn resolve_local(
    p: &Path,
    filter: &Option<GlobSet>,
    out: &mut Vec<Resolved>,
    missing: &mut Vec<String>,
) {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing.push(format!("{} does not exist", p.display()));
            return;
        }
        Err(e) => {
            missing.push(format!("{}: {e}", p.display()));
            return;
        }
    };
    let readable = |f: &Path, missing: &mut Vec<String>| -> Option<PathBuf> {
        match std::fs::File::open(f).and_then(|_| f.canonicalize()) {
            Ok(c) => Some(c),
            Err(e) => {
                missing.push(format!("{} cannot be read: {e}", f.display()));
                None
            }
        }
    };
    if meta.is_file() {
        if let Some(path) = readable(p, missing) {
            out.push(Resolved::Local { path, below: None });
        }
        return;
    }
    let dir_name = p
        .canonicalize()
        .ok()
        .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dir".into());
    let files = match kubestyle_manifest::files::walk_files(p) {
        Ok(f) => f,
        Err(e) => {
            missing.push(format!("{}: {e}", p.display()));
            return;
        }
    };
    let before = out.len();
    for rel in files {
        if filter.as_ref().is_some_and(|f| !f.is_match(&rel)) {
            continue;
        }
        if let Some(path) = readable(&p.join(&rel), missing) {
            out.push(Resolved::Local {
                path,
                below: Some(format!("{dir_name}/{rel}")),
            });
        }
    }
    if out.len() == before {
        missing.push(format!("no files under {}", p.display()));
    }
}

async fn read_s3_text(client: &Client, bucket: &str, key: &str) -> Result<String, StageError> {
    let what = format!("s3://{bucket}/{key}");
    let resp = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(r) => r,
        Err(e) if kubestyle_s3::is_not_found(&e) => {
            return Err(StageError::InputMissing(vec![format!(
                "list {what} does not exist"
            )]));
        }
        Err(e) => return Err(kubestyle_s3::storage_error(&format!("GET {what}"), e)),
    };
    let bytes = resp
        .body
        .collect()
        .await
        .map_err(|e| StageError::Storage(format!("GET {what}: {e}")))?
        .into_bytes();
    String::from_utf8(bytes.to_vec())
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
/// directory (local list) or prefix (S3 list).
pub fn resolve_entry(entry: &str, list: &Location) -> Result<Location, StageError> {
    if entry.contains("://") || entry.starts_with('/') {
        return entry.parse();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists() {
        let t = "# photos\ns3://bkt/a.png\n\n  b.png  \n";
        assert_eq!(
            parse_list(t, false, None).unwrap(),
            vec!["s3://bkt/a.png", "b.png"]
        );
        assert!(parse_list(t, false, Some("uri")).is_err());
    }

    #[test]
    fn csv_lists_pick_columns() {
        let t = "id,image,style\n1,s3://bkt/a.png,x\n2, b.jpg ,y\n3,,z\n";
        assert_eq!(
            parse_list(t, true, None).unwrap(),
            vec!["s3://bkt/a.png", "b.jpg"]
        );
        assert_eq!(
            parse_list(t, true, Some("style")).unwrap(),
            vec!["x", "y", "z"]
        );
        assert_eq!(parse_list(t, true, Some("0")).unwrap(), vec!["1", "2", "3"]);
        assert!(
            parse_list(t, true, Some("nope"))
                .unwrap_err()
                .contains("image")
        );
        assert!(parse_list(t, true, Some("9")).is_err());
        assert!(
            parse_list("a,b\n1,2,3\n", true, None)
                .unwrap_err()
                .contains("line 2")
        );
    }

    #[test]
    fn relative_entries() {
        let local = Location::Local("/data/lists/l.csv".into());
        assert_eq!(
            resolve_entry("x/a.png", &local).unwrap(),
            Location::Local("/data/lists/x/a.png".into())
        );
        let s3 = Location::s3("bkt", "lists/l.csv");
        assert_eq!(
            resolve_entry("a b.png", &s3).unwrap(),
            Location::s3("bkt", "lists/a b.png")
        );
        assert_eq!(
            resolve_entry("s3://other/k", &s3).unwrap(),
            Location::s3("other", "k")
        );
        assert!(resolve_entry("gs://x/y", &s3).is_err());
    }
}
