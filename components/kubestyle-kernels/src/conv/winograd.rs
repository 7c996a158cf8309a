//! Stride-1 3×3 convolution by Winograd F(m×m, 3×3): each m×m output tile comes from an a×a
//! input tile (a = m + 2) through `Aᵀ [(Bᵀ d B) ⊙ U] A`, the products done as a² GEMMs of
//! `[tiles, cin] · [cin, cout]` — a²/m² multiply-adds per output and channel pair instead of 9.

use rayon::prelude::*;

use crate::act::{Act, reflect};
use crate::gemm::matmul;
use crate::simd::with_avx512;
use crate::stats::{Stats, block_moments};

/// The Winograd variant the layers use.
pub(super) const WINOGRAD: Winograd = WINOGRAD_F4;

/// Target size of one block of Winograd-domain input (a² × tiles × channels) in floats.
const WINOGRAD_BLOCK_FLOATS: usize = 1024 * 1024;

/// A Winograd F(m×m, 3×3) algorithm: `bt` is Bᵀ (a×a), `g` is G (a×3), `at` is Aᵀ (m×a),
/// all row-major, a = m + 2.
#[derive(Debug)]
pub struct Winograd {
    pub m: usize,
    pub bt: &'static [f32],
    pub g: &'static [f32],
    pub at: &'static [f32],
}

/// F(2×2, 3×3) (Lavin & Gray): 16 multiplies per 4 outputs.
pub const WINOGRAD_F2: Winograd = Winograd {
    m: 2,
    bt: &[
        1.0, 0.0, -1.0, 0.0, //
        0.0, 1.0, 1.0, 0.0, //
        0.0, -1.0, 1.0, 0.0, //
        0.0, 1.0, 0.0, -1.0,
    ],
    g: &[
        1.0, 0.0, 0.0, //
        0.5, 0.5, 0.5, //
        0.5, -0.5, 0.5, //
        0.0, 0.0, 1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4×4, 3×3) (Lavin & Gray, points 0, ±1, ±2): 36 multiplies per 16 outputs.
pub const WINOGRAD_F4: Winograd = Winograd {
    m: 4,
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    g: &[
        1.0 / 4.0,
        0.0,
        0.0, //
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0, //
        -1.0 / 6.0,
        1.0 / 6.0,
        -1.0 / 6.0, //
        1.0 / 24.0,
        1.0 / 12.0,
        1.0 / 6.0, //
        1.0 / 24.0,
        -1.0 / 12.0,
        1.0 / 6.0, //
        0.0,
        0.0,
        1.0,
    ],
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// `U = G g Gᵀ` for every (ci, co): `[a², cin, cout]`. Rows `(i·a + j, ci)` in parallel (a
/// package's load: 10 layers of 128 × 128 took ~50 ms on one thread); each value is the same
/// sum in the same order either way.
pub(super) fn weights(wg: &Winograd, w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let a = wg.m + 2;
    let mut u = vec![0f32; a * a * cin * cout];
    u.par_chunks_mut(cout).enumerate().for_each(|(row, out)| {
        let (ij, ci) = (row / cin, row % cin);
        let (i, j) = (ij / a, ij % a);
        for (co, o) in out.iter_mut().enumerate() {
            let g = |ky: usize, kx: usize| w[((co * cin + ci) * 3 + ky) * 3 + kx] as f64;
            let mut acc = 0f64;
            for ky in 0..3 {
                for kx in 0..3 {
                    acc += wg.g[i * 3 + ky] as f64 * g(ky, kx) * wg.g[j * 3 + kx] as f64;
                }
            }
            *o = acc as f32;
        }
    });
    u
}

/// `out[output(i)..][..n] = Σ_k c[i][k] · src[input(k)..][..n]` for `rows` outputs of `n`
/// channels each; `c` is `rows × cols` row-major. Zero coefficients are skipped; the loops
/// vectorise over channels (inlined into [`block`], which runs under
/// [`with_avx512`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn combine(
    c: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    input: impl Fn(usize) -> usize,
    src: &[f32],
    output: impl Fn(usize) -> usize,
    out: &mut [f32],
) {
    for i in 0..rows {
        let o = &mut out[output(i)..][..n];
        o.fill(0.0);
        for k in 0..cols {
            let coef = c[i * cols + k];
            if coef != 0.0 {
                let s = &src[input(k)..][..n];
                for (o, s) in o.iter_mut().zip(s) {
                    *o += coef * s;
                }
            }
        }
    }
}

/// What every block of one layer shares.
struct Layer<'a> {
    wg: &'a Winograd,
    u: &'a [f32],
    bias: &'a [f32],
    x: &'a Act,
    cout: usize,
    /// Source row / column of every position of the padded input a tile can read.
    my: &'a [usize],
    mx: &'a [usize],
    /// Tile rows per block, tiles per row.
    rows: usize,
    tw: usize,
}

