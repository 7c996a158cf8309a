//! The `package-model` stage.
//!
//! Reads style-transfer weights — PyTorch `.pth` (zip and legacy pickle formats), `.safetensors`
//! or the MultiStyle26 ONNX graph — checks that every tensor the architecture needs is present
//! with the right shape and nothing unexpected remains (legacy InstanceNorm running statistics
//! are dropped) — from the file's header, before any tensor data is read, with allocation
//! bounded by `--max-weight-bytes` and the architecture's size — and writes a package
//! directory: `model.bpk` (burnpack weights) and `model.json` (the model card: architecture,
//! style names, parameter count, source URI and SHA-256). The stage manifest is written last.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::manifest::{
    manifest_path, new_run_id, open_volume, previous_outputs, previous_outputs_at, validate_run_id,
};
use kubestyle_manifest::vocab::ArchitectureName;
use kubestyle_manifest::{Artifact, ArtifactKind, Manifest, StageError, StageRun, sha256_file};
use kubestyle_models::package::{ModelCard, PACKAGE_FORMAT, SourceInfo, WeightsInfo};
use kubestyle_models::weights::{CheckedWeights, ReadLimits, read_weights_for};
use kubestyle_models::{Architecture, Network, write_package};
use serde_json::{Map, Value, json};

pub const STAGE: &str = kubestyle_manifest::command::package_model::NAME;

/// The command line (defined with the other stages' in the contract crate, where the pipeline
/// builds it).
pub use kubestyle_manifest::command::package_model::Args;

#[derive(Debug)]
pub struct Summary {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    pub cards: Vec<ModelCard>,
}

/// One weight file to package.
#[derive(Debug, Clone)]
struct Input {
    path: PathBuf,
    /// What to record as its origin (the download source when known).
    uri: String,
    /// Input artifact when the file is on the volume.
    artifact: Option<Artifact>,
}

pub fn run(args: Args) -> Result<Summary, StageError> {
    let volume = open_volume(&args.volume)?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    validate_run_id(&run_id)?;
    let stage = StageRun::start(STAGE, env!("CARGO_PKG_VERSION"), run_id.clone());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| kubestyle_manifest::manifest::run_data_dir(&run_id, "models"));
    validate_relative_path(&out).map_err(|e| StageError::Usage(format!("--out: {e}")))?;
    let forced_arch = match args.architecture.as_str() {
        kubestyle_manifest::command::package_model::AUTO => None,
        s => Some(Architecture::parse(s).ok_or_else(|| {
            let names: Vec<&str> = ArchitectureName::ALL.map(ArchitectureName::as_str).into();
            StageError::Usage(format!(
                "unknown --architecture {s:?} (auto, {})",
                names.join(", ")
            ))
        })?),
    };
    let inputs = gather_inputs(&args, &volume, &run_id)?;
    if inputs.len() > 1 && !args.style_names.is_empty() {
        return Err(StageError::Usage(
            "--style-names applies to a single weight file".into(),
        ));
    }

    let manifest_path = args
        .manifest
        .clone()
        .unwrap_or_else(|| manifest_path(&volume, &run_id, STAGE));
    let params = json!({
        "architecture": args.architecture,
        "style_names": args.style_names,
        "out": out,
    });
    let mut digests = Vec::new();
    for i in &inputs {
        let sha = match &i.artifact {
            Some(a) => a.sha256.clone(),
            None => sha256_file(&i.path)?.0,
        };
        digests.push(format!("{}@{sha}", stem(&i.path)));
    }
    let key = stage.key(&params, &digests);
    if !args.force
        && let Some(manifest) = stage.reusable(&manifest_path, &volume, &key)
    {
        let mut cards = Vec::new();
        for a in manifest
            .outputs
            .iter()
            .filter(|a| a.kind == ArtifactKind::Package)
        {
            if let Some(dir) = a.abs_path(&volume).parent() {
                cards.push(kubestyle_models::package::read_card(dir)?);
            }
        }
        return Ok(Summary {
            manifest_path,
            manifest,
            cards,
        });
    }

    // Read and check every input before writing any package.
    let device = Device::flex();
    let limits = ReadLimits {
        max_weight_bytes: args.max_weight_bytes,
    };
    let mut prepared = Vec::new();
    for input in &inputs {
        // Header first (names, dtypes, shapes), checked against the architecture; only then
        // the data of the expected tensors (see kubestyle_models::weights).
        let CheckedWeights {
            architecture: arch,
            format,
            mut map,
            dropped,
        } = read_weights_for(&input.path, forced_arch, &limits)?;
        let stem = stem(&input.path);
        let styles = style_names(arch, &stem, &args.style_names)?;
        let net = Network::from_checked(arch, &mut map, &device);
        let (sha256, _) = sha256_file(&input.path)?;
        let card = ModelCard {
            format: PACKAGE_FORMAT.into(),
            architecture: arch,
            styles,
            parameters: net.num_params() as u64,
            source: SourceInfo {
                uri: input.uri.clone(),
                sha256,
                format,
            },
            weights: WeightsInfo {
                file: String::new(),
                sha256: kubestyle_manifest::sha256_bytes(b""),
                bytes: 0,
            },
            dropped_keys: dropped,
            kubestyle_version: env!("CARGO_PKG_VERSION").into(),
        };
        prepared.push((stem, net, card));
    }
    let mut stems: Vec<&str> = prepared.iter().map(|(s, _, _)| s.as_str()).collect();
    stems.sort();
    if let Some(w) = stems.windows(2).find(|w| w[0] == w[1]) {
        return Err(StageError::InputInvalid(format!(
            "two weight files would both be packaged as {:?}",
            w[0]
        )));
    }

    let mut outputs = Vec::new();
    let mut cards = Vec::new();
    for (stem, net, card) in prepared {
        let rel_dir = format!("{out}/{stem}");
        let card = write_package(&volume.join(&rel_dir), &net, card)?;
        tracing::info!(
            "packaged {} ({}, {} styles, {} parameters, from {}) -> {rel_dir}",
            card.source.uri,
            card.architecture.name(),
            card.styles.len(),
            card.parameters,
            card.source.format.name()
        );
        let mut attrs = Map::new();
        attrs.insert(
            "architecture".into(),
            Value::String(card.architecture.name().into()),
        );
        attrs.insert("styles".into(), json!(card.styles));
        attrs.insert("package".into(), Value::String(rel_dir.clone()));
        for (file, kind) in [
            ("model.bpk", ArtifactKind::Model),
            ("model.json", ArtifactKind::Package),
        ] {
            let rel = format!("{rel_dir}/{file}");
            let mut a = Artifact::from_file(&volume, &rel, format!("{stem}/{file}"), kind)?;
            a.attributes = attrs.clone();
            outputs.push(a);
        }
        cards.push(card);
    }
    let manifest = stage.finish(
        params,
        &digests,
        inputs.into_iter().filter_map(|i| i.artifact).collect(),
        outputs,
    );
    manifest.write(&manifest_path)?;
    Ok(Summary {
        manifest_path,
        manifest,
        cards,
    })
}

