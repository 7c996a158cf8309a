//! CPU kernels for kubestyle's style networks.
//!
//! burn's generic CPU path pads by copying, builds its im2col matrix on one thread and composes
//! instance normalisation from half a dozen tensor ops. The networks here only ever do
//! *(nearest ×2 upsample) → reflection pad → convolution → instance norm → activation (+ skip)*,
//! so this crate does exactly that, fused:
//!
//! * [`Conv::forward`]: upsampling and reflection padding are folded into the im2col index maps
//!   (nothing padded is ever materialised); the output is cut into fixed pixel blocks that rayon
//!   runs in parallel, each building its im2col block in a per-thread buffer and multiplying it
//!   with the pre-transposed weights by `gemm` (the GEMM crate burn-flex itself uses). The same
//!   pass sums each block's per-channel moments for the instance norm that follows.
//!   Three layer shapes get cheaper algorithms with the same result up to float rounding:
//!   stride-1 3×3 layers with ≥ 64 channels use Winograd F(2×2, 3×3) (16 instead of 36
//!   multiply-adds per output pair), nearest ×2 + 3×3 layers run as four 2×2 sub-pixel
//!   convolutions on the source (2.25× fewer), and large kernels with ≤ 4 output channels (the
//!   final 9×9 layers) run as row convolutions whose GEMM is wide enough for the microkernel.
//! * [`norm_apply`]: `x * scale + shift`, the activation and the residual add in one pass.
//!
//! Activations are NHWC ([`Act`]): a pixel's channels are contiguous, so an im2col row is a few
//! contiguous copies. Work is split into blocks independent of the thread count and partial sums
//! are combined in block order, so results are bit-identical run to run and across thread counts.

// The kernels index several arrays with one loop variable, written as the math reads.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

/// Instance-norm epsilon of both networks (PyTorch's default).
pub const EPS: f32 = 1e-5;

/// Stride-1 3×3 layers with at least this many input channels use Winograd.
const WINOGRAD_MIN_CHANNELS: usize = 64;

/// The Winograd variant those layers use.
const WINOGRAD: Winograd = WINOGRAD_F4;

/// Target size of one block of Winograd-domain input (a² × tiles × channels) in floats.
const WINOGRAD_BLOCK_FLOATS: usize = 1024 * 1024;

/// Large kernels with at most this many output channels run as row convolutions.
const ROWS_MAX_CHANNELS: usize = 4;

/// Output rows per block of a row convolution.
const ROWS_BLOCK: usize = 64;

/// Target size of one im2col block in floats (about 1 MiB: stays in L2 while gemm packs it).
const BLOCK_FLOATS: usize = 256 * 1024;

/// One image's activation, NHWC with batch 1: `data[(y * w + x) * c + ch]`.
#[derive(Clone, PartialEq)]
pub struct Act {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl std::fmt::Debug for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Act {}x{}x{}", self.h, self.w, self.c)
    }
}

impl Act {
    pub fn zeros(c: usize, h: usize, w: usize) -> Act {
        Act {
            c,
            h,
            w,
            data: vec![0.0; c * h * w],
        }
    }

    /// From planar (CHW) data, multiplied by `scale`, reflection-padded at the bottom and right
    /// so that H and W become multiples of `multiple`.
    pub fn from_planar(
        planar: &[f32],
        c: usize,
        h: usize,
        w: usize,
        multiple: usize,
        scale: f32,
    ) -> Act {
        assert_eq!(planar.len(), c * h * w, "planar data of the wrong length");
        let m = multiple.max(1);
        let (hp, wp) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let my: Vec<usize> = (0..hp).map(|i| reflect(i as isize, h)).collect();
        let mx: Vec<usize> = (0..wp).map(|i| reflect(i as isize, w)).collect();
        let mut out = Act::zeros(c, hp, wp);
        out.data
            .par_chunks_mut(wp * c)
            .enumerate()
            .for_each(|(y, row)| {
                let sy = my[y];
                for (x, px) in row.chunks_exact_mut(c).enumerate() {
                    let sx = mx[x];
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = planar[(ch * h + sy) * w + sx] * scale;
                    }
                }
            });
        out
    }

    /// The top-left `h × w` region as planar (CHW) data, each value `clamp(v * scale, lo, hi)`.
    pub fn to_planar(&self, h: usize, w: usize, scale: f32, lo: f32, hi: f32) -> Vec<f32> {
        assert!(
            h <= self.h && w <= self.w,
            "crop larger than the activation"
        );
        let c = self.c;
        let mut out = vec![0.0f32; c * h * w];
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(ch, plane)| {
                for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                    let src = &self.data[y * self.w * c..];
                    for (x, v) in row.iter_mut().enumerate() {
                        *v = (src[x * c + ch] * scale).clamp(lo, hi);
                    }
                }
            });
        out
    }
}

