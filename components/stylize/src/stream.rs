//! Computing the planned outputs as a stream: decode → forward → encode/hash/write overlapped,
//! with a bounded number of images in memory whatever the number of inputs.
//!
//! * Small images (at most [`LANE_MAX_PIXELS`], 512², and below `--tile-above`) on the fused kernels run
//!   side by side, one per core ("lanes"): each lane decodes an image, runs its styles on a
//!   one-thread pool and hands the outputs to the writer. At 96² one forward pass on one core
//!   takes 7.2 ms and on two cores 6.1 ms (the layers are too small to split well), so two lanes
//!   make an output every 3.6 ms; at 512² the two are about even (200 ms vs 110 ms).
//! * Larger images run after them, one at a time on every core, the next image (up to
//!   [`PREFETCH_MAX_PIXELS`]) being decoded meanwhile by a decoder thread.
//! * Encoding, the atomic write and hashing run on the writer thread (`writer.rs`).
//!
//! In memory at once: per lane, one decoded image and its outputs; for large images, the one in
//! the forward pass and the prefetched one; and one finished output per lane waiting for the
//! writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Mutex, PoisonError};

use super::*;
use crate::inputs::{ImageInput, Loaded};
use crate::plan::Job;
use crate::writer::{OutputAttributes, Pending, write_all, write_thumbnail};
use kubestyle_manifest::command::sheet;

/// Images up to this many pixels (512², after `--max-size`) run in lanes, one per core. Above
/// it a lane's activations (about 0.4 KB a pixel at the peak) would multiply memory by the
/// number of lanes for little gain (at 512² two lanes make an output every 100 ms, one image
/// on both cores every 110 ms).
pub const LANE_MAX_PIXELS: u64 = 1 << 18;

/// The next large image is decoded ahead only up to this many pixels (12 bytes a pixel as
/// planar floats: 192 MiB); larger ones are decoded when their turn comes.
pub const PREFETCH_MAX_PIXELS: u64 = 16 << 20;

/// What every image's computation reads.
pub(crate) struct Context<'a> {
    pub(crate) jobs: &'a [Job],
    pub(crate) packages: &'a [Loaded],
    pub(crate) images: &'a [ImageInput],
    /// Each image's pixel count after `--max-size` (from its header).
    pub(crate) pixels: &'a [u64],
    pub(crate) compute: &'a Compute,
    pub(crate) args: &'a Args,
    /// Which images get contact-sheet thumbnails (of themselves and of their outputs): those the
    /// sheet shows, when larger than its cells.
    pub(crate) thumbs: &'a [bool],
    pub(crate) run_id: &'a str,
    pub(crate) volume: &'a Path,
}

/// One image and the indices of the jobs (its outputs) computed from it.
struct Work {
    img: usize,
    jobs: Vec<usize>,
}

