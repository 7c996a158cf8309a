//! `sources`: the images and the networks' weights.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ArchitectureName;

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
