//! What `model.summary()` shows, Keras and torchinfo style: every module with the shape it outputs for
//! a given input, its parameter counts, and the totals. Computed by running the graph once on zeros
//! (batch 1, inference mode), so the shapes are the ones the model really produces.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Net;
use crate::autograd::{Tape, Tensor};
use crate::graph::{self, Op};
use crate::{value_err, Result};

/// One module (or free parameter) of a model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRow {
    /// The module's path (`"0"`, `"blocks.0.conv1"`), or a free parameter's state-dict name.
    pub name: String,
    /// The layer type (`"Conv2d"`), or `"Parameter"` / `"Buffer"` for a free tensor.
    pub kind: String,
    /// The shape of one sample of its output (the batch axis left out) at its first call; a free
    /// tensor's own shape; `None` for a module the graph never calls.
    pub output_shape: Option<Vec<usize>>,
    /// How many times the graph calls it (a module used twice shares its weights).
    pub calls: usize,
    /// Trainable values.
    pub trainable: usize,
    /// Frozen parameter values (`freeze`) and buffer values (batch-norm statistics).
    pub non_trainable: usize,
}

/// A model's summary for one input shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The inputs: name and per-sample shape.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// The modules in state-dict order, then the free parameters.
    pub rows: Vec<SummaryRow>,
    /// The per-sample shape of each output.
    pub outputs: Vec<Vec<usize>>,
    /// Trainable values in all.
    pub trainable: usize,
    /// Frozen and buffer values in all.
    pub non_trainable: usize,
    /// Bytes the tensors take (float32), which is about the checkpoint's size.
    pub bytes: usize,
}

fn per_sample(t: &Tensor) -> Vec<usize> {
    t.shape()[1..].to_vec()
}

