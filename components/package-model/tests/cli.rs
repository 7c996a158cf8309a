//! `package-model` end to end: real weight files in, packages and a manifest out; bad input
//! exits with the documented code and writes nothing.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use kubestyle_manifest::Manifest;
use kubestyle_manifest::manifest::manifest_path;
use kubestyle_models::package::read_card;
use kubestyle_testkit::files;

use kubestyle_testkit::assets;

fn tn_fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kubestyle-models/tests/fixtures/transformer_net/generated")
        .join(name);
    assert!(p.exists(), "{} missing: run scripts/test.sh", p.display());
    p
}

fn bin(vol: &Path) -> Command {
    let mut c = Command::cargo_bin("package-model").unwrap();
    c.args(["--volume", vol.to_str().unwrap(), "--run-id", "t"]);
    c
}

#[test]
fn packages_the_trained_onnx_network() {
    let vol = tempfile::tempdir().unwrap();
    let onnx = vol.path().join("multistyle26.onnx");
    std::fs::copy(assets().join("multistyle26.onnx"), &onnx).unwrap();
    let out = bin(vol.path()).arg(&onnx).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let card = read_card(&vol.path().join("runs/t/models/multistyle26")).unwrap();
    assert_eq!(card.architecture.name(), "multistyle26");
    assert_eq!(card.styles.len(), 26);
    assert_eq!(card.styles[7], "style-07");
    assert_eq!(card.parameters, 166_104);
    assert_eq!(
        card.source.sha256.as_str(),
        "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"
    );
    let m = Manifest::read(&manifest_path(vol.path(), "t", "package-model"), vol.path()).unwrap();
    assert_eq!(
        m.inputs.len(),
        1,
        "the ONNX file is on the volume, so it is an input"
    );
    let names: Vec<&str> = m.outputs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["multistyle26/model.bpk", "multistyle26/model.json"]);
    for a in &m.outputs {
        a.verify(vol.path()).unwrap();
    }
}

#[test]
fn packages_zip_and_legacy_pth() {
    let vol = tempfile::tempdir().unwrap();
    let out = bin(vol.path())
        .arg(tn_fixture("tn_zip.pth"))
        .arg(tn_fixture("tn_legacy.pth"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let zip = read_card(&vol.path().join("runs/t/models/tn_zip")).unwrap();
    let legacy = read_card(&vol.path().join("runs/t/models/tn_legacy")).unwrap();
    assert_eq!(zip.source.format.name(), "pth-zip");
    assert_eq!(legacy.source.format.name(), "pth-legacy");
    assert!(zip.dropped_keys.is_empty());
    assert_eq!(legacy.dropped_keys.len(), 30);
    assert_eq!(
        (zip.styles.clone(), zip.parameters),
        (vec!["tn_zip".to_string()], 1_679_235)
    );
    // Same weights, same package bytes.
    assert_eq!(zip.weights.sha256, legacy.weights.sha256);
}

fn refused(vol: &Path, args: &[&std::ffi::OsStr], code: i32, needle: &str) {
    let out = bin(vol).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    let left: Vec<String> = files(vol)
        .into_iter()
        .filter(|f| !f.starts_with("in/"))
        .collect();
    assert!(left.is_empty(), "wrote {left:?}");
}

#[test]
fn bad_weights_are_refused_and_nothing_is_written() {
    let vol = tempfile::tempdir().unwrap();
    let dir = vol.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    // Truncated zip .pth.
    let bytes = std::fs::read(tn_fixture("tn_zip.pth")).unwrap();
    std::fs::write(dir.join("trunc.pth"), &bytes[..bytes.len() / 2]).unwrap();
    refused(
        vol.path(),
        &[dir.join("trunc.pth").as_os_str()],
        4,
        "trunc.pth",
    );
    // Truncated legacy .pth.
    let bytes = std::fs::read(tn_fixture("tn_legacy.pth")).unwrap();
    std::fs::write(dir.join("trunc_legacy.pth"), &bytes[..bytes.len() - 1000]).unwrap();
    refused(
        vol.path(),
        &[dir.join("trunc_legacy.pth").as_os_str()],
        4,
        "trunc_legacy.pth",
    );
    // Garbage ONNX.
    std::fs::write(
        dir.join("junk.onnx"),
        b"\x08\x07this is not a protobuf model at all \xff\xff\xff",
    )
    .unwrap();
    refused(
        vol.path(),
        &[dir.join("junk.onnx").as_os_str()],
        4,
        "junk.onnx",
    );
    // Truncated ONNX.
    let onnx = std::fs::read(assets().join("multistyle26.onnx")).unwrap();
    std::fs::write(dir.join("cut.onnx"), &onnx[..onnx.len() / 3]).unwrap();
    refused(
        vol.path(),
        &[dir.join("cut.onnx").as_os_str()],
        4,
        "cut.onnx",
    );
    // The right file read as another architecture: every offending key is named.
    std::fs::write(dir.join("ms.onnx"), &onnx).unwrap();
    refused(
        vol.path(),
        &[
            "--architecture".as_ref(),
            "transformer-net".as_ref(),
            dir.join("ms.onnx").as_os_str(),
        ],
        4,
        "missing conv1.conv2d.weight",
    );
    // Not a weight file at all, and a missing one.
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    refused(
        vol.path(),
        &[dir.join("notes.txt").as_os_str()],
        4,
        "unknown weight format",
    );
    refused(
        vol.path(),
        &[dir.join("absent.pth").as_os_str()],
        3,
        "absent.pth",
    );
}

/// Promise: models come only from the model sources the command line (the spec, through
/// `pipeline`) names: with `--source`, a weights file the download manifest lists from any
/// other source (one that sat among the photos) is not packaged, and a named source missing
/// from the manifest is exit 3.
#[test]
fn only_the_named_model_sources_are_packaged() {
    use kubestyle_manifest::{Artifact, ArtifactKind, StageRun};
    let vol = tempfile::tempdir().unwrap();
    let onnx = std::fs::read(assets().join("multistyle26.onnx")).unwrap();
    for rel in ["in/models/multistyle26.onnx", "in/photos/evil.onnx"] {
        let p = vol.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, &onnx).unwrap();
    }
    let art = |rel: &str, source: &str| {
        let mut a = Artifact::from_file(vol.path(), rel, rel, ArtifactKind::Model).unwrap();
        a.source = Some(source.into());
        a
    };
    let outputs = vec![
        art(
            "in/models/multistyle26.onnx",
            "s3://models/multistyle26.onnx",
        ),
        art("in/photos/evil.onnx", "s3://photos/evil.onnx"),
    ];
    StageRun::start("download", "0", "t")
        .finish(serde_json::json!({}), &[], vec![], outputs)
        .write(&manifest_path(vol.path(), "t", "download"))
        .unwrap();
    let out = bin(vol.path())
        .args(["--source", "s3://models/multistyle26.onnx"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = Manifest::read(&manifest_path(vol.path(), "t", "package-model"), vol.path()).unwrap();
    let names: Vec<&str> = m.outputs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["multistyle26/model.bpk", "multistyle26/model.json"]);
    assert!(!vol.path().join("runs/t/models/evil").exists());

    let out = bin(vol.path())
        .args(["--source", "s3://models/candy.pth", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no model file from s3://models/candy.pth"),
        "{out:?}"
    );
}
