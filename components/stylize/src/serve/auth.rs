//! Optional bearer-token auth (`--token-file`): every route but the health probes needs
//! `Authorization: Bearer <token>`. The token is compared in constant time and never logged.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kubestyle_manifest::StageError;

use super::error::ServeError;
use super::state::AppState;

/// A secret that does not print itself.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token in `path` (surrounding whitespace trimmed); an empty one is refused.
    pub(crate) fn read(path: &Path) -> Result<Token, StageError> {
        let s = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
        let t = s.trim();
        if t.is_empty() {
            return Err(StageError::Usage(format!(
                "--token-file {}: the file is empty",
                path.display()
            )));
        }
        Ok(Token(t.to_string()))
    }

    /// Whether `given` is the token, in time independent of where they differ.
    pub(crate) fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

/// Paths open without a token: the probes.
fn open(path: &str) -> bool {
    path.starts_with("/v2/health/")
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    if open(req.uri().path()) {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token.matches(t.trim()));
    if ok {
        next.run(req).await
    } else {
        ServeError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token_and_never_prints_it() {
        let t = Token("s3cr3t".into());
        assert!(t.matches("s3cr3t"));
        for bad in ["", "s3cr3", "s3cr3t!", "S3CR3T"] {
            assert!(!t.matches(bad), "{bad}");
        }
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(open("/v2/health/ready") && !open("/v2/models/m/infer") && !open("/metrics"));
    }
}
