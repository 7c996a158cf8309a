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
use kubestyle_s3::{ObjectInfo, S3Args};
use serde_json::{Map, Value, json};

pub use sources::Resolved;

pub const STAGE: &str = "download";

/// Fetch inputs from S3 or local paths onto the shared volume and record them in a manifest.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "download", version, about, long_about = None)]
pub struct Args {
    /// What to fetch: `s3://bucket/key`, `s3://bucket/prefix/` (every object under it), a local
    /// file or directory, or a `file://` URL. Local files inside the volume are used in place.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// A file listing sources (local or `s3://`): `.csv` with a header row (see `--column`),
    /// anything else one source per line (`#` starts a comment). Relative entries are resolved
    /// against the list's own directory or prefix. Repeatable.
    #[arg(long = "list", value_name = "FILE")]
    pub lists: Vec<String>,
    /// A directory the local paths named by a local list may resolve into (after following
    /// symlinks), besides the list's own directory tree. Entries that resolve anywhere else
    /// are refused (exit 4). Repeatable. Does not apply to SOURCE arguments.
    #[arg(long = "allow-root", value_name = "DIR")]
    pub allow_roots: Vec<PathBuf>,
    /// CSV column holding the sources: a header name or a 0-based index. Default: the first of
    /// `uri`, `url`, `path`, `key`, `image`, `source`, else column 0.
    #[arg(long, value_name = "NAME|INDEX")]
    pub column: Option<String>,
    /// Keep only objects of prefixes and directories whose path below the prefix matches one of
    /// these globs (e.g. `*.jpg`, `**/*.png`). Repeatable.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Root of the shared volume. Manifest paths are relative to it.
    #[arg(long, env = "KUBESTYLE_VOLUME", value_name = "DIR")]
    pub volume: PathBuf,
    /// Directory under the volume that receives fetched objects, as `<dest>/<bucket>/<key>`.
    #[arg(long, default_value = "inputs", value_name = "REL")]
    pub dest: String,
    /// Run id (default: a new one). The manifest goes to `<volume>/runs/<run-id>/download.manifest.json`.
    #[arg(long, env = "KUBESTYLE_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Write the manifest here instead.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Transfers and HEAD requests in flight at once.
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Download again even when an identical file is already on the volume (and even when the
    /// run's manifest shows the same inputs: the step cache).
    #[arg(long)]
    pub force: bool,
    /// How often a broken response body is resumed (with `Range` + `If-Match`) before giving up.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_resumes: u32,
    #[command(flatten)]
    pub s3: S3Args,
}

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
    Ok(resolved.len())
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
    validate_relative_path(&args.dest).map_err(|e| StageError::Usage(format!("--dest: {e}")))?;
    let volume = open_volume(&args.volume)?;
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| manifest_path(&volume, &run_id, STAGE));

    // 1 + 2: parse and resolve everything before writing anything.
    let resolver = sources::Resolver::new(&args).await?;
    let (resolved, client) = resolver.resolve_all(&args).await?;
    // 3: plan.
    let plan = plan(&volume, &args.dest, resolved)?;
    let params = params(&args);
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
    let total: u64 = plan
        .iter()
        .map(|p| match &p.from {
            Resolved::S3(o) => o.size,
            Resolved::Local { .. } => 0,
        })
        .sum();
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

fn params(args: &Args) -> Value {
    json!({
        "sources": args.sources,
        "lists": args.lists,
        "column": args.column,
        "include": args.include,
        "dest": args.dest,
    })
}

/// Decide where every resolved input lands; refuse keys that cannot be stored safely and two
/// different inputs landing on one path.
fn plan(volume: &Path, dest: &str, resolved: Vec<Resolved>) -> Result<Vec<Planned>, StageError> {
    let mut by_rel: BTreeMap<String, Planned> = BTreeMap::new();
    let mut problems = Vec::new();
    for r in resolved {
        let (name, rel) = match &r {
            Resolved::S3(o) => {
                let rel = format!("{dest}/{}/{}", o.bucket, o.key);
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
    if !problems.is_empty() {
        return Err(StageError::InputInvalid(problems.join("; ")));
    }
    Ok(by_rel.into_values().collect())
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
