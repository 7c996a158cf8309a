//! The direct kernel for MultiStyle26's last two layers (nearest ×2 + 3×3, 8 → 4 channels, and
//! 9×9, 4 → 3, both at full size): few input and output channels, vectorised along the row
//! instead. Each block of output rows copies its band of the input's few channels into
//! (upsampled and) reflect-padded planes (CHW, a per-thread scratch); for each output row, runs
//! of `16·R` pixels keep
//! `C × R` vector accumulators, and every tap `(ci, ky, kx)` is `R` loads of 16 consecutive
//! padded pixels and `C · R` fused multiply-adds with the tap's broadcast weights. The output is
//! interleaved back to NHWC.
//!
//! The GEMMs this replaces are 27 columns wide (row convolutions, 31–47 GFLOP/s on the 9×9
//! layer) and 4 (sub-pixel, 21–26 GFLOP/s). Limited to ≤ 8 input channels, where the copy is
//! cheap next to the taps.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

use super::{BLOCKS, LANES, available};
use crate::act::Act;
use crate::conv::Conv;
use crate::stats::{Stats, block_moments};

/// Input channels at most (each block copies its band of the input into planes).
const MAX_CIN: usize = 8;

/// Whether a layer of this shape runs here (on a CPU where the kernels are [`available`]).
pub(in crate::conv) fn suits(stride: usize, cin: usize, cout: usize) -> bool {
    stride == 1 && cin <= MAX_CIN && (1..=4).contains(&cout)
}

/// `conv` (stride 1, ≤ 8 → 1–4 channels, any upsampling) applied to `x` with OIHW weights `w`
/// (as given); statistics as in [`Conv::forward`].
pub(in crate::conv) fn forward(
    conv: &Conv,
    w: &[f32],
    x: &Act,
    want_stats: bool,
    mut out: Act,
) -> (Act, Option<Stats>) {
    assert!(available(), "the direct kernels need AVX-512");
    let (cin, cout, k) = (x.c, conv.cout, conv.k);
    let (h, wd) = conv.out_dims(x.h, x.w);
    // Source row (column) of every position of the upsampled, padded input.
    let (my, mx) = (conv.index_map(x.h), conv.index_map(x.w));
    let pw = mx.len();
    let bias = conv.bias.clone().unwrap_or_else(|| vec![0.0; cout]);
    let rows = h.div_ceil(BLOCKS);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(rows * wd * cout)
        .enumerate()
        .map_init(Vec::<f32>::new, |planes, (bi, dst)| {
            // The block's band of the padded planes, `[cin][ph][pw]`: its output rows and the
            // k - 1 below (a thread's scratch, a few hundred KB, not a copy of the input).
            let (y0, nrows) = (bi * rows, dst.len() / (wd * cout));
            let ph = nrows + k - 1;
            planes.resize(cin * ph * pw, 0.0);
            for (r, prow) in planes.chunks_exact_mut(pw).enumerate() {
                let (ci, yy) = (r / ph, y0 + r % ph);
                let src = &x.data[my[yy] * x.w * cin..][..x.w * cin];
                for (v, &sx) in prow.iter_mut().zip(&mx) {
                    *v = src[sx * cin + ci];
                }
            }
            let g = Planes {
                data: planes,
                cin,
                ph,
                pw,
                k,
                w,
                bias: &bias,
            };
            for (r, drow) in dst.chunks_exact_mut(wd * cout).enumerate() {
                match cout {
                    1 => row::<1, 4>(&g, r, drow),
                    2 => row::<2, 4>(&g, r, drow),
                    3 => row::<3, 4>(&g, r, drow),
                    _ => row::<4, 3>(&g, r, drow),
                }
            }
            block_moments(dst, cout, want_stats)
        })
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, h * wd));
    (out, stats)
}

/// A band of the padded input planes (row 0 = the band's first row) and the layer's weights.
struct Planes<'a> {
    data: &'a [f32],
    cin: usize,
    ph: usize,
    pw: usize,
    k: usize,
    /// OIHW `[C][cin][k][k]`.
    w: &'a [f32],
    bias: &'a [f32],
}

