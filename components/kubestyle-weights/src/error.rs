//! The weight readers' errors; [`From<WeightsError> for StageError`] is the one place they get
//! their exit codes.

use std::path::Path;

use kubestyle_manifest::StageError;
use kubestyle_manifest::error::PathIo;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A weight file that is not what it claims, or not the architecture's (exit 4).
    #[error("input invalid: {0}")]
    Invalid(String),
    /// Reading the file; a missing one is an input missing (exit 3), others local I/O (exit 8).
    #[error(transparent)]
    Read(PathIo),
}

impl WeightsError {
    pub fn read(path: impl AsRef<Path>, source: std::io::Error) -> WeightsError {
        WeightsError::Read(PathIo::new(path, source))
    }
}

impl From<WeightsError> for StageError {
    fn from(e: WeightsError) -> StageError {
        match e {
            WeightsError::Invalid(m) => StageError::InputInvalid(m),
            WeightsError::Read(e) => e.into_read_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubestyle_manifest::ExitStatus;

    #[test]
    fn kinds_map_to_their_exit_codes_with_the_same_text() {
        let e = WeightsError::Invalid("a.pth: bad".into());
        let text = e.to_string();
        let s = StageError::from(e);
        assert_eq!(
            (s.exit_status(), s.to_string()),
            (ExitStatus::InputInvalid, text)
        );
        let nf = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        assert_eq!(
            StageError::from(WeightsError::read("/w.pth", nf)).exit_status(),
            ExitStatus::InputMissing
        );
        let e = WeightsError::read("/w.pth", std::io::Error::other("eio"));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(StageError::from(e).exit_status(), ExitStatus::LocalIo);
    }
}
