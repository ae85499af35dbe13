//! One graph for every model: what Python's `forward` is traced into, what the fit loop runs on the
//! tape, what a checkpoint stores as JSON and what the ONNX exporter walks. A `Sequential` is the
//! simple way to build one (a chain of `Call` nodes).
//!
//! Values are numbered: the graph's inputs first, then one value per node in order. A node reads
//! earlier values only, so the node list is already a topological order. Every op here runs on the
//! tape's own ops (forward and backward side by side in `autograd`), so a graph model trains with
//! the same gradients a Sequential does.

pub(crate) mod op_json;
mod samples;
mod tracer;

pub use tracer::Tracer;

use serde::{Deserialize, Serialize};

use crate::autograd::{GeluApprox, Tape, Var};
use crate::nn::{Attention, Module, Param};
use crate::{shape_err, value_err, KilnError, Result};

/// One axis of a `Reshape` target: a size, `-1` (inferred), or `"batch"`, the batch size of the run.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A fixed size, or -1 for "whatever is left".
    Size(i64),
    /// The batch size.
    Batch,
}

// By hand rather than `#[serde(untagged)]` (serde's `Content` buffering is a visible share of the
// browser's small module); ops are read by `op_json`.
impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Dim::Size(n) => s.serialize_i64(*n),
            Dim::Batch => s.serialize_str("batch"),
        }
    }
}

/// Element-wise operations with a constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalarOp {
    /// `x + c`
    Add,
    /// `x - c`
    Sub,
    /// `c - x`
    Rsub,
    /// `x * c`
    Mul,
    /// `x / c`
    Div,
    /// `c / x`
    Rdiv,
    /// `x ** c`
    Pow,
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Mean.
    Mean,
    /// Sum.
    Sum,
    /// Maximum (over one axis).
    Max,
}

/// What a node computes. Axes may be negative (counted from the end), as in PyTorch. In JSON an op
/// is its name (`"Relu"`) or its name over its arguments (`{"Softmax": {"dim": -1}}`): externally
/// tagged, which serde reads without buffering (the browser's module stays small).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[allow(missing_docs)] // the fields are PyTorch's arguments of the same name
pub enum Op {
    /// Run the module at this path (a layer such as `blocks.0.conv1`) on its inputs (one for most
    /// layers; a recurrent layer also takes its initial state). A module with several outputs
    /// (`nn.GRU`: output and h_n) gives a tuple value, read through `Item`.
    Call {
        module: String,
    },
    /// One element of a tuple value (`out, h = self.gru(x)` is a `Call` and two `Item`s).
    Item {
        index: usize,
    },
    /// A parameter or buffer by state-dict name, as a value (`F.linear(x, self.weight)`).
    Param {
        name: String,
    },
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Neg,
    Scalar {
        kind: ScalarOp,
        value: f32,
    },
    Relu,
    LeakyRelu {
        negative_slope: f32,
    },
    Gelu {
        approximate: GeluApprox,
    },
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    /// The error function (ONNX's `Erf`, how exported graphs spell exact GELU).
    Erf,
    /// ONNX's `QuantizeLinear → DequantizeLinear` on one tensor (QDQ models): x onto the grid
    /// `scale · (q - zero_point)`, q whole in `[qmin, qmax]` ([`crate::autograd::QuantGrid`]).
    FakeQuant {
        scale: f32,
        zero_point: f32,
        qmin: f32,
        qmax: f32,
    },
    Softmax {
        dim: isize,
    },
    LogSoftmax {
        dim: isize,
    },
    Dropout {
        p: f32,
    },
    Reshape {
        shape: Vec<Dim>,
    },
    Flatten {
        start_dim: isize,
        end_dim: isize,
    },
    Permute {
        dims: Vec<isize>,
    },
    Reduce {
        kind: Reduction,
        dims: Vec<isize>,
        keepdim: bool,
    },
    /// `x[..., start:end, ...]` along `dim` (step 1; bounds already clamped by the tracer).
    Slice {
        dim: isize,
        start: usize,
        end: usize,
    },
    Concat {
        dim: isize,
    },
    MaxPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    AvgPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    /// Inputs: x, weight, and optionally bias.
    Linear,
    /// Inputs: x, weight, and optionally bias.
    Conv2d {
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    },
    /// Inputs: x, weight, bias (over the trailing dims of the weight's shape).
    LayerNorm {
        eps: f32,
    },
    /// Inputs: ids, weight.
    Embedding,
    /// Inputs: x and indices (whole numbers, negative ones counted from the end) picked along
    /// `dim`: the output's shape is `x[..dim] + indices + x[dim + 1..]` (ONNX's `Gather`).
    Gather {
        dim: isize,
    },
    /// Inputs: x `[N, C, L]`, weight, and optionally bias.
    Conv1d {
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    },
    /// A call of `nn.MultiheadAttention`: inputs query, key, value, the layer's weights (as
    /// `Param` values) and the masks given; a tuple (output, weights) when `need_weights`.
    MultiheadAttention(Attention),
}

