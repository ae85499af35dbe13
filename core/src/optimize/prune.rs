//! Magnitude pruning of Linear/Conv weights.
//!
//! - unstructured: zero the smallest-magnitude weights, over all layers at once (global) or layer by
//!   layer, to an exact target sparsity;
//! - structured: zero whole output channels (conv filters, linear units) with the smallest L2 norm,
//!   weight rows and biases together. The output layer is left whole (its units are the classes).
//!
//! Gradual pruning ([`super::gradual`]) raises the sparsity of [`magnitude_masks`] along a schedule
//! while `fit` trains, re-applying the masks after every optimizer step.
//! [`make_permanent`] then removes structurally pruned channels, and the matching input columns of
//! the next weighted layer, so the model (and its ONNX export) really gets smaller.

use std::collections::BTreeMap;

use ndarray::{Axis, IxDyn};
use serde::{Deserialize, Serialize};

use super::{flat_layers, is_weighted, FlatLayer};
use crate::autograd::{Tape, Tensor};
use crate::nn::LayerSpec;
use crate::train::{FitConfig, Hooks, Input, Targets};
use crate::{value_err, Model, Result};

/// Rank weights over the whole model or within each layer (unstructured pruning).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    /// One threshold for all weights: layers with many small weights lose more.
    Global,
    /// The same sparsity in every layer (`"per_layer"`, or `"layer"`).
    #[serde(alias = "layer")]
    PerLayer,
}

/// Options of [`prune`].
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Fraction of weights (or of channels, when structured) to zero, in [0, 1).
    pub sparsity: f32,
    /// Whole output channels rather than single weights.
    pub structured: bool,
    /// Global or per-layer ranking (unstructured only; structured ranks within each layer).
    pub scope: PruneScope,
}

/// Real sparsity of one weight tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSparsity {
    /// State-dict name of the weight (`"0.weight"`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Number of weights.
    pub total: usize,
    /// Number of weights equal to zero.
    pub zeros: usize,
    /// Output channels (rows along axis 0).
    pub channels: usize,
    /// Output channels whose weights and bias are all zero.
    pub zero_channels: usize,
}

fn weight_names(model: &Model) -> Result<Vec<(String, LayerSpec)>> {
    Ok(flat_layers(model)?
        .into_iter()
        .filter(|l| is_weighted(&l.spec))
        .map(|l| (format!("{}weight", l.prefix), l.spec))
        .collect())
}

/// Indices of the `k` smallest values.
fn smallest(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| values[a].total_cmp(&values[b]));
    idx.truncate(k);
    idx
}

fn rows(t: &Tensor) -> usize {
    t.shape().first().copied().unwrap_or(1)
}

/// Which values magnitude pruning keeps: a 0/1 mask per pruned tensor, by state-dict name (every
/// Linear/Conv weight; with `structured`, also the biases of the removed channels). Values that are
/// already zero rank lowest, so a growing sparsity keeps what earlier rounds pruned.
pub fn magnitude_masks(model: &Model, opts: &PruneOptions) -> Result<BTreeMap<String, Tensor>> {
    if !(0.0..1.0).contains(&opts.sparsity) {
        value_err!("prune: sparsity must be in [0, 1), got {}", opts.sparsity);
    }
    let names = weight_names(model)?;
    if names.is_empty() {
        value_err!("prune: the model has no Linear or Conv layer to prune");
    }
    let dict = model.net.state_dict();
    let mut masks: BTreeMap<String, Tensor> = names
        .iter()
        .map(|(n, _)| (n.clone(), dict[n].mapv(|_| 1.0)))
        .collect();
    if opts.structured {
        // every weighted layer but the output one
        for (name, _) in &names[..names.len() - 1] {
            let w = &dict[name];
            let out = rows(w);
            let norms: Vec<f32> = w
                .axis_iter(Axis(0))
                .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect();
            // keep at least one channel so the network stays connected
            let k = ((opts.sparsity * out as f32).floor() as usize).min(out - 1);
            let gone = smallest(&norms, k);
            let m = masks.get_mut(name).expect("listed");
            for &c in &gone {
                m.index_axis_mut(Axis(0), c).fill(0.0);
            }
            let bias = format!("{}bias", name.trim_end_matches("weight"));
            if let Some(b) = dict.get(&bias) {
                let mut mb = b.mapv(|_| 1.0);
                for &c in &gone {
                    mb[c] = 0.0;
                }
                masks.insert(bias, mb);
            }
        }
    } else {
        let groups: Vec<Vec<&String>> = match opts.scope {
            PruneScope::Global => vec![names.iter().map(|(n, _)| n).collect()],
            PruneScope::PerLayer => names.iter().map(|(n, _)| vec![n]).collect(),
        };
        for group in groups {
            let mags: Vec<f32> = group
                .iter()
                .flat_map(|n| dict[*n].iter().map(|v| v.abs()).collect::<Vec<_>>())
                .collect();
            let k = (opts.sparsity * mags.len() as f32).floor() as usize;
            let mut gone = smallest(&mags, k);
            gone.sort_unstable();
            let mut at = 0;
            let mut g = gone.into_iter().peekable();
            for n in group {
                let m = masks.get_mut(n).expect("listed");
                let len = m.len();
                for (i, v) in m.iter_mut().enumerate() {
                    if g.peek() == Some(&(at + i)) {
                        *v = 0.0;
                        g.next();
                    }
                }
                at += len;
            }
        }
    }
    Ok(masks)
}

