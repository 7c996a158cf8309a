//! Set-up shared by stylize's integration tests.

use std::path::Path;

/// Package the trained MultiStyle26 network (from the test assets) onto `vol` as run `t`, with
/// package-model's own code: `<vol>/runs/t/models/multistyle26`.
pub fn package_multistyle26(vol: &Path) {
    use clap::Parser;
    let onnx = kubestyle_testkit::assets().join("multistyle26.onnx");
    let argv = [
        "package-model",
        "--volume",
        vol.to_str().unwrap(),
        "--run-id",
        "t",
        onnx.to_str().unwrap(),
    ];
    kubestyle_package_model::run(kubestyle_package_model::Args::parse_from(argv)).unwrap();
}
