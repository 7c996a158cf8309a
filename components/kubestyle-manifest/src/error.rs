//! One error type for every stage, and the exit codes it maps to.
//!
//! The table is part of the public contract (it is printed in the README and relied on by
//! `pipeline` and by Kubernetes `podFailurePolicy` rules): never renumber a code.

use std::path::{Path, PathBuf};

/// Process exit codes shared by every kubestyle binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitStatus {
    /// Success.
    Ok = 0,
    /// A bug or an unexpected internal failure.
    Internal = 1,
    /// Bad command line (clap also uses 2).
    Usage = 2,
    /// An input (object, file, prefix, bucket) does not exist.
    InputMissing = 3,
    /// An input exists but cannot be used (malformed URI, bad manifest, wrong format).
    InputInvalid = 4,
    /// Storage or network failure talking to S3 (after retries), access denied.
    Storage = 5,
    /// Data does not match its recorded digest or size.
    Integrity = 6,
    /// Destination already holds different data (use `--overwrite`/`--force`).
    Conflict = 7,
    /// Local filesystem failure (disk full, permission denied, read-only volume).
    LocalIo = 8,
    /// The requested device (a GPU) is not usable on this node: the binary was built without a
    /// GPU backend, or libtorch sees no (or too few) CUDA devices. Not a usage error: the command
    /// line is right for the node it was meant for. Not retryable either: a retry lands on the
    /// same node class with the same image and finds the same, so a Kubernetes
    /// `podFailurePolicy` should fail the Job on it (`FailJob`), and nothing may fall back to the
    /// CPU silently (a GPU stage on the CPU runs for hours where it was planned for minutes).
    DeviceUnavailable = 9,
    /// Stopped by SIGINT (128 + 2): temp files removed, in-flight multipart uploads aborted, no
    /// manifest written. Running the same command again resumes.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15; a Kubernetes pod being deleted), cleaned up as for 130.
    Terminated = 143,
}

impl ExitStatus {
    pub const ALL: [ExitStatus; 12] = [
        ExitStatus::Ok,
        ExitStatus::Internal,
        ExitStatus::Usage,
        ExitStatus::InputMissing,
        ExitStatus::InputInvalid,
        ExitStatus::Storage,
        ExitStatus::Integrity,
        ExitStatus::Conflict,
        ExitStatus::LocalIo,
        ExitStatus::DeviceUnavailable,
        ExitStatus::Interrupted,
        ExitStatus::Terminated,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Short stable name, used in logs and the README table.
    pub fn name(self) -> &'static str {
        match self {
            ExitStatus::Ok => "ok",
            ExitStatus::Internal => "internal",
            ExitStatus::Usage => "usage",
            ExitStatus::InputMissing => "input-missing",
            ExitStatus::InputInvalid => "input-invalid",
            ExitStatus::Storage => "storage",
            ExitStatus::Integrity => "integrity",
            ExitStatus::Conflict => "conflict",
            ExitStatus::LocalIo => "local-io",
            ExitStatus::DeviceUnavailable => "device-unavailable",
            ExitStatus::Interrupted => "interrupted",
            ExitStatus::Terminated => "terminated",
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

/// The error every stage library returns. Each variant maps to one [`ExitStatus`].
///
/// Messages are meant for people: they name the key, file or field at fault. They never
/// contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("input missing: {}", .0.join("; "))]
    InputMissing(Vec<String>),
    #[error("input invalid: {0}")]
    InputInvalid(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("integrity: {0}")]
    Integrity(String),
    #[error("conflict: {}", .0.join("; "))]
    Conflict(Vec<String>),
    #[error("{}: {source}", .path.display())]
    LocalIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A remote service failed (S3): exit 5 like [`StageError::Storage`], the service's own
    /// error kept as the source.
    #[error("storage: {message}")]
    Remote {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl StageError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            StageError::Usage(_) => ExitStatus::Usage,
            StageError::InputMissing(_) => ExitStatus::InputMissing,
            StageError::InputInvalid(_) => ExitStatus::InputInvalid,
            StageError::Storage(_) | StageError::Remote { .. } => ExitStatus::Storage,
            StageError::Integrity(_) => ExitStatus::Integrity,
            StageError::Conflict(_) => ExitStatus::Conflict,
            StageError::LocalIo { .. } => ExitStatus::LocalIo,
            StageError::DeviceUnavailable(_) => ExitStatus::DeviceUnavailable,
            StageError::Internal(_) => ExitStatus::Internal,
        }
    }

    /// Wrap an I/O error with the path it concerns. A missing file we were asked to read is an
    /// input problem, not a filesystem failure.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StageError::LocalIo {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Like [`StageError::io`], but `NotFound` becomes [`StageError::InputMissing`].
    pub fn read(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            StageError::InputMissing(vec![format!("{} does not exist", path.as_ref().display())])
        } else {
            StageError::io(path, source)
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        StageError::InputInvalid(msg.into())
    }
}

impl StageError {
    /// The message without its kind's prefix: what `Display` shows after `usage: `,
    /// `input invalid: ` and so on (for a local I/O error, all of it).
    pub fn message(&self) -> String {
        match self {
            StageError::Usage(m)
            | StageError::InputInvalid(m)
            | StageError::Storage(m)
            | StageError::Integrity(m)
            | StageError::DeviceUnavailable(m)
            | StageError::Internal(m) => m.clone(),
            StageError::InputMissing(v) | StageError::Conflict(v) => v.join("; "),
            StageError::Remote { message, .. } => message.clone(),
            StageError::LocalIo { .. } => self.to_string(),
        }
    }

