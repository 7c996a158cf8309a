//! Reflection-padded (optionally nearest-upsampled) convolution: [`Conv`] and the choice of its
//! [`Algorithm`], made once per layer in [`Conv::from_oihw`]. Each algorithm lives in its own
//! module, with its weight transform and its forward pass:
//!
//! * [`im2col`]: the general path, im2col blocks times the transposed weights;
//! * [`subpixel`]: nearest ×2 upsample + 3×3, as four 2×2 convolutions on the source;
//! * [`winograd`]: stride-1 3×3 with many channels, Winograd F(m×m, 3×3);
//! * [`rows`]: large kernels with few output channels, as row convolutions;
//! * [`direct`]: on AVX-512, layers with a multiple of 32 output channels, straight from the
//!   activation (no im2col).

mod direct;
mod im2col;
mod rows;
mod subpixel;
mod winograd;

pub use winograd::{WINOGRAD_F2, WINOGRAD_F4, Winograd};

use crate::act::{Act, reflect};
use crate::stats::Stats;

/// Stride-1 3×3 layers with at least this many input channels use Winograd.
const WINOGRAD_MIN_CHANNELS: usize = 64;

/// Large kernels with at most this many output channels run as row convolutions.
const ROWS_MAX_CHANNELS: usize = 4;

/// How a [`Conv`] runs, with the weights pre-transformed for that algorithm.
#[derive(Clone)]
enum Algorithm {
    /// The general path: weights as `[k * k * cin, cout]`, row index `(ky * k + kx) * cin + ci`.
    Im2col { wt: Vec<f32> },
    /// For a nearest ×2 upsample followed by a 3×3 convolution: the four sub-pixel 2×2
    /// kernels (see [`subpixel`]), each `[4 * cin, cout]`.
    Subpixel { phases: [Vec<f32>; 4] },
    /// For a stride-1 3×3 convolution with many channels: Winograd weights `U = G g Gᵀ` of the
    /// variant `wg`, `a²` matrices of `[cin, cout]` (see [`winograd`]).
    Winograd { wg: &'static Winograd, u: Vec<f32> },
    /// For a large kernel with few output channels: weights as `[k * cin, k * cout]`, row
    /// `kx * cin + ci`, column `ky * cout + co` (see [`rows`]).
    Rows { wr: Vec<f32> },
    /// For a layer with a multiple of 32 output channels and no upsampling, on a CPU with
    /// AVX-512: weights as `[cout / cw][k][k * cin][cw]` (see [`direct::wide`]).
    Direct { wd: Vec<f32> },
    /// For a stride-1 layer (upsampled or not) with at most 8 input and 4 output channels, on
    /// a CPU with AVX-512: OIHW weights as given (see [`direct::planar`]).
    Planar { w: Vec<f32> },
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
    bias: Option<Vec<f32>>,
    algorithm: Algorithm,
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
        let algorithm = if direct::planar::suits(stride, cin, cout) && direct::available() {
            Algorithm::Planar { w: w.to_vec() }
        } else if up == 2 && k == 3 && stride == 1 {
            Algorithm::Subpixel {
                phases: subpixel::weights(w, cin, cout),
            }
        } else if k == 3 && stride == 1 && up == 1 && cin >= WINOGRAD_MIN_CHANNELS {
            let wg = &winograd::WINOGRAD;
            Algorithm::Winograd {
                wg,
                u: winograd::weights(wg, w, cin, cout),
            }
        } else if k >= 5 && stride == 1 && up == 1 && cout <= ROWS_MAX_CHANNELS {
            Algorithm::Rows {
                wr: rows::weights(w, k, cin, cout),
            }
        } else if direct::wide::suits(cout, up) && direct::available() {
            Algorithm::Direct {
                wd: direct::wide::weights(w, k, cin, cout),
            }
        } else {
            Algorithm::Im2col {
                wt: im2col::weights(w, k, cin, cout),
            }
        };
        Conv {
            k,
            stride,
            up,
            cin,
            cout,
            bias,
            algorithm,
        }
    }

