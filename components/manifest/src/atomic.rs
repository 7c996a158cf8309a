//! Crash-safe file writes.
//!
//! The data goes to a temp file in the target's own directory whose name keeps the target's
//! whole suffix (`x.tar.gz` → `.x.<random>.tar.gz`), so tools that look at suffixes (image
//! decoders, `file` globbing watchers) treat it the same. Commit is write → fsync(file) →
//! rename → fsync(directory). If anything fails — an error, an early return, a panic — the temp
//! file is removed when the [`AtomicFile`] is dropped and the target is untouched.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::StageError;

/// What to do when the target already exists at commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clobber {
    /// Replace it atomically.
    Replace,
    /// Fail with [`StageError::Conflict`]; the existing file is untouched.
    Refuse,
}

/// Split a file name into the temp-name prefix and the whole suffix.
///
/// `x.tar.gz` → (`.x.`, `.tar.gz`); `SHA256SUMS` → (`.SHA256SUMS.`, ``);
/// `.env.json` → (`..env.`, `.json`).
pub fn temp_name_parts(file_name: &str) -> (String, String) {
    let trimmed = file_name.trim_start_matches('.');
    let dots = &file_name[..file_name.len() - trimmed.len()];
    match trimmed.find('.') {
        Some(i) => (
            format!(".{dots}{}.", &trimmed[..i]),
            trimmed[i..].to_string(),
        ),
        None => (format!(".{file_name}."), String::new()),
    }
}

/// A file being written atomically. Write to it, then [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    tmp: NamedTempFile,
    target: PathBuf,
    clobber: Clobber,
}

impl AtomicFile {
    /// Start writing `target`. Creates missing parent directories.
    pub fn create(target: impl AsRef<Path>, clobber: Clobber) -> Result<Self, StageError> {
        let target = target.as_ref().to_path_buf();
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StageError::invalid(format!("not a file path: {}", target.display())))?
            .to_string();
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if clobber == Clobber::Refuse && target.exists() {
            return Err(StageError::Conflict(vec![format!(
                "{} already exists",
                target.display()
            )]));
        }
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
        let (prefix, suffix) = temp_name_parts(&name);
        sweep_stale_temps(&dir, &prefix, &suffix);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix).rand_bytes(RAND_LEN);
        // Results are meant to be read by others (a web server, another stage's user): the
        // mode of a plain new file (0666 less the umask), not tempfile's private 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder
            .tempfile_in(&dir)
            .map_err(|e| StageError::io(&dir, e))?;
        Ok(AtomicFile {
            tmp,
            target,
            clobber,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Make the data durable and visible under the target name.
    pub fn commit(mut self) -> Result<(), StageError> {
        let tmp_path = self.tmp.path().to_path_buf();
        self.tmp.flush().map_err(|e| StageError::io(&tmp_path, e))?;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| StageError::io(&tmp_path, e))?;
        let target = self.target;
        let persisted = match self.clobber {
            Clobber::Replace => self.tmp.persist(&target),
            Clobber::Refuse => self.tmp.persist_noclobber(&target),
        };
        if let Err(e) = persisted {
            // `e.file` is dropped here, which removes the temp file.
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(StageError::Conflict(vec![format!(
                    "{} already exists",
                    target.display()
                )]));
            }
            return Err(StageError::io(&target, e.error));
        }
        sync_parent_dir(&target)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Length of the random part of a temp name.
const RAND_LEN: usize = 10;

/// Remove temp files of this target left behind by a writer that was killed (SIGKILL, OOM,
/// node loss) before it could clean up: `<prefix><10 alphanumerics><suffix>` in `dir`. Writing
/// one target from two processes at once is not supported (one's temp may be swept).
fn sweep_stale_temps(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_of(name, prefix, suffix) && e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!("removed stale temp file {}", e.path().display()),
                Err(err) => tracing::warn!("stale temp file {}: {err}", e.path().display()),
            }
        }
    }
}

fn is_temp_of(name: &str, prefix: &str, suffix: &str) -> bool {
    name.len() == prefix.len() + RAND_LEN + suffix.len()
        && name.starts_with(prefix)
        && name.ends_with(suffix)
        && name[prefix.len()..prefix.len() + RAND_LEN]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Whether `name` looks like one of [`AtomicFile`]'s temp files (for checks that none is left).
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    // `.<stem>.<10 random><suffix>`: find a `.`+10 alphanumerics followed by `.` or the end.
    rest.match_indices('.').any(|(i, _)| {
        let after = &rest[i + 1..];
        after.len() >= RAND_LEN
            && after[..RAND_LEN].bytes().all(|b| b.is_ascii_alphanumeric())
            && (after.len() == RAND_LEN || after.as_bytes()[RAND_LEN] == b'.')
            && {
                let target = format!("{}{}", &rest[..i], &after[RAND_LEN..]);
                let (p, s) = temp_name_parts(&target);
                is_temp_of(name, &p, &s)
            }
    })
}

fn sync_parent_dir(target: &Path) -> Result<(), StageError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StageError::io(dir, e))
}

