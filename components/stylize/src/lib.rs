//! The `stylize` stage: packaged networks × images × styles → stylised images.
//!
//! Inputs come from flags or from the run's manifests (package-model's packages, download's
//! images). Everything is checked before the first forward pass: packages load and verify,
//! every `--style` resolves, every image decodes within the pixel limit. Each output keeps its
//! input's format and suffix (or `--format`), is written atomically, and is recorded in the
//! manifest with its size, style, backend, device and forward-pass time. The manifest is last.

/// Decoding and encoding (the `kubestyle-imageio` crate).
pub use kubestyle_imageio as image_io;
pub mod style;
pub mod tiles;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::manifest::{
    manifest_path, new_run_id, open_volume, previous_outputs, validate_run_id,
};
use kubestyle_manifest::{
    Artifact, ArtifactKind, Manifest, Sha256Hex, StageError, StageRun, sha256_bytes, sha256_file,
};
use kubestyle_models::exact::ExactOptions;
use kubestyle_models::{
    FusedNet, MIN_SIDE, ModelCard, Network, NormStats, crop, crop_planar, extend_planar,
    load_package, pad_to_multiple,
};
use serde_json::{Map, Value, json};

pub use image_io::OutFormat;
pub use style::{Style, parse_style};

pub const STAGE: &str = "stylize";

/// Apply packaged style-transfer networks to images.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "stylize", version, about, long_about = None)]
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
    /// Longest edge in pixels; larger images are scaled down (aspect kept).
    #[arg(long, value_name = "N")]
    pub max_size: Option<u32>,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = 100_000_000, value_name = "N")]
    pub max_pixels: u64,
    /// Images with more pixels than this are processed in parts (see `--tiling`).
    #[arg(long, default_value_t = 4_194_304, value_name = "N")]
    pub tile_above: u64,
    /// How images above `--tile-above` run. `exact`: layer by layer over the whole image in
    /// bands of rows through scratch files, normalised with whole-image statistics: the untiled
    /// result (within float rounding) in bounded memory (fused CPU kernels only).
    /// `approximate`: overlapping `--tile` tiles blended together, normalised with statistics of
    /// a downscaled copy (fused kernels) or each tile's own (burn/libtorch); faster, not the
    /// same picture (README "Large images"). `auto`: exact on the fused kernels, else approximate.
    #[arg(long, value_enum, default_value_t = Tiling::Auto)]
    pub tiling: Tiling,
    /// Where exact tiling keeps its scratch activations (anonymous files, gone when the process
    /// ends, even if killed): about 44 bytes per pixel at the peak. Default: the volume.
    #[arg(long, env = "KUBESTYLE_SCRATCH_DIR", value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Rows per band of exact tiling (default: bands of about 96 MiB). For tests.
    #[arg(long, hide = true, value_name = "N")]
    pub band_rows: Option<usize>,
    /// Tile edge in pixels (a multiple of 4), approximate tiling.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub tile: usize,
    /// Overlap between tiles in pixels, approximate tiling.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub overlap: usize,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = OutFormat::Keep)]
    pub format: OutFormat,
    /// `auto` (a usable GPU, else the CPU), `cpu`, or `cuda[:N]` (needs the tch build).
    #[arg(long, default_value = "auto", value_name = "auto|cpu|cuda[:N]")]
    pub device: String,
    /// `auto` (libtorch on a GPU when built with the `tch` feature and one is there, else flex),
    /// `flex` or `tch`.
    #[arg(long, default_value = "auto", value_name = "auto|flex|tch")]
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
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub shards: u32,
    /// The shard this process does, 0-based (default: `JOB_COMPLETION_INDEX`, which Kubernetes
    /// sets in an Indexed Job's pods).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
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

/// `--tiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tiling {
    Auto,
    Exact,
    Approximate,
}

/// How one image ran: whole, in exact bands, or in approximate tiles (and how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileRun {
    Whole,
    Exact,
    Approximate(usize),
}

impl TileRun {
    pub fn name(self) -> &'static str {
        match self {
            TileRun::Whole => "none",
            TileRun::Exact => "exact",
            TileRun::Approximate(_) => "approximate",
        }
    }

    /// Tiles blended into the output (1 unless approximate).
    pub fn tiles(self) -> usize {
        match self {
            TileRun::Approximate(n) => n,
            _ => 1,
        }
    }
}

/// `--kernels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelsArg {
    Auto,
    Fused,
    Burn,
}

/// The compute device and how to describe it.
#[derive(Debug, Clone)]
pub struct Compute {
    pub device: Device,
    pub backend: &'static str,
    pub name: String,
    /// Run on kubestyle's fused CPU kernels (flex only) rather than burn's tensor ops.
    pub fused: bool,
    /// What `--device` asked for (`auto`, `cpu`, `cuda`, `cuda:N`).
    pub requested: String,
    /// Why `--device auto` runs on the CPU although a GPU was looked for (no GPU backend in this
    /// build, libtorch without CUDA, no CUDA device); logged as a warning and recorded in the
    /// manifest. `None` when nothing fell back.
    pub fallback: Option<String>,
}

