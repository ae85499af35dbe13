//! The network a [`crate::Model`] trains: named modules and free parameters, wired by one
//! [`Graph`]. A Sequential is a chain of modules `"0"`, `"1"`, …; a traced `nn.Module` is any graph
//! over leaf layers at their PyTorch paths (`"blocks.0.conv1"`) and parameters.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{LayerSpec, Module, Param};
use crate::autograd::{Tape, Tensor, Var};
use crate::graph::{self, Graph, Scope};
use crate::{value_err, KilnError, Result};

/// A module of a graph model, by path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedModule {
    /// The path (`"blocks.0.conv1"`); its tensors are named `path.weight`, ….
    pub name: String,
    /// The layer.
    pub spec: LayerSpec,
}

/// A free parameter of a graph model (`nn.Parameter` in a module), by state-dict name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedParam {
    /// The state-dict name.
    pub name: String,
    /// Its shape (values come from the checkpoint, or from the caller after building).
    pub shape: Vec<usize>,
    /// A buffer (saved, never trained) rather than a parameter.
    #[serde(default)]
    pub buffer: bool,
}

/// What a graph model is made of: modules, free parameters and, once traced, the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// Leaf layers by path, in registration order (the state-dict order).
    pub modules: Vec<NamedModule>,
    /// Free parameters, after the modules' tensors in state-dict order.
    #[serde(default)]
    pub params: Vec<NamedParam>,
    /// The traced dataflow; `None` until the model has seen its first data.
    #[serde(default)]
    pub graph: Option<Graph>,
}

/// Modules and parameters wired by a graph.
pub struct Net {
    modules: Vec<(String, Box<dyn Module>)>,
    params: Vec<(String, Param)>,
    graph: Option<Graph>,
    /// The layer list, for nets built as a Sequential (their checkpoints store just this).
    layers: Option<Vec<LayerSpec>>,
}