impl Net {
    /// Run the graph once on zeros of `input_shapes` (one per-sample shape per input) and describe
    /// every module: output shape, parameter counts; errors name the module and the shapes, as a
    /// prediction's would.
    pub fn summary(&mut self, input_shapes: &[Vec<usize>]) -> Result<Summary> {
        let graph = self.require_graph()?.clone();
        if input_shapes.len() != graph.inputs.len() {
            value_err!(
                "summary: the model takes {} input(s) ({}), got {} shape(s)",
                graph.inputs.len(),
                crate::model::input_names(&graph.inputs),
                input_shapes.len()
            );
        }
        let mut t = Tape::inference();
        let inputs: Vec<_> = input_shapes
            .iter()
            .map(|s| {
                let mut dims = vec![1];
                dims.extend_from_slice(s);
                t.constant(Tensor::zeros(ndarray::IxDyn(&dims)))
            })
            .collect();
        let mut first: BTreeMap<String, (Vec<usize>, usize)> = BTreeMap::new();
        let n_in = graph.inputs.len();
        // an attention call reads its layer's weights: the layer is the one owning in_proj_weight
        let attention_of = |node: &graph::Node| -> Option<String> {
            let w = node.inputs.get(3)?.checked_sub(n_in)?;
            match &graph.nodes.get(w)?.op {
                Op::Param { name } => name.strip_suffix(".in_proj_weight").map(str::to_string),
                _ => None,
            }
        };
        let outs = graph::run_observed(self, &graph, &mut t, &inputs, &mut |node, t, v| {
            let module = match &node.op {
                Op::Call { module } => Some(module.clone()),
                Op::MultiheadAttention(_) => attention_of(node),
                _ => None,
            };
            if let Some(module) = module {
                first
                    .entry(module)
                    .or_insert_with(|| (per_sample(t.value(v)), 0))
                    .1 += 1;
            }
        })?;
        let count = |tensors: Vec<(String, &super::Param)>| {
            tensors.iter().fold((0, 0), |(tr, non), (_, p)| {
                if p.trainable() {
                    (tr + p.value().len(), non)
                } else {
                    (tr, non + p.value().len())
                }
            })
        };
        let mut rows: Vec<SummaryRow> = self
            .modules()
            .map(|(name, m)| {
                let (trainable, non_trainable) = count(m.tensors());
                let (output_shape, calls) = match first.get(name) {
                    Some((s, n)) => (Some(s.clone()), *n),
                    None => (None, 0),
                };
                SummaryRow {
                    name: name.to_string(),
                    kind: m.spec().type_name(),
                    output_shape,
                    calls,
                    trainable,
                    non_trainable,
                }
            })
            .collect();
        rows.extend(self.free_params().map(|(name, p)| SummaryRow {
            name: name.to_string(),
            kind: if p.is_buffer { "Buffer" } else { "Parameter" }.into(),
            output_shape: Some(p.value().shape().to_vec()),
            calls: 0,
            trainable: if p.trainable() { p.value().len() } else { 0 },
            non_trainable: if p.trainable() { 0 } else { p.value().len() },
        }));
        let (trainable, non_trainable) = count(self.tensors());
        Ok(Summary {
            inputs: graph
                .inputs
                .iter()
                .zip(input_shapes)
                .map(|(i, s)| (i.name.clone(), s.clone()))
                .collect(),
            rows,
            outputs: outs.iter().map(|&o| per_sample(t.value(o))).collect(),
            trainable,
            non_trainable,
            bytes: (trainable + non_trainable) * std::mem::size_of::<f32>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::nn::{GraphSpec, LayerSpec};

    #[test]
    fn a_sequential_cnn_lists_every_layer_with_its_output_shape_and_parameters() {
        let specs = LayerSpec::list_from_json(
            r#"[{"type":"Conv2d","in_channels":1,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]},
                {"type":"BatchNorm2d","num_features":4},{"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},
                {"type":"Flatten"},{"type":"Linear","in_features":64,"out_features":10}]"#,
        )
        .unwrap();
        let mut net = Net::sequential(&specs, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        let s = net.summary(&[vec![1, 8, 8]]).unwrap();
        let shapes: Vec<_> = s
            .rows
            .iter()
            .map(|r| r.output_shape.clone().unwrap())
            .collect();
        assert_eq!(
            shapes,
            [
                vec![4, 8, 8],
                vec![4, 8, 8],
                vec![4, 8, 8],
                vec![4, 4, 4],
                vec![64],
                vec![10]
            ]
        );
        let kinds: Vec<_> = s.rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Conv2d",
                "BatchNorm2d",
                "ReLU",
                "MaxPool2d",
                "Flatten",
                "Linear"
            ]
        );
        // conv 4*1*3*3 + 4; batch norm: weight and bias trained, running mean and var (and the
        // batch count, if kept) are not; linear 64*10 + 10
        assert_eq!(s.rows[0].trainable, 40);
        assert_eq!(s.rows[1].trainable, 8);
        assert!(s.rows[1].non_trainable >= 8, "{:?}", s.rows[1]);
        assert_eq!(s.rows[5].trainable, 650);
        assert_eq!(s.trainable, 40 + 8 + 650);
        assert_eq!(s.bytes, 4 * (s.trainable + s.non_trainable));
        assert_eq!(s.outputs, [vec![10]]);
        // another input size gives other shapes, and a wrong one names the layer
        let e = net.summary(&[vec![1, 6, 6]]).unwrap_err().to_string();
        assert!(
            e.starts_with("layer 5 (Linear)") && e.contains("[1, 36]"),
            "{e}"
        );
        net.set_trainable("0.", false);
        assert_eq!(
            net.summary(&[vec![1, 8, 8]]).unwrap().rows[0].non_trainable,
            40
        );
    }

    #[test]
    fn a_graph_model_counts_a_shared_module_once_and_lists_free_parameters() {
        let spec: GraphSpec = serde_json::from_str(
            r#"{"modules":[{"name":"fc","spec":{"type":"Linear","in_features":3,"out_features":3}},
                           {"name":"unused","spec":{"type":"Linear","in_features":3,"out_features":1}}],
                "params":[{"name":"scale","shape":[3]}],
                "graph":{"inputs":[{"name":"x"}],"nodes":[{"op":{"Call":{"module":"fc"}},"inputs":[0]},{"op":"Relu","inputs":[1]},
                {"op":{"Call":{"module":"fc"}},"inputs":[2]},{"op":{"Param":{"name":"scale"}},"inputs":[]},{"op":"Mul","inputs":[3,4]}],"outputs":[5]}}"#,
        )
        .unwrap();
        let mut net = Net::from_spec(&spec, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let s = net.summary(&[vec![3]]).unwrap();
        assert_eq!(
            (
                s.rows[0].name.as_str(),
                s.rows[0].calls,
                s.rows[0].output_shape.clone()
            ),
            ("fc", 2, Some(vec![3]))
        );
        assert_eq!((s.rows[1].calls, s.rows[1].output_shape.clone()), (0, None));
        assert_eq!(
            (s.rows[2].kind.as_str(), s.rows[2].trainable),
            ("Parameter", 3)
        );
        assert_eq!(s.trainable, 12 + 4 + 3);
        assert!(net
            .summary(&[vec![3], vec![3]])
            .unwrap_err()
            .to_string()
            .contains("takes 1 input(s) (x)"));
    }
}
