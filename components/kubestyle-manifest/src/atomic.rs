//! Crash-safe file writes.
//!
//! The data goes to a temp file in the target's own directory whose name keeps the target's
//! whole suffix and carries a fixed marker (`x.tar.gz` → `.x.kubestyle-tmp.<random>.tar.gz`),
//! so tools that look at suffixes (image decoders, globbing watchers) treat it the same, and
//! nothing else is ever mistaken for one of ours. Commit is write → fsync(file) → rename →
//! fsync(directory); a grouped commit ([`AtomicFile::commit_grouped`]) leaves the directory's
//! fsync to [`sync_pending_dirs`], which [`crate::Manifest::write`] runs before the manifest (the
//! stage's commit marker) is written: one directory fsync per directory and stage instead of one
//! per file. If anything fails — an error, an early return, a panic — the temp file is
//! removed when the [`AtomicFile`] is dropped and the target is untouched.
//!
//! The writer holds an advisory lock (`flock`) on its temp file until it is done. A writer that
//! was killed (SIGKILL, OOM, node loss) leaves its temp file unlocked; the first write into that
//! directory by a later process sweeps it ([`sweep_stale_temps_in`], once per directory and
//! process: a sweep reads the whole directory, and a stage writing 20,000 outputs into one
//! directory must not read it 20,000 times). A locked temp file belongs to a live writer —
//! in this process, another one, or another pod on the same volume — and is never touched.
//! Where the filesystem has no locks, only temp files unmodified for [`STALE_AFTER`] are swept.
//!
//! On SIGINT/SIGTERM ([`crate::cancel`]) the temp files of every write in flight are removed and
//! later writes are refused.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tempfile::NamedTempFile;

use crate::error::StageError;

/// The marker in every temp file name: `.<stem>.kubestyle-tmp.<random><suffix>`.
pub const TEMP_MARKER: &str = "kubestyle-tmp";

/// What a temp file's name adds to its target's: `x.jpg` is written as
/// `.x.kubestyle-tmp.<10 random>.jpg` (a name of at most 255 − this many bytes is writable).
pub const TEMP_NAME_EXTRA: usize = 1 + 1 + TEMP_MARKER.len() + 1 + RAND_LEN;

/// Where the filesystem has no advisory locks, a temp file is only swept when it has not been
/// modified for this long (a live writer keeps writing to it).
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// What to do when the target already exists at commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clobber {
    /// Replace it atomically.
    Replace,
    /// Fail with [`StageError::Conflict`]; the existing file is untouched.
    Refuse,
}

/// Split a file name into the temp-name prefix (with the marker) and the whole suffix.
///
/// `x.tar.gz` → (`.x.kubestyle-tmp.`, `.tar.gz`); `SHA256SUMS` → (`.SHA256SUMS.kubestyle-tmp.`,
/// ``); `.env.json` → (`..env.kubestyle-tmp.`, `.json`).
pub fn temp_name_parts(file_name: &str) -> (String, String) {
    let trimmed = file_name.trim_start_matches('.');
    let dots = &file_name[..file_name.len() - trimmed.len()];
    match trimmed.find('.') {
        Some(i) => (
            format!(".{dots}{}.{TEMP_MARKER}.", &trimmed[..i]),
            trimmed[i..].to_string(),
        ),
        None => (format!(".{file_name}.{TEMP_MARKER}."), String::new()),
    }
}

/// Temp files of this process's writes in flight (removed on SIGINT/SIGTERM).
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Remove the temp file of every write in flight in this process ([`crate::cancel::cancel`]).
pub(crate) fn remove_live_temps() {
    let live = live();
    for p in live.iter() {
        let _ = std::fs::remove_file(p);
    }
}

/// [`remove_live_temps`] from a panic hook: the panicking thread may hold the list's lock
/// itself, so wait for it a while (another thread's hold is short) and never block on it.
pub(crate) fn remove_live_temps_from_panic() {
    for _ in 0..100 {
        match LIVE.try_lock() {
            Ok(live) => {
                for p in live.iter() {
                    let _ = std::fs::remove_file(p);
                }
                return;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                for path in p.into_inner().iter() {
                    let _ = std::fs::remove_file(path);
                }
                return;
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(10))
            }
        }
    }
}

/// A file being written atomically. Write to it, then [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` only after commit.
    tmp: Option<NamedTempFile>,
    target: PathBuf,
    clobber: Clobber,
}