impl Net {
    /// A Sequential: every layer of `specs` in a chain, with PyTorch's default initialisation.
    pub fn sequential(specs: &[LayerSpec], rng: &mut ChaCha8Rng) -> Result<Self> {
        if specs.is_empty() {
            value_err!("a model needs at least one layer");
        }
        if let Some((i, why)) = specs
            .iter()
            .enumerate()
            .find_map(|(i, s)| Some((i, s.chain_refusal()?)))
        {
            value_err!("layer {i} ({}): {why}", specs[i].type_name());
        }
        let modules = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.build(rng)
                    .map(|m| (i.to_string(), m))
                    .map_err(|e| super::sequential::at_layer(i, s, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = (0..specs.len()).map(|i| i.to_string()).collect();
        let mut graph = Graph::chain(&names);
        if matches!(specs[0], LayerSpec::Embedding { .. }) {
            graph.inputs[0].dtype = "int64".into(); // token ids
        }
        Ok(Net {
            modules,
            params: Vec::new(),
            graph: Some(graph),
            layers: Some(specs.to_vec()),
        })
    }

    /// A graph model's modules and parameters (free parameters start at zero), and its graph if traced.
    pub fn from_spec(spec: &GraphSpec, rng: &mut ChaCha8Rng) -> Result<Self> {
        let mut modules = Vec::with_capacity(spec.modules.len());
        for m in &spec.modules {
            if m.name.is_empty() || modules.iter().any(|(n, _): &(String, _)| *n == m.name) {
                value_err!(
                    "graph model: module path {:?} is empty or used twice",
                    m.name
                );
            }
            let built = m.spec.build(rng).map_err(|e| {
                KilnError::value(format!("{} ({}): {e}", m.name, m.spec.type_name()))
            })?;
            modules.push((m.name.clone(), built));
        }
        let params = spec
            .params
            .iter()
            .map(|p| {
                let v = Tensor::zeros(ndarray::IxDyn(&p.shape));
                (
                    p.name.clone(),
                    if p.buffer {
                        Param::buffer(v)
                    } else {
                        Param::new(v)
                    },
                )
            })
            .collect();
        let mut net = Net {
            modules,
            params,
            graph: None,
            layers: None,
        };
        if let Some(g) = &spec.graph {
            net.set_graph(g.clone())?;
        }
        Ok(net)
    }

    /// The layer list of a Sequential, `None` for graph models.
    pub fn layers(&self) -> Option<&[LayerSpec]> {
        self.layers.as_deref()
    }

    /// The layers' specs of a Sequential (empty for graph models).
    pub fn specs(&self) -> Vec<LayerSpec> {
        self.layers.clone().unwrap_or_default()
    }

    /// What a graph model is made of (for its checkpoint).
    pub fn graph_spec(&self) -> GraphSpec {
        GraphSpec {
            modules: self
                .modules
                .iter()
                .map(|(name, m)| NamedModule {
                    name: name.clone(),
                    spec: m.spec(),
                })
                .collect(),
            params: self
                .params
                .iter()
                .map(|(name, p)| NamedParam {
                    name: name.clone(),
                    shape: p.value().shape().to_vec(),
                    buffer: p.is_buffer,
                })
                .collect(),
            graph: self.graph.clone(),
        }
    }

    /// The modules by path, in order.
    pub fn modules(&self) -> impl Iterator<Item = (&str, &dyn Module)> {
        self.modules.iter().map(|(n, m)| (n.as_str(), m.as_ref()))
    }

    /// The free parameters and buffers (not part of a module), by state-dict name.
    pub fn free_params(&self) -> impl Iterator<Item = (&str, &Param)> {
        self.params.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// The graph, once traced (always, for a Sequential).
    pub fn graph(&self) -> Option<&Graph> {
        self.graph.as_ref()
    }

    /// The graph, mutable (input shapes are learned from data).
    pub(crate) fn graph_mut(&mut self) -> Option<&mut Graph> {
        self.graph.as_mut()
    }

    /// Install a traced graph: it must only call modules and read tensors this net has.
    pub fn set_graph(&mut self, graph: Graph) -> Result<()> {
        graph.validate()?;
        let names: Vec<String> = self.tensors().into_iter().map(|(n, _)| n).collect();
        for node in &graph.nodes {
            match &node.op {
                graph::Op::Call { module } if !self.modules.iter().any(|(n, _)| n == module) => {
                    value_err!("graph: it calls module {module:?}, which the model does not have")
                }
                graph::Op::Param { name } if !names.contains(name) => {
                    value_err!("graph: it reads tensor {name:?}, which the model does not have")
                }
                _ => {}
            }
        }
        self.graph = Some(graph);
        Ok(())
    }

    /// The graph or a clear error when the model has not been traced yet.
    pub fn require_graph(&self) -> Result<&Graph> {
        self.graph.as_ref().ok_or_else(|| {
            KilnError::value(
                "the model has not been traced yet: call it (fit, predict or export) on data first",
            )
        })
    }

    /// Run the graph on `inputs` (one variable per graph input), returning every output; buffers
    /// the pass changes (batch-norm's running statistics in training) are stored.
    pub fn forward_all(&mut self, t: &mut Tape, inputs: &[Var]) -> Result<Vec<Var>> {
        let outs = self.forward(t, inputs)?;
        self.apply_updates(t);
        Ok(outs)
    }

    /// Run the graph reading the net only, so several tapes can run on one net at once (a
    /// data-parallel step's shards). The buffers' new values stay on the tape: [`Net::apply_updates`].
    pub fn forward(&self, t: &mut Tape, inputs: &[Var]) -> Result<Vec<Var>> {
        graph::run(&mut Shared(self), self.require_graph()?, t, inputs)
    }

    /// Whether a training step on a batch equals the sum of steps on its shards (see
    /// [`Graph::splits_by_sample`]): no layer mixes samples (batch-norm) and the graph keeps them apart.
    pub fn splits_by_sample(&self) -> bool {
        let Some(graph) = &self.graph else {
            return false;
        };
        graph.splits_by_sample(
            &|path| self.module_at(path).ok().map(|m| m.spec()),
            &|name| self.tensor_at(name).ok().map(|p| p.value().ndim()),
        )
    }

    /// Whether splitting a batch into shards on two cores pays (measured on this machine, batch 32):
    /// models with convolutions, recurrent layers or attention do much work per sample that runs
    /// on one thread (the digits CNN trained 1.2x faster split, the GRU language model 1.15x, a
    /// small transformer 1.6x). Chains of Linear layers do not: small ones step in tens of
    /// microseconds, less than a thread hand-off saves (the digits MLP ran at 0.6x), and large ones
    /// already run their GEMMs on both cores (the GEMM-bound MLP ran at 0.9x).
    pub fn pays_to_split(&self) -> bool {
        fn heavy(s: &LayerSpec) -> bool {
            match s {
                LayerSpec::Conv1d { .. }
                | LayerSpec::Conv2d { .. }
                | LayerSpec::GRU { .. }
                | LayerSpec::LSTM { .. }
                | LayerSpec::MultiheadAttention { .. } => true,
                LayerSpec::Sequential { layers } => layers.iter().any(heavy),
                _ => false,
            }
        }
        self.modules.iter().any(|(_, m)| heavy(&m.spec()))
            || self.graph.as_ref().is_some_and(|g| {
                g.nodes.iter().any(|n| {
                    matches!(
                        n.op,
                        graph::Op::Conv2d { .. }
                            | graph::Op::Conv1d { .. }
                            | graph::Op::MultiheadAttention(_)
                    )
                })
            })
    }

    /// Store the buffer values a forward pass recorded on `t` (see [`Net::forward`]).
    pub fn apply_updates(&mut self, t: &mut Tape) {
        let mut updates = t.take_updates();
        if updates.is_empty() {
            return;
        }
        for (_, p) in self.tensors_mut() {
            p.apply_update(&mut updates);
        }
    }

    fn module_at(&self, path: &str) -> Result<&dyn Module> {
        self.modules
            .iter()
            .find(|(n, _)| n == path)
            .map(|(_, m)| m.as_ref())
            .ok_or_else(|| KilnError::value(format!("the model has no module {path:?}")))
    }

    fn tensor_at(&self, name: &str) -> Result<&Param> {
        if let Some((_, p)) = self.params.iter().find(|(n, _)| n == name) {
            return Ok(p);
        }
        self.tensors()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .ok_or_else(|| KilnError::value(format!("the model has no tensor {name:?}")))
    }

    /// The tensor (parameter or buffer) with this state-dict name, mutable.
    pub fn tensor_mut(&mut self, name: &str) -> Result<&mut Param> {
        self.tensors_mut()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .ok_or_else(|| KilnError::value(format!("the model has no tensor {name:?}")))
    }

    /// Named tensors (parameters and buffers) as a state dict of copies.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.tensors()
            .into_iter()
            .map(|(k, p)| (k, p.value().clone()))
            .collect()
    }

    /// Every tensor with its state-dict name: the modules' in order, then the free parameters.
    pub fn tensors(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        for (name, m) in &self.modules {
            out.extend(
                m.tensors()
                    .into_iter()
                    .map(|(n, p)| (format!("{name}.{n}"), p)),
            );
        }
        out.extend(self.params.iter().map(|(n, p)| (n.clone(), p)));
        out
    }

    /// The same, mutable.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        for (name, m) in self.modules.iter_mut() {
            out.extend(
                m.tensors_mut()
                    .into_iter()
                    .map(|(n, p)| (format!("{name}.{n}"), p)),
            );
        }
        out.extend(self.params.iter_mut().map(|(n, p)| (n.clone(), p)));
        out
    }

