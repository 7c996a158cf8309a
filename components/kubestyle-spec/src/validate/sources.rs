//! `sources` (images, lists, include globs, models) and the styles each model runs with.

use std::collections::BTreeMap;

use super::{Diagnostics, check_uri};
use crate::{ArchitectureName, Sources, StyleSpec, model_package_name};

/// `sources`; `styles` is the top-level list, which models without their own use.
pub(super) fn validate(sources: &Sources, styles: &[String], d: &mut Diagnostics) {
    if sources.images.is_empty() && sources.lists.is_empty() {
        d.push("sources.images", "no images: give `images` or `lists`");
    }
    for (list, field) in [
        (&sources.images, "sources.images"),
        (&sources.lists, "sources.lists"),
    ] {
        for (i, u) in list.iter().enumerate() {
            if let Err(m) = check_uri(u) {
                d.push(format!("{field}[{i}]"), m);
            } else if field == "sources.images" && is_weights(u) {
                // A source of images never yields a model: a weights file is named where
                // models are (`sources.models`), with the styles it runs with.
                d.push(
                    format!("{field}[{i}]"),
                    format!("{u:?} is a weights file, not an image: models go in sources.models"),
                );
            }
        }
    }
    for (i, g) in sources.include.iter().enumerate() {
        if let Err(e) = globset::Glob::new(g) {
            d.push(format!("sources.include[{i}]"), format!("bad glob: {e}"));
        }
    }
    if sources.models.is_empty() {
        d.push("sources.models", "no models");
    }
    let mut names = BTreeMap::new();
    for (i, m) in sources.models.iter().enumerate() {
        let f = format!("sources.models[{i}]");
        if let Err(msg) = check_uri(&m.uri) {
            d.push(format!("{f}.uri"), msg);
            continue;
        }
        let lower = m.uri.to_ascii_lowercase();
        if !is_weights(&m.uri) {
            d.push(
                format!("{f}.uri"),
                format!(
                    "{:?} is not a weights file (.pth, .pt, .safetensors or .onnx)",
                    m.uri
                ),
            );
        }
        let pkg = model_package_name(&m.uri);
        if let Some(j) = names.insert(pkg.clone(), i) {
            d.push(
                format!("{f}.uri"),
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
            Some(s) => (s.as_slice(), format!("{f}.styles")),
            None => (styles, "styles".to_string()),
        };
        if m.styles.as_ref().is_some_and(Vec::is_empty) {
            d.push(sf.clone(), "empty list");
        }
        // Indexes are checked against the architecture's style count when it is known.
        let limit = arch.map(|a| (a.style_count(), pkg.as_str()));
        for (k, s) in styles.iter().enumerate() {
            if let Err(msg) = StyleSpec::parse_for(s, limit) {
                d.push(format!("{sf}[{k}]"), msg);
            }
        }
    }
}

/// A weights file by its name: `.pth`, `.pt`, `.onnx` or `.safetensors`.
fn is_weights(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    [".pth", ".pt", ".onnx", ".safetensors"]
        .iter()
        .any(|e| lower.ends_with(e))
}
