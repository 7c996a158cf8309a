//! What a source may name (issue #12): local sources must be regular files after resolving
//! symlinks (nothing under `/proc`, `/sys`, `/dev`, no FIFO, socket or device); a list fetched
//! from S3 names S3 objects only; the local paths of a local list stay inside the list's
//! directory tree unless `--allow-root` allows another. Everything refused is exit 4, named,
//! with nothing written to the volume.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use kubestyle_testkit::S3Server;

/// A secret in the environment of the child: it must never reach the volume or the logs.
const SECRET: &str = "KSsecretENVIRONmarker0123456789";

fn download(vol: &Path) -> Command {
    let mut c = Command::cargo_bin("download").unwrap();
    c.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"])
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        // A FIFO opened for reading blocks until a writer comes: never wait for that.
        .timeout(Duration::from_secs(60));
    c
}

/// Everything under `dir`, directories and special files included.
fn everything(dir: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs `cmd`, which must fail with exit 4 naming every one of `names`, leaving `vol` empty and
/// printing no secret.
fn refused(mut cmd: Command, vol: &Path, names: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("exit 4 input-invalid"), "{err}");
    for n in names {
        assert!(err.contains(n), "stderr should name {n}: {err}");
    }
    assert!(!err.contains(SECRET), "secret leaked: {err}");
    assert_eq!(
        everything(vol),
        Vec::<String>::new(),
        "the volume was written"
    );
    err
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

#[test]
fn local_list_naming_proc_self_environ_is_refused() {
    let vol = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("ok.jpg"), b"ok").unwrap();
    let list = data.path().join("l.txt");
    std::fs::write(&list, "ok.jpg\n/proc/self/environ\n").unwrap();
    let mut c = download(vol.path());
    c.arg("--list").arg(&list);
    let err = refused(c, vol.path(), &["/proc/self/environ", "/proc"]);
    println!("{err}");
    // The same in a CSV list, and with --allow-root /: pseudo-files are never sources.
    let csv = data.path().join("l.csv");
    std::fs::write(&csv, "path\nok.jpg\n/proc/self/environ\n").unwrap();
    let mut c = download(vol.path());
    c.arg("--list").arg(&csv).args(["--allow-root", "/"]);
    refused(c, vol.path(), &["/proc/self/environ"]);
    // A list that is itself a pseudo-file is refused before its lines are read (they would be
    // printed in "does not exist" messages).
    let mut c = download(vol.path());
    c.args(["--list", "/proc/self/environ"]);
    refused(c, vol.path(), &["/proc/self/environ"]);
}

#[test]
fn fifo_device_and_symlink_to_environ_as_sources_are_refused() {
    let vol = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let fifo = data.path().join("pipe.jpg");
    mkfifo(&fifo);
    let link = data.path().join("env.jpg");
    std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
    std::fs::write(data.path().join("ok.jpg"), b"ok").unwrap();
    for (src, names) in [
        (fifo.display().to_string(), vec!["pipe.jpg", "FIFO"]),
        (link.display().to_string(), vec!["env.jpg", "/proc"]),
        (format!("file://{}", link.display()), vec!["env.jpg"]),
        ("/dev/null".to_string(), vec!["/dev/null"]),
        ("/proc/self/environ".to_string(), vec!["/proc/self/environ"]),
    ] {
        let mut c = download(vol.path());
        c.arg(data.path().join("ok.jpg")).arg(&src);
        let err = refused(c, vol.path(), &names);
        println!("{src}: {err}");
    }
    // Found walking a directory: both are named, and nothing of the directory is copied.
    let mut c = download(vol.path());
    c.arg(data.path());
    refused(c, vol.path(), &["pipe.jpg", "env.jpg"]);
    // A directory source under /proc is not walked at all.
    let mut c = download(vol.path());
    c.arg("/proc/self/");
    refused(c, vol.path(), &["/proc/self"]);
    // --include leaves the special files out: the rest is copied.
    let out = download(vol.path())
        .arg(data.path())
        .args(["--include", "ok.*"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = data.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(
        std::fs::read(vol.path().join(format!("runs/t/inputs/local/{dir}/ok.jpg"))).unwrap(),
        b"ok"
    );
}

#[test]
fn local_list_entries_stay_inside_the_lists_directory() {
    let vol = tempfile::tempdir().unwrap();
    let top = tempfile::tempdir().unwrap();
    let lists = top.path().join("lists");
    std::fs::create_dir_all(lists.join("sub")).unwrap();
    std::fs::write(top.path().join("outside.jpg"), b"outside").unwrap();
    std::fs::write(lists.join("sub/in.jpg"), b"in").unwrap();
    let list = lists.join("l.txt");
    std::fs::write(&list, "sub/in.jpg\n../outside.jpg\n").unwrap();
    let run = |extra: &[&str]| {
        let mut c = download(vol.path());
        c.arg("--list").arg(&list).args(extra);
        c
    };
    let err = refused(run(&[]), vol.path(), &["../outside.jpg", "--allow-root"]);
    println!("{err}");
    // A symlink inside the list's directory that leads outside it, and an absolute entry.
    std::os::unix::fs::symlink(top.path().join("outside.jpg"), lists.join("link.jpg")).unwrap();
    let abs = top.path().join("outside.jpg").display().to_string();
    std::fs::write(&list, format!("link.jpg\n{abs}\n")).unwrap();
    refused(run(&[]), vol.path(), &["link.jpg", &abs]);
    // An --allow-root that does not exist is a usage error.
    let out = run(&["--allow-root", "/nonexistent/root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(everything(vol.path()).is_empty());
    // Allowed explicitly: accepted and copied.
    std::fs::write(&list, "sub/in.jpg\n../outside.jpg\n").unwrap();
    let root = top.path().to_str().unwrap();
    let out = run(&["--allow-root", root]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(vol.path().join("runs/t/inputs/local/outside.jpg")).unwrap(),
        b"outside"
    );
    assert_eq!(
        std::fs::read(vol.path().join("runs/t/inputs/local/in.jpg")).unwrap(),
        b"in"
    );
    // Command-line sources are the user's own choice: no root applies to them.
    let vol2 = tempfile::tempdir().unwrap();
    let out = download(vol2.path())
        .arg(top.path().join("outside.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn s3_list_naming_a_local_path_is_refused() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("locallist").await;
    s3.put(&b, "lists/a.jpg", b"a").await;
    s3.put(
        &b,
        "lists/l.txt",
        b"a.jpg\n/etc/hostname\nfile:///etc/passwd\n",
    )
    .await;
    let vol = tempfile::tempdir().unwrap();
    let mut c = download(vol.path());
    c.envs(s3.env())
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .arg("--list")
        .arg(format!("s3://{b}/lists/l.txt"));
    let err = refused(c, vol.path(), &["/etc/hostname", "file:///etc/passwd"]);
    println!("{err}");
    assert!(err.contains("names only S3 objects"), "{err}");
}