fn stem(p: &Path) -> String {
    kubestyle_manifest::manifest::package_name(p)
}

fn style_names(
    arch: Architecture,
    stem: &str,
    given: &[String],
) -> Result<Vec<String>, StageError> {
    let n = arch.num_styles();
    if !given.is_empty() {
        if given.len() != n {
            return Err(StageError::Usage(format!(
                "--style-names: {} names for a {} network with {n} styles",
                given.len(),
                arch.name()
            )));
        }
        return Ok(given.to_vec());
    }
    Ok(match arch {
        Architecture::TransformerNet => vec![stem.to_string()],
        Architecture::MultiStyle26 => (0..n).map(|i| format!("style-{i:02}")).collect(),
    })
}

fn gather_inputs(args: &Args, volume: &Path, run_id: &str) -> Result<Vec<Input>, StageError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for p in &args.weights {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.clone())
        };
        match abs.canonicalize() {
            Ok(c) => {
                let artifact = match c.strip_prefix(volume) {
                    Ok(rel) => {
                        let rel = rel.to_string_lossy().into_owned();
                        Some(Artifact::from_file(
                            volume,
                            &rel,
                            rel.clone(),
                            ArtifactKind::Model,
                        )?)
                    }
                    Err(_) => None,
                };
                out.push(Input {
                    uri: p.display().to_string(),
                    path: c,
                    artifact,
                });
            }
            Err(_) => missing.push(format!("{} does not exist", p.display())),
        }
    }
    if !missing.is_empty() {
        return Err(StageError::InputMissing(missing));
    }
    if !args.weights.is_empty() {
        if !args.sources.is_empty() {
            return Err(StageError::Usage(
                "--source selects from a manifest: give it or WEIGHTS, not both".into(),
            ));
        }
        return Ok(out);
    }
    let arts = match &args.from_manifest {
        Some(p) => previous_outputs_at(p, volume, ArtifactKind::Model)?,
        None => previous_outputs(
            volume,
            run_id,
            kubestyle_manifest::command::download::NAME,
            ArtifactKind::Model,
            "weight files",
        )?,
    };
    // Models come only from where the command line says: with `--source`, only the artifacts
    // fetched from those sources, each of which must be there.
    let arts = if args.sources.is_empty() {
        arts
    } else {
        // download records a local source by its canonical path.
        let wanted: Vec<String> = args
            .sources
            .iter()
            .map(|w| {
                if w.starts_with("s3://") {
                    return w.clone();
                }
                let p = w.strip_prefix("file://").unwrap_or(w);
                std::fs::canonicalize(p)
                    .map(|c| c.display().to_string())
                    .unwrap_or_else(|_| p.to_string())
            })
            .collect();
        let (kept, left): (Vec<Artifact>, Vec<Artifact>) = arts.into_iter().partition(|a| {
            a.source
                .as_ref()
                .is_some_and(|s| wanted.iter().any(|w| w == s))
        });
        for a in &left {
            tracing::warn!(
                "{}: a weights file from {}, which no --source names: not packaged",
                a.path,
                a.source.as_deref().unwrap_or("an unknown source")
            );
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !kept.iter().any(|a| a.source.as_ref() == Some(*w)))
            .map(|w| format!("no model file from {w} in the download manifest"))
            .collect();
        if !missing.is_empty() {
            return Err(StageError::InputMissing(missing));
        }
        kept
    };
    for a in arts {
        out.push(Input {
            path: a.abs_path(volume),
            uri: a.source.clone().unwrap_or_else(|| a.path.clone()),
            artifact: Some(a),
        });
    }
    if out.is_empty() {
        return Err(StageError::InputMissing(vec![
            "the download manifest lists no model files".into(),
        ]));
    }
    Ok(out)
}
