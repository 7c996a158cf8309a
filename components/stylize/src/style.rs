//! `--style` specs: an index (`7`), a name (`style-07`, `candy`), or a blend
//! (`3:0.5,12:0.5`, names allowed) of a package's styles. The grammar is the spec's
//! (`kubestyle_manifest::vocab::style`); here a spec is resolved against a package's style
//! names, and a blend may give a style weight 0 as long as one weight is positive. A style's
//! controls (`~preserve-colour`, `~strength=S`) are applied after the forward pass
//! (`colour.rs`) and named in its label.

use kubestyle_manifest::StageError;
use kubestyle_manifest::vocab::style::{
    Controls, StyleRef, blend_items, controls_label, is_blend, split_controls, weight,
};

/// A resolved style: weights over the package's styles, its controls and a path-safe label.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    pub label: String,
    pub weights: Vec<f32>,
    /// (style name, weight) as given, for the manifest.
    pub parts: Vec<(String, f32)>,
    /// Keep the photo's colours (its chrominance with the stylised luminance).
    pub preserve_colour: bool,
    /// 0 = the photo, 1 = the network's output.
    pub strength: f32,
}

impl Style {
    /// Whether the output is the network's own (no control changes it).
    pub fn is_plain(&self) -> bool {
        !self.preserve_colour && self.strength == 1.0
    }
}

fn resolve_one(token: &str, names: &[String]) -> Result<usize, String> {
    match StyleRef::lex(token) {
        StyleRef::Index(i) if i < names.len() => Ok(i),
        StyleRef::Index(i) => Err(format!(
            "style index {i} is out of range (0 to {})",
            names.len() - 1
        )),
        StyleRef::Name(_) => names.iter().position(|n| n == token).ok_or_else(|| {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            format!(
                "unknown style {token:?} (styles: {}{})",
                shown.join(", "),
                if names.len() > 8 { ", …" } else { "" }
            )
        }),
    }
}

/// Parse one `--style` value against a package's style names (no default controls).
pub fn parse_style(spec: &str, names: &[String]) -> Result<Style, StageError> {
    parse_style_with(spec, names, Controls::default())
}

/// Parse one `--style` value against a package's style names; the controls it does not set
/// come from `defaults` (`--preserve-colour`, `--strength`).
pub fn parse_style_with(
    spec: &str,
    names: &[String],
    defaults: Controls,
) -> Result<Style, StageError> {
    let bad = |m: String| StageError::InputInvalid(format!("--style {spec:?}: {m}"));
    let (base, controls) = split_controls(spec.trim()).map_err(bad)?;
    let controls = controls.or(defaults);
    let (preserve_colour, strength) = (
        controls.preserve_colour.unwrap_or(false),
        controls.strength.unwrap_or(1.0),
    );
    let mut style = parse_base(spec, base, names)?;
    style.preserve_colour = preserve_colour;
    style.strength = strength;
    style
        .label
        .push_str(&controls_label(preserve_colour, strength));
    Ok(style)
}

/// The style before its controls: `base` is `spec` without them.
fn parse_base(spec: &str, base: &str, names: &[String]) -> Result<Style, StageError> {
    let bad = |m: String| StageError::InputInvalid(format!("--style {spec:?}: {m}"));
    let spec_t = base.trim();
    if spec_t.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut weights = vec![0.0f32; names.len()];
    let mut parts = Vec::new();
    if !is_blend(spec_t) {
        let i = resolve_one(spec_t, names).map_err(bad)?;
        weights[i] = 1.0;
        return Ok(Style {
            label: names[i].clone(),
            weights,
            parts: vec![(names[i].clone(), 1.0)],
            preserve_colour: false,
            strength: 1.0,
        });
    }
    for item in blend_items(spec_t) {
        let (tok, w) = item.map_err(bad)?;
        let i = resolve_one(tok.trim(), names).map_err(bad)?;
        let w: f32 = weight(w).ok_or_else(|| bad(format!("weight {w:?} is not a number")))?;
        if !w.is_finite() || w < 0.0 {
            return Err(bad(format!("weight {w} must be a non-negative number")));
        }
        weights[i] += w;
        parts.push((names[i].clone(), w));
    }
    let sum: f32 = weights.iter().sum();
    if sum <= 0.0 {
        return Err(bad("weights are all zero".into()));
    }
    let label = parts
        .iter()
        .map(|(n, w)| format!("{n}@{:.2}", w / sum))
        .collect::<Vec<_>>()
        .join("+");
    Ok(Style {
        label,
        weights,
        parts,
        preserve_colour: false,
        strength: 1.0,
    })
}

/// Whether two styles are the same blend with the same controls: equal weights once normalised
/// (to within rounding).
pub fn same_blend(a: &Style, b: &Style) -> bool {
    if (a.preserve_colour, a.strength) != (b.preserve_colour, b.strength) {
        return false;
    }
    let norm = |w: &[f32]| {
        let sum: f32 = w.iter().sum();
        w.iter().map(|x| x / sum).collect::<Vec<_>>()
    };
    a.weights.len() == b.weights.len()
        && norm(&a.weights)
            .iter()
            .zip(norm(&b.weights))
            .all(|(x, y)| (x - y).abs() <= 1e-6)
}

/// Specs dropped as repeats: `(spec, the earlier spec giving the same blend)`.
pub type Repeats = Vec<(String, String)>;

