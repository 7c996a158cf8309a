//! Exact tiled inference: the whole image, layer by layer, in bands of rows, with each layer's
//! instance-norm statistics taken over the whole image — the result the untiled network gives,
//! in bounded memory.
//!
//! Every layer is computed over the whole image one band of output rows at a time: the band's
//! input rows (plus the halo its kernel needs, reflected at the image border exactly as the
//! untiled layer pads) are read from scratch, convolved, and the output rows written to scratch
//! while their per-channel sums and sums of squares are accumulated. Once the layer is done, its
//! whole-image mean and variance are known and a second pass normalises (activation, residual)
//! the stored rows in place. The next layer reads those. Memory is a few bands; disk is the
//! largest pair of activations a layer reads and writes (at most 33 floats per pixel for
//! MultiStyle26 and TransformerNet at full resolution: about 8.9 GB for 8192×8192).
//!
//! Scratch activations are anonymous files (`O_TMPFILE` where the filesystem has it, else created
//! and unlinked at once) read and written with positional I/O: nothing is left behind by a kill,
//! and file pages in the page cache are not part of the process's resident memory (memory-mapped
//! scratch would count there).

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;

use std::time::{Duration, Instant};

use crate::error::ModelError;
use kubestyle_kernels::{Act, Conv, Moments, Post, Stats, norm_apply, reflect};
use rayon::prelude::*;

use crate::fused::{FusedNet, last_uses};

/// How exact tiled inference runs.
#[derive(Debug, Clone)]
pub struct ExactOptions {
    /// Where the scratch activations go (anonymous files).
    pub scratch: PathBuf,
    /// Target size of one band of a layer's input and output rows, in bytes (a band has at least
    /// `min_rows` rows, so that the halo stays a small part of it).
    pub band_bytes: usize,
    /// The fewest rows in a band (unless the layer has fewer).
    pub min_rows: usize,
    /// Memory for the image and its activations: the image's own input and output take 24 bytes
    /// a pixel of it, and activations are kept in memory while they fit the rest (all but the
    /// largest layers of images up to about 4096×4096; none at 8192×8192); the rest go to
    /// scratch files or, for the first layer, are computed again.
    pub memory_bytes: usize,
}

/// Default target size of one band, its input rows and output rows together: 64 MiB.
pub const DEFAULT_BAND_BYTES: usize = 64 << 20;

/// Default memory for the image and the activations kept in memory: 1.5 GiB.
pub const DEFAULT_MEMORY_BYTES: usize = 1536 << 20;

/// Default fewest rows in a band.
pub const MIN_BAND_ROWS: usize = 32;

impl ExactOptions {
    pub fn new(scratch: impl Into<PathBuf>) -> ExactOptions {
        ExactOptions {
            scratch: scratch.into(),
            band_bytes: DEFAULT_BAND_BYTES,
            min_rows: MIN_BAND_ROWS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }

    fn rows_per_band(&self, row_bytes: usize, min_rows: usize, rows: usize) -> usize {
        (self.band_bytes / row_bytes.max(1))
            .max(min_rows)
            .clamp(1, rows.max(1))
    }
}

/// Where an activation's rows are.
enum Data {
    /// An anonymous scratch file.
    File(File),
    /// In memory (activations within [`ExactOptions::memory_bytes`]).
    Memory(Act),
    /// Not stored: computed again from the layer's input whenever rows are read. For a layer
    /// whose output is many times its input (the first, 3 → 32 channels at full size), one more
    /// pass of that layer costs less than writing and reading the output.
    /// Rows `0..cached.h` are kept in memory (what the budget allows).
    Recompute {
        input: Box<Store>,
        conv: Conv,
        cached: Act,
    },
}

/// One activation (NHWC rows of `w × c` floats) of a layer of the whole image.
struct Store {
    data: Data,
    /// Instance norm (and activation) still to apply to what is read: the stored rows are the
    /// convolution's output.
    on_read: Option<Norm>,
    /// Where the file lives (for messages).
    dir: PathBuf,
    /// Memory in use by in-memory stores, shared by all (returned on drop).
    budget: Rc<Cell<usize>>,
    c: usize,
    h: usize,
    w: usize,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Data::Memory(v) | Data::Recompute { cached: v, .. } = &self.data {
            self.budget
                .set(self.budget.get().saturating_sub(v.data.len() * 4));
        }
    }
}

