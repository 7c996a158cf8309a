//! The style grammar: a style is an index (`7`), a name (`style-07`, `mosaic`) or a blend
//! `STYLE:WEIGHT,…` (`3:0.5,12:0.5`); `PACKAGE/STYLE` gives it for one package only (stylize's
//! `--style`, as the pipeline writes the spec's per-model styles).
//!
//! A style may carry controls after `~` (in any order, each at most once):
//! `preserve-colour` (keep the photo's own colours: the stylised luminance with the photo's
//! chrominance) and `strength=S` with S in 0..=1 (0 = the photo, 1 = the network's output):
//! `7~preserve-colour~strength=0.6`, `3:0.5,12:0.5~strength=0.5`. What a style does not set
//! comes from the stage's defaults (`stylize --preserve-colour --strength`, the spec's
//! `stylize.preserve_colour` / `stylize.strength`); `preserve-colour=false` opts one style out.
//!
//! The spec validates with [`StyleSpec`] (syntax, and indexes against the architecture's style
//! count); stylize resolves the same forms against a package's style names with [`is_blend`],
//! [`blend_items`], [`StyleRef::lex`] and [`weight`], each with its own messages.

use std::fmt;
use std::str::FromStr;

/// Between a package and its style in `PACKAGE/STYLE`.
pub const PACKAGE_SEP: char = '/';
/// Between the items of a blend.
pub const BLEND_SEP: char = ',';
/// Between a blend item's style and its weight.
pub const WEIGHT_SEP: char = ':';

/// Before each control of a style: `7~preserve-colour~strength=0.6`.
pub const CONTROL_SEP: char = '~';
/// The control that keeps the photo's colours.
pub const PRESERVE_COLOUR: &str = "preserve-colour";
/// The control that sets the strength: `strength=0.6`.
pub const STRENGTH: &str = "strength";

/// A style's controls; `None`: not set here (the stage's default applies).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Controls {
    pub preserve_colour: Option<bool>,
    pub strength: Option<f32>,
}

impl Controls {
    /// These controls, with what they leave unset taken from `defaults`.
    pub fn or(self, defaults: Controls) -> Controls {
        Controls {
            preserve_colour: self.preserve_colour.or(defaults.preserve_colour),
            strength: self.strength.or(defaults.strength),
        }
    }
}

/// Whether `s` is a strength: a finite number in 0..=1.
pub fn valid_strength(s: f32) -> bool {
    s.is_finite() && (0.0..=1.0).contains(&s)
}

/// `STYLE~CONTROL~…` → `(STYLE, controls)`; the error says which control is wrong.
pub fn split_controls(s: &str) -> Result<(&str, Controls), String> {
    let mut parts = s.split(CONTROL_SEP);
    let style = parts.next().unwrap_or_default();
    let mut c = Controls::default();
    for raw in parts {
        let t = raw.trim();
        let (key, value) = match t.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (t, None),
        };
        match key {
            PRESERVE_COLOUR | "preserve-color" => {
                if c.preserve_colour.is_some() {
                    return Err(format!("{s:?}: {PRESERVE_COLOUR} given twice"));
                }
                c.preserve_colour = Some(match value {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(v) => {
                        return Err(format!(
                            "{s:?}: {PRESERVE_COLOUR}={v:?}: give {PRESERVE_COLOUR}, \
                             {PRESERVE_COLOUR}=true or {PRESERVE_COLOUR}=false"
                        ));
                    }
                });
            }
            STRENGTH => {
                if c.strength.is_some() {
                    return Err(format!("{s:?}: {STRENGTH} given twice"));
                }
                match value.map(|v| (v, v.parse::<f32>())) {
                    Some((_, Ok(x))) if valid_strength(x) => c.strength = Some(x),
                    Some((v, _)) => {
                        return Err(format!(
                            "{s:?}: {STRENGTH}={v:?} must be a number from 0 to 1"
                        ));
                    }
                    None => return Err(format!("{s:?}: {STRENGTH} needs a value: {STRENGTH}=0.6")),
                }
            }
            other => {
                return Err(format!(
                    "{s:?}: unknown control {other:?} (controls: {PRESERVE_COLOUR}, {STRENGTH}=S)"
                ));
            }
        }
    }
    Ok((style, c))
}

/// The path-safe suffix a style's label carries for its controls (empty for today's output:
/// colours not preserved, strength 1): `~preserve-colour~strength=0.60`.
pub fn controls_label(preserve_colour: bool, strength: f32) -> String {
    let mut l = String::new();
    if preserve_colour {
        l.push(CONTROL_SEP);
        l.push_str(PRESERVE_COLOUR);
    }
    if strength != 1.0 {
        l.push_str(&format!("{CONTROL_SEP}{STRENGTH}={strength:.2}"));
    }
    l
}

/// `PACKAGE/STYLE`: `style` for the package `package` only.
pub fn qualified(package: &str, style: &str) -> String {
    format!("{package}{PACKAGE_SEP}{style}")
}

