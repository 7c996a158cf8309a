//! Listing files under a directory.

use std::path::Path;

use crate::atomic::is_temp_name;

/// Every regular file under `root` (following symlinks), as sorted `/`-separated paths relative
/// to `root` — except the temp files of atomic writes in progress (or left by a killed writer):
/// they keep their target's suffix, but they are nobody's input or output.
pub fn walk_files(root: &Path) -> std::io::Result<Vec<String>> {
    walk(root, false)
}

/// Like [`walk_files`], temp files included (for checks that none is left behind).
pub fn walk_all_files(root: &Path) -> std::io::Result<Vec<String>> {
    walk(root, true)
}

fn walk(root: &Path, with_temps: bool) -> std::io::Result<Vec<String>> {
    fn go(root: &Path, dir: &Path, with_temps: bool, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !with_temps && entry.file_name().to_str().is_some_and(is_temp_name) {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                go(root, &path, with_temps, out)?;
            } else if let (true, Ok(rel)) = (meta.is_file(), path.strip_prefix(root)) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, root, with_temps, &mut out)?;
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

    /// Issue #12: temp files keep their target's suffix, so a walk took them for inputs.
    #[test]
    fn skips_temp_files_of_atomic_writes() {
        use crate::atomic::{AtomicFile, Clobber};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("a.png"), b"").unwrap();
        // A write in progress, and one left by a killed writer.
        let inflight = AtomicFile::create(d.path().join("b/x.png"), Clobber::Replace).unwrap();
        std::fs::write(d.path().join("b/.y.kubestyle-tmp.AbCdE12345.jpg"), b"").unwrap();
        // A user's dot-file that is not ours.
        std::fs::write(d.path().join(".z.AbCdE12345.png"), b"").unwrap();
        assert_eq!(
            super::walk_files(d.path()).unwrap(),
            vec![".z.AbCdE12345.png", "a.png"]
        );
        let all = super::walk_all_files(d.path()).unwrap();
        assert_eq!(all.len(), 4, "{all:?}");
        drop(inflight);
    }
}
