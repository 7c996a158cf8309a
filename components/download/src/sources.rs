//! Parse sources and lists, and resolve them against S3 and the local filesystem.
//!
//! Resolution only reads: every object is HEADed, every prefix listed, every local file opened.
//! Everything missing is collected and reported together, and so is everything that may not be
//! read (see [`special_file`]).
//!
//! What a source may name:
//! - a local source (a command-line path, a list entry, a file found walking a directory) must be
//!   a regular file (or a directory of them) after resolving symlinks, and not a pseudo-file:
//!   nothing under `/proc`, `/sys` or `/dev`, no FIFO, socket or device. Copying
//!   `/proc/self/environ` would put the process environment, S3 secret included, on the volume;
//!   opening a FIFO blocks forever.
//! - a list fetched from S3 names S3 objects only: a local path in it is refused.
//! - the local paths a local list names must resolve inside the list's own directory tree, or
//!   inside a root the user allowed explicitly (`--allow-root`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::Client;
use futures::StreamExt;
use globset::{Glob, GlobSet, GlobSetBuilder};
use kubestyle_manifest::{Location, StageError};
use kubestyle_s3::{ObjectInfo, S3ArgsExt};

use crate::Args;
pub use crate::lists::{parse_list, resolve_entry};
use crate::lists::{read_local_list, read_s3_text};

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
        let allowed = allowed_roots(&args.allow_roots)?;
        let mut locations: Vec<(Location, Option<Arc<Scope>>)> = args
            .sources
            .iter()
            .map(|s| s.parse::<Location>().map(|l| (l, None)))
            .collect::<Result<_, _>>()?;
        // Everything that may not be read, reported together (exit 4) before any transfer.
        let mut invalid = Vec::new();
        for list in &args.lists {
            let list_loc: Location = list.parse()?;
            let (text, scope) = match &list_loc {
                Location::Local(p) => {
                    let text = read_local_list(p, args.max_list_bytes)?;
                    let dir = p
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    let own = dir.canonicalize().map_err(|e| StageError::read(dir, e))?;
                    let mut roots = vec![own];
                    roots.extend(allowed.iter().cloned());
                    let scope = Scope {
                        list: list.clone(),
                        roots,
                    };
                    (text, Some(Arc::new(scope)))
                }
                Location::S3 { bucket, key } => {
                    let client = self.ensure_client(args).await?;
                    (
                        read_s3_text(
                            &client,
                            bucket,
                            key,
                            args.s3.read_timeout(),
                            args.max_list_bytes,
                        )
                        .await?,
                        None,
                    )
                }
            };
            let is_csv = list.to_ascii_lowercase().ends_with(".csv");
            for entry in parse_list(&text, is_csv, args.column.as_deref())
                .map_err(|e| StageError::InputInvalid(format!("list {list}: {e}")))?
            {
                match resolve_entry(&entry, &list_loc) {
                    Ok(loc) => locations.push((loc, scope.clone())),
                    Err(e) => invalid.push(format!("list {list}: {}", message(&e))),
                }
            }
        }
        if locations.is_empty() && invalid.is_empty() {
            return Err(StageError::InputInvalid("the lists name no sources".into()));
        }
        let mut missing = Vec::new();
        let mut out = Vec::new();
        let mut objects: BTreeMap<(String, String), Option<ObjectInfo>> = BTreeMap::new();
        let mut prefixes = BTreeSet::new();
        let mut seen_local = BTreeSet::new();
        for (loc, scope) in locations {
            match loc {
                Location::S3 { bucket, key } if key.is_empty() || key.ends_with('/') => {
                    prefixes.insert((bucket, key));
                }
                Location::S3 { bucket, key } => {
                    objects.entry((bucket, key)).or_insert(None);
                }
                Location::Local(p) => {
                    if seen_local.insert((p.clone(), scope.as_ref().map(|s| s.list.clone()))) {
                        let mut found = Found {
                            out: &mut out,
                            missing: &mut missing,
                            invalid: &mut invalid,
                        };
                        resolve_local(&p, scope.as_deref(), &filter, &mut found);
                    }
                }
            }
        }
        // Nothing that may not be read goes further (not even to the S3 requests).
        if !invalid.is_empty() {
            return Err(StageError::InputInvalid(invalid.join("; ")));
        }
        if !objects.is_empty() || !prefixes.is_empty() {
            let client = self.ensure_client(args).await?;
            for (bucket, prefix) in &prefixes {
                match kubestyle_s3::list(&client, bucket, prefix, args.s3.max_listed_objects).await
                {
                    Ok(listed) => {
                        let before = objects.len();
                        for o in listed {
                            // `list` refuses keys outside the prefix; never slice by length.
                            let Some(below) = o.key.strip_prefix(prefix.as_str()) else {
                                continue;
                            };
                            if below.is_empty() || o.key.ends_with('/') {
                                continue; // "directory" marker objects
                            }
                            if filter.as_ref().is_none_or(|f| f.is_match(below)) {
                                let slot = objects
                                    .entry((o.bucket.clone(), o.key.clone()))
                                    .or_insert(None);
                                if slot.is_none() {
                                    *slot = Some(o);
                                }
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
            // A listed object with an ETag needs no HEAD here: its size and ETag identify it for
            // the step cache and the skip check; download HEADs it only if it must fetch it
            // (10,000 objects: 10 LIST pages instead of 10,000 HEADs, in the pipeline's
            // preflight and again in the stage).
            let mut to_head = Vec::new();
            for ((b, k), listed) in objects {
                match listed {
                    Some(o) if o.etag.is_some() => out.push(Resolved::S3(o)),
                    _ => to_head.push((b, k)),
                }
            }
            let heads: Vec<_> = futures::stream::iter(to_head.into_iter().map(|(b, k)| {
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

/// Where the local paths a local list names may resolve: the list's own directory and every
/// `--allow-root`, all canonical.
#[derive(Debug)]
struct Scope {
    list: String,
    roots: Vec<PathBuf>,
}

impl Scope {
    fn contains(&self, canonical: &Path) -> bool {
        self.roots.iter().any(|r| canonical.starts_with(r))
    }

    fn refuse(&self, entry: &Path, canonical: &Path) -> String {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        format!(
            "list {}: {} resolves to {}, outside the list's directory tree and every \
             --allow-root (allowed: {}); give --allow-root DIR to allow it",
            self.list,
            entry.display(),
            canonical.display(),
            roots.join(", ")
        )
    }
}

/// The `--allow-root` directories, canonical. One that does not exist is a usage error.
fn allowed_roots(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, StageError> {
    dirs.iter()
        .map(|d| {
            let c = d
                .canonicalize()
                .map_err(|e| StageError::Usage(format!("--allow-root {}: {e}", d.display())))?;
            if !c.is_dir() {
                return Err(StageError::Usage(format!(
                    "--allow-root {}: not a directory",
                    d.display()
                )));
            }
            Ok(c)
        })
        .collect()
}

/// The message of an error, without its "input invalid: " (etc.) prefix.
fn message(e: &StageError) -> String {
    match e {
        StageError::InputInvalid(m) | StageError::Usage(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Kernel pseudo-filesystems: their "files" are the state of the machine and of this process
/// (`/proc/self/environ` holds the S3 secret), never data to fetch.
const PSEUDO_ROOTS: [(&str, &str); 3] = [
    ("/proc", "process and kernel state"),
    ("/sys", "kernel state"),
    ("/dev", "devices"),
];

/// Why `canonical` (a canonical path, `meta` its metadata after following symlinks) may not be
/// read as a source, if it may not: not a regular file or directory, or under a pseudo-filesystem.
pub(crate) fn special_file(canonical: &Path, meta: &std::fs::Metadata) -> Option<String> {
    if let Some((root, what)) = PSEUDO_ROOTS.iter().find(|(r, _)| canonical.starts_with(r)) {
        return Some(format!("is under {root} ({what}, never data to fetch)"));
    }
    let t = meta.file_type();
    let what = if t.is_file() || t.is_dir() {
        return None;
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    Some(format!("is {what}, not a regular file"))
}

/// Where [`resolve_local`] puts what it finds.
struct Found<'a> {
    out: &'a mut Vec<Resolved>,
    missing: &'a mut Vec<String>,
    invalid: &'a mut Vec<String>,
}

impl Found<'_> {
    /// Check one path: it exists, is a regular file or directory and not a pseudo-file, and lies
    /// inside `scope`. Returns its canonical path and metadata (after following symlinks).
    fn check(&mut self, p: &Path, scope: Option<&Scope>) -> Option<(PathBuf, std::fs::Metadata)> {
        // Neither of these opens the file: a FIFO would block.
        let checked = std::fs::metadata(p).and_then(|m| Ok((p.canonicalize()?, m)));
        let (canonical, meta) = match checked {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.missing.push(format!("{} does not exist", p.display()));
                return None;
            }
            Err(e) => {
                self.missing
                    .push(format!("{} cannot be read: {e}", p.display()));
                return None;
            }
        };
        if let Some(why) = special_file(&canonical, &meta) {
            let via = if canonical == p {
                String::new()
            } else {
                format!(" (resolves to {})", canonical.display())
            };
            let list = scope
                .map(|s| format!("list {}: ", s.list))
                .unwrap_or_default();
            self.invalid.push(format!(
                "{list}{}{via} {why}: refused as a source",
                p.display()
            ));
            return None;
        }
        if let Some(scope) = scope.filter(|s| !s.contains(&canonical)) {
            self.invalid.push(scope.refuse(p, &canonical));
            return None;
        }
        Some((canonical, meta))
    }

    /// A regular file that passed [`Found::check`]: open it (it cannot block now), keep it.
    fn file(&mut self, p: &Path, canonical: PathBuf, below: Option<String>) {
        match std::fs::File::open(&canonical) {
            Ok(_) => self.out.push(Resolved::Local {
                path: canonical,
                below,
            }),
            Err(e) => self
                .missing
                .push(format!("{} cannot be read: {e}", p.display())),
        }
    }
}

/// A local source: a regular file, or every regular file under a directory (following
/// symlinks; `--include` filters those). Everything that is not a regular file or directory,
/// lies under a pseudo-filesystem or (for list entries) outside the list's roots is refused.
fn resolve_local(p: &Path, scope: Option<&Scope>, filter: &Option<GlobSet>, found: &mut Found) {
    let Some((canonical, meta)) = found.check(p, scope) else {
        return;
    };
    if meta.is_file() {
        found.file(p, canonical, None);
        return;
    }
    let dir_name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dir".into());
    let before = found.out.len();
    let problems = found.missing.len() + found.invalid.len();
    let mut ancestors = vec![canonical];
    walk(p, "", &mut ancestors, scope, filter, &dir_name, found);
    if found.out.len() == before && found.missing.len() + found.invalid.len() == problems {
        found
            .missing
            .push(format!("no files under {}", p.display()));
    }
}

/// The files under `root/rel` (a directory already checked), in sorted order. `ancestors` are
/// the canonical directories being walked, so a symlink back to one of them is not followed.
fn walk(
    root: &Path,
    rel: &str,
    ancestors: &mut Vec<PathBuf>,
    scope: Option<&Scope>,
    filter: &Option<GlobSet>,
    dir_name: &str,
    found: &mut Found,
) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names = match std::fs::read_dir(&dir).and_then(|rd| {
        rd.map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
    }) {
        Ok(n) => n,
        Err(e) => {
            found.missing.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        // Another writer's atomic write in progress (or a killed one's leftover): not an input.
        if kubestyle_manifest::atomic::is_temp_name(&name) {
            continue;
        }
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let child = root.join(&child_rel);
        if std::fs::metadata(&child).is_ok_and(|m| m.is_dir()) {
            let Some((canonical, _)) = found.check(&child, scope) else {
                continue;
            };
            if ancestors.contains(&canonical) {
                tracing::warn!(
                    "not following {}: it leads back to {}",
                    child.display(),
                    canonical.display()
                );
                continue;
            }
            ancestors.push(canonical);
            walk(root, &child_rel, ancestors, scope, filter, dir_name, found);
            ancestors.pop();
            continue;
        }
        if filter.as_ref().is_some_and(|f| !f.is_match(&child_rel)) {
            continue;
        }
        if let Some((canonical, _)) = found.check(&child, scope) {
            found.file(&child, canonical, Some(format!("{dir_name}/{child_rel}")));
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
        for local in [
            "/etc/hostname",
            "file:///etc/hostname",
            "/proc/self/environ",
        ] {
            let e = resolve_entry(local, &s3).unwrap_err();
            assert_eq!(e.exit_status().code(), 4, "{local}: {e}");
            assert!(e.to_string().contains("local path"), "{e}");
            assert!(resolve_entry(local, &local_list()).is_ok(), "{local}");
        }
    }

    fn local_list() -> Location {
        Location::Local("/data/lists/l.csv".into())
    }

    #[test]
    fn pseudo_and_special_files_are_named() {
        let meta = |p: &str| std::fs::metadata(p).unwrap();
        let environ = Path::new("/proc/self/environ").canonicalize().unwrap();
        assert!(
            special_file(&environ, &meta("/proc/self/environ"))
                .unwrap()
                .contains("/proc")
        );
        assert!(special_file(Path::new("/dev/null"), &meta("/dev/null")).is_some());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.jpg");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(special_file(&f, &std::fs::metadata(&f).unwrap()), None);
        assert_eq!(
            special_file(d.path(), &std::fs::metadata(d.path()).unwrap()),
            None
        );
        // Component-wise: /devices or /process would not be pseudo-filesystems.
        assert!(!Path::new("/devices/x").starts_with("/dev"));
    }
}
