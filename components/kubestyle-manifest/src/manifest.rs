//! The manifest every stage writes last, as its commit marker: `kubestyle.manifest/v1`.
//!
//! Stages find each other's manifests at `<volume>/runs/<run_id>/<stage>.manifest.json`
//! ([`manifest_path`]). Reading is strict ([`Manifest::read`]): a manifest that could make a
//! stage touch files outside the volume, or that is ambiguous, is refused.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic::Clobber;
use crate::digest::{Sha256Hex, sha256_file};
use crate::error::StageError;
use crate::location::validate_relative_path;

/// The schema identifier this build reads and writes.
pub const SCHEMA_ID: &str = "kubestyle.manifest/v1";

/// One stage's record of what it read and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kubestyle manifest v1")]
pub struct Manifest {
    /// Always `kubestyle.manifest/v1`.
    #[schemars(regex(pattern = r"^kubestyle\.manifest/v1$"))]
    pub schema: String,
    /// Stage name: `download`, `package-model`, `stylize`, `upload`.
    pub stage: String,
    /// Run identifier shared by all stages of one pipeline run (DNS-label safe).
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"))]
    pub run_id: String,
    pub component: Component,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The stage's effective parameters (never credentials).
    pub params: Map<String, Value>,
    /// SHA-256 over stage, component version, parameters and input digests.
    pub cache_key: Sha256Hex,
    pub inputs: Vec<Artifact>,
    pub outputs: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Image,
    Model,
    Package,
    Styled,
    Table,
    Log,
    Other,
}

impl ArtifactKind {
    /// A kind guessed from the file name, for inputs whose role is not known otherwise.
    pub fn guess(path: &str) -> ArtifactKind {
        let ext = path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "png" | "jpg" | "jpeg" | "webp" | "bmp" | "gif" | "tif" | "tiff" | "tga" | "pnm"
            | "ppm" | "pgm" => ArtifactKind::Image,
            "pth" | "pt" | "onnx" | "safetensors" | "bpk" | "model" => ArtifactKind::Model,
            "csv" | "tsv" | "parquet" => ArtifactKind::Table,
            "log" => ArtifactKind::Log,
            _ => ArtifactKind::Other,
        }
    }
}

/// A file on the volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Unique within its list.
    pub name: String,
    pub kind: ArtifactKind,
    /// Relative to the volume root, `/`-separated, no `..`.
    pub path: String,
    pub sha256: Sha256Hex,
    pub bytes: u64,
    pub media_type: String,
    /// Where it came from (an `s3://` URI or a local path), when it was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// Media type from a file name (`application/octet-stream` when unknown).
pub fn media_type_for(path: &str) -> String {
    if path.ends_with(".json") {
        return "application/json".into();
    }
    // Not in mime_guess's table; the type Apache Parquet registered with IANA (2024).
    if path.ends_with(".parquet") {
        return "application/vnd.apache.parquet".into();
    }
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

impl Artifact {
    /// Describe the file at `<root>/<rel>`, hashing it.
    pub fn from_file(
        root: &Path,
        rel: &str,
        name: impl Into<String>,
        kind: ArtifactKind,
    ) -> Result<Artifact, StageError> {
        validate_relative_path(rel).map_err(StageError::InputInvalid)?;
        let (sha256, bytes) = sha256_file(root.join(rel))?;
        Ok(Artifact {
            name: name.into(),
            kind,
            path: rel.to_string(),
            sha256,
            bytes,
            media_type: media_type_for(rel),
            source: None,
            attributes: Map::new(),
        })
    }

    pub fn abs_path(&self, root: &Path) -> PathBuf {
        root.join(&self.path)
    }

    /// Check the file still has the recorded size and digest.
    pub fn verify(&self, root: &Path) -> Result<(), StageError> {
        let p = self.abs_path(root);
        let meta = std::fs::metadata(&p).map_err(|e| StageError::read(&p, e))?;
        if meta.len() != self.bytes {
            return Err(StageError::Integrity(format!(
                "{}: {} bytes on disk, manifest says {}",
                self.path,
                meta.len(),
                self.bytes
            )));
        }
        let (d, _) = sha256_file(&p)?;
        if d != self.sha256 {
            return Err(StageError::Integrity(format!(
                "{}: sha256 {} on disk, manifest says {}",
                self.path, d, self.sha256
            )));
        }
        Ok(())
    }
}

/// The volume root, canonicalised. It must already exist (in a cluster it is a mounted volume:
/// creating it would hide a mis-mount); otherwise a usage error. Logs what the stage runs as
/// ([`crate::runs_as::RunsAs`]).
pub fn open_volume(v: &Path) -> Result<PathBuf, StageError> {
    let meta = std::fs::metadata(v).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            StageError::Usage(format!("volume {} does not exist", v.display()))
        }
        _ => StageError::io(v, e),
    })?;
    if !meta.is_dir() {
        return Err(StageError::Usage(format!(
            "volume {} is not a directory",
            v.display()
        )));
    }
    let volume = v.canonicalize().map_err(|e| StageError::io(v, e))?;
    // What the stage runs as: in a pod, the evidence of its securityContext and Secret.
    tracing::info!("{}", crate::runs_as::RunsAs::probe(&volume));
    Ok(volume)
}

