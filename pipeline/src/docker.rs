//! `pipeline run --runner docker`: the same plan as the process runner, each stage in its own
//! image, started by a container engine's `run` (docker, or podman with its docker-compatible
//! command line), as the rendered pods run it.
//!
//! * The image of a stage is the one `pipeline render` names (`<registry>/kubestyle-<stage>:<tag>`
//!   from the spec's `kubernetes` section, or `--registry`/`--tag`); the entrypoint is the stage's
//!   binary by name, as the Jobs' `command: [<stage>]`.
//! * Hardening as in the pods: a non-root user (65532:65532, the images' user, when `pipeline`
//!   runs as root; the caller's own uid:gid otherwise, so files on the host stay theirs), a
//!   read-only root filesystem with a `/tmp` tmpfs, every capability dropped, no new privileges.
//! * Paths: the volume, every local source (read-only) and a local output directory are
//!   bind-mounted **at the same path** they have on the host, so the stage commands are the
//!   process runner's, word for word, and so are the manifests they write.
//! * Environment: the plan's own (never credentials), and, by name only (`-e NAME`, the value
//!   taken from this process's environment by the engine and never written on a command line),
//!   the S3 settings and credentials to download and upload only — as the S3 Secret reaches only
//!   those pods.
//! * Network: the host's by default (an endpoint on 127.0.0.1 is reached as by the process
//!   runner); `--network` names another.
//!
//! Everything here is a pure function of the plan and the options ([`run_args`], [`mounts`]),
//! snapshot-tested; `run.rs` starts what it returns.

use std::path::{Path, PathBuf};

use kubestyle_manifest::command::StageArgs;

use crate::Stage;
use crate::plan::StageCmd;
use crate::render::{image as image_ref, kubernetes_of};
use crate::spec::Loaded;

/// The images' user (distroless `nonroot`), which the pods run as.
pub const IMAGE_USER: &str = "65532:65532";

/// Settings of the S3 client and the credentials: passed by name to download and upload.
pub const S3_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_EC2_METADATA_DISABLED",
    "KUBESTYLE_S3_ADDRESSING",
    "KUBESTYLE_S3_CONNECT_TIMEOUT",
    "KUBESTYLE_S3_READ_TIMEOUT",
    "KUBESTYLE_S3_ATTEMPT_TIMEOUT",
    "KUBESTYLE_S3_OPERATION_TIMEOUT",
];

/// Stage settings every stage gets by name when set (no paths of the host, no secrets).
pub const STAGE_ENV: &[&str] = &["RUST_LOG", "KUBESTYLE_LANES", "KUBESTYLE_MAX_WEIGHT_BYTES"];

/// How the containers are run (`pipeline run --runner docker …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerOptions {
    /// The engine's command (`docker`, `podman`, a path).
    pub engine: String,
    /// Image registry instead of the spec's `kubernetes.registry`.
    pub registry: Option<String>,
    /// Image tag instead of the spec's `kubernetes.tag` (default: this build's version).
    pub tag: Option<String>,
    /// The containers' network (`host`: the host's, so 127.0.0.1 is the host's).
    pub network: String,
    /// `uid:gid` the stages run as.
    pub user: String,
}

impl DockerOptions {
    /// The user for a caller of this uid/gid: the images' own user for root (a root caller can
    /// hand it the volume), the caller's otherwise (files on a bind mount keep their owner).
    pub fn user_for(uid: u32, gid: u32) -> String {
        if uid == 0 {
            IMAGE_USER.to_string()
        } else {
            format!("{uid}:{gid}")
        }
    }
}

/// One bind mount: a host path mounted at the same path in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The image a stage runs in.
pub fn image(l: &Loaded, opts: &DockerOptions, stage: Stage) -> String {
    let mut k = kubernetes_of(l);
    if let Some(r) = &opts.registry {
        k.registry = r.clone();
    }
    if let Some(t) = &opts.tag {
        k.tag = Some(t.clone());
    }
    image_ref(&k, stage.as_str())
}

fn local(uri: &str) -> Option<PathBuf> {
    (!uri.starts_with("s3://")).then(|| PathBuf::from(uri.trim_end_matches('/')))
}

/// What a stage reads and writes on the host, as the pods' volumes: the volume (read-write)
/// for every stage; the local sources and list files for download (read-only); a local
/// output for upload (read-write). Sorted, without duplicates; a path both read and written is
/// read-write.
pub fn mounts(volume: &Path, cmd: &StageCmd) -> Vec<Mount> {
    let mut m = vec![Mount {
        path: volume.to_path_buf(),
        read_only: false,
    }];
    match &cmd.command {
        StageArgs::Download(a) => {
            for p in a.sources.iter().chain(&a.lists).filter_map(|s| local(s)) {
                m.push(Mount {
                    path: p,
                    read_only: true,
                });
            }
        }
        StageArgs::Upload(u) => {
            if let kubestyle_manifest::command::upload::Command::Publish(p) = &u.command
                && let Some(out) = local(&p.to)
            {
                m.push(Mount {
                    path: out,
                    read_only: false,
                });
            }
        }
        _ => {}
    }
    // Read-write first for each path, then drop the later duplicates.
    m.sort_by(|a, b| a.path.cmp(&b.path).then(a.read_only.cmp(&b.read_only)));
    m.dedup_by(|later, first| later.path == first.path);
    m
}

/// A `--mount` value: CSV, so a field holding a comma or a quote is quoted.
fn mount_arg(m: &Mount) -> String {
    let field = |k: &str, v: &str| {
        let kv = format!("{k}={v}");
        if kv.contains([',', '"']) {
            format!("\"{}\"", kv.replace('"', "\"\""))
        } else {
            kv
        }
    };
    let p = m.path.display().to_string();
    let mut s = format!("type=bind,{},{}", field("src", &p), field("dst", &p));
    if m.read_only {
        s.push_str(",readonly");
    }
    s
}

