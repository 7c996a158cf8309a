//! The stages' command lines as values: what a stage parses and what the pipeline writes.
//!
//! One module per stage holds that stage's clap `Args` (the stage crate re-exports it and its
//! `main` parses it) with `to_args()`, the inverse of parsing: the pipeline builds the typed
//! struct and hands `to_args()` to a local process or a pod, so a flag exists in one place and
//! `parse(to_args(c)) == c` is tested for each stage. [`naming`] is where the stages' files live
//! on the volume (manifests, shard manifests, logs) and what the pipeline names after a run.
//!
//! What `to_args()` writes: every field whose value differs from the parser's default
//! (`Option`s when set, each element of a list, `true` switches), so that a field left at its
//! default is left to the stage and its environment, as a hand-written command line would
//! (`--shard` comes from `JOB_COMPLETION_INDEX` in an Indexed Job's pods, S3 settings from
//! `AWS_*` / `KUBESTYLE_S3_*`). A few flags are always written because the pipeline decides
//! them for every run and they are worth reading in a pod spec (each `to_args` says which).
//! Each `to_args` destructures its struct, so a new field does not compile until it is written.

pub mod download;
pub mod naming;
pub mod package_model;
pub mod s3;
pub mod serve;
pub mod sheet;
pub mod stylize;
pub mod upload;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The stages, in pipeline order. Each is a binary of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Download,
    PackageModel,
    Stylize,
    Upload,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Download,
        Stage::PackageModel,
        Stage::Stylize,
        Stage::Upload,
    ];

    /// The stage's name: its binary, its manifest's `stage`, its Job's suffix.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::PackageModel => "package-model",
            Stage::Stylize => "stylize",
            Stage::Upload => "upload",
        }
    }

    /// Position in pipeline order (0-based).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown stage {s:?} (stages: {})", crate::STAGES.join(", ")))
    }
}

/// The command line of any stage, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum StageArgs {
    Download(download::Args),
    PackageModel(package_model::Args),
    Stylize(stylize::Args),
    Upload(upload::Cli),
}

impl StageArgs {
    pub fn stage(&self) -> Stage {
        match self {
            StageArgs::Download(_) => Stage::Download,
            StageArgs::PackageModel(_) => Stage::PackageModel,
            StageArgs::Stylize(_) => Stage::Stylize,
            StageArgs::Upload(_) => Stage::Upload,
        }
    }

    /// The arguments (without the program name).
    pub fn to_args(&self) -> Vec<String> {
        match self {
            StageArgs::Download(a) => a.to_args(),
            StageArgs::PackageModel(a) => a.to_args(),
            StageArgs::Stylize(a) => a.to_args(),
            StageArgs::Upload(a) => a.to_args(),
        }
    }
}

/// A command line under construction, flag by flag.
#[derive(Debug, Default)]
pub(crate) struct Argv(Vec<String>);

impl Argv {
    pub(crate) fn new() -> Self {
        Argv::default()
    }

    pub(crate) fn finish(self) -> Vec<String> {
        self.0
    }

    /// A bare word (a subcommand, a positional argument).
    pub(crate) fn word(&mut self, w: impl Into<String>) {
        self.0.push(w.into());
    }

    /// `flag value`.
    pub(crate) fn opt(&mut self, flag: &str, value: impl fmt::Display) {
        self.0.push(flag.to_string());
        self.0.push(value.to_string());
    }

    /// `flag value` unless `value` is the default.
    pub(crate) fn opt_unless<T: PartialEq + fmt::Display>(
        &mut self,
        flag: &str,
        value: &T,
        default: &T,
    ) {
        if value != default {
            self.opt(flag, value);
        }
    }

    /// `flag value` when set.
    pub(crate) fn opt_some<T: fmt::Display>(&mut self, flag: &str, value: &Option<T>) {
        if let Some(v) = value {
            self.opt(flag, v);
        }
    }

    /// `flag value` for each value.
    pub(crate) fn opt_each<T: fmt::Display>(&mut self, flag: &str, values: &[T]) {
        for v in values {
            self.opt(flag, v);
        }
    }

    /// `flag` when `on`.
    pub(crate) fn switch(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(flag.to_string());
        }
    }

    pub(crate) fn extend(&mut self, args: Vec<String>) {
        self.0.extend(args);
    }
}

/// A path as a command-line word (lossy for non-UTF-8 paths, as `Display`).
pub(crate) fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Paths as command-line words.
pub(crate) fn path_args(ps: &[impl AsRef<Path>]) -> Vec<String> {
    ps.iter().map(|p| path_arg(p.as_ref())).collect()
}

/// A clap value enum's name on the command line.
pub(crate) fn enum_arg<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::fmt::Debug;

    /// `parse(to_args(c)) == c`, with the stage's name as the program name.
    pub fn round_trips<T: clap::Parser + PartialEq + Debug>(
        name: &str,
        c: &T,
        to_args: impl Fn(&T) -> Vec<String>,
    ) {
        let argv = to_args(c);
        let back = T::try_parse_from(std::iter::once(name.to_string()).chain(argv.clone()))
            .unwrap_or_else(|e| panic!("{name} {argv:?} does not parse: {e}"));
        assert_eq!(&back, c, "{name} {argv:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().unwrap(), s);
            assert_eq!(crate::STAGES[s.index()], s.as_str());
        }
        assert_eq!(
            "styler".parse::<Stage>().unwrap_err(),
            "unknown stage \"styler\" (stages: download, package-model, stylize, upload)"
        );
    }
}
