//! The `upload` stage.
//!
//! * `upload publish`: every output of the given manifests, the manifests themselves and a
//!   `SHA256SUMS` file go to `<to>/<run_id>/…`, keeping the volume's relative layout, so that
//!   `sha256sum -c SHA256SUMS` works in a copy of that prefix.
//! * `upload push`: local files or directories to a prefix, only where absent (the "up" half of
//!   the seeds' up/down).
//!
//! Both plan first: every key is checked (HEAD) before anything is written. Identical objects
//! are skipped, a different object at a key is a conflict (exit 7) unless `--overwrite`. After
//! the transfers every object is HEADed again and its size and SHA-256 checked. Every S3 object
//! carries its SHA-256 as `x-amz-meta-sha256` and, for single-part uploads, as the S3 SHA-256
//! checksum.

pub mod abort;
pub mod anonymize;
pub mod dest;
pub mod parquet;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use kubestyle_manifest::atomic::{Clobber, write_atomic};
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::manifest::{
    manifest_path, media_type_for, open_volume, run_dir, validate_run_id,
};
use kubestyle_manifest::{
    Artifact, ArtifactKind, Location, Manifest, StageError, StageRun, sha256_file,
};
use serde_json::{Map, Value, json};

pub use dest::{Dest, Item, Remote, Transfer};

pub const STAGE: &str = kubestyle_manifest::command::upload::NAME;
const MIN_PART: u64 = 5 * 1024 * 1024;

/// The command line (defined with the other stages' in the contract crate, where the pipeline
/// builds it).
pub use kubestyle_manifest::command::upload::{Cli, Command, PublishArgs, PushArgs, TransferArgs};

/// The multipart sizes of `--multipart-threshold` and `--part-size`.
fn transfer_of(t: &TransferArgs) -> Result<Transfer, StageError> {
    let part_size = t.part_size.as_u64();
    if part_size < MIN_PART {
        return Err(StageError::Usage(format!(
            "--part-size must be at least 5MiB, got {}",
            t.part_size
        )));
    }
    Ok(Transfer {
        multipart_threshold: t.multipart_threshold.as_u64().max(1),
        part_size,
    })
}

/// What happened to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Uploaded,
    Unchanged,
    Replaced,
}

#[derive(Debug, Clone)]
pub struct Published {
    pub item: Item,
    pub uri: String,
    pub status: Status,
    pub etag: Option<String>,
}

#[derive(Debug)]
pub struct Report {
    pub published: Vec<Published>,
    pub receipt: Option<PathBuf>,
    /// The receipt of an earlier identical publish, when nothing had to be done.
    pub cached: Option<Manifest>,
}

impl Report {
    pub fn count(&self, s: Status) -> usize {
        self.published.iter().filter(|p| p.status == s).count()
    }
}

pub async fn run(cli: Cli) -> Result<Report, StageError> {
    match cli.command {
        Command::Publish(a) => publish(a).await,
        Command::Push(a) => push(a).await,
    }
}

