//! Reading a spec: strict YAML deserialisation, then [`validate`](fn@crate::validate), every
//! problem with its field and line.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bounds::{MAX_EXPANDED_BYTES, MAX_SPEC_BYTES};

use crate::lines::line_of;
use crate::resolve::Loaded;
use crate::validate::validate;
use crate::{Spec, SpecError, SpecErrors};

/// Read, parse and validate the spec at `path`.
pub fn load(path: &Path) -> Result<Loaded, SpecErrors> {
    let file = path.display().to_string();
    let one = |message: String| SpecErrors {
        file: file.clone(),
        errors: vec![SpecError {
            field: String::new(),
            line: None,
            message,
        }],
    };
    // Read at most one byte more than the bound: a huge file (or a FIFO, /dev/zero) is refused
    // without being read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| one(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(one(too_big()));
    }
    let text = String::from_utf8(bytes).map_err(|e| one(format!("cannot read: {e}")))?;
    let spec = parse(&text).map_err(|errors| SpecErrors {
        file: file.clone(),
        errors,
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let hash = kubestyle_manifest::sha256_bytes(
        serde_json::to_string(&spec).unwrap_or_default().as_bytes(),
    )
    .to_string();
    Ok(Loaded {
        spec,
        path: abs,
        dir,
        hash,
    })
}

/// Parse and validate spec text; every problem found is returned, each with its field and line.
pub fn parse(text: &str) -> Result<Spec, Vec<SpecError>> {
    let whole = |message: String| {
        vec![SpecError {
            field: String::new(),
            line: None,
            message,
        }]
    };
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(whole(too_big()));
    }
    expansion::check(text, MAX_EXPANDED_BYTES).map_err(whole)?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = clean_path(&e.path().to_string());
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| line_of(text, &field));
        let mut message = inner.to_string();
        // serde_yaml_ng appends " at line L column C"; the line is reported separately.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // ... and may start with the parent's path, which `field` already says.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && field.starts_with(head)
        {
            message = rest.to_string();
        }
        vec![SpecError {
            field,
            line,
            message,
        }]
    })?;
    let errors = validate(&spec);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors
            .into_iter()
            .map(|(field, message)| SpecError {
                line: line_of(text, &field),
                field,
                message,
            })
            .collect())
    }
}

fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn too_big() -> String {
    format!("larger than {MAX_SPEC_BYTES} bytes: not a spec")
}

/// What a YAML document grows to once its aliases are expanded, measured without allocating
/// it: the deserializer replays an anchor's events for each alias, and a visitor that borrows
/// each scalar and counts its bytes stops at the bound.
mod expansion {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

    /// Each node counts this much beyond its scalar bytes (a long list of empty aliases grows too).
    const NODE: usize = 16;

    /// `Ok` when `text` expands to at most `limit` bytes, or is not YAML the typed parse will
    /// refuse anyway (its own error is the better message).
    pub(super) fn check(text: &str, limit: usize) -> Result<(), String> {
        let left = Cell::new(limit);
        let over = Cell::new(false);
        // The first document only: a spec is one (the typed parse refuses more), and after a
        // syntax error the document iterator yields the same error for ever.
        if let Some(doc) = serde_yaml_ng::Deserializer::from_str(text).next() {
            let _ = Walk {
                left: &left,
                over: &over,
            }
            .deserialize(doc);
            if over.get() {
                return Err(format!(
                    "its YAML aliases expand it beyond {limit} bytes: not a spec"
                ));
            }
        }
        Ok(())
    }

    #[derive(Clone, Copy)]
    struct Walk<'a> {
        left: &'a Cell<usize>,
        over: &'a Cell<bool>,
    }

    impl Walk<'_> {
        fn charge<E: de::Error>(self, n: usize) -> Result<(), E> {
            match self.left.get().checked_sub(n.saturating_add(NODE)) {
                Some(l) => {
                    self.left.set(l);
                    Ok(())
                }
                None => {
                    self.over.set(true);
                    Err(E::custom("expansion bound"))
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.charge(v.len())
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
            self.charge(v.len())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            self.charge(0)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.charge::<D::Error>(0)?;
            d.deserialize_any(self)
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.charge::<D::Error>(0)?;
            d.deserialize_any(self)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.charge::<A::Error>(0)?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.charge::<A::Error>(0)?;
            while map.next_key_seed(self)?.is_some() {
                map.next_value_seed(self)?;
            }
            Ok(())
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
            use de::VariantAccess;
            let ((), v) = data.variant_seed(self)?;
            v.newtype_variant_seed(self)
        }
    }
}