impl Op {
    /// One value in, the same shape out, each element from its own input element alone (so it
    /// keeps a batch's samples and a sequence's positions apart).
    pub(crate) fn is_unary_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Neg
                | Op::Scalar { .. }
                | Op::Relu
                | Op::LeakyRelu { .. }
                | Op::Gelu { .. }
                | Op::Sigmoid
                | Op::Tanh
                | Op::Exp
                | Op::Log
                | Op::Sqrt
                | Op::Erf
                | Op::FakeQuant { .. }
                | Op::Dropout { .. }
        )
    }
}

/// A graph input: its name (forward's argument name), element type and per-sample shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphInput {
    /// The name; it becomes the ONNX input name.
    pub name: String,
    /// `"float32"` or `"int64"` (ids for an embedding; carried as whole numbers in f32 on the tape).
    #[serde(default = "float32")]
    pub dtype: String,
    /// The shape of one sample (without the batch axis), once known.
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
}

fn float32() -> String {
    "float32".into()
}

/// One node: an op, the values it reads, and where it came from in the user's code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// The values it reads (graph inputs first, then node outputs, numbered in order).
    pub inputs: Vec<usize>,
    /// `file.py:12` of the line in `forward` that made it, for error messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}

/// The dataflow of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The inputs, in forward's argument order.
    pub inputs: Vec<GraphInput>,
    /// The nodes, each reading only earlier values.
    pub nodes: Vec<Node>,
    /// The values the model returns, in order.
    pub outputs: Vec<usize>,
}

impl Graph {
    /// The chain a Sequential is: one input, each module called on the previous value.
    pub fn chain(modules: &[String]) -> Graph {
        Graph {
            inputs: vec![GraphInput {
                name: "input".into(),
                dtype: float32(),
                shape: None,
            }],
            nodes: modules
                .iter()
                .enumerate()
                .map(|(i, m)| Node {
                    op: Op::Call { module: m.clone() },
                    inputs: vec![i],
                    line: None,
                })
                .collect(),
            outputs: vec![modules.len()],
        }
    }

    /// Structural checks: every node reads earlier values, outputs exist, names are unique.
    pub fn validate(&self) -> Result<()> {
        if self.inputs.is_empty() {
            value_err!("graph: a model needs at least one input");
        }
        self.validate_inputs()?;
        self.validate_nodes()
    }