impl Store {
    /// In memory when it fits what is left of `limit` bytes, else in a scratch file.
    fn create(
        opts: &ExactOptions,
        budget: &Rc<Cell<usize>>,
        c: usize,
        h: usize,
        w: usize,
    ) -> Result<Store, ModelError> {
        let bytes = c * h * w * 4;
        let data = if budget.get() + bytes <= opts.memory_bytes {
            budget.set(budget.get() + bytes);
            Data::Memory(Act::zeros(c, h, w))
        } else {
            let dir = &opts.scratch;
            Data::File(tempfile::tempfile_in(dir).map_err(|e| ModelError::write(dir, e))?)
        };
        Ok(Store {
            data,
            on_read: None,
            dir: opts.scratch.clone(),
            budget: budget.clone(),
            c,
            h,
            w,
        })
    }

    fn row_floats(&self) -> usize {
        self.w * self.c
    }

    /// Write `data` (whole rows) starting at row `r0`.
    fn write_rows(&mut self, r0: usize, data: &[f32]) -> Result<(), ModelError> {
        let off = r0 * self.row_floats();
        match &mut self.data {
            Data::File(f) => f
                .write_all_at(bytemuck::cast_slice(data), (off * 4) as u64)
                .map_err(|e| ModelError::write(&self.dir, e)),
            Data::Memory(v) => {
                v.data[off..off + data.len()].copy_from_slice(data);
                Ok(())
            }
            Data::Recompute { .. } => Ok(()),
        }
    }

    /// Read rows `r0..r0 + n` of a stored activation into `out`.
    fn read_rows(&self, r0: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let off = r0 * self.row_floats();
        match &self.data {
            Data::File(f) => f
                .read_exact_at(bytemuck::cast_slice_mut(out), (off * 4) as u64)
                .map_err(|e| ModelError::read(&self.dir, e)),
            Data::Memory(v) => {
                out.copy_from_slice(&v.data[off..off + out.len()]);
                Ok(())
            }
            Data::Recompute { .. } => Err(ModelError::Internal(
                "rows of a recomputed activation read one by one".into(),
            )),
        }
    }

    /// The band of rows `a..b` (indices may lie outside the image), each mapped into it by
    /// `map`; consecutive source rows are read at once.
    fn read_band(
        &self,
        a: isize,
        b: isize,
        map: impl Fn(isize) -> usize,
    ) -> Result<Act, ModelError> {
        let n = (b - a) as usize;
        let rf = self.row_floats();
        let src: Vec<usize> = (a..b).map(map).collect();
        let contiguous = src.windows(2).all(|p| p[1] == p[0] + 1);
        let mut act = match &self.data {
            Data::Recompute { cached, .. } if src.iter().all(|&r| r < cached.h) => {
                let mut act = Act::zeros(self.c, n, self.w);
                for (i, &r) in src.iter().enumerate() {
                    act.data[i * rf..(i + 1) * rf]
                        .copy_from_slice(&cached.data[r * rf..(r + 1) * rf]);
                }
                if let Some(n) = &self.on_read {
                    n.apply(&mut act, None);
                }
                return Ok(act);
            }
            Data::Recompute { input, conv, .. } if contiguous && n > 0 => {
                // The rows themselves, cut out of the band that computed them in place.
                let (mut full, k) = conv_rows(conv, input, src[0], src[0] + n)?;
                full.data.drain(..k * rf);
                full.data.truncate(n * rf);
                full.h = n;
                full
            }
            _ => Act {
                c: self.c,
                h: n,
                w: self.w,
                data: vec![0f32; n * rf],
            },
        };
        if let Data::Recompute { input, conv, .. } = &self.data {
            if !contiguous {
                // Reflected rows at an edge: their span computed once, then picked.
                let lo = src.iter().copied().min().unwrap_or(0);
                let hi = src.iter().copied().max().map_or(lo, |m| m + 1);
                let (full, k) = conv_rows(conv, input, lo, hi)?;
                for (i, &r) in src.iter().enumerate() {
                    let from = (k + r - lo) * rf;
                    act.data[i * rf..(i + 1) * rf].copy_from_slice(&full.data[from..from + rf]);
                }
            }
        } else {
            let mut i = 0;
            while i < n {
                let mut j = i + 1;
                while j < n && src[j] == src[j - 1] + 1 {
                    j += 1;
                }
                self.read_rows(src[i], &mut act.data[i * rf..j * rf])?;
                i = j;
            }
        }
        if let Some(n) = &self.on_read {
            n.apply(&mut act, None);
        }
        Ok(act)
    }
}