/// Block `bi` of the output (`dst`: whole output rows) with per-thread scratch `v` (the
/// Winograd-domain input) and `mm` (its products). The transforms read the input and write
/// the products' sums in place (no gathered copies).
#[inline(always)]
fn block(l: &Layer, bi: usize, dst: &mut [f32], v: &mut Vec<f32>, mm: &mut Vec<f32>) {
    let (wg, x, cout, tw) = (l.wg, l.x, l.cout, l.tw);
    let (w, cin) = (x.w, x.c);
    let (m, a) = (wg.m, wg.m + 2);
    let out_rows = dst.len() / (w * cout);
    let (t0, nt_rows) = (bi * l.rows, out_rows.div_ceil(m));
    let t = nt_rows * tw;
    v.resize(a * a * t * cin, 0.0);
    mm.resize(a * a * t * cout, 0.0);
    // Input transform Bᵀ d B on channel vectors, read from the input in place and written
    // straight to its place in `v` (`[a²][t][cin]`).
    let mut r = vec![0f32; a * a * cin];
    for tr in 0..nt_rows {
        let y0 = m * (t0 + tr);
        for tc in 0..tw {
            let ti = tr * tw + tc;
            // Rows: r[i][j] = Σ_k Bᵀ[i][k] d[k][j], stored column-major (j, i).
            for j in 0..a {
                let sx = l.mx[m * tc + j];
                combine(
                    wg.bt,
                    a,
                    a,
                    cin,
                    |k| (l.my[y0 + k] * w + sx) * cin,
                    &x.data,
                    |i| (j * a + i) * cin,
                    &mut r,
                );
            }
            // Columns: e[i][j] = Σ_k r[i][k] Bᵀ[j][k], into v[i·a + j][ti].
            for i in 0..a {
                combine(
                    wg.bt,
                    a,
                    a,
                    cin,
                    |k| (k * a + i) * cin,
                    &r,
                    |j| ((i * a + j) * t + ti) * cin,
                    v,
                );
            }
        }
    }
    for xi in 0..a * a {
        matmul(
            t,
            cin,
            cout,
            &v[xi * t * cin..(xi + 1) * t * cin],
            &l.u[xi * cin * cout..(xi + 1) * cin * cout],
            &mut mm[xi * t * cout..(xi + 1) * t * cout],
        );
    }
    // Output transform Aᵀ M A, plus bias; outputs past the image are dropped.
    let mut s = vec![0f32; m * a * cout];
    let mut y = vec![0f32; m * m * cout];
    for tr in 0..nt_rows {
        for tc in 0..tw {
            let ti = tr * tw + tc;
            // Rows: s[i][j] = Σ_k Aᵀ[i][k] M[k][j], read from `mm` in place, stored
            // column-major (j, i).
            for j in 0..a {
                combine(
                    wg.at,
                    m,
                    a,
                    cout,
                    |k| ((k * a + j) * t + ti) * cout,
                    mm,
                    |i| (j * m + i) * cout,
                    &mut s,
                );
            }
            // Columns: y[i][j] = Σ_k s[i][k] Aᵀ[j][k].
            for i in 0..m {
                combine(
                    wg.at,
                    m,
                    a,
                    cout,
                    |k| (k * m + i) * cout,
                    &s,
                    |j| (i * m + j) * cout,
                    &mut y,
                );
            }
            for i in 0..m {
                let oy = m * tr + i;
                if oy >= out_rows {
                    break;
                }
                for j in 0..m {
                    let ox = m * tc + j;
                    if ox >= w {
                        break;
                    }
                    let o = (oy * w + ox) * cout;
                    let yv = &y[(i * m + j) * cout..(i * m + j + 1) * cout];
                    for ((d, v), b) in dst[o..o + cout].iter_mut().zip(yv).zip(l.bias) {
                        *d = v + b;
                    }
                }
            }
        }
    }
}

