//! Stride-1 3×3 convolution by Winograd F(m×m, 3×3): each m×m output tile comes from an a×a
//! input tile (a = m + 2) through `Aᵀ [(Bᵀ d B) ⊙ U] A`, the products done as a² GEMMs of
//! `[tiles, cin] · [cin, cout]` — a²/m² multiply-adds per output and channel pair instead of 9.

use rayon::prelude::*;

use crate::act::{Act, reflect};
use crate::gemm::matmul;
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

/// `U = G g Gᵀ` for every (ci, co): `[a², cin, cout]`.
pub(super) fn weights(wg: &Winograd, w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let a = wg.m + 2;
    let mut u = vec![0f32; a * a * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            let g = |ky: usize, kx: usize| w[((co * cin + ci) * 3 + ky) * 3 + kx] as f64;
            for i in 0..a {
                for j in 0..a {
                    let mut acc = 0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            acc += wg.g[i * 3 + ky] as f64 * g(ky, kx) * wg.g[j * 3 + kx] as f64;
                        }
                    }
                    u[((i * a + j) * cin + ci) * cout + co] = acc as f32;
                }
            }
        }
    }
    u
}

/// `out[i] = Σ_k c[i][k] · input(k)` for `rows` outputs of `n` channels each; `c` is
/// `rows × cols` row-major. Zero coefficients are skipped; the loops vectorise over channels.
fn combine(
    c: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    input: impl Fn(usize) -> usize,
    src: &[f32],
    out: &mut [f32],
) {
    for (i, o) in out.chunks_exact_mut(n).take(rows).enumerate() {
        o.fill(0.0);
        for k in 0..cols {
            let coef = c[i * cols + k];
            if coef != 0.0 {
                let s = &src[input(k)..input(k) + n];
                for (o, s) in o.iter_mut().zip(s) {
                    *o += coef * s;
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
    let bias = bias.unwrap_or(&zero);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = out
        .data
        .par_chunks_mut(m * rows * w * cout)
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(v, mm), (bi, dst)| {
                let out_rows = dst.len() / (w * cout);
                let (t0, nt_rows) = (bi * rows, out_rows.div_ceil(m));
                let t = nt_rows * tw;
                v.resize(a * a * t * cin, 0.0);
                mm.resize(a * a * t * cout, 0.0);
                // Input transform Bᵀ d B on channel vectors.
                let mut d = vec![0f32; a * a * cin];
                let mut r = vec![0f32; a * a * cin];
                let mut e = vec![0f32; a * a * cin];
                for tr in 0..nt_rows {
                    for tc in 0..tw {
                        let ti = tr * tw + tc;
                        for i in 0..a {
                            let sy = my[m * (t0 + tr) + i];
                            for j in 0..a {
                                let src = (sy * w + mx[m * tc + j]) * cin;
                                d[(i * a + j) * cin..(i * a + j + 1) * cin]
                                    .copy_from_slice(&x.data[src..src + cin]);
                            }
                        }
                        // Rows: r[i][j] = Σ_k Bᵀ[i][k] d[k][j], stored column-major (j, i).
                        for j in 0..a {
                            combine(
                                wg.bt,
                                a,
                                a,
                                cin,
                                |k| (k * a + j) * cin,
                                &d,
                                &mut r[j * a * cin..(j + 1) * a * cin],
                            );
                        }
                        // Columns: e[i][j] = Σ_k r[i][k] Bᵀ[j][k].
                        for i in 0..a {
                            combine(
                                wg.bt,
                                a,
                                a,
                                cin,
                                |k| (k * a + i) * cin,
                                &r,
                                &mut e[i * a * cin..(i + 1) * a * cin],
                            );
                        }
                        for xi in 0..a * a {
                            let o = (xi * t + ti) * cin;
                            v[o..o + cin].copy_from_slice(&e[xi * cin..(xi + 1) * cin]);
                        }
                    }
                }
                for xi in 0..a * a {
                    matmul(
                        t,
                        cin,
                        cout,
                        &v[xi * t * cin..(xi + 1) * t * cin],
                        &u[xi * cin * cout..(xi + 1) * cin * cout],
                        &mut mm[xi * t * cout..(xi + 1) * t * cout],
                    );
                }
                // Output transform Aᵀ M A, plus bias; outputs past the image are dropped.
                let mut g = vec![0f32; a * a * cout];
                let mut s = vec![0f32; m * a * cout];
                let mut y = vec![0f32; m * m * cout];
                for tr in 0..nt_rows {
                    for tc in 0..tw {
                        let ti = tr * tw + tc;
                        for xi in 0..a * a {
                            let o = (xi * t + ti) * cout;
                            g[xi * cout..(xi + 1) * cout].copy_from_slice(&mm[o..o + cout]);
                        }
                        // Rows: s[i][j] = Σ_k Aᵀ[i][k] M[k][j], stored column-major (j, i).
                        for j in 0..a {
                            combine(
                                wg.at,
                                m,
                                a,
                                cout,
                                |k| (k * a + j) * cout,
                                &g,
                                &mut s[j * m * cout..(j + 1) * m * cout],
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
                                &mut y[i * m * cout..(i + 1) * m * cout],
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
                                for ((d, v), b) in dst[o..o + cout].iter_mut().zip(yv).zip(bias) {
                                    *d = v + b;
                                }
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