/// Reflection (without repeating the edge, like PyTorch's `ReflectionPad2d`) of index `i` into
/// `0..n`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Per-channel mean and biased variance over H × W.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl Stats {
    /// Combine per-block `(sum, sum of squares)` partials, in block order.
    fn from_partials(partials: &[(Vec<f64>, Vec<f64>)], c: usize, count: usize) -> Stats {
        let mut s = vec![0f64; c];
        let mut q = vec![0f64; c];
        for (ps, pq) in partials {
            for ch in 0..c {
                s[ch] += ps[ch];
                q[ch] += pq[ch];
            }
        }
        let n = count.max(1) as f64;
        let mean: Vec<f64> = s.iter().map(|v| v / n).collect();
        let var = q
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n - m * m).max(0.0) as f32)
            .collect();
        Stats {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            var,
        }
    }

    /// Statistics of an activation (what [`Conv::forward`] returns alongside its output).
    pub fn of(x: &Act) -> Stats {
        let c = x.c;
        let block = (BLOCK_FLOATS / c.max(1)).max(1) * c;
        let partials: Vec<(Vec<f64>, Vec<f64>)> =
            x.data.par_chunks(block).map(|b| moments(b, c)).collect();
        Stats::from_partials(&partials, c, x.h * x.w)
    }
}

/// Per-channel sum and sum of squares of NHWC data.
fn moments(data: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    // Accumulate over spans of whole pixels (long, vectorisable inner loops), fold per channel.
    let span = 64usize.div_ceil(c) * c;
    let mut s = vec![0f64; span];
    let mut q = vec![0f64; span];
    for part in data.chunks(span) {
        for ((s, q), &v) in s.iter_mut().zip(q.iter_mut()).zip(part) {
            let v = v as f64;
            *s += v;
            *q += v * v;
        }
    }
    let mut sc = vec![0f64; c];
    let mut qc = vec![0f64; c];
    for (i, (s, q)) in s.iter().zip(&q).enumerate() {
        sc[i % c] += s;
        qc[i % c] += q;
    }
    (sc, qc)
}

/// A block's `moments` when the caller wants statistics (else nothing).
fn block_moments(dst: &[f32], c: usize, want_stats: bool) -> (Vec<f64>, Vec<f64>) {
    if want_stats {
        moments(dst, c)
    } else {
        (Vec::new(), Vec::new())
    }
}

/// Add a per-channel bias to NHWC data.
fn add_bias(dst: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for px in dst.chunks_exact_mut(b.len()) {
            for (v, b) in px.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

/// A convolution with reflection padding of `k / 2` on every side, optionally preceded by a
/// nearest ×`up` upsample: the `ConvLayer` / `UpsampleConvLayer` of fast_neural_style and
/// every layer of MultiStyle26.
#[derive(Clone)]
pub struct Conv {
    pub k: usize,
    pub stride: usize,
    pub up: usize,
    pub cin: usize,
    pub cout: usize,
    /// Weights as `[k * k * cin, cout]`, row index `(ky * k + kx) * cin + ci`.
    wt: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// For a nearest ×2 upsample followed by a 3×3 convolution: the four sub-pixel 2×2
    /// kernels (see [`Conv::forward_subpixel`]), each `[4 * cin, cout]`.
    phases: Option<[Vec<f32>; 4]>,
    /// For a stride-1 3×3 convolution with many channels: Winograd weights `U = G g Gᵀ`,
    /// `a²` matrices of `[cin, cout]` (see [`Conv::forward_winograd`]).
    winograd: Option<Vec<f32>>,
    /// For a large kernel with few output channels: weights as `[k * cin, k * cout]`, row
    /// `kx * cin + ci`, column `ky * cout + co` (see [`Conv::forward_rows`]).
    rows: Option<Vec<f32>>,
}

impl std::fmt::Debug for Conv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Conv {}→{} {}x{} s{} up{}",
            self.cin, self.cout, self.k, self.k, self.stride, self.up
        )
    }
}