/// Winograd convolution (stride 1, 3×3, reflection padding 1) of NHWC `x` with weights from
/// [`weights`]; output statistics as in [`Conv::forward`](crate::Conv::forward). Blocks are whole
/// tile rows, so each block's output is contiguous.
pub(super) fn forward(
    wg: &Winograd,
    u: &[f32],
    bias: Option<&[f32]>,
    x: &Act,
    want_stats: bool,
    mut out: Act,
) -> (Act, Option<Stats>) {
    let (h, w, cin, cout) = (x.h, x.w, x.c, out.c);
    assert!(out.h == h && out.w == w, "winograd output of another size");
    let (m, a) = (wg.m, wg.m + 2);
    let (th, tw) = (h.div_ceil(m), w.div_ceil(m));
    // Source index of every position of the (reflect-)padded input a tile can read; positions
    // past the padded edge (sizes not a multiple of m) only feed outputs that are dropped.
    let map = |n: usize, tiles: usize| -> Vec<usize> {
        (0..m * tiles + 2)
            .map(|i| reflect(i.min(n + 1) as isize - 1, n))
            .collect()
    };
    let (my, mx) = (map(h, th), map(w, tw));
    // Small enough for the cache, and at least ~16 blocks so that threads stay balanced.
    let rows = (WINOGRAD_BLOCK_FLOATS / (a * a * cin.max(cout) * tw))
        .min(th.div_ceil(16))
        .max(1);
    let zero = vec![0f32; cout];
    let layer = Layer {
        wg,
        u,
        bias: bias.unwrap_or(&zero),
        x,
        cout,
        my: &my,
        mx: &mx,
        rows,
        tw,
    };
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(m * rows * w * cout)
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(v, mm), (bi, dst)| {
                // The transforms' channel loops on 16 floats at a time where the CPU can.
                with_avx512(|| block(&layer, bi, dst, v, mm));
                block_moments(dst, cout, want_stats)
            },
        )
        .collect();
    let stats = want_stats.then(|| Stats::from_partials(&partials, cout, h * w));
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pseudo, reference};

    #[test]
    fn both_winograd_variants_match_the_direct_convolution() {
        for (n, &(cin, cout, h, w)) in [
            (64, 16, 9, 7),
            (64, 64, 33, 20),
            (128, 8, 2, 3),
            (8, 8, 13, 6),
        ]
        .iter()
        .enumerate()
        {
            let x = Act {
                c: cin,
                h,
                w,
                data: pseudo(cin * h * w, 300 + n as u32),
            };
            let wts = pseudo(cout * cin * 9, 400 + n as u32);
            let bias = pseudo(cout, 500 + n as u32);
            let want = reference(&x, &wts, [cout, cin, 3, 3], Some(&bias), 1, 1);
            for wg in [&WINOGRAD_F2, &WINOGRAD_F4] {
                let u = weights(wg, &wts, cin, cout);
                let (got, _) = forward(wg, &u, Some(&bias), &x, false, Act::zeros(cout, x.h, x.w));
                let max = got
                    .data
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(max < 1e-4, "F({}) case {n}: max abs diff {max}", wg.m);
            }
        }
    }
}
