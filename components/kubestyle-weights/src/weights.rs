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
                let st = safetensors::SafeTensors::deserialize(bytes)
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

/// PyTorch checkpoints, both the zip format (PyTorch >= 1.6) and the legacy pickle stream:
/// the pickle only (`PytorchReader::new` reads no storage; it checks every tensor view
/// against the storage size the pickle declares, and a legacy file's storages against the
/// file's length).
fn pth_header(
    path: &Path,
    limits: &ReadLimits,
) -> Result<(SourceFormat, BTreeMap<String, TensorInfo>, Source), WeightsError> {
    use pytorch_reader::{DType, PytorchReader};
    let reader = PytorchReader::new(path)
        .map_err(|e| invalid(path, format!("not a readable PyTorch checkpoint: {e}")))?;
    let format = if reader.metadata().is_legacy_format() {
        SourceFormat::PthLegacy
    } else {
        SourceFormat::PthZip
    };
    let max = limits.max_weight_bytes;
    if let Some(declared) = reader.metadata().total_data_size
        && declared as u64 > max
    {
        return Err(invalid(
            path,
            format!(
                "declares {declared} bytes of tensor storage, above the {max}-byte limit (--max-weight-bytes)"
            ),
        ));
    }
    check_tensor_count(path, reader.len())?;
    let mut tensors = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for (key, t) in reader.tensors() {
        let name = key.strip_prefix("state_dict.").unwrap_or(key).to_string();
        let dtype = match t.dtype() {
            DType::F32 => ElementType::F32,
            DType::F64 => ElementType::F64,
            DType::I64 | DType::I32 => ElementType::Int,
            other => ElementType::Unsupported(format!("{other:?}")),
        };
        let info = tensor_info(path, &name, t.shape().to_vec(), dtype)?;
        if keys.insert(name.clone(), key.clone()).is_some() {
            return Err(invalid(
                path,
                format!("tensor {name} appears twice (with and without a state_dict. prefix)"),
            ));
        }
        tensors.insert(name, info);
    }
    if tensors.is_empty() {
        return Err(invalid(path, "holds no tensors"));
    }
    Ok((format, tensors, Source::Pth { reader, keys }))
}

/// The safetensors header: its size is checked before it is parsed, and the crate checks
/// every tensor's shape (with checked arithmetic) against its data offsets.
fn safetensors_header(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, TensorInfo>, WeightsError> {
    if let Some(n) = bytes.get(..8) {
        let n = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]);
        if n > MAX_SAFETENSORS_HEADER_BYTES {
            return Err(invalid(
                path,
                format!(
                    "safetensors header of {n} bytes, above the limit of {MAX_SAFETENSORS_HEADER_BYTES}"
                ),
            ));
        }
    }
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
    check_tensor_count(path, st.len())?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => ElementType::F32,
            other => ElementType::Unsupported(format!("{other:?}, expected F32")),
        };
        let info = tensor_info(path, name, view.shape().to_vec(), dtype)?;
        out.insert(name.to_string(), info);
    }
    Ok(out)
}

/// A minimal protobuf wire-format walker: fields are visited in place, so nothing a message
/// declares is allocated.
mod pb {
    #[derive(Debug, Clone, Copy)]
    pub enum Value<'a> {
        Varint(u64),
        Fixed64,
        Bytes(&'a [u8]),
        Fixed32(u32),
    }

