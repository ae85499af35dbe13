//! Sequential: layers applied in order, with PyTorch's `"0.weight"` state-dict names.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;

use super::{LayerSpec, Module, Param};
use crate::autograd::{Tape, Tensor, Var};
use crate::{KilnError, Result};

/// Layers applied one after another.
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// Build every layer of `specs` with PyTorch's default initialisation.
    pub fn from_specs(specs: &[LayerSpec], rng: &mut ChaCha8Rng) -> Result<Self> {
        let layers = specs
            .iter()
            .enumerate()
            .map(|(i, s)| s.build(rng).map_err(|e| at_layer(i, s, e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Sequential { layers })
    }

    /// The layers' specs, in order.
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec()).collect()
    }

    /// How many layers there are.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Named tensors (parameters and buffers) as a state dict of copies.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.tensors()
            .into_iter()
            .map(|(k, p)| (k, p.value.clone()))
            .collect()
    }

    /// Load tensors by name; every tensor of the model must be present with its exact shape.
    pub fn load_state_dict(&mut self, dict: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut plan = Vec::new();
        for (name, p) in self.tensors() {
            let Some(v) = dict.get(&name) else {
                return Err(KilnError::Checkpoint(format!("missing tensor {name:?}")));
            };
            if v.shape() != p.value.shape() {
                return Err(KilnError::Checkpoint(format!(
                    "tensor {name:?} has shape {:?}, the model expects {:?}",
                    v.shape(),
                    p.value.shape()
                )));
            }
            plan.push(name);
        }
        if let Some(extra) = dict.keys().find(|k| !plan.contains(k)) {
            return Err(KilnError::Checkpoint(format!(
                "unexpected tensor {extra:?} (not part of this model)"
            )));
        }
        for (name, p) in self.tensors_mut() {
            p.value = dict[&name].as_standard_layout().into_owned();
        }
        Ok(())
    }

    /// The trainable parameters, in state-dict order.
    pub fn trainable_mut(&mut self) -> Vec<&mut Param> {
        self.tensors_mut()
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.trainable)
            .collect()
    }

    /// Number of trainable values.
    pub fn num_trainable(&self) -> usize {
        self.tensors()
            .iter()
            .filter(|(_, p)| p.trainable)
            .map(|(_, p)| p.value.len())
            .sum()
    }

    /// Forget every gradient (before a new accumulation).
    pub fn zero_grad(&mut self) {
        for (_, p) in self.tensors_mut() {
            p.grad = None;
        }
    }

    /// Add every parameter's gradient from the tape (after backward) to its `grad`.
    pub fn collect_grads(&mut self, t: &mut Tape) {
        for (_, p) in self.tensors_mut() {
            p.collect_grad(t);
        }
    }

    /// Freeze (or unfreeze) every parameter whose name starts with `prefix`; returns how many matched.
    pub fn set_trainable(&mut self, prefix: &str, trainable: bool) -> usize {
        let mut n = 0;
        for (name, p) in self.tensors_mut() {
            if !p.is_buffer && name.starts_with(prefix) {
                p.trainable = trainable;
                n += 1;
            }
        }
        n
    }
}

fn at_layer(i: usize, spec: &LayerSpec, e: KilnError) -> KilnError {
    let name = spec.type_name();
    let prefix = |m: String| {
        if m.starts_with(&name) {
            format!("layer {i} ({name}){}", &m[name.len()..])
        } else {
            format!("layer {i} ({name}): {m}")
        }
    };
    match e {
        KilnError::Shape(m) => KilnError::Shape(prefix(m)),
        KilnError::Value(m) => KilnError::Value(prefix(m)),
        other => other,
    }
}

impl Module for Sequential {
    fn forward(&mut self, t: &mut Tape, mut x: Var) -> Result<Var> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            x = layer
                .forward(t, x)
                .map_err(|e| at_layer(i, &layer.spec(), e))?;
        }
        Ok(x)
    }
    fn tensors(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(
                l.tensors()
                    .into_iter()
                    .map(|(n, p)| (format!("{i}.{n}"), p)),
            );
        }
        out
    }
    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            out.extend(
                l.tensors_mut()
                    .into_iter()
                    .map(|(n, p)| (format!("{i}.{n}"), p)),
            );
        }
        out
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec::Sequential {
            layers: self.specs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use rand::SeedableRng;

    fn mlp() -> Sequential {
        let specs = LayerSpec::list_from_json(
            r#"[{"type":"Linear","in_features":4,"out_features":8},{"type":"BatchNorm1d","num_features":8},
                {"type":"ReLU"},{"type":"Dropout","p":0.5},{"type":"Linear","in_features":8,"out_features":3}]"#,
        )
        .unwrap();
        Sequential::from_specs(&specs, &mut ChaCha8Rng::seed_from_u64(0)).unwrap()
    }

    #[test]
    fn state_dict_uses_pytorch_names() {
        let m = mlp();
        let names: Vec<String> = m.state_dict().keys().cloned().collect();
        assert_eq!(
            names,
            [
                "0.bias",
                "0.weight",
                "1.bias",
                "1.running_mean",
                "1.running_var",
                "1.weight",
                "4.bias",
                "4.weight"
            ]
        );
        assert_eq!(m.num_trainable(), 4 * 8 + 8 + 8 + 8 + 8 * 3 + 3);
    }

    #[test]
    fn shape_errors_name_the_layer() {
        let mut m = mlp();
        let mut t = Tape::inference();
        let x = t.constant(ArrayD::zeros(IxDyn(&[2, 5])));
        let e = m.forward(&mut t, x).unwrap_err().to_string();
        assert!(
            e.starts_with("layer 0 (Linear)") && e.contains("[2, 5]"),
            "{e}"
        );
    }

    #[test]
    fn load_state_dict_checks_names_and_shapes() {
        let mut m = mlp();
        let mut d = m.state_dict();
        d.insert("0.weight".into(), ArrayD::zeros(IxDyn(&[8, 5])));
        assert!(m
            .load_state_dict(&d)
            .unwrap_err()
            .to_string()
            .contains("0.weight"));
        let mut d = m.state_dict();
        d.remove("4.bias");
        assert!(m.load_state_dict(&d).is_err());
        let d = mlp().state_dict();
        m.load_state_dict(&d).unwrap();
    }

    #[test]
    fn bad_specs_name_the_layer() {
        let specs = LayerSpec::list_from_json(r#"[{"type":"ReLU"},{"type":"Conv2d","in_channels":3,"out_channels":4,"kernel_size":[3,3],"groups":2}]"#).unwrap();
        let e = Sequential::from_specs(&specs, &mut ChaCha8Rng::seed_from_u64(0))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("layer 1 (Conv2d)") && e.contains("divisible"),
            "{e}"
        );
    }
}