pub use crate::command::naming::{manifest_path, run_data_dir, run_dir};

/// The key below a run's published prefix of a file at volume path `path`: the path within
/// the run's directory (`runs/<run>/styled/x.png` → `styled/x.png`), or the path itself for
/// files elsewhere on the volume.
pub fn published_key<'a>(run_id: &str, path: &'a str) -> &'a str {
    path.strip_prefix(&run_dir(run_id))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(path)
}

/// The outputs of kind `kind` of `stage`'s manifest for this run, each verified against the
/// volume. A missing manifest is a usage error naming `instead` (the flag that would have
/// named the inputs directly).
pub fn previous_outputs(
    volume: &Path,
    run_id: &str,
    stage: &str,
    kind: ArtifactKind,
    instead: &str,
) -> Result<Vec<Artifact>, StageError> {
    let mpath = manifest_path(volume, run_id, stage);
    previous_outputs_at(&mpath, volume, kind).map_err(|e| match e {
        StageError::InputMissing(_) if !mpath.exists() => StageError::Usage(format!(
            "no {instead} given and no {stage} manifest at {}",
            mpath.display()
        )),
        other => other,
    })
}

/// Like [`previous_outputs`], for a manifest at an explicit path.
pub fn previous_outputs_at(
    mpath: &Path,
    volume: &Path,
    kind: ArtifactKind,
) -> Result<Vec<Artifact>, StageError> {
    let m = Manifest::read(mpath, volume)?;
    let out: Vec<Artifact> = m.outputs.into_iter().filter(|a| a.kind == kind).collect();
    verify_all(&out, volume)?;
    Ok(out)
}

