//! Finding a field's line in the spec's YAML text.

/// The 1-based line of `field` (`a.b[2].c`) in block-style YAML `text`, found by walking
/// keys and `- ` items by indentation. When a part cannot be followed (flow style, aliases),
/// the line of the deepest part found; `None` when not even the first is found.
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    enum Seg {
        Key(String),
        Index(usize),
    }
    let mut segs = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|x| !x.is_empty()) {
            segs.push(Seg::Index(idx.trim_end_matches(']').parse().ok()?));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    // (effective indent, text): a `- key: v` line holds `key` at the dash's indent + 2.
    let view = |l: &str| -> Option<(usize, usize, String)> {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with("---") {
            return None;
        }
        let ind = l.len() - t.len();
        let (eff, body) = match t.strip_prefix("- ") {
            Some(b) => (ind + 2, b.trim_start().to_string()),
            None => (ind, t.to_string()),
        };
        Some((ind, eff, body))
    };
    let (mut start, mut parent): (usize, Option<usize>) = (0, None);
    let mut found = None;
    for seg in segs {
        let mut level: Option<usize> = None;
        let mut count = 0;
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(start) {
            let Some((ind, eff, body)) = view(l) else {
                continue;
            };
            if i > start && parent.is_some_and(|p| ind <= p) {
                break;
            }
            match &seg {
                Seg::Key(k) => {
                    let lvl = *level.get_or_insert(eff);
                    if eff == lvl && body.starts_with(&format!("{k}:")) {
                        hit = Some((i, eff));
                        break;
                    }
                }
                Seg::Index(n) => {
                    let is_item = l.trim_start().starts_with("- ") || l.trim() == "-";
                    if !is_item {
                        continue;
                    }
                    let lvl = *level.get_or_insert(ind);
                    if ind == lvl {
                        if count == *n {
                            hit = Some((i, ind));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        let Some((i, ind)) = hit else {
            return found;
        };
        found = Some(i + 1);
        match seg {
            Seg::Key(_) => {
                start = i + 1;
                parent = Some(ind);
            }
            // The item's first key is on its own `- ` line.
            Seg::Index(_) => {
                start = i;
                parent = Some(ind);
            }
        }
    }
    found
}