    fn validate_inputs(&self) -> Result<()> {
        for (i, a) in self.inputs.iter().enumerate() {
            if self.inputs[..i].iter().any(|b| b.name == a.name) {
                value_err!("graph: two inputs are named {:?}", a.name);
            }
            if a.dtype != "float32" && a.dtype != "int64" {
                value_err!(
                    "graph: input {:?} has element type {:?}; kiln takes float32 or int64",
                    a.name,
                    a.dtype
                );
            }
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<()> {
        let n_in = self.inputs.len();
        for (k, node) in self.nodes.iter().enumerate() {
            if let Some(&bad) = node.inputs.iter().find(|&&v| v >= n_in + k) {
                value_err!(
                    "graph: node {k} ({:?}) reads value {bad}, which is not computed before it",
                    node.op
                );
            }
        }
        if self.outputs.is_empty() {
            value_err!("graph: a model needs at least one output");
        }
        let n = n_in + self.nodes.len();
        if let Some(&bad) = self.outputs.iter().find(|&&v| v >= n) {
            value_err!("graph: output value {bad} does not exist (the graph has {n} values)");
        }
        Ok(())
    }
}

/// Resolve a possibly negative axis against a rank.
pub fn axis(dim: isize, rank: usize, what: &str) -> Result<usize> {
    let r = rank as isize;
    let a = if dim < 0 { dim + r } else { dim };
    if !(0..r).contains(&a) {
        shape_err!("{what}: dim {dim} is out of range for a tensor of rank {rank}");
    }
    Ok(a as usize)
}

/// What a node needs from the model: modules by path and tensors by state-dict name.
pub trait Scope {
    /// The module at `path` (a forward pass only reads it: see [`Module::forward`]).
    fn module(&mut self, path: &str) -> Result<&dyn Module>;
    /// The tensor (parameter or buffer) with this state-dict name.
    fn tensor(&mut self, name: &str) -> Result<&Param>;
    /// That tensor as a value on the tape (bound once per tape: every use reads one variable, so
    /// a weight used twice gets both gradients).
    fn bind(&mut self, name: &str, t: &mut Tape) -> Result<Var> {
        Ok(self.tensor(name)?.bind(t))
    }
    /// How errors name the module at `path`, with its layer type (`layer 0 (Linear)`, `fc (Linear)`).
    fn label(&self, path: &str) -> (String, String) {
        (path.to_string(), String::new())
    }
}

/// A value of a running graph: one tensor, or the several a module returned (read through
/// [`Op::Item`]). Only `Item` reads a tuple; a graph's outputs are single tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// One tensor on the tape.
    One(Var),
    /// A module's several outputs, in order.
    Tuple(Vec<Var>),
}

impl Value {
    /// The tensor, or a clear error for a tuple.
    pub fn var(&self) -> Result<Var> {
        match self {
            Value::One(v) => Ok(*v),
            Value::Tuple(vs) => value_err!(
                "this value is a tuple of {} tensors (a module with several outputs, such as nn.GRU): unpack it first (`out, h = self.gru(x)`)",
                vs.len()
            ),
        }
    }
}

/// Run one node's op on the tape, on values that may be tuples: `Item` reads one, a module call
/// may return one; every other op takes and gives single tensors.
pub fn run_node(scope: &mut dyn Scope, t: &mut Tape, op: &Op, xs: &[Value]) -> Result<Value> {
    match op {
        Op::Item { index } => {
            let [Value::Tuple(parts)] = xs else {
                value_err!("Item reads one tuple value (a module's several outputs)");
            };
            match parts.get(*index) {
                Some(&v) => Ok(Value::One(v)),
                None => value_err!("Item {index}: the tuple has {} elements", parts.len()),
            }
        }
        Op::MultiheadAttention(att) => {
            let vars = xs.iter().map(Value::var).collect::<Result<Vec<_>>>()?;
            Ok(match att.forward(t, &vars)? {
                (o, Some(w)) => Value::Tuple(vec![o, w]),
                (o, None) => Value::One(o),
            })
        }
        Op::Call { module } => {
            let vars = xs.iter().map(Value::var).collect::<Result<Vec<_>>>()?;
            let mut outs = scope.module(module)?.forward_multi(t, &vars)?;
            Ok(if outs.len() == 1 {
                Value::One(outs.remove(0))
            } else {
                Value::Tuple(outs)
            })
        }
        _ => {
            let vars = xs.iter().map(Value::var).collect::<Result<Vec<_>>>()?;
            run_op(scope, t, op, &vars).map(Value::One)
        }
    }
}

/// Run one node's op on the tape (ops on single tensors; see [`run_node`] for tuples).
pub fn run_op(scope: &mut dyn Scope, t: &mut Tape, op: &Op, xs: &[Var]) -> Result<Var> {
    let arity = |n: usize| -> Result<()> {
        if xs.len() != n {
            value_err!("{op:?} takes {n} input(s), got {}", xs.len());
        }
        Ok(())
    };
    let rank = |t: &Tape, v: Var| t.shape(v).len();
    Ok(match op {
        Op::Call { .. } | Op::Item { .. } | Op::MultiheadAttention(_) => {
            let vals: Vec<Value> = xs.iter().map(|&v| Value::One(v)).collect();
            run_node(scope, t, op, &vals)?.var()?
        }
        Op::Param { name } => {
            arity(0)?;
            scope.bind(name, t)?
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::MatMul => {
            arity(2)?;
            let (a, b) = (xs[0], xs[1]);
            match op {
                Op::Add => t.add(a, b)?,
                Op::Sub => t.sub(a, b)?,
                Op::Mul => t.mul(a, b)?,
                Op::Div => t.div(a, b)?,
                _ => t.matmul(a, b)?,
            }
        }
        Op::Neg => {
            arity(1)?;
            t.neg(xs[0])
        }
        Op::Scalar { kind, value } => {
            arity(1)?;
            let (x, c) = (xs[0], *value);
            match kind {
                ScalarOp::Add => t.add_scalar(x, c),
                ScalarOp::Sub => t.add_scalar(x, -c),
                ScalarOp::Rsub => {
                    let n = t.neg(x);
                    t.add_scalar(n, c)
                }
                ScalarOp::Mul => t.scale(x, c),
                ScalarOp::Div => t.scale(x, 1.0 / c),
                ScalarOp::Rdiv => {
                    let r = t.pow(x, -1.0);
                    t.scale(r, c)
                }
                ScalarOp::Pow => t.pow(x, c),
            }
        }
        Op::Relu => unary(t, xs, |t, x| Ok(t.relu(x)))?,
        Op::LeakyRelu { negative_slope } => {
            unary(t, xs, |t, x| Ok(t.leaky_relu(x, *negative_slope)))?
        }
        Op::Gelu { approximate } => unary(t, xs, |t, x| Ok(t.gelu(x, *approximate)))?,
        Op::Sigmoid => unary(t, xs, |t, x| Ok(t.sigmoid(x)))?,
        Op::Tanh => unary(t, xs, |t, x| Ok(t.tanh(x)))?,
        Op::Exp => unary(t, xs, |t, x| Ok(t.exp(x)))?,
        Op::Log => unary(t, xs, |t, x| Ok(t.log(x)))?,
        Op::Sqrt => unary(t, xs, |t, x| Ok(t.sqrt(x)))?,
        Op::Erf => unary(t, xs, |t, x| Ok(t.erf(x)))?,
        Op::FakeQuant {
            scale,
            zero_point,
            qmin,
            qmax,
        } => {
            let grid = crate::autograd::QuantGrid {
                scale: *scale,
                zero_point: *zero_point,
                qmin: *qmin,
                qmax: *qmax,
            };
            unary(t, xs, |t, x| Ok(t.fake_quant(x, grid)))?
        }
        Op::Softmax { dim } => unary(t, xs, |t, x| {
            let a = axis(*dim, rank(t, x), "softmax")?;
            t.softmax(x, a)
        })?,
        Op::LogSoftmax { dim } => unary(t, xs, |t, x| {
            let a = axis(*dim, rank(t, x), "log_softmax")?;
            t.log_softmax(x, a)
        })?,
        Op::Dropout { p } => unary(t, xs, |t, x| t.dropout(x, *p))?,
        Op::Reshape { shape } => unary(t, xs, |t, x| {
            let target = reshape_target(t.shape(x), shape)?;
            t.reshape(x, &target)
        })?,
        Op::Flatten { start_dim, end_dim } => unary(t, xs, |t, x| {
            let s = t.shape(x).to_vec();
            let a = axis(*start_dim, s.len(), "flatten")?;
            let b = axis(*end_dim, s.len(), "flatten")?;
            if a > b {
                shape_err!("flatten: start_dim {start_dim} comes after end_dim {end_dim}");
            }
            let mut target = s[..a].to_vec();
            target.push(s[a..=b].iter().product());
            target.extend(&s[b + 1..]);
            t.reshape(x, &target)
        })?,
        Op::Permute { dims } => unary(t, xs, |t, x| {
            let r = rank(t, x);
            if dims.len() != r {
                shape_err!(
                    "permute: {} dims given for a tensor of rank {r}",
                    dims.len()
                );
            }
            let perm = dims
                .iter()
                .map(|&d| axis(d, r, "permute"))
                .collect::<Result<Vec<_>>>()?;
            t.permute(x, &perm)
        })?,
        Op::Reduce {
            kind,
            dims,
            keepdim,
        } => unary(t, xs, |t, x| {
            let r = rank(t, x);
            let mut axes = dims
                .iter()
                .map(|&d| axis(d, r, "reduce"))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            axes.dedup();
            match kind {
                Reduction::Mean => t.mean(x, &axes, *keepdim),
                Reduction::Sum => t.sum(x, &axes, *keepdim),
                Reduction::Max => {
                    let [a] = axes[..] else {
                        value_err!("max: kiln reduces max over one dim at a time, got {dims:?}");
                    };
                    t.max(x, a, *keepdim)
                }
            }
        })?,
        Op::Slice { dim, start, end } => unary(t, xs, |t, x| {
            let a = axis(*dim, rank(t, x), "slice")?;
            t.slice(x, a, *start, *end)
        })?,
        Op::Concat { dim } => {
            if xs.is_empty() {
                value_err!("cat: needs at least one tensor");
            }
            let a = axis(*dim, rank(t, xs[0]), "cat")?;
            t.concat(xs, a)?
        }
        Op::MaxPool2d {
            kernel_size,
            stride,
            padding,
        } => unary(t, xs, |t, x| {
            t.max_pool2d(x, *kernel_size, *stride, *padding)
        })?,
        Op::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => unary(t, xs, |t, x| {
            t.avg_pool2d(x, *kernel_size, *stride, *padding)
        })?,
        Op::Linear => {
            if !(2..=3).contains(&xs.len()) {
                value_err!("linear takes x, weight and an optional bias");
            }
            t.linear(xs[0], xs[1], xs.get(2).copied())?
        }
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            if !(2..=3).contains(&xs.len()) {
                value_err!("conv2d takes x, weight and an optional bias");
            }
            t.conv2d(
                xs[0],
                xs[1],
                xs.get(2).copied(),
                *stride,
                *padding,
                *dilation,
                *groups,
            )?
        }
        Op::LayerNorm { eps } => {
            arity(3)?;
            t.layer_norm(xs[0], xs[1], xs[2], *eps)?
        }
        Op::Embedding => {
            arity(2)?;
            let n = t.shape(xs[1]).first().copied().unwrap_or(0);
            let mut ids = ndarray::ArrayD::<usize>::zeros(t.value(xs[0]).raw_dim());
            for (id, &v) in ids.iter_mut().zip(t.value(xs[0]).iter()) {
                if v.fract() != 0.0 || v < 0.0 || v >= n as f32 {
                    value_err!("embedding: input {v} is not an index in 0..{n}");
                }
                *id = v as usize;
            }
            t.embedding(xs[1], &ids)?
        }
        Op::Gather { dim } => {
            arity(2)?;
            let shape = t.shape(xs[0]).to_vec();
            let a = axis(*dim, shape.len(), "gather")?;
            let n = shape[a] as f32;
            let mut picked = Vec::with_capacity(t.value(xs[1]).len());
            for &v in t.value(xs[1]).iter() {
                let i = if v < 0.0 { v + n } else { v };
                if v.fract() != 0.0 || !(0.0..n).contains(&i) {
                    value_err!("gather: index {v} is out of range for dim {a} of size {n}");
                }
                picked.push(i as usize);
            }
            let mut out = shape[..a].to_vec();
            out.extend_from_slice(t.shape(xs[1]));
            out.extend_from_slice(&shape[a + 1..]);
            let y = t.index_select(xs[0], a, &picked)?;
            t.reshape(y, &out)?
        }
        Op::Conv1d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            if !(2..=3).contains(&xs.len()) {
                value_err!("conv1d takes x, weight and an optional bias");
            }
            t.conv1d(
                xs[0],
                xs[1],
                xs.get(2).copied(),
                *stride,
                *padding,
                *dilation,
                *groups,
            )?
        }
    })
}

