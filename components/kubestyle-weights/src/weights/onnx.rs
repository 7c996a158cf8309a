//! ONNX initializers, found by walking the protobuf in place (nothing it declares is allocated).

#[allow(unused_imports)]
use super::*;

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
pub(super) struct OnnxTensor {
    dims: Vec<i64>,
    /// Dimensions past [`MAX_RANK`] are counted, not kept.
    rank: usize,
    data_type: u64,
    float_values: u64,
    name: String,
    raw_len: Option<usize>,
    data_location: u64,
}

pub(super) fn onnx_tensor(body: &[u8]) -> Result<OnnxTensor, String> {
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
pub(super) fn onnx_floats(body: &[u8]) -> Result<Vec<f32>, String> {
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
pub(super) fn onnx_header(
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