/// The engine's arguments (after the engine's command) that run `cmd` in its image as the
/// container `name`, with the stage's [`mounts`] under `volume`. `is_set(NAME)` says whether
/// this process has the variable: only those are passed (by name).
pub fn run_args(
    l: &Loaded,
    cmd: &StageCmd,
    volume: &Path,
    opts: &DockerOptions,
    name: &str,
    is_set: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let stage = cmd.stage();
    let mut a: Vec<String> = [
        "run",
        "--rm",
        "--name",
        name,
        "--user",
        &opts.user,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        &opts.network,
        "--label",
        "app.kubernetes.io/managed-by=kubestyle-pipeline",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    a.push("--label".into());
    a.push(format!("kubestyle.dev/run={}", l.spec.name));
    a.push("--label".into());
    a.push(format!("kubestyle.dev/stage={}", stage.as_str()));
    for m in mounts(volume, cmd) {
        a.push("--mount".into());
        a.push(mount_arg(&m));
    }
    a.push("-e".into());
    a.push("NO_COLOR=1".into());
    for (k, v) in &cmd.env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    let s3 = matches!(stage, Stage::Download | Stage::Upload);
    // The anonymize salt reaches upload only (by name: its value never on a command line).
    let salt: &[&str] = if stage == Stage::Upload {
        &[kubestyle_manifest::command::upload::ANONYMIZE_SALT_ENV]
    } else {
        &[]
    };
    let names = STAGE_ENV
        .iter()
        .chain(if s3 { S3_ENV } else { &[] })
        .chain(salt)
        .filter(|n| is_set(n));
    for n in names {
        a.push("-e".into());
        a.push((*n).to_string());
    }
    a.push("--entrypoint".into());
    a.push(stage.as_str().into());
    a.push(image(l, opts, stage));
    a.extend(cmd.args());
    a
}

/// The engine's arguments that ask an image for its `--version` (no network, no mounts, the
/// same user and read-only root as a stage).
pub fn version_args(image: &str, stage: Stage, opts: &DockerOptions) -> Vec<String> {
    [
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        &opts.user,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        stage.as_str(),
        image,
        "--version",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Layout, stage_commands};
    use crate::spec;

    fn loaded() -> Loaded {
        let text = "\
version: 1
name: demo
sources:
  images: [photos/, s3://photos-in/cats/]
  lists:
    - 'lists/a,b.txt'
  models:
    - uri: ../weights/candy.pth
      architecture: transformer-net
      styles: ['0']
styles: ['7']
output: out
parallelism: {threads: 2}
";
        Loaded {
            spec: spec::parse(text).unwrap(),
            path: "/w/x/spec.yaml".into(),
            dir: "/w/x".into(),
            hash: String::new(),
        }
    }

    fn opts() -> DockerOptions {
        DockerOptions {
            engine: "docker".into(),
            registry: Some("kubestyle-test".into()),
            tag: Some("ci".into()),
            network: "host".into(),
            user: DockerOptions::user_for(0, 0),
        }
    }

    /// Every stage's `docker run` for the spec above, as one document: hardening, same-path
    /// mounts (the volume for all; the sources, read-only, for download only; the output for
    /// upload only), credentials by name to download and upload only.
    #[test]
    fn every_stage_runs_hardened_in_its_image() {
        let l = loaded();
        let layout = Layout {
            volume: "/w/vol".into(),
            with_logs: true,
            shards: 1,
            gpu: false,
        };
        let cmds = stage_commands(&l, &layout, [false; 4]);
        let set = |n: &str| matches!(n, "AWS_SECRET_ACCESS_KEY" | "AWS_ENDPOINT_URL" | "RUST_LOG");
        let doc: Vec<String> = cmds
            .iter()
            .map(|c| {
                let name = format!("kubestyle-demo-{}", c.stage().as_str());
                run_args(&l, c, Path::new("/w/vol"), &opts(), &name, &set).join("\n  ")
            })
            .collect();
        insta::assert_snapshot!(doc.join("\n\n"));
    }

    #[test]
    fn mounts_are_deduplicated_read_write_first() {
        let l = loaded();
        let layout = Layout {
            volume: "/w/x/out".into(),
            with_logs: false,
            shards: 1,
            gpu: false,
        };
        let cmds = stage_commands(&l, &layout, [false; 4]);
        let m = mounts(Path::new("/w/x/out"), &cmds[3]);
        let out: Vec<_> = m
            .iter()
            .filter(|m| m.path == Path::new("/w/x/out"))
            .collect();
        assert_eq!(
            out,
            vec![&Mount {
                path: "/w/x/out".into(),
                read_only: false
            }]
        );
        assert_eq!(
            mount_arg(&Mount {
                path: "/w/x/lists/a,b.txt".into(),
                read_only: true
            }),
            "type=bind,\"src=/w/x/lists/a,b.txt\",\"dst=/w/x/lists/a,b.txt\",readonly"
        );
    }

    #[test]
    fn root_runs_as_the_images_user_others_as_themselves() {
        assert_eq!(DockerOptions::user_for(0, 0), "65532:65532");
        assert_eq!(DockerOptions::user_for(1000, 100), "1000:100");
    }

    #[test]
    fn images_follow_the_spec_unless_overridden() {
        let l = loaded();
        let mut o = opts();
        assert_eq!(
            image(&l, &o, Stage::Stylize),
            "kubestyle-test/kubestyle-stylize:ci"
        );
        o.registry = None;
        o.tag = None;
        assert_eq!(
            image(&l, &o, Stage::Upload),
            format!(
                "ghcr.io/kubestyle/kubestyle-upload:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