fn unary(t: &mut Tape, xs: &[Var], f: impl FnOnce(&mut Tape, Var) -> Result<Var>) -> Result<Var> {
    let [x] = xs[..] else {
        value_err!("this op takes one input, got {}", xs.len());
    };
    f(t, x)
}

/// The concrete shape of a reshape: `"batch"` is the input's first axis, `-1` what is left.
pub fn reshape_target(input: &[usize], shape: &[Dim]) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, d) in shape.iter().enumerate() {
        match d {
            Dim::Batch => out.push(*input.first().unwrap_or(&1)),
            Dim::Size(-1) if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            Dim::Size(s) if *s >= 0 => out.push(*s as usize),
            Dim::Size(s) => shape_err!("reshape: size {s} is not allowed (one -1 at most)"),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            shape_err!("reshape: cannot reshape {input:?} into {shape:?}");
        }
        out[i] = total / known;
    } else if known != total {
        shape_err!("reshape: {input:?} has {total} values, the target {out:?} holds {known}");
    }
    Ok(out)
}

/// Run the whole graph on the tape: the inputs' variables in, the outputs' variables out.
pub fn run(scope: &mut dyn Scope, graph: &Graph, t: &mut Tape, inputs: &[Var]) -> Result<Vec<Var>> {
    run_observed(scope, graph, t, inputs, &mut |_, _, _| {})
}

