//! Nearest ×2 upsample + 3×3 convolution as four 2×2 convolutions on the source image, one per
//! output phase (2.25× fewer multiply-adds; nothing upsampled is materialised).

use rayon::prelude::*;

use super::{Conv, add_bias};
use crate::BLOCK_FLOATS;
use crate::act::Act;
use crate::gemm::matmul;
use crate::stats::{Stats, block_moments};

/// The four sub-pixel 2×2 kernels of OIHW 3×3 weights `[cout, cin, 3, 3]`, phase `2a + b` for
/// output pixel `(2i + a, 2j + b)`, each `[4 * cin, cout]` with row `(ty * 2 + tx) * cin + ci`.
pub(super) fn weights(w: &[f32], cin: usize, cout: usize) -> [Vec<f32>; 4] {
    // Output row 2i + a of "upsample ×2, reflect-pad 1, 3×3" reads source rows
    // i - 1, i, i for a = 0 (kernel rows 0 | 1 + 2) and i, i, i + 1 for a = 1
    // (kernel rows 0 + 1 | 2); columns alike. At the borders reflecting the upsampled
    // image lands on the edge row itself, i.e. the source index is clamped.
    let sets: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
    std::array::from_fn(|ph| {
        let (a, b) = (ph / 2, ph % 2);
        let mut m = vec![0f32; 4 * cin * cout];
        for ty in 0..2 {
            for tx in 0..2 {
                for ci in 0..cin {
                    for co in 0..cout {
                        let mut acc = 0f32;
                        for &ky in sets[a][ty] {
                            for &kx in sets[b][tx] {
                                acc += w[((co * cin + ci) * 3 + ky) * 3 + kx];
                            }
                        }
                        m[((ty * 2 + tx) * cin + ci) * cout + co] = acc;
                    }
                }
            }
        }
        m
    })
}

/// `conv` (nearest ×2, 3×3, stride 1) applied to `x` with the kernels from [`weights`];
/// statistics as in [`Conv::forward`]. Blocks are whole source rows, so each block's output
/// rows are contiguous.
pub(super) fn forward(
    conv: &Conv,
    phases: &[Vec<f32>; 4],
    x: &Act,
    want_stats: bool,
    mut out: Act,
) -> (Act, Option<Stats>) {
    let (h, w, cin, cout) = (x.h, x.w, conv.cin, conv.cout);
    let (ho, wo) = (2 * h, 2 * w);
    let kk = 4 * cin;
    let rows = (BLOCK_FLOATS / kk / w).clamp(1, h);
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(2 * rows * wo * cout)
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(col, tmp), (bi, dst)| {
                let i0 = bi * rows;
                let nrows = dst.len() / (2 * wo * cout);
                let m = nrows * w;
                col.resize(m * kk, 0.0);
                tmp.resize(m * cout, 0.0);
                for (ph, wt) in phases.iter().enumerate() {
                    let (a, b) = (ph / 2, ph % 2);
                    for (r, row_col) in col.chunks_exact_mut(w * kk).enumerate().take(nrows) {
                        let i = (i0 + r) as isize;
                        for ty in 0..2 {
                            let sy = clamp(i + (a + ty) as isize - 1, h);
                            let src_row = &x.data[sy * w * cin..(sy + 1) * w * cin];
                            for (j, d) in row_col.chunks_exact_mut(kk).enumerate() {
                                for tx in 0..2 {
                                    let sx = clamp(j as isize + (b + tx) as isize - 1, w);
                                    let o = (ty * 2 + tx) * cin;
                                    d[o..o + cin]
                                        .copy_from_slice(&src_row[sx * cin..(sx + 1) * cin]);
                                }
                            }
                        }
                    }
                    matmul(m, kk, cout, col, wt, tmp);
                    for r in 0..nrows {
                        let drow = &mut dst[(2 * r + a) * wo * cout..(2 * r + a + 1) * wo * cout];
                        for j in 0..w {
                            let (o, p) = ((2 * j + b) * cout, r * w + j);
                            drow[o..o + cout].copy_from_slice(&tmp[p * cout..(p + 1) * cout]);
                        }
                    }
                }
                add_bias(dst, conv.bias.as_deref());
                block_moments(dst, cout, want_stats)
            },
        )
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, ho * wo));
    (out, stats)
}
