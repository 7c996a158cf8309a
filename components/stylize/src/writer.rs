//! Computing the planned outputs and writing them: images decoded one at a time (once for all
//! their styles), forward passes on this thread, and encoding, the atomic write and hashing of
//! each output on a writer thread, overlapping the next forward pass.

use serde::Serialize;

use super::*;
use crate::inputs::{ImageInput, Loaded};
use crate::plan::Job;

/// What the manifest records of each computed output (`attributes`), in this order.
#[derive(Debug, Serialize)]
struct OutputAttributes<'a> {
    /// The input's path under the volume (or as given, for `--image` outside a manifest).
    input: String,
    input_source: Option<String>,
    input_sha256: &'a Sha256Hex,
    package: &'a str,
    architecture: &'static str,
    style: &'a str,
    style_weights: &'a [(String, f32)],
    width: usize,
    height: usize,
    backend: &'static str,
    device: &'a str,
    device_requested: &'a str,
    /// Why `--device auto` runs on the CPU; absent when nothing fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_fallback: Option<&'a str>,
    kernels: &'static str,
    forward_ms: f64,
    tiling: &'static str,
    tiles: usize,
    /// The step cache's key for this output.
    item_key: &'a Sha256Hex,
}

impl OutputAttributes<'_> {
    fn to_map(&self) -> Result<Map<String, Value>, StageError> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => Ok(m),
            other => Err(StageError::Internal(format!(
                "output attributes are not an object: {other:?}"
            ))),
        }
    }
}

/// Compute every job not reused (in image order, so each image is decoded once) and write it.
/// Returns the outputs in plan order, and how many were computed and reused.
pub(crate) fn produce(
    jobs: &[Job],
    packages: &[Loaded],
    images: &[ImageInput],
    compute: &Compute,
    args: &Args,
    volume: &Path,
) -> Result<(Vec<Artifact>, usize, usize), StageError> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs[i].img);
    // Forward passes on this thread; encoding, the atomic write and hashing of each output on a
    // writer thread, overlapping the next forward pass. The channel holds one finished image.
    struct Pending {
        index: usize,
        /// The output quantised to 8 bits (its floats and the input are not held here).
        img: image::DynamicImage,
        format: image::ImageFormat,
        rel: String,
        attrs: Map<String, Value>,
        log: String,
    }
    let mut slots: Vec<Option<Artifact>> = (0..jobs.len()).map(|_| None).collect();
    let (mut computed, mut reused) = (0usize, 0usize);
    let written: Vec<(usize, Artifact)> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(1);
        let vol = volume;
        let writer = scope.spawn(move || -> Result<Vec<(usize, Artifact)>, StageError> {
            let mut done = Vec::new();
            for p in rx {
                image_io::write_image(&vol.join(&p.rel), &p.img, p.format)?;
                tracing::info!("{}", p.log);
                let mut a = Artifact::from_file(vol, &p.rel, p.rel.clone(), ArtifactKind::Styled)?;
                a.attributes = p.attrs;
                done.push((p.index, a));
            }
            Ok(done)
        });
        let produced = (|| -> Result<(), StageError> {
            let mut current: Option<(usize, std::sync::Arc<image_io::Planar>)> = None;
            for &index in &order {
                let job = &jobs[index];
                if let Some(a) = &job.reuse {
                    tracing::info!("{} unchanged since the last run: reused", job.rel);
                    kubestyle_manifest::atomic::sweep_stale_temps_of(&a.abs_path(volume));
                    slots[index] = Some(a.clone());
                    reused += 1;
                    continue;
                }
                let img = &images[job.img];
                let planar = match &current {
                    Some((k, p)) if *k == job.img => p.clone(),
                    _ => {
                        // Let the previous image go before the next is decoded (its last
                        // reference then goes with its pending write).
                        drop(current.take());
                        let p = std::sync::Arc::new(image_io::load(
                            &img.abs,
                            args.max_pixels,
                            args.max_size,
                        )?);
                        current = Some((job.img, p.clone()));
                        p
                    }
                };
                let planar = &planar;
                let pkg = &packages[job.pkg];
                let (style, rel) = (&pkg.styles[job.style], &job.rel);
                let t0 = Instant::now();
                let (rgb, tiles) = stylize_planar(
                    &pkg.net,
                    pkg.fused.as_ref(),
                    planar,
                    &style.weights,
                    &compute.device,
                    args,
                )?;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let log = format!(
                    "{} × {} → {rel} ({}x{}, {ms:.0} ms{})",
                    img.abs.display(),
                    style.label,
                    planar.width,
                    planar.height,
                    match tiles {
                        TileRun::Whole => String::new(),
                        TileRun::Exact => ", exact tiling".into(),
                        TileRun::Approximate(n) => format!(", {n} tiles (approximate)"),
                    }
                );
                let attrs = OutputAttributes {
                    input: img
                        .artifact
                        .as_ref()
                        .map(|a| a.path.clone())
                        .unwrap_or_else(|| img.abs.display().to_string()),
                    input_source: img.artifact.as_ref().and_then(|a| a.source.clone()),
                    input_sha256: &img.sha256,
                    package: &pkg.dir_name,
                    architecture: pkg.card.architecture.name(),
                    style: &style.label,
                    style_weights: &style.parts,
                    width: planar.width,
                    height: planar.height,
                    backend: compute.backend,
                    device: &compute.name,
                    device_requested: &compute.requested,
                    device_fallback: compute.fallback.as_deref(),
                    kernels: compute.kernels(),
                    forward_ms: (ms * 10.0).round() / 10.0,
                    tiling: tiles.name(),
                    tiles: tiles.tiles(),
                    item_key: &job.item_key,
                }
                .to_map()?;
                let img = image_io::to_image(
                    planar.width,
                    planar.height,
                    &rgb,
                    planar.alpha.as_deref(),
                    job.format,
                );
                drop(rgb);
                let pending = Pending {
                    index,
                    img,
                    format: job.format,
                    rel: rel.clone(),
                    attrs,
                    log,
                };
                if tx.send(pending).is_err() {
                    // The writer stopped on an error: it is reported below.
                    break;
                }
                computed += 1;
            }
            Ok(())
        })();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| StageError::Internal("the output writer panicked".into()))?;
        produced?;
        written
    })?;
    for (index, a) in written {
        slots[index] = Some(a);
    }
    Ok((slots.into_iter().flatten().collect(), computed, reused))
}
