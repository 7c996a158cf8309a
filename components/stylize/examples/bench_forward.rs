//! Forward-pass timing worker for `scripts/bench.py` (not a test): loads a package, runs a
//! warm-up and `--reps` timed forward passes on a `--size`² image, prints one JSON line with
//! the times and the process's peak RSS.
//!
//!   cargo run --release -p stylize --example bench_forward -- PACKAGE_DIR SIZE REPS [fused|flex|tch]
//!   cargo run --release -p stylize --example bench_forward -- --packages VOLUME RUN_ID
//!
//! `--packages` prints, as one JSON object, the package directory of each architecture that
//! `package-model` wrote for run `RUN_ID` on `VOLUME`, read from its manifest through the
//! contract crate: the benchmark never copies the volume's layout.
//!
//! `fused`: kubestyle's fused CPU kernels (stylize's default on the CPU); `flex`: burn-flex's
//! tensor ops; `tch`: libtorch (build with `--features tch`).

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// `{"<architecture>": "<absolute package dir>", …}` from the package-model manifest of `run_id`.
fn print_packages(volume: &std::path::Path, run_id: &str) {
    use kubestyle_manifest::Manifest;
    use kubestyle_manifest::command::package_model::NAME;
    use kubestyle_manifest::manifest::manifest_path;
    let path = manifest_path(volume, run_id, NAME);
    let m = match Manifest::read(&path, volume) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(4);
        }
    };
    let mut out = serde_json::Map::new();
    for o in &m.outputs {
        let (Some(arch), Some(pkg)) = (
            o.attributes.get("architecture").and_then(|v| v.as_str()),
            o.attributes.get("package").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let dir = volume.join(pkg);
        out.insert(arch.to_string(), dir.to_string_lossy().into_owned().into());
    }
    println!("{}", serde_json::Value::Object(out));
}

fn main() {
    // `RUST_LOG=kubestyle_models=trace` prints per-layer timings of the fused kernels.
    kubestyle_manifest::telemetry::init_tracing();
    let a: Vec<String> = std::env::args().collect();
    if a.len() == 4 && a[1] == "--packages" {
        return print_packages(std::path::Path::new(&a[2]), &a[3]);
    }
    if a.len() < 4 {
        eprintln!(
            "usage: bench_forward PACKAGE_DIR SIZE REPS [fused|flex|tch] | --packages VOLUME RUN_ID"
        );
        std::process::exit(2);
    }
    let (dir, size, reps) = (
        &a[1],
        a[2].parse::<usize>().unwrap_or(512),
        a[3].parse::<usize>().unwrap_or(3),
    );
    let backend = a.get(4).map(String::as_str).unwrap_or("fused");
    let device = match backend {
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => Device::libtorch(),
        "flex" | "fused" => Device::flex(),
        other => {
            eprintln!("backend {other} not built in");
            std::process::exit(2);
        }
    };
    let (card, net) = match kubestyle_models::load_package(std::path::Path::new(dir), &device) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(4);
        }
    };
    // A smooth deterministic test pattern in 0..1.
    let data: Vec<f32> = (0..3 * size * size)
        .map(|i| ((i % size) as f32 * 0.01 + (i / size) as f32 * 0.003).sin() * 0.5 + 0.5)
        .collect();
    let mut style = vec![0.0f32; card.styles.len()];
    style[0] = 1.0;
    let fused = (backend == "fused").then(|| kubestyle_models::FusedNet::new(&net));
    let x = Tensor::<4>::from_data(TensorData::new(data.clone(), [1, 3, size, size]), &device);
    let run = || match &fused {
        Some(f) => {
            let s = net.style_weights(&style).expect("style");
            let _ = f
                .stylize(&data, size, size, &s, kubestyle_models::NormStats::Own)
                .expect("forward");
        }
        None => {
            let y = net.stylize(x.clone(), &style).expect("forward");
            // Reading the result forces the computation on lazy backends.
            let _ = y.into_data();
        }
    };
    run();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        run();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{{\"impl\":\"{}\",\"arch\":\"{}\",\"size\":{size},\"times_ms\":{:?},\"peak_rss_mb\":{:.0}}}",
        match backend {
            "fused" => "kubestyle-fused".to_string(),
            b => format!("burn-{b}"),
        },
        card.architecture.name(),
        times,
        peak_rss_mb()
    );
}