/// Output row `y` of the band (`out`: its `w · C` values, NHWC), in runs of `16·R` pixels.
fn row<const C: usize, const R: usize>(g: &Planes, y: usize, out: &mut [f32]) {
    let w = out.len() / C;
    assert!(g.ph >= y + g.k && g.pw >= w + g.k - 1 && g.data.len() == g.cin * g.ph * g.pw);
    assert!(g.w.len() == C * g.cin * g.k * g.k && g.bias.len() == C);
    let mut tmp = [[0f32; 64]; C];
    for x0 in (0..w).step_by(LANES * R) {
        let n = (w - x0).min(LANES * R);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (`forward` asserted it), and the bounds `run` relies on
        // hold: `y + k ≤ ph`, `pw ≥ w + k - 1`, `x0 + n ≤ w`, `n ≤ 16·R ≤ 64`, the weights and
        // bias sized as asserted above.
        #[allow(unsafe_code)]
        unsafe {
            run::<C, R>(g, y, x0, n, &mut tmp)
        };
        for p in 0..n {
            for c in 0..C {
                out[(x0 + p) * C + c] = tmp[c][p];
            }
        }
    }
}

/// Pixels `x0 .. x0 + n` of output row `y`, channel `c` into `tmp[c][..n]`.
///
/// # Safety
/// The CPU must support AVX-512F; `g.data` is `[cin][ph][pw]` with `y + k ≤ ph` and
/// `x0 + n + k - 1 ≤ pw`; `1 ≤ n ≤ 16·R ≤ 64`; `g.w` holds `C · cin · k · k` weights and
/// `g.bias` `C` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn run<const C: usize, const R: usize>(
    g: &Planes,
    y: usize,
    x0: usize,
    n: usize,
    tmp: &mut [[f32; 64]; C],
) {
    let (cin, pw, k) = (g.cin, g.pw, g.k);
    // Lanes of vector r that are pixels of the run: all but in the last, partial one.
    let mut mask = [0u16; R];
    for r in 0..R {
        let lanes = n.saturating_sub(r * LANES).min(LANES);
        mask[r] = ((1u32 << lanes) - 1) as u16;
    }
    let mut acc = [[_mm512_set1_ps(0.0); R]; C];
    for c in 0..C {
        for r in 0..R {
            acc[c][r] = _mm512_set1_ps(g.bias[c]);
        }
    }
    let base = g.data.as_ptr();
    // SAFETY (the loads): for input channel ci < cin, kernel row ky < k and column kx < k, lane
    // j of vector r reads padded pixel (y + ky, x0 + 16r + j + kx) of plane ci, and only where
    // 16r + j < n (masked loads do not touch masked-off lanes): row y + ky < ph and column
    // x0 + n - 1 + k - 1 < pw, inside `g.data` (cin · ph · pw long).
    unsafe {
        for ci in 0..cin {
            for ky in 0..k {
                let rowp = base.add((ci * g.ph + y + ky) * pw + x0);
                for kx in 0..k {
                    let mut wv = [_mm512_set1_ps(0.0); C];
                    for c in 0..C {
                        wv[c] = _mm512_set1_ps(g.w[((c * cin + ci) * k + ky) * k + kx]);
                    }
                    for r in 0..R {
                        let xv = _mm512_maskz_loadu_ps(mask[r], rowp.add(r * LANES + kx));
                        for c in 0..C {
                            acc[c][r] = _mm512_fmadd_ps(xv, wv[c], acc[c][r]);
                        }
                    }
                }
            }
        }
        let acc: [[__m512; R]; C] = acc;
        for c in 0..C {
            for r in 0..R {
                // tmp[c] holds 64 ≥ 16·R values.
                _mm512_storeu_ps(tmp[c].as_mut_ptr().add(r * LANES), acc[c][r]);
            }
        }
    }
}
