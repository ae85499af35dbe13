//! Tracing: Python's `forward` (or any caller) records ops one by one into a [`Graph`].

use super::{at_node, run_node, Graph, GraphInput, Node, Op, Scope, Value};
use crate::autograd::Tape;
use crate::{value_err, KilnError, Result};

/// Records a graph op by op, running each op as it comes on zeros at two batch sizes: shapes and
/// errors are known at the line that made the op, and the axes whose size differs between the two
/// runs are the batch axes. An op that fixes a size computed from the batch fails on the second run
/// instead of silently baking one batch size into the graph.
pub struct Tracer {
    graph: Graph,
    runs: [(Tape, Vec<Value>); 2],
}

/// The two batch sizes a trace runs at.
const TRACE_BATCH: [usize; 2] = [2, 3];

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer {
    /// An empty trace.
    pub fn new() -> Self {
        Tracer {
            graph: Graph {
                inputs: Vec::new(),
                nodes: Vec::new(),
                outputs: Vec::new(),
            },
            runs: [
                (Tape::inference(), Vec::new()),
                (Tape::inference(), Vec::new()),
            ],
        }
    }

    /// A graph input with this per-sample shape; returns its value id.
    pub fn input(&mut self, name: &str, dtype: &str, per_sample: &[usize]) -> Result<usize> {
        let shapes = TRACE_BATCH.map(|b| {
            let mut shape = vec![b];
            shape.extend(per_sample);
            shape
        });
        self.input_at(name, dtype, Some(per_sample.to_vec()), shapes)
    }

    /// A graph input given the exact shape of each of the two runs (an imported ONNX graph sets
    /// its free dimensions to different sizes in the two, its fixed ones to the same).
    pub fn input_at(
        &mut self,
        name: &str,
        dtype: &str,
        per_sample: Option<Vec<usize>>,
        shapes: [Vec<usize>; 2],
    ) -> Result<usize> {
        if !self.graph.nodes.is_empty() {
            value_err!("trace: inputs come before the first op");
        }
        self.graph.inputs.push(GraphInput {
            name: name.into(),
            dtype: dtype.into(),
            shape: per_sample,
        });
        self.graph.validate_inputs()?;
        for ((t, vals), shape) in self.runs.iter_mut().zip(shapes) {
            vals.push(Value::One(
                t.constant(crate::Tensor::zeros(ndarray::IxDyn(&shape))),
            ));
        }
        Ok(self.runs[0].1.len() - 1)
    }

    /// A value's shape in each of the two runs (empty for a tuple).
    pub fn run_shapes(&self, id: usize) -> [&[usize]; 2] {
        [0, 1].map(|k| match &self.runs[k].1[id] {
            Value::One(v) => self.runs[k].0.shape(*v),
            Value::Tuple(_) => &[][..],
        })
    }

    /// Drop a value's two copies once nothing more reads them (an import keeps a large model's
    /// trace to its live activations); reading it afterwards gives an empty tensor.
    pub fn release(&mut self, id: usize) {
        for (t, vals) in &mut self.runs {
            let vars = match &vals[id] {
                Value::One(v) => vec![*v],
                Value::Tuple(vs) => vs.clone(),
            };
            for v in vars {
                drop(t.take_value(v));
            }
        }
    }

    /// Record `op` on `inputs` (value ids) and run it; returns the new value's id.
    pub fn op(
        &mut self,
        scope: &mut dyn Scope,
        op: Op,
        inputs: Vec<usize>,
        line: Option<String>,
    ) -> Result<usize> {
        let n = self.runs[0].1.len();
        if let Some(&bad) = inputs.iter().find(|&&i| i >= n) {
            value_err!("trace: value {bad} does not exist yet");
        }
        let node = Node { op, inputs, line };
        let mut outs = [None, None];
        for (k, (t, vals)) in self.runs.iter_mut().enumerate() {
            let xs: Vec<Value> = node.inputs.iter().map(|&i| vals[i].clone()).collect();
            let v = run_node(scope, t, &node.op, &xs).map_err(|e| {
                if k == 1 {
                    KilnError::value(match &node.line {
                        Some(line) => format!(
                            "{line}: this works at one batch size but not at another ({e}); a size computed from x.shape[0] is fixed into the graph: pass x.shape[0] itself (or -1) instead"
                        ),
                        // an importer's node (no user line): the free dimensions' sizes matter
                        None => format!(
                            "{:?} works at one size of the free dimensions but not at another ({e})",
                            node.op
                        ),
                    })
                } else {
                    at_node(&*scope, &node, e)
                }
            })?;
            outs[k] = Some(v);
        }
        for ((_, vals), v) in self.runs.iter_mut().zip(outs) {
            vals.push(v.expect("both runs ran"));
        }
        self.graph.nodes.push(node);
        Ok(n)
    }

    /// How many tensors a value holds when it is a tuple (a module's several outputs, read
    /// through `Op::Item`); `None` for a single tensor.
    pub fn tuple_len(&self, id: usize) -> Option<usize> {
        match &self.runs[0].1[id] {
            Value::Tuple(vs) => Some(vs.len()),
            Value::One(_) => None,
        }
    }

    /// A value's shape, with `None` on the batch axes (empty for a tuple).
    pub fn shape(&self, id: usize) -> Vec<Option<usize>> {
        let (Value::One(a), Value::One(b)) = (&self.runs[0].1[id], &self.runs[1].1[id]) else {
            return Vec::new();
        };
        let a = self.runs[0].0.shape(*a);
        let b = self.runs[1].0.shape(*b);
        if a.len() != b.len() {
            return vec![None; a.len()];
        }
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x == y).then_some(x))
            .collect()
    }

    /// The finished graph, returning these values.
    pub fn finish(mut self, outputs: Vec<usize>) -> Result<Graph> {
        self.graph.outputs = outputs;
        self.graph.validate()?;
        self.check_batch_outputs()?;
        Ok(self.graph)
    }

    /// The finished graph without the batch-first check on its outputs (an imported graph's
    /// outputs are whatever the file declares).
    pub fn graph_with(mut self, outputs: Vec<usize>) -> Result<Graph> {
        self.graph.outputs = outputs;
        self.graph.validate_inputs()?;
        self.graph.validate_nodes()?;
        Ok(self.graph)
    }

    fn check_batch_outputs(&self) -> Result<()> {
        for &o in &self.graph.outputs {
            let v = self.runs[0].1[o].var()?;
            if self.shape(o).first() != Some(&None) {
                value_err!("forward returns a value whose first axis is not the batch (shape {:?} at batch {}): every output needs one row per sample", self.runs[0].0.shape(v), TRACE_BATCH[0]);
            }
        }
        Ok(())
    }
}