pub async fn publish(args: PublishArgs) -> Result<Report, StageError> {
    let mut stage = StageRun::start(STAGE, env!("CARGO_PKG_VERSION"), "");
    let transfer = transfer_of(&args.transfer)?;
    args.to.parse::<Location>()?;
    let volume = open_volume(&args.volume)?;
    // `--anonymize` without a usable salt stops here, before anything is read.
    let mut anon = if args.anonymize {
        Some(anonymize::Anonymizer::from_env()?)
    } else {
        None
    };

    // Read and check everything local first.
    let mut run_id: Option<String> = None;
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut inputs = Vec::new();
    // The manifests whose outputs are published: their outputs are verified once it is known
    // that the stage runs (a cached receipt verifies the same files).
    let mut with_outputs_read: Vec<(PathBuf, Manifest)> = Vec::new();
    let all = args
        .manifests
        .iter()
        .map(|p| (p, true))
        .chain(args.records.iter().map(|p| (p, false)));
    let mut read: Vec<(&PathBuf, bool, Manifest)> = Vec::new();
    for (mpath, with_outputs) in all {
        read.push((mpath, with_outputs, Manifest::read(mpath, &volume)?));
    }
    // What names an input, hidden in everything published (see `anonymize.rs`).
    if let Some(a) = anon.as_mut() {
        for (_, _, m) in &read {
            hide_inputs(a, m);
        }
        a.seal();
    }
    for (mpath, with_outputs, m) in read {
        match &run_id {
            None => run_id = Some(m.run_id.clone()),
            Some(r) if *r != m.run_id => {
                return Err(StageError::InputInvalid(format!(
                    "{} belongs to run {:?}, the other manifests to {r:?}",
                    mpath.display(),
                    m.run_id
                )));
            }
            Some(_) => {}
        }
        let outputs: &[Artifact] = if with_outputs { &m.outputs } else { &[] };
        for a in outputs {
            let key = kubestyle_manifest::manifest::published_key(&m.run_id, &a.path);
            add_item(
                &mut items,
                Item {
                    key: match &anon {
                        Some(an) => an.scrub(key),
                        None => key.to_string(),
                    },
                    local: a.abs_path(&volume),
                    sha256: a.sha256.clone(),
                    bytes: a.bytes,
                    media_type: a.media_type.clone(),
                },
            )?;
        }
        let rel = relative_to(&volume, mpath)?;
        let key = format!("manifests/{}", file_name_of(&rel));
        let (item, art) = volume_item(&volume, &rel, key.clone(), ArtifactKind::Other)?;
        match &anon {
            Some(an) => add_item(
                &mut items,
                anonymized_copy(an, &volume, &m.run_id, &rel, key, ArtifactKind::Other)?,
            )?,
            None => add_item(&mut items, item)?,
        }
        inputs.push(art);
        if with_outputs {
            with_outputs_read.push((mpath.clone(), m));
        }
    }
    let has_styled = |m: &Manifest| m.outputs.iter().any(|a| a.kind == ArtifactKind::Styled);
    let run_id = run_id.ok_or_else(|| StageError::Usage("no manifests given".into()))?;
    validate_run_id(&run_id)?;
    stage.run_id = run_id.clone();
    let destination = args.to.parse::<Location>()?.join(&format!("{run_id}/"));

    for log in &args.logs {
        let rel = relative_to(&volume, log)?;
        let key = format!("logs/{}", file_name_of(&rel));
        let item = match &anon {
            Some(an) => anonymized_copy(an, &volume, &run_id, &rel, key, ArtifactKind::Log)?,
            None => volume_item(&volume, &rel, key, ArtifactKind::Log)?.0,
        };
        add_item(&mut items, item)?;
    }

    // The step cache: the same files to the same destination as the receipt records.
    // The endpoint (credentials stripped) and addressing are part of where the files go: the
    // same `--to` on another S3 server is another destination.
    // The results table, contact sheet and SHA256SUMS are functions of these items (and of this
    // build, which the key includes): they are made only when the stage runs, not to find out
    // whether it must (a contact sheet decodes images).
    let with_report = !args.no_report && with_outputs_read.iter().any(|(_, m)| has_styled(m));
    let params = json!({
        "to": args.to,
        "destination": destination.to_string(),
        "overwrite": args.transfer.overwrite,
        "endpoint": destination_endpoint(&args.to, &args.s3),
        "report": with_report,
        // Which salt (a keyed hash of a fixed text, never the salt): another salt publishes
        // other IDs.
        "anonymize": anon.as_ref().map(anonymize::Anonymizer::fingerprint),
    });
    let item_keys: Vec<String> = items
        .values()
        .map(|i| format!("{}@{}", i.key, i.sha256))
        .collect();
    let receipt_path = args
        .receipt
        .clone()
        .unwrap_or_else(|| manifest_path(&volume, &run_id, STAGE));
    let key = stage.key(&params, &item_keys);
    if !args.force
        && let Some(receipt) = stage.reusable(&receipt_path, &volume, &key)
    {
        return Ok(Report {
            published: vec![],
            receipt: Some(receipt_path),
            cached: Some(receipt),
        });
    }

    // Every output verified before anything is published, on every core; the first failure in
    // manifest order is reported.
    for (mpath, m) in &with_outputs_read {
        kubestyle_manifest::manifest::verify_all(&m.outputs, &volume).map_err(|e| match e {
            StageError::Integrity(msg) => {
                StageError::Integrity(format!("{}: {msg}", mpath.display()))
            }
            other => other,
        })?;
    }
    let styled_manifests: Vec<Manifest> = with_outputs_read
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| has_styled(m))
        .collect();

    // Results table and contact sheet, beside the manifests on the volume.
    if with_report {
        let rows = report::rows(&styled_manifests, |k| destination.join(k).to_string());
        // The sheet reads the inputs under their real paths; it shows IDs when anonymized.
        let sheet = match &anon {
            Some(an) => report::contact_sheet_named(&volume, &rows, &|input| an.scrub(input))?,
            None => report::contact_sheet(&volume, &rows)?,
        };
        let rows = match &anon {
            Some(an) => anonymized_rows(an, rows, |k| destination.join(k).to_string())?,
            None => rows,
        };
        let files: [(&str, Vec<u8>); 4] = [
            ("results.csv", report::to_csv(&rows)?),
            (
                "results.json",
                report::to_json(&run_id, &destination.to_string(), &rows),
            ),
            ("results.parquet", crate::parquet::to_parquet(&rows)?),
            ("contact-sheet.jpg", sheet),
        ];
        for (name, bytes) in files {
            if let Some(an) = &anon
                && name != "contact-sheet.jpg"
                && let Some(leak) = an.leak(&bytes)
            {
                return Err(leaked(name, leak));
            }
            let rel = format!("{}/{name}", run_dir(&run_id));
            write_atomic(volume.join(&rel), &bytes, Clobber::Replace)?;
            let kind = ArtifactKind::guess(name);
            add_item(&mut items, volume_item(&volume, &rel, name.into(), kind)?.0)?;
        }
        tracing::info!(
            "results: {} rows, contact sheet of {} inputs",
            rows.len(),
            rows.iter()
                .map(|r| r.input.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }

    // SHA256SUMS over everything published, written to the volume beside the manifests.
    let sums_rel = format!("{}/SHA256SUMS", run_dir(&run_id));
    let sums: String = items
        .values()
        .map(|i| format!("{}  {}\n", i.sha256, i.key))
        .collect();
    if let Some(an) = &anon
        && let Some(leak) = an.leak(sums.as_bytes())
    {
        return Err(leaked("SHA256SUMS", leak));
    }
    write_atomic(volume.join(&sums_rel), sums.as_bytes(), Clobber::Replace)?;
    let (sums_item, _) = volume_item(&volume, &sums_rel, "SHA256SUMS".into(), ArtifactKind::Other)?;
    add_item(&mut items, sums_item)?;

    let dest = Dest::open(&args.to, Some(&run_id), &args.s3).await?;
    let items: Vec<Item> = items.into_values().collect();
    let published = transfer_all(&dest, items, &args.transfer, transfer).await?;

    // Receipt manifest, last.
    let mut outputs = Vec::new();
    for p in &published {
        let rel = relative_to(&volume, &p.item.local)?;
        let mut attributes = Map::new();
        attributes.insert("uri".into(), Value::String(p.uri.clone()));
        attributes.insert("key".into(), Value::String(p.item.key.clone()));
        if let Some(e) = &p.etag {
            attributes.insert("etag".into(), Value::String(e.clone()));
        }
        attributes.insert(
            "status".into(),
            Value::String(
                match p.status {
                    Status::Uploaded => "uploaded",
                    Status::Unchanged => "unchanged",
                    Status::Replaced => "replaced",
                }
                .into(),
            ),
        );
        outputs.push(Artifact {
            name: p.item.key.clone(),
            kind: ArtifactKind::guess(&p.item.key),
            path: rel,
            sha256: p.item.sha256.clone(),
            bytes: p.item.bytes,
            media_type: p.item.media_type.clone(),
            source: None,
            attributes,
        });
    }
    let receipt = stage.finish(params, &item_keys, inputs, outputs);
    receipt.write(&receipt_path)?;
    let report = Report {
        published,
        receipt: Some(receipt_path),
        cached: None,
    };
    log_report(&report, &dest.uri(""));
    Ok(report)
}

pub async fn push(args: PushArgs) -> Result<Report, StageError> {
    let transfer = transfer_of(&args.transfer)?;
    args.to.parse::<Location>()?;
    let mut items = BTreeMap::new();
    let mut missing = Vec::new();
    for p in &args.paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                let base = p
                    .canonicalize()
                    .ok()
                    .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                for rel in
                    kubestyle_manifest::files::walk_files(p).map_err(|e| StageError::io(p, e))?
                {
                    add_item(
                        &mut items,
                        local_item(&p.join(&rel), format!("{base}/{rel}"))?,
                    )?;
                }
            }
            Ok(_) => {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add_item(&mut items, local_item(p, name)?)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(format!("{} does not exist", p.display()));
            }
            Err(e) => return Err(StageError::io(p, e)),
        }
    }
    if !missing.is_empty() {
        return Err(StageError::InputMissing(missing));
    }
    let dest = Dest::open(&args.to, None, &args.s3).await?;
    let published = transfer_all(
        &dest,
        items.into_values().collect(),
        &args.transfer,
        transfer,
    )
    .await?;
    let report = Report {
        published,
        receipt: None,
        cached: None,
    };
    log_report(&report, &dest.uri(""));
    Ok(report)
}

