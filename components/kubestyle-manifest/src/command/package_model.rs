//! `package-model`: style-transfer weights → a model package for `stylize`.

use std::path::PathBuf;

use super::{Argv, Stage, path_arg, path_args};

/// The stage's name (its binary).
pub const NAME: &str = Stage::PackageModel.as_str();
/// `--architecture` that recognises the network from its tensor names.
pub const AUTO: &str = "auto";
/// Default `--max-weight-bytes`: 256 MiB.
pub const DEFAULT_MAX_WEIGHT_BYTES: u64 = 256 << 20;

/// Package style-transfer weights for `stylize`.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = NAME,
    version,
    about = "kubestyle stage 2: turn .pth / .safetensors / ONNX style-transfer weights into a self-contained burn model package",
    long_about = None
)]
pub struct Args {
    /// Weight files (.pth/.pt, .safetensors, .onnx). Default: every model artifact of the
    /// run's download manifest (or of --from-manifest).
    #[arg(value_name = "WEIGHTS")]
    pub weights: Vec<PathBuf>,
    /// Take the weight files from this manifest's model outputs.
    #[arg(long, value_name = "FILE")]
    pub from_manifest: Option<PathBuf>,
    /// Package only the manifest's model files fetched from these sources (an artifact's
    /// `source`: the `s3://` URI or local path download read it from), each of which must be
    /// there; every other model file of the manifest is left alone. `pipeline` gives the
    /// spec's `sources.models`: a weights file that reached the volume any other way (from
    /// an image prefix, directory or list) never becomes a model.
    #[arg(long = "source", value_name = "URI")]
    pub sources: Vec<String>,
    /// Architecture; `auto` recognises it from the tensor names.
    #[arg(
        long,
        default_value = AUTO,
        value_name = "auto|transformer-net|multistyle26"
    )]
    pub architecture: String,
    /// Style names, comma-separated, one per style (default: the file name for TransformerNet,
    /// `style-00`..`style-25` for MultiStyle26, whose authors never named them).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub style_names: Vec<String>,
    /// Package again even when the run's manifest shows the same inputs and parameters and
    /// its packages still verify (the step cache).
    #[arg(long)]
    pub force: bool,
    /// Root of the shared volume.
    #[arg(long, env = "KUBESTYLE_VOLUME", value_name = "DIR")]
    pub volume: PathBuf,
    /// Directory under the volume for packages (`<out>/<weights file stem>/`; default
    /// `runs/<run-id>/models`, the run's own).
    #[arg(long, value_name = "REL")]
    pub out: Option<String>,
    #[arg(long, env = "KUBESTYLE_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Write the manifest here (default `<volume>/runs/<run-id>/package-model.manifest.json`).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Largest weight file accepted, in bytes; also caps the tensor storage a `.pth` may
    /// declare. Reading is bounded by this and by the architecture's own size (a tensor is
    /// read only once its name and shape are the architecture's), never by what a file
    /// declares. Default 256 MiB.
    #[arg(
        long,
        env = "KUBESTYLE_MAX_WEIGHT_BYTES",
        default_value_t = DEFAULT_MAX_WEIGHT_BYTES,
        value_name = "BYTES"
    )]
    pub max_weight_bytes: u64,
}

impl Args {
    /// The run's download manifest's weights, every option at its default, on `volume`.
    pub fn new(volume: impl Into<PathBuf>) -> Self {
        Args {
            weights: Vec::new(),
            from_manifest: None,
            sources: Vec::new(),
            architecture: AUTO.into(),
            style_names: Vec::new(),
            force: false,
            volume: volume.into(),
            out: None,
            run_id: None,
            manifest: None,
            max_weight_bytes: DEFAULT_MAX_WEIGHT_BYTES,
        }
    }

    /// The command line (without the program name) that parses back to `self`. `--volume` is
    /// always written; `--force` comes last.
    pub fn to_args(&self) -> Vec<String> {
        let Args {
            weights,
            from_manifest,
            sources,
            architecture,
            style_names,
            force,
            volume,
            out,
            run_id,
            manifest,
            max_weight_bytes,
        } = self;
        let mut a = Argv::new();
        a.opt("--volume", path_arg(volume));
        a.opt_some("--run-id", run_id);
        a.opt_unless("--architecture", architecture, &AUTO.to_string());
        for w in path_args(weights) {
            a.word(w);
        }
        a.opt_some("--from-manifest", &from_manifest.as_deref().map(path_arg));
        a.opt_each("--source", sources);
        if !style_names.is_empty() {
            a.opt("--style-names", style_names.join(","));
        }
        a.opt_some("--out", out);
        a.opt_some("--manifest", &manifest.as_deref().map(path_arg));
        a.opt_unless(
            "--max-weight-bytes",
            max_weight_bytes,
            &DEFAULT_MAX_WEIGHT_BYTES,
        );
        a.switch("--force", *force);
        a.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::testutil::round_trips;

    #[test]
    fn every_field_round_trips() {
        let c = Args {
            weights: vec!["/w/candy.pth".into(), "m.onnx".into()],
            from_manifest: Some("/vol/d.json".into()),
            sources: vec!["s3://m/candy.pth".into(), "/w/x.onnx".into()],
            architecture: "transformer-net".into(),
            style_names: vec!["candy".into(), "mosaic".into()],
            force: true,
            volume: "/vol".into(),
            out: Some("pkgs".into()),
            run_id: Some("r1".into()),
            manifest: Some("/vol/p.json".into()),
            max_weight_bytes: 1 << 20,
        };
        round_trips(NAME, &c, Args::to_args);
    }

    #[test]
    fn defaults_are_left_out() {
        assert_eq!(Args::new("/vol").to_args(), ["--volume", "/vol"]);
    }
}
