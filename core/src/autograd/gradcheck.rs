//! Finite-difference gradient checks shared by every op's tests.
//!
//! The op under test maps inputs to an output `y`; the scalar checked is `L = Σ w ⊙ y` with fixed
//! random weights `w`, so every output element matters. Analytic gradients from the tape are compared
//! with central differences `(L(x+h) - L(x-h)) / 2h` computed in f64 from f32 forward passes.
//! Tolerance: |analytic - numeric| <= 2e-2 * max(1, |numeric|) with h = 1e-2 — central differences in
//! f32 carry O(h²) truncation and O(ε/h) rounding error (ε ≈ 6e-8 · |L|), both well under 1e-2 here.

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tape::{Tape, Tensor, Var};

/// Random inputs of the given shapes, in [-1, 1), from a fixed seed.
pub fn random_inputs(shapes: &[&[usize]], seed: u64) -> Vec<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|s| ArrayD::from_shape_fn(IxDyn(s), |_| rng.random_range(-1.0f32..1.0)))
        .collect()
}

/// Check `f`'s gradients on random inputs of `shapes`. Panics (this is test-only code) on mismatch.
pub fn check(shapes: &[&[usize]], f: impl Fn(&mut Tape, &[Var]) -> Var) {
    check_at(random_inputs(shapes, 7), f)
}

/// Check `f`'s gradients at the given input values.
pub fn check_at(inputs: Vec<Tensor>, f: impl Fn(&mut Tape, &[Var]) -> Var) {
    let run = |xs: &[Tensor], grad: bool| -> (Tape, Vec<Var>, Var) {
        let mut t = Tape::new(true, 3);
        let vars: Vec<Var> = xs.iter().map(|x| t.leaf(x.clone(), grad)).collect();
        let y = f(&mut t, &vars);
        (t, vars, y)
    };
    let (mut tape, vars, y) = run(&inputs, true);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let w = ArrayD::from_shape_fn(tape.value(y).raw_dim(), |_| rng.random_range(0.5f32..1.5));
    let loss = |xs: &[Tensor]| -> f64 {
        let (t, _, y) = run(xs, false);
        t.value(y)
            .iter()
            .zip(w.iter())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    tape.backward_with(y, w.clone()).unwrap();
    let h = 1e-2f32;
    for (k, x) in inputs.iter().enumerate() {
        let analytic = tape
            .grad(vars[k])
            .cloned()
            .unwrap_or_else(|| ArrayD::zeros(x.raw_dim()));
        for i in 0..x.len() {
            let mut xs = inputs.clone();
            xs[k].as_slice_mut().unwrap()[i] = x.as_slice().unwrap()[i] + h;
            let up = loss(&xs);
            xs[k].as_slice_mut().unwrap()[i] = x.as_slice().unwrap()[i] - h;
            let down = loss(&xs);
            let numeric = (up - down) / (2.0 * h as f64);
            let a = analytic.as_slice().unwrap()[i] as f64;
            assert!(
                (a - numeric).abs() <= 2e-2 * numeric.abs().max(1.0),
                "input {k}, element {i}: analytic {a} vs numeric {numeric} (shape {:?})",
                x.shape()
            );
        }
    }
}