/// [`run`], calling `seen(node, tape, value)` after each node (the model summary records shapes this way).
pub fn run_observed(
    scope: &mut dyn Scope,
    graph: &Graph,
    t: &mut Tape,
    inputs: &[Var],
    seen: &mut dyn FnMut(&Node, &Tape, Var),
) -> Result<Vec<Var>> {
    if inputs.len() != graph.inputs.len() {
        value_err!(
            "the model takes {} input(s) ({}), got {}",
            graph.inputs.len(),
            crate::model::input_names(&graph.inputs),
            inputs.len()
        );
    }
    let mut values: Vec<Value> = inputs.iter().map(|&v| Value::One(v)).collect();
    for node in &graph.nodes {
        let xs: Vec<Value> = node.inputs.iter().map(|&i| values[i].clone()).collect();
        let v = run_node(scope, t, &node.op, &xs).map_err(|e| at_node(&*scope, node, e))?;
        match &v {
            Value::One(x) => seen(node, t, *x),
            // a module's several outputs: its first (nn.GRU's output sequence) stands for it
            Value::Tuple(parts) => {
                if let Some(&x) = parts.first() {
                    seen(node, t, x)
                }
            }
        }
        values.push(v);
    }
    graph.outputs.iter().map(|&o| values[o].var()).collect()
}

