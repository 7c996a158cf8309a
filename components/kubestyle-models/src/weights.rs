//! Reading raw weights: PyTorch `.pth` (zip and legacy pickle), safetensors, ONNX initializers.
//!
//! The readers live in [`kubestyle_weights::weights`] (no burn, so they can be fuzzed cheaply)
//! and are re-exported here; this module adds the conversion to burn's [`TensorData`].

use burn::tensor::TensorData;

pub use kubestyle_weights::weights::*;

/// Conversion of a [`RawTensor`] read from a weight file into burn's [`TensorData`].
pub trait ToTensorData {
    fn to_data(&self) -> TensorData;
}

impl ToTensorData for RawTensor {
    fn to_data(&self) -> TensorData {
        TensorData::new(self.data.clone(), self.shape.clone())
    }
}