/// The S3 server a destination is on, for the step cache: the endpoint URL with any user-info
/// and query stripped (the SDK default, AWS, when none is given) and the addressing style.
/// `null` for a local destination.
fn destination_endpoint(to: &str, s3: &kubestyle_s3::S3Args) -> Value {
    if !matches!(to.parse::<Location>(), Ok(Location::S3 { .. })) {
        return Value::Null;
    }
    json!({
        "url": s3.endpoint_url.as_deref().map(kubestyle_s3::redact_endpoint),
        "region": s3.region,
        "path_style": s3.path_style(),
    })
}

fn log_report(r: &Report, dest: &str) {
    tracing::info!(
        "{} objects at {dest}: {} uploaded, {} unchanged, {} replaced",
        r.published.len(),
        r.count(Status::Uploaded),
        r.count(Status::Unchanged),
        r.count(Status::Replaced)
    );
}

fn local_item(path: &Path, key: String) -> Result<Item, StageError> {
    validate_relative_path(&key).map_err(StageError::InputInvalid)?;
    let (sha256, bytes) = sha256_file(path)?;
    Ok(Item {
        media_type: media_type_for(&key),
        key,
        local: path.to_path_buf(),
        sha256,
        bytes,
    })
}

/// The file at `<volume>/<rel>`, hashed, to be published as `key`.
fn volume_item(
    volume: &Path,
    rel: &str,
    key: String,
    kind: ArtifactKind,
) -> Result<(Item, Artifact), StageError> {
    let art = Artifact::from_file(volume, rel, key.clone(), kind)?;
    let media_type = match kind {
        ArtifactKind::Log => "text/plain".to_string(),
        _ if key == "SHA256SUMS" => "text/plain".to_string(),
        _ => art.media_type.clone(),
    };
    let item = Item {
        key,
        local: volume.join(rel),
        sha256: art.sha256.clone(),
        bytes: art.bytes,
        media_type,
    };
    Ok((item, art))
}