/// Multiply each named tensor of the model by its mask.
pub fn apply_masks(model: &mut Model, masks: &BTreeMap<String, Tensor>) {
    for (name, p) in model.net.tensors_mut() {
        if let Some(mask) = masks.get(&name) {
            *p.value_mut() *= mask;
        }
    }
}

/// Zero weights by magnitude, at once; returns the sparsity report afterwards.
pub fn prune(model: &mut Model, opts: &PruneOptions) -> Result<Vec<LayerSparsity>> {
    let masks = magnitude_masks(model, opts)?;
    apply_masks(model, &masks);
    sparsity_report(model)
}

/// The real sparsity of every Linear/Conv weight.
pub fn sparsity_report(model: &Model) -> Result<Vec<LayerSparsity>> {
    let dict = model.net.state_dict();
    Ok(weight_names(model)?
        .into_iter()
        .map(|(name, _)| {
            let w = &dict[&name];
            let bias = dict.get(&format!("{}bias", name.trim_end_matches("weight")));
            let zero_channels = (0..rows(w))
                .filter(|&c| {
                    w.index_axis(Axis(0), c).iter().all(|&v| v == 0.0)
                        && bias.is_none_or(|b| b[c] == 0.0)
                })
                .count();
            LayerSparsity {
                shape: w.shape().to_vec(),
                total: w.len(),
                zeros: w.iter().filter(|&&v| v == 0.0).count(),
                channels: rows(w),
                zero_channels,
                name,
            }
        })
        .collect())
}

/// Fine-tune with the compiled loss and optimizer while keeping every zero of the Linear/Conv weights
/// (and of the biases of dead channels) at zero: the mask is taken from the current weights and
/// re-applied after each optimizer step by the fit loop's step hook, so momentum cannot bring pruned
/// weights back. Returns the mean loss of each epoch.
pub fn fit_masked(
    model: &mut Model,
    x: Input,
    y: &Targets,
    epochs: usize,
    batch_size: usize,
) -> Result<Vec<f32>> {
    super::check_samples("fit_pruned: x", model, &x)?;
    if epochs == 0 || batch_size == 0 {
        value_err!("fit_pruned: epochs and batch_size must be positive");
    }
    model.optimizer()?;
    let report = sparsity_report(model)?;
    let masked: Vec<String> = report.iter().map(|l| l.name.clone()).collect();
    let dead_bias: Vec<String> = report
        .iter()
        .filter(|l| l.zero_channels > 0)
        .map(|l| format!("{}bias", l.name.trim_end_matches("weight")))
        .collect();
    let masks: BTreeMap<String, Tensor> = model
        .net
        .tensors()
        .into_iter()
        .filter(|(name, _)| masked.contains(name) || dead_bias.contains(name))
        .map(|(name, p)| (name, p.value().mapv(|v| if v == 0.0 { 0.0 } else { 1.0 })))
        .collect();
    let mut hold = |m: &mut Model| apply_masks(m, &masks);
    let cfg = FitConfig {
        epochs,
        batch_size,
        ..FitConfig::default()
    };
    let mut hooks = Hooks {
        after_step: Some(&mut hold),
        ..Hooks::default()
    };
    let history = model.fit(x, y, None, &cfg, &mut hooks)?;
    Ok(history.history["loss"].iter().map(|&l| l as f32).collect())
}

/// Layers that map zero to zero channel by channel, so a dead channel stays dead through them.
fn passes_zero(spec: &LayerSpec) -> bool {
    use LayerSpec as S;
    matches!(
        spec,
        S::ReLU
            | S::LeakyReLU { .. }
            | S::GELU { .. }
            | S::Tanh
            | S::Dropout { .. }
            | S::MaxPool2d { .. }
            | S::AvgPool2d { .. }
    )
}

