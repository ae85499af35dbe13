//! Latency of kiln's own engine against tract on one model, natively: the median of many
//! runs at batch 1 and 64. `cargo run --release --example engine_latency -- MODEL.onnx`
use std::time::Instant;

use kiln_core::onnx::engine::{KilnSession, Value};
use kiln_core::onnx::tract::{TensorData, TractSession};
use kiln_core::Tensor;
use ndarray::IxDyn;

fn median(mut f: impl FnMut(), reps: usize) -> f64 {
    for _ in 0..reps {
        f();
    }
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[7]
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "web-demo/model/digits.onnx".into());
    let bytes = std::fs::read(&path).expect("model");
    let lite = KilnSession::from_bytes(&bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("declined: {}", u.0));
    let tract = TractSession::from_bytes(&bytes).unwrap();
    let info = &lite.inputs()[0];
    for batch in [1usize, 64] {
        let mut shape = vec![batch];
        shape.extend(info.dims[1..].iter().map(|d| d.unwrap_or(1)));
        let n: usize = shape.iter().product();
        let x = Tensor::from_shape_vec(
            IxDyn(&shape),
            (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
        )
        .unwrap();
        let reps = if batch == 1 { 2000 } else { 50 };
        let name = info.name.clone();
        let l = median(
            || {
                drop(
                    lite.run(vec![(name.clone(), Value::F32(x.clone()))])
                        .unwrap(),
                )
            },
            reps,
        );
        let t = median(
            || drop(tract.run(vec![TensorData::F32(x.clone())]).unwrap()),
            reps,
        );
        println!(
            "batch {batch}: kiln engine {l:.4} ms, tract {t:.4} ms ({:.2}x)",
            l / t
        );
    }
}
