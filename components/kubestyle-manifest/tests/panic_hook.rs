//! The panic hook every binary installs: a bug exits 1 (`internal`) with one line, in any
//! thread, and the temp files of writes in flight are removed. Each test runs itself again as
//! a child process (`KUBESTYLE_PANIC_CHILD`), where the hook is installed and a panic happens.

use std::process::Command;

use kubestyle_manifest::telemetry::{Report, install_panic_hook};

fn child(test: &str, mode: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("KUBESTYLE_PANIC_CHILD", mode)
        .output()
        .unwrap()
}

fn mode() -> Option<String> {
    std::env::var("KUBESTYLE_PANIC_CHILD").ok()
}

/// Promise: a panic in the main thread or in a worker exits 1 with one line on stderr (message
/// and place), not 101 and not an abort; the line breaks of the message are folded.
#[test]
fn a_panic_in_any_thread_exits_1_with_one_line() {
    match mode().as_deref() {
        Some("main") => {
            install_panic_hook(Report::Log);
            panic!("the listing\nsaid so");
        }
        Some("worker") => {
            install_panic_hook(Report::Plain);
            let t = std::thread::spawn(|| {
                let v: Vec<u64> = vec![u64::MAX, 1];
                // Overflow: a panic in test builds, as `overflow-checks` makes it in release.
                v.iter().sum::<u64>()
            });
            let _ = t.join();
            // Not reached: the hook exits from the worker.
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        Some(_) => return,
        None => {}
    }
    for (mode, prefix) in [
        ("main", "ERROR internal error: bug: the listing said so at "),
        (
            "worker",
            "error: internal error: bug: attempt to add with overflow",
        ),
    ] {
        let out = child("a_panic_in_any_thread_exits_1_with_one_line", mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("internal error"))
            .collect();
        assert_eq!(lines.len(), 1, "{mode}: {stderr}");
        assert!(lines[0].starts_with(prefix), "{mode}: {stderr}");
        assert!(
            !stderr.contains("panicked at"),
            "{mode}: the default hook ran: {stderr}"
        );
    }
}

/// Promise: after a panic no temp file of an atomic write in flight is left behind.
#[test]
fn a_panic_removes_the_temp_files_in_flight() {
    let dir = std::env::temp_dir().join(format!("kubestyle-panic-hook-{}", std::process::id()));
    if let Some(d) = mode() {
        install_panic_hook(Report::Log);
        let _f = kubestyle_manifest::AtomicFile::create(
            std::path::Path::new(&d).join("out.png"),
            kubestyle_manifest::Clobber::Replace,
        )
        .unwrap();
        assert!(std::fs::read_dir(&d).unwrap().count() > 0);
        panic!("mid-write");
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = child(
        "a_panic_removes_the_temp_files_in_flight",
        dir.to_str().unwrap(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Promise: every binary installs the hook before anything else runs, and release builds
/// check arithmetic for overflow (a wrapped size is a panic, so exit 1, not a wrong number).
#[test]
fn every_binary_installs_the_hook_and_release_checks_overflow() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let release = cargo.split("[profile.release]").nth(1).unwrap_or_default();
    let release = release.split("\n[").next().unwrap_or_default();
    assert!(
        release.contains("\noverflow-checks = true"),
        "[profile.release] lacks overflow-checks = true"
    );
    for main in [
        "components/download/src/main.rs",
        "components/package-model/src/main.rs",
        "components/stylize/src/main.rs",
        "components/upload/src/main.rs",
        "pipeline/src/main.rs",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{main}")).unwrap();
        let body = text.split("fn main()").nth(1).unwrap_or_default();
        let first = body.lines().nth(1).unwrap_or_default().trim();
        assert!(
            first.starts_with("install_panic_hook("),
            "{main}: the first statement of main is {first:?}"
        );
    }
}
