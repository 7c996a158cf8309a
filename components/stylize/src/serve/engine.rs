//! One request's image through the batch stage's own code: the same decoding (from a temp file,
//! so that the bytes go through exactly the decoder the batch stage reads files with), the same
//! forward pass and tiling ([`crate::stylize_planar`]) and the same quantising and encoder, so
//! the output is byte-identical to the file the batch stage writes.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::image_io;
use crate::inputs::Loaded;
use crate::style::Style;
use crate::{Args, Compute, LANE_MAX_PIXELS, stylize_planar};

use super::error::ServeError;

/// A request's image, written to a temp file and its header read (within the pixel limit).
pub(crate) struct Prepared {
    file: tempfile::NamedTempFile,
    /// Pixels after `--max-size` (what the forward pass sees).
    pub(crate) pixels: u64,
}

/// The encoded output.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) bytes: Vec<u8>,
    pub(crate) content_type: &'static str,
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) forward_ms: f64,
}

/// The decoder's message without the temp file's name.
fn scrub(m: String, path: &Path) -> String {
    m.replace(&path.display().to_string(), "the image")
}

fn image_error(e: image_io::ImageIoError, path: &Path) -> ServeError {
    match e {
        image_io::ImageIoError::Invalid(m) => ServeError::BadImage(scrub(m, path)),
        other => ServeError::Internal(scrub(other.to_string(), path)),
    }
}

/// Write `body` to a temp file in `scratch` and read its header: refuses what is not an image
/// and images over `batch.max_pixels` before anything is decoded.
pub(crate) fn prepare(body: &[u8], scratch: &Path, batch: &Args) -> Result<Prepared, ServeError> {
    if body.is_empty() {
        return Err(ServeError::BadRequest("empty image".into()));
    }
    let mut file = tempfile::Builder::new()
        .prefix(".kubestyle-serve-")
        .tempfile_in(scratch)
        .map_err(|e| ServeError::Internal(format!("a temp file in {}: {e}", scratch.display())))?;
    file.write_all(body)
        .map_err(|e| ServeError::Internal(format!("writing a temp file: {e}")))?;
    let path = file.path().to_path_buf();
    // The header only (no limit here, to tell "too large" from "not an image").
    let (_, (w, h)) = image_io::probe(&path, u64::MAX).map_err(|e| image_error(e, &path))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > batch.max_pixels {
        return Err(ServeError::TooLarge(format!(
            "{w}x{h} = {pixels} pixels is above the limit of {} (--max-pixels)",
            batch.max_pixels
        )));
    }
    let side = image_io::output_side((w, h), batch.max_size);
    let scale = f64::from(side) / f64::from(w.max(h).max(1));
    let after = (f64::from(w) * f64::from(h) * scale * scale).round() as u64;
    Ok(Prepared {
        file,
        pixels: after,
    })
}

/// Whether an image of `pixels` runs in a lane of its own on one core (the batch stage's rule,
/// `stream.rs`), or alone on every core.
pub(crate) fn in_lane(compute: &Compute, batch: &Args, lanes: usize, pixels: u64) -> bool {
    compute.fused && lanes > 1 && pixels <= LANE_MAX_PIXELS.min(batch.tile_above)
}

/// Decode, stylise and encode a prepared image, as the batch stage does for one output.
pub(crate) fn run(
    prepared: Prepared,
    pkg: &Loaded,
    style: &Style,
    compute: &Compute,
    batch: &Args,
) -> Result<Output, ServeError> {
    let path = prepared.file.path().to_path_buf();
    let planar = image_io::load(&path, batch.max_pixels, batch.max_size)
        .map_err(|e| image_error(e, &path))?;
    drop(prepared);
    let (format, _) = image_io::choose(batch.format, planar.format, "");
    if let Some(limit) = image_io::max_side(format)
        .filter(|&l| planar.width.max(planar.height) as u64 > u64::from(l))
    {
        return Err(ServeError::Unprocessable(format!(
            "the output would be {} px on its longest side, more than {format:?} can store \
             ({limit}); ask for PNG or a smaller size",
            planar.width.max(planar.height)
        )));
    }
    let t0 = Instant::now();
    let (mut rgb, _) = stylize_planar(
        &pkg.net,
        pkg.fused.as_ref(),
        &planar,
        &style.weights,
        &compute.device,
        batch,
    )
    .map_err(ServeError::from_stage)?;
    let forward_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // The style's controls (`7~preserve-colour~strength=0.6`), as the batch stage applies them.
    if !style.is_plain() {
        crate::colour::apply(&mut rgb, &planar.rgb, style.preserve_colour, style.strength);
    }
    let img = image_io::to_image(
        planar.width,
        planar.height,
        &rgb,
        planar.alpha.as_deref(),
        format,
    );
    drop(rgb);
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|e| ServeError::Internal(format!("encoding the output: {e}")))?;
    Ok(Output {
        bytes: bytes.into_inner(),
        content_type: format.to_mime_type(),
        width: planar.width,
        height: planar.height,
        forward_ms,
    })
}