/// The styles `given` (`(spec, style)`, in order), each blend once: a spec that resolves to a
/// blend given before (`7` after `style-07`, `12:1,3:1` after `3:0.5,12:0.5`) is dropped and
/// listed in the [`Repeats`]. Two different blends with the same label would be written to the
/// same place (`3:0.5,12:0.5` and `3:0.501,12:0.499` are both `style-03@0.50+style-12@0.50`):
/// refused.
pub fn distinct_styles(given: Vec<(String, Style)>) -> Result<(Vec<Style>, Repeats), StageError> {
    let mut kept: Vec<(String, Style)> = Vec::new();
    let mut repeats = Vec::new();
    for (spec, style) in given {
        if let Some((first, _)) = kept.iter().find(|(_, k)| same_blend(k, &style)) {
            repeats.push((spec, first.clone()));
            continue;
        }
        if let Some((first, _)) = kept.iter().find(|(_, k)| k.label == style.label) {
            return Err(StageError::InputInvalid(format!(
                "--style {first:?} and --style {spec:?} are different blends with the same name \
                 {:?} (their outputs would overwrite each other); make the weights differ in \
                 the first two decimals",
                style.label
            )));
        }
        kept.push((spec, style));
    }
    Ok((kept.into_iter().map(|(_, s)| s).collect(), repeats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        (0..26).map(|i| format!("style-{i:02}")).collect()
    }

    #[test]
    fn index_name_blend() {
        let n = names();
        let s = parse_style("7", &n).unwrap();
        assert_eq!((s.label.as_str(), s.weights[7]), ("style-07", 1.0));
        assert_eq!(parse_style("style-12", &n).unwrap().weights[12], 1.0);
        let b = parse_style("3:0.5,12:0.5", &n).unwrap();
        assert_eq!((b.weights[3], b.weights[12]), (0.5, 0.5));
        assert_eq!(b.label, "style-03@0.50+style-12@0.50");
        let b = parse_style("style-01:1, 2:3", &n).unwrap();
        assert_eq!(b.label, "style-01@0.25+style-02@0.75");
    }

    #[test]
    fn controls_and_defaults() {
        let n = names();
        let on = Controls {
            preserve_colour: Some(true),
            strength: Some(0.25),
        };
        let s = parse_style_with("3:0.5,12:0.5~strength=0.6", &n, on).unwrap();
        assert_eq!((s.preserve_colour, s.strength), (true, 0.6));
        assert_eq!(
            s.label,
            "style-03@0.50+style-12@0.50~preserve-colour~strength=0.60"
        );
        let s = parse_style_with("7~preserve-colour=false", &n, on).unwrap();
        assert_eq!(s.label, "style-07~strength=0.25");
        let s = parse_style("7", &n).unwrap();
        assert!(s.is_plain() && s.label == "style-07");
        for bad in ["7~strength=2", "7~nope", "~strength=0.5"] {
            let e = parse_style(bad, &n).unwrap_err();
            assert_eq!(e.exit_status().code(), 4, "{bad}: {e}");
        }
    }

    #[test]
    fn errors_are_input_invalid() {
        let n = names();
        for bad in [
            "26", "nope", "3:x", "3:-1", "3:0,4:0", "", "3;0.5", "3:0.5,",
        ] {
            let e = parse_style(bad, &n).unwrap_err();
            assert_eq!(e.exit_status().code(), 4, "{bad}: {e}");
        }
        assert!(
            parse_style("26", &n)
                .unwrap_err()
                .to_string()
                .contains("0 to 25")
        );
    }

    #[test]
    fn repeated_styles_are_kept_once_and_name_clashes_refused() {
        let n = names();
        let given = |specs: &[&str]| {
            specs
                .iter()
                .map(|s| (s.to_string(), parse_style(s, &n).unwrap()))
                .collect::<Vec<_>>()
        };
        let (styles, repeats) = distinct_styles(given(&[
            "7",
            "style-07",
            "3:0.5,12:0.5",
            "7:2",
            "12:1,style-03:1",
            "4",
        ]))
        .unwrap();
        let labels: Vec<&str> = styles.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            vec!["style-07", "style-03@0.50+style-12@0.50", "style-04"]
        );
        assert_eq!(
            repeats,
            vec![
                ("style-07".to_string(), "7".to_string()),
                ("7:2".to_string(), "7".to_string()),
                ("12:1,style-03:1".to_string(), "3:0.5,12:0.5".to_string()),
            ]
        );
        let (styles, repeats) = distinct_styles(given(&[
            "7",
            "7~strength=0.5",
            "style-07~ strength=0.5",
            "7~preserve-colour",
            "7~preserve-colour=false~strength=1",
        ]))
        .unwrap();
        let labels: Vec<&str> = styles.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "style-07",
                "style-07~strength=0.50",
                "style-07~preserve-colour"
            ]
        );
        assert_eq!(repeats.len(), 2, "{repeats:?}");
        let e = distinct_styles(given(&["7~strength=0.5", "7~strength=0.501"])).unwrap_err();
        assert!(e.to_string().contains("style-07~strength=0.50"), "{e}");
        let e = distinct_styles(given(&["3:0.5,12:0.5", "3:0.501,12:0.499"])).unwrap_err();
        assert_eq!(e.exit_status().code(), 4);
        assert!(e.to_string().contains("style-03@0.50+style-12@0.50"), "{e}");
    }
}