impl Compute {
    /// `fused` or `burn` (for logs and manifests).
    pub fn kernels(&self) -> &'static str {
        if self.fused { "fused" } else { "burn" }
    }

    fn flex(requested: &str, fallback: Option<String>) -> Self {
        Compute {
            device: Device::flex(),
            backend: "flex",
            name: "cpu".into(),
            fused: false,
            requested: requested.into(),
            fallback,
        }
    }
}

/// Resolve `--kernels` for a selected backend.
pub fn select_kernels(mut compute: Compute, kernels: KernelsArg) -> Result<Compute, StageError> {
    compute.fused = match (kernels, compute.backend) {
        (KernelsArg::Burn, _) => false,
        (KernelsArg::Auto | KernelsArg::Fused, "flex") => true,
        (KernelsArg::Auto, _) => false,
        (KernelsArg::Fused, other) => {
            return Err(StageError::Usage(format!(
                "--kernels fused runs on the flex backend only (selected: {other})"
            )));
        }
    };
    Ok(compute)
}

/// Resolve `--backend` and `--device`. The default build has the pure-Rust CPU backend
/// (burn-flex) only; the `tch` build adds libtorch on the CPU or on CUDA GPUs.
///
/// A GPU asked for by name (`cuda`, `cuda:N`) that this build or node cannot give is
/// [`StageError::DeviceUnavailable`] (exit 9), before any work: a GPU stage never degrades to
/// the CPU silently. `auto` takes a usable GPU, else the CPU, and records why in
/// [`Compute::fallback`]. Contradictory options (`--backend flex --device cuda`, `--backend tch`
/// in a build without it) are usage errors.
pub fn select_device(backend: &str, spec: &str) -> Result<Compute, StageError> {
    let cuda_index = match spec {
        "auto" | "cpu" => None,
        "cuda" => Some(0usize),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Some(i),
            _ => {
                return Err(StageError::Usage(format!(
                    "--device {s:?}: expected auto, cpu or cuda[:N]"
                )));
            }
        },
    };
    match backend {
        "flex" => match cuda_index {
            // The CPU backend was chosen: `auto` has nothing to fall back from.
            None => Ok(Compute::flex(spec, None)),
            Some(_) => Err(StageError::Usage(format!(
                "--device {spec}: the flex backend runs on the CPU only"
            ))),
        },
        "auto" | "tch" => {
            #[cfg(feature = "tch")]
            {
                tch_device(backend, spec, cuda_index)
            }
            #[cfg(not(feature = "tch"))]
            {
                if backend == "tch" {
                    return Err(StageError::Usage(
                        "--backend tch: this build has no libtorch backend (build stylize with --features tch)".into(),
                    ));
                }
                let why = "this build of stylize has no GPU backend (built without the tch feature; the GPU image is kubestyle-stylize-cuda)";
                match (spec, cuda_index) {
                    ("auto", _) => Ok(Compute::flex(spec, Some(why.into()))),
                    (_, None) => Ok(Compute::flex(spec, None)),
                    (_, Some(_)) => Err(StageError::DeviceUnavailable(format!(
                        "--device {spec}: {why}"
                    ))),
                }
            }
        }
        other => Err(StageError::Usage(format!(
            "--backend {other:?}: expected auto, flex or tch"
        ))),
    }
}

