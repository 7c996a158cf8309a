//! What a SIGINT/SIGTERM does to atomic writes ([`kubestyle_manifest::cancel::cancel`], which
//! the signal handler calls). Its own test binary: the cancellation is process-wide.

use std::io::Write;

use kubestyle_manifest::atomic::{AtomicFile, Clobber, write_atomic};
use kubestyle_manifest::cancel;

#[test]
fn cancel_removes_temps_and_refuses_every_later_commit() {
    assert_eq!(cancel::exit_code(cancel::SIGINT), cancel::EXIT_SIGINT);
    assert_eq!(cancel::exit_code(cancel::SIGTERM), cancel::EXIT_SIGTERM);
    assert_eq!((cancel::EXIT_SIGINT, cancel::EXIT_SIGTERM), (130, 143));

    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("styled/cat.png");
    let manifest = d.path().join("runs/r/stylize.manifest.json");
    write_atomic(
        d.path().join("done.png"),
        b"before the signal",
        Clobber::Replace,
    )
    .unwrap();
    let mut a = AtomicFile::create(&out, Clobber::Replace).unwrap();
    a.write_all(b"half an image").unwrap();
    let b = AtomicFile::create(&manifest, Clobber::Replace).unwrap();
    assert!(a.temp_path().exists() && b.temp_path().exists());

    assert!(cancel::cancel(cancel::SIGTERM));
    assert_eq!(cancel::signal(), Some(cancel::SIGTERM));
    assert!(!cancel::cancel(cancel::SIGINT), "the first signal counts");
    // The temp files are gone at once, while their writers still hold them.
    assert!(!a.temp_path().exists());
    assert!(!b.temp_path().exists());
    // Nothing is committed after the signal, and no new write starts.
    assert!(a.commit().is_err());
    assert!(b.commit().is_err());
    assert!(AtomicFile::create(d.path().join("x.json"), Clobber::Replace).is_err());
    assert!(write_atomic(&manifest, b"{}", Clobber::Replace).is_err());
    assert_eq!(
        kubestyle_manifest::files::walk_all_files(d.path()).unwrap(),
        vec!["done.png"]
    );
    assert!(cancel::check().is_err());
}
