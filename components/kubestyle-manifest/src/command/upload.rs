//! `upload`: publish a run's outputs, manifests and SHA256SUMS (`publish`), or push local
//! files to a prefix (`push`).

use std::path::PathBuf;

use bytesize::ByteSize;

use super::s3::S3Args;
use super::{Argv, Stage, path_arg, path_args};

/// The stage's name (its binary).
pub const NAME: &str = Stage::Upload.as_str();
/// Default `--multipart-threshold`.
pub const DEFAULT_MULTIPART_THRESHOLD: &str = "64MiB";
/// Default `--part-size`.
pub const DEFAULT_PART_SIZE: &str = "16MiB";
/// Default `--jobs`.
pub const DEFAULT_JOBS: u16 = 4;
/// Where `upload --anonymize` reads its salt (never from a flag or the spec: a flag would show
/// in process listings and rendered YAML).
pub const ANONYMIZE_SALT_ENV: &str = "KUBESTYLE_ANONYMIZE_SALT";
/// The shortest salt accepted: 16 bytes (a constant or a guessable word is not a salt).
pub const MIN_SALT_BYTES: usize = 16;

/// The salt in `value` (the environment's `KUBESTYLE_ANONYMIZE_SALT`), or why it is refused.
/// The message never contains the salt.
pub fn check_salt(value: Option<std::ffi::OsString>) -> Result<Vec<u8>, String> {
    use std::os::unix::ffi::OsStringExt;
    match value.map(OsStringExt::into_vec) {
        None => Err(format!(
            "anonymize is on but {ANONYMIZE_SALT_ENV} is not set: give a secret salt of at least \
             {MIN_SALT_BYTES} bytes (e.g. `openssl rand -hex 32`), from a Kubernetes Secret in a \
             cluster; keep it to get the same IDs in later runs"
        )),
        Some(s) if s.len() < MIN_SALT_BYTES => Err(format!(
            "{ANONYMIZE_SALT_ENV} is {} bytes: a salt needs at least {MIN_SALT_BYTES} secret \
             bytes (e.g. `openssl rand -hex 32`)",
            s.len()
        )),
        Some(s) => Ok(s),
    }
}

