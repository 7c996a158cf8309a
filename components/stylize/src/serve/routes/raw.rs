//! The plain form: `POST /stylize?style=7[&model=m]` with the image's bytes as the body
//! (`curl --data-binary @photo.jpg`), answered with the styled image's bytes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::serve::error::ServeError;
use crate::serve::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    style: Option<String>,
    model: Option<String>,
}

pub(crate) async fn stylize(
    State(s): State<AppState>,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServeError> {
    let Query(p) = query.map_err(|e| ServeError::BadRequest(format!("query: {e}")))?;
    let body = super::body(body)?;
    let out = s
        .stylize(p.model.as_deref(), p.style.as_deref(), body.to_vec())
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, out.content_type.to_string()),
            (
                header::HeaderName::from_static("x-kubestyle-forward-ms"),
                format!("{:.1}", out.forward_ms),
            ),
        ],
        out.bytes,
    )
        .into_response())
}
