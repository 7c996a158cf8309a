//! Reading a spec: strict YAML deserialisation, then [`validate`](fn@crate::validate), every
//! problem with its field and line.

use std::path::{Path, PathBuf};

use crate::lines::line_of;
use crate::resolve::Loaded;
use crate::validate::validate;
use crate::{Spec, SpecError, SpecErrors};

/// Read, parse and validate the spec at `path`.
pub fn load(path: &Path) -> Result<Loaded, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecErrors {
        file: file.clone(),
        errors: vec![SpecError {
            field: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }],
    })?;
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