    pub fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *buf.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or("field runs past the end of its message")?;
        let s = &buf[*pos..end];
        *pos = end;
        Ok(s)
    }

    /// The fields of one message: (field number, value), or the first wire-format error.
    pub struct Fields<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    pub fn fields(buf: &[u8]) -> Fields<'_> {
        Fields { buf, pos: 0 }
    }

    impl<'a> Fields<'a> {
        fn field(&mut self) -> Result<(u64, Value<'a>), String> {
            let key = varint(self.buf, &mut self.pos)?;
            let tag = key >> 3;
            if tag == 0 {
                return Err("field number 0".into());
            }
            let value = match key & 7 {
                0 => Value::Varint(varint(self.buf, &mut self.pos)?),
                1 => {
                    take(self.buf, &mut self.pos, 8)?;
                    Value::Fixed64
                }
                2 => {
                    let n = varint(self.buf, &mut self.pos)?;
                    let n = usize::try_from(n).map_err(|_| "length overflows")?;
                    Value::Bytes(take(self.buf, &mut self.pos, n)?)
                }
                5 => {
                    let b = take(self.buf, &mut self.pos, 4)?;
                    Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                w => return Err(format!("unsupported wire type {w}")),
            };
            Ok((tag, value))
        }
    }

    impl<'a> Iterator for Fields<'a> {
        type Item = Result<(u64, Value<'a>), String>;
        fn next(&mut self) -> Option<Self::Item> {
            if self.pos >= self.buf.len() {
                return None;
            }
            let r = self.field();
            if r.is_err() {
                self.pos = self.buf.len();
            }
            Some(r)
        }
    }
}

/// What the header walk learns about one `TensorProto` (onnx.proto3 field numbers: dims 1,
/// data_type 2, float_data 4, name 8, raw_data 9, data_location 14).
#[derive(Default)]
struct OnnxTensor {
    dims: Vec<i64>,
    /// Dimensions past [`MAX_RANK`] are counted, not kept.
    rank: usize,
    data_type: u64,
    float_values: u64,
    name: String,
    raw_len: Option<usize>,
    data_location: u64,
}

fn onnx_tensor(body: &[u8]) -> Result<OnnxTensor, String> {
    use pb::Value;
    let mut t = OnnxTensor::default();
    fn dim(t: &mut OnnxTensor, d: u64) {
        t.rank += 1;
        if t.dims.len() <= MAX_RANK {
            // int64 on the wire: two's complement.
            t.dims.push(d as i64);
        }
    }
    for f in pb::fields(body) {
        match f? {
            (1, Value::Varint(d)) => dim(&mut t, d),
            (1, Value::Bytes(packed)) => {
                let mut pos = 0;
                while pos < packed.len() {
                    let d = pb::varint(packed, &mut pos)?;
                    dim(&mut t, d);
                }
            }
            (2, Value::Varint(v)) => t.data_type = v,
            (4, Value::Fixed32(_)) => t.float_values += 1,
            (4, Value::Bytes(packed)) => {
                if packed.len() % 4 != 0 {
                    return Err("packed float_data is not a whole number of floats".into());
                }
                t.float_values += packed.len() as u64 / 4;
            }
            (8, Value::Bytes(s)) => {
                t.name = std::str::from_utf8(s)
                    .map_err(|_| "name is not UTF-8")?
                    .to_string()
            }
            (9, Value::Bytes(_)) if t.raw_len.is_some() => {
                return Err("raw_data given twice".into());
            }
            (9, Value::Bytes(r)) => t.raw_len = Some(r.len()),
            (14, Value::Varint(v)) => t.data_location = v,
            (1 | 2 | 4 | 8 | 9 | 14, _) => return Err("field with the wrong wire type".into()),
            _ => {}
        }
    }
    Ok(t)
}

/// The float values of a `TensorProto` (raw_data little-endian, else float_data).
fn onnx_floats(body: &[u8]) -> Result<Vec<f32>, String> {
    use pb::Value;
    let mut raw: Option<&[u8]> = None;
    let mut floats = Vec::new();
    for f in pb::fields(body) {
        match f? {
            (9, Value::Bytes(r)) => raw = Some(r),
            (4, Value::Fixed32(v)) => floats.push(f32::from_bits(v)),
            (4, Value::Bytes(packed)) => floats.extend(
                packed
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => {}
        }
    }
    Ok(match raw {
        Some(r) if !r.is_empty() => r
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => floats,
    })
}

/// Float initializers of an ONNX model, plus the graph's input names under the pseudo-keys
/// `onnx:input:<name>` (empty tensors) so architectures can check the interface. Walks the
/// protobuf in place (ModelProto.graph = 7; GraphProto.initializer = 5, input = 11;
/// ValueInfoProto.name = 1) and checks every float initializer's dims (none negative, a
/// product that does not overflow) and data length before anything is copied.
#[allow(clippy::type_complexity)]
fn onnx_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, TensorInfo>, BTreeMap<String, Range<usize>>), WeightsError> {
    use pb::Value;
    let bad = |e: String| invalid(path, format!("not an ONNX model: {e}"));
    let mut graph: Option<&[u8]> = None;
    for f in pb::fields(bytes) {
        if let (7, v) = f.map_err(bad)? {
            let Value::Bytes(g) = v else {
                return Err(bad("graph with the wrong wire type".into()));
            };
            if graph.replace(g).is_some() {
                return Err(bad("more than one graph".into()));
            }
        }
    }
    let graph = graph.ok_or_else(|| invalid(path, "ONNX model has no graph"))?;
    let base = graph.as_ptr() as usize - bytes.as_ptr() as usize;
    let mut tensors = BTreeMap::new();
    let mut bodies = BTreeMap::new();
    let mut inputs = Vec::new();
    let mut count = 0usize;
    for f in pb::fields(graph) {
        let (tag, v) = f.map_err(bad)?;
        let body = match (tag, v) {
            (5 | 11, Value::Bytes(b)) => b,
            (5 | 11, _) => return Err(bad("graph field with the wrong wire type".into())),
            _ => continue,
        };
        count += 1;
        if count > MAX_TENSORS {
            return Err(invalid(
                path,
                format!("ONNX graph declares more than {MAX_TENSORS} initializers and inputs"),
            ));
        }
        if tag == 11 {
            for f in pb::fields(body) {
                if let (1, Value::Bytes(n)) = f.map_err(bad)? {
                    let n = std::str::from_utf8(n)
                        .map_err(|_| bad("input name is not UTF-8".into()))?;
                    inputs.push(n.to_string());
                }
            }
            continue;
        }
        let t = onnx_tensor(body).map_err(|e| bad(format!("initializer: {e}")))?;
        let name = t.name.clone();
        if t.data_location == 1 {
            return Err(invalid(
                path,
                format!("initializer {name} uses external data, which is not supported"),
            ));
        }
        if t.data_type != 1 {
            // Non-float initializers (shape constants) carry no weights.
            continue;
        }
        let mut shape = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            let d = usize::try_from(d).map_err(|_| {
                invalid(
                    path,
                    format!("initializer {name} has a negative dimension ({d})"),
                )
            })?;
            shape.push(d);
        }
        if t.rank > MAX_RANK {
            return Err(invalid(
                path,
                format!(
                    "tensor {name} has rank {}, above the limit of {MAX_RANK}",
                    t.rank
                ),
            ));
        }
        let info = tensor_info(path, &name, shape, ElementType::F32)?;
        let values = match t.raw_len {
            Some(n) if n > 0 => {
                if n % 4 != 0 {
                    return Err(invalid(
                        path,
                        format!("initializer {name} has {n} bytes of raw_data, not whole floats"),
                    ));
                }
                n as u64 / 4
            }
            _ => t.float_values,
        };
        if values != info.elements {
            return Err(invalid(
                path,
                format!(
                    "initializer {name} holds {values} values for shape {:?}",
                    info.shape
                ),
            ));
        }
        let start = base + (body.as_ptr() as usize - graph.as_ptr() as usize);
        if tensors.insert(name.clone(), info).is_some() {
            return Err(invalid(path, format!("initializer {name} appears twice")));
        }
        bodies.insert(name, start..start + body.len());
    }
    for i in inputs {
        if !tensors.contains_key(&i) {
            tensors.insert(
                format!("onnx:input:{i}"),
                TensorInfo {
                    shape: vec![],
                    dtype: ElementType::F32,
                    elements: 0,
                },
            );
        }
    }
    if tensors.is_empty() {
        return Err(invalid(path, "ONNX graph holds no float initializers"));
    }
    Ok((tensors, bodies))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// ModelProto{graph{initializer: each body}}.
    fn model(initializers: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        for t in initializers {
            field(5, t, &mut graph);
        }
        let mut m = Vec::new();
        field(7, &graph, &mut m);
        m
    }

    /// A float TensorProto with packed dims and raw data.
    fn tensor(name: &str, dims: &[i64], raw: &[u8]) -> Vec<u8> {
        let mut packed = Vec::new();
        for &d in dims {
            varint(d as u64, &mut packed);
        }
        let mut t = Vec::new();
        field(1, &packed, &mut t);
        t.extend_from_slice(&[0x10, 1]); // data_type = FLOAT
        field(8, name.as_bytes(), &mut t);
        field(9, raw, &mut t);
        t
    }

    fn open(name: &str, bytes: &[u8]) -> Result<WeightFile, WeightsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        open_weights(&p, &ReadLimits::default())
    }

    fn err(r: Result<WeightFile, WeightsError>) -> String {
        let e = r.unwrap_err();
        assert!(matches!(e, WeightsError::Invalid(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn onnx_packed_dims_are_checked_without_panicking() {
        let ok = open("a.onnx", &model(&[tensor("w", &[2, 1], &[0; 8])])).unwrap();
        assert_eq!(ok.tensors()["w"].shape, [2, 1]);
        assert_eq!(ok.read_all().unwrap()["w"].data, [0.0, 0.0]);
        let e = err(open("a.onnx", &model(&[tensor("w", &[-5], &[])])));
        assert!(e.contains("w has a negative dimension (-5)"), "{e}");
        let big = 1i64 << 40;
        let e = err(open("a.onnx", &model(&[tensor("w", &[big, big], &[])])));
        assert!(e.contains("element count overflows"), "{e}");
        let e = err(open("a.onnx", &model(&[tensor("w", &[1; 17], &[0; 4])])));
        assert!(e.contains("rank 17"), "{e}");
        let e = err(open("a.onnx", &model(&[tensor("w", &[3], &[0; 7])])));
        assert!(e.contains("7 bytes of raw_data"), "{e}");
        // A graph field running past the end of the file.
        let mut cut = model(&[tensor("w", &[2, 1], &[0; 8])]);
        cut.truncate(cut.len() - 3);
        let e = err(open("a.onnx", &cut));
        assert!(e.contains("not an ONNX model"), "{e}");
    }

    #[test]
    fn onnx_initializer_count_is_bounded() {
        // Empty initializers cost 2 bytes each on disk; they are counted, not collected.
        let mut graph = Vec::new();
        for _ in 0..=MAX_TENSORS {
            field(5, &[], &mut graph);
        }
        let mut m = Vec::new();
        field(7, &graph, &mut m);
        let e = err(open("a.onnx", &m));
        assert!(e.contains("more than 4096"), "{e}");
    }

    #[test]
    fn safetensors_header_size_is_checked_before_parsing() {
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        let e = err(open("a.safetensors", &b));
        assert!(
            e.contains("safetensors header of 1099511627776 bytes"),
            "{e}"
        );
    }

    #[test]
    fn read_checked_reads_only_after_the_architecture_check() {
        // A correct name with a wrong shape: refused, naming the tensor, without reading.
        let f = open(
            "a.onnx",
            &model(&[tensor("conv1.conv2d.weight", &[2], &[0; 8])]),
        )
        .unwrap();
        let e = f
            .read_checked(Architecture::TransformerNet)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("conv1.conv2d.weight has shape [2], expected [32, 3, 9, 9]"),
            "{e}"
        );
    }
}
