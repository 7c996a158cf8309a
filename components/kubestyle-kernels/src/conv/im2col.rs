//! The general convolution: for each fixed block of output pixels, an im2col matrix (upsampling
//! and reflection padding folded into the index maps) times the transposed weights.

use rayon::prelude::*;

use super::{Conv, add_bias};
use crate::BLOCK_FLOATS;
use crate::act::Act;
use crate::gemm::matmul;
use crate::stats::{Stats, block_moments};

/// OIHW weights `[cout, cin, k, k]` as `[k * k * cin, cout]`, row index `(ky * k + kx) * cin + ci`.
pub(super) fn weights(w: &[f32], k: usize, cin: usize, cout: usize) -> Vec<f32> {
    let mut wt = vec![0f32; k * k * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    wt[((ky * k + kx) * cin + ci) * cout + co] =
                        w[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    wt
}

/// `conv` applied to `x` with the weights from [`weights`]; statistics as in [`Conv::forward`].
pub(super) fn forward(
    conv: &Conv,
    wt: &[f32],
    x: &Act,
    want_stats: bool,
    mut out: Act,
) -> (Act, Option<Stats>) {
    let (ho, wo) = conv.out_dims(x.h, x.w);
    let (my, mx) = (conv.index_map(x.h), conv.index_map(x.w));
    let kk = conv.k * conv.k * conv.cin;
    let cout = conv.cout;
    // Pixels per block: a fixed function of the layer and image, never of the thread count.
    let block_px = (BLOCK_FLOATS / kk).clamp(32, 8192);
    // A window is "contiguous" along x when its k source columns are consecutive (no
    // upsampling, not at a reflected edge): then each kernel row is one copy.
    let contiguous: Vec<bool> = (0..wo)
        .map(|xo| {
            let s = xo * conv.stride;
            (1..conv.k).all(|j| mx[s + j] == mx[s] + j)
        })
        .collect();
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(block_px * cout)
        .enumerate()
        .map_init(Vec::<f32>::new, |col, (bi, dst)| {
            let p0 = bi * block_px;
            let m = dst.len() / cout;
            col.resize(m * kk, 0.0);
            im2col(conv, x, &my, &mx, &contiguous, p0, m, wo, col);
            matmul(m, kk, cout, col, wt, dst);
            add_bias(dst, conv.bias.as_deref());
            block_moments(dst, cout, want_stats)
        })
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, ho * wo));
    (out, stats)
}

/// The im2col rows of output pixels `p0 .. p0 + m` (row-major over `wo` columns) into `col`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    conv: &Conv,
    x: &Act,
    my: &[usize],
    mx: &[usize],
    contiguous: &[bool],
    p0: usize,
    m: usize,
    wo: usize,
    col: &mut [f32],
) {
    let (k, s, cin) = (conv.k, conv.stride, conv.cin);
    let kk = k * k * cin;
    let row_len = x.w * cin;
    for (i, dst) in col.chunks_exact_mut(kk).enumerate().take(m) {
        let p = p0 + i;
        let (yo, xo) = (p / wo, p % wo);
        let (by, bx) = (yo * s, xo * s);
        for ky in 0..k {
            let src_row = &x.data[my[by + ky] * row_len..][..row_len];
            let d = &mut dst[ky * k * cin..(ky + 1) * k * cin];
            if contiguous[xo] {
                let sx = mx[bx] * cin;
                d.copy_from_slice(&src_row[sx..sx + k * cin]);
            } else {
                for kx in 0..k {
                    let sx = mx[bx + kx] * cin;
                    d[kx * cin..(kx + 1) * cin].copy_from_slice(&src_row[sx..sx + cin]);
                }
            }
        }
    }
}
