//! Spec → the four stage invocations (program, arguments, environment): pure functions shared
//! by `pipeline run` (local processes) and the Kubernetes Jobs.

use crate::spec::Loaded;
use crate::{STAGES, Stage};

/// One stage's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCmd {
    pub stage: Stage,
    /// The component binary.
    pub program: &'static str,
    pub args: Vec<String>,
    /// Extra environment (never credentials: those come from the caller's environment).
    pub env: Vec<(String, String)>,
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

impl Layout {
    fn run_file(&self, run_id: &str, name: &str) -> String {
        format!("{}/runs/{run_id}/{name}", self.volume.trim_end_matches('/'))
    }
}

/// The stage commands, in order. `force[i]` adds `--force` to stage `i` (download,
/// package-model, stylize, upload).
pub fn stage_commands(l: &Loaded, layout: &Layout, force: [bool; 4]) -> Vec<StageCmd> {
    let spec = &l.spec;
    let run = spec.name.as_str();
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--volume".into(),
            layout.volume.clone(),
            "--run-id".into(),
            run.into(),
        ]);
        v
    };
    let transfers = spec.parallelism.transfers.to_string();

    // download: images and weights in one go.
    let mut download = common(&[]);
    download.extend(["--jobs".into(), transfers.clone()]);
    for s in &spec.sources.images {
        download.push(l.resolve(s));
    }
    for m in &spec.sources.models {
        download.push(l.resolve(&m.uri));
    }
    for list in &spec.sources.lists {
        download.extend(["--list".into(), l.resolve(list)]);
    }
    if let Some(c) = &spec.sources.list_column {
        download.extend(["--column".into(), c.clone()]);
    }
    for g in &spec.sources.include {
        download.extend(["--include".into(), g.clone()]);
    }

    // package-model: every weight file download fetched.
    let mut package = common(&[]);
    let archs: Vec<_> = spec.sources.models.iter().map(|m| m.architecture).collect();
    if let Some(Some(a)) = archs.first()
        && archs.iter().all(|x| *x == Some(*a))
    {
        package.extend(["--architecture".into(), a.as_str().into()]);
    }

    // stylize: each model's styles, qualified by its package name.
    let mut stylize = common(&[]);
    for (pkg, styles) in l.model_styles() {
        for s in styles {
            stylize.extend(["--style".into(), format!("{pkg}/{s}")]);
        }
    }
    let st = &spec.stylize;
    if let Some(m) = st.max_size {
        stylize.extend(["--max-size".into(), m.to_string()]);
    }
    if let Some(m) = st.max_pixels {
        stylize.extend(["--max-pixels".into(), m.to_string()]);
    }
    stylize.extend([
        "--format".into(),
        st.format.as_str().into(),
        "--device".into(),
        if layout.gpu && st.device == "auto" {
            "cuda".into()
        } else {
            st.device.clone()
        },
        "--backend".into(),
        st.backend.clone(),
    ]);
    if layout.shards > 1 {
        stylize.extend(["--shards".into(), layout.shards.to_string()]);
    }
    let mut stylize_env = Vec::new();
    if let Some(t) = spec.parallelism.threads {
        stylize_env.push(("RAYON_NUM_THREADS".to_string(), t.to_string()));
    }

    // upload: the styled images, every manifest, the logs, results and contact sheet.
    let mut upload: Vec<String> = vec!["publish".into(), "--volume".into(), layout.volume.clone()];
    if layout.shards > 1 {
        for i in 0..layout.shards {
            upload.extend([
                "--manifest".into(),
                layout.run_file(
                    run,
                    &format!("stylize-{i}-of-{}.manifest.json", layout.shards),
                ),
            ]);
        }
    } else {
        upload.extend([
            "--manifest".into(),
            layout.run_file(run, "stylize.manifest.json"),
        ]);
    }
    upload.extend([
        "--record".into(),
        layout.run_file(run, "download.manifest.json"),
        "--record".into(),
        layout.run_file(run, "package-model.manifest.json"),
    ]);
    if layout.with_logs {
        for stage in &STAGES[..3] {
            upload.extend([
                "--log".into(),
                layout.run_file(run, &format!("{stage}.log")),
            ]);
        }
    }
    upload.extend([
        "--to".into(),
        l.output(),
        // The run's prefix belongs to the run: a changed input replaces its old results.
        "--overwrite".into(),
        "--jobs".into(),
        transfers,
    ]);

    let mut cmds = vec![
        StageCmd {
            stage: Stage::Download,
            program: "download",
            args: download,
            env: vec![],
        },
        StageCmd {
            stage: Stage::PackageModel,
            program: "package-model",
            args: package,
            env: vec![],
        },
        StageCmd {
            stage: Stage::Stylize,
            program: "stylize",
            args: stylize,
            env: stylize_env,
        },
        StageCmd {
            stage: Stage::Upload,
            program: "upload",
            args: upload,
            env: vec![],
        },
    ];
    for (c, f) in cmds.iter_mut().zip(force) {
        if f {
            c.args.push("--force".into());
        }
    }
    cmds
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
styles: ['7', '3:0.5,12:0.5']
output: out
stylize: {max_size: 256}
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
        let line = |i: usize| cmds[i].args.join(" ");
        assert_eq!(
            line(0),
            "--volume /vol --run-id demo --jobs 8 /w/x/photos/ s3://photos-in/cats/ s3://models/multistyle26.onnx /w/weights/candy.pth --include *.jpg"
        );
        // Mixed architectures: recognised from the tensors, checked after packaging.
        assert_eq!(line(1), "--volume /vol --run-id demo");
        assert_eq!(
            line(2),
            "--volume /vol --run-id demo --style multistyle26/7 --style multistyle26/3:0.5,12:0.5 --style candy/0 --max-size 256 --format keep --device auto --backend auto --force"
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
}