/// Write `target` atomically with whatever `fill` writes; the temp file is removed if `fill`
/// fails or panics.
pub fn write_atomic_with<T>(
    target: impl AsRef<Path>,
    clobber: Clobber,
    fill: impl FnOnce(&mut AtomicFile) -> Result<T, StageError>,
) -> Result<T, StageError> {
    let mut f = AtomicFile::create(target, clobber)?;
    let out = fill(&mut f)?;
    f.commit()?;
    Ok(out)
}

/// Write `bytes` to `target` atomically.
pub fn write_atomic(
    target: impl AsRef<Path>,
    bytes: &[u8],
    clobber: Clobber,
) -> Result<(), StageError> {
    write_atomic_with(target, clobber, |f| {
        let p = f.temp_path().to_path_buf();
        f.write_all(bytes).map_err(|e| StageError::io(p, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitStatus;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn suffix_is_kept_whole() {
        assert_eq!(
            temp_name_parts("x.tar.gz"),
            (".x.".into(), ".tar.gz".into())
        );
        assert_eq!(
            temp_name_parts("photo.jpg"),
            (".photo.".into(), ".jpg".into())
        );
        assert_eq!(
            temp_name_parts("SHA256SUMS"),
            (".SHA256SUMS.".into(), "".into())
        );
        assert_eq!(
            temp_name_parts(".env.json"),
            ("..env.".into(), ".json".into())
        );
    }

    #[test]
    fn temp_lives_beside_target_with_same_suffix_and_is_unique() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.tar.gz");
        let a = AtomicFile::create(&target, Clobber::Replace).unwrap();
        let b = AtomicFile::create(&target, Clobber::Replace).unwrap();
        for t in [a.temp_path(), b.temp_path()] {
            assert_eq!(t.parent(), Some(dir.path()));
            let n = t.file_name().unwrap().to_str().unwrap();
            assert!(n.starts_with(".x.") && n.ends_with(".tar.gz"), "{n}");
        }
        assert_ne!(a.temp_path(), b.temp_path());
        drop(a);
        drop(b);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn stale_temps_of_a_killed_writer_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("cat.png");
        // What a writer killed mid-write leaves behind, plus look-alikes that must stay.
        std::fs::write(d.path().join(".cat.AbCdE12345.png"), b"partial").unwrap();
        std::fs::write(d.path().join(".cat.short.png"), b"keep").unwrap();
        std::fs::write(d.path().join(".dog.AbCdE12345.png"), b"other target").unwrap();
        assert!(is_temp_name(".cat.AbCdE12345.png"));
        assert!(is_temp_name(".SHA256SUMS.AbCdE12345"));
        assert!(is_temp_name(".x.AbCdE12345.tar.gz"));
        assert!(!is_temp_name(".cat.short.png"));
        assert!(!is_temp_name("cat.png"));
        write_atomic(&target, b"new", Clobber::Replace).unwrap();
        assert_eq!(
            entries(d.path()),
            vec![".cat.short.png", ".dog.AbCdE12345.png", "cat.png"]
        );
    }

    #[test]
    fn commit_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/out.json");
        write_atomic(&target, b"one", Clobber::Replace).unwrap();
        write_atomic(&target, b"two", Clobber::Replace).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(entries(&dir.path().join("sub")), vec!["out.json"]);
    }

    #[test]
    fn refuse_mode_keeps_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.png");
        write_atomic(&target, b"first", Clobber::Refuse).unwrap();
        let err = write_atomic(&target, b"second", Clobber::Refuse).unwrap_err();
        assert_eq!(err.exit_status(), ExitStatus::Conflict);
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        // Target appearing between create and commit is also refused.
        let t2 = dir.path().join("b.png");
        let mut f = AtomicFile::create(&t2, Clobber::Refuse).unwrap();
        f.write_all(b"late").unwrap();
        std::fs::write(&t2, b"raced").unwrap();
        assert_eq!(f.commit().unwrap_err().exit_status(), ExitStatus::Conflict);
        assert_eq!(std::fs::read(&t2).unwrap(), b"raced");
        assert_eq!(entries(dir.path()), vec!["a.png", "b.png"]);
    }

    #[test]
    fn failing_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("img.webp");
        let err = write_atomic_with(&target, Clobber::Replace, |f| {
            f.write_all(b"partial data").unwrap();
            Err::<(), _>(StageError::Storage("connection reset".into()))
        })
        .unwrap_err();
        assert_eq!(err.exit_status(), ExitStatus::Storage);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn panicking_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("img.png");
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomic_with(&target, Clobber::Replace, |f| {
                f.write_all(b"partial").unwrap();
                panic!("decoder exploded");
                #[allow(unreachable_code)]
                Ok(())
            });
        });
        assert!(r.is_err());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn unwritable_directory_is_local_io() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        // Parent "directory" is a regular file.
        let err = write_atomic(blocker.join("out.json"), b"{}", Clobber::Replace).unwrap_err();
        assert_eq!(err.exit_status(), ExitStatus::LocalIo);
    }
}
