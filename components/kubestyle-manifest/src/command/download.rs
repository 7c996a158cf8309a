//! `download`: fetch inputs from S3 or local paths onto the shared volume.

use std::path::PathBuf;

use super::s3::S3Args;
use super::{Argv, Stage, path_arg, path_args};

/// The stage's name (its binary).
pub const NAME: &str = Stage::Download.as_str();
/// Default `--jobs`.
pub const DEFAULT_JOBS: u16 = 4;
/// Default `--max-resumes`.
pub const DEFAULT_MAX_RESUMES: u32 = 5;
/// Default `--max-list-bytes`: 64 MiB (about a million entries).
pub const DEFAULT_MAX_LIST_BYTES: u64 = 64 << 20;

/// Fetch inputs from S3 or local paths onto the shared volume and record them in a manifest.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(
    name = NAME,
    version,
    about = "kubestyle stage 1: fetch inputs from S3 or local paths onto the shared volume",
    long_about = None
)]
pub struct Args {
    /// What to fetch: `s3://bucket/key`, `s3://bucket/prefix/` (every object under it), a local
    /// file or directory, or a `file://` URL. Local files inside the volume are used in place.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// A file listing sources (local or `s3://`): `.csv` with a header row (see `--column`),
    /// anything else one source per line (`#` starts a comment). Relative entries are resolved
    /// against the list's own directory or prefix. Repeatable.
    #[arg(long = "list", value_name = "FILE")]
    pub lists: Vec<String>,
    /// A directory the local paths named by a local list may resolve into (after following
    /// symlinks), besides the list's own directory tree. Entries that resolve anywhere else
    /// are refused (exit 4). Repeatable. Does not apply to SOURCE arguments.
    #[arg(long = "allow-root", value_name = "DIR")]
    pub allow_roots: Vec<PathBuf>,
    /// CSV column holding the sources: a header name or a 0-based index. Default: the first of
    /// `uri`, `url`, `path`, `key`, `image`, `source`, else column 0.
    #[arg(long, value_name = "NAME|INDEX")]
    pub column: Option<String>,
    /// Keep only objects of prefixes and directories whose path below the prefix matches one of
    /// these globs (e.g. `*.jpg`, `**/*.png`). Repeatable.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Root of the shared volume. Manifest paths are relative to it.
    #[arg(long, env = "KUBESTYLE_VOLUME", value_name = "DIR")]
    pub volume: PathBuf,
    /// Directory under the volume that receives fetched objects, as `<dest>/<bucket>/<key>`
    /// (default `runs/<run-id>/inputs`, the run's own).
    #[arg(long, value_name = "REL")]
    pub dest: Option<String>,
    /// Run id (default: a new one). The manifest goes to `<volume>/runs/<run-id>/download.manifest.json`.
    #[arg(long, env = "KUBESTYLE_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Write the manifest here instead.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Transfers and HEAD requests in flight at once.
    #[arg(long, short = 'j', default_value_t = DEFAULT_JOBS, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Download again even when an identical file is already on the volume (and even when the
    /// run's manifest shows the same inputs: the step cache).
    #[arg(long)]
    pub force: bool,
    /// How often a broken response body is resumed (with `Range` + `If-Match`) before giving up.
    #[arg(long, default_value_t = DEFAULT_MAX_RESUMES, value_name = "N")]
    pub max_resumes: u32,
    /// Accept keys (or local names) that differ only by letter case, such as `a.JPG` and `a.jpg`.
    /// By default they are refused (exit 4, naming both) before anything is written: on a
    /// case-insensitive volume (a macOS or Windows host path, many SMB exports, an ext4 directory
    /// with casefold) the second would silently replace the first. Give this only when the
    /// volume is known to be case-sensitive (e.g. a plain ext4/xfs persistent volume). The
    /// check folds Unicode case; it does not catch names that differ only by Unicode
    /// normalisation (NFC/NFD), which some volumes (APFS) also treat as one.
    #[arg(long)]
    pub allow_case_clash: bool,
    /// Largest `--list` file read (local or `s3://`), in bytes: a larger one is refused (exit 4)
    /// before more than this is read, whatever the server or the file claims.
    #[arg(long, env = "KUBESTYLE_MAX_LIST_BYTES", default_value_t = DEFAULT_MAX_LIST_BYTES, value_name = "BYTES")]
    pub max_list_bytes: u64,
    #[command(flatten)]
    pub s3: S3Args,
}

impl Args {
    /// Nothing to fetch yet, every option at its default, on `volume`.
    pub fn new(volume: impl Into<PathBuf>) -> Self {
        Args {
            sources: Vec::new(),
            lists: Vec::new(),
            allow_roots: Vec::new(),
            column: None,
            include: Vec::new(),
            volume: volume.into(),
            dest: None,
            run_id: None,
            manifest: None,
            jobs: DEFAULT_JOBS,
            force: false,
            max_resumes: DEFAULT_MAX_RESUMES,
            allow_case_clash: false,
            max_list_bytes: DEFAULT_MAX_LIST_BYTES,
            s3: S3Args::default(),
        }
    }

    /// The command line (without the program name) that parses back to `self`. `--volume` and
    /// `--jobs` are always written; `--force` comes last.
    pub fn to_args(&self) -> Vec<String> {
        let Args {
            sources,
            lists,
            allow_roots,
            column,
            include,
            volume,
            dest,
            run_id,
            manifest,
            jobs,
            force,
            max_resumes,
            allow_case_clash,
            max_list_bytes,
            s3,
        } = self;
        let mut a = Argv::new();
        a.opt("--volume", path_arg(volume));
        a.opt_some("--run-id", run_id);
        a.opt("--jobs", jobs);
        for s in sources {
            a.word(s);
        }
        a.opt_each("--list", lists);
        a.opt_some("--column", column);
        a.opt_each("--include", include);
        a.opt_each("--allow-root", &path_args(allow_roots));
        a.opt_some("--dest", dest);
        a.opt_some("--manifest", &manifest.as_deref().map(path_arg));
        a.opt_unless("--max-resumes", max_resumes, &DEFAULT_MAX_RESUMES);
        a.switch("--allow-case-clash", *allow_case_clash);
        a.opt_unless("--max-list-bytes", max_list_bytes, &DEFAULT_MAX_LIST_BYTES);
        a.extend(s3.to_args());
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
            sources: vec!["s3://b/k.jpg".into(), "photos/".into()],
            lists: vec!["list.csv".into(), "s3://b/more.txt".into()],
            allow_roots: vec!["/srv/a".into(), "/srv/b".into()],
            column: Some("uri".into()),
            include: vec!["*.jpg".into(), "**/*.png".into()],
            volume: "/vol".into(),
            dest: Some("in".into()),
            run_id: Some("r1".into()),
            manifest: Some("/vol/m.json".into()),
            jobs: 9,
            force: true,
            max_resumes: 1,
            allow_case_clash: true,
            max_list_bytes: 1000,
            s3: crate::command::s3::tests::full(),
        };
        round_trips(NAME, &c, Args::to_args);
    }

    #[test]
    fn defaults_are_left_out() {
        assert_eq!(
            Args::new("/vol").to_args(),
            ["--volume", "/vol", "--jobs", "4"]
        );
    }
}
