//! Listing files under a directory.

use std::path::Path;

/// Every regular file under `root` (following symlinks), as sorted `/`-separated paths relative
/// to `root`.
pub fn walk_files(root: &Path) -> std::io::Result<Vec<String>> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                go(root, &path, out)?;
            } else if let (true, Ok(rel)) = (meta.is_file(), path.strip_prefix(root)) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_nested_files_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::write(d.path().join("b/c/x.png"), b"").unwrap();
        std::fs::write(d.path().join("a.png"), b"").unwrap();
        assert_eq!(
            super::walk_files(d.path()).unwrap(),
            vec!["a.png", "b/c/x.png"]
        );
        assert!(super::walk_files(&d.path().join("missing")).is_err());
    }
}
