//! The Open Inference Protocol (V2): `POST /v2/models/{m}/infer` with one `BYTES` input tensor
//! of shape `[n]` holding base64 images, the style (the batch grammar) as the parameter
//! `style` of the request or of the input; answered with a `BYTES` output `image` of the same
//! shape. The binary-data extension is not supported (a request using it is refused with 400).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::serve::error::ServeError;
use crate::serve::state::AppState;

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Tensor>,
    #[serde(default)]
    #[allow(dead_code)]
    outputs: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Tensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
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

/// The images (decoded base64) and the style of a request, checked.
fn images(req: &InferRequest) -> Result<(Vec<Vec<u8>>, Option<String>), ServeError> {
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
) -> Result<Json<Value>, ServeError> {
    s.models.get(&model)?;
    if headers.contains_key("inference-header-content-length") {
        return Err(ServeError::BadRequest(
            "the binary-data extension is not supported: send the image base64 in the JSON".into(),
        ));
    }
    let req: InferRequest = super::json(&super::body(body)?)?;
    let (imgs, style) = images(&req)?;
    let n = imgs.len();
    let mut data = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for img in imgs {
        let out = s.stylize(Some(&model), style.as_deref(), img).await?;
        data.push(Value::String(super::base64(&out.bytes)));
        types.push(out.content_type);
    }
    types.dedup();
    let mut resp = json!({
        "model_name": model,
        "outputs": [{
            "name": "image",
            "datatype": "BYTES",
            "shape": [n],
            "parameters": { "content_type": types.join(",") },
            "data": data,
        }],
    });
    if let Some(id) = req.id {
        resp["id"] = Value::String(id);
    }
    Ok(Json(resp))
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
        let (imgs, style) = images(&ok).unwrap();
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
            let e = images(&req(bad.clone())).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}: {e}");
        }
    }
}