/// Why libtorch sees no CUDA device: whether its CUDA library is loaded at all tells a build or
/// packaging fault (a CPU-only libtorch, or a binary linked without `libtorch_cuda.so`) from a
/// node or pod without a GPU.
#[cfg(feature = "tch")]
fn no_gpu_reason() -> String {
    let none = "libtorch sees 0 CUDA devices";
    match std::fs::read_to_string("/proc/self/maps") {
        Ok(maps) if maps.contains("/libtorch_cuda.so") => format!(
            "{none} (no NVIDIA GPU or driver visible here: on Kubernetes check the nvidia.com/gpu \
             limit, the node's driver and device plugin, and the runtime class)"
        ),
        Ok(_) => format!(
            "{none}: its CUDA library (libtorch_cuda.so) is not loaded (a CPU-only libtorch, or a \
             binary linked without it)"
        ),
        // No /proc: cannot tell which.
        Err(_) => none.into(),
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device(backend: &str, spec: &str, cuda_index: Option<usize>) -> Result<Compute, StageError> {
    let gpus = tch::Cuda::device_count().max(0) as usize;
    let tch = |device: Device, name: String| Compute {
        device,
        backend: "tch",
        name,
        fused: false,
        requested: spec.into(),
        fallback: None,
    };
    let fallback = (spec == "auto" && gpus == 0).then(no_gpu_reason);
    match (spec, cuda_index) {
        ("auto", _) if gpus > 0 => Ok(tch(Device::libtorch_cuda(0usize), "cuda:0".into())),
        // No GPU asked for or found: on the CPU the fused kernels are faster than libtorch
        // (README, Speed), so `auto` takes them; `--backend tch` still picks libtorch.
        (_, None) if backend == "auto" => Ok(Compute::flex(spec, fallback)),
        (_, None) => Ok(Compute {
            fallback,
            ..tch(Device::libtorch(), "cpu".into())
        }),
        (_, Some(i)) if i < gpus => Ok(tch(Device::libtorch_cuda(i), format!("cuda:{i}"))),
        (_, Some(_)) if gpus == 0 => Err(StageError::DeviceUnavailable(format!(
            "--device {spec}: {}",
            no_gpu_reason()
        ))),
        (_, Some(i)) => Err(StageError::DeviceUnavailable(format!(
            "--device {spec}: no CUDA device {i} (libtorch sees {gpus} GPU{}, cuda:0 to cuda:{})",
            if gpus == 1 { "" } else { "s" },
            gpus - 1
        ))),
    }
}

/// One image to stylise.
#[derive(Debug, Clone)]
struct ImageInput {
    abs: PathBuf,
    /// Path under the output directory (keeps inputs with equal names apart).
    rel_out: String,
    sha256: Sha256Hex,
    artifact: Option<Artifact>,
}

struct Loaded {
    dir: PathBuf,
    dir_name: String,
    card: ModelCard,
    net: Network,
    /// The same weights laid out for the fused CPU kernels, when those run.
    fused: Option<FusedNet>,
    styles: Vec<Style>,
    artifact: Vec<Artifact>,
}

#[derive(Debug)]
pub struct Summary {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// Outputs computed by this run and outputs reused from the previous one.
    pub computed: usize,
    pub reused: usize,
}

pub fn run(args: Args) -> Result<Summary, StageError> {
    // The device first: a GPU asked for and not there fails the stage before any work.
    let compute = select_kernels(select_device(&args.backend, &args.device)?, args.kernels)?;
    if let Some(why) = &compute.fallback {
        tracing::warn!(
            "--device {}: no usable GPU, running on the CPU: {why}",
            compute.requested
        );
    }
    let volume = open_volume(&args.volume)?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    validate_run_id(&run_id)?;
    let stage = StageRun::start(STAGE, env!("CARGO_PKG_VERSION"), run_id.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| kubestyle_manifest::manifest::run_data_dir(&run_id, "styled"));
    validate_relative_path(&out).map_err(|e| StageError::Usage(format!("--out: {e}")))?;
    if !args.tile.is_multiple_of(4) || args.tile < 64 || args.overlap * 2 >= args.tile {
        return Err(StageError::Usage(
            "--tile must be a multiple of 4, at least 64, and more than twice --overlap".into(),
        ));
    }
    if args.tiling == Tiling::Exact && !compute.fused {
        return Err(StageError::Usage(format!(
            "--tiling exact runs on the fused CPU kernels only, not on {} ({} kernels): use \
             --tiling approximate or --kernels fused",
            compute.name,
            compute.kernels()
        )));
    }
    if args.band_rows == Some(0) {
        return Err(StageError::Usage("--band-rows must be at least 1".into()));
    }
    tracing::info!(
        "backend {} on {} ({} kernels)",
        compute.backend,
        compute.name,
        compute.kernels()
    );

    // Everything is loaded and checked before the first forward pass.
    let packages = load_packages(&args, &volume, &run_id, &compute)?;
    let images = gather_images(&args, &volume, &run_id)?;
    if args.shard >= args.shards {
        return Err(StageError::Usage(format!(
            "--shard {} is not below --shards {}",
            args.shard, args.shards
        )));
    }
    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| shard_manifest_path(&volume, &run_id, args.shard, args.shards));
    let params = json!({
        "styles": args.styles,
        "max_size": args.max_size,
        "format": format!("{:?}", args.format).to_lowercase(),
        "tile_above": args.tile_above,
        "tiling": resolved_tiling(args.tiling, compute.fused),
        "tile": args.tile,
        "overlap": args.overlap,
        "out": out,
        "backend": compute.backend,
        "device": compute.name,
        "kernels": compute.kernels(),
    });
    let mut input_keys: Vec<String> = packages
        .iter()
        .map(|p| format!("package {}@{}", p.dir_name, p.card.weights.sha256))
        .collect();
    input_keys.extend(
        images
            .iter()
            .map(|i| format!("image {}@{}", i.rel_out, i.sha256)),
    );
    let mut stage_params = params.clone();
    if args.shards > 1 {
        stage_params["shards"] = json!(args.shards);
        stage_params["shard"] = json!(args.shard);
    }
    let key = stage.key(&stage_params, &input_keys);
    if !args.force
        && let Some(manifest) = stage.reusable(&manifest_path, &volume, &key)
    {
        return Ok(Summary {
            manifest_path,
            manifest,
            computed: 0,
            reused: 0,
        });
    }
    // Outputs of the previous run that may be reused item by item.
    let previous: std::collections::HashMap<String, Artifact> = if args.force {
        Default::default()
    } else {
        Manifest::read(&manifest_path, &volume)
            .map(|m| m.outputs.into_iter().map(|a| (a.path.clone(), a)).collect())
            .unwrap_or_default()
    };

    // Plan every output; decode (and so check) every image some output still needs.
    struct Job<'a> {
        pkg: &'a Loaded,
        style: &'a Style,
        img: usize,
        rel: String,
        format: image::ImageFormat,
        item_key: Sha256Hex,
        reuse: Option<Artifact>,
    }
    let mut formats = Vec::with_capacity(images.len());
    let mut sides = Vec::with_capacity(images.len());
    for img in &images {
        let (format, dims) = image_io::probe(&img.abs, args.max_pixels)?;
        formats.push(format);
        sides.push(image_io::output_side(dims, args.max_size));
    }
    // Outputs an encoder cannot write (JPEG over 65,535 px, WebP over 16,383 px a side): the
    // output format depends on the image alone, not on the package or style.
    let mut too_large: Vec<String> = Vec::new();
    for (k, img) in images.iter().enumerate() {
        let ext = img
            .abs
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("png");
        let (format, _) = image_io::choose(args.format, formats[k], ext);
        if let Some(limit) = image_io::max_side(format).filter(|&l| sides[k] > l) {
            too_large.push(format!(
                "{} would be {} px on its longest side, more than {format:?} can store \
                 ({limit} px)",
                img.abs.display(),
                sides[k]
            ));
        }
    }
    let mut jobs: Vec<Job<'_>> = Vec::new();
    // Every output path, planned before any work: two outputs landing on one path (`a.jpg` and
    // `a.png` with `--format png`, two packages with one directory name) are refused, all of
    // them named, rather than found by the manifest check after every forward pass.
    let mut planned: std::collections::HashMap<String, usize> = Default::default();
    // (one input, the other, the first output both map to, how many outputs they share)
    let mut clashes: Vec<(String, String, String, usize)> = Vec::new();
    for pkg in &packages {
        for style in &pkg.styles {
            for (k, img) in images.iter().enumerate() {
                let ext = img
                    .abs
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("png")
                    .to_string();
                let (format, ext) = image_io::choose(args.format, formats[k], &ext);

                let stem_rel = img
                    .rel_out
                    .rsplit_once('.')
                    .map(|(s, _)| s)
                    .unwrap_or(&img.rel_out);
                let rel = format!("{}/{}/{}/{stem_rel}.{ext}", out, pkg.dir_name, style.label);
                validate_relative_path(&rel).map_err(StageError::InputInvalid)?;
                if let Some(&first) = planned.get(&rel) {
                    let other = &jobs[first];
                    let (a, b) = if other.img != k {
                        (
                            images[other.img].abs.display().to_string(),
                            img.abs.display().to_string(),
                        )
                    } else {
                        (
                            format!("package {}", other.pkg.dir.display()),
                            format!("package {}", pkg.dir.display()),
                        )
                    };
                    match clashes.iter_mut().find(|c| (&c.0, &c.1) == (&a, &b)) {
                        Some(c) => c.3 += 1,
                        None => clashes.push((a, b, rel, 1)),
                    }
                    continue;
                }
                planned.insert(rel.clone(), jobs.len());
                let item_key = sha256_bytes(
                    json!({
                        "version": kubestyle_manifest::manifest::code_version(env!("CARGO_PKG_VERSION")),
                        "weights": pkg.card.weights.sha256,
                        "style": style.weights,
                        "image": img.sha256,
                        "params": params,
                    })
                    .to_string()
                    .as_bytes(),
                );
                let reuse = previous
                    .get(&rel)
                    .filter(|a| {
                        a.attributes.get("item_key").and_then(Value::as_str)
                            == Some(item_key.as_str())
                    })
                    .filter(|a| match a.verify(&volume) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!("recomputing {rel}: {e}");
                            false
                        }
                    })
                    .cloned();
                jobs.push(Job {
                    pkg,
                    style,
                    img: k,
                    rel,
                    format,
                    item_key,
                    reuse,
                });
            }
        }
    }
    if !too_large.is_empty() {
        return Err(StageError::InputInvalid(format!(
            "{}; use --format png or --max-size",
            too_large.join("; ")
        )));
    }
    if !clashes.is_empty() {
        let named: Vec<String> = clashes
            .iter()
            .map(|(a, b, rel, n)| {
                let more = match n - 1 {
                    0 => String::new(),
                    m => format!(" (and {m} more output{})", if m == 1 { "" } else { "s" }),
                };
                format!("{a} and {b} would both be written to {rel}{more}")
            })
            .collect();
        return Err(StageError::InputInvalid(format!(
            "outputs would overwrite each other: {}",
            named.join("; ")
        )));
    }
    // This shard's part: every `shards`-th output, starting at `shard`.
    if args.shards > 1 {
        let (n, k) = (args.shards as usize, args.shard as usize);
        jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == k)
            .map(|(_, j)| j)
            .collect();
        tracing::info!("shard {k} of {n}: {} outputs", jobs.len());
    }
    // Decode every image a computed output needs, one at a time, and let it go: all of them are
    // checked before the first forward pass, so a bad one fails the stage before anything is
    // written, while memory holds one decoded image, not all of them (100 photos of 12 MP
    // would take 14 GB). Each is decoded again for its forward passes (a few ms against
    // seconds).
    let mut needed = vec![false; images.len()];
    for job in jobs.iter().filter(|j| j.reuse.is_none()) {
        needed[job.img] = true;
    }
    for (img, _) in images.iter().zip(&needed).filter(|(_, n)| **n) {
        drop(image_io::load(&img.abs, args.max_pixels, args.max_size)?);
    }
    // Computed outputs image by image: each image is decoded once for all its styles and
    // dropped when the last of them is written (at most three images in memory: the one in
    // the forward pass, one waiting in the channel, one being written).
    // Exact tiling's scratch: the volume unless told otherwise (sized for the images, where a
    // container's own /tmp often is not).
    let mut args_with_scratch = args.clone();
    let scratch = args.scratch_dir.clone().unwrap_or_else(|| volume.clone());
    if !scratch.is_dir() {
        return Err(StageError::Usage(format!(
            "--scratch-dir {}: not a directory",
            scratch.display()
        )));
    }
    args_with_scratch.scratch_dir = Some(scratch);
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs[i].img);
    // Forward passes on this thread; encoding, the atomic write and hashing of each output on a
    // writer thread, overlapping the next forward pass. The channel holds one finished image.
    struct Pending {
        index: usize,
        /// The output quantised to 8 bits (its floats and the input are not held here).
        img: image::DynamicImage,
        format: image::ImageFormat,
        rel: String,
        attrs: Map<String, Value>,
        log: String,
    }
    let mut slots: Vec<Option<Artifact>> = (0..jobs.len()).map(|_| None).collect();
    let (mut computed, mut reused) = (0usize, 0usize);
    let written: Vec<(usize, Artifact)> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(1);
        let vol = &volume;
        let writer = scope.spawn(move || -> Result<Vec<(usize, Artifact)>, StageError> {
            let mut done = Vec::new();
            for p in rx {
                image_io::write_image(&vol.join(&p.rel), &p.img, p.format)?;
                tracing::info!("{}", p.log);
                let mut a = Artifact::from_file(vol, &p.rel, p.rel.clone(), ArtifactKind::Styled)?;
                a.attributes = p.attrs;
                done.push((p.index, a));
            }
            Ok(done)
        });
        let produced = (|| -> Result<(), StageError> {
            let mut current: Option<(usize, std::sync::Arc<image_io::Planar>)> = None;
            for &index in &order {
                let job = &jobs[index];
                if let Some(a) = &job.reuse {
                    tracing::info!("{} unchanged since the last run: reused", job.rel);
                    kubestyle_manifest::atomic::sweep_stale_temps_of(&a.abs_path(&volume));
                    slots[index] = Some(a.clone());
                    reused += 1;
                    continue;
                }
                let img = &images[job.img];
                let planar = match &current {
                    Some((k, p)) if *k == job.img => p.clone(),
                    _ => {
                        // Let the previous image go before the next is decoded (its last
                        // reference then goes with its pending write).
                        drop(current.take());
                        let p = std::sync::Arc::new(image_io::load(
                            &img.abs,
                            args.max_pixels,
                            args.max_size,
                        )?);
                        current = Some((job.img, p.clone()));
                        p
                    }
                };
                let planar = &planar;
                let (pkg, style, rel) = (job.pkg, job.style, &job.rel);
                let t0 = Instant::now();
                let (rgb, tiles) = stylize_planar(
                    &pkg.net,
                    pkg.fused.as_ref(),
                    planar,
                    &style.weights,
                    &compute.device,
                    &args_with_scratch,
                )?;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let log = format!(
                    "{} × {} → {rel} ({}x{}, {ms:.0} ms{})",
                    img.abs.display(),
                    style.label,
                    planar.width,
                    planar.height,
                    match tiles {
                        TileRun::Whole => String::new(),
                        TileRun::Exact => ", exact tiling".into(),
                        TileRun::Approximate(n) => format!(", {n} tiles (approximate)"),
                    }
                );
                let mut attrs = Map::new();
                attrs.insert(
                    "input".into(),
                    json!(
                        img.artifact
                            .as_ref()
                            .map(|a| a.path.clone())
                            .unwrap_or_else(|| img.abs.display().to_string())
                    ),
                );
                attrs.insert(
                    "input_source".into(),
                    json!(img.artifact.as_ref().and_then(|a| a.source.clone())),
                );
                attrs.insert("input_sha256".into(), json!(img.sha256));
                attrs.insert("package".into(), json!(pkg.dir_name));
                attrs.insert("architecture".into(), json!(pkg.card.architecture.name()));
                attrs.insert("style".into(), json!(style.label));
                attrs.insert("style_weights".into(), json!(style.parts));
                attrs.insert("width".into(), json!(planar.width));
                attrs.insert("height".into(), json!(planar.height));
                attrs.insert("backend".into(), json!(compute.backend));
                attrs.insert("device".into(), json!(compute.name));
                attrs.insert("device_requested".into(), json!(compute.requested));
                if let Some(why) = &compute.fallback {
                    attrs.insert("device_fallback".into(), json!(why));
                }
                attrs.insert("kernels".into(), json!(compute.kernels()));
                attrs.insert("forward_ms".into(), json!((ms * 10.0).round() / 10.0));
                attrs.insert("tiling".into(), json!(tiles.name()));
                attrs.insert("tiles".into(), json!(tiles.tiles()));
                attrs.insert("item_key".into(), json!(job.item_key));
                let img = image_io::to_image(
                    planar.width,
                    planar.height,
                    &rgb,
                    planar.alpha.as_deref(),
                    job.format,
                );
                drop(rgb);
                let pending = Pending {
                    index,
                    img,
                    format: job.format,
                    rel: rel.clone(),
                    attrs,
                    log,
                };
                if tx.send(pending).is_err() {
                    // The writer stopped on an error: it is reported below.
                    break;
                }
                computed += 1;
            }
            Ok(())
        })();
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| StageError::Internal("the output writer panicked".into()))?;
        produced?;
        written
    })?;
    for (index, a) in written {
        slots[index] = Some(a);
    }
    let outputs: Vec<Artifact> = slots.into_iter().flatten().collect();

    let mut inputs: Vec<Artifact> = packages.iter().flat_map(|p| p.artifact.clone()).collect();
    inputs.extend(images.iter().filter_map(|i| i.artifact.clone()));
    dedupe(&mut inputs);
    let manifest = stage.finish(stage_params, &input_keys, inputs, outputs);
    manifest.write(&manifest_path)?;
    tracing::info!(
        "{} images: {computed} computed, {reused} reused; manifest {}",
        manifest.outputs.len(),
        manifest_path.display()
    );
    Ok(Summary {
        manifest_path,
        manifest,
        computed,
        reused,
    })
}

