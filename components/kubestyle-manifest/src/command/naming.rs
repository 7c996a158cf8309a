//! Where things are, by name: the run's directory on the volume, the stages' manifests (and
//! stylize's per-shard ones), the stage logs `pipeline run` keeps, and what a cluster run names
//! after the run (its claim, its Jobs). Every crate that needs one of these names calls here.

use std::path::{Path, PathBuf};

use super::Stage;

/// The directory of every run on the volume.
pub const RUNS_DIR: &str = "runs";

/// The suffix of a stage manifest's file name.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// A run's directory on the volume, `runs/<run_id>`: its manifests and logs, and by default
/// every stage's data ([`run_data_dir`]).
pub fn run_dir(run_id: &str) -> String {
    format!("{RUNS_DIR}/{run_id}")
}

/// The default directory (relative to the volume) of a stage's data: `runs/<run_id>/<what>`
/// (`inputs`, `models`, `styled`). Per run, so that runs sharing a volume never overwrite each
/// other's files (and so each other's manifests and step caches).
pub fn run_data_dir(run_id: &str, what: &str) -> String {
    format!("{}/{what}", run_dir(run_id))
}

/// Where the download stage puts S3 object `s3://<bucket>/<key>` under `dest` (relative to the
/// volume): `<dest>/<bucket>/<key>`.
pub fn downloaded_path(dest: &str, bucket: &str, key: &str) -> String {
    format!("{dest}/{bucket}/{key}")
}

/// `<volume>/runs/<run_id>`.
pub fn run_path(volume: &Path, run_id: &str) -> PathBuf {
    volume.join(RUNS_DIR).join(run_id)
}

/// The file name of the manifest called `name` (a stage, or a stylize shard's
/// [`shard_manifest_name`]): `<name>.manifest.json`.
pub fn manifest_file_name(name: &str) -> String {
    format!("{name}{MANIFEST_SUFFIX}")
}

/// `<volume>/runs/<run_id>/<stage>.manifest.json`.
pub fn manifest_path(volume: &Path, run_id: &str, stage: &str) -> PathBuf {
    run_path(volume, run_id).join(manifest_file_name(stage))
}

/// The name of the manifest a stylize shard writes: `stylize` for an unsharded run,
/// `stylize-<shard>-of-<shards>` otherwise (upload merges them).
pub fn shard_manifest_name(shard: u32, shards: u32) -> String {
    let stage = Stage::Stylize.as_str();
    if shards <= 1 {
        stage.to_string()
    } else {
        format!("{stage}-{shard}-of-{shards}")
    }
}

/// Where a stylize shard writes its manifest: `stylize.manifest.json` for an unsharded run,
/// `stylize-<shard>-of-<shards>.manifest.json` otherwise (upload merges them).
pub fn shard_manifest_path(volume: &Path, run_id: &str, shard: u32, shards: u32) -> PathBuf {
    manifest_path(volume, run_id, &shard_manifest_name(shard, shards))
}

/// Every stylize manifest of a run split into `shards` (one when unsharded).
pub fn shard_manifest_paths(volume: &Path, run_id: &str, shards: u32) -> Vec<PathBuf> {
    (0..shards.max(1))
        .map(|i| shard_manifest_path(volume, run_id, i, shards))
        .collect()
}

/// `<stage>.log`: the output of a stage `pipeline run` saves beside the manifests.
pub fn log_file_name(stage: Stage) -> String {
    format!("{stage}.log")
}

/// `<volume>/runs/<run_id>/<stage>.log`.
pub fn log_path(volume: &Path, run_id: &str, stage: Stage) -> PathBuf {
    run_path(volume, run_id).join(log_file_name(stage))
}

/// The PersistentVolumeClaim a cluster run creates unless the spec names one: `<run>-volume`.
pub fn claim_name(run: &str) -> String {
    format!("{run}-volume")
}

/// A stage's Job: `<run>-<stage>`.
pub fn job_name(run: &str, stage: Stage) -> String {
    format!("{run}-{stage}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let v = Path::new("/vol");
        assert_eq!(run_dir("r1"), "runs/r1");
        assert_eq!(run_data_dir("r1", "styled"), "runs/r1/styled");
        assert_eq!(run_path(v, "r1"), Path::new("/vol/runs/r1"));
        assert_eq!(
            manifest_path(v, "r1", "download"),
            Path::new("/vol/runs/r1/download.manifest.json")
        );
        assert_eq!(
            shard_manifest_path(v, "r1", 0, 1),
            Path::new("/vol/runs/r1/stylize.manifest.json")
        );
        assert_eq!(
            shard_manifest_paths(v, "r1", 2),
            [
                Path::new("/vol/runs/r1/stylize-0-of-2.manifest.json"),
                Path::new("/vol/runs/r1/stylize-1-of-2.manifest.json")
            ]
        );
        assert_eq!(shard_manifest_paths(v, "r1", 1).len(), 1);
        assert_eq!(
            log_path(Path::new("/vol/"), "r1", Stage::PackageModel),
            Path::new("/vol/runs/r1/package-model.log")
        );
        assert_eq!(claim_name("demo"), "demo-volume");
        assert_eq!(job_name("demo", Stage::Upload), "demo-upload");
    }
}
