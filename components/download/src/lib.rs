//! The `download` stage: S3 objects, S3 prefixes, lists of URIs and local paths → the volume.
//!
//! Order of work, so that bad input never half-writes:
//! 1. parse every source and list ([`sources`]);
//! 2. resolve: HEAD every object, list every prefix, stat every local path; refuse local
//!    sources that are not regular files (`/proc`, `/sys`, `/dev`, FIFOs, sockets, devices),
//!    local paths in S3 lists and local-list entries outside the list's roots; if anything is
//!    refused or missing, fail naming *all* of it, having written nothing;
//! 3. plan where each object lands (`<dest>/<bucket>/<key>`) and skip what is already there with
//!    the same size and digest (unless `--force`);
//! 4. transfer with bounded concurrency, each object through an [`AtomicFile`], resuming a broken
//!    body with `Range` + `If-Match`, verifying size and SHA-256;
//! 5. write the manifest, last.

pub mod fetch;
pub mod lists;
pub mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::manifest::{
    manifest_path, media_type_for, new_run_id, open_volume, validate_run_id,
};
use kubestyle_manifest::{Artifact, ArtifactKind, Manifest, Sha256Hex, StageError, StageRun};
use kubestyle_s3::ObjectInfo;
use serde_json::{Map, Value, json};

pub use sources::Resolved;

pub const STAGE: &str = kubestyle_manifest::command::download::NAME;

/// The command line (defined with the other stages' in the contract crate, where the pipeline
/// builds it).
pub use kubestyle_manifest::command::download::Args;

/// What happened to one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Downloaded,
    Skipped,
    Copied,
    InPlace,
}

#[derive(Debug)]
pub struct Summary {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Summary {
    pub fn count(&self, o: Outcome) -> usize {
        self.outcomes.values().filter(|&&x| x == o).count()
    }
}

/// One file to put on the volume.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    rel: String,
    from: Resolved,
}

/// Resolve every source (HEAD every object, list every prefix, read every list, stat every
/// local path) and write nothing: what `pipeline run` checks before any stage starts. Returns
/// how many files the sources name.
pub async fn check(args: &Args) -> Result<usize, StageError> {
    if args.sources.is_empty() && args.lists.is_empty() {
        return Err(StageError::Usage(
            "nothing to download: give SOURCE arguments or --list".into(),
        ));
    }
    let resolver = sources::Resolver::new(args).await?;
    let (resolved, _) = resolver.resolve_all(args).await?;
    let n = resolved.len();
    // Where everything would land, with the same clash checks (the volume may not exist yet).
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    let dest = dest_dir(args, &run_id)?;
    let volume = args
        .volume
        .canonicalize()
        .unwrap_or_else(|_| args.volume.clone());
    plan(&volume, &dest, resolved, args.allow_case_clash)?;
    Ok(n)
}

/// `--dest`, or the run's own `runs/<run-id>/inputs`.
fn dest_dir(args: &Args, run_id: &str) -> Result<String, StageError> {
    let dest = args
        .dest
        .clone()
        .unwrap_or_else(|| kubestyle_manifest::manifest::run_data_dir(run_id, "inputs"));
    validate_relative_path(&dest).map_err(|e| StageError::Usage(format!("--dest: {e}")))?;
    Ok(dest)
}