/// A new, smaller model without the dead output channels (all-zero weights and bias) of every
/// weighted layer whose channels feed the next weighted layer only through zero-preserving layers
/// (activations, pooling, dropout, a `Flatten(1)`); other layers are kept as they are. The result is
/// not compiled; nested `Sequential`s come out flattened (their state-dict names change).
pub fn make_permanent(model: &Model) -> Result<Model> {
    let mut layers = flat_layers(model)?;
    let mut dict: BTreeMap<String, Tensor> = model.net.state_dict();
    let sample = model.input_shape().ok_or_else(|| {
        crate::KilnError::value("make_permanent: the model does not know its input shape yet")
    })?;
    // each layer's input shape (batch 1) from a dry run on zeros
    let mut shapes = Vec::new();
    let mut t = Tape::inference();
    let mut v = t.constant(Tensor::zeros(IxDyn(&[&[1][..], &sample[..]].concat())));
    for l in layers.iter_mut() {
        shapes.push(t.shape(v).to_vec());
        v = l.module.forward(&mut t, v)?;
    }
    let weighted: Vec<usize> = (0..layers.len())
        .filter(|&i| is_weighted(&layers[i].spec))
        .collect();
    let mut specs: Vec<LayerSpec> = layers.iter().map(|l| l.spec.clone()).collect();
    for pair in weighted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mut per_channel = 1; // input columns of b per channel of a
        let ok = layers[a + 1..b]
            .iter()
            .enumerate()
            .all(|(j, l)| match &l.spec {
                LayerSpec::Flatten {
                    start_dim: 1,
                    end_dim: -1,
                } => {
                    per_channel = shapes[a + 1 + j][2..].iter().product();
                    true
                }
                s => passes_zero(s),
            });
        let groups_ok = |s: &LayerSpec| match s {
            LayerSpec::Conv1d { groups, .. } | LayerSpec::Conv2d { groups, .. } => *groups == 1,
            _ => true,
        };
        if !ok || !groups_ok(&specs[a]) || !groups_ok(&specs[b]) {
            continue;
        }
        let (pa, pb) = (&layers[a].prefix, &layers[b].prefix);
        let w = &dict[&format!("{pa}weight")];
        let bias = dict.get(&format!("{pa}bias"));
        let mut keep: Vec<usize> = (0..rows(w))
            .filter(|&c| {
                w.index_axis(Axis(0), c).iter().any(|&v| v != 0.0)
                    || bias.is_some_and(|b| b[c] != 0.0)
            })
            .collect();
        if keep.is_empty() {
            keep.push(0);
        }
        if keep.len() == rows(w) {
            continue;
        }
        let cols: Vec<usize> = keep
            .iter()
            .flat_map(|&c| c * per_channel..(c + 1) * per_channel)
            .collect();
        for key in [format!("{pa}weight"), format!("{pa}bias")] {
            if let Some(t) = dict.get_mut(&key) {
                *t = t.select(Axis(0), &keep);
            }
        }
        let wb = dict
            .get_mut(&format!("{pb}weight"))
            .expect("weighted layer");
        *wb = wb.select(Axis(1), &cols);
        resize(&mut specs[a], None, Some(keep.len()));
        resize(&mut specs[b], Some(cols.len()), None);
    }
    let mut out = Model::new(&specs, model.seed)?;
    let renamed: BTreeMap<String, Tensor> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l): (usize, &FlatLayer)| {
            l.module
                .tensors()
                .into_iter()
                .map(|(n, _)| {
                    (
                        format!("{i}.{n}"),
                        dict[&format!("{}{n}", l.prefix)].clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.net.load_state_dict(&renamed)?;
    out.set_input_shape(Some(sample))?;
    Ok(out)
}

fn resize(spec: &mut LayerSpec, inputs: Option<usize>, outputs: Option<usize>) {
    match spec {
        LayerSpec::Linear {
            in_features,
            out_features,
            ..
        } => {
            *in_features = inputs.unwrap_or(*in_features);
            *out_features = outputs.unwrap_or(*out_features);
        }
        LayerSpec::Conv1d {
            in_channels,
            out_channels,
            ..
        }
        | LayerSpec::Conv2d {
            in_channels,
            out_channels,
            ..
        } => {
            *in_channels = inputs.unwrap_or(*in_channels);
            *out_channels = outputs.unwrap_or(*out_channels);
        }
        _ => {}
    }
}