impl Graph {
    /// For each node, the values no later node nor the output reads once it has run (parameters
    /// aside): what an inference run frees as it goes, so it holds the live activations rather
    /// than all of them.
    pub fn last_uses(&self) -> Vec<Vec<usize>> {
        let n_values = self.inputs.len() + self.nodes.len();
        let mut seen = vec![false; n_values];
        for &o in &self.outputs {
            seen[o] = true;
        }
        // A parameter's value is bound once per tape and name (its nodes may repeat): kept.
        let n_in = self.inputs.len();
        for (k, node) in self.nodes.iter().enumerate() {
            if matches!(node.op, Op::Param { .. }) {
                seen[n_in + k] = true;
            }
        }
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (k, node) in self.nodes.iter().enumerate().rev() {
            for &i in &node.inputs {
                if !std::mem::replace(&mut seen[i], true) {
                    out[k].push(i);
                }
            }
        }
        out
    }
}

/// Run the graph for inference, freeing each value after its last use (`last_uses` of the same
/// graph): the outputs' values, in order.
pub fn run_inference(
    scope: &mut dyn Scope,
    graph: &Graph,
    last_uses: &[Vec<usize>],
    t: &mut Tape,
    inputs: &[Var],
) -> Result<Vec<crate::Tensor>> {
    if inputs.len() != graph.inputs.len() {
        value_err!(
            "the model takes {} input(s), got {}",
            graph.inputs.len(),
            inputs.len()
        );
    }
    let mut values: Vec<Value> = inputs.iter().map(|&v| Value::One(v)).collect();
    for (node, dead) in graph.nodes.iter().zip(last_uses) {
        let xs: Vec<Value> = node.inputs.iter().map(|&i| values[i].clone()).collect();
        let v = run_node(scope, t, &node.op, &xs).map_err(|e| at_node(&*scope, node, e))?;
        values.push(v);
        for &d in dead {
            match &values[d] {
                Value::One(v) => drop(t.take_value(*v)),
                // a tuple's parts may still be read through later Items: they are freed as
                // those Items' values are
                Value::Tuple(_) => {}
            }
        }
    }
    let mut out = Vec::with_capacity(graph.outputs.len());
    for (k, &o) in graph.outputs.iter().enumerate() {
        let v = values[o].var()?;
        // the same value returned twice is copied, not taken twice
        if graph.outputs[k + 1..].contains(&o) {
            out.push(t.value(v).clone());
        } else {
            out.push(t.take_value(v));
        }
    }
    Ok(out)
}

