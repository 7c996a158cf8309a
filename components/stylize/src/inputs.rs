//! What a run reads: the model packages (from `--package` or package-model's manifest) and the
//! images (from `--image` or download's manifest), loaded and checked before any work.

use super::*;
use kubestyle_manifest::vocab::style::split_package;

/// One image to stylise.
#[derive(Debug, Clone)]
pub(crate) struct ImageInput {
    pub(crate) abs: PathBuf,
    /// Path under the output directory (keeps inputs with equal names apart).
    pub(crate) rel_out: String,
    pub(crate) sha256: Sha256Hex,
    pub(crate) artifact: Option<Artifact>,
}

impl ImageInput {
    /// What the outputs' `input` attribute says: its path under the volume, or the path as
    /// given (`--image` outside a manifest).
    pub(crate) fn input_name(&self) -> String {
        self.artifact
            .as_ref()
            .map(|a| a.path.clone())
            .unwrap_or_else(|| self.abs.display().to_string())
    }
}

pub(crate) struct Loaded {
    pub(crate) dir: PathBuf,
    pub(crate) dir_name: String,
    pub(crate) card: ModelCard,
    pub(crate) net: Network,
    /// The same weights laid out for the fused CPU kernels, when those run.
    pub(crate) fused: Option<FusedNet>,
    pub(crate) styles: Vec<Style>,
    pub(crate) artifact: Vec<Artifact>,
}

pub(crate) fn load_packages(
    args: &Args,
    volume: &Path,
    run_id: &str,
    compute: &Compute,
) -> Result<Vec<Loaded>, StageError> {
    let mut dirs: Vec<(PathBuf, Vec<Artifact>)> = Vec::new();
    // `--preserve-colour` / `--strength`: for every style that does not set its own.
    let defaults = kubestyle_manifest::vocab::style::Controls {
        preserve_colour: args.preserve_colour.then_some(true),
        strength: args.strength,
    };
    if args.packages.is_empty() {
        let mpath = manifest_path(
            volume,
            run_id,
            kubestyle_manifest::command::package_model::NAME,
        );
        let m = Manifest::read(&mpath, volume).map_err(|e| match e {
            StageError::InputMissing(_) => StageError::Usage(format!(
                "no --package given and no package-model manifest at {}",
                mpath.display()
            )),
            other => other,
        })?;
        for a in m.outputs {
            a.verify(volume)?;
            let Some(dir) = a
                .attributes
                .get("package")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            // The manifest names a directory to load weights from: only one inside the volume.
            if let Err(e) = validate_relative_path(&dir) {
                return Err(StageError::InputInvalid(format!(
                    "{}: artifact {} names package {dir:?}: {e}",
                    mpath.display(),
                    a.path
                )));
            }
            match dirs.iter_mut().find(|(d, _)| *d == volume.join(&dir)) {
                Some((_, arts)) => arts.push(a),
                None => dirs.push((volume.join(&dir), vec![a])),
            }
        }
    } else {
        for p in &args.packages {
            dirs.push((p.clone(), vec![]));
        }
    }
    let mut out = Vec::new();
    for (dir, artifact) in dirs {
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let Some(specs) = styles_for(&dir_name, &args.styles) else {
            tracing::warn!(
                "package {dir_name}: no --style names it: not run (a package runs only with \
                 the styles asked for)"
            );
            continue;
        };
        let (card, net) = load_package(&dir, &compute.device)?;
        // Style errors are input errors; they say which package they concern.
        let in_package = |e: StageError| e.context(format!("package {}", dir.display()));
        let given = specs
            .iter()
            .map(|(given, s)| {
                parse_style_with(s, &card.styles, defaults).map(|st| (given.clone(), st))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_package)?;
        // The same style twice would be computed twice and written to one place (or, under
        // another label, as two identical files): done once, and said so.
        let (styles, repeats) = style::distinct_styles(given).map_err(in_package)?;
        for (spec, kept) in repeats {
            tracing::warn!(
                "package {dir_name}: --style {spec:?} is the same style as --style {kept:?}: \
                 done once"
            );
        }
        let fused = compute.fused.then(|| FusedNet::new(&net));
        out.push(Loaded {
            dir: dir.clone(),
            dir_name,
            card,
            net,
            fused,
            styles,
            artifact,
        });
    }
    if out.is_empty() {
        return Err(StageError::InputMissing(vec![
            "no model packages (or none a --style names)".into(),
        ]));
    }
    for spec in &args.styles {
        if let Some((pkg, _)) = split_package(spec)
            && !out.iter().any(|l| l.dir_name == pkg)
        {
            let have: Vec<&str> = out.iter().map(|l| l.dir_name.as_str()).collect();
            return Err(StageError::Usage(format!(
                "--style {spec:?}: no package named {pkg:?} (packages: {})",
                have.join(", ")
            )));
        }
    }
    Ok(out)
}

pub(crate) fn gather_images(
    args: &Args,
    volume: &Path,
    run_id: &str,
) -> Result<Vec<ImageInput>, StageError> {
    let mut out = Vec::new();
    if args.images.is_empty() {
        for a in previous_outputs(
            volume,
            run_id,
            kubestyle_manifest::command::download::NAME,
            ArtifactKind::Image,
            "--image",
        )? {
            // Below download's directory: the run's own (`runs/<run>/inputs/`) or `inputs/`.
            let own = format!(
                "{}/",
                kubestyle_manifest::manifest::run_data_dir(run_id, "inputs")
            );
            let rel_out = a
                .path
                .strip_prefix(own.as_str())
                .or_else(|| a.path.strip_prefix("inputs/"))
                .unwrap_or(&a.path)
                .to_string();
            out.push(ImageInput {
                abs: a.abs_path(volume),
                rel_out,
                sha256: a.sha256.clone(),
                artifact: Some(a),
            });
        }
    } else {
        let mut missing = Vec::new();
        for p in &args.images {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    for rel in kubestyle_manifest::files::walk_files(p)
                        .map_err(|e| StageError::io(p, e))?
                    {
                        if ArtifactKind::guess(&rel) == ArtifactKind::Image {
                            let abs = p.join(&rel);
                            out.push(ImageInput {
                                sha256: sha256_file(&abs)?.0,
                                abs,
                                rel_out: rel,
                                artifact: None,
                            });
                        }
                    }
                }
                Ok(_) => {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    out.push(ImageInput {
                        sha256: sha256_file(p)?.0,
                        abs: p.clone(),
                        rel_out: name,
                        artifact: None,
                    });
                }
                Err(_) => missing.push(format!("{} does not exist", p.display())),
            }
        }
        if !missing.is_empty() {
            return Err(StageError::InputMissing(missing));
        }
        let mut names: Vec<&str> = out.iter().map(|i| i.rel_out.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StageError::InputInvalid(format!(
                "two input images are both named {:?}",
                w[0]
            )));
        }
    }
    if out.is_empty() {
        return Err(StageError::InputMissing(vec!["no input images".into()]));
    }
    Ok(out)
}

