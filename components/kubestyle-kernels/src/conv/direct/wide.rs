//! The direct kernel for a multiple of 32 output channels: a tile of `P` pixels × `16·V`
//! channels in `P · V` = 24 registers; for each window value, `V` weight vectors (shared by the
//! tile's pixels), one broadcast and `V` fused multiply-adds per pixel — a GEMM microkernel
//! whose left operand is the activation itself.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_storeu_ps,
};

use super::{LANES, available, forward_tiles};
use crate::act::Act;
use crate::conv::Conv;
use crate::stats::Stats;

/// Whether a layer of this shape runs here (on a CPU where the kernels are [`available`]).
pub(in crate::conv) fn suits(cout: usize, up: usize) -> bool {
    up == 1 && cout.is_multiple_of(32)
}

/// Output channels per register tile: 64 (4 vectors × 6 pixels) when they divide `cout`, else
/// 32 (2 vectors × 12 pixels); 24 accumulators either way.
fn chunk_width(cout: usize) -> usize {
    if cout.is_multiple_of(64) { 64 } else { 32 }
}

/// OIHW weights `[cout, cin, k, k]` as `[cout / cw][k][k * cin][cw]` (cw = [`chunk_width`]):
/// for each chunk of output channels and kernel row, row `kx * cin + ci` holds that input
/// value's weights for the chunk's channels.
pub(in crate::conv) fn weights(w: &[f32], k: usize, cin: usize, cout: usize) -> Vec<f32> {
    let cw = chunk_width(cout);
    let l = k * cin;
    let mut d = vec![0f32; k * l * cout];
    for co in 0..cout {
        let (c, v) = (co / cw, co % cw);
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    d[((c * k + ky) * l + kx * cin + ci) * cw + v] =
                        w[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    d
}

/// [`tile`] for one tile shape.
type Tile = fn(&[&[f32]], usize, &[f32], &[f32], &mut [f32], usize, usize);

/// `conv` (no upsampling, `cout % 32 == 0`) applied to `x` with the weights from [`weights`];
/// statistics as in [`Conv::forward`].
pub(in crate::conv) fn forward(
    conv: &Conv,
    wd: &[f32],
    x: &Act,
    want_stats: bool,
    out: Act,
) -> (Act, Option<Stats>) {
    let (cout, l) = (conv.cout, conv.k * conv.cin);
    let bias = conv.bias.clone().unwrap_or_else(|| vec![0.0; cout]);
    let cw = chunk_width(cout);
    let chunks = |windows: &[&[f32]], n: usize, out: &mut [f32], tile: Tile| {
        for (c, wc) in wd.chunks_exact(conv.k * l * cw).enumerate() {
            tile(
                windows,
                l,
                wc,
                &bias[c * cw..][..cw],
                &mut out[c * cw..],
                cout,
                n,
            );
        }
    };
    match cw {
        64 => forward_tiles::<6>(conv, x, want_stats, out, |w, n, o| {
            chunks(w, n, o, tile::<6, 4>)
        }),
        _ => forward_tiles::<12>(conv, x, want_stats, out, |w, n, o| {
            chunks(w, n, o, tile::<12, 2>)
        }),
    }
}

/// One tile: for `p < n`, `out[p * stride ..][.. 16·V]` = `bias` + Σ over kernel rows `ky` and
/// `j < l` of `windows[ky * P + p][j] · w[(ky * l + j) * 16·V ..][.. 16·V]`.
///
/// Panics unless every window holds `l` values, `w` is `[k][l][16·V]` for the `k` rows
/// `windows` has, `bias` holds `16·V` values and `out` reaches the `n`-th pixel.
fn tile<const P: usize, const V: usize>(
    windows: &[&[f32]],
    l: usize,
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
    n: usize,
) {
    let cw = V * LANES;
    assert!(windows.len().is_multiple_of(P) && windows.iter().all(|a| a.len() == l));
    assert!(w.len() == windows.len() / P * l * cw && bias.len() == cw);
    assert!(n >= 1 && n <= P && out.len() >= (n - 1) * stride + cw);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available(), "the direct kernel needs AVX-512");
        // SAFETY: AVX-512F is present (checked just above), the only requirement of
        // `tile_avx512` beyond the bounds asserted on entry to this function.
        #[allow(unsafe_code)]
        unsafe {
            tile_avx512::<P, V>(windows, l, w, bias, out, stride, n)
        }
    }
}

/// [`tile`] on AVX-512: `P × V` accumulators in registers; per window value, `V` weight vectors
/// (loaded once, shared by the `P` pixels), one broadcast and `V` fused multiply-adds per pixel.
///
/// # Safety
/// The CPU must support AVX-512F, and the arguments must satisfy the assertions of [`tile`]
/// (every window `l` long, `w` of `windows.len() / P · l · 16·V` values, `bias` of `16·V`,
/// `1 ≤ n ≤ P` and `out` at least `(n - 1) · stride + 16·V` long).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn tile_avx512<const P: usize, const V: usize>(
    windows: &[&[f32]],
    l: usize,
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    stride: usize,
    n: usize,
) {
    let cw = V * LANES;
    let b = bias.as_ptr();
    // SAFETY (all loads and stores below): `b + v·16` for v < V reads within `bias` (16·V
    // long). For kernel row ky < windows.len() / P, window value j < l and v < V the weight
    // pointer is `w + (ky·l + j)·16V + 16v`, within `w` (k·l·16V long). Window pointers are
    // `windows[ky·P + p] + j` with j < l, within that window (l long). Stores for p < n go to
    // `out + p·stride + 16v`, and (n - 1)·stride + 16V ≤ out.len(). The loads and stores are
    // unaligned (`loadu`/`storeu`), so only these bounds matter.
    unsafe {
        let mut acc: [[__m512; V]; P] = [[_mm512_set1_ps(0.0); V]; P];
        for v in 0..V {
            let bv = _mm512_loadu_ps(b.add(v * LANES));
            for p in 0..P {
                acc[p][v] = bv;
            }
        }
        let mut wp = w.as_ptr();
        for rows in windows.chunks_exact(P) {
            let mut a = [std::ptr::null::<f32>(); P];
            for p in 0..P {
                a[p] = rows[p].as_ptr();
            }
            for j in 0..l {
                let mut wv = [_mm512_set1_ps(0.0); V];
                for v in 0..V {
                    wv[v] = _mm512_loadu_ps(wp.add(v * LANES));
                }
                for p in 0..P {
                    let x = _mm512_set1_ps(*a[p].add(j));
                    for v in 0..V {
                        acc[p][v] = _mm512_fmadd_ps(x, wv[v], acc[p][v]);
                    }
                }
                wp = wp.add(cw);
            }
        }
        let o = out.as_mut_ptr();
        for p in 0..P {
            if p < n {
                for v in 0..V {
                    _mm512_storeu_ps(o.add(p * stride + v * LANES), acc[p][v]);
                }
            }
        }
    }
}
