//! The Open Inference Protocol's binary-data extension (Triton's `binary_data`, which KServe's
//! V2 servers and clients speak): a request body is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the tensors' raw bytes, each input that
//! uses it saying its size in `parameters.binary_data_size` (and having no `data`); a `BYTES`
//! tensor's raw form is its elements one after another, each a 4-byte little-endian length and
//! the bytes. A response is framed the same way when the request asks for it
//! (`parameters.binary_data_output: true`, or `binary_data: true` on a requested output).

use serde_json::{Map, Value};

use crate::serve::error::ServeError;

/// The header naming the JSON part's length.
pub(crate) const HEADER: &str = "inference-header-content-length";

/// A request body split into its JSON header and its binary part (empty without the header).
pub(crate) fn split<'a>(
    body: &'a [u8],
    header: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), ServeError> {
    let Some(h) = header else {
        return Ok((body, &[]));
    };
    let n: usize = h.trim().parse().map_err(|_| {
        ServeError::BadRequest(format!(
            "Inference-Header-Content-Length {h:?} is not a byte count"
        ))
    })?;
    if n > body.len() {
        return Err(ServeError::BadRequest(format!(
            "Inference-Header-Content-Length {n} is over the body's {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// `parameters.binary_data_size` of a tensor, if it has one.
pub(crate) fn size_param(p: &Map<String, Value>, what: &str) -> Result<Option<usize>, ServeError> {
    match p.get("binary_data_size") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ServeError::BadRequest(format!(
                    "{what}: binary_data_size must be a byte count, not {v}"
                ))
            }),
    }
}

/// Takes `size` bytes off the front of `rest`.
pub(crate) fn take<'a>(
    rest: &mut &'a [u8],
    size: usize,
    what: &str,
) -> Result<&'a [u8], ServeError> {
    if size > rest.len() {
        return Err(ServeError::BadRequest(format!(
            "{what}: binary_data_size {size} is over the {} bytes left in the body",
            rest.len()
        )));
    }
    let (head, tail) = rest.split_at(size);
    *rest = tail;
    Ok(head)
}

/// The elements of a raw `BYTES` tensor: `[u32 LE length][bytes]` each, exactly `count` of them
/// filling `raw`.
pub(crate) fn bytes_elements(
    mut raw: &[u8],
    count: usize,
    what: &str,
) -> Result<Vec<Vec<u8>>, ServeError> {
    let mut out = Vec::with_capacity(count.min(1024));
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(ServeError::BadRequest(format!(
                "{what}: a BYTES element's 4-byte length is cut short"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(ServeError::BadRequest(format!(
                "{what}: a BYTES element of {len} bytes is over the {} left",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(len);
        out.push(element.to_vec());
        raw = rest;
        if out.len() > count {
            break;
        }
    }
    if out.len() != count {
        return Err(ServeError::BadRequest(format!(
            "{what}: {} BYTES element(s) in the binary data, the shape says {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// A raw `BYTES` tensor of `elements`.
pub(crate) fn encode_bytes(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        // An element over 4 GiB cannot be framed; images are bounded far below that.
        out.extend_from_slice(&u32::try_from(e.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Whether the response's `image` output goes as binary data: `binary_data_output` of the
/// request, overridden by `binary_data` of a requested output of that name.
pub(crate) fn wants_binary(
    parameters: &Map<String, Value>,
    outputs: &[Value],
    name: &str,
) -> Result<bool, ServeError> {
    let flag = |p: Option<&Value>, key: &str| -> Result<Option<bool>, ServeError> {
        match p.and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ServeError::BadRequest(format!(
                "parameter {key:?} must be true or false, not {v}"
            ))),
        }
    };
    let mut binary = flag(
        Some(&Value::Object(parameters.clone())),
        "binary_data_output",
    )?
    .unwrap_or(false);
    for o in outputs {
        if o.get("name").and_then(Value::as_str) == Some(name)
            && let Some(b) = flag(o.get("parameters"), "binary_data")?
        {
            binary = b;
        }
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_splits_at_the_header_length() {
        let body = b"{\"a\":1}RAW";
        assert_eq!(
            split(body, Some("7")).unwrap(),
            (&b"{\"a\":1}"[..], &b"RAW"[..])
        );
        assert_eq!(split(body, None).unwrap(), (&body[..], &b""[..]));
        for bad in ["11", "-1", "x", "99999999999999999999999"] {
            assert_eq!(
                split(body, Some(bad)).unwrap_err().status().as_u16(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn bytes_elements_round_trip_and_bad_framing_is_refused() {
        let elements = vec![b"hi".to_vec(), vec![], vec![0u8; 300]];
        let raw = encode_bytes(&elements);
        assert_eq!(&raw[..6], &[2, 0, 0, 0, b'h', b'i']);
        assert_eq!(bytes_elements(&raw, 3, "t").unwrap(), elements);
        for (raw, count) in [
            (raw.clone(), 2),                   // more elements than the shape
            (raw.clone(), 4),                   // fewer
            (raw[..raw.len() - 1].to_vec(), 3), // an element cut short
            (vec![1, 0], 1),                    // a length cut short
            (vec![255, 255, 255, 255], 1),      // a length over what is left
        ] {
            let e = bytes_elements(&raw, count, "t").unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{e}");
        }
    }

    #[test]
    fn take_never_reads_past_the_body() {
        let mut rest: &[u8] = b"abcdef";
        assert_eq!(take(&mut rest, 2, "t").unwrap(), b"ab");
        assert_eq!(rest, b"cdef");
        assert!(take(&mut rest, 5, "t").is_err());
        assert_eq!(rest, b"cdef");
    }

    #[test]
    fn binary_output_follows_the_request_then_the_output() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert!(!wants_binary(&p(json!({})), &[], "image").unwrap());
        assert!(wants_binary(&p(json!({"binary_data_output": true})), &[], "image").unwrap());
        let off = [json!({"name": "image", "parameters": {"binary_data": false}})];
        assert!(!wants_binary(&p(json!({"binary_data_output": true})), &off, "image").unwrap());
        let on = [json!({"name": "image", "parameters": {"binary_data": true}})];
        assert!(wants_binary(&p(json!({})), &on, "image").unwrap());
        let other = [json!({"name": "other", "parameters": {"binary_data": true}})];
        assert!(!wants_binary(&p(json!({})), &other, "image").unwrap());
        assert!(wants_binary(&p(json!({"binary_data_output": 1})), &[], "image").is_err());
    }

    #[test]
    fn sizes_are_byte_counts() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            size_param(&p(json!({"binary_data_size": 5})), "t").unwrap(),
            Some(5)
        );
        assert_eq!(size_param(&p(json!({})), "t").unwrap(), None);
        for bad in [json!(-1), json!(1.5), json!("5")] {
            assert!(size_param(&p(json!({ "binary_data_size": bad })), "t").is_err());
        }
    }
}