impl Conv {
    /// From PyTorch-layout weights `[cout, cin, k, k]` (OIHW) and an optional bias `[cout]`.
    pub fn from_oihw(
        w: &[f32],
        [cout, cin, kh, kw]: [usize; 4],
        bias: Option<Vec<f32>>,
        stride: usize,
        up: usize,
    ) -> Conv {
        assert_eq!(kh, kw, "square kernels only");
        assert_eq!(w.len(), cout * cin * kh * kw, "weights of the wrong length");
        assert!(
            kh % 2 == 1 && stride >= 1 && up >= 1,
            "odd kernel, stride and upsample >= 1"
        );
        if let Some(b) = &bias {
            assert_eq!(b.len(), cout, "bias of the wrong length");
        }
        let k = kh;
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
        let phases = (up == 2 && k == 3 && stride == 1).then(|| {
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
        });
        let winograd = (k == 3 && stride == 1 && up == 1 && cin >= WINOGRAD_MIN_CHANNELS)
            .then(|| winograd_weights(&WINOGRAD, w, cin, cout));
        let rows = (k >= 5 && stride == 1 && up == 1 && cout <= ROWS_MAX_CHANNELS).then(|| {
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
        });
        Conv {
            k,
            stride,
            up,
            cin,
            cout,
            wt,
            bias,
            phases,
            winograd,
            rows,
        }
    }

    /// Output height and width for an input of `h × w`.
    pub fn out_dims(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        let o = |n: usize| (n * self.up + 2 * p - self.k) / self.stride + 1;
        (o(h), o(w))
    }

    /// Source index along one axis for every position of the padded (and upsampled) axis.
    fn index_map(&self, n: usize) -> Vec<usize> {
        let p = (self.k / 2) as isize;
        let nu = n * self.up;
        (0..nu + 2 * self.k / 2)
            .map(|i| reflect(i as isize - p, nu) / self.up)
            .collect()
    }

    /// Convolve `x`; with `want_stats`, also return the output's per-channel statistics (taken
    /// while each block is still in cache).
    pub fn forward(&self, x: &Act, want_stats: bool) -> (Act, Option<Stats>) {
        assert_eq!(x.c, self.cin, "{self:?} applied to {} channels", x.c);
        assert!(
            x.h * self.up > self.k / 2 && x.w * self.up > self.k / 2,
            "{self:?}: input {}x{} smaller than the padding",
            x.h,
            x.w
        );
        if self.phases.is_some() {
            return self.forward_subpixel(x, want_stats);
        }
        if self.winograd.is_some() {
            return self.forward_winograd(x, want_stats);
        }
        if self.rows.is_some() {
            return self.forward_rows(x, want_stats);
        }
        let (ho, wo) = self.out_dims(x.h, x.w);
        let (my, mx) = (self.index_map(x.h), self.index_map(x.w));
        let kk = self.k * self.k * self.cin;
        let cout = self.cout;
        // Pixels per block: a fixed function of the layer and image, never of the thread count.
        let block_px = (BLOCK_FLOATS / kk).clamp(32, 8192);
        let mut out = Act::zeros(cout, ho, wo);
        // A window is "contiguous" along x when its k source columns are consecutive (no
        // upsampling, not at a reflected edge): then each kernel row is one copy.
        let contiguous: Vec<bool> = (0..wo)
            .map(|xo| {
                let s = xo * self.stride;
                (1..self.k).all(|j| mx[s + j] == mx[s] + j)
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
                self.im2col(x, &my, &mx, &contiguous, p0, m, wo, col);
                matmul(m, kk, cout, col, &self.wt, dst);
                add_bias(dst, self.bias.as_deref());
                block_moments(dst, cout, want_stats)
            })
            .collect();
        let stats = want_stats.then(|| Stats::from_partials(&partials, cout, ho * wo));
        (out, stats)
    }

