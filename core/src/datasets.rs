//! Small synthetic data sets generated in code (no downloads), for examples, tests and benchmarks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::autograd::Tensor;

/// Two interleaved spirals in the plane: `n` points per class, inputs `[2n, 2]`, labels 0 and 1.
/// Not linearly separable, so a classifier above 95% has learned a real boundary.
pub fn two_spirals(n: usize, noise: f32, seed: u64) -> (Tensor, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(4 * n);
    let mut y = Vec::with_capacity(2 * n);
    for class in 0..2 {
        for i in 0..n {
            let t = 0.25 + 2.75 * std::f32::consts::PI * (i as f32 / n as f32);
            let sign = if class == 0 { 1.0 } else { -1.0 };
            x.push(sign * t * t.cos() / 8.0 + noise * rng.random_range(-1.0..1.0));
            x.push(sign * t * t.sin() / 8.0 + noise * rng.random_range(-1.0..1.0));
            y.push(class);
        }
    }
    (
        Tensor::from_shape_vec(vec![2 * n, 2], x).expect("2n × 2 values"),
        y,
    )
}
