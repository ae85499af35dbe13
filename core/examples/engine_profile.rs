//! Where kiln's engine spends a run, natively: each step of the plan's median milliseconds over
//! many runs at one batch size. `cargo run --release --example engine_profile -- MODEL.onnx [BATCH] [cpu]`
use std::time::Instant;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_ms;

use kiln_core::onnx::engine::{KilnSession, Value};
use kiln_core::Tensor;
use ndarray::IxDyn;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "web-demo/model/digits.onnx".into());
    let batch: usize = args.next().map_or(64, |b| b.parse().expect("a batch size"));
    let bytes = std::fs::read(&path).expect("model");
    let sess = KilnSession::from_bytes(&bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("declined: {}", u.0));
    let info = &sess.inputs()[0];
    let mut shape = vec![batch];
    shape.extend(info.dims[1..].iter().map(|d| d.unwrap_or(1)));
    let n: usize = shape.iter().product();
    let x = Tensor::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
    )
    .unwrap();
    // `cpu` as a third argument: this thread's CPU time rather than the wall clock, so that a
    // busy machine's other processes leave the figures alone (mostly: caches are shared)
    let cpu = args.next().is_some_and(|a| a == "cpu");
    let start = Instant::now();
    let now = || match cpu {
        true => thread_cpu_ms(),
        false => start.elapsed().as_secs_f64() * 1e3,
    };
    let reps = if batch == 1 { 2000 } else { 100 };
    let mut runs: Vec<Vec<(String, f64)>> = (0..reps)
        .map(|_| {
            sess.profile(vec![(info.name.clone(), Value::F32(x.clone()))], &now, true)
                .unwrap()
                .1
        })
        .collect();
    let steps = runs[0].len();
    let mut total = 0.0;
    for s in 0..steps {
        let mut t: Vec<f64> = runs.iter_mut().map(|r| r[s].1).collect();
        t.sort_by(f64::total_cmp);
        total += t[t.len() / 2];
        println!("{:>9.4} ms  {}", t[t.len() / 2], runs[0][s].0);
    }
    println!("{total:>9.4} ms  total (sum of medians), batch {batch}");
}
