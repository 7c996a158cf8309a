//! The `stylize` stage: packaged networks × images × styles → stylised images.
//!
//! Inputs come from flags or from the run's manifests (package-model's packages, download's
//! images). Everything is checked before the first forward pass: packages load and verify,
//! every `--style` resolves, every image decodes within the pixel limit. Each output keeps its
//! input's format and suffix (or `--format`), is written atomically, and is recorded in the
//! manifest with its size, style, backend, device and forward-pass time. The manifest is last.

/// Decoding and encoding (the `kubestyle-imageio` crate).
pub use kubestyle_imageio as image_io;
pub mod colour;
mod compute;
mod inputs;
pub mod plan;
pub mod serve;
mod stream;
pub mod style;
pub mod tiles;
mod writer;

pub use stream::{LANE_MAX_PIXELS, PREFETCH_MAX_PIXELS};

pub use compute::{resolved_tiling, stylize_planar};
use inputs::{gather_images, load_packages};

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::manifest::{
    manifest_path, new_run_id, open_volume, previous_outputs, validate_run_id,
};
use kubestyle_manifest::{
    Artifact, ArtifactKind, Manifest, Sha256Hex, StageError, StageRun, sha256_file,
};
use kubestyle_models::exact::ExactOptions;
use kubestyle_models::{
    FusedNet, MIN_SIDE, ModelCard, Network, NormStats, crop, crop_planar, extend_planar,
    load_package, pad_to_multiple,
};
use serde_json::{Map, Value, json};

pub use image_io::OutFormat;
pub use style::{Style, parse_style, parse_style_with};

pub const STAGE: &str = kubestyle_manifest::command::stylize::NAME;

/// The command line, its `--tiling` and `--kernels` (defined with the other stages' in the
/// contract crate, where the pipeline builds it).
pub use kubestyle_manifest::command::stylize::{Args, KernelsArg, Tiling};

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
    if args.lanes == Some(0) {
        return Err(StageError::Usage("--lanes must be at least 1".into()));
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
    // The style controls' defaults, only when set (the keys of runs without them unchanged).
    let mut params = params;
    if args.preserve_colour {
        params["preserve_colour"] = json!(true);
    }
    if let Some(s) = args.strength {
        params["strength"] = json!(s);
    }
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
        for a in &manifest.outputs {
            writer::sweep_thumbnail_temps(&volume, a);
        }
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

    // Plan every output (probing every image's header), refusing clashes before any work.
    let mut probed = Vec::with_capacity(images.len());
    let mut pixels = Vec::with_capacity(images.len());
    for img in &images {
        let (format, dims) = image_io::probe(&img.abs, args.max_pixels)?;
        let side = image_io::output_side(dims, args.max_size);
        probed.push((format, side));
        // Pixels after `--max-size` (what the forward pass sees).
        let scale = f64::from(side) / f64::from(dims.0.max(dims.1).max(1));
        pixels.push((f64::from(dims.0) * f64::from(dims.1) * scale * scale).round() as u64);
    }
    let plan_packages: Vec<plan::PlanPackage<'_>> = packages
        .iter()
        .map(|p| plan::PlanPackage {
            dir: &p.dir,
            dir_name: &p.dir_name,
            weights_sha256: &p.card.weights.sha256,
            styles: &p.styles,
        })
        .collect();
    let plan_images: Vec<plan::PlanImage<'_>> = images
        .iter()
        .zip(&probed)
        .map(|(i, &(format, side))| plan::PlanImage {
            abs: &i.abs,
            rel_out: &i.rel_out,
            sha256: &i.sha256,
            format,
            side,
        })
        .collect();
    let opts = plan::PlanOptions {
        out: &out,
        format: args.format,
        params: &params,
        shards: args.shards,
        shard: args.shard,
    };
    let jobs = plan::plan(
        &plan_packages,
        &plan_images,
        &opts,
        &previous,
        |rel, a| match a.verify(&volume) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("recomputing {rel}: {e}");
                false
            }
        },
    )?;
    // Decode every image a computed output needs and let it go: all of them are checked before
    // the first forward pass, so a bad one fails the stage before anything is written. Memory
    // is bounded as for the forward passes (the README's "one decoded image per lane"): images
    // that run in lanes (at most `LANE_MAX_PIXELS` after `--max-size`) are decoded `lanes` at
    // a time, larger ones one at a time (a 100 MP photo without `--max-size` is 1.5 GB
    // decoded: all cores at once would be cores × that). Each is decoded again for its forward
    // passes (at 96² 0.1 ms against 7 ms, for a 3 MP photo 40 ms against seconds). The first
    // failure in input order is reported.
    let mut needed = vec![false; images.len()];
    for job in jobs.iter().filter(|j| j.reuse.is_none()) {
        needed[job.img] = true;
    }
    precheck_decode(&images, &needed, &pixels, &args)?;
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
    // Contact-sheet thumbnails: for the inputs upload's sheet shows (the same choice, made from
    // every image of the run, so shards agree), when larger than its cells.
    let names: Vec<String> = images.iter().map(inputs::ImageInput::input_name).collect();
    let shown = kubestyle_manifest::command::sheet::shown_inputs(names.iter().map(String::as_str));
    let thumbs: Vec<bool> = names
        .iter()
        .zip(&probed)
        .map(|(n, &(_, side))| {
            shown.contains(n.as_str())
                && kubestyle_manifest::command::sheet::wants_thumbnail(side as usize, side as usize)
        })
        .collect();
    let ctx = stream::Context {
        jobs: &jobs,
        packages: &packages,
        images: &images,
        pixels: &pixels,
        compute: &compute,
        args: &args_with_scratch,
        thumbs: &thumbs,
        run_id: &run_id,
        volume: &volume,
    };
    let (outputs, computed, reused) = stream::produce(&ctx, &volume)?;

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

/// Where a stylize shard writes its manifest (the contract crate's naming, which upload and the
/// pipeline use too).
pub use kubestyle_manifest::command::naming::shard_manifest_path;

fn dedupe(arts: &mut Vec<Artifact>) {
    let mut seen = std::collections::BTreeSet::new();
    arts.retain(|a| seen.insert(a.name.clone()));
}

/// Decode every `needed` image once (and let it go), within the memory bound of the forward
/// passes: images of at most `LANE_MAX_PIXELS` (after `--max-size`) `lanes` at a time, larger
/// ones one at a time. The first failure in input order is returned.
fn precheck_decode(
    images: &[inputs::ImageInput],
    needed: &[bool],
    pixels: &[u64],
    args: &Args,
) -> Result<(), StageError> {
    use rayon::prelude::*;
    let lanes = args.lanes.unwrap_or_else(rayon::current_num_threads).max(1);
    let check = |k: usize| -> Option<(usize, StageError)> {
        image_io::load(&images[k].abs, args.max_pixels, args.max_size)
            .err()
            .map(|e| (k, e.into()))
    };
    let (small, large): (Vec<usize>, Vec<usize>) = (0..images.len())
        .filter(|&k| needed[k])
        .partition(|&k| pixels[k] <= stream::LANE_MAX_PIXELS);
    let mut failures: Vec<(usize, StageError)> = Vec::new();
    // `lanes` at a time: each chunk in parallel, one after the other.
    for chunk in small.chunks(lanes) {
        failures.extend(
            chunk
                .par_iter()
                .filter_map(|&k| check(k))
                .collect::<Vec<_>>(),
        );
    }
    for &k in &large {
        failures.extend(check(k));
    }
    match failures.into_iter().min_by_key(|(k, _)| *k) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}
