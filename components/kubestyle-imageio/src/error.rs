//! Decoding and encoding errors; [`From<ImageIoError> for StageError`] is the one place they get
//! their exit codes.

use std::path::{Path, PathBuf};

use kubestyle_manifest::StageError;
use kubestyle_manifest::error::PathIo;

#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    /// An image that does not decode, or is over a limit (exit 4).
    #[error("input invalid: {0}")]
    Invalid(String),
    /// Reading the file; a missing one is an input missing (exit 3), others local I/O (exit 8).
    #[error(transparent)]
    Read(PathIo),
    /// Writing an output (exit 8).
    #[error(transparent)]
    Write(PathIo),
    /// The encoder refused an image it was given: a bug (exit 1).
    #[error("encoding {}: {source}", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// From the contract crate (atomic writes).
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl ImageIoError {
    pub fn read(path: impl AsRef<Path>, source: std::io::Error) -> ImageIoError {
        ImageIoError::Read(PathIo::new(path, source))
    }

    pub fn write(path: impl AsRef<Path>, source: std::io::Error) -> ImageIoError {
        ImageIoError::Write(PathIo::new(path, source))
    }
}

impl From<ImageIoError> for StageError {
    fn from(e: ImageIoError) -> StageError {
        match e {
            ImageIoError::Invalid(m) => StageError::InputInvalid(m),
            ImageIoError::Read(e) => e.into_read_error(),
            ImageIoError::Write(e) => e.into_write_error(),
            e @ ImageIoError::Encode { .. } => StageError::Internal(e.to_string()),
            ImageIoError::Stage(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubestyle_manifest::ExitStatus;

    #[test]
    fn kinds_map_to_their_exit_codes() {
        let e = ImageIoError::Invalid("a.jpg: truncated".into());
        let text = e.to_string();
        let s = StageError::from(e);
        assert_eq!(
            (s.exit_status(), s.to_string()),
            (ExitStatus::InputInvalid, text)
        );
        let nf = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        assert_eq!(
            StageError::from(ImageIoError::read("/a.jpg", nf)).exit_status(),
            ExitStatus::InputMissing
        );
        let e = ImageIoError::write("/o.png", std::io::Error::other("full"));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(StageError::from(e).exit_status(), ExitStatus::LocalIo);
    }
}