/// [`Artifact::verify`] every artifact, on every core (a cached stage re-hashes 20,000 outputs);
/// the first failure in their order is reported.
pub fn verify_all(artifacts: &[Artifact], volume: &Path) -> Result<(), StageError> {
    use rayon::prelude::*;
    match artifacts
        .par_iter()
        .find_map_first(|a| a.verify(volume).err())
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Run ids become parts of Kubernetes object names and S3 keys: 1-40 of `a-z0-9-`, starting and
/// ending with a letter or digit.
pub fn validate_run_id(id: &str) -> Result<(), StageError> {
    let ok = (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(StageError::Usage(format!(
            "invalid run id {id:?}: 1-40 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

/// A fresh run id: `run-<utc yyyymmdd-hhmmss>-<4 random hex>`.
pub fn new_run_id() -> String {
    format!(
        "run-{}-{:04x}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    )
}

/// What identifies the running code in cache keys: the first 16 hex digits of the SHA-256 of
/// this process's executable, computed once (~0.1 s for a 40 MB binary). The crate version
/// alone is not enough: a rebuilt binary with changed kernels must not reuse outputs the old
/// one made. Where the executable cannot be read, a random value: nothing is reused.
pub fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| crate::digest::sha256_file(&p).ok())
            .map(|(d, _)| d.as_str()[..16].to_string())
            .unwrap_or_else(|| format!("unreadable-{:016x}", rand::random::<u64>()))
    })
}

/// `<version>+<build id>`: the code part of every cache key.
pub fn code_version(version: &str) -> String {
    format!("{version}+{}", build_id())
}

/// SHA-256 over the canonical JSON of stage, component version, parameters and input digests.
pub fn cache_key(
    stage: &str,
    version: &str,
    params: &Map<String, Value>,
    inputs: &[String],
) -> Sha256Hex {
    let mut inputs = inputs.to_vec();
    inputs.sort();
    let v = serde_json::json!({
        "stage": stage,
        "version": version,
        "params": params,
        "inputs": inputs,
    });
    // serde_json's Map is ordered by key: this serialisation is canonical.
    crate::digest::sha256_bytes(v.to_string().as_bytes())
}

fn params_map(params: Value) -> Map<String, Value> {
    match params {
        Value::Object(m) => m,
        other => Map::from_iter([("value".to_string(), other)]),
    }
}

/// The package directory name for a weights file: its file stem, with anything but ASCII
/// letters, digits, `-`, `_` and `.` replaced by `_`. package-model writes
/// `<out>/<name>/`; stylize's `--style NAME/SPEC` and the pipeline refer to packages by it.
pub fn package_name(weights_file: &Path) -> String {
    let s = weights_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.is_empty() {
        "model".into()
    } else {
        clean.to_string()
    }
}

/// A stage run in progress: what every manifest records about the stage itself.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub stage: &'static str,
    pub version: &'static str,
    pub run_id: String,
    pub started_at: DateTime<Utc>,
}

impl StageRun {
    /// Start the clock for `stage` (version: the component's `CARGO_PKG_VERSION`).
    pub fn start(stage: &'static str, version: &'static str, run_id: impl Into<String>) -> Self {
        StageRun {
            stage,
            version,
            run_id: run_id.into(),
            started_at: Utc::now(),
        }
    }

    /// The cache key of this stage for these parameters and inputs (what [`StageRun::finish`]
    /// records). `input_keys` identify the inputs by content (digests), not by name alone.
    pub fn key(&self, params: &Value, input_keys: &[String]) -> Sha256Hex {
        cache_key(
            self.stage,
            &code_version(self.version),
            &params_map(params.clone()),
            input_keys,
        )
    }

    /// The step cache: the manifest already at `path` when it records `key` and every one of
    /// its outputs still verifies on the volume; then the stage has nothing to do. Anything
    /// else (no manifest, another key, an unreadable manifest, a changed or missing output)
    /// is logged and answers `None`: the stage runs.
    pub fn reusable(&self, path: &Path, volume: &Path, key: &Sha256Hex) -> Option<Manifest> {
        if !path.exists() {
            return None;
        }
        let m = match Manifest::read(path, volume) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("previous manifest unusable, running the stage: {e}");
                return None;
            }
        };
        if m.cache_key != *key || m.stage != self.stage || m.run_id != self.run_id {
            tracing::info!("inputs or parameters changed since the last run: running the stage");
            return None;
        }
        if let Err(e) = verify_all(&m.outputs, volume) {
            tracing::warn!("cached output no longer verifies, running the stage: {e}");
            return None;
        }
        // Outputs kept are not written again: remove what a killed writer of them left.
        for a in &m.outputs {
            crate::atomic::sweep_stale_temps_of(&a.abs_path(volume));
        }
        tracing::info!(
            "cached: {} has cache key {key} and its {} outputs verify; nothing to do",
            path.display(),
            m.outputs.len()
        );
        Some(m)
    }

    /// The finished manifest. `params` must be a JSON object (anything else is recorded under
    /// `"value"`); `input_keys` identify the inputs by content for the cache key.
    pub fn finish(
        &self,
        params: Value,
        input_keys: &[String],
        inputs: Vec<Artifact>,
        outputs: Vec<Artifact>,
    ) -> Manifest {
        let params = params_map(params);
        Manifest {
            schema: SCHEMA_ID.into(),
            stage: self.stage.into(),
            run_id: self.run_id.clone(),
            component: Component {
                name: self.stage.into(),
                version: self.version.into(),
            },
            started_at: self.started_at,
            finished_at: Utc::now(),
            cache_key: cache_key(self.stage, &code_version(self.version), &params, input_keys),
            params,
            inputs,
            outputs,
        }
    }
}

