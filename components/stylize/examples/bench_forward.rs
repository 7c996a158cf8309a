//! Forward-pass timing worker for `scripts/bench.py` (not a test): loads a package, runs a
//! warm-up and `--reps` timed forward passes on a `--size`² image, prints one JSON line with
//! the times and the process's peak RSS.
//!
//!   cargo run --release -p stylize --example bench_forward -- PACKAGE_DIR SIZE REPS [fused|flex|tch]
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

fn main() {
    // `RUST_LOG=kubestyle_models=trace` prints per-layer timings of the fused kernels.
    kubestyle_manifest::telemetry::init_tracing();
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: bench_forward PACKAGE_DIR SIZE REPS [fused|flex|tch]");
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