    /// Load tensors by name; every tensor of the model must be present with its exact shape.
    pub fn load_state_dict(&mut self, dict: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut plan = Vec::new();
        for (name, p) in self.tensors() {
            let Some(v) = dict.get(&name) else {
                return Err(KilnError::Checkpoint(format!("missing tensor {name:?}")));
            };
            if v.shape() != p.value().shape() {
                return Err(KilnError::Checkpoint(format!(
                    "tensor {name:?} has shape {:?}, the model expects {:?}",
                    v.shape(),
                    p.value().shape()
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
            p.set_value(dict[&name].as_standard_layout().into_owned());
        }
        Ok(())
    }

    /// The trainable parameters, in state-dict order.
    pub fn trainable_mut(&mut self) -> Vec<&mut Param> {
        self.tensors_mut()
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.trainable())
            .collect()
    }

    /// Number of trainable values.
    pub fn num_trainable(&self) -> usize {
        self.tensors()
            .iter()
            .filter(|(_, p)| p.trainable())
            .map(|(_, p)| p.value().len())
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
                p.set_trainable(trainable);
                n += 1;
            }
        }
        n
    }
}

/// A net as one forward pass sees it: read only, so any number of passes share one net.
struct Shared<'a>(&'a Net);

impl Scope for Shared<'_> {
    fn label(&self, path: &str) -> (String, String) {
        self.0.label(path)
    }
    fn module(&mut self, path: &str) -> Result<&dyn Module> {
        self.0.module_at(path)
    }
    fn tensor(&mut self, name: &str) -> Result<&Param> {
        self.0.tensor_at(name)
    }
}