pub async fn run(args: Args) -> Result<Summary, StageError> {
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    validate_run_id(&run_id)?;
    let stage = StageRun::start(STAGE, env!("CARGO_PKG_VERSION"), run_id.clone());
    if args.sources.is_empty() && args.lists.is_empty() {
        return Err(StageError::Usage(
            "nothing to download: give SOURCE arguments or --list".into(),
        ));
    }
    let dest = dest_dir(&args, &run_id)?;
    let volume = open_volume(&args.volume)?;
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| manifest_path(&volume, &run_id, STAGE));

    // 1 + 2: parse and resolve everything before writing anything.
    let resolver = sources::Resolver::new(&args).await?;
    let (resolved, client) = resolver.resolve_all(&args).await?;
    // 3: plan.
    let plan = plan(&volume, &dest, resolved, args.allow_case_clash)?;
    let params = params(&args, &dest);
    let key_inputs = input_keys(&plan)?;
    let key = stage.key(&params, &key_inputs);
    if !args.force
        && let Some(manifest) = stage.reusable(&manifest_path, &volume, &key)
    {
        let outcomes = manifest
            .outputs
            .iter()
            .map(|a| (a.name.clone(), Outcome::Skipped))
            .collect();
        return Ok(Summary {
            manifest_path,
            manifest,
            outcomes,
        });
    }
    let previous = previous_records(&manifest_path, &volume);

    // 4: transfer.
    // Sizes come from the server: summed without overflow (the progress bar's total only).
    let total: u64 = plan
        .iter()
        .map(|p| match &p.from {
            Resolved::S3(o) => o.size,
            Resolved::Local { .. } => 0,
        })
        .fold(0u64, u64::saturating_add);
    let progress = fetch::progress_bar(total);
    let ctx = Arc::new(fetch::Ctx {
        client,
        volume: volume.clone(),
        force: args.force,
        max_resumes: args.max_resumes,
        read_timeout: args.s3.read_timeout(),
        previous,
        progress: progress.clone(),
    });
    let results: Vec<(Artifact, Outcome)> = futures::stream::iter(plan.into_iter().map(|p| {
        let ctx = ctx.clone();
        async move { fetch::materialise(&ctx, p.name, p.rel, p.from).await }
    }))
    .buffer_unordered(args.jobs as usize)
    .try_collect()
    .await?;
    progress.finish_and_clear();

    // 5: manifest, last.
    let mut outputs: Vec<Artifact> = Vec::with_capacity(results.len());
    let mut outcomes = BTreeMap::new();
    for (a, o) in results {
        outcomes.insert(a.name.clone(), o);
        outputs.push(a);
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = stage.finish(params, &key_inputs, vec![], outputs);
    manifest.write(&manifest_path)?;
    let summary = Summary {
        manifest_path,
        manifest,
        outcomes,
    };
    tracing::info!(
        "{} files: {} downloaded, {} already present, {} copied, {} used in place; manifest {}",
        summary.outcomes.len(),
        summary.count(Outcome::Downloaded),
        summary.count(Outcome::Skipped),
        summary.count(Outcome::Copied),
        summary.count(Outcome::InPlace),
        summary.manifest_path.display()
    );
    Ok(summary)
}

/// What identifies each input by content before it is fetched, for the step cache: an S3
/// object by URI, size, ETag and SHA-256 (when the object carries one); a local file by its
/// SHA-256. An object replaced under the same key gets a new ETag, so it changes the key.
fn input_keys(plan: &[Planned]) -> Result<Vec<String>, StageError> {
    plan.iter()
        .map(|p| {
            Ok(match &p.from {
                Resolved::S3(o) => format!(
                    "{} -> {} size={} etag={} sha256={}",
                    o.uri(),
                    p.rel,
                    o.size,
                    o.etag.as_deref().unwrap_or("-"),
                    o.sha256.as_ref().map(|d| d.to_string()).unwrap_or_default()
                ),
                Resolved::Local { path, .. } => format!(
                    "{} -> {} sha256={}",
                    path.display(),
                    p.rel,
                    kubestyle_manifest::sha256_file(path)?.0
                ),
            })
        })
        .collect()
}

fn params(args: &Args, dest: &str) -> Value {
    json!({
        "sources": args.sources,
        "lists": args.lists,
        "column": args.column,
        "include": args.include,
        "dest": dest,
    })
}

