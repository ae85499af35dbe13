//! kiln's ONNX inference for JavaScript: the browser, Web Workers and Node.
//!
//! This crate is the thin wasm-bindgen layer over [`kiln_core::infer`], so a model gives the same
//! predictions here as in Python's `kiln.InferenceSession`. The npm package's hand-written
//! `index.js` is the public face; these exports are its private plumbing: `Session` holds a
//! model, a `Feed` carries the inputs in, `Outputs` hands the results out.
//!
//! Two modules are built from this crate (wasm/build.sh): `kiln_wasm_bg.wasm` with the `infer`
//! feature (inference only: what every page downloads) and `kiln_train_bg.wasm` with `train`
//! (the `Trainer`: kiln-core's autodiff, optimizers, fit loop and ONNX export). The trainer costs
//! 0.55 MB raw / 0.17 MB gzip, so a page that only predicts never downloads it.
#![warn(missing_docs)]

mod error;
mod panic;
#[cfg(feature = "infer")]
mod session;
#[cfg(feature = "train")]
mod trainer;

use kiln_core::{KilnError, Result};
use ndarray::{ArrayD, IxDyn};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
fn start() {
    panic::install();
}

/// `data` shaped by `dims` (as JavaScript passes them), or an error naming `what` when the sizes
/// don't multiply to the data's length.
pub(crate) fn array<T>(what: &str, data: Vec<T>, dims: &[u32]) -> Result<ArrayD<T>> {
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let needed = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if needed != Some(data.len()) {
        let needed = needed.map_or("more than 2^32".into(), |n| n.to_string());
        return Err(KilnError::shape(format!(
            "{what}: dims {shape:?} need {needed} values, the data has {}",
            data.len()
        )));
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| KilnError::shape(format!("{what}: {e}")))
}