/// Where a stylize shard writes its manifest: `stylize.manifest.json` for an unsharded run,
/// `stylize-<shard>-of-<shards>.manifest.json` otherwise (upload merges them).
pub fn shard_manifest_path(volume: &Path, run_id: &str, shard: u32, shards: u32) -> PathBuf {
    if shards <= 1 {
        manifest_path(volume, run_id, STAGE)
    } else {
        manifest_path(volume, run_id, &format!("{STAGE}-{shard}-of-{shards}"))
    }
}

fn dedupe(arts: &mut Vec<Artifact>) {
    let mut seen = std::collections::BTreeSet::new();
    arts.retain(|a| seen.insert(a.name.clone()));
}

/// What `--tiling` comes to: `exact` or `approximate`.
pub fn resolved_tiling(t: Tiling, fused: bool) -> &'static str {
    match (t, fused) {
        (Tiling::Exact, _) | (Tiling::Auto, true) => "exact",
        _ => "approximate",
    }
}

/// Run the network on one image (whole, or above `--tile-above` pixels in exact bands or
/// approximate tiles, see `--tiling`), on the fused CPU kernels when `fused` is given, else with
/// burn's tensor ops on `device`. Returns planar RGB in 0..1 and how it ran.
///
/// Approximate tiles on the fused kernels share instance-norm statistics: they are recorded once
/// on a copy of the whole image scaled down to what runs whole (`--tile-above` pixels or one
/// tile), and every tile normalises with them (so a flat sky in one tile is not stretched to full
/// contrast on its own). On burn's ops each tile uses its own statistics.
pub fn stylize_planar(
    net: &Network,
    fused: Option<&FusedNet>,
    img: &image_io::Planar,
    style: &[f32],
    device: &Device,
    args: &Args,
) -> Result<(Vec<f32>, TileRun), StageError> {
    let (h, w) = (img.height, img.width);
    let style = net.style_weights(style)?;
    let large = (h * w) as u64 > args.tile_above;
    if let (true, Some(f), "exact") = (large, fused, resolved_tiling(args.tiling, fused.is_some()))
    {
        let mut opts = ExactOptions::new(
            args.scratch_dir
                .clone()
                .unwrap_or_else(|| args.volume.clone()),
        );
        if let Some(rows) = args.band_rows {
            (opts.band_bytes, opts.min_rows) = (1, rows);
        }
        // Sides below what the networks accept are extended by mirroring and cropped back
        // (the image itself is not copied otherwise: it may be most of the memory).
        if h >= MIN_SIDE && w >= MIN_SIDE {
            return Ok((
                f.stylize_exact(&img.rgb, h, w, &style, &opts)?,
                TileRun::Exact,
            ));
        }
        let (rgb, th, tw) = extend_planar(&img.rgb, h, w, MIN_SIDE);
        let y = f.stylize_exact(&rgb, th, tw, &style, &opts)?;
        return Ok((crop_planar(&y, th, tw, h, w), TileRun::Exact));
    }
    let shared: Option<Vec<kubestyle_models::fused::Stats>> = match fused {
        Some(f) if large => {
            // As large as runs whole: `--tile-above` pixels, or one tile if that is larger.
            let fits = args.tile_above.max((args.tile * args.tile) as u64);
            let (small, sh, sw) = image_io::downscale_to(img, fits);
            let (small, sh, sw) = extend_planar(&small, sh, sw, MIN_SIDE);
            let mut stats = Vec::new();
            f.stylize(&small, sh, sw, &style, NormStats::Record(&mut stats))?;
            Some(stats)
        }
        _ => None,
    };
    // Sides below what the networks accept (MIN_SIDE) are extended by mirroring and cropped
    // back, so any size from 1×1 up runs on every backend.
    let whole = |rgb: Vec<f32>, oh: usize, ow: usize| -> Result<Vec<f32>, StageError> {
        let (rgb, th, tw) = extend_planar(&rgb, oh, ow, MIN_SIDE);
        let y = if let Some(f) = fused {
            let mode = match &shared {
                Some(s) => NormStats::Replay(s),
                None => NormStats::Own,
            };
            f.stylize(&rgb, th, tw, &style, mode)?
        } else {
            let x = Tensor::<4>::from_data(TensorData::new(rgb, [1, 3, th, tw]), device);
            let (padded, hw) = pad_to_multiple(x, 4);
            let y = crop(net.stylize(padded, &style)?, hw);
            y.into_data()
                .try_to_vec::<f32>()
                .map_err(|e| StageError::Internal(format!("reading the result: {e:?}")))?
        };
        Ok(crop_planar(&y, th, tw, oh, ow))
    };
    if !large {
        return Ok((whole(img.rgb.clone(), h, w)?, TileRun::Whole));
    }
    let ys = tiles::starts(h, args.tile, args.overlap);
    let xs = tiles::starts(w, args.tile, args.overlap);
    let (plane, mut acc, mut wsum) = (h * w, vec![0f32; 3 * h * w], vec![0f32; h * w]);
    for &y0 in &ys {
        let th = args.tile.min(h);
        for &x0 in &xs {
            let tw = args.tile.min(w);
            let mut tile = vec![0f32; 3 * th * tw];
            for c in 0..3 {
                for r in 0..th {
                    let src = c * plane + (y0 + r) * w + x0;
                    tile[c * th * tw + r * tw..c * th * tw + (r + 1) * tw]
                        .copy_from_slice(&img.rgb[src..src + tw]);
                }
            }
            let out = whole(tile, th, tw)?;
            for r in 0..th {
                let wy = tiles::ramp(r, y0, th, h, args.overlap);
                for col in 0..tw {
                    let wgt = wy.min(tiles::ramp(col, x0, tw, w, args.overlap));
                    let di = (y0 + r) * w + x0 + col;
                    wsum[di] += wgt;
                    for c in 0..3 {
                        acc[c * plane + di] += wgt * out[c * th * tw + r * tw + col];
                    }
                }
            }
        }
    }
    for (i, v) in acc.iter_mut().enumerate() {
        *v /= wsum[i % plane].max(f32::MIN_POSITIVE);
    }
    Ok((acc, TileRun::Approximate(ys.len() * xs.len())))
}