fn file_name_of(rel: &str) -> String {
    Path::new(rel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| rel.to_string())
}

/// Register with `a` every string of `m` that names an input: each input's ID comes from its
/// source (an `s3://` URI, or its path as given).
fn hide_inputs(a: &mut anonymize::Anonymizer, m: &Manifest) {
    use kubestyle_manifest::command::{download, stylize};
    // The sources and lists a stage was given (`download`'s prefixes, `package-model`'s
    // `--source`s).
    for k in ["sources", "source", "lists"] {
        if let Some(Value::Array(v)) = m.params.get(k) {
            for s in v.iter().filter_map(Value::as_str) {
                a.hide_as_id(s);
            }
        }
    }
    for o in &m.outputs {
        if m.stage == download::NAME {
            let source = o.source.clone().unwrap_or_else(|| o.path.clone());
            let id = a.id(&source);
            a.hide(&source, id.clone());
            a.hide(&o.path, id.clone());
            a.hide(&o.name, id.clone());
            // Its name below the run (`inputs/<where>/<path>`), and below `inputs/`: what
            // the styled outputs' and the thumbnails' paths are made of.
            let key = kubestyle_manifest::manifest::published_key(&m.run_id, &o.path);
            a.hide(key, id.clone());
            if let Some((_, rel)) = key.split_once('/') {
                a.hide(rel, id);
            }
        } else if m.stage == stylize::NAME && o.kind == ArtifactKind::Styled {
            let attr = |k: &str| o.attributes.get(k).and_then(Value::as_str).unwrap_or("");
            let input = attr("input");
            let source = Some(attr("input_source"))
                .filter(|s| !s.is_empty())
                .unwrap_or(input);
            let id = a.id(source);
            a.hide(source, id.clone());
            a.hide(input, id.clone());
            // The output's key (inside its path and its thumbnail's) names the input:
            // `styled/<package>/<style>/<id>.<ext>` instead.
            let key = kubestyle_manifest::manifest::published_key(&m.run_id, &o.path);
            let ext = o.path.rsplit_once('.').map(|(_, e)| e).unwrap_or("bin");
            a.hide(
                key,
                format!("styled/{}/{}/{id}.{ext}", attr("package"), attr("style")),
            );
        }
    }
}

