//! The pipeline spec: one YAML file that says what to stylise, with what, and where the results
//! go. Field by field documentation is on the types below (and in the README); the JSON Schema
//! (`pipeline schema`, `schemas/pipeline-spec-v1.schema.json`) is generated from them.
//!
//! Loading is strict: unknown keys are refused, and every error names the field and its line.
//! Credentials and endpoints never appear in a spec: they come from the environment
//! (`AWS_*`, `AWS_ENDPOINT_URL`), locally and (through a Secret) in a cluster.
//!
//! The modules: `types` (one file per section of the spec), `validate` (the checks beyond the
//! types, one function per section, all writing into one list), `load` (read and parse),
//! `lines` (a field's line in the YAML), `resolve` ([`Loaded`]: paths and URIs against the spec
//! file) and `error` ([`SpecError`], [`SpecErrors`]).

pub mod bounds;
mod error;
mod lines;
mod load;
mod resolve;
mod types;
mod validate;

pub use error::{SpecError, SpecErrors};
pub use lines::line_of;
pub use load::{load, parse};
pub use resolve::{Loaded, model_package_name};
pub use types::{
    ArchitectureName, Backend, ClaimSpec, Device, GpuSpec, Kubernetes, ModelSource, OutputFormat,
    Parallelism, Resources, Sources, Spec, StyleRef, StyleSpec, StylizeOptions, Toleration,
};
pub use validate::validate;

/// The only spec version this build reads.
pub const SPEC_VERSION: u32 = 1;

#[cfg(test)]
mod tests;
