//! `stylize`: packaged networks × images × styles → stylised images.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Argv, Stage, enum_arg, path_arg, path_args};

/// The stage's name (its binary).
pub const NAME: &str = Stage::Stylize.as_str();
/// `--device` and `--backend` that let the stage choose.
pub const AUTO: &str = "auto";
/// Default `--max-pixels`.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default `--tile-above`.
pub const DEFAULT_TILE_ABOVE: u64 = 4_194_304;
/// Default `--tile`.
pub const DEFAULT_TILE: usize = 1024;
/// Default `--overlap`.
pub const DEFAULT_OVERLAP: usize = 64;
/// Default `--shards`.
pub const DEFAULT_SHARDS: u32 = 1;
/// Default `--shard` (without `JOB_COMPLETION_INDEX`).
pub const DEFAULT_SHARD: u32 = 0;

// Output encodings (`--format`; the spec's `stylize.format`). No doc comment: it would be the
// spec schema's description of `OutputFormat`, which has none.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "OutputFormat")]
pub enum OutFormat {
    /// The input's format (PNG when it cannot be written).
    #[default]
    #[schemars(description = "The input's format.")]
    Keep,
    Png,
    Jpeg,
    Webp,
}

impl OutFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutFormat::Keep => "keep",
            OutFormat::Png => "png",
            OutFormat::Jpeg => "jpeg",
            OutFormat::Webp => "webp",
        }
    }
}

/// `--tiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tiling {
    Auto,
    Exact,
    Approximate,
}

/// `--kernels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelsArg {
    Auto,
    Fused,
    Burn,
}

