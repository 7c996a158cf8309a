//! Direct convolution on AVX-512: each output tile's accumulators stay in registers while the
//! input windows are read straight from the NHWC activation, nothing materialised (im2col +
//! GEMM writes every window out, 243 floats per pixel for a 9×9 layer on 3 channels, then packs
//! it again inside the GEMM). The walk over tiles ([`forward_tiles`]) is separate from the
//! kernel. [`wide`]: a multiple of 32 output channels, vectorised over them (the first 9×9 layer
//! of both networks, the stride-2 layers, MultiStyle26's 32-channel residual layers).
//! [`planar`]: MultiStyle26's last 9×9 layer (4 → 3 channels), vectorised along the row on
//! padded planes. A kernel for TransformerNet's last layer (32 → 3, a dot product along each
//! window row) was tried and measured no faster than the row convolutions (132 vs 127 ms at
//! 1024²; LLVM spilled its 24 accumulators), so that layer stays on `rows`.
//!
//! In NHWC a window's kernel row is one contiguous run of `k · cin` values; windows that cross
//! the reflected border are gathered into a small scratch buffer first. The kernels use
//! `std::arch` intrinsics behind run-time detection ([`available`]): the `unsafe` is the loads
//! and stores through raw pointers, each kernel with its bounds asserted by a safe wrapper and
//! its safety argument beside it. Each output value is its own sum in a fixed order, so results
//! do not depend on the thread count; CPUs without AVX-512 keep the im2col and row paths.

pub(super) mod planar;
pub(super) mod wide;

use rayon::prelude::*;

use super::Conv;
use crate::act::Act;
use crate::stats::{Stats, block_moments};

/// f32 lanes of one AVX-512 vector.
const LANES: usize = 16;

/// Blocks of output rows per layer: enough for every core on the smallest layers, and a
/// partition (hence the statistics' summation order) independent of the thread count.
const BLOCKS: usize = 64;

/// Whether this CPU runs the direct kernels (AVX-512F, detected at run time).
pub(super) fn available() -> bool {
    crate::simd::avx512()
}

/// Where each output pixel's window lies in the input.
struct Geometry<'a> {
    x: &'a Act,
    k: usize,
    stride: usize,
    wo: usize,
    /// Source row of every padded row, source column of every padded column.
    my: Vec<usize>,
    mx: Vec<usize>,
    /// Whether output column `xo`'s window is `k` consecutive source columns (one copy-free
    /// run of `k * cin` values per kernel row).
    contiguous: Vec<bool>,
}

impl<'a> Geometry<'a> {
    fn new(conv: &Conv, x: &'a Act) -> Geometry<'a> {
        let (_, wo) = conv.out_dims(x.h, x.w);
        let (my, mx) = (conv.index_map(x.h), conv.index_map(x.w));
        let (k, s) = (conv.k, conv.stride);
        let contiguous = (0..wo)
            .map(|xo| (1..k).all(|j| mx[xo * s + j] == mx[xo * s] + j))
            .collect();
        Geometry {
            x,
            k,
            stride: s,
            wo,
            my,
            mx,
            contiguous,
        }
    }
}

/// `conv` (no upsampling) applied to `x` tile by tile: for every row of output pixels and every
/// run of `P` of them from column `x0` (`n ≤ P` real ones; the tile is padded with repeats of
/// its last pixel), `kernel(windows, n, out)` writes the `n` pixels' channels at the start of
/// `out` (the output row from pixel `x0` on). `windows[ky * P + p]` is pixel `p`'s kernel row
/// `ky`, `k * cin` values. Statistics as in [`Conv::forward`].
fn forward_tiles<const P: usize>(
    conv: &Conv,
    x: &Act,
    want_stats: bool,
    mut out: Act,
    kernel: impl Fn(&[&[f32]], usize, &mut [f32]) + Sync,
) -> (Act, Option<Stats>) {
    assert!(available(), "the direct kernels need AVX-512");
    let (ho, wo) = conv.out_dims(x.h, x.w);
    let cout = conv.cout;
    let g = Geometry::new(conv, x);
    let rows = ho.div_ceil(BLOCKS);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(rows * wo * cout)
        .enumerate()
        .map_init(Vec::<f32>::new, |scratch, (bi, dst)| {
            block::<P>(&g, bi * rows, dst, cout, scratch, &kernel);
            block_moments(dst, cout, want_stats)
        })
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, ho * wo));
    (out, stats)
}

/// One block of output rows (`dst`, whole rows from `y0`), tile by tile (see [`forward_tiles`]).
fn block<const P: usize>(
    g: &Geometry,
    y0: usize,
    dst: &mut [f32],
    cout: usize,
    scratch: &mut Vec<f32>,
    kernel: &impl Fn(&[&[f32]], usize, &mut [f32]),
) {
    let (x, k, s, wo) = (g.x, g.k, g.stride, g.wo);
    let cin = x.c;
    let l = k * cin;
    let row_len = x.w * cin;
    scratch.resize(k * P * l, 0.0);
    // One allocation for every tile's windows (see `recycle`).
    let mut spare: Vec<&[f32]> = Vec::with_capacity(k * P);
    for (r, drow) in dst.chunks_exact_mut(wo * cout).enumerate() {
        let yo = y0 + r;
        for x0 in (0..wo).step_by(P) {
            let n = P.min(wo - x0);
            let px = |p: usize| x0 + p.min(n - 1);
            let direct = (0..P).all(|p| g.contiguous[px(p)]);
            if !direct {
                for ky in 0..k {
                    let src = &x.data[g.my[yo * s + ky] * row_len..][..row_len];
                    for p in 0..P {
                        let d = &mut scratch[(ky * P + p) * l..][..l];
                        for kx in 0..k {
                            let sx = g.mx[px(p) * s + kx] * cin;
                            d[kx * cin..(kx + 1) * cin].copy_from_slice(&src[sx..sx + cin]);
                        }
                    }
                }
            }
            let mut windows = recycle(spare);
            for ky in 0..k {
                if direct {
                    let src = &x.data[g.my[yo * s + ky] * row_len..][..row_len];
                    windows.extend((0..P).map(|p| &src[g.mx[px(p) * s] * cin..][..l]));
                } else {
                    windows.extend((0..P).map(|p| &scratch[(ky * P + p) * l..][..l]));
                }
            }
            kernel(&windows, n, &mut drow[x0 * cout..]);
            spare = recycle(windows);
        }
    }
}

/// An empty vector in `v`'s allocation that may hold borrows of another lifetime (an in-place
/// collect of nothing: no allocation), so that the tiles' windows, which borrow the scratch
/// buffer that each tile rewrites, share one allocation.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(v: Vec<&[f32]>) -> Vec<&'b [f32]> {
    v.into_iter().filter_map(|_| None).collect()
}
