//! PyTorch `.pth` headers (zip and legacy pickle): the pickle only, no storage read.

#[allow(unused_imports)]
use super::*;

/// PyTorch checkpoints, both the zip format (PyTorch >= 1.6) and the legacy pickle stream:
/// the pickle only (`PytorchReader::new` reads no storage; it checks every tensor view
/// against the storage size the pickle declares, and a legacy file's storages against the
/// file's length).
pub(super) fn pth_header(
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
