//! Every key must be storable on the volume before the first write (issue #12): a path needed
//! both as a file and as a directory, names and paths too long for the file system, keys that
//! differ only by case, `.`/`..`/empty components, and what the volume already holds in the
//! way. Each is exit 4, every clash named, and nothing written (no file, no temp file, no
//! manifest). Against real moto objects and with local lists.

use std::path::Path;

use assert_cmd::Command;
use kubestyle_testkit::{S3Server, files};

fn download(vol: &Path) -> Command {
    let mut c = Command::cargo_bin("download").unwrap();
    c.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"]);
    c
}

/// Runs `c`, which must fail with exit 4 naming every one of `names`; returns stderr.
fn refused(mut c: Command, names: &[&str]) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{err}");
    for n in names {
        assert!(err.contains(n), "stderr should name {n}: {err}");
    }
    err
}

#[tokio::test]
async fn s3_keys_that_cannot_all_be_stored_are_refused_before_any_write() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("storable").await;
    let long_name = format!("l/{}.jpg", "n".repeat(246)); // 250 bytes: fits, its temp file not
    let keys = [
        "ok.jpg",
        "p/x.jpg",
        "p/x.jpg/y.jpg",
        "c/Photo.JPG",
        "c/photo.jpg",
        "q/X.png",
        "q/x.png/inner.png",
        long_name.as_str(),
        "d/./dot.jpg",
        "d//empty.jpg",
        "d/../dotdot.jpg",
    ];
    for k in keys {
        s3.put(&b, k, k.as_bytes()).await;
    }
    let vol = tempfile::tempdir().unwrap();
    let mut c = download(vol.path());
    c.envs(s3.env()).arg(format!("s3://{b}/"));
    let err = refused(
        c,
        &[
            &format!("s3://{b}/p/x.jpg and s3://{b}/p/x.jpg/y.jpg"),
            "would have to be a file and a directory",
            &format!("s3://{b}/c/Photo.JPG and s3://{b}/c/photo.jpg differ only by letter case"),
            "--allow-case-clash",
            &format!("s3://{b}/q/X.png and s3://{b}/q/x.png/inner.png"),
            "case-insensitive volume",
            &format!("s3://{b}/{long_name} cannot be stored"),
            "250 bytes",
            "dot.jpg",
            "empty.jpg",
            "dotdot.jpg",
        ],
    );
    println!("{err}");
    assert!(!err.contains("ok.jpg"), "{err}");
    assert!(
        files(vol.path()).is_empty(),
        "wrote {:?}",
        files(vol.path())
    );

    // Case clashes only: accepted with --allow-case-clash (the test volume is case-sensitive).
    let b2 = s3.bucket("caseok").await;
    s3.put(&b2, "c/Photo.JPG", b"upper").await;
    s3.put(&b2, "c/photo.jpg", b"lower").await;
    let mut c = download(vol.path());
    c.envs(s3.env()).arg(format!("s3://{b2}/"));
    refused(c, &["differ only by letter case"]);
    assert!(files(vol.path()).is_empty());
    let out = download(vol.path())
        .envs(s3.env())
        .arg(format!("s3://{b2}/"))
        .arg("--allow-case-clash")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(vol.path().join(format!("runs/t/inputs/{b2}/c/Photo.JPG"))).unwrap(),
        b"upper"
    );
}

#[tokio::test]
async fn what_the_volume_already_holds_and_path_max() {
    let s3 = S3Server::get().await;
    let b = s3.bucket("inway").await;
    s3.put(&b, "f/z.jpg", b"z").await;
    s3.put(&b, "dir.jpg", b"d").await;
    s3.put(&b, "fine.jpg", b"fine").await;
    let vol = tempfile::tempdir().unwrap();
    // A file where a directory must go, a directory where a file must go.
    std::fs::create_dir_all(vol.path().join(format!("runs/t/inputs/{b}/dir.jpg"))).unwrap();
    std::fs::write(
        vol.path().join(format!("runs/t/inputs/{b}/f")),
        b"in the way",
    )
    .unwrap();
    let before = files(vol.path());
    let mut c = download(vol.path());
    c.envs(s3.env()).arg(format!("s3://{b}/"));
    let err = refused(
        c,
        &[
            &format!("s3://{b}/f/z.jpg cannot be stored"),
            &format!("already has a file at runs/t/inputs/{b}/f"),
            &format!("s3://{b}/dir.jpg cannot be stored"),
            "already has a directory there",
        ],
    );
    println!("{err}");
    assert_eq!(files(vol.path()), before);

    // A path over PATH_MAX: every component fits, the whole does not.
    let dest: Vec<String> = (0..21)
        .map(|i| format!("{i:02}{}", "d".repeat(198)))
        .collect();
    let dest = dest.join("/");
    let vol = tempfile::tempdir().unwrap();
    let mut c = download(vol.path());
    c.envs(s3.env())
        .args(["--dest", &dest])
        .arg(format!("s3://{b}/fine.jpg"));
    let err = refused(
        c,
        &[&format!("s3://{b}/fine.jpg cannot be stored"), "PATH_MAX"],
    );
    println!("{err}");
    assert!(files(vol.path()).is_empty());
}

#[test]
fn local_lists_with_clashing_names_are_refused_before_any_write() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    std::fs::create_dir_all(d.join("one")).unwrap();
    std::fs::create_dir_all(d.join("two/x.jpg")).unwrap();
    std::fs::create_dir_all(d.join("three")).unwrap();
    std::fs::write(d.join("one/x.jpg"), b"file").unwrap();
    std::fs::write(d.join("two/x.jpg/y.jpg"), b"inside").unwrap();
    std::fs::write(d.join("one/Cat.png"), b"upper").unwrap();
    std::fs::write(d.join("three/cat.png"), b"lower").unwrap();
    let long = "m".repeat(250);
    std::fs::write(d.join(&long), b"long").unwrap();
    std::fs::write(d.join("fine.png"), b"fine").unwrap();
    let list = d.join("l.txt");
    std::fs::write(
        &list,
        format!("fine.png\none/x.jpg\ntwo/x.jpg\none/Cat.png\nthree/cat.png\n{long}\n"),
    )
    .unwrap();
    let vol = tempfile::tempdir().unwrap();
    let mut c = download(vol.path());
    c.arg("--list").arg(&list);
    let x = d.join("one/x.jpg").canonicalize().unwrap();
    let y = d.join("two/x.jpg/y.jpg").canonicalize().unwrap();
    let upper = d.join("one/Cat.png").canonicalize().unwrap();
    let lower = d.join("three/cat.png").canonicalize().unwrap();
    let err = refused(
        c,
        &[
            &format!("{} and {} cannot both be stored", x.display(), y.display()),
            &format!(
                "{} and {} differ only by letter case",
                upper.display(),
                lower.display()
            ),
            &long[..32],
            "250 bytes",
        ],
    );
    println!("{err}");
    assert!(
        files(vol.path()).is_empty(),
        "wrote {:?}",
        files(vol.path())
    );
}
