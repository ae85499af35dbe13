//! Making models small and fast for the edge: post-training int8 quantization to ONNX
//! ([`quantize`]), magnitude pruning with a shrinking step for whole channels ([`prune`]), applied
//! gradually while `fit` trains ([`gradual`]), and knowledge distillation ([`distill`]).
//!
//! All three work on the flat list of layers of a [`Model`] (nested `Sequential`s unrolled, with
//! their state-dict prefixes), which [`flat_layers`] rebuilds as standalone modules so a pass can run
//! the network one layer at a time (to see what each layer receives) without touching the model.

pub mod distill;
pub mod gradual;
pub mod prune;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::nn::{LayerSpec, Module};
use crate::{shape_err, value_err, Model, Result};

pub use crate::onnx::quantize::{quantize_onnx, Calibration, QuantizeMode, QuantizeOptions};
pub use distill::{distill, DistillConfig, DistillReport};
pub use gradual::{Pruner, PruningSchedule, SparsityCurve};
pub use prune::{
    apply_masks, fit_masked, magnitude_masks, make_permanent, prune, sparsity_report,
    LayerSparsity, PruneOptions, PruneScope,
};

/// One layer of a model, unrolled from nested `Sequential`s.
pub struct FlatLayer {
    /// State-dict prefix, with its trailing dot (`"0."`, `"2.1."`).
    pub prefix: String,
    /// The layer's architecture.
    pub spec: LayerSpec,
    /// A standalone copy of the layer holding the model's current tensors.
    pub module: Box<dyn Module>,
}

fn flatten(specs: &[LayerSpec], prefix: &str, out: &mut Vec<(String, LayerSpec)>) {
    for (i, s) in specs.iter().enumerate() {
        match s {
            LayerSpec::Sequential { layers } => flatten(layers, &format!("{prefix}{i}."), out),
            other => out.push((format!("{prefix}{i}."), other.clone())),
        }
    }
}

/// The model's layers in order (a graph model's by path), each rebuilt with a copy of the model's weights.
pub fn flat_layers(model: &Model) -> Result<Vec<FlatLayer>> {
    let mut flat = Vec::new();
    for (path, module) in model.net.modules() {
        match module.spec() {
            LayerSpec::Sequential { layers } => flatten(&layers, &format!("{path}."), &mut flat),
            other => flat.push((format!("{path}."), other)),
        }
    }
    let tensors = model.net.state_dict();
    // The rng only draws initial weights that are overwritten right away.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    flat.into_iter()
        .map(|(prefix, spec)| {
            let mut module = spec.build(&mut rng)?;
            for (name, p) in module.tensors_mut() {
                p.set_value(tensors[&format!("{prefix}{name}")].clone());
            }
            Ok(FlatLayer {
                prefix,
                spec,
                module,
            })
        })
        .collect()
}

/// Whether a layer has a weight that pruning and quantization act on.
pub(crate) fn is_weighted(spec: &LayerSpec) -> bool {
    matches!(
        spec,
        LayerSpec::Linear { .. } | LayerSpec::Conv1d { .. } | LayerSpec::Conv2d { .. }
    )
}

/// Check that `x` is a usable batch of samples for `model`: not empty, finite, and of the per-sample
/// shape the model was trained on.
pub(crate) fn check_samples(what: &str, model: &Model, x: &crate::train::Input) -> Result<()> {
    if x.ndim() < 2 || x.shape()[0] == 0 {
        value_err!(
            "{what}: need a non-empty batch of samples [N, ...], got shape {:?}",
            x.shape()
        );
    }
    let Some(sample) = &model.input_shape() else {
        value_err!(
            "{what}: the model does not know its input shape yet: fit or predict once first"
        );
    };
    if x.shape()[1..] != sample[..] {
        shape_err!(
            "{what}: samples of shape {:?}, but the model takes samples of shape {sample:?}",
            &x.shape()[1..]
        );
    }
    if x.iter().any(|v| !v.is_finite()) {
        value_err!("{what}: the data contains NaN or infinity");
    }
    Ok(())
}
