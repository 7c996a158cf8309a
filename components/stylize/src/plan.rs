//! Which outputs a run makes, where they go and which can be reused: pure functions of what was
//! loaded and probed (no images decoded, no network), unit-tested below.

use std::collections::HashMap;
use std::path::Path;

use image::ImageFormat;
use kubestyle_manifest::location::validate_relative_path;
use kubestyle_manifest::{Artifact, Sha256Hex, StageError, sha256_bytes};
use serde_json::{Value, json};

use crate::image_io::{self, OutFormat};
use crate::style::Style;

/// A loaded package, as planning sees it.
#[derive(Debug, Clone, Copy)]
pub struct PlanPackage<'a> {
    pub dir: &'a Path,
    pub dir_name: &'a str,
    pub weights_sha256: &'a Sha256Hex,
    pub styles: &'a [Style],
}

/// A probed image, as planning sees it.
#[derive(Debug, Clone, Copy)]
pub struct PlanImage<'a> {
    pub abs: &'a Path,
    /// Path under the output directory (keeps inputs with equal names apart).
    pub rel_out: &'a str,
    pub sha256: &'a Sha256Hex,
    /// The format its header shows.
    pub format: Option<ImageFormat>,
    /// Its longest output side (after `--max-size`).
    pub side: u32,
}

/// The options planning depends on.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions<'a> {
    /// Directory under the volume for results.
    pub out: &'a str,
    pub format: OutFormat,
    /// The stage parameters every output's item key includes.
    pub params: &'a Value,
    pub shards: u32,
    pub shard: u32,
}

/// One output: package × style × image.
#[derive(Debug, Clone)]
pub struct Job {
    /// Indices into the packages, that package's styles, and the images.
    pub pkg: usize,
    pub style: usize,
    pub img: usize,
    /// Path under the volume.
    pub rel: String,
    pub format: ImageFormat,
    /// What the output is made from (code, weights, style, image, parameters): the step cache.
    pub item_key: Sha256Hex,
    /// The previous run's output, when it was made from the same and still verifies.
    pub reuse: Option<Artifact>,
}

