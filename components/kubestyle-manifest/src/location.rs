//! Where data lives: `s3://bucket/key`, `s3://bucket/prefix/`, `file:///path` or a local path.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::error::StageError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// An S3 object (`key` not ending in `/`) or a prefix (`key` empty or ending in `/`).
    S3 { bucket: String, key: String },
    /// A local file or directory.
    Local(PathBuf),
}

impl Location {
    pub fn s3(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Location::S3 {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// True for `s3://bucket/`, `s3://bucket` and `s3://bucket/some/prefix/`.
    pub fn is_s3_prefix(&self) -> bool {
        matches!(self, Location::S3 { key, .. } if key.is_empty() || key.ends_with('/'))
    }

    /// The location of `rel` under this one (`s3://b/p/` + `a/b.png` → `s3://b/p/a/b.png`).
    pub fn join(&self, rel: &str) -> Location {
        match self {
            Location::S3 { bucket, key } => {
                let base = if key.is_empty() || key.ends_with('/') {
                    key.clone()
                } else {
                    format!("{key}/")
                };
                Location::s3(bucket.clone(), format!("{base}{rel}"))
            }
            Location::Local(p) => Location::Local(p.join(rel)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// S3 bucket naming rules (the general-purpose bucket subset every S3 implementation accepts).
pub fn validate_bucket(bucket: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&bucket.len());
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends && !bucket.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name {bucket:?}: 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
        ))
    }
}

impl FromStr for Location {
    type Err = StageError;

    fn from_str(s: &str) -> Result<Self, StageError> {
        let bad = |why: &str| StageError::invalid(format!("malformed location {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                "s3" => {
                    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(bad("no bucket (expected s3://bucket/key)"));
                    }
                    validate_bucket(bucket).map_err(|e| bad(&e))?;
                    if key.starts_with('/') {
                        return Err(bad("key starts with '/' (double slash after the bucket)"));
                    }
                    Ok(Location::s3(bucket, key))
                }
                "file" => {
                    let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
                    let p = u
                        .to_file_path()
                        .map_err(|_| bad("file:// URLs must be absolute local paths"))?;
                    Ok(Location::Local(p))
                }
                other => Err(bad(&format!(
                    "unsupported scheme {other:?} (use s3://, file:// or a local path)"
                ))),
            }
        } else {
            Ok(Location::Local(PathBuf::from(s)))
        }
    }
}

/// A path inside a volume: relative, no `..`, no root, no empty or `.` components.
pub fn validate_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') || p.contains('\n') || p.contains('\r') || p.contains('\\') {
        return Err(format!("path {p:?} contains a NUL, newline or backslash"));
    }
    let path = Path::new(p);
    if path.is_absolute() || p.starts_with('/') {
        return Err(format!(
            "path {p:?} is absolute; it must be relative to the volume root"
        ));
    }
    for c in path.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err(format!("path {p:?} contains '..'")),
            _ => return Err(format!("path {p:?} is not a plain relative path")),
        }
    }
    if p.split('/').any(|seg| seg.is_empty() || seg == ".") {
        return Err(format!("path {p:?} has an empty or '.' segment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        s.parse().unwrap()
    }

    #[test]
    fn parses_s3_objects_and_prefixes() {
        assert_eq!(
            loc("s3://my-bucket/a/b.png"),
            Location::s3("my-bucket", "a/b.png")
        );
        assert!(!loc("s3://my-bucket/a/b.png").is_s3_prefix());
        assert!(loc("s3://my-bucket/a/").is_s3_prefix());
        assert!(loc("s3://my-bucket").is_s3_prefix());
        assert!(loc("s3://my-bucket/").is_s3_prefix());
        assert_eq!(loc("S3://bkt/k k/ü.jpg"), Location::s3("bkt", "k k/ü.jpg"));
        assert_eq!(loc("s3://bkt/a").to_string(), "s3://bkt/a");
    }

    #[test]
    fn parses_local_and_file_urls() {
        assert_eq!(loc("photos/a.png"), Location::Local("photos/a.png".into()));
        assert_eq!(loc("/abs/a.png"), Location::Local("/abs/a.png".into()));
        assert_eq!(
            loc("file:///abs/my%20a.png"),
            Location::Local("/abs/my a.png".into())
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "s3://",
            "s3:///key",
            "s3://Bad_Bucket/k",
            "s3://ab/k",
            "s3://bucket//k",
            "gs://bucket/k",
            "http://example.com/x",
            "file://relative/path",
        ] {
            let e = s.parse::<Location>().unwrap_err();
            assert_eq!(e.exit_status(), crate::ExitStatus::InputInvalid, "{s}");
            assert!(e.to_string().contains("malformed location"), "{e}");
        }
    }

    #[test]
    fn join() {
        assert_eq!(
            loc("s3://bkt/p/").join("x/y.png"),
            loc("s3://bkt/p/x/y.png")
        );
        assert_eq!(loc("s3://bkt/p").join("x"), loc("s3://bkt/p/x"));
        assert_eq!(loc("s3://bkt").join("x"), loc("s3://bkt/x"));
        assert_eq!(loc("out").join("x"), Location::Local("out/x".into()));
    }

    #[test]
    fn relative_paths() {
        assert!(validate_relative_path("inputs/b/a b/ü.png").is_ok());
        for p in [
            "",
            "/etc/passwd",
            "a/../../b",
            "..",
            "./a",
            "a//b",
            "a/./b",
            "a\\b",
            "a\nb",
        ] {
            assert!(validate_relative_path(p).is_err(), "{p:?}");
        }
    }
}
