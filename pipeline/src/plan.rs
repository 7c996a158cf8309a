//! Spec → the four stage invocations (typed command, environment): pure functions shared by
//! `pipeline run` (local processes) and the Kubernetes Jobs. The commands are the stages' own
//! `Args` (`kubestyle_manifest::command`), written out with `to_args()`.

use std::path::PathBuf;

use kubestyle_manifest::command::naming::{log_path, manifest_path, shard_manifest_paths};
use kubestyle_manifest::command::{StageArgs, download, package_model, stylize, upload};
use kubestyle_manifest::vocab::Device;
use kubestyle_manifest::vocab::style::qualified;

use crate::Stage;
use crate::spec::Loaded;

/// One stage's command.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCmd {
    /// The stage's arguments, typed; its binary is the stage's name.
    pub command: StageArgs,
    /// Extra environment (never credentials: those come from the caller's environment).
    pub env: Vec<(String, String)>,
}

impl StageCmd {
    pub fn stage(&self) -> Stage {
        self.command.stage()
    }

    /// The component binary.
    pub fn program(&self) -> &'static str {
        self.stage().as_str()
    }

    /// The command line after the program name.
    pub fn args(&self) -> Vec<String> {
        self.command.to_args()
    }
}

/// Where the stages see things.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The volume root as the stages see it.
    pub volume: String,
    /// Publish the stage logs saved beside the manifests (`runs/<id>/<stage>.log`).
    pub with_logs: bool,
    /// Stylize shards (an Indexed Job in a cluster; 1 locally).
    pub shards: u32,
    /// Stylize runs on GPU nodes: `--device auto` becomes `--device cuda`, so a pod without a
    /// usable GPU fails at start instead of computing on the node's CPU.
    pub gpu: bool,
}

/// The stage commands, in order. `force[i]` sets `--force` on stage `i` (download,
/// package-model, stylize, upload).
pub fn stage_commands(l: &Loaded, layout: &Layout, force: [bool; 4]) -> Vec<StageCmd> {
    let spec = &l.spec;
    let run = spec.name.as_str();
    let volume = PathBuf::from(&layout.volume);
    let run_id = Some(run.to_string());
    let forced = |s: Stage| force[s.index()];
    let transfers = spec.parallelism.transfers;

    // download: images and weights in one go.
    let download = download::Args {
        sources: spec
            .sources
            .images
            .iter()
            .chain(spec.sources.models.iter().map(|m| &m.uri))
            .map(|s| l.resolve(s))
            .collect(),
        lists: spec.sources.lists.iter().map(|s| l.resolve(s)).collect(),
        column: spec.sources.list_column.clone(),
        include: spec.sources.include.clone(),
        run_id: run_id.clone(),
        jobs: transfers,
        force: forced(Stage::Download),
        ..download::Args::new(&volume)
    };

    // package-model: every weight file download fetched; the architecture when all agree
    // (mixed ones are recognised from the tensors, and checked after packaging).
    let archs: Vec<_> = spec.sources.models.iter().map(|m| m.architecture).collect();
    let architecture = match archs.first() {
        Some(Some(a)) if archs.iter().all(|x| *x == Some(*a)) => a.as_str().to_string(),
        _ => package_model::AUTO.to_string(),
    };
    // Only the spec's model sources become models (never a weights file among the images).
    let package = package_model::Args {
        sources: spec
            .sources
            .models
            .iter()
            .map(|m| l.resolve(&m.uri))
            .collect(),
        architecture,
        run_id: run_id.clone(),
        force: forced(Stage::PackageModel),
        ..package_model::Args::new(&volume)
    };

    // stylize: each model's styles, qualified by its package name.
    let st = &spec.stylize;
    let device = match st.device_kind() {
        Ok(Device::Auto) if layout.gpu => Device::Cuda(None).to_string(),
        _ => st.device.clone(),
    };
    let stylize = stylize::Args {
        styles: l
            .model_styles()
            .into_iter()
            .flat_map(|(pkg, styles)| styles.into_iter().map(move |s| qualified(&pkg, &s)))
            .collect(),
        preserve_colour: st.preserve_colour,
        strength: st.strength,
        max_size: st.max_size,
        max_pixels: st.max_pixels.unwrap_or(stylize::DEFAULT_MAX_PIXELS),
        format: st.format,
        device,
        backend: st.backend.clone(),
        shards: layout.shards.max(1),
        run_id,
        force: forced(Stage::Stylize),
        ..stylize::Args::new(&volume)
    };
    let mut stylize_env = Vec::new();
    if let Some(t) = spec.parallelism.threads {
        stylize_env.push(("RAYON_NUM_THREADS".to_string(), t.to_string()));
    }

    // upload: the styled images, every manifest, the logs, results and contact sheet.
    let manifest = |stage: Stage| manifest_path(&volume, run, stage.as_str());
    let logs: Vec<PathBuf> = if layout.with_logs {
        [Stage::Download, Stage::PackageModel, Stage::Stylize]
            .into_iter()
            .map(|s| log_path(&volume, run, s))
            .collect()
    } else {
        Vec::new()
    };
    let mut publish = upload::PublishArgs::new(
        &volume,
        shard_manifest_paths(&volume, run, layout.shards),
        l.output(),
    );
    // The packages are published with their outputs when the spec asks for it (a server can
    // then load them from the output), else recorded like the download.
    publish.records = vec![manifest(Stage::Download)];
    if spec.publish_models {
        publish.manifests.push(manifest(Stage::PackageModel));
    } else {
        publish.records.push(manifest(Stage::PackageModel));
    }
    publish.logs = logs;
    // The run's prefix belongs to the run: a changed input replaces its old results.
    publish.transfer.overwrite = true;
    publish.transfer.jobs = transfers;
    publish.force = forced(Stage::Upload);
    publish.anonymize = spec.anonymize;

    vec![
        StageCmd {
            command: StageArgs::Download(download),
            env: vec![],
        },
        StageCmd {
            command: StageArgs::PackageModel(package),
            env: vec![],
        },
        StageCmd {
            command: StageArgs::Stylize(stylize),
            env: stylize_env,
        },
        StageCmd {
            command: StageArgs::Upload(upload::Cli::publish(publish)),
            env: vec![],
        },
    ]
}