/// Apply packaged style-transfer networks to images.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = NAME,
    version,
    about = "kubestyle stage 3: apply packaged style-transfer networks to images with burn (flex CPU; libtorch with the tch feature)",
    long_about = None
)]
pub struct Args {
    /// Images (files or directories). Default: the image outputs of the run's download manifest.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// Model packages (directories with model.json). Default: the run's package-model manifest.
    #[arg(long = "package", value_name = "DIR")]
    pub packages: Vec<PathBuf>,
    /// Style: an index (`7`), a name (`style-07`, `candy`) or a blend (`3:0.5,12:0.5`),
    /// for every package; `PACKAGE/SPEC` (e.g. `multistyle26/7`) for one package only.
    /// Repeatable. Default: style 0 of each package no style applies to.
    #[arg(long = "style", value_name = "SPEC")]
    pub styles: Vec<String>,
    /// Keep the photo's colours in every style that does not say otherwise
    /// (`SPEC~preserve-colour=false` opts one out): the stylised luminance with the photo's
    /// chrominance (YIQ).
    #[arg(long)]
    pub preserve_colour: bool,
    /// Style strength of every style that does not set its own (`SPEC~strength=S`): 0 = the
    /// photo, 1 = the network's output (the default), blended on the sRGB values.
    #[arg(long, value_name = "S", value_parser = parse_strength)]
    pub strength: Option<f32>,
    /// Longest edge in pixels; larger images are scaled down (aspect kept).
    #[arg(long, value_name = "N")]
    pub max_size: Option<u32>,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_name = "N")]
    pub max_pixels: u64,
    /// Images with more pixels than this are processed in parts (see `--tiling`).
    #[arg(long, default_value_t = DEFAULT_TILE_ABOVE, value_name = "N")]
    pub tile_above: u64,
    /// How images above `--tile-above` run. `exact`: layer by layer over the whole image in
    /// bands of rows through scratch files, normalised with whole-image statistics: the untiled
    /// result (within float rounding) in bounded memory (fused CPU kernels only).
    /// `approximate`: overlapping `--tile` tiles blended together, normalised with statistics of
    /// a downscaled copy (fused kernels) or each tile's own (burn/libtorch); not the same
    /// picture (README "Large images"). `auto`: exact on the fused kernels, else approximate.
    #[arg(long, value_enum, default_value_t = Tiling::Auto)]
    pub tiling: Tiling,
    /// Where exact tiling keeps its scratch activations (anonymous files, gone when the process
    /// ends, even if killed): about 44 bytes per pixel at the peak. Default: the volume.
    #[arg(long, env = "KUBESTYLE_SCRATCH_DIR", value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Rows per band of exact tiling (default: bands of about 64 MiB). For tests.
    #[arg(long, hide = true, value_name = "N")]
    pub band_rows: Option<usize>,
    /// Small images (up to 512², fused kernels) run this many at a time, each on one core: far
    /// faster than splitting their small layers over cores. Default: one per core (rayon's
    /// thread count, `RAYON_NUM_THREADS`); 1 runs one image at a time on every core.
    #[arg(long, env = "KUBESTYLE_LANES", value_name = "N")]
    pub lanes: Option<usize>,
    /// Tile edge in pixels (a multiple of 4), approximate tiling.
    #[arg(long, default_value_t = DEFAULT_TILE, value_name = "N")]
    pub tile: usize,
    /// Overlap between tiles in pixels, approximate tiling.
    #[arg(long, default_value_t = DEFAULT_OVERLAP, value_name = "N")]
    pub overlap: usize,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = OutFormat::Keep)]
    pub format: OutFormat,
    /// `auto` (a usable GPU, else the CPU), `cpu`, or `cuda[:N]` (needs the tch build).
    #[arg(long, default_value = AUTO, value_name = "auto|cpu|cuda[:N]")]
    pub device: String,
    /// `auto` (libtorch on a GPU when built with the `tch` feature and one is there, else flex),
    /// `flex` or `tch`.
    #[arg(long, default_value = AUTO, value_name = "auto|flex|tch")]
    pub backend: String,
    /// CPU kernels for the flex backend: `fused` (kubestyle's fused reflect-pad convolution and
    /// instance norm; the default) or `burn` (burn-flex's generic tensor ops). `auto` = fused on
    /// flex; the tch backend always runs libtorch's kernels.
    #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
    pub kernels: KernelsArg,
    /// Compute every output again, even those the run's manifest shows were made from the same
    /// package, style, image and options and still verify (the step cache).
    #[arg(long)]
    pub force: bool,
    /// Split the work (packages × styles × images, in a fixed order) into this many shards and
    /// do one of them: the pods of a Kubernetes Indexed Job. Each shard writes its own manifest.
    #[arg(long, default_value_t = DEFAULT_SHARDS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub shards: u32,
    /// The shard this process does, 0-based (default: `JOB_COMPLETION_INDEX`, which Kubernetes
    /// sets in an Indexed Job's pods).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = DEFAULT_SHARD)]
    pub shard: u32,
    /// Root of the shared volume.
    #[arg(long, env = "KUBESTYLE_VOLUME", value_name = "DIR")]
    pub volume: PathBuf,
    /// Directory under the volume for results: `<out>/<package>/<style>/<image>` (default
    /// `runs/<run-id>/styled`, the run's own).
    #[arg(long, value_name = "REL")]
    pub out: Option<String>,
    #[arg(long, env = "KUBESTYLE_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Write the manifest here (default `<volume>/runs/<run-id>/stylize.manifest.json`).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// `--strength`: a number from 0 to 1.
fn parse_strength(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(x) if crate::vocab::style::valid_strength(x) => Ok(x),
        _ => Err(format!("{s:?} must be a number from 0 to 1")),
    }
}

impl Args {
    /// The run's manifests' packages and images, every option at its default, on `volume`.
    pub fn new(volume: impl Into<PathBuf>) -> Self {
        Args {
            images: Vec::new(),
            packages: Vec::new(),
            styles: Vec::new(),
            preserve_colour: false,
            strength: None,
            max_size: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            tile_above: DEFAULT_TILE_ABOVE,
            tiling: Tiling::Auto,
            scratch_dir: None,
            band_rows: None,
            lanes: None,
            tile: DEFAULT_TILE,
            overlap: DEFAULT_OVERLAP,
            format: OutFormat::Keep,
            device: AUTO.into(),
            backend: AUTO.into(),
            kernels: KernelsArg::Auto,
            force: false,
            shards: DEFAULT_SHARDS,
            shard: DEFAULT_SHARD,
            volume: volume.into(),
            out: None,
            run_id: None,
            manifest: None,
        }
    }