/// Decide where every resolved input lands; refuse keys that cannot be stored safely and two
/// different inputs landing on one path.
fn plan(
    volume: &Path,
    dest: &str,
    resolved: Vec<Resolved>,
    allow_case_clash: bool,
) -> Result<Vec<Planned>, StageError> {
    let mut by_rel: BTreeMap<String, Planned> = BTreeMap::new();
    let mut problems = Vec::new();
    for r in resolved {
        let (name, rel) = match &r {
            Resolved::S3(o) => {
                let rel =
                    kubestyle_manifest::command::naming::downloaded_path(dest, &o.bucket, &o.key);
                if let Err(e) = validate_relative_path(&rel) {
                    problems.push(format!("{} cannot be stored on the volume: {e}", o.uri()));
                    continue;
                }
                (format!("{}/{}", o.bucket, o.key), rel)
            }
            Resolved::Local { path, below } => {
                let rel = match path.strip_prefix(volume) {
                    Ok(inside) => inside.to_string_lossy().into_owned(),
                    Err(_) => {
                        let tail = below.clone().unwrap_or_else(|| {
                            path.file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        });
                        format!("{dest}/local/{tail}")
                    }
                };
                if let Err(e) = validate_relative_path(&rel) {
                    problems.push(format!(
                        "{} cannot be stored on the volume: {e}",
                        path.display()
                    ));
                    continue;
                }
                (rel.clone(), rel)
            }
        };
        if let Some(prev) = by_rel.get(&rel) {
            if prev.from.identity() != r.identity() {
                problems.push(format!(
                    "{} and {} would both be stored as {rel}",
                    prev.from.identity(),
                    r.identity()
                ));
            }
            continue;
        }
        by_rel.insert(rel.clone(), Planned { name, rel, from: r });
    }
    let planned: Vec<Planned> = by_rel.into_values().collect();
    problems.extend(storable(volume, &planned, allow_case_clash));
    if !problems.is_empty() {
        return Err(StageError::InputInvalid(problems.join("; ")));
    }
    Ok(planned)
}

/// Longest file or directory name Linux file systems store (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;
/// Longest path the kernel accepts (`PATH_MAX`, the terminating NUL included), in bytes.
const PATH_MAX: usize = 4096;
/// What the temp file an [`kubestyle_manifest::atomic::AtomicFile`] writes first adds to the
/// target's name: `x.jpg` is written as `.x.kubestyle-tmp.<10 random>.jpg`.
use kubestyle_manifest::atomic::TEMP_NAME_EXTRA;