/// Output rows `o0..o1` of `conv` over the activation `x`: the band's output and the index of
/// row `o0` in it (rows around it see the band's own edges and are not the layer's).
fn conv_rows(conv: &Conv, x: &Store, o0: usize, o1: usize) -> Result<(Act, usize), ModelError> {
    let (a, b, k, clamp) = band_rows(conv, o0, o1)?;
    let band = x.read_band(a, b, |r| {
        if clamp {
            r.clamp(0, x.h as isize - 1) as usize
        } else {
            reflect(r, x.h)
        }
    })?;
    Ok((conv.forward(&band, false).0, k))
}

/// Which input rows a band of output rows `o0..o1` of `conv` reads: `(a, b, q, clamp)` — rows
/// `a..b` of the input (outside the image: reflected, or clamped for an upsampling layer, whose
/// padding reflects the *upsampled* image and so lands on the edge row), and the band's output
/// rows `q..q + (o1 - o0)` are the wanted ones. Rows before `q` and after the wanted ones see the
/// band's own edge padding and are dropped.
fn band_rows(conv: &Conv, o0: usize, o1: usize) -> Result<(isize, isize, usize, bool), ModelError> {
    let (k, s, p) = (conv.k, conv.stride, conv.k / 2);
    let n = o1 - o0;
    match conv.up {
        1 => {
            let q = p.div_ceil(s);
            let a = (s * o0) as isize - (s * q) as isize;
            let hb = s * (q + n - 1) + k - p;
            Ok((a, a + hb as isize, q, false))
        }
        2 if k == 3 && s == 1 => {
            let a = (o0 as isize - 1).div_euclid(2);
            let b = (o1 as isize + 1 + 1).div_euclid(2);
            Ok((a, b, (o0 as isize - 2 * a) as usize, true))
        }
        _ => Err(ModelError::Internal(format!(
            "exact tiling has no band plan for {conv:?}"
        ))),
    }
}

/// A layer's instance norm with its whole-image statistics, then its activation.
struct Norm {
    stats: Stats,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    post: Post,
}

impl Norm {
    fn apply(&self, x: &mut Act, residual: Option<&Act>) {
        norm_apply(x, &self.stats, &self.gamma, &self.beta, self.post, residual);
    }
}

/// Where a layer's time went (logged at debug level).
#[derive(Default)]
struct Timing {
    read: Duration,
    conv: Duration,
    stats: Duration,
    norm: Duration,
    write: Duration,
}

macro_rules! timed {
    ($name:ident) => {
        fn $name<T>(&mut self, f: impl FnOnce() -> T) -> T {
            let t = Instant::now();
            let v = f();
            self.$name += t.elapsed();
            v
        }
    };
}

impl Timing {
    timed!(read);
    timed!(conv);
    timed!(stats);
    timed!(norm);
    timed!(write);
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "conv {:.0} ms, statistics {:.0} ms, norm {:.0} ms, scratch read {:.0} ms, write {:.0} ms",
            ms(self.conv),
            ms(self.stats),
            ms(self.norm),
            ms(self.read),
            ms(self.write)
        )
    }
}