/// The anonymized copy of the text file `rel` (a manifest or a log), written under
/// `runs/<run>/anonymized/`, as the item published under `key`. Refused if it still names an
/// input.
fn anonymized_copy(
    a: &anonymize::Anonymizer,
    volume: &Path,
    run_id: &str,
    rel: &str,
    key: String,
    kind: ArtifactKind,
) -> Result<Item, StageError> {
    let path = volume.join(rel);
    let text = std::fs::read_to_string(&path).map_err(|e| StageError::read(&path, e))?;
    let scrubbed = a.scrub(&text);
    if let Some(leak) = a.leak(scrubbed.as_bytes()) {
        return Err(leaked(&key, leak));
    }
    let copy = format!("{}/anonymized/{key}", run_dir(run_id));
    write_atomic(volume.join(&copy), scrubbed.as_bytes(), Clobber::Replace)?;
    Ok(volume_item(volume, &copy, key, kind)?.0)
}

/// The results rows with every input named by its ID (`uri_of` makes the published URI of
/// an output's key).
fn anonymized_rows(
    a: &anonymize::Anonymizer,
    rows: Vec<report::Row>,
    uri_of: impl Fn(&str) -> String,
) -> Result<Vec<report::Row>, StageError> {
    rows.into_iter()
        .map(|mut r| {
            for f in [
                &mut r.input_source,
                &mut r.input,
                &mut r.package,
                &mut r.style,
                &mut r.output_key,
                &mut r.backend,
                &mut r.device,
            ] {
                *f = a.scrub(f);
            }
            r.output_uri = uri_of(&r.output_key);
            for f in [&r.input_source, &r.input, &r.output_key, &r.output_uri] {
                if let Some(leak) = a.leak(f.as_bytes()) {
                    return Err(leaked("results", leak));
                }
            }
            Ok(r)
        })
        .collect()
}

/// A published file would still name an input: refused, never published. The message says
/// which file, not what it would have named.
fn leaked(file: &str, what: &str) -> StageError {
    StageError::Internal(format!(
        "--anonymize: {file} would still name an input ({} characters hidden in it); nothing \
         was published",
        what.len()
    ))
}

fn add_item(items: &mut BTreeMap<String, Item>, item: Item) -> Result<(), StageError> {
    if let Some(prev) = items.get(&item.key) {
        if prev.sha256 != item.sha256 {
            return Err(StageError::InputInvalid(format!(
                "two different files would be published as {}: {} and {}",
                item.key,
                prev.local.display(),
                item.local.display()
            )));
        }
        return Ok(());
    }
    items.insert(item.key.clone(), item);
    Ok(())
}

fn relative_to(volume: &Path, p: &Path) -> Result<String, StageError> {
    let abs = p.canonicalize().map_err(|e| StageError::read(p, e))?;
    let rel = abs.strip_prefix(volume).map_err(|_| {
        StageError::InputInvalid(format!(
            "{} is outside the volume {}",
            p.display(),
            volume.display()
        ))
    })?;
    Ok(rel.to_string_lossy().into_owned())
}