impl AtomicFile {
    /// Start writing `target`. Creates missing parent directories.
    pub fn create(target: impl AsRef<Path>, clobber: Clobber) -> Result<Self, StageError> {
        crate::cancel::check()?;
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
        sweep_once(&dir);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(&suffix).rand_bytes(RAND_LEN);
        // Results are meant to be read by others (a web server, another stage's user): the
        // mode of a plain new file (0666 less the umask), not tempfile's private 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        // A sweeper may lock and remove a new temp file before its writer locked it: the writer
        // then finds it locked or gone, and starts another.
        for _ in 0..8 {
            let tmp = {
                // Created and registered in one step, so a signal never misses it.
                let mut live = live();
                crate::cancel::check()?;
                let tmp = builder
                    .tempfile_in(&dir)
                    .map_err(|e| StageError::io(&dir, e))?;
                live.insert(tmp.path().to_path_buf());
                tmp
            };
            let f = AtomicFile {
                tmp: Some(tmp),
                target: target.clone(),
                clobber,
            };
            if f.lock_own_temp() {
                return Ok(f);
            }
        }
        Err(StageError::Internal(format!(
            "{}: temp files keep disappearing (another process sweeping them?)",
            dir.display()
        )))
    }

    /// Take the writer's lock on the new temp file; false if a sweeper got it first.
    fn lock_own_temp(&self) -> bool {
        let tmp = self.tmp();
        match tmp.as_file().try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return false,
            // No locks on this filesystem: sweepers go by age there.
            Err(std::fs::TryLockError::Error(_)) => return true,
        }
        // Still ours under that name (not swept between creation and locking)?
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (
                tmp.as_file().metadata(),
                std::fs::symlink_metadata(tmp.path()),
            ) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            tmp.path().exists()
        }
    }

    fn tmp(&self) -> &NamedTempFile {
        self.tmp.as_ref().expect("AtomicFile used after commit")
    }

    fn tmp_mut(&mut self) -> &mut NamedTempFile {
        self.tmp.as_mut().expect("AtomicFile used after commit")
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn temp_path(&self) -> &Path {
        self.tmp().path()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.tmp_mut().as_file_mut()
    }

    /// Make the data durable and visible under the target name. Refused once the process is
    /// cancelled by a signal.
    pub fn commit(self) -> Result<(), StageError> {
        let target = self.target.clone();
        self.commit_file()?;
        sync_parent_dir(&target)
    }

    /// Like [`AtomicFile::commit`], but the directory's fsync (which makes the new name durable)
    /// is left to [`sync_pending_dirs`], done once per directory before the stage's manifest is
    /// written. The file's data is fsynced here, before its rename, as in `commit`: after a crash
    /// the target holds either its old content or all of the new, never a partial file; only
    /// the name may be missing, and no manifest then lists it.
    pub fn commit_grouped(self) -> Result<(), StageError> {
        let dir = parent_of(&self.target).to_path_buf();
        self.commit_file()?;
        pending_dirs().insert(dir);
        Ok(())
    }

    /// fsync the temp file and rename it to the target.
    fn commit_file(mut self) -> Result<(), StageError> {
        let mut tmp = self.tmp.take().expect("AtomicFile committed twice");
        let tmp_path = tmp.path().to_path_buf();
        // From here on `tmp` is ours: drop it (and the temp file) under the lock on every path.
        let forget = |tmp: NamedTempFile| {
            let mut live = live();
            live.remove(&tmp_path);
            drop(tmp);
        };
        if let Err(e) = tmp.flush().and_then(|()| tmp.as_file().sync_all()) {
            forget(tmp);
            return Err(StageError::io(&tmp_path, e));
        }
        let target = self.target.clone();
        let persisted = {
            let mut live = live();
            if let Err(e) = crate::cancel::check() {
                live.remove(&tmp_path);
                drop(tmp);
                return Err(e);
            }
            let r = match self.clobber {
                Clobber::Replace => tmp.persist(&target),
                Clobber::Refuse => tmp.persist_noclobber(&target),
            };
            live.remove(&tmp_path);
            // On failure `e.file` is dropped here, under the lock, which removes the temp file.
            r.map(drop).map_err(|e| e.error)
        };
        if let Err(e) = persisted {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(StageError::Conflict(vec![format!(
                    "{} already exists",
                    target.display()
                )]));
            }
            return Err(StageError::io(&target, e));
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let mut live = live();
            live.remove(tmp.path());
            // Removes the temp file, under the lock: a signal never sees it half-forgotten.
            drop(tmp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp_mut().flush()
    }
}

/// Length of the random part of a temp name.
const RAND_LEN: usize = 10;

/// Directories this process has swept ([`sweep_once`]).
static SWEPT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Sweep `dir` ([`sweep_stale_temps_in`]) unless this process has already swept it. A writer
/// killed *during* this process's run leaves its temp file to the next process's sweep.
fn sweep_once(dir: &Path) {
    let first = SWEPT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(dir.to_path_buf());
    if first {
        sweep_stale_temps_in(dir);
    }
}

/// Remove the stale temp files a killed writer left in `target`'s directory: what writing
/// `target` again would do, for a target that is kept instead (a reused output).
pub fn sweep_stale_temps_of(target: &Path) {
    sweep_once(parent_of(target));
}

/// Remove the temp files in `dir` left behind by writers that were killed (SIGKILL, OOM, node
/// loss) before they could clean up: files named as [`is_temp_name`] says that no live writer
/// holds locked — several writers in one directory, in several processes or pods sharing the
/// volume, never remove each other's. Nothing else in `dir` is touched.
pub fn sweep_stale_temps_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp_name(name) || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
        if live().contains(&path) {
            continue;
        }
        match remove_if_stale(&path) {
            Ok(true) => tracing::info!("removed stale temp file {}", path.display()),
            Ok(false) => {}
            Err(err) => tracing::warn!("stale temp file {}: {err}", path.display()),
        }
    }
}

