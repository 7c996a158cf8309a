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
//! * [`command`]: each stage's command line as a typed value (the stage parses it, the pipeline
//!   writes it with `to_args()`), the [`Stage`]s, and where their files are named
//!   ([`command::naming`]).
//! * [`runs_as`]: what a stage runs as (user, groups, read-only root, volume access), logged at
//!   its start.
//! * [`vocab`]: the style grammar, the architecture names, stylize's backends and devices.

pub mod atomic;
pub mod cancel;
pub mod command;
pub mod digest;
pub mod error;
pub mod files;
pub mod location;
pub mod manifest;
pub mod runs_as;
pub mod telemetry;
pub mod vocab;

/// The stage binaries, in pipeline order: `pipeline`, the spec and the renderer use these names.
pub const STAGES: [&str; 4] = [
    Stage::Download.as_str(),
    Stage::PackageModel.as_str(),
    Stage::Stylize.as_str(),
    Stage::Upload.as_str(),
];

pub use atomic::{AtomicFile, Clobber, write_atomic};
pub use command::Stage;
pub use digest::{Sha256Hex, sha256_bytes, sha256_file};
pub use error::{ExitStatus, StageError};
pub use location::Location;
pub use manifest::{Artifact, ArtifactKind, Component, Manifest, SCHEMA_ID, StageRun};
