//! Sequential: layers applied in order, with PyTorch's `"0.weight"` state-dict names. A model built as
//! a Sequential is a [`super::Net`] whose graph is a chain; this module is the nested case.

use rand_chacha::ChaCha8Rng;

use super::{LayerSpec, Module, Param};
use crate::autograd::{Tape, Var};
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
}

/// Prefix an error with the layer it came from: `layer 1 (Conv2d): …`.
pub(super) fn at_layer(i: usize, spec: &LayerSpec, e: KilnError) -> KilnError {
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
    fn forward(&self, t: &mut Tape, mut x: Var) -> Result<Var> {
        for (i, layer) in self.layers.iter().enumerate() {
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
