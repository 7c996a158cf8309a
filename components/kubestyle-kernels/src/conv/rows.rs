//! A k×k convolution with few output channels (the last 9×9 layer of both networks) as k row
//! convolutions: each padded input row is convolved along x into `k * cout` partial sums (one
//! GEMM of `[w, k * cin] · [k * cin, k * cout]`, wide enough for the microkernel), and output
//! row y adds partial sums `ky` of padded rows `y + ky`.

use rayon::prelude::*;

use super::Conv;
use crate::act::Act;
use crate::gemm::matmul;
use crate::stats::{Stats, block_moments};

/// Output rows per block of a row convolution.
const ROWS_BLOCK: usize = 64;

/// OIHW weights `[cout, cin, k, k]` as `[k * cin, k * cout]`, row `kx * cin + ci`, column
/// `ky * cout + co`.
pub(super) fn weights(w: &[f32], k: usize, cin: usize, cout: usize) -> Vec<f32> {
    let mut r = vec![0f32; k * cin * k * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    r[(kx * cin + ci) * k * cout + ky * cout + co] =
                        w[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    r
}

/// `conv` (stride 1, no upsampling) applied to `x` with the weights from [`weights`];
/// statistics as in [`Conv::forward`]. A ring of k rows per block of `ROWS_BLOCK` output rows;
/// the k - 1 rows before a block are computed twice.
pub(super) fn forward(
    conv: &Conv,
    wr: &[f32],
    x: &Act,
    want_stats: bool,
    mut out: Act,
) -> (Act, Option<Stats>) {
    let (h, w, cin, cout, k) = (x.h, x.w, conv.cin, conv.cout, conv.k);
    let (my, mx) = (conv.index_map(h), conv.index_map(w));
    let (k1, n1) = (k * cin, k * cout);
    let contiguous: Vec<bool> = (0..w)
        .map(|xo| (1..k).all(|j| mx[xo + j] == mx[xo] + j))
        .collect();
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(ROWS_BLOCK * w * cout)
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(col, ring), (bi, dst)| {
                let y0 = bi * ROWS_BLOCK;
                let nrows = dst.len() / (w * cout);
                col.resize(w * k1, 0.0);
                ring.resize(k * w * n1, 0.0);
                for yp in y0..y0 + nrows + k - 1 {
                    // Partial sums of padded row yp.
                    let src = &x.data[my[yp] * w * cin..(my[yp] + 1) * w * cin];
                    for (xo, d) in col.chunks_exact_mut(k1).enumerate() {
                        if contiguous[xo] {
                            d.copy_from_slice(&src[mx[xo] * cin..(mx[xo] + k) * cin]);
                        } else {
                            for kx in 0..k {
                                let sx = mx[xo + kx] * cin;
                                d[kx * cin..(kx + 1) * cin].copy_from_slice(&src[sx..sx + cin]);
                            }
                        }
                    }
                    let slot = (yp - y0) % k;
                    matmul(
                        w,
                        k1,
                        n1,
                        col,
                        wr,
                        &mut ring[slot * w * n1..(slot + 1) * w * n1],
                    );
                    if yp + 1 < y0 + k {
                        continue;
                    }
                    // Output row y = yp - (k - 1): sum partials ky of padded rows y + ky.
                    let y = yp + 1 - k;
                    let drow = &mut dst[(y - y0) * w * cout..(y - y0 + 1) * w * cout];
                    match &conv.bias {
                        Some(bias) => {
                            for px in drow.chunks_exact_mut(cout) {
                                px.copy_from_slice(bias);
                            }
                        }
                        None => drow.fill(0.0),
                    }
                    for ky in 0..k {
                        let slot = (y - y0 + ky) % k;
                        let src = &ring[slot * w * n1..(slot + 1) * w * n1];
                        for (px, part) in drow.chunks_exact_mut(cout).zip(src.chunks_exact(n1)) {
                            for (v, p) in px.iter_mut().zip(&part[ky * cout..(ky + 1) * cout]) {
                                *v += p;
                            }
                        }
                    }
                }
                block_moments(dst, cout, want_stats)
            },
        )
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, h * w));
    (out, stats)
}
