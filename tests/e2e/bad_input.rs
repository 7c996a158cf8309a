//! Bad specs, missing inputs and an unreachable endpoint are reported before any stage starts:
//! a clear message, the documented exit code, nothing written.

use crate::*;

fn expect_failure(spec: &std::path::Path, code: i32, needles: &[&str], env: &[(&str, String)]) {
    let out = pipeline(&["run", spec.to_str().unwrap()], env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
    assert!(!err.contains("==> [1/4]"), "a stage started: {err}");
}

#[test]
fn spec_errors_name_field_and_line_and_write_nothing() {
    let w = Workdir::new();
    let spec = w.spec_from_example(
        "demo.yaml",
        &[
            (
                "- images/",
                format!("- {}/", w.path().join("images").display()),
            ),
            ("  max_size: 320", "  max_size: 320\n  maxsize: 3".into()),
        ],
    );
    expect_failure(
        &spec,
        2,
        &["stylize.maxsize", "line 27", "unknown field `maxsize`"],
        &[],
    );
    let out = pipeline(&["validate", spec.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!w.volume().exists(), "the volume was created");

    let spec = w.spec_from_example(
        "demo.yaml",
        &[
            (
                "- images/",
                format!("- {}/", w.path().join("images").display()),
            ),
            ("  - \"23\"", "  - \"26\"".into()),
        ],
    );
    expect_failure(&spec, 2, &["styles[2]", "out of range"], &[]);
    assert!(!w.volume().exists());
}

#[test]
fn missing_input_is_named_before_any_stage() {
    let w = Workdir::new();
    let spec = w.spec_from_example("demo.yaml", &[("- images/", "- no-such-dir/".into())]);
    expect_failure(&spec, 3, &["no-such-dir", "does not exist"], &[]);
    assert!(!w.volume().exists(), "the volume was created");
    assert!(!w.out().exists());
}

#[test]
fn unreachable_endpoint_is_a_storage_error_before_any_stage() {
    let w = Workdir::new();
    let spec = w.spec_from_example("s3.yaml", &[]);
    let env = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    expect_failure(&spec, 5, &["127.0.0.1:9"], &env);
    assert!(!w.volume().exists());
}

#[test]
fn failing_stage_stops_the_run_with_its_exit_code_and_log_tail() {
    let w = Workdir::new();
    // Passes the preflight (the file exists), fails in stylize: not an image.
    std::fs::write(w.path().join("images/broken.jpg"), b"this is not a JPEG").unwrap();
    let spec = w.spec_from_example(
        "demo.yaml",
        &[(
            "- images/",
            format!("- {}/", w.path().join("images").display()),
        )],
    );
    let out = pipeline(&["run", spec.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("stage stylize failed with exit code 4 (input-invalid)"),
        "{err}"
    );
    assert!(
        err.contains("--- last lines of the stylize log ---"),
        "{err}"
    );
    assert!(err.contains("broken.jpg"), "{err}");
    // The earlier stages finished; stylize wrote neither outputs nor its manifest; the failing
    // stage's log is kept for reading; upload never ran.
    let vol = w.volume();
    assert!(vol.join("runs/demo/package-model.manifest.json").exists());
    assert!(!vol.join("runs/demo/stylize.manifest.json").exists());
    assert!(!vol.join("runs/demo/styled").exists());
    let log = std::fs::read_to_string(vol.join("runs/demo/stylize.log")).unwrap();
    assert!(log.contains("broken.jpg"), "{log}");
    assert!(!w.out().exists());
    assert!(!err.contains("==> [4/4]"), "{err}");
}

/// A program that records that it ran, then pretends to be `name` of another version.
fn fake_stage(dir: &std::path::Path, name: &str, marker: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$0 $*\" >> {}\necho '{name} 9.9.9'\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn stage_binaries_are_never_taken_from_path_and_must_be_ours() {
    let w = Workdir::new();
    let spec = w.spec_from_example(
        "demo.yaml",
        &[(
            "- images/",
            format!("- {}/", w.path().join("images").display()),
        )],
    );
    let marker = w.path().join("foreign-ran");
    let foreign = w.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    for b in ["download", "package-model", "stylize", "upload"] {
        fake_stage(&foreign, b, &marker);
    }
    // `pipeline` alone in a directory, with look-alikes on PATH: not found, none of them run.
    let lone = w.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(bin_dir().join("pipeline"), lone.join("pipeline")).unwrap();
    let path = format!("{}:{}", foreign.display(), std::env::var("PATH").unwrap());
    let out = Command::new(lone.join("pipeline"))
        .args(["run", spec.to_str().unwrap()])
        .env("PATH", &path)
        .env_remove("KUBESTYLE_BIN_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not found beside pipeline"), "{err}");
    assert!(err.contains("PATH is not searched"), "{err}");
    assert!(!marker.exists(), "a program from PATH was run");
    assert!(!w.volume().exists(), "the volume was created");

    // A directory named on purpose that holds something else: identified and refused.
    let out = pipeline(
        &[
            "run",
            spec.to_str().unwrap(),
            "--bin-dir",
            foreign.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not kubestyle's download"), "{err}");
    assert!(err.contains("download 9.9.9"), "{err}");
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        ran.lines().all(|l| l.ends_with(" --version")),
        "only `--version` may run: {ran}"
    );
    assert!(!w.volume().exists(), "the volume was created");
}