impl Manifest {
    /// Check everything [`Manifest::read`] checks that does not need the filesystem.
    pub fn validate(&self) -> Result<(), StageError> {
        let bad = |m: String| Err(StageError::InputInvalid(format!("manifest: {m}")));
        if self.schema != SCHEMA_ID {
            return bad(format!(
                "unsupported schema {:?} (this build reads {SCHEMA_ID})",
                self.schema
            ));
        }
        validate_run_id(&self.run_id).or_else(|e| bad(e.to_string()))?;
        if self.stage.is_empty() {
            return bad("empty stage".into());
        }
        for (list, arts) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            let mut seen = BTreeSet::new();
            for a in arts.iter() {
                if !seen.insert(a.name.as_str()) {
                    return bad(format!("duplicate artifact name {:?} in {list}", a.name));
                }
                if let Err(e) = validate_relative_path(&a.path) {
                    return bad(format!("{list} artifact {:?}: {e}", a.name));
                }
            }
        }
        Ok(())
    }

    /// Read and validate a manifest. `volume` is the root its paths are relative to: paths that
    /// resolve (through symlinks) outside it are refused.
    pub fn read(path: &Path, volume: &Path) -> Result<Manifest, StageError> {
        let text = std::fs::read_to_string(path).map_err(|e| StageError::read(path, e))?;
        Manifest::parse(&text, path, volume)
    }

    /// [`Manifest::read`] on a manifest's text: parse and validate it, refusing artifact paths
    /// that resolve outside `volume`. `path` names the manifest in messages.
    pub fn parse(text: &str, path: &Path, volume: &Path) -> Result<Manifest, StageError> {
        // Straight into the types (a manifest of 20,000 outputs is 30 MB: going through a
        // `Value` first doubled the time); anything that does not parse, or is of another
        // schema, goes the slow way below, which says what is wrong.
        let m = match serde_json::from_str::<Manifest>(text) {
            Ok(m) if m.schema == SCHEMA_ID => m,
            _ => Manifest::parse_value(text, path)?,
        };
        m.validate().map_err(|e| e.context(path.display()))?;
        // The volume root is resolved at the first artifact (a manifest without any reads no
        // volume).
        let mut inside: Option<Inside> = None;
        for a in m.inputs.iter().chain(&m.outputs) {
            let checked = match &mut inside {
                Some(i) => i.check(&a.path),
                None => Inside::new(volume).and_then(|i| inside.insert(i).check(&a.path)),
            };
            checked.map_err(|e| {
                StageError::InputInvalid(format!("{}: artifact {:?}: {e}", path.display(), a.name))
            })?;
        }
        Ok(m)
    }

    /// Parse through a `Value`, to tell invalid JSON, another schema and a malformed manifest
    /// apart.
    fn parse_value(text: &str, path: &Path) -> Result<Manifest, StageError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            StageError::InputInvalid(format!("{}: not valid JSON: {e}", path.display()))
        })?;
        match value.get("schema").and_then(Value::as_str) {
            Some(SCHEMA_ID) => {}
            Some(other) => {
                return Err(StageError::InputInvalid(format!(
                    "{}: unsupported manifest schema {other:?} (this build reads {SCHEMA_ID})",
                    path.display()
                )));
            }
            None => {
                return Err(StageError::InputInvalid(format!(
                    "{}: not a kubestyle manifest (no \"schema\" field)",
                    path.display()
                )));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| StageError::InputInvalid(format!("{}: {e}", path.display())))
    }

    /// Write atomically (replacing any previous manifest). Call this last.
    pub fn write(&self, path: &Path) -> Result<(), StageError> {
        self.validate().map_err(|e| {
            StageError::Internal(format!("refusing to write an invalid manifest: {e}"))
        })?;
        // The manifest is the stage's commit marker: every output committed with a grouped
        // commit is made durable under its name first (one fsync per directory).
        crate::atomic::sync_pending_dirs()?;
        // Serialised straight into the file (20,000 outputs make 30 MB of text).
        crate::atomic::write_atomic_with(path, Clobber::Replace, |f| {
            let tmp = f.temp_path().to_path_buf();
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer_pretty(&mut w, self)
                .map_err(|e| StageError::Internal(format!("serialising manifest: {e}")))?;
            w.write_all(b"\n")
                .and_then(|()| w.flush())
                .map_err(|e| StageError::io(&tmp, e))
        })
    }

    /// The JSON Schema of this manifest version (published as `schemas/manifest-v1.schema.json`).
    pub fn json_schema() -> Value {
        let schema = schemars::schema_for!(Manifest);
        serde_json::to_value(schema).unwrap_or(Value::Null)
    }
}