impl Scope for Net {
    fn label(&self, path: &str) -> (String, String) {
        let ty = self
            .modules
            .iter()
            .find(|(n, _)| n == path)
            .map(|(_, m)| m.spec().type_name())
            .unwrap_or_default();
        if self.layers.is_some() {
            (format!("layer {path} ({ty})"), ty)
        } else {
            (format!("{path} ({ty})"), ty)
        }
    }
    fn module(&mut self, path: &str) -> Result<&dyn Module> {
        self.module_at(path)
    }
    fn tensor(&mut self, name: &str) -> Result<&Param> {
        self.tensor_at(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};
    use rand::SeedableRng;

    fn mlp() -> Net {
        let specs = LayerSpec::list_from_json(
            r#"[{"type":"Linear","in_features":4,"out_features":8},{"type":"BatchNorm1d","num_features":8},
                {"type":"ReLU"},{"type":"Dropout","p":0.5},{"type":"Linear","in_features":8,"out_features":3}]"#,
        )
        .unwrap();
        Net::sequential(&specs, &mut ChaCha8Rng::seed_from_u64(0)).unwrap()
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
        let e = m.forward_all(&mut t, &[x]).unwrap_err().to_string();
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
        let e = Net::sequential(&specs, &mut ChaCha8Rng::seed_from_u64(0))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("layer 1 (Conv2d)") && e.contains("divisible"),
            "{e}"
        );
    }

    /// A residual block with a shared layer: `relu(x + fc(relu(fc(x))))`. The shared Linear is bound
    /// once per tape, so both uses add to its gradient — checked against finite differences.
    #[test]
    fn residual_graph_with_a_shared_layer_has_the_right_gradient() {
        let spec: GraphSpec = serde_json::from_str(
            r#"{"modules":[{"name":"fc","spec":{"type":"Linear","in_features":3,"out_features":3}}],"params":[{"name":"scale","shape":[3]}],"graph":{"inputs":[{"name":"x"}],"nodes":[{"op":{"Call":{"module":"fc"}},"inputs":[0]},{"op":"Relu","inputs":[1]},{"op":{"Call":{"module":"fc"}},"inputs":[2]},{"op":"Add","inputs":[0,3]},{"op":{"Param":{"name":"scale"}},"inputs":[]},{"op":"Mul","inputs":[4,5]},{"op":{"Reduce":{"kind":"sum","dims":[0,1],"keepdim":false}},"inputs":[6]}],"outputs":[7]}}"#,
        )
        .unwrap();
        let mut net = Net::from_spec(&spec, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        net.tensor_mut("scale")
            .unwrap()
            .set_value(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.5, -1.0, 2.0]).unwrap());
        let x =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.3, -0.2, 0.5, 1.0, 0.1, -0.7]).unwrap();
        let loss = |net: &mut Net| -> f64 {
            let mut t = Tape::inference();
            let v = t.constant(x.clone());
            let out = net.forward_all(&mut t, &[v]).unwrap()[0];
            t.value(out).sum() as f64
        };
        let mut t = Tape::new(true, 0);
        let v = t.constant(x.clone());
        let out = net.forward_all(&mut t, &[v]).unwrap()[0];
        t.backward(out).unwrap();
        net.zero_grad();
        net.collect_grads(&mut t);
        let grads: Vec<(String, Tensor)> = net
            .tensors()
            .into_iter()
            .map(|(n, p)| (n, p.grad.clone().expect("every parameter gets a gradient")))
            .collect();
        for (name, g) in grads {
            for i in 0..g.len() {
                let h = 1e-2;
                let at = |net: &mut Net, d: f32| {
                    let p = net.tensor_mut(&name).unwrap();
                    let v = p.value_mut().as_slice_mut().unwrap();
                    v[i] += d;
                };
                at(&mut net, h);
                let up = loss(&mut net);
                at(&mut net, -2.0 * h);
                let down = loss(&mut net);
                at(&mut net, h);
                let fd = (up - down) / (2.0 * h as f64);
                let an = g.as_slice().unwrap()[i] as f64;
                assert!(
                    (fd - an).abs() < 2e-2 * (1.0 + fd.abs()),
                    "{name}[{i}]: fd {fd} vs {an}"
                );
            }
        }
    }
}