/// Plan (HEAD every key), refuse conflicts, transfer, verify.
async fn transfer_all(
    dest: &Dest,
    items: Vec<Item>,
    args: &TransferArgs,
    t: Transfer,
) -> Result<Vec<Published>, StageError> {
    let jobs = args.jobs as usize;
    // What is there already: one listing where the destination has one (a key it does not list
    // is new, no HEAD needed), else a lookup per key.
    let listed = dest.listing().await?;
    let listed = &listed;
    let heads: Vec<(Item, Option<Remote>)> =
        futures::stream::iter(items.into_iter().map(|i| async move {
            if listed.as_ref().is_some_and(|keys| !keys.contains(&i.key)) {
                return Ok((i, None));
            }
            let r = dest.head(&i.key).await?;
            Ok::<_, StageError>((i, r))
        }))
        .buffered(jobs)
        .try_collect()
        .await?;
    let mut conflicts = Vec::new();
    let mut plan = Vec::new();
    for (item, remote) in heads {
        // An unchanged object is verified by this lookup when it shows what the check after
        // the transfers would look at (the server's own checksum first).
        let mut seen: Option<String> = None;
        let status = match remote {
            None => Status::Uploaded,
            Some(r) if r.size == item.bytes && r.sha256.as_ref() == Some(&item.sha256) => {
                if r.checksum_sha256.as_ref().or(r.sha256.as_ref()) == Some(&item.sha256) {
                    seen = Some(r.etag.unwrap_or_default());
                }
                Status::Unchanged
            }
            Some(r) => {
                if !args.overwrite {
                    conflicts.push(format!(
                        "{} already exists with different content ({} bytes, sha256 {})",
                        dest.uri(&item.key),
                        r.size,
                        r.sha256
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "unknown".into())
                    ));
                }
                Status::Replaced
            }
        };
        plan.push((item, status, seen));
    }
    if !conflicts.is_empty() {
        conflicts.push("nothing was uploaded; use --overwrite to replace them".into());
        return Err(StageError::Conflict(conflicts));
    }
    // Once a transfer fails no new one starts, but those in flight are never dropped half-way:
    // each finishes or fails by itself (a multipart upload aborting itself), so none is left
    // orphaned in the bucket.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let failed = &failed;
    let results: Vec<Result<Option<(Published, bool)>, StageError>> =
        futures::stream::iter(plan.into_iter().map(|(item, status, seen)| async move {
            if failed.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(None);
            }
            let r = transfer_one(dest, item, status, seen, t).await;
            if r.is_err() {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            r.map(Some)
        }))
        .buffered(jobs)
        .collect()
        .await;
    let mut published = Vec::with_capacity(results.len());
    for r in results {
        if let Some(p) = r? {
            published.push(p);
        }
    }
    // Verify what the destination now holds: the size, and the SHA-256 the server reports as
    // its own full-object checksum (our `x-amz-meta-sha256` only where it reports none: a
    // multipart upload, whose composite checksum `put` already compared, or a server without
    // checksums). A PUT whose response already confirmed our full-object SHA-256 (the server
    // checked the body against it) is not looked up again.
    let verified: Vec<Published> =
        futures::stream::iter(published.into_iter().map(|(mut p, confirmed)| async move {
            if confirmed {
                return Ok(p);
            }
            let r = dest.head(&p.item.key).await?.ok_or_else(|| {
                StageError::Integrity(format!("{} is missing right after upload", p.uri))
            })?;
            let sha = r.checksum_sha256.as_ref().or(r.sha256.as_ref());
            if r.size != p.item.bytes || sha != Some(&p.item.sha256) {
                return Err(StageError::Integrity(format!(
                    "{}: destination has {} bytes / sha256 {:?}, expected {} bytes / {}",
                    p.uri, r.size, sha, p.item.bytes, p.item.sha256
                )));
            }
            if p.etag.is_none() {
                p.etag = r.etag;
            }
            Ok::<_, StageError>(p)
        }))
        .buffered(jobs)
        .try_collect()
        .await?;
    Ok(verified)
}

/// Send one planned item (or leave it, when unchanged). Also says whether what the destination
/// holds is already verified: an unchanged item by the lookup that found it unchanged (`seen`,
/// with its ETag), a sent one by a PUT response confirming its SHA-256.
async fn transfer_one(
    dest: &Dest,
    item: Item,
    status: Status,
    seen: Option<String>,
    t: Transfer,
) -> Result<(Published, bool), StageError> {
    let uri = dest.uri(&item.key);
    let (etag, confirmed) = if status == Status::Unchanged {
        tracing::info!("unchanged {uri}");
        match seen {
            Some(etag) => ((!etag.is_empty()).then_some(etag), true),
            None => (None, false),
        }
    } else {
        let put = dest.put(&item, t).await?;
        tracing::info!(
            "{} {uri} ({} bytes)",
            if status == Status::Replaced {
                "replaced"
            } else {
                "uploaded"
            },
            item.bytes
        );
        (put.etag, put.confirmed)
    };
    Ok((
        Published {
            item,
            uri,
            status,
            etag,
        },
        confirmed,
    ))
}
