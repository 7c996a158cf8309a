//! `stylize serve`'s command line: the packages, the batch stage's image options (so a request
//! computes what the batch stage would write) and the server's own limits. `stylize` parses it
//! (after the word `serve`); `pipeline render --serve` writes it with [`ServeArgs::to_args`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::stylize::{
    AUTO, Args, DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_TILE_ABOVE, KernelsArg, OutFormat, Tiling,
};
use super::{Argv, enum_arg, path_arg, path_args};

/// The word that selects the server in `stylize`'s command line.
pub const SUBCOMMAND: &str = "serve";

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
    /// The server that answers what the batch stage `batch` writes: its options that shape a
    /// forward pass and its encoding (size, pixel limit unless it is the batch default, tiling,
    /// format, device, backend, kernels), with the server's own `packages`, address, drain and
    /// scratch directory; the rest at the server's defaults. What `pipeline render --serve`
    /// writes, from the same plan as the stylize Job.
    pub fn from_batch(
        batch: &Args,
        packages: Vec<PathBuf>,
        listen: SocketAddr,
        drain_s: u64,
        scratch_dir: PathBuf,
    ) -> ServeArgs {
        ServeArgs {
            packages,
            listen,
            lanes: None,
            queue: DEFAULT_QUEUE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pixels: if batch.max_pixels == super::stylize::DEFAULT_MAX_PIXELS {
                DEFAULT_SERVE_MAX_PIXELS
            } else {
                batch.max_pixels
            },
            timeout_s: DEFAULT_TIMEOUT_S,
            drain_s,
            token_file: None,
            max_size: batch.max_size,
            tile_above: batch.tile_above,
            tiling: batch.tiling,
            scratch_dir: Some(scratch_dir),
            tile: batch.tile,
            overlap: batch.overlap,
            format: batch.format,
            device: batch.device.clone(),
            backend: batch.backend.clone(),
            kernels: batch.kernels,
        }
    }

    /// The command line after `serve`, the inverse of parsing (see [`crate::command`]). Always
    /// written, as the pipeline decides them for every deployment and they are worth reading in
    /// a pod spec: `--listen`, `--drain-s`, `--format`, `--device`, `--backend`.
    pub fn to_args(&self) -> Vec<String> {
        let ServeArgs {
            packages,
            listen,
            lanes,
            queue,
            max_body_bytes,
            max_pixels,
            timeout_s,
            drain_s,
            token_file,
            max_size,
            tile_above,
            tiling,
            scratch_dir,
            tile,
            overlap,
            format,
            device,
            backend,
            kernels,
        } = self;
        let mut a = Argv::new();
        a.opt_each("--package", &path_args(packages));
        a.opt("--listen", listen);
        a.opt("--drain-s", drain_s);
        a.opt_some("--scratch-dir", &scratch_dir.as_deref().map(path_arg));
        a.opt("--format", enum_arg(format));
        a.opt("--device", device);
        a.opt("--backend", backend);
        a.opt_some("--max-size", max_size);
        a.opt_unless("--max-pixels", max_pixels, &DEFAULT_SERVE_MAX_PIXELS);
        a.opt_some("--lanes", lanes);
        a.opt_unless("--queue", queue, &DEFAULT_QUEUE);
        a.opt_unless("--max-body-bytes", max_body_bytes, &DEFAULT_MAX_BODY_BYTES);
        a.opt_unless("--timeout-s", timeout_s, &DEFAULT_TIMEOUT_S);
        a.opt_some("--token-file", &token_file.as_deref().map(path_arg));
        a.opt_unless("--tile-above", tile_above, &DEFAULT_TILE_ABOVE);
        if *tiling != Tiling::Auto {
            a.opt("--tiling", enum_arg(tiling));
        }
        a.opt_unless("--tile", tile, &DEFAULT_TILE);
        a.opt_unless("--overlap", overlap, &DEFAULT_OVERLAP);
        if *kernels != KernelsArg::Auto {
            a.opt("--kernels", enum_arg(kernels));
        }
        a.finish()
    }

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
    pub fn timeout(&self) -> Result<Duration, crate::StageError> {
        Duration::try_from_secs_f64(self.timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                crate::StageError::Usage(format!(
                    "--timeout-s {}: expected a positive number of seconds",
                    self.timeout_s
                ))
            })
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::testutil::round_trips;

    #[test]
    fn every_field_round_trips() {
        let c = ServeArgs {
            packages: vec![
                "/data/runs/r/models/a".into(),
                "/data/runs/r/models/b".into(),
            ],
            listen: "127.0.0.1:9000".parse().unwrap(),
            lanes: Some(3),
            queue: 5,
            max_body_bytes: 1234,
            max_pixels: 4321,
            timeout_s: 2.5,
            drain_s: 7,
            token_file: Some("/secrets/token".into()),
            max_size: Some(640),
            tile_above: 99,
            tiling: Tiling::Approximate,
            scratch_dir: Some("/tmp".into()),
            tile: 128,
            overlap: 16,
            format: OutFormat::Png,
            device: "cuda:1".into(),
            backend: "tch".into(),
            kernels: KernelsArg::Burn,
        };
        round_trips(SUBCOMMAND, &c, ServeArgs::to_args);
        // Defaults stay unwritten, except what is always written.
        let d = <ServeArgs as clap::Parser>::parse_from([SUBCOMMAND, "--package", "/p"]);
        assert_eq!(
            d.to_args(),
            [
                "--package",
                "/p",
                "--listen",
                "0.0.0.0:8080",
                "--drain-s",
                "30",
                "--format",
                "keep",
                "--device",
                "auto",
                "--backend",
                "auto"
            ]
        );
        round_trips(SUBCOMMAND, &d, ServeArgs::to_args);
    }

    #[test]
    fn a_server_from_the_batch_args_shapes_forward_passes_as_they_do() {
        let mut b = Args::new("/data");
        b.max_size = Some(96);
        b.format = OutFormat::Png;
        b.device = "cuda".into();
        b.tiling = Tiling::Exact;
        let s = ServeArgs::from_batch(
            &b,
            vec!["/data/m".into()],
            DEFAULT_LISTEN.parse().unwrap(),
            30,
            "/tmp".into(),
        );
        // And back: the batch options the server computes with are the batch stage's.
        let back = s.batch("/tmp".into());
        assert_eq!(
            (
                back.max_size,
                back.format,
                back.device.as_str(),
                back.tiling
            ),
            (Some(96), OutFormat::Png, "cuda", Tiling::Exact)
        );
        assert_eq!(
            s.max_pixels, DEFAULT_SERVE_MAX_PIXELS,
            "the batch default is not a server's"
        );
        b.max_pixels = 1000;
        let s = ServeArgs::from_batch(&b, vec![], s.listen, 30, "/tmp".into());
        assert_eq!(s.max_pixels, 1000);
    }
}
