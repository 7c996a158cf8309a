//! Checks that need more than the types, one function per section of the spec. Each writes
//! into one [`Diagnostics`] list, so every problem of a spec is reported at once; the order of
//! the calls in [`validate`] is the order of the report.

mod kubernetes;
mod parallelism;
mod sources;
mod stylize;

use kubestyle_manifest::Location;
use kubestyle_manifest::manifest::validate_run_id;

use crate::bounds::{self, Range};
use crate::{SPEC_VERSION, Spec};

/// The problems found so far, in the order found: `(field, message)`, the field a path like
/// `sources.models[0].uri`.
#[derive(Debug, Default)]
struct Diagnostics(Vec<(String, String)>);

impl Diagnostics {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    /// A number within its [`Range`] (the schema's `minimum`/`maximum`).
    fn range(&mut self, field: &str, value: i64, r: Range) {
        if !r.contains(value) {
            self.push(
                field,
                format!("{value} is out of range: {} to {}", r.min, r.max),
            );
        }
    }

    /// A string matching its pattern and length bound (the schema's `pattern`/`maxLength`);
    /// `what` says what it should be.
    fn pattern(&mut self, field: &str, value: &str, pattern: &str, max_len: usize, what: &str) {
        if value.len() > max_len {
            self.push(
                field,
                format!("{} bytes long: at most {max_len}", value.len()),
            );
        } else if !bounds::matches(pattern, value) {
            self.push(field, format!("{value:?} is not {what}"));
        }
    }
}

/// Checks that need more than the types: names, URIs, style syntax, options.
pub fn validate(spec: &Spec) -> Vec<(String, String)> {
    let mut d = Diagnostics::default();
    header(spec, &mut d);
    sources::validate(&spec.sources, &spec.styles, &mut d);
    output(&spec.output, &mut d);
    if spec.publish_models && spec.anonymize {
        d.push(
            "publish_models",
            "not with anonymize: a model card names its weights' source, which anonymize hides",
        );
    }
    stylize::validate(&spec.stylize, &mut d);
    parallelism::validate(&spec.parallelism, &mut d);
    if let Some(k) = &spec.kubernetes {
        kubernetes::validate(k, &mut d);
    }
    d.0
}

/// `version` and `name`.
fn header(spec: &Spec, d: &mut Diagnostics) {
    if spec.version != SPEC_VERSION {
        d.push(
            "version",
            format!(
                "unsupported spec version {} (this build reads {SPEC_VERSION})",
                spec.version
            ),
        );
    }
    if let Err(e) = validate_run_id(&spec.name) {
        d.push("name", e.message());
    }
}

/// `output`: a URI, and a prefix rather than an object.
fn output(output: &str, d: &mut Diagnostics) {
    if let Err(m) = check_uri(output) {
        d.push("output", m);
    } else if let Ok(Location::S3 { key, .. }) = output.parse::<Location>()
        && !(key.is_empty() || key.ends_with('/'))
        && key.rsplit('/').next().is_some_and(|l| l.contains('.'))
    {
        d.push(
            "output",
            "looks like an object, not a prefix: end it with '/'",
        );
    }
}

/// An `s3://` URI or a local path (`file://` allowed).
fn check_uri(u: &str) -> Result<(), String> {
    if u.trim().is_empty() {
        return Err("empty".into());
    }
    if u.starts_with("s3://") {
        u.parse::<Location>().map(|_| ()).map_err(|e| e.message())
    } else if u.contains("://") && !u.starts_with("file://") {
        Err(format!(
            "{u:?}: only s3:// URIs and local paths are supported"
        ))
    } else {
        Ok(())
    }
}