fn size(s: &str) -> ByteSize {
    s.parse().unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(name = NAME, version, about = "Publish kubestyle results to S3 (or a directory)", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum Command {
    /// Publish a run: the manifests' outputs, the manifests and SHA256SUMS under <TO>/<run-id>/.
    Publish(PublishArgs),
    /// Push local files or directories to a prefix where they are absent.
    Push(PushArgs),
}

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TransferArgs {
    /// Objects at least this large are sent as multipart uploads.
    #[arg(long, default_value = DEFAULT_MULTIPART_THRESHOLD, value_name = "SIZE")]
    pub multipart_threshold: ByteSize,
    /// Part size for multipart uploads (at least 5MiB, the S3 minimum).
    #[arg(long, default_value = DEFAULT_PART_SIZE, value_name = "SIZE")]
    pub part_size: ByteSize,
    /// Uploads in flight at once.
    #[arg(long, short = 'j', default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Replace objects that differ instead of failing with a conflict.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct PublishArgs {
    /// A stage manifest whose outputs to publish. Repeatable; all must share one run id.
    #[arg(long = "manifest", required = true, value_name = "FILE")]
    pub manifests: Vec<PathBuf>,
    /// Destination: `s3://bucket/prefix` or a local directory. The run goes to `<TO>/<run-id>/`.
    #[arg(long, value_name = "URI")]
    pub to: String,
    /// A stage manifest to publish (under `manifests/`) without its outputs. Repeatable.
    #[arg(long = "record", value_name = "FILE")]
    pub records: Vec<PathBuf>,
    /// A log file on the volume to publish under `logs/`. Repeatable.
    #[arg(long = "log", value_name = "FILE")]
    pub logs: Vec<PathBuf>,
    /// Do not write `results.csv`, `results.json` and `contact-sheet.jpg` (written by default
    /// when a manifest has styled images).
    #[arg(long)]
    pub no_report: bool,
    /// Publish keyed hashes (HMAC-SHA-256 with the secret salt in `KUBESTYLE_ANONYMIZE_SALT`)
    /// in place of the inputs' sources, paths and keys: in the results tables, the manifest
    /// copies, the logs, SHA256SUMS, the contact sheet's captions and the styled outputs' keys.
    /// The images themselves are still published.
    #[arg(long)]
    pub anonymize: bool,
    /// Publish again even when the receipt shows the same files went to the same destination
    /// (the step cache). Objects already there and identical are still skipped.
    #[arg(long)]
    pub force: bool,
    /// Root of the shared volume (manifest paths are relative to it).
    #[arg(long, env = "KUBESTYLE_VOLUME", value_name = "DIR")]
    pub volume: PathBuf,
    /// Write the receipt manifest here (default `<volume>/runs/<run-id>/upload.manifest.json`).
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct PushArgs {
    /// Local files or directories (a directory's files keep their layout under its name).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Destination prefix: `s3://bucket/prefix/` or a local directory.
    #[arg(long, value_name = "URI")]
    pub to: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

impl Default for TransferArgs {
    fn default() -> Self {
        TransferArgs {
            multipart_threshold: size(DEFAULT_MULTIPART_THRESHOLD),
            part_size: size(DEFAULT_PART_SIZE),
            jobs: DEFAULT_JOBS,
            overwrite: false,
        }
    }
}

impl TransferArgs {
    /// The flags. `--jobs` is always written.
    pub fn to_args(&self) -> Vec<String> {
        let TransferArgs {
            multipart_threshold,
            part_size,
            jobs,
            overwrite,
        } = self;
        let mut a = Argv::new();
        a.switch("--overwrite", *overwrite);
        a.opt("--jobs", jobs);
        // In bytes: `ByteSize`'s display rounds.
        if *multipart_threshold != size(DEFAULT_MULTIPART_THRESHOLD) {
            a.opt("--multipart-threshold", multipart_threshold.as_u64());
        }
        if *part_size != size(DEFAULT_PART_SIZE) {
            a.opt("--part-size", part_size.as_u64());
        }
        a.finish()
    }
}

impl PublishArgs {
    /// Publish the outputs of `manifests` to `to`, every option at its default.
    pub fn new(volume: impl Into<PathBuf>, manifests: Vec<PathBuf>, to: impl Into<String>) -> Self {
        PublishArgs {
            manifests,
            to: to.into(),
            records: Vec::new(),
            logs: Vec::new(),
            no_report: false,
            anonymize: false,
            force: false,
            volume: volume.into(),
            receipt: None,
            transfer: TransferArgs::default(),
            s3: S3Args::default(),
        }
    }

    /// The arguments after `publish`. `--volume`, `--manifest`, `--to` and `--jobs` are always
    /// written; `--force` comes last.
    pub fn to_args(&self) -> Vec<String> {
        let PublishArgs {
            manifests,
            to,
            records,
            logs,
            no_report,
            anonymize,
            force,
            volume,
            receipt,
            transfer,
            s3,
        } = self;
        let mut a = Argv::new();
        a.opt("--volume", path_arg(volume));
        a.opt_each("--manifest", &path_args(manifests));
        a.opt_each("--record", &path_args(records));
        a.opt_each("--log", &path_args(logs));
        a.opt("--to", to);
        a.extend(transfer.to_args());
        a.switch("--no-report", *no_report);
        a.switch("--anonymize", *anonymize);
        a.opt_some("--receipt", &receipt.as_deref().map(path_arg));
        a.extend(s3.to_args());
        a.switch("--force", *force);
        a.finish()
    }
}

impl PushArgs {
    /// The arguments after `push`.
    pub fn to_args(&self) -> Vec<String> {
        let PushArgs {
            paths,
            to,
            transfer,
            s3,
        } = self;
        let mut a = Argv::new();
        a.opt("--to", to);
        a.extend(transfer.to_args());
        a.extend(s3.to_args());
        for p in path_args(paths) {
            a.word(p);
        }
        a.finish()
    }
}

impl Cli {
    /// `upload publish …`.
    pub fn publish(args: PublishArgs) -> Self {
        Cli {
            command: Command::Publish(args),
        }
    }

    /// The command line (without the program name): the subcommand and its arguments.
    pub fn to_args(&self) -> Vec<String> {
        let Cli { command } = self;
        let mut a = Argv::new();
        match command {
            Command::Publish(p) => {
                a.word("publish");
                a.extend(p.to_args());
            }
            Command::Push(p) => {
                a.word("push");
                a.extend(p.to_args());
            }
        }
        a.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_salt_is_required_long_enough_and_never_echoed() {
        let e = check_salt(None).unwrap_err();
        assert!(e.contains(ANONYMIZE_SALT_ENV), "{e}");
        let e = check_salt(Some("hunter2".into())).unwrap_err();
        assert!(e.contains("7 bytes") && !e.contains("hunter2"), "{e}");
        assert_eq!(
            check_salt(Some("0123456789abcdef".into())).unwrap(),
            b"0123456789abcdef"
        );
    }
    use crate::command::testutil::round_trips;

    fn transfer() -> TransferArgs {
        TransferArgs {
            multipart_threshold: ByteSize::mib(8) + ByteSize::b(3),
            part_size: ByteSize::mib(5),
            jobs: 2,
            overwrite: true,
        }
    }

    #[test]
    fn every_field_round_trips() {
        let publish = Cli::publish(PublishArgs {
            manifests: vec![
                "/vol/runs/r/stylize-0-of-2.manifest.json".into(),
                "b.json".into(),
            ],
            to: "s3://out/runs/".into(),
            records: vec!["/vol/runs/r/download.manifest.json".into()],
            logs: vec!["/vol/runs/r/stylize.log".into(), "x.log".into()],
            no_report: true,
            anonymize: true,
            force: true,
            volume: "/vol".into(),
            receipt: Some("/vol/receipt.json".into()),
            transfer: transfer(),
            s3: crate::command::s3::tests::full(),
        });
        round_trips(NAME, &publish, Cli::to_args);
        let push = Cli {
            command: Command::Push(PushArgs {
                paths: vec!["a.jpg".into(), "/srv/dir".into()],
                to: "s3://seeds/in/".into(),
                transfer: transfer(),
                s3: crate::command::s3::tests::full(),
            }),
        };
        round_trips(NAME, &push, Cli::to_args);
    }

    #[test]
    fn defaults_are_left_out() {
        let c = Cli::publish(PublishArgs::new("/vol", vec!["m.json".into()], "out"));
        assert_eq!(
            c.to_args().join(" "),
            "publish --volume /vol --manifest m.json --to out --jobs 4"
        );
    }
}