    /// The command line (without the program name) that parses back to `self`. `--volume`,
    /// `--format`, `--device` and `--backend` are always written (what a run computes on and
    /// writes reads in its pod spec); `--force` comes last. `--shard` at 0 is left out, so that
    /// the pods of an Indexed Job take theirs from `JOB_COMPLETION_INDEX`.
    pub fn to_args(&self) -> Vec<String> {
        let Args {
            images,
            packages,
            styles,
            preserve_colour,
            strength,
            max_size,
            max_pixels,
            tile_above,
            tiling,
            scratch_dir,
            band_rows,
            lanes,
            tile,
            overlap,
            format,
            device,
            backend,
            kernels,
            force,
            shards,
            shard,
            volume,
            out,
            run_id,
            manifest,
        } = self;
        let mut a = Argv::new();
        a.opt("--volume", path_arg(volume));
        a.opt_some("--run-id", run_id);
        a.opt_each("--style", styles);
        a.switch("--preserve-colour", *preserve_colour);
        a.opt_some("--strength", strength);
        a.opt_some("--max-size", max_size);
        a.opt_unless("--max-pixels", max_pixels, &DEFAULT_MAX_PIXELS);
        a.opt("--format", enum_arg(format));
        a.opt("--device", device);
        a.opt("--backend", backend);
        a.opt_unless("--shards", shards, &DEFAULT_SHARDS);
        a.opt_unless("--shard", shard, &DEFAULT_SHARD);
        a.opt_each("--image", &path_args(images));
        a.opt_each("--package", &path_args(packages));
        a.opt_unless("--tile-above", tile_above, &DEFAULT_TILE_ABOVE);
        if *tiling != Tiling::Auto {
            a.opt("--tiling", enum_arg(tiling));
        }
        a.opt_some("--scratch-dir", &scratch_dir.as_deref().map(path_arg));
        a.opt_some("--band-rows", band_rows);
        a.opt_some("--lanes", lanes);
        a.opt_unless("--tile", tile, &DEFAULT_TILE);
        a.opt_unless("--overlap", overlap, &DEFAULT_OVERLAP);
        if *kernels != KernelsArg::Auto {
            a.opt("--kernels", enum_arg(kernels));
        }
        a.opt_some("--out", out);
        a.opt_some("--manifest", &manifest.as_deref().map(path_arg));
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
            images: vec!["/vol/a.jpg".into(), "dir".into()],
            packages: vec!["/vol/pkgs/candy".into()],
            styles: vec!["candy/0".into(), "3:0.5,12:0.5~strength=0.5".into()],
            preserve_colour: true,
            strength: Some(0.25),
            max_size: Some(256),
            max_pixels: 1_000,
            tile_above: 5_000,
            tiling: Tiling::Approximate,
            scratch_dir: Some("/scratch".into()),
            band_rows: Some(7),
            lanes: Some(3),
            tile: 128,
            overlap: 16,
            format: OutFormat::Webp,
            device: "cuda:1".into(),
            backend: "tch".into(),
            kernels: KernelsArg::Burn,
            force: true,
            shards: 4,
            shard: 3,
            volume: "/vol".into(),
            out: Some("styled".into()),
            run_id: Some("r1".into()),
            manifest: Some("/vol/s.json".into()),
        };
        round_trips(NAME, &c, Args::to_args);
    }

    #[test]
    fn defaults_are_left_out() {
        assert_eq!(
            Args::new("/vol").to_args().join(" "),
            "--volume /vol --format keep --device auto --backend auto"
        );
    }

    #[test]
    fn value_names_are_the_spec_names() {
        use clap::ValueEnum;
        for f in OutFormat::value_variants() {
            assert_eq!(enum_arg(f), f.as_str());
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
        }
    }
}