/// Checks that paths under a volume stay inside it: the deepest existing ancestor of
/// `root/rel`, resolved through symlinks, must lie inside the resolved root. The root is resolved
/// once, and each directory once (a manifest of 20,000 outputs in one directory resolves that
/// directory once and `lstat`s each file, instead of 40,000 `realpath`s).
struct Inside {
    root: PathBuf,
    dirs: std::collections::HashMap<PathBuf, Option<PathBuf>>,
}

impl Inside {
    fn new(root: &Path) -> Result<Inside, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("volume root {}: {e}", root.display()))?;
        Ok(Inside {
            root,
            dirs: Default::default(),
        })
    }

    fn check(&mut self, rel: &str) -> Result<(), String> {
        let p = self.root.join(rel);
        // A plain file (not a symlink) in a directory already resolved: the file's real path is
        // the directory's real path and its name.
        let plain = std::fs::symlink_metadata(&p).is_ok_and(|m| !m.file_type().is_symlink());
        if let (true, Some(parent), Some(name)) = (plain, p.parent(), p.file_name()) {
            let real_dir = match self.dirs.get(parent) {
                Some(d) => d.clone(),
                None => {
                    let d = parent.canonicalize().ok();
                    self.dirs.insert(parent.to_path_buf(), d.clone());
                    d
                }
            };
            if let Some(d) = real_dir {
                return self.verdict(rel, &d.join(name));
            }
        }
        let mut p = p;
        loop {
            match p.canonicalize() {
                Ok(real) => return self.verdict(rel, &real),
                Err(_) => {
                    if !p.pop() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn verdict(&self, rel: &str, real: &Path) -> Result<(), String> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(format!(
                "path {rel:?} resolves outside the volume (to {})",
                real.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitStatus;

    fn sample(root: &Path) -> Manifest {
        std::fs::create_dir_all(root.join("inputs")).unwrap();
        std::fs::write(root.join("inputs/a.png"), b"png-bytes").unwrap();
        let mut out =
            Artifact::from_file(root, "inputs/a.png", "a.png", ArtifactKind::Image).unwrap();
        out.source = Some("s3://bucket/a.png".into());
        let params: Map<String, Value> = serde_json::from_str(r#"{"jobs": 4}"#).unwrap();
        Manifest {
            schema: SCHEMA_ID.into(),
            stage: "download".into(),
            run_id: "run-1".into(),
            component: Component {
                name: "download".into(),
                version: "0.1.0".into(),
            },
            started_at: Utc::now(),
            finished_at: Utc::now(),
            cache_key: cache_key("download", "0.1.0", &params, &[]),
            params,
            inputs: vec![],
            outputs: vec![out],
        }
    }

    fn write_raw(root: &Path, v: &Value) -> PathBuf {
        let p = root.join("m.json");
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        p
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let m = sample(d.path());
        assert_eq!(m.outputs[0].media_type, "image/png");
        let p = manifest_path(d.path(), "run-1", "download");
        m.write(&p).unwrap();
        assert!(p.ends_with("runs/run-1/download.manifest.json"));
        assert_eq!(Manifest::read(&p, d.path()).unwrap(), m);
        m.outputs[0].verify(d.path()).unwrap();
    }

    fn refused(root: &Path, v: Value, needle: &str) {
        let p = write_raw(root, &v);
        let e = Manifest::read(&p, root).unwrap_err();
        assert_eq!(e.exit_status(), ExitStatus::InputInvalid, "{e}");
        assert!(
            e.to_string().contains(needle),
            "{e} should mention {needle}"
        );
    }

    #[test]
    fn refuses_bad_manifests() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let good = serde_json::to_value(sample(root)).unwrap();

        let mut v = good.clone();
        v["schema"] = "kubestyle.manifest/v2".into();
        refused(root, v, "unsupported manifest schema");

        let mut v = good.clone();
        v["outputs"][0]["path"] = "/etc/passwd".into();
        refused(root, v, "absolute");

        let mut v = good.clone();
        v["outputs"][0]["path"] = "inputs/../../x".into();
        refused(root, v, "'..'");

        let mut v = good.clone();
        v["outputs"][0]["sha256"] = "abc".into();
        refused(root, v, "SHA-256");

        let mut v = good.clone();
        let dup = v["outputs"][0].clone();
        v["outputs"].as_array_mut().unwrap().push(dup);
        refused(root, v, "duplicate artifact name");

        let mut v = good.clone();
        v["surprise"] = 1.into();
        refused(root, v, "unknown field");

        refused(
            root,
            serde_json::json!({"hello": 1}),
            "not a kubestyle manifest",
        );
        let p = root.join("garbage.json");
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(
            Manifest::read(&p, root).unwrap_err().exit_status(),
            ExitStatus::InputInvalid
        );
        assert_eq!(
            Manifest::read(&root.join("nope.json"), root)
                .unwrap_err()
                .exit_status(),
            ExitStatus::InputMissing
        );
    }

    #[test]
    fn refuses_symlink_escape() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = d.path();
        let good = serde_json::to_value(sample(root)).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        let mut v = good.clone();
        v["outputs"][0]["path"] = "escape/secret.png".into();
        refused(root, v, "outside the volume");
        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink(root.join("inputs"), root.join("alias")).unwrap();
        let mut v = good;
        v["outputs"][0]["path"] = "alias/a.png".into();
        let p = write_raw(root, &v);
        Manifest::read(&p, root).unwrap();
    }

    #[test]
    fn verify_detects_changes() {
        let d = tempfile::tempdir().unwrap();
        let m = sample(d.path());
        std::fs::write(d.path().join("inputs/a.png"), b"png-bytez").unwrap();
        assert_eq!(
            m.outputs[0].verify(d.path()).unwrap_err().exit_status(),
            ExitStatus::Integrity
        );
        std::fs::write(d.path().join("inputs/a.png"), b"short").unwrap();
        assert_eq!(
            m.outputs[0].verify(d.path()).unwrap_err().exit_status(),
            ExitStatus::Integrity
        );
    }

    #[test]
    fn cache_key_follows_content_not_order() {
        let p: Map<String, Value> = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let q: Map<String, Value> = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        let k1 = cache_key("s", "1", &p, &["x".into(), "y".into()]);
        assert_eq!(k1, cache_key("s", "1", &q, &["y".into(), "x".into()]));
        assert_ne!(k1, cache_key("s", "2", &p, &["x".into(), "y".into()]));
        assert_ne!(k1, cache_key("s", "1", &p, &["x".into(), "z".into()]));
    }

    #[test]
    fn run_ids() {
        validate_run_id(&new_run_id()).unwrap();
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(41)] {
            assert!(validate_run_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(ArtifactKind::guess("x/y.JPG"), ArtifactKind::Image);
        assert_eq!(ArtifactKind::guess("m.pth"), ArtifactKind::Model);
        assert_eq!(ArtifactKind::guess("list.csv"), ArtifactKind::Table);
        assert_eq!(ArtifactKind::guess("README"), ArtifactKind::Other);
    }

    /// The published schema must match the types. Regenerate with
    /// `KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p kubestyle-manifest`.
    #[test]
    fn published_schema_is_in_sync() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/manifest-v1.schema.json");
        let mut want = serde_json::to_string_pretty(&Manifest::json_schema()).unwrap();
        want.push('\n');
        if std::env::var_os("KUBESTYLE_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date: run KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p kubestyle-manifest",
            path.display()
        );
    }

    #[test]
    fn run_directories_and_published_keys() {
        assert_eq!(super::run_data_dir("r1", "styled"), "runs/r1/styled");
        assert_eq!(
            super::published_key("r1", "runs/r1/styled/a.png"),
            "styled/a.png"
        );
        assert_eq!(
            super::published_key("r1", "runs/r10/styled/a.png"),
            "runs/r10/styled/a.png"
        );
        assert_eq!(super::published_key("r1", "styled/a.png"), "styled/a.png");
        assert_eq!(super::published_key("r1", "runs/r1"), "runs/r1");
    }
}