/// Refuse, before the first write, every planned file that cannot be stored on the volume:
/// a name or path too long for the file system (the temp file's longer name included), a
/// path that one input needs as a file and another as a directory (`p/x.jpg` and
/// `p/x.jpg/y.jpg`), a path where the volume already holds a file that would have to be a
/// directory or a directory where the file would go, and (unless `allow_case_clash`) two
/// paths that differ only by letter case. Returns every problem.
fn storable(volume: &Path, plan: &[Planned], allow_case_clash: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let source = |p: &Planned| p.from.identity();
    let vol_len = volume.as_os_str().len();
    for p in plan {
        for (i, c) in p.rel.split('/').enumerate() {
            let last = i == p.rel.matches('/').count();
            let limit = if last {
                NAME_MAX - TEMP_NAME_EXTRA
            } else {
                NAME_MAX
            };
            if c.len() > limit {
                problems.push(format!(
                    "{} cannot be stored on the volume: its path component {:?}… is {} bytes, \
                     more than the {limit} a {} may have here (file systems allow {NAME_MAX})",
                    source(p),
                    c.chars().take(32).collect::<String>(),
                    c.len(),
                    if last { "file name" } else { "directory name" }
                ));
            }
        }
        let total = vol_len + 1 + p.rel.len() + TEMP_NAME_EXTRA;
        if total >= PATH_MAX {
            problems.push(format!(
                "{} cannot be stored on the volume: its path {}/{}… would be {total} bytes, \
                 more than PATH_MAX ({PATH_MAX})",
                source(p),
                volume.display(),
                p.rel.chars().take(64).collect::<String>()
            ));
        }
    }
    // A path needed both as a file and as a directory, exactly or (unless allowed) up to case.
    let folds: &[fn(&str) -> String] = if allow_case_clash {
        &[str::to_string]
    } else {
        &[str::to_string, str::to_lowercase]
    };
    let mut clashes = std::collections::BTreeSet::new();
    for fold in folds {
        let files: BTreeMap<String, &Planned> = plan.iter().map(|p| (fold(&p.rel), p)).collect();
        for p in plan {
            let mut dir = p.rel.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dir = parent;
                if let Some(f) = files.get(&fold(dir)) {
                    clashes.insert(format!(
                        "{} and {} cannot both be stored: {} would have to be a file and a \
                         directory{}",
                        source(f),
                        source(p),
                        f.rel,
                        if f.rel == dir {
                            ""
                        } else {
                            " (on a case-insensitive volume)"
                        }
                    ));
                }
            }
        }
    }
    if !allow_case_clash {
        let mut by_fold: BTreeMap<String, &Planned> = BTreeMap::new();
        for p in plan {
            if let Some(prev) = by_fold.insert(p.rel.to_lowercase(), p) {
                clashes.insert(format!(
                    "{} and {} differ only by letter case: on a case-insensitive volume one \
                     would replace the other ({} and {}); rename one, or give \
                     --allow-case-clash if the volume is case-sensitive",
                    source(prev),
                    source(p),
                    prev.rel,
                    p.rel
                ));
            }
        }
    }
    problems.extend(clashes);
    // What the volume already holds in the way.
    let mut checked = std::collections::HashSet::new();
    for p in plan {
        let mut dir = String::new();
        let parts: Vec<&str> = p.rel.split('/').collect();
        for (i, c) in parts.iter().enumerate() {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(c);
            let last = i + 1 == parts.len();
            if !last && !checked.insert(dir.clone()) {
                continue;
            }
            let Ok(m) = std::fs::metadata(volume.join(&dir)) else {
                break; // absent: nothing below it exists either
            };
            if !last && !m.is_dir() {
                problems.push(format!(
                    "{} cannot be stored as {}: the volume already has a file at {dir}",
                    source(p),
                    p.rel
                ));
                break;
            }
            if last && m.is_dir() {
                problems.push(format!(
                    "{} cannot be stored as {}: the volume already has a directory there",
                    source(p),
                    p.rel
                ));
            }
        }
    }
    problems
}

/// What an earlier download manifest at the same place recorded: source → (etag, sha256, path).
pub(crate) type Previous = HashMap<String, (Option<String>, Sha256Hex, String)>;

fn previous_records(manifest_path: &Path, volume: &Path) -> Previous {
    let Ok(m) = Manifest::read(manifest_path, volume) else {
        return Previous::new();
    };
    m.outputs
        .into_iter()
        .filter_map(|a| {
            let src = a.source?;
            let etag = a
                .attributes
                .get("etag")
                .and_then(Value::as_str)
                .map(str::to_string);
            Some((src, (etag, a.sha256, a.path)))
        })
        .collect()
}

/// An artifact for a file fetched from S3.
pub(crate) fn s3_artifact(
    name: String,
    rel: String,
    o: &ObjectInfo,
    sha: Sha256Hex,
    bytes: u64,
    verified_by: &str,
) -> Artifact {
    let mut attributes = Map::new();
    if let Some(e) = &o.etag {
        attributes.insert("etag".into(), Value::String(e.clone()));
    }
    attributes.insert("verified_by".into(), Value::String(verified_by.into()));
    Artifact {
        name,
        kind: ArtifactKind::guess(&rel),
        media_type: media_type_for(&rel),
        path: rel,
        sha256: sha,
        bytes,
        source: Some(o.uri()),
        attributes,
    }
}
