//! The spec's types, one file per section; the YAML format and the JSON Schema come from them.

mod kubernetes;
mod parallelism;
mod sources;
mod stylize;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use kubernetes::{ClaimSpec, GpuSpec, Kubernetes, Resources, Toleration};
/// The shared vocabulary (defined in `kubestyle-manifest`, which the stages use too): the style
/// grammar, the architecture names, stylize's backends and devices.
pub use kubestyle_manifest::vocab::{ArchitectureName, Backend, Device, StyleRef, StyleSpec};
pub use parallelism::Parallelism;
pub use sources::{ModelSource, Sources};
pub use stylize::{OutputFormat, StylizeOptions};

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
    /// (`style-07`) or a blend (`3:0.5,12:0.5`), each with optional controls after `~`:
    /// `7~preserve-colour`, `7~strength=0.6`. Default: `["0"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub styles: Vec<String>,
    /// Where results are published: `s3://bucket/prefix` or a local directory (relative to the
    /// spec file). The run goes to `<output>/<name>/`.
    pub output: String,
    #[serde(default)]
    pub stylize: StylizeOptions,
    #[serde(default)]
    pub parallelism: Parallelism,
    /// Publish keyed hashes (HMAC-SHA-256 with a secret salt) in place of the inputs'
    /// sources, paths and keys in every published table, manifest copy, log, SHA256SUMS and
    /// contact-sheet caption. The salt comes from `KUBESTYLE_ANONYMIZE_SALT` (at least 16
    /// bytes; in a cluster from the Secret `kubernetes.anonymize_secret`), never from the
    /// spec. The styled images themselves are still published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymize: bool,
    /// Publish the run's model packages too (`<output>/<name>/models/<package>/`: the
    /// weights and their card), so that a server can load them from there — `pipeline render
    /// --serve --packages-from output` — instead of from the run's volume. Not with
    /// `anonymize` (a card names its weights' source).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_models: bool,
    /// How the run is laid out as Kubernetes objects (`pipeline render` / `submit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
}
