//! kiln's GEMM in GFLOP/s at n = 256, 512, 1024, as one JSON line for bench/run.sh (which runs it with
//! RAYON_NUM_THREADS=1 and =2 for the two columns beside OpenBLAS). Best of 5 timed batches.
//! `cargo run --release -p kiln-core --example sgemm`

use std::time::Instant;

use kiln_core::autograd::gemm;
use ndarray::Array2;

fn main() {
    let mut out = Vec::new();
    for n in [256usize, 512, 1024] {
        let a = Array2::<f32>::from_shape_fn((n, n), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.1);
        let b = a.t().to_owned();
        let mut c = Array2::<f32>::zeros((n, n));
        let reps = (1usize << 30) / (n * n * n) + 1;
        gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut()); // warm-up
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::INFINITY, f64::min);
        out.push(format!(
            "\"{n}\": {:.1}",
            2.0 * (n * n * n) as f64 / best / 1e9
        ));
    }
    println!("{{{}}}", out.join(", "));
}
