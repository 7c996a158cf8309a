//! The contract every kubestyle stage shares.
//!
//! * [`manifest`]: the versioned JSON manifest (`kubestyle.manifest/v1`) that stages exchange
//!   through the shared volume, with strict validation on read.
//! * [`atomic`]: crash-safe file writes (temp file beside the target with the same suffix,
//!   fsync, rename, fsync directory).
//! * [`cancel`]: SIGINT/SIGTERM: temp files removed, no commit after the signal, exit 130/143.
//! * [`digest`]: streaming SHA-256.
//! * [`location`]: `s3://bucket/key`, `s3://bucket/prefix/`, `file://` and local paths.
//! * [`error`]: the one error type and the exit-code table shared by every binary.

pub mod atomic;
pub mod cancel;
pub mod digest;
pub mod error;
pub mod files;
pub mod location;
pub mod manifest;
pub mod telemetry;

/// The stage binaries, in pipeline order: `pipeline`, the spec and the renderer use these names.
pub const STAGES: [&str; 4] = ["download", "package-model", "stylize", "upload"];

pub use atomic::{AtomicFile, Clobber, write_atomic};
pub use digest::{Sha256Hex, sha256_bytes, sha256_file};
pub use error::{ExitStatus, StageError};
pub use location::Location;
pub use manifest::{Artifact, ArtifactKind, Component, Manifest, SCHEMA_ID, StageRun};