/// Say where in the user's code (or which layer) an error came from: `layer 0 (Linear): …` for a
/// Sequential, `fc (Linear) at net.py:12: …` for a traced model.
pub(crate) fn at_node(scope: &dyn Scope, node: &Node, e: KilnError) -> KilnError {
    let (place, type_name) = match &node.op {
        Op::Call { module } => {
            let (label, ty) = scope.label(module);
            match &node.line {
                Some(line) => (format!("{label} at {line}"), ty),
                None => (label, ty),
            }
        }
        _ => match &node.line {
            Some(line) => (line.clone(), String::new()),
            None => return e,
        },
    };
    let prefix = |m: String| {
        if m.starts_with(&place) {
            m
        } else if !type_name.is_empty() && m.starts_with(&type_name) {
            format!("{place}{}", &m[type_name.len()..])
        } else {
            format!("{place}: {m}")
        }
    };
    match e {
        KilnError::Shape(m) => KilnError::Shape(prefix(m)),
        KilnError::Value(m) => KilnError::Value(prefix(m)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_resolve_batch_and_minus_one() {
        let b = Dim::Batch;
        assert_eq!(
            reshape_target(&[4, 3, 2], &[b.clone(), Dim::Size(-1)]).unwrap(),
            [4, 6]
        );
        assert_eq!(
            reshape_target(&[4, 6], &[b, Dim::Size(2), Dim::Size(3)]).unwrap(),
            [4, 2, 3]
        );
        assert!(reshape_target(&[4, 6], &[Dim::Size(5), Dim::Size(-1)]).is_err());
        assert!(reshape_target(&[4, 6], &[Dim::Size(-1), Dim::Size(-1)]).is_err());
    }

    #[test]
    fn graph_json_round_trip_and_validation() {
        let json = r#"{"inputs":[{"name":"x"}],"nodes":[{"op":{"Call":{"module":"stem"}},"inputs":[0]},{"op":"Add","inputs":[0,1],"line":"net.py:9"},{"op":{"Reshape":{"shape":["batch",-1]}},"inputs":[2]}],"outputs":[3]}"#;
        let g: Graph = serde_json::from_str(json).unwrap();
        g.validate().unwrap();
        assert_eq!(g.inputs[0].dtype, "float32");
        let back: Graph = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        let mut bad = g.clone();
        bad.nodes[0].inputs = vec![3];
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not computed before"));
        let mut bad = g;
        bad.outputs = vec![9];
        assert!(bad.validate().is_err());
    }
}
