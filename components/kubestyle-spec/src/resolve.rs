//! A loaded spec: its paths and URIs resolved against the spec file's directory.

use std::path::{Path, PathBuf};

use kubestyle_manifest::Location;
use kubestyle_manifest::manifest::package_name;

use crate::Spec;

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