impl FusedNet {
    /// Stylise planar RGB in 0..1 (`[3, h, w]`) exactly as [`FusedNet::stylize`] does with
    /// the image's own statistics (up to float rounding), in bands through scratch files.
    pub fn stylize_exact(
        &self,
        rgb: &[f32],
        h: usize,
        w: usize,
        style: &[f32],
        opts: &ExactOptions,
    ) -> Result<Vec<f32>, ModelError> {
        if rgb.len() != 3 * h * w || h == 0 || w == 0 {
            return Err(ModelError::Invalid(format!(
                "image data of {} values for 3×{h}×{w}",
                rgb.len()
            )));
        }
        let opts = &ExactOptions {
            memory_bytes: opts.memory_bytes.saturating_sub(24 * h * w),
            ..opts.clone()
        };
        let budget = Rc::new(Cell::new(0usize));
        // The input, padded to multiples of 4 by reflection (as `Act::from_planar`) and scaled.
        let (hp, wp) = (h.div_ceil(4) * 4, w.div_ceil(4) * 4);
        let scale = self.input_scale();
        // The input goes to scratch (it is only ever read in bands), leaving the memory budget
        // to the layers that gain from it.
        let no_memory = ExactOptions {
            memory_bytes: 0,
            ..opts.clone()
        };
        let mut input = Store::create(&no_memory, &budget, 3, hp, wp)?;
        let rows = opts.rows_per_band(wp * 3 * 4, opts.min_rows, hp);
        let mx: Vec<usize> = (0..wp).map(|x| reflect(x as isize, w)).collect();
        for r0 in (0..hp).step_by(rows) {
            let r1 = (r0 + rows).min(hp);
            let mut band = vec![0f32; (r1 - r0) * wp * 3];
            band.par_chunks_mut(wp * 3)
                .enumerate()
                .for_each(|(i, row)| {
                    let sy = reflect((r0 + i) as isize, h);
                    for (x, px) in row.chunks_exact_mut(3).enumerate() {
                        for (ch, v) in px.iter_mut().enumerate() {
                            *v = rgb[(ch * h + sy) * w + mx[x]] * scale;
                        }
                    }
                });
            input.write_rows(r0, &band)?;
        }

        let steps = self.schedule();
        let last = last_uses(&steps);
        // Activations some later step adds as a residual are normalised in place once; the
        // others are normalised as the next layer reads them (one pass over scratch less).
        let residual_of: Vec<bool> = (0..=steps.len())
            .map(|a| steps.iter().any(|s| s.residual == Some(a)))
            .collect();
        let mut acts: Vec<Option<Store>> = vec![Some(input)];
        let mut out = vec![0f32; 3 * h * w];
        for (i, step) in steps.iter().enumerate() {
            let mut time = Timing::default();
            let conv = self.conv(step.layer);
            let x = acts.last().and_then(Option::as_ref).ok_or_else(|| {
                ModelError::Internal("the previous activation was released".into())
            })?;
            let (ho, wo) = conv.out_dims(x.h, x.w);
            let is_last = i + 1 == steps.len();
            let residual = step.residual.and_then(|r| acts[r].as_ref());
            let norm_of = |stats: Stats| {
                let (gamma, beta) = self.affine(step.layer, style);
                Norm {
                    stats,
                    gamma,
                    beta,
                    post: step.post,
                }
            };
            // Input, output and residual all in memory: the whole layer at once, exactly as
            // untiled (the quarter-size layers of images up to about 4096×4096).
            let out_bytes = conv.cout * ho * wo * 4;
            if let (Data::Memory(xa), None, true, None | Some(Data::Memory(_))) = (
                &x.data,
                &x.on_read,
                budget.get() + out_bytes <= opts.memory_bytes,
                residual.map(|r| &r.data),
            ) {
                let (mut ya, st) = time.conv(|| conv.forward(xa, step.norm));
                if let Some(st) = st {
                    let res = match residual.map(|r| &r.data) {
                        Some(Data::Memory(r)) => Some(r),
                        _ => None,
                    };
                    time.norm(|| norm_of(st).apply(&mut ya, res));
                }
                if is_last {
                    write_planar(&ya, 0, &mut out, h, w, 1.0 / scale);
                }
                budget.set(budget.get() + out_bytes);
                tracing::debug!("exact {conv:?} → {ho}x{wo} in memory: {time}");
                acts.push(Some(Store {
                    data: Data::Memory(ya),
                    on_read: None,
                    dir: opts.scratch.clone(),
                    budget: budget.clone(),
                    c: conv.cout,
                    h: ho,
                    w: wo,
                }));
                release(&mut acts, &last, i);
                continue;
            }
            // The first layer's output is many times its input: computed again where the next
            // layer reads it rather than stored (unless a residual or the output needs it).
            let lazy = !is_last && step.residual.is_none() && !residual_of[i + 1] && step.norm;
            let recompute = lazy
                && conv.cout * ho * wo >= 4 * x.c * x.h * x.w
                && !matches!(x.data, Data::Recompute { .. });
            let mut y = if recompute {
                Store {
                    data: Data::Memory(Act::zeros(0, 0, 0)),
                    on_read: None,
                    dir: opts.scratch.clone(),
                    budget: budget.clone(),
                    c: conv.cout,
                    h: ho,
                    w: wo,
                }
            } else {
                Store::create(opts, &budget, conv.cout, ho, wo)?
            };
            // In-memory outputs are normalised at once (no pass over scratch to save).
            let lazy = lazy && !matches!(y.data, Data::Memory(_));
            // A recomputed layer keeps its first rows in memory, as far as the budget goes once
            // the next layer's output has its share.
            let mut cached = Act::zeros(conv.cout, 0, wo);
            let cache_rows = if recompute {
                let next = self.conv(steps[i + 1].layer);
                let (nh, nw) = next.out_dims(ho, wo);
                let reserve = next.cout * nh * nw * 4;
                let left = opts.memory_bytes.saturating_sub(budget.get() + reserve);
                let rows = (left / (wo * conv.cout * 4)).min(ho);
                budget.set(budget.get() + rows * wo * conv.cout * 4);
                cached.data.reserve_exact(rows * wo * conv.cout);
                rows
            } else {
                0
            };
            // Bytes per output row: its own, and the input rows it takes (2 for a stride-2
            // layer, of twice the width; half a row for an upsampling layer).
            let row_bytes = wo * conv.cout * 4 + x.w * x.c * 4 * conv.stride / conv.up;
            let rows = opts.rows_per_band(row_bytes, opts.min_rows, ho);
            let mut moments = Moments::new(conv.cout);
            let rf = wo * conv.cout;
            // Scratch-file writes run on a thread of their own, overlapping the next band.
            let file = match &y.data {
                Data::File(f) => Some(
                    f.try_clone()
                        .map_err(|e| ModelError::write(&opts.scratch, e))?,
                ),
                _ => None,
            };
            std::thread::scope(|scope| -> Result<(), ModelError> {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Act, usize)>(1);
                let writer = file.map(|f| {
                    let dir = &opts.scratch;
                    scope.spawn(move || -> Result<Duration, ModelError> {
                        let t = Instant::now();
                        for (o0, full, k) in rx {
                            f.write_all_at(
                                bytemuck::cast_slice(&full.data[k * rf..]),
                                (o0 * rf * 4) as u64,
                            )
                            .map_err(|e| ModelError::write(dir, e))?;
                        }
                        Ok(t.elapsed())
                    })
                });
                for o0 in (0..ho).step_by(rows) {
                    let o1 = (o0 + rows).min(ho);
                    let (mut full, k) = time.conv(|| conv_rows(conv, x, o0, o1))?;
                    full.data.truncate((k + o1 - o0) * rf);
                    let kept = &full.data[k * rf..];
                    if step.norm {
                        time.stats(|| moments.add(kept));
                    }
                    if o1 <= cache_rows {
                        cached.data.extend_from_slice(kept);
                        cached.h = o1;
                    }
                    if writer.is_some() {
                        if tx.send((o0, full, k)).is_err() {
                            break;
                        }
                    } else if !recompute {
                        time.write(|| y.write_rows(o0, kept))?;
                    }
                }
                drop(tx);
                if let Some(w) = writer {
                    let busy = w
                        .join()
                        .map_err(|_| ModelError::Internal("a scratch writer panicked".into()))??;
                    time.write += busy;
                }
                Ok(())
            })?;
            let norm = step.norm.then(|| norm_of(moments.stats()));
            if recompute {
                let input = acts[i].take().ok_or_else(|| {
                    ModelError::Internal("the first layer's input was released".into())
                })?;
                // What the cache did not fill goes back to the budget.
                budget.set(budget.get() - (cache_rows - cached.h) * wo * conv.cout * 4);
                y.data = Data::Recompute {
                    input: Box::new(input),
                    conv: conv.clone(),
                    cached,
                };
                y.on_read = norm;
            } else if let (Data::Memory(ya), None | Some(Data::Memory(_))) =
                (&mut y.data, residual.map(|r| &r.data))
            {
                // In memory, with its residual: normalised where it is.
                if let Some(n) = &norm {
                    let res = match residual.map(|r| &r.data) {
                        Some(Data::Memory(r)) => Some(r),
                        _ => None,
                    };
                    time.norm(|| n.apply(ya, res));
                }
                if is_last {
                    write_planar(ya, 0, &mut out, h, w, 1.0 / scale);
                }
            } else if !lazy {
                // Normalise (and add the residual) now: in place, or for the last layer
                // straight into the planar output.
                let rows = opts.rows_per_band(wo * conv.cout * 4 * 2, opts.min_rows, ho);
                for r0 in (0..ho).step_by(rows) {
                    let r1 = (r0 + rows).min(ho);
                    let mut band =
                        time.read(|| y.read_band(r0 as isize, r1 as isize, |r| r as usize))?;
                    if let Some(n) = &norm {
                        let res =
                            match residual {
                                Some(r) => Some(time.read(|| {
                                    r.read_band(r0 as isize, r1 as isize, |r| r as usize)
                                })?),
                                None => None,
                            };
                        time.norm(|| n.apply(&mut band, res.as_ref()));
                    }
                    if is_last {
                        write_planar(&band, r0, &mut out, h, w, 1.0 / scale);
                    } else if norm.is_some() {
                        time.write(|| y.write_rows(r0, &band.data))?;
                    }
                }
            } else {
                y.on_read = norm;
            }
            tracing::debug!("exact {conv:?} → {ho}x{wo}: {time}");
            acts.push(Some(y));
            release(&mut acts, &last, i);
        }
        Ok(out)
    }
}

