//! Reading raw weights: PyTorch `.pth` (zip and legacy pickle), safetensors, ONNX initializers.
//!
//! Everything becomes a [`TensorMap`] of float32 tensors. Reading happens in two steps, so that
//! a file cannot make us allocate from what it merely declares:
//!
//! 1. [`open_weights`] reads the *header* only — tensor names, element types and shapes: the
//!    pickle of a `.pth` (its storages are not read), the JSON header of a safetensors file,
//!    and the protobuf of an ONNX model walked in place without copying any tensor data. Every
//!    shape's element count is computed with checked arithmetic; negative or overflowing
//!    dimensions, ranks above [`MAX_RANK`], more than [`MAX_TENSORS`] tensors and data that
//!    disagrees with its declared shape are refused here, naming the tensor.
//! 2. [`WeightFile::read_checked`] checks names and shapes against the architecture
//!    ([`Architecture::check_shapes`]) and only then reads the data, of the expected tensors
//!    only. [`WeightFile::read_all`] (behind [`read_weights`], for callers that inspect a
//!    file without an architecture) reads every tensor, after checking that their declared
//!    total fits [`ReadLimits::max_weight_bytes`].
//!
//! # Memory bounds
//!
//! What reading may allocate is bounded by configuration, never by declared sizes:
//!
//! * [`ReadLimits::max_weight_bytes`] (`package-model --max-weight-bytes`, default
//!   [`DEFAULT_MAX_WEIGHT_BYTES`] = 256 MiB, some 40 times the largest real input, a 6.7 MB
//!   TransformerNet `.pth`) caps the weight file's size (checked before it is opened; ONNX
//!   and safetensors files are read whole, through a bounded reader), the storage a zip
//!   `.pth` declares (the sum of its `data/` entries, which bounds what a deflated storage
//!   can inflate to) and the total [`WeightFile::read_all`] materialises.
//! * [`WeightFile::read_checked`] materialises exactly the architecture's tensors, at most
//!   [`Architecture::expected_bytes`] as float32 (6.7 MB for TransformerNet, 0.66 MB for
//!   MultiStyle26; twice that while a float64 tensor is converted), refused outright when
//!   that exceeds `max_weight_bytes`. A tensor whose name or shape is not the architecture's
//!   is never read, so a 1 KB `.pth` declaring an expanded (45000, 45000) view (stride 0,
//!   8 GB once materialised) costs nothing beyond its header.
//! * Headers: a safetensors JSON header is refused above [`MAX_SAFETENSORS_HEADER_BYTES`]
//!   (16 MiB) before it is parsed; the ONNX walk holds only names, shapes and offsets into
//!   the file; a `.pth` pickle is parsed by `pytorch-reader`, which refuses a zip `data.pkl`
//!   above its `MAX_PICKLE_SIZE` (100 MiB) and memo bombs, and checks every tensor against
//!   its storage (its per-tensor `MAX_TENSOR_SIZE` ceiling of 10 GiB is never relied on: a
//!   tensor is read only once its shape is known to be small).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::WeightsError;

use crate::Architecture;

/// A float32 tensor read from a weight file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
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

/// Default of [`ReadLimits::max_weight_bytes`] (and of `package-model --max-weight-bytes`):
/// 256 MiB.
pub use kubestyle_manifest::command::package_model::DEFAULT_MAX_WEIGHT_BYTES;
/// Most tensors (ONNX: initializers plus graph inputs) a weight file may declare.
pub const MAX_TENSORS: usize = 4096;
/// Highest rank a tensor may declare.
pub const MAX_RANK: usize = 16;
/// Largest safetensors JSON header accepted (the safetensors crate's own limit is 100 MB).
pub const MAX_SAFETENSORS_HEADER_BYTES: u64 = 16 << 20;

/// Bounds on what reading a weight file may allocate (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest weight file, largest storage a zip `.pth` may declare, and largest total of
    /// tensor bytes materialised, in bytes.
    pub max_weight_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_weight_bytes: DEFAULT_MAX_WEIGHT_BYTES,
        }
    }
}

/// Element type of a tensor as its file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementType {
    F32,
    F64,
    /// An integer buffer (`num_batches_tracked`): no weights; [`WeightFile::read_all`] gives
    /// zeros, [`WeightFile::read_checked`] refuses one where a weight is expected.
    Int,
    /// Anything else, by the file's name for it.
    Unsupported(String),
}

