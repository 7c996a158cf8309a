//! The safetensors header, size-checked before it is parsed.

#[allow(unused_imports)]
use super::*;

/// The safetensors header: its size is checked before it is parsed, and the crate checks
/// every tensor's shape (with checked arithmetic) against its data offsets.
pub(super) fn safetensors_header(
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
    let st = ::safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
    check_tensor_count(path, st.len())?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            ::safetensors::Dtype::F32 => ElementType::F32,
            other => ElementType::Unsupported(format!("{other:?}, expected F32")),
        };
        let info = tensor_info(path, name, view.shape().to_vec(), dtype)?;
        out.insert(name.to_string(), info);
    }
    Ok(out)
}
