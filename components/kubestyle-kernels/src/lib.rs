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
//!   stride-1 3×3 layers with ≥ 64 channels use Winograd F(4×4, 3×3) (36 instead of 144
//!   multiply-adds per 4×4 output tile and channel pair), nearest ×2 + 3×3 layers run as four 2×2 sub-pixel
//!   convolutions on the source (2.25× fewer), and large kernels with ≤ 4 output channels (the
//!   final 9×9 layers) run as row convolutions whose GEMM is wide enough for the microkernel.
//!   On CPUs with AVX-512, layers with a multiple of 32 output channels (the first 9×9 layer,
//!   the stride-2 layers, MultiStyle26's residual layers) skip im2col: a direct kernel keeps
//!   each tile of output pixels × channels in registers and reads the windows straight from
//!   the activation (`conv::direct::wide`); layers with ≤ 8 input and ≤ 4 output channels
//!   (MultiStyle26's last two) run on padded planes, vectorised along the row
//!   (`conv::direct::planar`).
//! * [`norm_apply`]: `x * scale + shift`, the activation and the residual add in one pass.
//!
//! Activations are NHWC ([`Act`]): a pixel's channels are contiguous, so an im2col row is a few
//! contiguous copies. Work is split into blocks independent of the thread count and partial sums
//! are combined in block order, so results are bit-identical run to run and across thread counts.
//!
//! Layout: `act` ([`Act`], reflection indexing), `stats` ([`Stats`]), `norm` ([`norm_apply`]),
//! `conv` ([`Conv`], whose `Algorithm` is chosen once per layer, with one module per algorithm:
//! `im2col`, `subpixel`, `winograd`, `rows`, `direct`), `gemm` and `simd`. `unsafe` is allowed in
//! four places only, each with its safety argument beside it: `gemm::matmul` (the call into the
//! `gemm` crate's raw-pointer API), the two direct kernels, `conv::direct::wide::tile_avx512`
//! and `conv::direct::planar::run` (AVX-512 loads and stores through raw pointers, behind
//! run-time detection, their bounds asserted by the safe functions that call them), and
//! `simd::with_avx512` (the call into a function compiled with AVX-512 enabled, behind run-time
//! detection: the Winograd transforms, the moments and the norm pass are plain loops inlined
//! there, vectorised for 16 floats; same operations in the same order, same bits).

// Also set in Cargo.toml; the exceptions allow it locally (see above).
#![deny(unsafe_code)]
// The kernels index several arrays with one loop variable, written as the math reads.
#![allow(clippy::needless_range_loop)]

mod act;
mod conv;
mod gemm;
mod norm;
mod simd;
mod stats;
#[cfg(test)]
mod testutil;

pub use act::{Act, reflect};
pub use conv::{Conv, WINOGRAD_F2, WINOGRAD_F4, Winograd};
pub use norm::{EPS, Post, norm_apply};
pub use stats::{Moments, Stats};

/// Target size of one im2col block in floats (about 1 MiB: stays in L2 while gemm packs it).
const BLOCK_FLOATS: usize = 256 * 1024;