    /// The same kind of error (so the same exit code), its message prefixed with `context: `.
    /// A local I/O error is returned as it is: its path and source already say where.
    pub fn context(self, context: impl std::fmt::Display) -> StageError {
        let with = |m: String| format!("{context}: {m}");
        match self {
            StageError::Usage(m) => StageError::Usage(with(m)),
            StageError::InputInvalid(m) => StageError::InputInvalid(with(m)),
            StageError::Storage(m) => StageError::Storage(with(m)),
            StageError::Integrity(m) => StageError::Integrity(with(m)),
            StageError::DeviceUnavailable(m) => StageError::DeviceUnavailable(with(m)),
            StageError::Internal(m) => StageError::Internal(with(m)),
            StageError::InputMissing(v) => {
                StageError::InputMissing(v.into_iter().map(with).collect())
            }
            StageError::Conflict(v) => StageError::Conflict(v.into_iter().map(with).collect()),
            StageError::Remote { message, source } => StageError::Remote {
                message: with(message),
                source,
            },
            e @ StageError::LocalIo { .. } => e,
        }
    }
}

/// An I/O error with the path it concerns: what the crates' own error types keep as their
/// `#[source]` for reads and writes, turned into a [`StageError`] in one of two ways.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct PathIo {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathIo {
    pub fn new(path: impl AsRef<Path>, source: std::io::Error) -> PathIo {
        PathIo {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// As a read: a missing file is an input missing (exit 3), anything else local I/O (8).
    pub fn into_read_error(self) -> StageError {
        StageError::read(self.path, self.source)
    }

    /// As a write: local I/O (exit 8).
    pub fn into_write_error(self) -> StageError {
        StageError::io(self.path, self.source)
    }
}

/// An error that knows its exit code: what every binary's `finish`
/// ([`crate::telemetry::finish`], [`crate::cancel::finish`]) reports and exits with.
pub trait ExitCoded: std::fmt::Display {
    fn exit_code(&self) -> u8;

    /// The code's name in the README's table, when it has one.
    fn exit_name(&self) -> Option<&'static str> {
        let code = self.exit_code();
        ExitStatus::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .map(ExitStatus::name)
    }
}

impl ExitCoded for StageError {
    fn exit_code(&self) -> u8 {
        self.exit_status().code()
    }
}

pub type Result<T, E = StageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_stable() {
        let codes: Vec<u8> = ExitStatus::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130, 143]);
        let mut names: Vec<&str> = ExitStatus::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), ExitStatus::ALL.len());
    }

    #[test]
    fn read_of_missing_file_is_input_missing() {
        let e = StageError::read(
            "/nope",
            std::io::Error::new(std::io::ErrorKind::NotFound, "x"),
        );
        assert_eq!(e.exit_status(), ExitStatus::InputMissing);
        assert!(e.to_string().contains("/nope"));
        let e = StageError::read(
            "/nope",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "x"),
        );
        assert_eq!(e.exit_status(), ExitStatus::LocalIo);
    }

    #[test]
    fn context_keeps_the_kind_and_message_drops_the_prefix() {
        let e = StageError::InputInvalid("bad header".into()).context("/v/a.pth");
        assert_eq!(e.exit_status(), ExitStatus::InputInvalid);
        assert_eq!(e.to_string(), "input invalid: /v/a.pth: bad header");
        assert_eq!(e.message(), "/v/a.pth: bad header");
        let e = StageError::Usage("--x".into());
        assert_eq!(e.message(), "--x");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.exit_name(), Some(ExitStatus::Usage.name()));
    }

    #[test]
    fn missing_lists_every_item() {
        let e = StageError::InputMissing(vec!["s3://b/a".into(), "s3://b/c".into()]);
        assert_eq!(e.to_string(), "input missing: s3://b/a; s3://b/c");
    }
}

#[cfg(test)]
mod readme {
    use super::ExitStatus;

    /// The README's exit-code table is the user's documentation of this enum.
    #[test]
    fn readme_table_matches_codes() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        for s in ExitStatus::ALL {
            let row = format!("| {} | {} |", s.code(), s.name());
            assert!(
                readme.contains(&row),
                "README.md lacks the exit-code row {row:?}"
            );
        }
    }
}