    /// A k×k convolution with few output channels (the last 9×9 layer of both networks) as k
    /// row convolutions: each padded input row is convolved along x into `k * cout` partial
    /// sums (one GEMM of `[w, k * cin] · [k * cin, k * cout]`, wide enough for the
    /// microkernel), and output row y adds partial sums `ky` of padded rows `y + ky`. A ring of
    /// k rows per block of `ROWS_BLOCK` output rows; the k - 1 rows before a block are computed
    /// twice.
    fn forward_rows(&self, x: &Act, want_stats: bool) -> (Act, Option<Stats>) {
        let wr = self.rows.as_ref().expect("row weights");
        let (h, w, cin, cout, k) = (x.h, x.w, self.cin, self.cout, self.k);
        let (my, mx) = (self.index_map(h), self.index_map(w));
        let (k1, n1) = (k * cin, k * cout);
        let contiguous: Vec<bool> = (0..w)
            .map(|xo| (1..k).all(|j| mx[xo + j] == mx[xo] + j))
            .collect();
        let mut out = Act::zeros(cout, h, w);
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
                        match &self.bias {
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
                            for (px, part) in drow.chunks_exact_mut(cout).zip(src.chunks_exact(n1))
                            {
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

    /// Stride-1 3×3 convolution by Winograd F(m×m, 3×3) ([`WINOGRAD`]): each m×m output tile
    /// comes from an a×a input tile (a = m + 2) through `Aᵀ [(Bᵀ d B) ⊙ U] A`, the products done
    /// as a² GEMMs of `[tiles, cin] · [cin, cout]` — a²/m² multiply-adds per output and channel
    /// pair instead of 9. Blocks are whole tile rows, so each block's output is contiguous.
    fn forward_winograd(&self, x: &Act, want_stats: bool) -> (Act, Option<Stats>) {
        let u = self.winograd.as_ref().expect("winograd weights");
        winograd_conv(&WINOGRAD, u, self.bias.as_deref(), x, self.cout, want_stats)
    }

    /// Nearest ×2 upsample + 3×3 convolution as four 2×2 convolutions on the source image, one
    /// per output phase (2.25× fewer multiply-adds; nothing upsampled is materialised). Blocks
    /// are whole source rows, so each block's output rows are contiguous.
    fn forward_subpixel(&self, x: &Act, want_stats: bool) -> (Act, Option<Stats>) {
        let phases = self.phases.as_ref().expect("subpixel weights");
        let (h, w, cin, cout) = (x.h, x.w, self.cin, self.cout);
        let (ho, wo) = (2 * h, 2 * w);
        let kk = 4 * cin;
        let rows = (BLOCK_FLOATS / kk / w).clamp(1, h);
        let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
        let mut out = Act::zeros(cout, ho, wo);
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
                            let drow =
                                &mut dst[(2 * r + a) * wo * cout..(2 * r + a + 1) * wo * cout];
                            for j in 0..w {
                                let (o, p) = ((2 * j + b) * cout, r * w + j);
                                drow[o..o + cout].copy_from_slice(&tmp[p * cout..(p + 1) * cout]);
                            }
                        }
                    }
                    add_bias(dst, self.bias.as_deref());
                    block_moments(dst, cout, want_stats)
                },
            )
            .collect();
        let stats = want_stats.then(|| Stats::from_partials(&partials, cout, ho * wo));
        (out, stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn im2col(
        &self,
        x: &Act,
        my: &[usize],
        mx: &[usize],
        contiguous: &[bool],
        p0: usize,
        m: usize,
        wo: usize,
        col: &mut [f32],
    ) {
        let (k, s, cin) = (self.k, self.stride, self.cin);
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
}

/// `dst[m, n] = a[m, k] · b[k, n]`, all row-major and contiguous, on the calling thread.
fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    // SAFETY: the assertion above guarantees that every index gemm touches — row i < m, column
    // j < n, inner index l < k, at offsets i*k + l, l*n + j and i*n + j with unit column stride —
    // lies inside `a`, `b` and `dst`; `dst` is borrowed mutably, so nothing else aliases it, and
    // `read_dst = false` means its previous contents are never read.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

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
fn winograd_weights(wg: &Winograd, w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
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
/// [`winograd_weights`]; output statistics as in [`Conv::forward`].
fn winograd_conv(
    wg: &Winograd,
    u: &[f32],
    bias: Option<&[f32]>,
    x: &Act,
    cout: usize,
    want_stats: bool,
) -> (Act, Option<Stats>) {
    let (h, w, cin) = (x.h, x.w, x.c);
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
    let mut out = Act::zeros(cout, h, w);
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

/// What follows the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    None,
    Relu,
    Sigmoid,
}

/// Instance normalisation with per-channel `gamma`, `beta` and the given statistics, then
/// `post`, then `+ residual` — in one pass over `x`.
pub fn norm_apply(
    x: &mut Act,
    stats: &Stats,
    gamma: &[f32],
    beta: &[f32],
    post: Post,
    residual: Option<&Act>,
) {
    let c = x.c;
    assert!(stats.mean.len() == c && gamma.len() == c && beta.len() == c);
    let scale: Vec<f32> = (0..c)
        .map(|i| gamma[i] / (stats.var[i] + EPS).sqrt())
        .collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - stats.mean[i] * scale[i]).collect();
    // Repeat the per-channel vectors to a span of whole pixels at least 64 long, so that the
    // inner loops are long and branch-free (and vectorise) whatever the channel count.
    let span = 64usize.div_ceil(c) * c;
    let (scale, shift) = (scale.repeat(span / c), shift.repeat(span / c));
    let block = (BLOCK_FLOATS / span).max(1) * span;
    let apply = |chunk: &mut [f32], res: Option<&[f32]>| {
        for (i, part) in chunk.chunks_mut(span).enumerate() {
            let lane = scale.iter().zip(&shift);
            match post {
                Post::None => part
                    .iter_mut()
                    .zip(lane)
                    .for_each(|(v, (a, b))| *v = *v * a + b),
                Post::Relu => part
                    .iter_mut()
                    .zip(lane)
                    .for_each(|(v, (a, b))| *v = (*v * a + b).max(0.0)),
                Post::Sigmoid => part
                    .iter_mut()
                    .zip(lane)
                    .for_each(|(v, (a, b))| *v = 1.0 / (1.0 + (-(*v * a + b)).exp())),
            }
            if let Some(r) = res {
                let r = &r[i * span..i * span + part.len()];
                part.iter_mut().zip(r).for_each(|(v, r)| *v += r);
            }
        }
    };
    match residual {
        Some(r) => {
            assert_eq!(r.data.len(), x.data.len(), "residual of another shape");
            x.data
                .par_chunks_mut(block)
                .zip(r.data.par_chunks(block))
                .for_each(|(d, r)| apply(d, Some(r)));
        }
        None => x.data.par_chunks_mut(block).for_each(|d| apply(d, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward reference: upsample, reflect-pad, convolve, all on planar data.
    fn reference(
        x: &Act,
        w: &[f32],
        dims: [usize; 4],
        bias: Option<&[f32]>,
        s: usize,
        up: usize,
    ) -> Act {
        let [cout, cin, k, _] = dims;
        let (hu, wu) = (x.h * up, x.w * up);
        let p = k / 2;
        let ho = (hu + 2 * p - k) / s + 1;
        let wo = (wu + 2 * p - k) / s + 1;
        let mut out = Act::zeros(cout, ho, wo);
        for yo in 0..ho {
            for xo in 0..wo {
                for co in 0..cout {
                    let mut acc = bias.map_or(0.0f64, |b| b[co] as f64);
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let yy = reflect((yo * s + ky) as isize - p as isize, hu) / up;
                                let xx = reflect((xo * s + kx) as isize - p as isize, wu) / up;
                                acc += x.data[(yy * x.w + xx) * cin + ci] as f64
                                    * w[((co * cin + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    out.data[(yo * wo + xo) * cout + co] = acc as f32;
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn reflect_matches_pytorch() {
        // ReflectionPad2d(2) of [0, 1, 2, 3]: [2, 1, 0, 1, 2, 3, 2, 1].
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(reflect(-1, 1), 0);
    }

    #[test]
    fn conv_matches_reference_for_every_layer_shape() {
        // (cin, cout, k, stride, up, h, w, bias): every shape the two networks use, small images,
        // odd sizes, and more pixels than one block so block edges are crossed.
        let cases = [
            (3, 8, 9, 1, 1, 13, 11, true),
            (8, 16, 3, 2, 1, 9, 10, false),
            (16, 16, 3, 1, 1, 7, 5, true),
            (16, 8, 3, 1, 2, 6, 7, false),
            (8, 4, 3, 1, 2, 1, 3, true),
            (32, 16, 3, 1, 2, 70, 9, false),
            (4, 3, 9, 1, 1, 10, 12, true),
            (32, 3, 9, 1, 1, 150, 11, true),
            (4, 3, 9, 1, 1, 5, 70, false),
            (32, 32, 3, 1, 1, 40, 37, false),
            (64, 16, 3, 1, 1, 9, 7, true),
            (64, 64, 3, 1, 1, 33, 20, false),
            (128, 8, 3, 1, 1, 2, 3, false),
            (3, 4, 3, 1, 1, 2, 2, false),
        ];
        for (n, &(cin, cout, k, s, up, h, w, has_bias)) in cases.iter().enumerate() {
            let x = Act {
                c: cin,
                h,
                w,
                data: pseudo(cin * h * w, n as u32),
            };
            let wts = pseudo(cout * cin * k * k, 100 + n as u32);
            let bias = has_bias.then(|| pseudo(cout, 200 + n as u32));
            let conv = Conv::from_oihw(&wts, [cout, cin, k, k], bias.clone(), s, up);
            let (got, stats) = conv.forward(&x, true);
            let want = reference(&x, &wts, [cout, cin, k, k], bias.as_deref(), s, up);
            assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c), "case {n}");
            let max = got
                .data
                .iter()
                .zip(&want.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-4, "case {n} {conv:?}: max abs diff {max}");
            let direct = Stats::of(&got);
            assert_eq!(stats.as_ref(), Some(&direct), "case {n}: fused stats");
        }
    }

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
                let u = winograd_weights(wg, &wts, cin, cout);
                let (got, _) = winograd_conv(wg, &u, Some(&bias), &x, cout, false);
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

    #[test]
    fn stats_are_mean_and_biased_variance() {
        let x = Act {
            c: 2,
            h: 1,
            w: 4,
            data: vec![1.0, 10.0, 2.0, 10.0, 3.0, 10.0, 4.0, 10.0],
        };
        let s = Stats::of(&x);
        assert_eq!(s.mean, vec![2.5, 10.0]);
        assert_eq!(s.var, vec![1.25, 0.0]);
    }

    #[test]
    fn norm_apply_normalises_activates_and_adds() {
        let mut x = Act {
            c: 2,
            h: 1,
            w: 2,
            data: vec![1.0, -4.0, 3.0, 4.0],
        };
        let res = Act {
            c: 2,
            h: 1,
            w: 2,
            data: vec![10.0, 20.0, 30.0, 40.0],
        };
        let s = Stats::of(&x);
        norm_apply(&mut x, &s, &[1.0, 2.0], &[0.0, 0.5], Post::Relu, Some(&res));
        let e = (1.0f32 + EPS).sqrt();
        let want = [
            10.0,
            20.0 + 0.0,
            30.0 + 1.0 / e,
            40.0 + 2.0 / ((16.0 + EPS).sqrt() / 4.0) + 0.5,
        ];
        for (g, w) in x.data.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{:?} vs {want:?}", x.data);
        }
    }

    #[test]
    fn planar_round_trip_with_reflect_padding() {
        let (c, h, w) = (3, 5, 6);
        let planar = pseudo(c * h * w, 7);
        let a = Act::from_planar(&planar, c, h, w, 4, 2.0);
        assert_eq!((a.h, a.w), (8, 8));
        // Row 5 is row 3 reflected (5 → 2*(5-1) - 5 = 3).
        assert_eq!(a.data[(5 * 8) * c], planar[3 * w] * 2.0);
        let back = a.to_planar(h, w, 0.5, -1.0, 1.0);
        assert_eq!(back, planar);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let x = Act {
            c: 16,
            h: 64,
            w: 48,
            data: pseudo(16 * 64 * 48, 3),
        };
        let conv = Conv::from_oihw(&pseudo(16 * 16 * 9, 4), [16, 16, 3, 3], None, 1, 1);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map(|p| p.install(|| conv.forward(&x, true)))
                .ok()
        };
        let (a, b) = (run(1), run(3));
        assert!(a.is_some());
        assert_eq!(a, b);
    }
}
