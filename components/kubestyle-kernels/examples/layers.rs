//! Per-layer timing of the convolutions of both networks (not a test): every layer shape of
//! TransformerNet and MultiStyle26 at `SIZE`² (default 1024), `REPS` runs each (default 3),
//! median milliseconds and GFLOP/s as a direct convolution, with the algorithm each one runs.
//!
//!   cargo run --release -p kubestyle-kernels --example layers -- [SIZE] [REPS] [FILTER]
//!
//! `FILTER` keeps the layers whose row (e.g. `MS | 9×9 3→32`) contains it.

use std::time::Instant;

use kubestyle_kernels::{Act, Conv};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let size: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let reps: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let filter = a.get(3).cloned().unwrap_or_default();
    // (network, cin, cout, k, stride, up, input size as a divisor of SIZE)
    let layers = [
        ("TN", 3, 32, 9, 1, 1, 1),
        ("TN", 32, 64, 3, 2, 1, 1),
        ("TN", 64, 128, 3, 2, 1, 2),
        ("TN", 128, 128, 3, 1, 1, 4),
        ("TN", 128, 64, 3, 1, 2, 4),
        ("TN", 64, 32, 3, 1, 2, 2),
        ("TN", 32, 3, 9, 1, 1, 1),
        ("MS", 3, 32, 9, 1, 1, 1),
        ("MS", 32, 32, 3, 2, 1, 1),
        ("MS", 32, 32, 3, 2, 1, 2),
        ("MS", 32, 32, 3, 1, 1, 4),
        ("MS", 32, 8, 3, 1, 2, 4),
        ("MS", 8, 4, 3, 1, 2, 2),
        ("MS", 4, 3, 9, 1, 1, 1),
    ];
    let mut seed = 1u32;
    let mut pseudo = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    println!("| net | layer | algorithm | ms | GFLOP/s |");
    println!("|---|---|---|---|---|");
    for (net, cin, cout, k, s, up, div) in layers {
        let name = format!("{net} | {k}×{k} {cin}→{cout} s{s} up{up}");
        if !name.contains(&filter) {
            continue;
        }
        let n = size / div;
        let x = Act {
            c: cin,
            h: n,
            w: n,
            data: pseudo(cin * n * n),
        };
        let conv = Conv::from_oihw(
            &pseudo(cout * cin * k * k),
            [cout, cin, k, k],
            Some(pseudo(cout)),
            s,
            up,
        );
        let (ho, wo) = conv.out_dims(n, n);
        let flop = 2.0 * (cin * cout * k * k * ho * wo) as f64;
        let _ = conv.forward(&x, true);
        let mut t: Vec<f64> = (0..reps)
            .map(|_| {
                let t0 = Instant::now();
                let r = conv.forward(&x, true);
                std::hint::black_box(r);
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        let ms = t[t.len() / 2];
        println!(
            "| {name} @{ho} | {} | {ms:.1} | {:.0} |",
            conv.algorithm_name(),
            flop / ms / 1e6
        );
    }
}