/// `PACKAGE/STYLE` → `(PACKAGE, STYLE)`; `None` for a style for every package.
pub fn split_package(s: &str) -> Option<(&str, &str)> {
    s.split_once(PACKAGE_SEP)
}

/// Whether `s` is a blend (it has a `:` or a `,`) rather than one style.
pub fn is_blend(s: &str) -> bool {
    s.contains(WEIGHT_SEP) || s.contains(BLEND_SEP)
}

/// The items of a blend, in order, as `(style, weight)` texts, untrimmed. An item without a
/// weight is the error `blend item "…" needs STYLE:WEIGHT`.
pub fn blend_items(s: &str) -> impl Iterator<Item = Result<(&str, &str), String>> {
    s.split(BLEND_SEP).map(|item| {
        item.split_once(WEIGHT_SEP)
            .ok_or_else(|| format!("blend item {item:?} needs STYLE:WEIGHT"))
    })
}

/// A blend weight's text as a number (`None`: not a number). Whether it is allowed (finite,
/// positive) is the caller's rule.
pub fn weight(w: &str) -> Option<f32> {
    w.trim().parse().ok()
}

/// One style of a network: its index (`7`) or its name (`style-07`, `mosaic`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StyleRef {
    Index(usize),
    Name(String),
}

impl StyleRef {
    /// A style token as it is: an index when it is a number, else a name (not trimmed, not
    /// checked).
    pub fn lex(token: &str) -> StyleRef {
        match token.parse::<usize>() {
            Ok(i) => StyleRef::Index(i),
            Err(_) => StyleRef::Name(token.to_string()),
        }
    }
}

impl fmt::Display for StyleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StyleRef::Index(i) => write!(f, "{i}"),
            StyleRef::Name(n) => f.write_str(n),
        }
    }
}

/// A style spec: one style (`3`, `mosaic`), or a blend `STYLE:WEIGHT,…` with positive weights
/// (`3:0.5,12:0.5`).
#[derive(Debug, Clone, PartialEq)]
pub enum StyleSpec {
    One(StyleRef),
    Blend(Vec<(StyleRef, f32)>),
}

impl StyleSpec {
    /// Parses `s`. With `limit` (the architecture's style count and the package name, for the
    /// message), an index at or past the count is refused. The error says what is wrong with `s`.
    pub fn parse_for(s: &str, limit: Option<(usize, &str)>) -> Result<StyleSpec, String> {
        let token = |t: &str| -> Result<StyleRef, String> {
            let t = t.trim();
            if t.is_empty() {
                return Err(format!("{s:?}: empty style"));
            }
            match StyleRef::lex(t) {
                StyleRef::Index(i) => {
                    if let Some((n, pkg)) = limit
                        && i >= n
                    {
                        return Err(format!(
                            "{s:?}: style index {i} is out of range for {pkg} (0 to {})",
                            n.saturating_sub(1)
                        ));
                    }
                    Ok(StyleRef::Index(i))
                }
                name => {
                    if !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        return Err(format!("{s:?}: {t:?} is not a style index or name"));
                    }
                    Ok(name)
                }
            }
        };
        if s.contains(PACKAGE_SEP) {
            return Err(format!(
                "{s:?}: give per-model styles under sources.models[].styles, not as MODEL/STYLE"
            ));
        }
        // The controls are checked here; the spec keeps the text, stylize applies them.
        let whole = s;
        let (s, _) = split_controls(whole)?;
        if s.trim().is_empty() {
            return Err(format!("{whole:?}: empty style"));
        }
        if !is_blend(s) {
            return token(s).map(StyleSpec::One);
        }
        let mut blend = Vec::new();
        for item in blend_items(s) {
            let (t, w) = item.map_err(|m| format!("{s:?}: {m}"))?;
            let style = token(t)?;
            match weight(w) {
                Some(w) if w.is_finite() && w > 0.0 => blend.push((style, w)),
                _ => return Err(format!("{s:?}: weight {w:?} must be a positive number")),
            }
        }
        Ok(StyleSpec::Blend(blend))
    }
}

impl FromStr for StyleSpec {
    type Err = String;

    /// The syntax only: indexes are not checked against a network ([`StyleSpec::parse_for`]).
    fn from_str(s: &str) -> Result<Self, String> {
        StyleSpec::parse_for(s, None)
    }
}

