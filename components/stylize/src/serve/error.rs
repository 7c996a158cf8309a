//! A request's errors, and the one place they become HTTP statuses: every error answers
//! `{"error": "…"}` with its status (the Open Inference Protocol's error shape).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kubestyle_manifest::StageError;

/// Seconds a client is told to wait after a 503 (queue full or draining).
pub const RETRY_AFTER_S: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Malformed request: bad JSON, a wrong tensor, bad base64, an unknown style (400).
    #[error("{0}")]
    BadRequest(String),
    /// The image does not decode (415 Unsupported Media Type).
    #[error("{0}")]
    BadImage(String),
    /// No model of that name (404).
    #[error("model {0:?} is not served here")]
    NoModel(String),
    /// No such route (404).
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// A method the route does not take (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Body or image over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The output cannot be encoded in the format asked for (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Missing or wrong bearer token (401).
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// Every lane busy and the queue full (503 with `Retry-After`).
    #[error("busy: every lane is working and the queue is full; retry later")]
    Busy,
    /// Not ready: loading, or draining after SIGTERM (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// Past `--timeout-s` (504).
    #[error("the request took longer than its {0} s limit (--timeout-s)")]
    Timeout(f64),
    /// A bug or an unexpected failure (500); the message is logged, not hidden.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::BadImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServeError::NoModel(_) | ServeError::NoRoute(_) => StatusCode::NOT_FOUND,
            ServeError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ServeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServeError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServeError::Busy | ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A failure of the batch stage's code on a request (decoding, the forward pass): input
    /// errors are the client's, the rest ours.
    pub fn from_stage(e: StageError) -> ServeError {
        match e {
            StageError::InputInvalid(m) => ServeError::BadImage(m),
            StageError::Usage(m) => ServeError::BadRequest(m),
            other => ServeError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = status.as_u16(), "{self}");
        }
        let mut r = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        match self {
            ServeError::Busy | ServeError::Unavailable(_) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
            }
            ServeError::Unauthorized => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Promise: each kind has its documented status, and the busy answer says when to retry.
    #[test]
    fn statuses_and_retry_after() {
        let cases = [
            (ServeError::BadRequest("x".into()), 400),
            (ServeError::BadImage("x".into()), 415),
            (ServeError::NoModel("m".into()), 404),
            (ServeError::TooLarge("x".into()), 413),
            (ServeError::Unprocessable("x".into()), 422),
            (ServeError::Unauthorized, 401),
            (ServeError::Busy, 503),
            (ServeError::Timeout(3.0), 504),
            (ServeError::Internal("x".into()), 500),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e}");
        }
        let r = ServeError::Busy.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            ServeError::from_stage(StageError::InputInvalid("bad".into()))
                .status()
                .as_u16(),
            415
        );
    }
}
