//! The output writer: encoding, the atomic (grouped) write and hashing of each computed output
//! on a thread of its own, overlapping the next forward passes (see `stream.rs`), and what the
//! manifest records of each output.

use std::sync::mpsc::Receiver;

use serde::Serialize;

use super::*;

/// What the manifest records of each computed output (`attributes`), in this order.
#[derive(Debug, Serialize)]
pub(crate) struct OutputAttributes<'a> {
    /// The input's path under the volume (or as given, for `--image` outside a manifest).
    pub(crate) input: String,
    pub(crate) input_source: Option<String>,
    pub(crate) input_sha256: &'a Sha256Hex,
    pub(crate) package: &'a str,
    pub(crate) architecture: &'static str,
    pub(crate) style: &'a str,
    pub(crate) style_weights: &'a [(String, f32)],
    /// The style's controls (`colour.rs`).
    pub(crate) preserve_colour: bool,
    pub(crate) strength: f32,
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) backend: &'static str,
    pub(crate) device: &'a str,
    pub(crate) device_requested: &'a str,
    /// Why `--device auto` runs on the CPU; absent when nothing fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) device_fallback: Option<&'a str>,
    pub(crate) kernels: &'static str,
    pub(crate) forward_ms: f64,
    /// How many forward passes ran at once, one per core (small images run side by side, each
    /// on one core: `forward_ms` is then the time of one pass on one core, and the machine
    /// made `forward_lanes` outputs in that time).
    pub(crate) forward_lanes: usize,
    pub(crate) tiling: &'static str,
    pub(crate) tiles: usize,
    /// The step cache's key for this output.
    pub(crate) item_key: &'a Sha256Hex,
}

impl OutputAttributes<'_> {
    pub(crate) fn to_map(&self) -> Result<Map<String, Value>, StageError> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => Ok(m),
            other => Err(StageError::Internal(format!(
                "output attributes are not an object: {other:?}"
            ))),
        }
    }
}

/// A computed output on its way to the writer.
pub(crate) struct Pending {
    /// Its job's index in the plan.
    pub(crate) index: usize,
    /// The output quantised to 8 bits (its floats and the input are not held here).
    pub(crate) img: image::DynamicImage,
    pub(crate) format: image::ImageFormat,
    pub(crate) rel: String,
    pub(crate) attrs: Map<String, Value>,
    pub(crate) log: String,
    /// Where to write its thumbnail for upload's contact sheet (shown inputs' outputs only).
    pub(crate) thumbnail: Option<String>,
}

/// Remove what a killed writer left beside the thumbnails a kept output records (they are not
/// written again, so nothing else sweeps their directories).
pub(crate) fn sweep_thumbnail_temps(volume: &Path, a: &Artifact) {
    use kubestyle_manifest::command::sheet;
    for k in [sheet::THUMBNAIL, sheet::INPUT_THUMBNAIL] {
        if let Some(rel) = a
            .attributes
            .get(k)
            .and_then(|t| t.get("path"))
            .and_then(Value::as_str)
            && validate_relative_path(rel).is_ok()
        {
            kubestyle_manifest::atomic::sweep_stale_temps_of(&volume.join(rel));
        }
    }
}

/// Write the contact-sheet thumbnail of `img` to `rel` (under the volume): scaled to fit
/// [`sheet::THUMB`] as upload would scale the full image, as PNG. Returns what the output's
/// attributes record of it (`{"path", "sha256"}`).
pub(crate) fn write_thumbnail(
    volume: &Path,
    rel: &str,
    img: &image::DynamicImage,
) -> Result<Value, StageError> {
    use kubestyle_manifest::command::sheet;
    let t = image::DynamicImage::ImageRgb8(img.thumbnail(sheet::THUMB, sheet::THUMB).to_rgb8());
    let path = volume.join(rel);
    image_io::write_image(&path, &t, image::ImageFormat::Png)?;
    let (sha256, _) = kubestyle_manifest::sha256_file(&path)?;
    Ok(json!({ "path": rel, "sha256": sha256.as_str() }))
}

/// Encode, write (grouped commit: the directories are fsynced once, before the manifest) and
/// hash every output received, until the channel closes. Returns the artifacts with their job
/// indices; stops at the first error.
pub(crate) fn write_all(
    rx: Receiver<Pending>,
    volume: &Path,
) -> Result<Vec<(usize, Artifact)>, StageError> {
    let mut done = Vec::new();
    for p in rx {
        image_io::write_image(&volume.join(&p.rel), &p.img, p.format)?;
        tracing::info!("{}", p.log);
        let mut a = Artifact::from_file(volume, &p.rel, p.rel.clone(), ArtifactKind::Styled)?;
        a.attributes = p.attrs;
        if let Some(t) = &p.thumbnail {
            let v = write_thumbnail(volume, t, &p.img)?;
            a.attributes
                .insert(kubestyle_manifest::command::sheet::THUMBNAIL.into(), v);
        }
        done.push((p.index, a));
    }
    Ok(done)
}