impl fmt::Display for StyleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StyleSpec::One(r) => write!(f, "{r}"),
            StyleSpec::Blend(items) => {
                for (i, (r, w)) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, "{BLEND_SEP}")?;
                    }
                    write!(f, "{r}{WEIGHT_SEP}{w}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_name_and_blend_forms_parse_and_print_back() {
        assert_eq!(
            "3".parse::<StyleSpec>().unwrap(),
            StyleSpec::One(StyleRef::Index(3))
        );
        assert_eq!(
            "mosaic".parse::<StyleSpec>().unwrap(),
            StyleSpec::One(StyleRef::Name("mosaic".into()))
        );
        assert_eq!(
            "3:0.5,12:0.5".parse::<StyleSpec>().unwrap(),
            StyleSpec::Blend(vec![(StyleRef::Index(3), 0.5), (StyleRef::Index(12), 0.5)])
        );
        assert_eq!(
            "mosaic:1, 3 : 2".parse::<StyleSpec>().unwrap(),
            StyleSpec::Blend(vec![
                (StyleRef::Name("mosaic".into()), 1.0),
                (StyleRef::Index(3), 2.0)
            ])
        );
        for s in ["3", "mosaic", "style-07", "3:0.5,12:0.5", "candy:2.5"] {
            assert_eq!(s.parse::<StyleSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_styles_say_why() {
        let e = |s: &str| s.parse::<StyleSpec>().unwrap_err();
        assert_eq!(e(""), "\"\": empty style");
        assert_eq!(e("a b"), "\"a b\": \"a b\" is not a style index or name");
        assert!(e("candy/0").contains("not as MODEL/STYLE"));
        assert_eq!(e("a:1,b"), "\"a:1,b\": blend item \"b\" needs STYLE:WEIGHT");
        assert_eq!(
            e("2:-1"),
            "\"2:-1\": weight \"-1\" must be a positive number"
        );
        assert!(e("2:inf").contains("must be a positive number"));
    }

    #[test]
    fn indexes_are_checked_against_the_count_in_order() {
        let p = |s: &str| StyleSpec::parse_for(s, Some((26, "multistyle26")));
        assert!(p("25").is_ok());
        assert_eq!(
            p("26").unwrap_err(),
            "\"26\": style index 26 is out of range for multistyle26 (0 to 25)"
        );
        // The first problem from the left is the one reported.
        assert!(p("30:-1").unwrap_err().contains("out of range"));
        assert!(p("x y:1,30:1").unwrap_err().contains("not a style index"));
        assert!("30:1".parse::<StyleSpec>().is_ok());
    }

    #[test]
    fn controls_parse_in_any_order_and_say_what_is_wrong() {
        let c = |s: &str| split_controls(s).map(|(st, c)| (st.to_string(), c));
        assert_eq!(c("7").unwrap(), ("7".into(), Controls::default()));
        assert_eq!(
            c("3:0.5,12:0.5~strength=0.6~preserve-colour").unwrap(),
            (
                "3:0.5,12:0.5".into(),
                Controls {
                    preserve_colour: Some(true),
                    strength: Some(0.6)
                }
            )
        );
        assert_eq!(
            c("candy~ preserve-color=false ").unwrap().1.preserve_colour,
            Some(false)
        );
        assert_eq!(c("7~strength=0").unwrap().1.strength, Some(0.0));
        assert_eq!(c("7~strength=1").unwrap().1.strength, Some(1.0));
        for (bad, says) in [
            ("7~strength=1.5", "must be a number from 0 to 1"),
            ("7~strength=-0.1", "must be a number from 0 to 1"),
            ("7~strength=NaN", "must be a number from 0 to 1"),
            ("7~strength", "needs a value"),
            ("7~strength=0.5~strength=0.6", "given twice"),
            ("7~preserve-colour~preserve-colour", "given twice"),
            ("7~preserve-colour=maybe", "give preserve-colour"),
            ("7~sepia", "unknown control \"sepia\""),
            ("7~", "unknown control \"\""),
        ] {
            let e = c(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // The spec's check sees them too.
        assert!("7~strength=0.5".parse::<StyleSpec>().is_ok());
        assert!(
            "~strength=0.5"
                .parse::<StyleSpec>()
                .unwrap_err()
                .contains("empty style")
        );
        assert!(
            "7~strength=2"
                .parse::<StyleSpec>()
                .unwrap_err()
                .contains("from 0 to 1")
        );
    }

    #[test]
    fn controls_label_is_empty_for_todays_output() {
        assert_eq!(controls_label(false, 1.0), "");
        assert_eq!(controls_label(true, 1.0), "~preserve-colour");
        assert_eq!(controls_label(false, 0.6), "~strength=0.60");
        assert_eq!(controls_label(true, 0.0), "~preserve-colour~strength=0.00");
        let given = Controls {
            preserve_colour: None,
            strength: Some(0.3),
        };
        let defaults = Controls {
            preserve_colour: Some(true),
            strength: Some(0.9),
        };
        assert_eq!(
            given.or(defaults),
            Controls {
                preserve_colour: Some(true),
                strength: Some(0.3)
            }
        );
    }

    #[test]
    fn package_qualified_styles_split_back() {
        let q = qualified("multistyle26", "3:0.5,12:0.5");
        assert_eq!(q, "multistyle26/3:0.5,12:0.5");
        assert_eq!(split_package(&q), Some(("multistyle26", "3:0.5,12:0.5")));
        assert_eq!(split_package("7"), None);
    }
}