/// Compute every job not reused and write it. Returns the outputs in plan order, and how many
/// were computed and reused.
pub(crate) fn produce(
    ctx: &Context<'_>,
    volume: &Path,
) -> Result<(Vec<Artifact>, usize, usize), StageError> {
    let jobs = ctx.jobs;
    let mut slots: Vec<Option<Artifact>> = (0..jobs.len()).map(|_| None).collect();
    let mut reused = 0usize;
    // Each image's computed jobs, in image order (each image is decoded once for all of them).
    let mut by_image: Vec<Vec<usize>> = vec![Vec::new(); ctx.images.len()];
    for (index, job) in jobs.iter().enumerate() {
        match &job.reuse {
            Some(a) => {
                tracing::info!("{} unchanged since the last run: reused", job.rel);
                kubestyle_manifest::atomic::sweep_stale_temps_of(&a.abs_path(volume));
                crate::writer::sweep_thumbnail_temps(volume, a);
                slots[index] = Some(a.clone());
                reused += 1;
            }
            None => by_image[job.img].push(index),
        }
    }
    let work: Vec<Work> = by_image
        .into_iter()
        .enumerate()
        .filter(|(_, j)| !j.is_empty())
        .map(|(img, jobs)| Work { img, jobs })
        .collect();
    let lanes = ctx
        .args
        .lanes
        .unwrap_or_else(rayon::current_num_threads)
        .max(1);
    let in_lane = |w: &Work| {
        ctx.compute.fused
            && lanes > 1
            && ctx.pixels[w.img] <= LANE_MAX_PIXELS.min(ctx.args.tile_above)
    };
    let computed = AtomicUsize::new(0);
    let written = std::thread::scope(|scope| {
        // One finished output per lane waits for the writer.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(lanes);
        let writer = scope.spawn(move || write_all(rx, volume));
        let produced = (|| -> Result<(), StageError> {
            // Small images first, all in one set of lanes (outputs are stored by job index, so
            // the order they are made in does not matter), then the large ones one at a time.
            let (small, large): (Vec<&Work>, Vec<&Work>) = work.iter().partition(|w| in_lane(w));
            if !small.is_empty() && !run_lanes(ctx, &small, lanes, &tx, &computed)? {
                return Ok(());
            }
            // One decoder thread for them, one image ahead: a rendezvous channel, so it holds
            // at most the image it has decoded while this one runs. Images above
            // PREFETCH_MAX_PIXELS it leaves to be decoded here, when their turn comes. (One
            // long-lived thread, not one per image: each new thread's allocations went to
            // another malloc arena, and peak RSS wandered with it.)
            let (dtx, drx) = std::sync::mpsc::sync_channel::<Option<Result<_, StageError>>>(0);
            let ahead: Vec<usize> = large.iter().map(|w| w.img).collect();
            scope.spawn(move || {
                for img in ahead {
                    let planar = (ctx.pixels[img] <= PREFETCH_MAX_PIXELS).then(|| load(ctx, img));
                    if dtx.send(planar).is_err() {
                        break;
                    }
                }
            });
            for w in &large {
                let planar = match drx.recv() {
                    Ok(Some(p)) => p?,
                    Ok(None) => load(ctx, w.img)?,
                    Err(_) => {
                        return Err(StageError::Internal(
                            "the image decoder thread stopped".into(),
                        ));
                    }
                };
                if !run_image(ctx, w, &planar, 1, &tx, &computed)? {
                    return Ok(());
                }
            }
            Ok(())
        })();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| StageError::Internal("the output writer panicked".into()))?;
        // The writer's error first: a failed write is why the producer stopped.
        let written = written?;
        produced?;
        Ok::<_, StageError>(written)
    })?;
    for (index, a) in written {
        slots[index] = Some(a);
    }
    Ok((
        slots.into_iter().flatten().collect(),
        computed.into_inner(),
        reused,
    ))
}

fn load(ctx: &Context<'_>, img: usize) -> Result<image_io::Planar, StageError> {
    Ok(image_io::load(
        &ctx.images[img].abs,
        ctx.args.max_pixels,
        ctx.args.max_size,
    )?)
}

/// Run `work` in `lanes` lanes, each decoding its next image and running it on a one-thread
/// pool of its own. Stops at the first error (the lowest image's, when several lanes fail).
/// Returns false if the writer has stopped (its error is reported by [`produce`]).
fn run_lanes(
    ctx: &Context<'_>,
    work: &[&Work],
    lanes: usize,
    tx: &SyncSender<Pending>,
    computed: &AtomicUsize,
) -> Result<bool, StageError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let writer_gone = AtomicBool::new(false);
    let failed: Mutex<Option<(usize, StageError)>> = Mutex::new(None);
    let fail = |k: usize, e: StageError| {
        let mut f = failed.lock().unwrap_or_else(PoisonError::into_inner);
        if f.as_ref().is_none_or(|(first, _)| k < *first) {
            *f = Some((k, e));
        }
        stop.store(true, Ordering::SeqCst);
    };
    std::thread::scope(|scope| {
        for _ in 0..lanes.min(work.len()) {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(p) => p,
                    Err(e) => {
                        return fail(0, StageError::Internal(format!("a compute thread: {e}")));
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(w) = work.get(k) else { break };
                    let r = pool.install(|| {
                        let planar = load(ctx, w.img)?;
                        run_image(ctx, w, &planar, lanes, tx, computed)
                    });
                    match r {
                        Ok(true) => {}
                        Ok(false) => {
                            writer_gone.store(true, Ordering::SeqCst);
                            stop.store(true, Ordering::SeqCst);
                        }
                        Err(e) => fail(k, e),
                    }
                }
            });
        }
    });
    if let Some((_, e)) = failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    Ok(!writer_gone.load(Ordering::SeqCst))
}