/// Remove the temp file at `path` if no live writer holds it.
fn remove_if_stale(path: &Path) -> std::io::Result<bool> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match f.try_lock() {
        // Removed while we hold the lock: a writer that created it and has not locked it yet
        // finds it locked or gone, and starts another.
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
        Err(std::fs::TryLockError::Error(_)) => {
            let idle = f
                .metadata()?
                .modified()?
                .elapsed()
                .unwrap_or(Duration::ZERO);
            if idle < STALE_AFTER {
                return Ok(false);
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `name` is one of [`AtomicFile`]'s temp file names: `.<stem>.kubestyle-tmp.<10
/// alphanumerics><suffix>`. Directory walks skip these; tests check that none is left.
pub fn is_temp_name(name: &str) -> bool {
    let marker = format!(".{TEMP_MARKER}.");
    name.starts_with('.')
        && name.match_indices(&marker).any(|(i, _)| {
            let after = &name[i + marker.len()..];
            i > 0
                && after.len() >= RAND_LEN
                && after[..RAND_LEN].bytes().all(|b| b.is_ascii_alphanumeric())
                && (after.len() == RAND_LEN || after.as_bytes()[RAND_LEN] == b'.')
        })
}

/// The directory a target is written in (`.` for a bare file name).
fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StageError::io(dir, e))
}

fn sync_parent_dir(target: &Path) -> Result<(), StageError> {
    sync_dir(parent_of(target))
}

/// Directories with grouped commits ([`AtomicFile::commit_grouped`]) not yet fsynced.
static PENDING_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn pending_dirs() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    PENDING_DIRS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// fsync every directory that grouped commits renamed files into since the last call, once
/// each: after this, every file committed so far is durable under its name. [`crate::Manifest::write`]
/// calls it first, so a manifest never lists an output whose name a crash could lose.
pub fn sync_pending_dirs() -> Result<(), StageError> {
    let dirs = std::mem::take(&mut *pending_dirs());
    for d in &dirs {
        if let Err(e) = sync_dir(d) {
            // Not durable yet: whoever retries must sync them again.
            pending_dirs().extend(dirs.iter().cloned());
            return Err(e);
        }
    }
    Ok(())
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
            (".x.kubestyle-tmp.".into(), ".tar.gz".into())
        );
        assert_eq!(
            temp_name_parts("photo.jpg"),
            (".photo.kubestyle-tmp.".into(), ".jpg".into())
        );
        assert_eq!(
            temp_name_parts("SHA256SUMS"),
            (".SHA256SUMS.kubestyle-tmp.".into(), "".into())
        );
        assert_eq!(
            temp_name_parts(".env.json"),
            ("..env.kubestyle-tmp.".into(), ".json".into())
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
            assert!(
                n.starts_with(".x.kubestyle-tmp.") && n.ends_with(".tar.gz"),
                "{n}"
            );
            assert!(is_temp_name(n), "{n}");
        }
        assert_ne!(a.temp_path(), b.temp_path());
        drop(a);
        drop(b);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn temp_name_extra_is_what_a_temp_name_adds() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["x.tar.gz", "SHA256SUMS", ".env.json", "a.jpg"] {
            let f = AtomicFile::create(dir.path().join(name), Clobber::Replace).unwrap();
            let t = f.temp_path().file_name().unwrap().len();
            assert_eq!(t, name.len() + TEMP_NAME_EXTRA, "{name}");
        }
        assert_eq!(TEMP_NAME_EXTRA, 26);
    }

    #[test]
    fn temp_names_are_unmistakable() {
        assert!(is_temp_name(".cat.kubestyle-tmp.AbCdE12345.png"));
        assert!(is_temp_name(".SHA256SUMS.kubestyle-tmp.AbCdE12345"));
        assert!(is_temp_name(".x.kubestyle-tmp.AbCdE12345.tar.gz"));
        assert!(is_temp_name("..env.kubestyle-tmp.AbCdE12345.json"));
        // Names of the old scheme are ordinary (user) files now.
        assert!(!is_temp_name(".cat.AbCdE12345.png"));
        assert!(!is_temp_name(".x.AbCdE12345.tar.gz"));
        assert!(!is_temp_name(".cat.kubestyle-tmp.short.png"));
        assert!(!is_temp_name("cat.kubestyle-tmp.AbCdE12345.png"));
        assert!(!is_temp_name("cat.png"));
    }

    /// Issue #12: the sweep removed any sibling named like `.<stem>.<10 alphanumerics><suffix>`,
    /// real user files too. Now only marked temp files that no live writer holds (of any target
    /// in the directory: issue #14 sweeps a directory once per process, not once per write).
    #[test]
    fn sweep_removes_only_stale_marked_temps() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("cat.png");
        // What writers killed mid-write leave behind (nobody holds their locks), of this target
        // and of another.
        std::fs::write(
            d.path().join(".cat.kubestyle-tmp.AbCdE12345.png"),
            b"partial",
        )
        .unwrap();
        std::fs::write(d.path().join(".dog.kubestyle-tmp.AbCdE12345.png"), b"other").unwrap();
        // A user's file that merely looks like an old-style temp name.
        std::fs::write(d.path().join(".cat.AbCdE12345.png"), b"user data").unwrap();
        std::fs::write(d.path().join(".cat.short.png"), b"keep").unwrap();
        // A live writer elsewhere (another process, another pod on the volume): it holds the
        // lock on its temp file.
        let live_name = ".cat.kubestyle-tmp.LiveWriter.png";
        std::fs::write(d.path().join(live_name), b"in progress").unwrap();
        let held = File::open(d.path().join(live_name)).unwrap();
        held.lock().unwrap();
        // A live writer of the same target in this process.
        let mut mine = AtomicFile::create(&target, Clobber::Replace).unwrap();
        mine.write_all(b"mine").unwrap();
        let mine_name = mine.temp_path().file_name().unwrap().to_owned();

        write_atomic(&target, b"new", Clobber::Replace).unwrap();
        let mut want = vec![
            ".cat.AbCdE12345.png".to_string(),
            live_name.to_string(),
            ".cat.short.png".to_string(),
            "cat.png".to_string(),
            mine_name.to_string_lossy().into_owned(),
        ];
        want.sort();
        assert_eq!(entries(d.path()), want);
        assert_eq!(
            std::fs::read(d.path().join(".cat.AbCdE12345.png")).unwrap(),
            b"user data"
        );
        mine.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"mine");

        // Once the other writer is gone (its lock released), its temp file is stale: the next
        // process's first write here sweeps it (this process swept the directory already, and
        // does not read it again on every write).
        drop(held);
        write_atomic(&target, b"again", Clobber::Replace).unwrap();
        assert!(entries(d.path()).contains(&live_name.to_string()));
        sweep_stale_temps_in(d.path());
        assert_eq!(
            entries(d.path()),
            vec![".cat.AbCdE12345.png", ".cat.short.png", "cat.png"]
        );
    }

    /// A grouped commit is visible at once; its directory is fsynced by `sync_pending_dirs`,
    /// once, however many files went into it.
    #[test]
    fn grouped_commits_wait_for_one_directory_sync() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("grouped");
        for i in 0..3 {
            let mut f = AtomicFile::create(sub.join(format!("{i}.png")), Clobber::Replace).unwrap();
            f.write_all(b"x").unwrap();
            f.commit_grouped().unwrap();
        }
        assert_eq!(entries(&sub), vec!["0.png", "1.png", "2.png"]);
        assert!(pending_dirs().contains(&sub));
        sync_pending_dirs().unwrap();
        assert!(!pending_dirs().contains(&sub));
    }

    /// A temp file swept between its creation and its writer's lock is noticed: the writer
    /// starts another one.
    #[test]
    fn a_writer_whose_new_temp_was_swept_starts_another() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("a.png");
        let f = AtomicFile::create(&target, Clobber::Replace).unwrap();
        assert!(f.lock_own_temp());
        std::fs::remove_file(f.temp_path()).unwrap();
        assert!(
            !f.lock_own_temp(),
            "a vanished temp file is not ours any more"
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