/// Release the activations no step after `done` reads.
fn release(acts: &mut [Option<Store>], last: &[usize], done: usize) {
    for (a, l) in acts.iter_mut().zip(last) {
        if *l <= done {
            *a = None;
        }
    }
}

/// Rows `r0..` of a 3-channel NHWC band into planar `out` (`3 × h × w`, cropping the padding),
/// each value `clamp(v * scale, 0, 1)`.
fn write_planar(band: &Act, r0: usize, out: &mut [f32], h: usize, w: usize, scale: f32) {
    let c = band.c;
    for (i, row) in band.data.chunks_exact(band.w * c).enumerate() {
        let y = r0 + i;
        if y >= h {
            break;
        }
        for ch in 0..3.min(c) {
            let dst = &mut out[(ch * h + y) * w..(ch * h + y + 1) * w];
            for (x, v) in dst.iter_mut().enumerate() {
                *v = (row[x * c + ch] * scale).clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_plans_cover_what_each_output_row_reads() {
        for (k, s, up) in [(9, 1, 1), (3, 2, 1), (3, 1, 1), (3, 1, 2)] {
            let cin = 2;
            let conv = Conv::from_oihw(&vec![0.1; 2 * cin * k * k], [2, cin, k, k], None, s, up);
            let hin = 40;
            let (ho, _) = conv.out_dims(hin, 8);
            for o0 in 0..ho {
                for o1 in o0 + 1..=ho.min(o0 + 7) {
                    let (a, b, q, _) = band_rows(&conv, o0, o1).unwrap();
                    let hb = (b - a) as usize;
                    let (bo, _) = conv.out_dims(hb, 8);
                    assert!(q + (o1 - o0) <= bo, "k{k} s{s} up{up} {o0}..{o1}");
                }
            }
        }
    }
}