/// Plan every output of this shard. Refused, all named at once and before any work: outputs an
/// encoder cannot store, and two outputs that would land on one path. `previous` holds the last
/// run's outputs by path; `verifies` checks one of them on disk before it is reused.
pub fn plan(
    packages: &[PlanPackage<'_>],
    images: &[PlanImage<'_>],
    opts: &PlanOptions<'_>,
    previous: &HashMap<String, Artifact>,
    verifies: impl Fn(&str, &Artifact) -> bool,
) -> Result<Vec<Job>, StageError> {
    let ext_of = |img: &PlanImage<'_>| {
        img.abs
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("png")
            .to_string()
    };
    // Outputs an encoder cannot write (JPEG over 65,535 px, WebP over 16,383 px a side): the
    // output format depends on the image alone, not on the package or style.
    let mut too_large: Vec<String> = Vec::new();
    for img in images {
        let (format, _) = image_io::choose(opts.format, img.format, &ext_of(img));
        if let Some(limit) = image_io::max_side(format).filter(|&l| img.side > l) {
            too_large.push(format!(
                "{} would be {} px on its longest side, more than {format:?} can store \
                 ({limit} px)",
                img.abs.display(),
                img.side
            ));
        }
    }
    let mut jobs: Vec<Job> = Vec::new();
    // Every output path, planned before any work: two outputs landing on one path (`a.jpg` and
    // `a.png` with `--format png`, two packages with one directory name) are refused, all of
    // them named, rather than found by the manifest check after every forward pass.
    let mut planned: HashMap<String, usize> = Default::default();
    // (one input, the other, the first output both map to, how many outputs they share)
    let mut clashes: Vec<(String, String, String, usize)> = Vec::new();
    for (p, pkg) in packages.iter().enumerate() {
        for (s, style) in pkg.styles.iter().enumerate() {
            for (k, img) in images.iter().enumerate() {
                let (format, ext) = image_io::choose(opts.format, img.format, &ext_of(img));
                let stem_rel = img
                    .rel_out
                    .rsplit_once('.')
                    .map(|(s, _)| s)
                    .unwrap_or(img.rel_out);
                let rel = format!(
                    "{}/{}/{}/{stem_rel}.{ext}",
                    opts.out, pkg.dir_name, style.label
                );
                validate_relative_path(&rel).map_err(StageError::InputInvalid)?;
                if let Some(&first) = planned.get(&rel) {
                    let other = &jobs[first];
                    let (a, b) = if other.img != k {
                        (
                            images[other.img].abs.display().to_string(),
                            img.abs.display().to_string(),
                        )
                    } else {
                        (
                            format!("package {}", packages[other.pkg].dir.display()),
                            format!("package {}", pkg.dir.display()),
                        )
                    };
                    match clashes.iter_mut().find(|c| (&c.0, &c.1) == (&a, &b)) {
                        Some(c) => c.3 += 1,
                        None => clashes.push((a, b, rel, 1)),
                    }
                    continue;
                }
                planned.insert(rel.clone(), jobs.len());
                let mut key = json!({
                    "version": kubestyle_manifest::manifest::code_version(env!("CARGO_PKG_VERSION")),
                    "weights": pkg.weights_sha256,
                    "style": style.weights,
                    "image": img.sha256,
                    "params": opts.params,
                });
                // The controls, when they change the output (plain outputs keep their keys).
                if !style.is_plain() {
                    key["preserve_colour"] = json!(style.preserve_colour);
                    key["strength"] = json!(style.strength);
                }
                let item_key = sha256_bytes(key.to_string().as_bytes());
                let reuse = previous
                    .get(&rel)
                    .filter(|a| {
                        a.attributes.get("item_key").and_then(Value::as_str)
                            == Some(item_key.as_str())
                    })
                    .filter(|a| verifies(&rel, a))
                    .cloned();
                jobs.push(Job {
                    pkg: p,
                    style: s,
                    img: k,
                    rel,
                    format,
                    item_key,
                    reuse,
                });
            }
        }
    }
    if !too_large.is_empty() {
        return Err(StageError::InputInvalid(format!(
            "{}; use --format png or --max-size",
            too_large.join("; ")
        )));
    }
    if !clashes.is_empty() {
        let named: Vec<String> = clashes
            .iter()
            .map(|(a, b, rel, n)| {
                let more = match n - 1 {
                    0 => String::new(),
                    m => format!(" (and {m} more output{})", if m == 1 { "" } else { "s" }),
                };
                format!("{a} and {b} would both be written to {rel}{more}")
            })
            .collect();
        return Err(StageError::InputInvalid(format!(
            "outputs would overwrite each other: {}",
            named.join("; ")
        )));
    }
    // This shard's part. With at least as many images as shards, every `shards`-th image with
    // all its outputs (so each image is decoded by one shard, once for all its styles);
    // otherwise every `shards`-th output, starting at `shard`.
    if opts.shards > 1 {
        let (n, k) = (opts.shards as usize, opts.shard as usize);
        let by_image = images.len() >= n;
        jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, j)| if by_image { j.img % n == k } else { i % n == k })
            .map(|(_, j)| j)
            .collect();
        tracing::info!("shard {k} of {n}: {} outputs", jobs.len());
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn style(label: &str, weights: Vec<f32>) -> Style {
        Style {
            label: label.into(),
            weights,
            parts: vec![(label.into(), 1.0)],
            preserve_colour: false,
            strength: 1.0,
        }
    }

    struct Fixture {
        dirs: Vec<PathBuf>,
        names: Vec<String>,
        sha: Sha256Hex,
        styles: Vec<Style>,
        paths: Vec<PathBuf>,
        rels: Vec<String>,
        shas: Vec<Sha256Hex>,
    }

    impl Fixture {
        fn new(pkgs: &[&str], imgs: &[&str]) -> Fixture {
            Fixture {
                dirs: pkgs
                    .iter()
                    .map(|p| PathBuf::from("/v/models").join(p))
                    .collect(),
                names: pkgs.iter().map(|p| p.to_string()).collect(),
                sha: sha256_bytes(b"weights"),
                styles: vec![
                    style("style-00", vec![1.0, 0.0]),
                    style("style-07", vec![0.0, 1.0]),
                ],
                shas: imgs.iter().map(|i| sha256_bytes(i.as_bytes())).collect(),
                paths: imgs
                    .iter()
                    .map(|i| PathBuf::from("/v/in").join(i))
                    .collect(),
                rels: imgs.iter().map(|i| i.to_string()).collect(),
            }
        }

        fn run(
            &self,
            format: OutFormat,
            shards: (u32, u32),
            side: u32,
            previous: &HashMap<String, Artifact>,
        ) -> Result<Vec<Job>, StageError> {
            let pkgs: Vec<PlanPackage<'_>> = self
                .dirs
                .iter()
                .zip(&self.names)
                .map(|(dir, name)| PlanPackage {
                    dir,
                    dir_name: name,
                    weights_sha256: &self.sha,
                    styles: &self.styles,
                })
                .collect();
            let imgs: Vec<PlanImage<'_>> = self
                .paths
                .iter()
                .zip(&self.rels)
                .zip(&self.shas)
                .map(|((abs, rel), sha256)| PlanImage {
                    abs,
                    rel_out: rel,
                    sha256,
                    format: ImageFormat::from_path(abs).ok(),
                    side,
                })
                .collect();
            let params = json!({"p": 1});
            let opts = PlanOptions {
                out: "runs/r/styled",
                format,
                params: &params,
                shards: shards.1,
                shard: shards.0,
            };
            plan(&pkgs, &imgs, &opts, previous, |_, _| true)
        }
    }

    #[test]
    fn every_package_style_and_image_gets_one_output_keeping_the_suffix() {
        let f = Fixture::new(&["ms"], &["a.jpg", "sub/b.png"]);
        let jobs = f
            .run(OutFormat::Keep, (0, 1), 100, &HashMap::new())
            .unwrap();
        let rels: Vec<&str> = jobs.iter().map(|j| j.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "runs/r/styled/ms/style-00/a.jpg",
                "runs/r/styled/ms/style-00/sub/b.png",
                "runs/r/styled/ms/style-07/a.jpg",
                "runs/r/styled/ms/style-07/sub/b.png"
            ]
        );
        assert_eq!(jobs[0].format, ImageFormat::Jpeg);
        // Item keys differ by image content and style (not by path).
        assert_ne!(jobs[0].item_key, jobs[1].item_key);
        assert_ne!(jobs[0].item_key, jobs[2].item_key);
    }

    #[test]
    fn clashing_outputs_are_all_named_before_any_work() {
        let f = Fixture::new(&["ms"], &["a.jpg", "a.png"]);
        let e = f
            .run(OutFormat::Png, (0, 1), 100, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outputs would overwrite each other"), "{e}");
        assert!(
            e.contains("/v/in/a.jpg and /v/in/a.png would both be written to"),
            "{e}"
        );
        assert!(e.contains("(and 1 more output)"), "{e}");
    }

    #[test]
    fn outputs_an_encoder_cannot_store_are_refused() {
        let f = Fixture::new(&["ms"], &["big.jpg"]);
        let e = f
            .run(OutFormat::Keep, (0, 1), 70_000, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("70000 px on its longest side"), "{e}");
        assert!(e.contains("use --format png or --max-size"), "{e}");
        f.run(OutFormat::Png, (0, 1), 70_000, &HashMap::new())
            .unwrap();
    }

    #[test]
    fn shards_split_the_outputs_without_overlap() {
        let f = Fixture::new(&["ms"], &["a.jpg", "b.jpg", "c.jpg"]);
        let all = f
            .run(OutFormat::Keep, (0, 1), 100, &HashMap::new())
            .unwrap();
        let mut seen: Vec<String> = Vec::new();
        for k in 0..4 {
            let part = f
                .run(OutFormat::Keep, (k, 4), 100, &HashMap::new())
                .unwrap();
            seen.extend(part.into_iter().map(|j| j.rel));
        }
        seen.sort();
        let mut want: Vec<String> = all.into_iter().map(|j| j.rel).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    /// Issue #14: with at least as many images as shards, an image's outputs (every style) are
    /// all in one shard, so it is decoded once across the run; the shards split the images.
    #[test]
    fn shards_keep_each_image_whole_when_there_are_enough_images() {
        let names: Vec<String> = (0..7).map(|i| format!("i{i}.jpg")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let f = Fixture::new(&["ms"], &refs);
        let mut owner: HashMap<usize, u32> = HashMap::new();
        let mut total = 0;
        for k in 0..3 {
            let part = f
                .run(OutFormat::Keep, (k, 3), 100, &HashMap::new())
                .unwrap();
            total += part.len();
            for j in part {
                assert_eq!(*owner.entry(j.img).or_insert(k), k, "image {} split", j.img);
            }
        }
        assert_eq!(total, 7 * 2);
        assert_eq!(owner.len(), 7);
    }

    #[test]
    fn a_previous_output_is_reused_only_with_the_same_item_key() {
        let f = Fixture::new(&["ms"], &["a.jpg"]);
        let first = f
            .run(OutFormat::Keep, (0, 1), 100, &HashMap::new())
            .unwrap();
        let mut art = Artifact {
            name: first[0].rel.clone(),
            kind: kubestyle_manifest::ArtifactKind::Styled,
            path: first[0].rel.clone(),
            sha256: sha256_bytes(b"output"),
            bytes: 6,
            media_type: "image/jpeg".into(),
            source: None,
            attributes: Default::default(),
        };
        art.attributes
            .insert("item_key".into(), json!(first[0].item_key));
        let mut previous = HashMap::new();
        previous.insert(first[0].rel.clone(), art.clone());
        let again = f.run(OutFormat::Keep, (0, 1), 100, &previous).unwrap();
        assert!(again[0].reuse.is_some());
        assert!(again[1].reuse.is_none(), "another style is not reused");
        art.attributes.insert("item_key".into(), json!("other"));
        previous.insert(first[0].rel.clone(), art);
        let changed = f.run(OutFormat::Keep, (0, 1), 100, &previous).unwrap();
        assert!(changed[0].reuse.is_none());
    }
}
