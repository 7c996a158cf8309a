//! The weight-file side of kubestyle's style-transfer networks, without burn:
//!
//! * [`weights`]: header readers for PyTorch `.pth` (zip and legacy pickle), `.safetensors` and
//!   ONNX initializers, and the bounded reading of the tensors an architecture needs.
//! * [`arch`]: the two architectures, their tensor name/shape tables and the strict check of a
//!   weight file against them.
//!
//! `kubestyle-models` re-exports both modules under the same paths and turns the tensors read
//! here into burn modules. Keeping this crate free of burn makes it quick to build, which the
//! fuzz targets under `fuzz/` rely on.

pub mod arch;
pub mod error;
pub mod weights;

pub use error::WeightsError;

pub use arch::Architecture;
pub use weights::{SourceFormat, TensorMap, read_weights};
