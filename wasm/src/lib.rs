//! kiln for JavaScript: the browser, Web Workers and Node.
//!
//! This crate is the thin wasm-bindgen layer over kiln-core, so a model gives the same predictions
//! here as in Python. The npm package's hand-written `index.js` is the public face; these exports
//! are its private plumbing.
//!
//! Three modules are built from this crate (wasm/build.sh), so a page downloads only what it uses:
//! - `kiln_core_bg.wasm` (feature `core`): kiln's own ONNX engine (`engine`: the graphs kiln
//!   exports, on the ops that train them), tokenizers and generation (`text`), image preprocessing
//!   and drift monitoring (`drift`). kiln-core without tract and without its `train` feature, so
//!   none of the ops' backward code is linked. Every `loadModel` starts here. Built twice: once
//!   more with relaxed SIMD (`kiln_core_relaxed_bg.wasm`, fused multiply-adds in the kernels),
//!   which index.js loads where the JavaScript engine runs relaxed SIMD.
//! - `kiln_train_bg.wasm` (feature `train`): the same plus the `Trainer` (autodiff, optimizers,
//!   the fit loop, ONNX export), fetched only by `initTrainer` / `Trainer.from*`.
//! - `kiln_wasm_bg.wasm` (feature `infer`): tract, for every other ONNX model (2 MB gzip),
//!   fetched only when kiln's engine declines a model.
#![warn(missing_docs)]

#[cfg(feature = "core")]
mod drift;
#[cfg(feature = "core")]
mod engine;
mod error;
mod panic;
#[cfg(feature = "infer")]
mod session;
mod text;
#[cfg(feature = "train")]
mod trainer;

use kiln_core::{KilnError, Result, Tensor};
use ndarray::{ArrayD, IxDyn};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
fn start() {
    panic::install();
}

/// The SIMD instructions this module was compiled for: `"relaxed-simd"` (kiln_core_relaxed_bg.wasm:
/// simd128 plus relaxed SIMD's fused multiply-adds) or `"simd128"`. The module says it itself, so
/// the answer holds whichever file a caller handed `initKiln`.
#[wasm_bindgen(js_name = simdLevel)]
pub fn simd_level() -> String {
    if cfg!(target_feature = "relaxed-simd") {
        "relaxed-simd"
    } else if cfg!(target_feature = "simd128") {
        "simd128"
    } else {
        "none"
    }
    .into()
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

/// A tensor's values in row-major order, without a copy when it already is laid out that way.
pub(crate) fn into_vec(t: Tensor) -> Vec<f32> {
    if !t.is_standard_layout() {
        return t.iter().copied().collect();
    }
    let n = t.len();
    let (v, offset) = t.into_raw_vec_and_offset();
    let offset = offset.unwrap_or(0);
    if offset == 0 && v.len() == n {
        v
    } else {
        v[offset..offset + n].to_vec()
    }
}
