//! Native latency of `TractSession` on one model: load → first prediction, then the median
//! time of one `run` at batch 1 and batch 64 (and the first call at each new batch size, which
//! pays for specialising the plan to that size). For profiling the inference path with perf:
//!
//! `cargo run --release -p kiln-core --example infer_latency -- web-demo/model/digits.onnx [SECONDS [BATCH…]]`
//!
//! (SECONDS of timed runs per batch size, default 2; batch sizes default to 1 and 64.)
//!
//! The model's first input must be float32 with a free leading (batch) dimension; the other
//! free dimensions are set to 1.

use std::time::{Duration, Instant};

use kiln_core::onnx::tract::{TensorData, TractSession};
use ndarray::ArrayD;

fn input(session: &TractSession, batch: usize) -> Vec<TensorData> {
    session
        .inputs()
        .iter()
        .map(|info| {
            let shape: Vec<usize> = info
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| if i == 0 { batch } else { d.unwrap_or(1) })
                .collect();
            let n: usize = shape.iter().product();
            // deterministic values in [0, 1], like wasm/bench-node.mjs
            let data = (0..n).map(|i| ((i * 7919) % 17) as f32 / 16.0).collect();
            TensorData::F32(ArrayD::from_shape_vec(shape, data).expect("shape matches data"))
        })
        .collect()
}

/// Median ms per call over groups of calls, for at least `budget` in total.
fn latency(session: &TractSession, batch: usize, budget: Duration) -> (f64, f64) {
    let x = input(session, batch);
    let t = Instant::now();
    session.run(x.clone()).expect("first run");
    let first = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..50 {
        session.run(x.clone()).expect("warm-up run");
    }
    let mut groups = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || groups.len() < 11 {
        let t = Instant::now();
        for _ in 0..20 {
            session.run(x.clone()).expect("run");
        }
        groups.push(t.elapsed().as_secs_f64() * 1e3 / 20.0);
    }
    groups.sort_by(f64::total_cmp);
    (first, groups[groups.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: infer_latency MODEL.onnx [SECONDS per batch size [BATCH…]]");
        std::process::exit(2);
    };
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mut batches: Vec<usize> = args.filter_map(|s| s.parse().ok()).collect();
    if batches.is_empty() {
        batches = vec![1, 64];
    }
    let t = Instant::now();
    let session = TractSession::from_path(&path).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let load = t.elapsed().as_secs_f64() * 1e3;
    println!("load {load:.2} ms");
    for batch in batches {
        let (first, median) = latency(&session, batch, Duration::from_secs_f64(secs));
        println!("batch {batch}: first call {first:.3} ms, median {median:.4} ms");
    }
    // Asked last: for a model with free dimensions this makes the symbolic plan.
    println!("optimised: {}", session.is_optimized());
}