/// The download command of `cmds` (the first).
pub fn download_command(cmds: &[StageCmd]) -> Option<&download::Args> {
    cmds.iter().find_map(|c| match &c.command {
        StageArgs::Download(a) => Some(a),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    #[test]
    fn commands_follow_the_spec() {
        let text = "\
version: 1
name: demo
sources:
  images: [photos/, s3://photos-in/cats/]
  include: ['*.jpg']
  models:
    - uri: s3://models/multistyle26.onnx
    - uri: ../weights/candy.pth
      architecture: transformer-net
      styles: ['0']
styles: ['7', '3:0.5,12:0.5~preserve-colour=false']
output: out
stylize: {max_size: 256, preserve_colour: true, strength: 0.75}
parallelism: {transfers: 8, threads: 2}
";
        let l = Loaded {
            spec: spec::parse(text).unwrap(),
            path: "/w/x/spec.yaml".into(),
            dir: "/w/x".into(),
            hash: String::new(),
        };
        let layout = Layout {
            volume: "/vol".into(),
            with_logs: true,
            shards: 1,
            gpu: false,
        };
        let cmds = stage_commands(&l, &layout, [false, false, true, true]);
        let line = |i: usize| cmds[i].args().join(" ");
        assert_eq!(
            line(0),
            "--volume /vol --run-id demo --jobs 8 /w/x/photos/ s3://photos-in/cats/ s3://models/multistyle26.onnx /w/weights/candy.pth --include *.jpg"
        );
        // Mixed architectures: recognised from the tensors, checked after packaging. Only the
        // spec's model sources are packaged (#21: never a weights file among the photos).
        assert_eq!(
            line(1),
            "--volume /vol --run-id demo --source s3://models/multistyle26.onnx --source /w/weights/candy.pth"
        );
        assert_eq!(
            line(2),
            "--volume /vol --run-id demo --style multistyle26/7 --style multistyle26/3:0.5,12:0.5~preserve-colour=false --style candy/0 --preserve-colour --strength 0.75 --max-size 256 --format keep --device auto --backend auto --force"
        );
        assert_eq!(
            cmds[2].env,
            vec![("RAYON_NUM_THREADS".to_string(), "2".to_string())]
        );
        assert_eq!(
            line(3),
            "publish --volume /vol --manifest /vol/runs/demo/stylize.manifest.json \
             --record /vol/runs/demo/download.manifest.json \
             --record /vol/runs/demo/package-model.manifest.json \
             --log /vol/runs/demo/download.log --log /vol/runs/demo/package-model.log \
             --log /vol/runs/demo/stylize.log --to /w/x/out --overwrite --jobs 8 --force"
        );
    }

    /// What each stage parses from the command line it is given is the command the plan built
    /// (its S3 settings completed from the environment, as the stage's own are).
    #[test]
    fn stages_parse_back_the_planned_commands() {
        use clap::Parser;
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/example-spec.yaml"
        );
        let l = spec::load(std::path::Path::new(p)).unwrap();
        for (layout, force) in [
            (
                Layout {
                    volume: "/data".into(),
                    with_logs: false,
                    shards: 3,
                    gpu: true,
                },
                [true; 4],
            ),
            (
                Layout {
                    volume: "/vol/".into(),
                    with_logs: true,
                    shards: 1,
                    gpu: false,
                },
                [false; 4],
            ),
        ] {
            for cmd in stage_commands(&l, &layout, force) {
                let argv = std::iter::once(cmd.program().to_string()).chain(cmd.args());
                let (back, want) = match &cmd.command {
                    StageArgs::Download(a) => {
                        let mut want = a.clone();
                        want.s3 = want.s3.with_env().unwrap();
                        (
                            StageArgs::Download(download::Args::try_parse_from(argv).unwrap()),
                            StageArgs::Download(want),
                        )
                    }
                    StageArgs::PackageModel(_) => (
                        StageArgs::PackageModel(package_model::Args::try_parse_from(argv).unwrap()),
                        cmd.command.clone(),
                    ),
                    StageArgs::Stylize(_) => (
                        StageArgs::Stylize(stylize::Args::try_parse_from(argv).unwrap()),
                        cmd.command.clone(),
                    ),
                    StageArgs::Upload(u) => {
                        let mut want = u.clone();
                        if let upload::Command::Publish(p) = &mut want.command {
                            p.s3 = p.s3.with_env().unwrap();
                        }
                        (
                            StageArgs::Upload(upload::Cli::try_parse_from(argv).unwrap()),
                            StageArgs::Upload(want),
                        )
                    }
                };
                assert_eq!(back, want, "{} {:?}", cmd.program(), cmd.args());
            }
        }
    }
}
