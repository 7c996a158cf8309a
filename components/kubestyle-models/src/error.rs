//! The models crate's errors; [`From<ModelError> for StageError`] is the one place they get
//! their exit codes.

use std::path::Path;

use kubestyle_manifest::StageError;
use kubestyle_manifest::error::PathIo;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A package, card, style mix or image the networks cannot take (exit 4, input invalid).
    #[error("{0}")]
    Invalid(String),
    /// A package's weights differ from what its card records (exit 6, integrity).
    #[error("{0}")]
    Integrity(String),
    /// Reading a package or scratch file; a missing file is an input missing (exit 3).
    #[error(transparent)]
    Read(PathIo),
    /// Writing scratch files (exit 8, local I/O).
    #[error(transparent)]
    Write(PathIo),
    /// Serialising the weights or the card: a bug (exit 1).
    #[error("serialising {what}: {source}")]
    Serialise {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broken invariant: a bug (exit 1).
    #[error("{0}")]
    Internal(String),
    /// From the weight readers.
    #[error(transparent)]
    Weights(#[from] kubestyle_weights::WeightsError),
    /// From the contract crate (atomic writes).
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl ModelError {
    pub fn read(path: impl AsRef<Path>, source: std::io::Error) -> ModelError {
        ModelError::Read(PathIo::new(path, source))
    }

    pub fn write(path: impl AsRef<Path>, source: std::io::Error) -> ModelError {
        ModelError::Write(PathIo::new(path, source))
    }

    pub fn serialise(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ModelError {
        ModelError::Serialise {
            what,
            source: source.into(),
        }
    }
}

impl From<ModelError> for StageError {
    fn from(e: ModelError) -> StageError {
        match e {
            ModelError::Invalid(m) => StageError::InputInvalid(m),
            ModelError::Integrity(m) => StageError::Integrity(m),
            ModelError::Read(e) => e.into_read_error(),
            ModelError::Write(e) => e.into_write_error(),
            e @ ModelError::Serialise { .. } => StageError::Internal(e.to_string()),
            ModelError::Internal(m) => StageError::Internal(m),
            ModelError::Weights(e) => e.into(),
            ModelError::Stage(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubestyle_manifest::ExitStatus;

    #[test]
    fn each_kind_maps_to_its_exit_code_with_the_same_message() {
        let nf = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases: Vec<(ModelError, ExitStatus)> = vec![
            (ModelError::Invalid("x".into()), ExitStatus::InputInvalid),
            (ModelError::Integrity("x".into()), ExitStatus::Integrity),
            (ModelError::read("/p", nf), ExitStatus::InputMissing),
            (
                ModelError::write("/p", std::io::Error::other("full")),
                ExitStatus::LocalIo,
            ),
            (
                ModelError::serialise("card", std::io::Error::other("x")),
                ExitStatus::Internal,
            ),
            (ModelError::Internal("x".into()), ExitStatus::Internal),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            let s: StageError = e.into();
            assert_eq!(s.exit_status(), want, "{text}");
            assert!(
                s.to_string().contains("x") || s.to_string().contains("/p"),
                "{s}"
            );
        }
        // The source is kept for the chain.
        let e = ModelError::write("/p", std::io::Error::other("full"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
