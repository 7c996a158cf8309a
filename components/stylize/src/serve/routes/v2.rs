//! The Open Inference Protocol (V2): `POST /v2/models/{m}/infer` with one `BYTES` input tensor
//! of shape `[n]` holding base64 images, the style (the batch grammar) as the parameter
//! `style` of the request or of the input; answered with a `BYTES` output `image` of the same
//! shape. The binary-data extension ([`super::binary_data`]) both ways: an input's images as raw
//! `BYTES` after the JSON header, and the output as raw bytes when the request asks for it.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::binary_data;
use crate::serve::error::ServeError;
use crate::serve::state::AppState;

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Tensor>,
    #[serde(default)]
    outputs: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Tensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// Absent when the tensor travels as binary data.
    #[serde(default)]
    data: Vec<Value>,
}

fn style_param(p: &Map<String, Value>) -> Result<Option<String>, ServeError> {
    match p.get("style") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ServeError::BadRequest(format!(
            "parameter \"style\" must be a string or an index, not {other}"
        ))),
    }
}

/// The images (decoded base64, or the raw `BYTES` elements of `binary`, the body after the JSON
/// header) and the style of a request, checked; every binary byte must belong to an input.
fn images(
    req: &InferRequest,
    mut binary: &[u8],
) -> Result<(Vec<Vec<u8>>, Option<String>), ServeError> {
    let [input] = req.inputs.as_slice() else {
        return Err(ServeError::BadRequest(format!(
            "expected one input tensor (a BYTES image), got {}",
            req.inputs.len()
        )));
    };
    if input.datatype != "BYTES" {
        return Err(ServeError::BadRequest(format!(
            "input {:?}: datatype {:?}, expected BYTES (the encoded image, base64 in JSON)",
            input.name, input.datatype
        )));
    }
    // Checked: a client's shape must not overflow (a panic) nor wrap into a match.
    let n = input.shape.iter().try_fold(
        1i64,
        |acc, &d| if d < 0 { None } else { acc.checked_mul(d) },
    );
    let what = format!("input {:?}", input.name);
    if let Some(size) = binary_data::size_param(&input.parameters, &what)? {
        let count = n
            .filter(|n| *n >= 1 && !input.shape.is_empty())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                ServeError::BadRequest(format!("{what}: shape {:?} is not a count", input.shape))
            })?;
        if !input.data.is_empty() {
            return Err(ServeError::BadRequest(format!(
                "{what}: both data and binary_data_size"
            )));
        }
        let raw = binary_data::take(&mut binary, size, &what)?;
        let images = binary_data::bytes_elements(raw, count, &what)?;
        if !binary.is_empty() {
            return Err(ServeError::BadRequest(format!(
                "{} byte(s) of binary data belong to no input",
                binary.len()
            )));
        }
        let style = match style_param(&input.parameters)? {
            Some(s) => Some(s),
            None => style_param(&req.parameters)?,
        };
        return Ok((images, style));
    }
    if !binary.is_empty() {
        return Err(ServeError::BadRequest(format!(
            "{} byte(s) of binary data but no input with binary_data_size",
            binary.len()
        )));
    }
    if input.shape.is_empty() || n != i64::try_from(input.data.len()).ok() || n < Some(1) {
        return Err(ServeError::BadRequest(format!(
            "input {:?}: shape {:?} does not match its {} data element(s)",
            input.name,
            input.shape,
            input.data.len()
        )));
    }
    let images = input
        .data
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => super::unbase64(s, &format!("input {:?} data[{i}]", input.name)),
            _ => Err(ServeError::BadRequest(format!(
                "input {:?} data[{i}]: expected a base64 string",
                input.name
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let style = match style_param(&input.parameters)? {
        Some(s) => Some(s),
        None => style_param(&req.parameters)?,
    };
    Ok((images, style))
}

pub(crate) async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServeError> {
    s.models.get(&model)?;
    let body = super::body(body)?;
    let header_len = match headers.get(binary_data::HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ServeError::BadRequest("Inference-Header-Content-Length is not text".into())
        })?),
    };
    let (head, binary) = binary_data::split(&body, header_len)?;
    let req: InferRequest = super::json(head)?;
    let (imgs, style) = images(&req, binary)?;
    let binary_out = binary_data::wants_binary(&req.parameters, &req.outputs, "image")?;
    let n = imgs.len();
    let mut outputs = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for img in imgs {
        let out = s.stylize(Some(&model), style.as_deref(), img).await?;
        types.push(out.content_type);
        outputs.push(out.bytes);
    }
    types.dedup();
    let mut output = json!({
        "name": "image",
        "datatype": "BYTES",
        "shape": [n],
        "parameters": { "content_type": types.join(",") },
    });
    let raw = if binary_out {
        let raw = binary_data::encode_bytes(&outputs);
        output["parameters"]["binary_data_size"] = json!(raw.len());
        Some(raw)
    } else {
        output["data"] = outputs
            .iter()
            .map(|o| Value::String(super::base64(o)))
            .collect();
        None
    };
    let mut resp = json!({ "model_name": model, "outputs": [output] });
    if let Some(id) = req.id {
        resp["id"] = Value::String(id);
    }
    let Some(raw) = raw else {
        return Ok(Json(resp).into_response());
    };
    let mut framed = serde_json::to_vec(&resp).expect("a JSON value serialises");
    let json_len = framed.len();
    framed.extend_from_slice(&raw);
    let mut r = Response::new(Body::from(framed));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(binary_data::HEADER, HeaderValue::from(json_len));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> InferRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tensors_are_checked() {
        let ok = req(
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
            "data": ["aGk="], "parameters": {"style": 7}}], "parameters": {"style": "3"}}),
        );
        let (imgs, style) = images(&ok, &[]).unwrap();
        assert_eq!((imgs, style.as_deref()), (vec![b"hi".to_vec()], Some("7")));
        for bad in [
            json!({"inputs": []}),
            json!({"inputs": [{"name": "i", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            json!({"inputs": [{"name": "i", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}),
            json!({"inputs": [{"name": "i", "shape": [i64::MAX, 2], "datatype": "BYTES", "data": ["aGk="]}]}),
            json!({"inputs": [{"name": "i", "shape": [-1, -1], "datatype": "BYTES", "data": ["aGk="]}]}),
            json!({"inputs": [{"name": "i", "shape": [], "datatype": "BYTES", "data": ["aGk="]}]}),
            json!({"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": ["***"]}]}),
            json!({"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": [3]}]}),
            json!({"parameters": {"style": [1]}, "inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}),
        ] {
            let e = images(&req(bad.clone()), &[]).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}: {e}");
        }
    }
}