/// Run every job of one decoded image and send each output to the writer. Returns false if the
/// writer has stopped.
fn run_image(
    ctx: &Context<'_>,
    w: &Work,
    planar: &image_io::Planar,
    lanes: usize,
    tx: &SyncSender<Pending>,
    computed: &AtomicUsize,
) -> Result<bool, StageError> {
    let (compute, args) = (ctx.compute, ctx.args);
    let img = &ctx.images[w.img];
    // The input's thumbnail for the contact sheet, once per image, while it is decoded anyway
    // (upload then reads 192 pixels a side instead of decoding the photo again).
    let input_thumbnail = if ctx.thumbs[w.img] {
        let rgb = image_io::to_image(
            planar.width,
            planar.height,
            &planar.rgb,
            None,
            image::ImageFormat::Png,
        );
        let rel = sheet::thumbnail_path(ctx.run_id, &format!("inputs/{}", img.rel_out));
        Some(write_thumbnail(ctx.volume, &rel, &rgb)?)
    } else {
        None
    };
    for &index in &w.jobs {
        let job = &ctx.jobs[index];
        let pkg = &ctx.packages[job.pkg];
        let (style, rel) = (&pkg.styles[job.style], &job.rel);
        let t0 = Instant::now();
        let (mut rgb, tiles) = stylize_planar(
            &pkg.net,
            pkg.fused.as_ref(),
            planar,
            &style.weights,
            &compute.device,
            args,
        )?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if !style.is_plain() {
            crate::colour::apply(&mut rgb, &planar.rgb, style.preserve_colour, style.strength);
        }
        let log = format!(
            "{} × {} → {rel} ({}x{}, {ms:.0} ms{}{})",
            img.abs.display(),
            style.label,
            planar.width,
            planar.height,
            match tiles {
                TileRun::Whole => String::new(),
                TileRun::Exact => ", exact tiling".into(),
                TileRun::Approximate(n) => format!(", {n} tiles (approximate)"),
            },
            if lanes > 1 {
                format!(", one of {lanes} lanes")
            } else {
                String::new()
            }
        );
        let attrs = OutputAttributes {
            input: img.input_name(),
            input_source: img.artifact.as_ref().and_then(|a| a.source.clone()),
            input_sha256: &img.sha256,
            package: &pkg.dir_name,
            architecture: pkg.card.architecture.name(),
            style: &style.label,
            style_weights: &style.parts,
            preserve_colour: style.preserve_colour,
            strength: style.strength,
            width: planar.width,
            height: planar.height,
            backend: compute.backend,
            device: &compute.name,
            device_requested: &compute.requested,
            device_fallback: compute.fallback.as_deref(),
            kernels: compute.kernels(),
            forward_ms: (ms * 10.0).round() / 10.0,
            forward_lanes: lanes,
            tiling: tiles.name(),
            tiles: tiles.tiles(),
            item_key: &job.item_key,
        }
        .to_map()?;
        let mut attrs = attrs;
        if let Some(t) = &input_thumbnail {
            attrs.insert(sheet::INPUT_THUMBNAIL.into(), t.clone());
        }
        let out = image_io::to_image(
            planar.width,
            planar.height,
            &rgb,
            planar.alpha.as_deref(),
            job.format,
        );
        drop(rgb);
        let pending = Pending {
            index,
            img: out,
            format: job.format,
            rel: rel.clone(),
            attrs,
            log,
            thumbnail: ctx.thumbs[w.img].then(|| sheet::thumbnail_path(ctx.run_id, rel)),
        };
        if tx.send(pending).is_err() {
            return Ok(false);
        }
        computed.fetch_add(1, Ordering::SeqCst);
    }
    Ok(true)
}
