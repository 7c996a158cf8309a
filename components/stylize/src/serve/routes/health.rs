//! Health and metadata: the Open Inference Protocol's `/v2/health/{live,ready}`, `/v2`,
//! `/v2/models/{m}`, `/v2/models/{m}/ready`, KServe V1's `GET /v1/models/{m}`, and `/metrics`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::serve::error::ServeError;
use crate::serve::state::AppState;

pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready once the packages are loaded and verified (the server listens only then), until
/// SIGTERM starts the drain.
pub(crate) async fn ready(State(s): State<AppState>) -> Response {
    if s.ready() {
        Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

pub(crate) async fn server_metadata(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "kubestyle",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
        "models": s.models.names(),
    }))
}

pub(crate) async fn model_metadata(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ServeError> {
    let pkg = s.models.get(&model)?;
    Ok(Json(json!({
        "name": pkg.dir_name,
        "versions": [],
        "platform": format!("kubestyle_{}", pkg.card.architecture.name()),
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [-1] }],
        "outputs": [{ "name": "image", "datatype": "BYTES", "shape": [-1] }],
        "parameters": {
            "styles": pkg.card.styles,
            "weights_sha256": pkg.card.weights.sha256.as_str(),
        },
    })))
}

pub(crate) async fn model_ready(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ServeError> {
    let pkg = s.models.get(&model)?;
    let ready = s.ready();
    let body = Json(json!({ "name": pkg.dir_name, "ready": ready }));
    Ok(if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    })
}

pub(crate) async fn metrics(State(s): State<AppState>) -> Result<Response, ServeError> {
    let text = s
        .metrics
        .encode()
        .map_err(|e| ServeError::Internal(format!("encoding the metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
