//! KServe's V1 protocol: `POST /v1/models/{m}:predict` with `{"instances": [{"b64": "…"}]}`
//! (a style per instance as `"style"`, or for all as `"parameters": {"style": …}`), answered
//! `{"predictions": [{"b64": "…", "content_type": …}]}`; `GET /v1/models/{m}` is its readiness.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::serve::error::ServeError;
use crate::serve::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    instances: Vec<Instance>,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Debug, Default, Deserialize)]
struct Parameters {
    style: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance {
    b64: String,
    style: Option<String>,
}

/// `{m}:predict` (the route is `/v1/models/{spec}`: a path segment cannot hold a parameter
/// and a literal in this router).
fn predict_model(spec: &str) -> Result<&str, ServeError> {
    spec.strip_suffix(":predict").ok_or_else(|| {
        ServeError::NoRoute(format!(
            "POST /v1/models/{spec} (expected {{model}}:predict)"
        ))
    })
}

pub(crate) async fn model_ready(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ServeError> {
    let pkg = s.models.get(&model)?;
    Ok(Json(json!({ "name": pkg.dir_name, "ready": s.ready() })))
}

pub(crate) async fn predict(
    State(s): State<AppState>,
    Path(spec): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ServeError> {
    let model = predict_model(&spec)?;
    s.models.get(model)?;
    let req: PredictRequest = super::json(&super::body(body)?)?;
    if req.instances.is_empty() {
        return Err(ServeError::BadRequest("\"instances\" is empty".into()));
    }
    let mut predictions = Vec::with_capacity(req.instances.len());
    for (i, inst) in req.instances.into_iter().enumerate() {
        let image = super::unbase64(&inst.b64, &format!("instances[{i}].b64"))?;
        let style = inst.style.or_else(|| req.parameters.style.clone());
        let out = s.stylize(Some(model), style.as_deref(), image).await?;
        predictions.push(json!({
            "b64": super::base64(&out.bytes),
            "content_type": out.content_type,
            "width": out.width,
            "height": out.height,
        }));
    }
    Ok(Json(json!({ "predictions": predictions })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_needs_the_suffix() {
        assert_eq!(
            predict_model("multistyle26:predict").unwrap(),
            "multistyle26"
        );
        assert_eq!(
            predict_model("multistyle26").unwrap_err().status().as_u16(),
            404
        );
    }
}