fn load_packages(
    args: &Args,
    volume: &Path,
    run_id: &str,
    compute: &Compute,
) -> Result<Vec<Loaded>, StageError> {
    let mut dirs: Vec<(PathBuf, Vec<Artifact>)> = Vec::new();
    if args.packages.is_empty() {
        let mpath = manifest_path(volume, run_id, "package-model");
        let m = Manifest::read(&mpath, volume).map_err(|e| match e {
            StageError::InputMissing(_) => StageError::Usage(format!(
                "no --package given and no package-model manifest at {}",
                mpath.display()
            )),
            other => other,
        })?;
        for a in m.outputs {
            a.verify(volume)?;
            let Some(dir) = a
                .attributes
                .get("package")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            // The manifest names a directory to load weights from: only one inside the volume.
            if let Err(e) = validate_relative_path(&dir) {
                return Err(StageError::InputInvalid(format!(
                    "{}: artifact {} names package {dir:?}: {e}",
                    mpath.display(),
                    a.path
                )));
            }
            match dirs.iter_mut().find(|(d, _)| *d == volume.join(&dir)) {
                Some((_, arts)) => arts.push(a),
                None => dirs.push((volume.join(&dir), vec![a])),
            }
        }
    } else {
        for p in &args.packages {
            dirs.push((p.clone(), vec![]));
        }
    }
    let mut out = Vec::new();
    for (dir, artifact) in dirs {
        let (card, net) = load_package(&dir, &compute.device)?;
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        // (the `--style` value as given, the spec for this package)
        let mut specs: Vec<(String, String)> = args
            .styles
            .iter()
            .filter_map(|s| match s.split_once('/') {
                Some((pkg, spec)) => (pkg == dir_name).then(|| (s.clone(), spec.to_string())),
                None => Some((s.clone(), s.clone())),
            })
            .collect();
        if specs.is_empty() {
            specs.push(("0".into(), "0".into()));
        }
        let in_package = |e: StageError| {
            StageError::InputInvalid(format!(
                "package {}: {}",
                dir.display(),
                e.to_string().trim_start_matches("input invalid: ")
            ))
        };
        let given = specs
            .iter()
            .map(|(given, s)| parse_style(s, &card.styles).map(|st| (given.clone(), st)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_package)?;
        // The same style twice would be computed twice and written to one place (or, under
        // another label, as two identical files): done once, and said so.
        let (styles, repeats) = style::distinct_styles(given).map_err(in_package)?;
        for (spec, kept) in repeats {
            tracing::warn!(
                "package {dir_name}: --style {spec:?} is the same style as --style {kept:?}: \
                 done once"
            );
        }
        let fused = compute.fused.then(|| FusedNet::new(&net));
        out.push(Loaded {
            dir: dir.clone(),
            dir_name,
            card,
            net,
            fused,
            styles,
            artifact,
        });
    }
    if out.is_empty() {
        return Err(StageError::InputMissing(vec!["no model packages".into()]));
    }
    for spec in &args.styles {
        if let Some((pkg, _)) = spec.split_once('/')
            && !out.iter().any(|l| l.dir_name == pkg)
        {
            let have: Vec<&str> = out.iter().map(|l| l.dir_name.as_str()).collect();
            return Err(StageError::Usage(format!(
                "--style {spec:?}: no package named {pkg:?} (packages: {})",
                have.join(", ")
            )));
        }
    }
    Ok(out)
}

fn gather_images(args: &Args, volume: &Path, run_id: &str) -> Result<Vec<ImageInput>, StageError> {
    let mut out = Vec::new();
    if args.images.is_empty() {
        for a in previous_outputs(volume, run_id, "download", ArtifactKind::Image, "--image")? {
            // Below download's directory: the run's own (`runs/<run>/inputs/`) or `inputs/`.
            let own = format!(
                "{}/",
                kubestyle_manifest::manifest::run_data_dir(run_id, "inputs")
            );
            let rel_out = a
                .path
                .strip_prefix(own.as_str())
                .or_else(|| a.path.strip_prefix("inputs/"))
                .unwrap_or(&a.path)
                .to_string();
            out.push(ImageInput {
                abs: a.abs_path(volume),
                rel_out,
                sha256: a.sha256.clone(),
                artifact: Some(a),
            });
        }
    } else {
        let mut missing = Vec::new();
        for p in &args.images {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    for rel in kubestyle_manifest::files::walk_files(p)
                        .map_err(|e| StageError::io(p, e))?
                    {
                        if ArtifactKind::guess(&rel) == ArtifactKind::Image {
                            let abs = p.join(&rel);
                            out.push(ImageInput {
                                sha256: sha256_file(&abs)?.0,
                                abs,
                                rel_out: rel,
                                artifact: None,
                            });
                        }
                    }
                }
                Ok(_) => {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    out.push(ImageInput {
                        sha256: sha256_file(p)?.0,
                        abs: p.clone(),
                        rel_out: name,
                        artifact: None,
                    });
                }
                Err(_) => missing.push(format!("{} does not exist", p.display())),
            }
        }
        if !missing.is_empty() {
            return Err(StageError::InputMissing(missing));
        }
        let mut names: Vec<&str> = out.iter().map(|i| i.rel_out.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StageError::InputInvalid(format!(
                "two input images are both named {:?}",
                w[0]
            )));
        }
    }
    if out.is_empty() {
        return Err(StageError::InputMissing(vec!["no input images".into()]));
    }
    Ok(out)
}
