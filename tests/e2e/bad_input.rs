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
        &["stylize.maxsize", "line 24", "unknown field `maxsize`"],
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
