//! The HTTP routes, one protocol per file.

pub(crate) mod binary_data;
pub(crate) mod health;
pub(crate) mod raw;
pub(crate) mod v1;
pub(crate) mod v2;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use super::error::ServeError;

/// A request body, or why it could not be read (413 over `--max-body-bytes`).
pub(crate) fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ServeError> {
    b.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServeError::TooLarge(format!(
            "the request body is over the limit (--max-body-bytes): {e}"
        )),
        _ => ServeError::BadRequest(format!("reading the request body: {e}")),
    })
}

/// A JSON request body parsed into `T`, a 400 naming what is wrong otherwise.
pub(crate) fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ServeError> {
    serde_json::from_slice(b)
        .map_err(|e| ServeError::BadRequest(format!("invalid JSON request: {e}")))
}

/// A base64 string (standard alphabet, padding optional) decoded.
pub(crate) fn unbase64(s: &str, what: &str) -> Result<Vec<u8>, ServeError> {
    use base64::Engine;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT
        .decode(s.trim())
        .map_err(|e| ServeError::BadRequest(format!("{what}: not base64: {e}")))
}

pub(crate) fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