    /// Which algorithm [`Conv::forward`] runs for this layer: `"im2col"`, `"subpixel"`,
    /// `"winograd"`, `"rows"`, `"direct"` or `"planar"`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Im2col { .. } => "im2col",
            Algorithm::Subpixel { .. } => "subpixel",
            Algorithm::Winograd { .. } => "winograd",
            Algorithm::Rows { .. } => "rows",
            Algorithm::Direct { .. } => "direct",
            Algorithm::Planar { .. } => "planar",
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
        self.forward_in(x, want_stats, Vec::new())
    }

    /// [`Conv::forward`] into `buf`'s allocation (see [`Act::reuse`]): memory written before
    /// spares the page faults of a fresh allocation (15–20% of a large layer's time). Every
    /// algorithm writes every output value, so what `buf` held does not matter.
    pub fn forward_in(&self, x: &Act, want_stats: bool, buf: Vec<f32>) -> (Act, Option<Stats>) {
        assert_eq!(x.c, self.cin, "{self:?} applied to {} channels", x.c);
        assert!(
            x.h * self.up > self.k / 2 && x.w * self.up > self.k / 2,
            "{self:?}: input {}x{} smaller than the padding",
            x.h,
            x.w
        );
        let (ho, wo) = self.out_dims(x.h, x.w);
        // Every algorithm writes every value of its output (tested with a buffer full of NaN).
        let out = Act::reuse(buf, self.cout, ho, wo);
        match &self.algorithm {
            Algorithm::Im2col { wt } => im2col::forward(self, wt, x, want_stats, out),
            Algorithm::Subpixel { phases } => subpixel::forward(self, phases, x, want_stats, out),
            Algorithm::Winograd { wg, u } => {
                winograd::forward(wg, u, self.bias.as_deref(), x, want_stats, out)
            }
            Algorithm::Rows { wr } => rows::forward(self, wr, x, want_stats, out),
            Algorithm::Direct { wd } => direct::wide::forward(self, wd, x, want_stats, out),
            Algorithm::Planar { w } => direct::planar::forward(self, w, x, want_stats, out),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pseudo, reference};

    #[test]
    fn from_oihw_picks_the_algorithm_for_each_layer_shape() {
        // (cin, cout, k, stride, up, algorithm): the layers of TransformerNet, then the 32-channel
        // residual layers of MultiStyle26 (too few channels for Winograd). Layers with a multiple
        // of 32 output channels run direct where the CPU has AVX-512.
        let avx512 = direct::available();
        let d = if avx512 { "direct" } else { "im2col" };
        let planar = if avx512 { "planar" } else { "rows" };
        let cases = [
            (3, 32, 9, 1, 1, d),
            (32, 64, 3, 2, 1, d),
            (64, 128, 3, 2, 1, d),
            (128, 128, 3, 1, 1, "winograd"),
            (128, 64, 3, 1, 2, "subpixel"),
            (64, 32, 3, 1, 2, "subpixel"),
            (32, 3, 9, 1, 1, "rows"),
            (4, 3, 9, 1, 1, planar),
            (8, 4, 3, 1, 2, planar),
            (32, 32, 3, 1, 1, d),
            (64, 64, 3, 1, 1, "winograd"),
            (16, 16, 3, 1, 1, "im2col"),
            (8, 32, 3, 1, 2, "subpixel"),
        ];
        for (cin, cout, k, s, up, want) in cases {
            let conv = Conv::from_oihw(
                &vec![0.0; cout * cin * k * k],
                [cout, cin, k, k],
                None,
                s,
                up,
            );
            assert_eq!(conv.algorithm_name(), want, "{conv:?}");
        }
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
            // Direct on AVX-512: 32 (2 vectors × 12 pixels) and 64-wide tiles, stride 2, rows
            // shorter than a tile, the reflected border gathered, one chunk and several.
            (3, 32, 9, 1, 1, 21, 30, true),
            (32, 64, 3, 2, 1, 17, 31, false),
            (64, 128, 3, 2, 1, 9, 40, true),
            (32, 32, 3, 2, 1, 5, 7, true),
            (32, 32, 3, 1, 1, 3, 2, false),
            (3, 96, 9, 1, 1, 6, 5, true),
            // The planar kernel: 1–4 output channels, up to 8 input channels, rows longer
            // than one run of 64 pixels and shorter than one vector.
            (8, 4, 5, 1, 1, 9, 133, true),
            (1, 1, 7, 1, 1, 12, 17, false),
            (2, 2, 5, 1, 1, 4, 3, true),
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
            // Into a reused buffer that held something else (NaN, larger than needed): every
            // value is written, so the result is the same.
            let stale = vec![f32::NAN; got.data.len() + 7];
            let again = conv.forward_in(&x, true, stale);
            assert_eq!(
                (&again.0, &again.1),
                (&got, &stats),
                "case {n}: into a used buffer"
            );
        }
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