/// The `--style` values that apply to package `dir_name`: (the value as given, the spec for
/// this package). `None` when `--style` values are given and none applies to it (each names
/// another package): that package is not run. Without any `--style`, every package runs its
/// style 0.
fn styles_for(dir_name: &str, styles: &[String]) -> Option<Vec<(String, String)>> {
    if styles.is_empty() {
        return Some(vec![("0".into(), "0".into())]);
    }
    let specs: Vec<(String, String)> = styles
        .iter()
        .filter_map(|s| match split_package(s) {
            Some((pkg, spec)) => (pkg == dir_name).then(|| (s.clone(), spec.to_string())),
            None => Some((s.clone(), s.clone())),
        })
        .collect();
    (!specs.is_empty()).then_some(specs)
}

#[cfg(test)]
mod style_selection {
    use super::styles_for;

    /// Promise: a package runs only with the styles asked for: one that no `--style` names
    /// (every value qualified with another package) is not run at all, never with style 0.
    #[test]
    fn a_package_no_style_names_is_not_run() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(styles_for("evil", &s(&["multistyle26/7", "candy/0"])), None);
        assert_eq!(
            styles_for("candy", &s(&["multistyle26/7", "candy/0"])),
            Some(vec![("candy/0".into(), "0".into())])
        );
        // Unqualified values apply to every package; none at all means style 0 of each.
        assert_eq!(
            styles_for("any", &s(&["3"])),
            Some(vec![("3".into(), "3".into())])
        );
        assert_eq!(styles_for("any", &[]), Some(vec![("0".into(), "0".into())]));
    }
}