/// What a weight file's header says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: ElementType,
    /// Element count (the product of `shape`, known not to overflow).
    pub elements: u64,
}

/// A weight file whose header has been read and whose tensor data has not.
pub struct WeightFile {
    path: PathBuf,
    format: SourceFormat,
    limits: ReadLimits,
    tensors: BTreeMap<String, TensorInfo>,
    source: Source,
}

enum Source {
    /// The reader, and each tensor's key in it (names lose a `state_dict.` prefix).
    Pth {
        reader: pytorch_reader::PytorchReader,
        keys: BTreeMap<String, String>,
    },
    Safetensors(Vec<u8>),
    /// The file, and where each float initializer's `TensorProto` lies in it (the graph
    /// inputs' pseudo-keys have none).
    Onnx {
        bytes: Vec<u8>,
        bodies: BTreeMap<String, Range<usize>>,
    },
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> WeightsError {
    WeightsError::Invalid(format!("{}: {what}", path.display()))
}

/// Element count of a shape, `None` when it overflows.
fn element_count(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
}

/// A checked [`TensorInfo`]: rank and element count within bounds.
fn tensor_info(
    path: &Path,
    name: &str,
    shape: Vec<usize>,
    dtype: ElementType,
) -> Result<TensorInfo, WeightsError> {
    if shape.len() > MAX_RANK {
        return Err(invalid(
            path,
            format!(
                "tensor {name} has rank {}, above the limit of {MAX_RANK}",
                shape.len()
            ),
        ));
    }
    let elements = element_count(&shape).ok_or_else(|| {
        invalid(
            path,
            format!("tensor {name} declares shape {shape:?}, whose element count overflows"),
        )
    })?;
    Ok(TensorInfo {
        shape,
        dtype,
        elements,
    })
}

/// Read a whole file of at most `max` bytes (the size was checked; this also holds for a
/// file that grows while it is read).
fn read_bounded(path: &Path, max: u64, expected: u64) -> Result<Vec<u8>, WeightsError> {
    let file = std::fs::File::open(path).map_err(|e| WeightsError::read(path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(expected.min(max)).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| WeightsError::read(path, e))?;
    if bytes.len() as u64 > max {
        return Err(invalid(
            path,
            format!("grew past the {max}-byte limit (--max-weight-bytes) while being read"),
        ));
    }
    Ok(bytes)
}

/// Read a weight file's header (names, element types, shapes), choosing the reader by file
/// name (`.pth`/`.pt`/`.model`/`.ckpt`, `.safetensors`, `.onnx`). No tensor data is read.
pub fn open_weights(path: &Path, limits: &ReadLimits) -> Result<WeightFile, WeightsError> {
    let meta = std::fs::metadata(path).map_err(|e| WeightsError::read(path, e))?;
    if !meta.is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    let len = meta.len();
    if len == 0 {
        return Err(invalid(path, "empty file"));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(
        ext.as_str(),
        "onnx" | "safetensors" | "pth" | "pt" | "model" | "ckpt"
    ) {
        return Err(invalid(
            path,
            "unknown weight format (expected .pth/.pt, .safetensors or .onnx)",
        ));
    }
    let max = limits.max_weight_bytes;
    if len > max {
        return Err(invalid(
            path,
            format!("is {len} bytes, above the {max}-byte limit (--max-weight-bytes)"),
        ));
    }
    let (format, tensors, source) = match ext.as_str() {
        "onnx" | "safetensors" => {
            let bytes = read_bounded(path, max, len)?;
            return open_weights_bytes(path, bytes, limits);
        }
        _ => pth_header(path, limits)?,
    };
    Ok(WeightFile {
        path: path.to_path_buf(),
        format,
        limits: *limits,
        tensors,
        source,
    })
}

/// [`open_weights`] for an ONNX or safetensors file already in memory: `path` names it in
/// messages and its extension (`.onnx`, `.safetensors`) picks the reader. A `.pth` cannot be
/// read from memory (`pytorch-reader` reads its storages from the file): write it to a file.
pub fn open_weights_bytes(
    path: &Path,
    bytes: Vec<u8>,
    limits: &ReadLimits,
) -> Result<WeightFile, WeightsError> {
    if bytes.is_empty() {
        return Err(invalid(path, "empty file"));
    }
    let max = limits.max_weight_bytes;
    let len = bytes.len() as u64;
    if len > max {
        return Err(invalid(
            path,
            format!("is {len} bytes, above the {max}-byte limit (--max-weight-bytes)"),
        ));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (format, tensors, source) = match ext.as_str() {
        "onnx" => {
            let (tensors, bodies) = onnx_header(path, &bytes)?;
            (SourceFormat::Onnx, tensors, Source::Onnx { bytes, bodies })
        }
        "safetensors" => {
            let tensors = safetensors_header(path, &bytes)?;
            (
                SourceFormat::Safetensors,
                tensors,
                Source::Safetensors(bytes),
            )
        }
        _ => {
            return Err(invalid(
                path,
                "only .onnx and .safetensors weights can be read from memory",
            ));
        }
    };
    Ok(WeightFile {
        path: path.to_path_buf(),
        format,
        limits: *limits,
        tensors,
        source,
    })
}

/// Read a weight file whole (every tensor, within [`ReadLimits::default`]).
pub fn read_weights(path: &Path) -> Result<(TensorMap, SourceFormat), WeightsError> {
    let file = open_weights(path, &ReadLimits::default())?;
    Ok((file.read_all()?, file.format()))
}

/// A weight file read for one architecture: only its tensors, checked.
#[derive(Debug)]
pub struct CheckedWeights {
    pub architecture: Architecture,
    pub format: SourceFormat,
    /// Exactly the architecture's tensors, with its shapes.
    pub map: TensorMap,
    /// Keys that carry no weights (legacy running statistics, ONNX graph inputs); not read.
    pub dropped: Vec<String>,
}

/// Header, architecture (the given one, or recognised from the tensor names), check of names
/// and shapes, then the data of the expected tensors only.
pub fn read_weights_for(
    path: &Path,
    architecture: Option<Architecture>,
    limits: &ReadLimits,
) -> Result<CheckedWeights, WeightsError> {
    let file = open_weights(path, limits)?;
    let architecture = match architecture {
        Some(a) => a,
        None => Architecture::detect_names(|k| file.tensors.contains_key(k)).ok_or_else(|| {
            invalid(
                path,
                "not a known style-transfer network (no conv1.conv2d.weight or contract.0.w tensor)",
            )
        })?,
    };
    let (map, dropped) = file.read_checked(architecture)?;
    Ok(CheckedWeights {
        architecture,
        format: file.format,
        map,
        dropped,
    })
}

impl WeightFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> SourceFormat {
        self.format
    }

    /// Every tensor the header declares (ONNX graph inputs as `onnx:input:<name>`, shape []).
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// Names and shapes, as [`Architecture::check_shapes`] takes them.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect()
    }

    /// Check names and shapes against `arch`, then read the expected tensors (and nothing
    /// else). Returns them and the dropped keys.
    pub fn read_checked(
        &self,
        arch: Architecture,
    ) -> Result<(TensorMap, Vec<String>), WeightsError> {
        let dropped = arch.check_shapes(&self.shapes()).map_err(|e| match e {
            WeightsError::Invalid(m) => invalid(&self.path, m),
            other => other,
        })?;
        let need = arch.expected_bytes();
        let max = self.limits.max_weight_bytes;
        if need > max {
            return Err(invalid(
                &self.path,
                format!(
                    "{} weights take {need} bytes, above the {max}-byte limit (--max-weight-bytes)",
                    arch.name()
                ),
            ));
        }
        let dropped_set: BTreeSet<&str> = dropped.iter().map(String::as_str).collect();
        let names: Vec<&str> = self
            .tensors
            .keys()
            .map(String::as_str)
            .filter(|k| !dropped_set.contains(k))
            .collect();
        for &name in &names {
            match &self.tensors[name].dtype {
                ElementType::F32 | ElementType::F64 => {}
                ElementType::Int => {
                    return Err(invalid(
                        &self.path,
                        format!("tensor {name}: integer dtype, expected float32 or float64"),
                    ));
                }
                ElementType::Unsupported(d) => {
                    return Err(invalid(
                        &self.path,
                        format!("tensor {name}: unsupported dtype {d}"),
                    ));
                }
            }
        }
        Ok((self.read_names(&names)?, dropped))
    }

    /// Read every tensor, once their declared total (as float32) is known to fit
    /// [`ReadLimits::max_weight_bytes`].
    pub fn read_all(&self) -> Result<TensorMap, WeightsError> {
        let max = self.limits.max_weight_bytes;
        let total = self
            .tensors
            .values()
            .try_fold(0u64, |acc, t| acc.checked_add(t.elements.checked_mul(4)?));
        match total {
            Some(t) if t <= max => {}
            _ => {
                return Err(invalid(
                    &self.path,
                    format!(
                        "declares {} bytes of tensors, above the {max}-byte limit (--max-weight-bytes)",
                        total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string())
                    ),
                ));
            }
        }
        if let Some((name, ElementType::Unsupported(d))) = self
            .tensors
            .iter()
            .map(|(k, t)| (k, &t.dtype))
            .find(|(_, d)| matches!(d, ElementType::Unsupported(_)))
        {
            return Err(invalid(
                &self.path,
                format!("tensor {name}: unsupported dtype {d}"),
            ));
        }
        let names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        self.read_names(&names)
    }

    /// Read the data of `names` (keys of `self.tensors` whose sizes the caller has bounded).
    fn read_names(&self, names: &[&str]) -> Result<TensorMap, WeightsError> {
        let path = self.path.as_path();
        let mut out = TensorMap::new();
        match &self.source {
            Source::Pth { reader, keys } => {
                use pytorch_reader::DType;
                for &name in names {
                    let info = &self.tensors[name];
                    let t = reader
                        .get(&keys[name])
                        .ok_or_else(|| invalid(path, format!("tensor {name} vanished")))?;
                    let data = match info.dtype {
                        ElementType::Int => vec![0.0; to_usize(path, name, info.elements)?],
                        _ => {
                            let bytes = t
                                .read()
                                .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
                            let width = t.dtype().size() as u64;
                            if bytes.len() as u64 != info.elements.saturating_mul(width) {
                                return Err(invalid(
                                    path,
                                    format!(
                                        "tensor {name}: {} bytes read for shape {:?}",
                                        bytes.len(),
                                        info.shape
                                    ),
                                ));
                            }
                            match t.dtype() {
                                DType::F64 => bytes
                                    .chunks_exact(8)
                                    .map(|c| {
                                        f64::from_ne_bytes([
                                            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                                        ]) as f32
                                    })
                                    .collect(),
                                _ => bytes
                                    .chunks_exact(4)
                                    .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                                    .collect(),
                            }
                        }
                    };
                    out.insert(name.to_string(), raw(info, data));
                }
            }
            Source::Safetensors(bytes) => {
                let st = ::safetensors::SafeTensors::deserialize(bytes)
                    .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
                for &name in names {
                    let info = &self.tensors[name];
                    let view = st
                        .tensor(name)
                        .map_err(|e| invalid(path, format!("tensor {name}: {e}")))?;
                    let data: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if data.len() as u64 != info.elements {
                        return Err(invalid(
                            path,
                            format!(
                                "tensor {name}: {} values for shape {:?}",
                                data.len(),
                                info.shape
                            ),
                        ));
                    }
                    out.insert(name.to_string(), raw(info, data));
                }
            }
            Source::Onnx { bytes, bodies } => {
                for &name in names {
                    let info = &self.tensors[name];
                    let data = match bodies.get(name) {
                        Some(r) => onnx_floats(bytes.get(r.clone()).unwrap_or_default())
                            .map_err(|e| invalid(path, format!("initializer {name}: {e}")))?,
                        None => Vec::new(),
                    };
                    if data.len() as u64 != info.elements && bodies.contains_key(name) {
                        return Err(invalid(
                            path,
                            format!(
                                "initializer {name} holds {} values for shape {:?}",
                                data.len(),
                                info.shape
                            ),
                        ));
                    }
                    out.insert(name.to_string(), raw(info, data));
                }
            }
        }
        Ok(out)
    }
}

fn raw(info: &TensorInfo, data: Vec<f32>) -> RawTensor {
    RawTensor {
        shape: info.shape.clone(),
        data,
    }
}

fn to_usize(path: &Path, name: &str, n: u64) -> Result<usize, WeightsError> {
    usize::try_from(n).map_err(|_| invalid(path, format!("tensor {name} is too large")))
}

/// Refuse a file declaring more than [`MAX_TENSORS`] tensors.
fn check_tensor_count(path: &Path, n: usize) -> Result<(), WeightsError> {
    if n > MAX_TENSORS {
        return Err(invalid(
            path,
            format!("holds {n} tensors, above the limit of {MAX_TENSORS}"),
        ));
    }
    Ok(())
}

mod onnx;
mod pth;
mod safetensors;
#[cfg(test)]
mod tests;

use onnx::*;
use pth::pth_header;
use safetensors::safetensors_header;
