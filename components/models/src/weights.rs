//! Reading raw weights: PyTorch `.pth` (zip and legacy pickle), safetensors, ONNX initializers.
//!
//! Everything becomes a [`TensorMap`] of float32 tensors; the architecture modules check names
//! and shapes ([`crate::Architecture::check`]).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;
use kubestyle_manifest::StageError;

/// A float32 tensor read from a weight file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn to_data(&self) -> TensorData {
        TensorData::new(self.data.clone(), self.shape.clone())
    }
}

pub type TensorMap = BTreeMap<String, RawTensor>;

/// The file formats `package-model` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    PthZip,
    PthLegacy,
    Safetensors,
    Onnx,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::PthZip => "pth-zip",
            SourceFormat::PthLegacy => "pth-legacy",
            SourceFormat::Safetensors => "safetensors",
            SourceFormat::Onnx => "onnx",
        }
    }
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> StageError {
    StageError::InputInvalid(format!("{}: {what}", path.display()))
}

/// Read a weight file, choosing the reader by content (zip / pickle / safetensors / ONNX).
pub fn read_weights(path: &Path) -> Result<(TensorMap, SourceFormat), StageError> {
    let bytes = std::fs::read(path).map_err(|e| StageError::read(path, e))?;
    if bytes.is_empty() {
        return Err(invalid(path, "empty file"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => read_onnx(path, &bytes).map(|m| (m, SourceFormat::Onnx)),
        "safetensors" => read_safetensors(path, &bytes).map(|m| (m, SourceFormat::Safetensors)),
        "pth" | "pt" | "model" | "ckpt" => read_pth(path),
        _ => Err(invalid(
            path,
            "unknown weight format (expected .pth/.pt, .safetensors or .onnx)",
        )),
    }
}

/// PyTorch checkpoints, both the zip format (PyTorch >= 1.6) and the legacy pickle stream.
pub fn read_pth(path: &Path) -> Result<(TensorMap, SourceFormat), StageError> {
    use burn::store::pytorch_reader::{DType, PytorchReader};
    let reader = PytorchReader::new(path)
        .map_err(|e| invalid(path, format!("not a readable PyTorch checkpoint: {e}")))?;
    let format = if reader.metadata().is_legacy_format() {
        SourceFormat::PthLegacy
    } else {
        SourceFormat::PthZip
    };
    let mut out = TensorMap::new();
    for (name, t) in reader.tensors() {
        let name = name.strip_prefix("state_dict.").unwrap_or(name).to_string();
        let bytes = t
            .read()
            .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
        let data: Vec<f32> = match t.dtype() {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| {
                    f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            // Integer buffers (num_batches_tracked) carry no weights; keep them so the
            // architecture check can name or drop them.
            DType::I64 | DType::I32 => vec![0.0; t.num_elements()],
            other => {
                return Err(invalid(
                    path,
                    format!("tensor {name}: unsupported dtype {other:?}"),
                ));
            }
        };
        out.insert(
            name,
            RawTensor {
                shape: t.shape().to_vec(),
                data,
            },
        );
    }
    if out.is_empty() {
        return Err(invalid(path, "holds no tensors"));
    }
    Ok((out, format))
}

pub fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<TensorMap, StageError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(invalid(
                path,
                format!("tensor {name}: dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// The subset of the ONNX protobuf schema we need (field numbers from onnx.proto3).
mod onnx {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(string, tag = "3")]
        pub producer_version: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}

/// Float initializers of an ONNX model, plus the graph's input names under the pseudo-keys
/// `onnx:input:<name>` (empty tensors) so architectures can check the interface.
pub fn read_onnx(path: &Path, bytes: &[u8]) -> Result<TensorMap, StageError> {
    use prost::Message;
    let model = onnx::ModelProto::decode(bytes)
        .map_err(|e| invalid(path, format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| invalid(path, "ONNX model has no graph"))?;
    let mut out = TensorMap::new();
    for t in graph.initializer {
        if t.data_location == 1 {
            return Err(invalid(
                path,
                format!(
                    "initializer {} uses external data, which is not supported",
                    t.name
                ),
            ));
        }
        if t.data_type != 1 {
            // Non-float initializers (shape constants) carry no weights.
            continue;
        }
        let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if !t.raw_data.is_empty() {
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            t.float_data
        };
        if data.len() != n {
            return Err(invalid(
                path,
                format!(
                    "initializer {} holds {} values for shape {shape:?}",
                    t.name,
                    data.len()
                ),
            ));
        }
        out.insert(t.name, RawTensor { shape, data });
    }
    for i in graph.input {
        if !out.contains_key(&i.name) {
            out.insert(
                format!("onnx:input:{}", i.name),
                RawTensor {
                    shape: vec![],
                    data: vec![],
                },
            );
        }
    }
    if out.is_empty() {
        return Err(invalid(path, "ONNX graph holds no float initializers"));
    }
    Ok(out)
}
