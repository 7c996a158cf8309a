//! `stylize serve`'s command line: the packages, the batch stage's image options (so a request
//! computes what the batch stage would write) and the server's own limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kubestyle_manifest::command::stylize::{
    AUTO, Args, DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_TILE_ABOVE, KernelsArg, OutFormat, Tiling,
};

/// Default `--listen` (KServe's predictor port).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default `--max-body-bytes`: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Default `--max-pixels` of a request (a 16-megapixel photo): far below the batch stage's,
/// since a server holds several at once.
pub const DEFAULT_SERVE_MAX_PIXELS: u64 = 16_777_216;
/// Default `--queue`: requests waiting for a lane before the server answers 503.
pub const DEFAULT_QUEUE: usize = 32;
/// Default `--timeout-s`.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
/// Default `--drain-s`.
pub const DEFAULT_DRAIN_S: u64 = 30;

/// `stylize serve`: load model packages once and serve them over HTTP (the Open Inference
/// Protocol V2, KServe V1 `:predict`, and a plain image-bytes `POST /stylize?style=`).
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = "stylize serve",
    bin_name = "stylize serve",
    version,
    about = "Serve packaged style-transfer networks over HTTP (Open Inference Protocol V2, KServe V1, plain image bytes)",
    long_about = None
)]
pub struct ServeArgs {
    /// Model packages (directories with model.json); each is served as a model named after its
    /// directory. Repeatable.
    #[arg(
        long = "package",
        value_name = "DIR",
        required = true,
        env = "KUBESTYLE_PACKAGES",
        value_delimiter = ','
    )]
    pub packages: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Forward passes at a time (lanes). Small images (up to 512²) run one per lane on one core,
    /// as the batch stage runs them; larger ones take every lane. Default: one per core.
    #[arg(long, env = "KUBESTYLE_LANES", value_name = "N")]
    pub lanes: Option<usize>,
    /// Requests waiting for a lane; one more is answered 503 with `Retry-After`.
    #[arg(long, default_value_t = DEFAULT_QUEUE, value_name = "N")]
    pub queue: usize,
    /// Largest request body in bytes (413 above it), checked before it is read whole.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Refuse images with more pixels than this (413), from their header, before decoding.
    #[arg(long, default_value_t = DEFAULT_SERVE_MAX_PIXELS, value_name = "N")]
    pub max_pixels: u64,
    /// A request's time limit in seconds, waiting included (504 past it).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_S, value_name = "S")]
    pub timeout_s: f64,
    /// On SIGTERM: how long in-flight requests may take to finish before the process exits.
    #[arg(long, default_value_t = DEFAULT_DRAIN_S, value_name = "S")]
    pub drain_s: u64,
    /// Require `Authorization: Bearer <token>` with the token in this file (the health
    /// endpoints stay open for probes). The token is never logged.
    #[arg(long, env = "KUBESTYLE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Longest edge in pixels; larger images are scaled down (aspect kept), as the batch stage.
    #[arg(long, value_name = "N")]
    pub max_size: Option<u32>,
    /// Images with more pixels than this run in parts (see the batch stage's `--tiling`).
    #[arg(long, default_value_t = DEFAULT_TILE_ABOVE, value_name = "N")]
    pub tile_above: u64,
    /// As the batch stage's `--tiling`.
    #[arg(long, value_enum, default_value_t = Tiling::Auto)]
    pub tiling: Tiling,
    /// Where exact tiling keeps its scratch activations (default: the temp directory).
    #[arg(long, env = "KUBESTYLE_SCRATCH_DIR", value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Tile edge in pixels, approximate tiling.
    #[arg(long, default_value_t = DEFAULT_TILE, value_name = "N")]
    pub tile: usize,
    /// Overlap between tiles in pixels, approximate tiling.
    #[arg(long, default_value_t = DEFAULT_OVERLAP, value_name = "N")]
    pub overlap: usize,
    /// Output encoding (`keep`: the input's format, as the batch stage).
    #[arg(long, value_enum, default_value_t = OutFormat::Keep)]
    pub format: OutFormat,
    /// As the batch stage's `--device`.
    #[arg(long, default_value = AUTO, value_name = "auto|cpu|cuda[:N]")]
    pub device: String,
    /// As the batch stage's `--backend`.
    #[arg(long, default_value = AUTO, value_name = "auto|flex|tch")]
    pub backend: String,
    /// As the batch stage's `--kernels`.
    #[arg(long, value_enum, default_value_t = KernelsArg::Auto)]
    pub kernels: KernelsArg,
}

impl ServeArgs {
    /// The batch stage's options that shape a forward pass, so that [`crate::stylize_planar`]
    /// computes exactly what the batch stage would.
    pub fn batch(&self, scratch: PathBuf) -> Args {
        let mut a = Args::new(scratch.clone());
        a.packages = self.packages.clone();
        a.max_size = self.max_size;
        a.max_pixels = self.max_pixels;
        a.tile_above = self.tile_above;
        a.tiling = self.tiling;
        a.scratch_dir = Some(scratch);
        a.lanes = self.lanes;
        a.tile = self.tile;
        a.overlap = self.overlap;
        a.format = self.format;
        a.device = self.device.clone();
        a.backend = self.backend.clone();
        a.kernels = self.kernels;
        a
    }

    /// `--timeout-s` as a duration; a usage error unless positive and finite.
    pub fn timeout(&self) -> Result<Duration, kubestyle_manifest::StageError> {
        Duration::try_from_secs_f64(self.timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                kubestyle_manifest::StageError::Usage(format!(
                    "--timeout-s {}: expected a positive number of seconds",
                    self.timeout_s
                ))
            })
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_s)
    }
}

/// Whether a command line (without the program name) is `serve …`.
pub fn is_serve(argv: &[std::ffi::OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "serve")
}
