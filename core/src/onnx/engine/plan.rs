//! How kiln's engine runs an imported graph: a plan made once when the model loads. Each `Conv2d`
//! whose weights are the model's own is packed for the tiled kernel ([`PackedConv`]) and takes
//! what follows it when nothing else reads the values in between: a per-channel `Mul` and `Add`
//! (an inference BatchNorm, folded into the packed weights and bias), an `Add` of another
//! activation (a residual) and a `Relu`, all applied in the tile's store, and a `MaxPool2d(2)`
//! after them, pooled in the same step. A QDQ convolution runs on integers ([`QConv`]); a QDQ `Linear` runs
//! on the same integer kernel (its input's QDQ pair absorbed, its weights packed once), taking a
//! `Relu`; natively on x86-64 with AVX-512 or AVX2 a float `Linear` does the same on the channel tile
//! ([`crate::kernels::PackedLinear`]: weights packed at load, bias and ReLU in the store, a flatten
//! before it read in place). Every other node runs as
//! [`crate::graph::run_inference`] runs it. Values are freed after their last reader, and their
//! buffers kept in a [`Pool`] for the next convolutions' outputs, across runs.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};

use super::import::QWeight;
use crate::autograd::QuantGrid;
use crate::autograd::{Tape, Var, Window};
use crate::graph::{self, Graph, Op, Scope, Value};
#[cfg(target_arch = "x86_64")]
use crate::kernels::PackedLinear;
use crate::kernels::{PackedConv, QConv};
use crate::{KilnError, Result, Tensor};

/// One step of the plan.
enum Step {
    /// Graph node `k`, run as the graph says.
    Node(usize),
    /// A convolution (graph node `node`) and the nodes fused into it, giving value `out`.
    Conv(Box<FusedConv>),
}

struct FusedConv {
    /// The convolution's node, then the nodes fused into it, each the only reader of the one before.
    chain: Vec<usize>,
    out: usize,
    x: usize,
    residual: Option<usize>,
    relu: bool,
    conv: Kernel,
    /// For profiles: what was fused (`"·s+b+residual+relu"`).
    fused: String,
    /// The `FakeQuant` node (a QuantizeLinear → DequantizeLinear pair) on the input that only
    /// this integer convolution reads: it quantizes the input itself. For a Linear layer also
    /// the `Reshape` before it (a flatten) when nothing else reads that.
    absorbed: Vec<usize>,
    /// The absorbed `Reshape`'s target: the input is read as that shape.
    reshape: Option<Vec<graph::Dim>>,
    /// A `MaxPool2d(2)` (2×2, stride 2, no padding) after the convolution and its ReLU, pooled
    /// in the same step: without a residual in the tiles' store for an integer convolution
    /// ([`QConv::run_pooled`]) and for a float one where the CPU has the tile for it (x86-64
    /// with AVX-512 or AVX2), else after the convolution.
    pool: bool,
}

/// The kernel a fused convolution runs: float, or integer for a QDQ convolution, or integer for a
/// QDQ Linear layer (a 1×1 convolution over the rows), or (x86-64 with AVX-512 or AVX2) a float Linear
/// layer on the channel tile.
enum Kernel {
    F32(PackedConv),
    I8(QConv),
    I8Rows(QConv),
    #[cfg(target_arch = "x86_64")]
    F32Rows(PackedLinear),
}

impl Kernel {
    fn out_channels(&self) -> usize {
        match self {
            Kernel::F32(c) => c.out_channels(),
            Kernel::I8(c) | Kernel::I8Rows(c) => c.out_channels(),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Rows(l) => l.out_features(),
        }
    }
    /// A Linear layer's input features (its input's last axis), None for a convolution.
    fn in_features(&self) -> Option<usize> {
        match self {
            Kernel::I8Rows(c) => Some(c.in_features()),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Rows(l) => Some(l.in_features()),
            Kernel::F32(_) | Kernel::I8(_) => None,
        }
    }
    fn scale_channels(&mut self, s: &[f32]) {
        match self {
            Kernel::F32(c) => c.scale_channels(s),
            Kernel::I8(c) | Kernel::I8Rows(c) => c.scale_channels(s),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Rows(_) => unreachable!("a Linear layer's chain takes a ReLU only"),
        }
    }
    fn shift_channels(&mut self, t: &[f32]) {
        match self {
            Kernel::F32(c) => c.shift_channels(t),
            Kernel::I8(c) | Kernel::I8Rows(c) => c.shift_channels(t),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Rows(_) => unreachable!("a Linear layer's chain takes a ReLU only"),
        }
    }
    fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        match self {
            Kernel::F32(c) => c.output_shape(x).map(Vec::from),
            Kernel::I8(c) => c.output_shape(x).map(Vec::from),
            // a Linear layer on the last axis, as the tape's Linear
            _ => {
                let (o, k) = (self.out_channels(), self.in_features().unwrap_or(0));
                match x {
                    [rows @ .., last] if !rows.is_empty() && *last == k => {
                        Ok([rows, &[o]].concat())
                    }
                    _ => Err(KilnError::shape(format!(
                        "Linear: input of shape {x:?} does not fit weight of shape [{o}, {k}]"
                    ))),
                }
            }
        }
    }
    fn run(
        &self,
        x: &[f32],
        shape: &[usize],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Kernel::F32(c) => c.run(x, shape, residual, relu, out),
            Kernel::I8(c) => c.run(x, shape, residual, relu, out),
            Kernel::I8Rows(c) => c.run_rows(x, x.len() / c.in_features().max(1), relu, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Rows(l) => l.run(x, x.len() / l.in_features().max(1), relu, out),
        }
    }
    /// Whether a `MaxPool2d(2)` after this kernel, on an output `ow` wide, is taken in its
    /// tiles' store ([`Kernel::run_pooled`]): an integer convolution's where its tiles read in
    /// place, a float one's where the CPU has the tile for it. Otherwise the plan pools after
    /// the convolution, in buffers of its pool.
    fn pools_in_store(&self, ow: usize) -> bool {
        match self {
            Kernel::F32(c) => c.pools_in_store(),
            Kernel::I8(c) => c.pools_in_store(ow),
            _ => false,
        }
    }
    fn run_pooled(&self, x: &[f32], shape: &[usize], relu: bool, out: &mut [f32]) -> Result<()> {
        match self {
            Kernel::F32(c) => c.run_pooled(x, shape, relu, out),
            Kernel::I8(c) => c.run_pooled(x, shape, relu, out),
            _ => Err(KilnError::shape("MaxPool2d: pooled after a Linear layer")),
        }
    }
}

/// A clock in milliseconds, and where each step's name and time go.
pub(super) type Timings<'a> = (&'a dyn Fn() -> f64, &'a mut Vec<(String, f64)>);

/// The steps, and after each the values no later step reads.
pub(super) struct Plan {
    steps: Vec<Step>,
    frees: Vec<Vec<usize>>,
}

/// Buffers of freed values, reused for convolution outputs (a run of a model allocates the same
/// sizes every time). Bounded: a few buffers, the largest kept. It also notes the largest
/// buffer asked for ([`Pool::peak`]): how a batch is cut into chunks.
#[derive(Default)]
pub(super) struct Pool(Vec<Vec<f32>>, usize);

const POOL_SIZE: usize = 8;

impl Pool {
    /// A buffer of `len` values (old contents: the caller overwrites every one): the shortest
    /// kept buffer at least `len` long (truncated, nothing written), else the one with the
    /// fewest values to add (zeros written only past its length), else a new one.
    fn take(&mut self, len: usize) -> Vec<f32> {
        self.1 = self.1.max(len);
        let long = (0..self.0.len())
            .filter(|&i| self.0[i].len() >= len)
            .min_by_key(|&i| self.0[i].len());
        let grown = || {
            (0..self.0.len())
                .filter(|&i| self.0[i].capacity() >= len)
                .max_by_key(|&i| self.0[i].len())
        };
        match long.or_else(grown) {
            Some(i) => {
                let mut v = self.0.swap_remove(i);
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// The most values a convolution's output (or a pooling's) has held since the last call,
    /// which resets it: 0 when none ran.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(super) fn peak(&mut self) -> usize {
        std::mem::take(&mut self.1)
    }

    /// Keeps `t`'s buffer at its length (growing it back to its capacity wrote zeros over what
    /// a shorter value left: 4% of a ResNet-8's run at batch 64).
    fn give(&mut self, t: Tensor) {
        let (v, offset) = t.into_raw_vec_and_offset();
        if v.is_empty() || offset.is_some_and(|o| o != 0) {
            return;
        }
        self.0.push(v);
        if self.0.len() > POOL_SIZE {
            let smallest = (0..self.0.len())
                .min_by_key(|&i| self.0[i].len())
                .expect("non-empty");
            self.0.swap_remove(smallest);
        }
    }
}

/// A weight's values when value `v` is a `Param` node's.
fn param<'a>(graph: &Graph, weights: &'a HashMap<String, Tensor>, v: usize) -> Option<&'a Tensor> {
    weights.get(param_name(graph, v)?)
}

/// The weight name of value `v` when it is a `Param` node's.
fn param_name(graph: &Graph, v: usize) -> Option<&str> {
    let k = v.checked_sub(graph.inputs.len())?;
    match &graph.nodes[k].op {
        Op::Param { name } => Some(name),
        _ => None,
    }
}

/// `t` as one value per channel of an `[N, o, H, W]` value it broadcasts against (`[o, 1, 1]`,
/// `[1, o, 1, 1]`, or a single value), or None.
fn per_channel(t: &Tensor, o: usize) -> Option<Vec<f32>> {
    let s = t.shape();
    if s.len() > 4 || t.is_empty() {
        return None;
    }
    if t.len() == 1 {
        return Some(vec![*t.iter().next()?; o]);
    }
    let mut full = vec![1; 4 - s.len()];
    full.extend_from_slice(s);
    (full == [1, o, 1, 1]).then(|| t.iter().copied().collect())
}

impl Plan {
    /// The plan for `graph`; with `fuse` false every node runs on its own (the reference path).
    pub(super) fn new(
        graph: &Graph,
        weights: &HashMap<String, Tensor>,
        quantized: &HashMap<String, QWeight>,
        fuse: bool,
    ) -> Self {
        let n_in = graph.inputs.len();
        let n_values = n_in + graph.nodes.len();
        let mut readers = vec![Vec::new(); n_values];
        for (k, node) in graph.nodes.iter().enumerate() {
            for &i in &node.inputs {
                readers[i].push(k);
            }
        }
        let mut is_output = vec![false; n_values];
        for &o in &graph.outputs {
            is_output[o] = true;
        }
        // step placed at each node: None for nodes fused into a convolution
        let mut at: Vec<Option<Step>> = (0..graph.nodes.len())
            .map(|k| Some(Step::Node(k)))
            .collect();
        if fuse {
            for k in 0..graph.nodes.len() {
                // a node already fused into an earlier convolution's chain is not a start
                if at[k].is_none() {
                    continue;
                }
                let found = fuse_conv(graph, weights, quantized, &readers, &is_output, &at, k);
                if let Some(f) = found {
                    for &j in f.chain.iter().chain(&f.absorbed) {
                        at[j] = None;
                    }
                    let last = *f.chain.last().expect("the convolution");
                    at[last] = Some(Step::Conv(Box::new(f)));
                }
            }
        }
        let mut steps: Vec<Step> = at.into_iter().flatten().collect();
        // Param nodes no step reads any more (a folded BatchNorm's scale, a packed weight)
        let reads = |s: &Step| -> Vec<usize> {
            match s {
                Step::Node(k) => graph.nodes[*k].inputs.clone(),
                Step::Conv(f) => std::iter::once(f.x).chain(f.residual).collect(),
            }
        };
        let mut needed = is_output.clone();
        for s in steps.iter().rev() {
            for i in reads(s) {
                needed[i] = true;
            }
        }
        steps.retain(|s| match s {
            Step::Node(k) => !matches!(graph.nodes[*k].op, Op::Param { .. }) || needed[n_in + k],
            Step::Conv(_) => true,
        });
        // what each step frees: values past their last reader (parameters and outputs stay)
        let mut seen = is_output;
        for s in &steps {
            if let Step::Node(k) = s {
                if matches!(graph.nodes[*k].op, Op::Param { .. }) {
                    seen[n_in + k] = true;
                }
            }
        }
        let mut frees = vec![Vec::new(); steps.len()];
        for (s, step) in steps.iter().enumerate().rev() {
            for i in reads(step) {
                if !std::mem::replace(&mut seen[i], true) {
                    frees[s].push(i);
                }
            }
        }
        Plan { steps, frees }
    }

    /// Runs the plan on the inputs' variables; returns the outputs. With `timings`, each step's
    /// name and milliseconds by `now` (a clock in ms) are appended.
    pub(super) fn run(
        &self,
        graph: &Graph,
        scope: &mut dyn Scope,
        t: &mut Tape,
        inputs: &[Var],
        pool: &mut Pool,
        mut timings: Option<Timings>,
    ) -> Result<Vec<Tensor>> {
        if inputs.len() != graph.inputs.len() {
            crate::value_err!(
                "the model takes {} input(s), got {}",
                graph.inputs.len(),
                inputs.len()
            );
        }
        let n_in = graph.inputs.len();
        let mut values: Vec<Option<Value>> = vec![None; n_in + graph.nodes.len()];
        for (v, &x) in values.iter_mut().zip(inputs) {
            *v = Some(Value::One(x));
        }
        let get = |values: &[Option<Value>], i: usize| -> Result<Value> {
            values[i]
                .clone()
                .ok_or_else(|| KilnError::value(format!("value {i} was freed before its use")))
        };
        for (step, dead) in self.steps.iter().zip(&self.frees) {
            let t0 = timings.as_ref().map(|(now, _)| now());
            let (out, v) = match step {
                Step::Node(k) => {
                    let node = &graph.nodes[*k];
                    let xs = node
                        .inputs
                        .iter()
                        .map(|&i| get(&values, i))
                        .collect::<Result<Vec<_>>>()?;
                    let v = graph::run_node(scope, t, &node.op, &xs)
                        .map_err(|e| graph::at_node(&*scope, node, e))?;
                    (n_in + k, v)
                }
                Step::Conv(f) => {
                    let x = get(&values, f.x)?.var()?;
                    let r = f.residual.map(|r| get(&values, r)?.var()).transpose()?;
                    let v = f
                        .run(t, x, r, pool)
                        .map_err(|e| graph::at_node(&*scope, &graph.nodes[f.chain[0]], e))?;
                    (f.out, Value::One(v))
                }
            };
            if let (Some(t0), Some((now, out))) = (t0, timings.as_mut()) {
                let shape = match &v {
                    Value::One(x) => format!("{:?}", t.shape(*x)),
                    Value::Tuple(_) => "(tuple)".into(),
                };
                out.push((format!("{} → {shape}", self.name(graph, step)), now() - t0));
            }
            values[out] = Some(v);
            for &d in dead {
                // a tuple's parts may still be read through later Items: they are freed as
                // those Items' values are
                if let Some(Value::One(v)) = values[d].take() {
                    pool.give(t.take_value(v));
                }
            }
        }
        let mut out = Vec::with_capacity(graph.outputs.len());
        for (k, &o) in graph.outputs.iter().enumerate() {
            let v = get(&values, o)?.var()?;
            // the same value returned twice is copied, not taken twice
            if graph.outputs[k + 1..].contains(&o) {
                out.push(t.value(v).clone());
            } else {
                out.push(t.take_value(v));
            }
        }
        Ok(out)
    }

    fn name(&self, graph: &Graph, step: &Step) -> String {
        match step {
            Step::Node(k) => {
                let op = format!("{:?}", graph.nodes[*k].op);
                op.split([' ', '{', '(']).next().unwrap_or("").to_string()
            }
            Step::Conv(f) => match f.conv {
                Kernel::F32(_) => format!("Conv2d{}", f.fused),
                Kernel::I8(_) => format!("QConv2d{}", f.fused),
                Kernel::I8Rows(_) => format!("QLinear{}", f.fused),
                #[cfg(target_arch = "x86_64")]
                Kernel::F32Rows(_) => format!("Linear{}", f.fused),
            },
        }
    }
}

/// The convolution at node `k` with the chain of nodes it takes (`k` first).
fn fuse_conv(
    graph: &Graph,
    weights: &HashMap<String, Tensor>,
    quantized: &HashMap<String, QWeight>,
    readers: &[Vec<usize>],
    is_output: &[bool],
    at: &[Option<Step>],
    k: usize,
) -> Option<FusedConv> {
    let node = &graph.nodes[k];
    let n_in = graph.inputs.len();
    let mut x = *node.inputs.first()?;
    let mut absorbed = Vec::new();
    let mut reshape = None;
    // the input's QDQ pair read by the integer kernel alone: the kernel quantizes
    let mut absorb = |fq: usize, x: &mut usize| {
        if readers[*x].len() == 1 && !is_output[*x] && at[fq].is_some() {
            *x = graph.nodes[fq].inputs[0];
            absorbed.push(fq);
        }
    };
    let mut conv = match node.op {
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let w = param(graph, weights, *node.inputs.get(1)?)?;
            let b = match node.inputs.get(2) {
                Some(&b) => Some(param(graph, weights, b)?),
                None => None,
            };
            let win = Window {
                kernel: [*w.shape().get(2)?, *w.shape().get(3)?],
                stride,
                padding,
                dilation,
            };
            let b = b.map(|b| b.as_standard_layout());
            let b = b.as_ref().and_then(|b| b.as_slice());
            match integer_conv(graph, quantized, node, w.shape(), b, win, groups) {
                Some((q, fq)) => {
                    absorb(fq, &mut x);
                    Kernel::I8(q)
                }
                None => {
                    let w = w.as_standard_layout();
                    Kernel::F32(PackedConv::best(w.as_slice()?, w.shape(), b, win, groups).ok()?)
                }
            }
        }
        // a QDQ Linear layer on integers; a float one on the channel tile where the CPU has one
        // (x86-64 with AVX-512 or AVX2), else as its node
        Op::Linear => {
            let (kernel, flat) = match integer_linear(graph, weights, quantized, node) {
                Some((q, fq)) => {
                    absorb(fq, &mut x);
                    (Kernel::I8Rows(q), !absorbed.is_empty())
                }
                None => (float_linear(graph, weights, node)?, true),
            };
            // a flatten before it (before the QDQ pair): the kernel reads its input as the flat shape
            let r = x.checked_sub(n_in).map(|r| (r, &graph.nodes[r].op));
            if let (Some((r, Op::Reshape { shape })), true) = (r, flat) {
                if readers[x].len() == 1 && !is_output[x] && at[r].is_some() {
                    reshape = Some(shape.clone());
                    absorbed.push(r);
                    x = graph.nodes[r].inputs[0];
                }
            }
            kernel
        }
        _ => return None,
    };
    let o = conv.out_channels();
    let (mut chain, mut residual, mut relu, mut fused) = (vec![k], None, false, String::new());
    let mut out = n_in + k;
    while !relu && !is_output[out] && readers[out].len() == 1 {
        let j = readers[out][0];
        if at[j].is_none() {
            break; // another convolution's chain took it (the other side of a residual add)
        }
        let next = &graph.nodes[j];
        let other = match next.inputs[..] {
            [a, b] if a == out && b != out => Some(b),
            [a, b] if b == out && a != out => Some(a),
            _ => None,
        };
        // a weight of one value per channel: folded while nothing but scales and shifts came before
        let constant = other.and_then(|c| param(graph, weights, c));
        let channels = constant.and_then(|c| per_channel(c, o));
        let rows = conv.in_features().is_some();
        match (&next.op, other) {
            // (a Linear layer takes its ReLU only: its channels are the last axis)
            (Op::Mul | Op::Add, _) if rows => break,
            (Op::Mul | Op::Add, Some(_)) if residual.is_none() && constant.is_some() => {
                let Some(c) = channels else { break };
                if next.op == Op::Mul {
                    conv.scale_channels(&c);
                    fused.push_str("·s");
                } else {
                    conv.shift_channels(&c);
                    fused.push_str("+b");
                }
            }
            (Op::Add, Some(r)) if residual.is_none() => {
                residual = Some(r);
                fused.push_str("+residual");
            }
            (Op::Relu, None) if next.inputs.len() == 1 => {
                relu = true;
                fused.push_str("+relu");
            }
            _ => break,
        }
        chain.push(j);
        out = n_in + j;
    }
    // a convolution pools its output in the same step
    let mut pool = false;
    let convolution = matches!(conv, Kernel::I8(_) | Kernel::F32(_));
    if let (true, false, [j]) = (convolution, is_output[out], &readers[out][..]) {
        let next = &graph.nodes[*j];
        if at[*j].is_some()
            && next.inputs == [out]
            && next.op
                == (Op::MaxPool2d {
                    kernel_size: [2, 2],
                    stride: [2, 2],
                    padding: [0, 0],
                })
        {
            pool = true;
            fused.push_str("+pool");
            chain.push(*j);
            out = n_in + *j;
        }
    }
    Some(FusedConv {
        chain,
        out,
        x,
        residual,
        relu,
        conv,
        fused,
        absorbed,
        reshape,
        pool,
    })
}

/// The integer kernel for a QDQ convolution: its input a `FakeQuant` node's output (returned
/// too) on an 8-bit grid, its weight a dequantized int8/uint8 constant with one scale or one per
/// output channel. None otherwise (or when [`QConv::new`] declines, e.g. a sum that could
/// overflow i32): the float kernel runs it.
fn integer_conv(
    graph: &Graph,
    quantized: &HashMap<String, QWeight>,
    node: &graph::Node,
    shape: &[usize],
    bias: Option<&[f32]>,
    win: Window,
    groups: usize,
) -> Option<(QConv, usize)> {
    let q = quantized.get(param_name(graph, *node.inputs.get(1)?)?)?;
    if !(q.scale.len() == 1 || q.axis == 0) {
        return None;
    }
    let (grid, fq) = input_grid(graph, node)?;
    let conv = QConv::new(&q.centred, shape, &q.scale, bias, grid, win, groups).ok()?;
    Some((conv, fq))
}

/// The integer kernel for a QDQ Linear layer (`Gemm` with `transB`, as import writes it): its
/// input a `FakeQuant` node's output (returned too) on an 8-bit grid, its weight `[o, k]` a
/// dequantized int8/uint8 constant with one scale or one per output, its bias a float constant.
/// None otherwise: the float Linear runs it.
fn integer_linear(
    graph: &Graph,
    weights: &HashMap<String, Tensor>,
    quantized: &HashMap<String, QWeight>,
    node: &graph::Node,
) -> Option<(QConv, usize)> {
    let w = *node.inputs.get(1)?;
    let q = quantized.get(param_name(graph, w)?)?;
    let &[o, k] = param(graph, weights, w)?.shape() else {
        return None;
    };
    if !(q.scale.len() == 1 || q.axis == 0) {
        return None;
    }
    let b = linear_bias(graph, weights, node, o)?;
    let (grid, fq) = input_grid(graph, node)?;
    Some((
        QConv::linear(&q.centred, [o, k], &q.scale, b.as_deref(), grid).ok()?,
        fq,
    ))
}

/// A Linear node's bias (its third input): Some(None) without one, Some(Some(values)) for a
/// constant of `o` values, None when it is not a constant or has another shape (not fused then).
fn linear_bias(
    graph: &Graph,
    weights: &HashMap<String, Tensor>,
    node: &graph::Node,
    o: usize,
) -> Option<Option<Vec<f32>>> {
    let Some(&b) = node.inputs.get(2) else {
        return Some(None);
    };
    let b = param(graph, weights, b)?;
    (b.shape() == [o]).then(|| Some(b.iter().copied().collect()))
}

/// A float Linear layer (weight `[o, k]` and bias `[o]` the model's own) packed for the
/// channel tile, on x86-64 with AVX-512 or AVX2; None elsewhere (the tape's Linear runs it).
fn float_linear(
    graph: &Graph,
    weights: &HashMap<String, Tensor>,
    node: &graph::Node,
) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let w = param(graph, weights, *node.inputs.get(1)?)?;
        let &[o, k] = w.shape() else {
            return None;
        };
        let b = linear_bias(graph, weights, node, o)?;
        let w = w.as_standard_layout();
        PackedLinear::new(w.as_slice()?, [o, k], b.as_deref()).map(Kernel::F32Rows)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (graph, weights, node);
        None
    }
}

/// The grid of the `FakeQuant` node whose output is `node`'s first input, and that node.
fn input_grid(graph: &Graph, node: &graph::Node) -> Option<(QuantGrid, usize)> {
    let fq = node.inputs[0].checked_sub(graph.inputs.len())?;
    let Op::FakeQuant {
        scale,
        zero_point,
        qmin,
        qmax,
    } = graph.nodes[fq].op
    else {
        return None;
    };
    let grid = QuantGrid {
        scale,
        zero_point,
        qmin,
        qmax,
    };
    Some((grid, fq))
}

impl FusedConv {
    fn run(&self, t: &mut Tape, x: Var, residual: Option<Var>, pool: &mut Pool) -> Result<Var> {
        let x_shape = match &self.reshape {
            Some(dims) => graph::reshape_target(t.shape(x), dims)?,
            None => t.shape(x).to_vec(),
        };
        let shape = self.conv.output_shape(&x_shape)?;
        // pooled in the tiles' store (a map smaller than the window: the tape's error)
        let pooled = match shape[..] {
            [n, o, oh, ow] if self.pool && oh >= 2 && ow >= 2 && residual.is_none() => {
                Some([n, o, oh / 2, ow / 2]).filter(|_| self.conv.pools_in_store(ow))
            }
            _ => None,
        };
        let out_shape = pooled.map_or_else(|| shape.clone(), Vec::from);
        let mut buf = pool.take(out_shape.iter().product());
        let fits = residual.is_none_or(|r| t.shape(r) == shape);
        {
            let xv = t.value(x).as_standard_layout();
            let xs = xv.as_slice().expect("standard layout");
            let rv = residual
                .filter(|_| fits)
                .map(|r| t.value(r).as_standard_layout());
            let rs = rv.as_ref().map(|r| r.as_slice().expect("standard layout"));
            let relu = self.relu && fits;
            match pooled {
                Some(_) => self.conv.run_pooled(xs, &x_shape, relu, &mut buf)?,
                None => self.conv.run(xs, &x_shape, rs, relu, &mut buf)?,
            }
        }
        let y =
            t.constant(ArrayD::from_shape_vec(IxDyn(&out_shape), buf).expect("the output's size"));
        if pooled.is_some() {
            return Ok(y);
        }
        let y = match fits {
            true => y,
            // a residual that broadcasts: the add and the ReLU on their own
            false => {
                let y = t.add(y, residual.expect("checked"))?;
                if self.relu {
                    t.relu(y)
                } else {
                    y
                }
            }
        };
        if !self.pool {
            return Ok(y);
        }
        // the tape's 2×2 kernel for inference, into a buffer of the pool; the unpooled one back
        let &[n, c, h, w] = &shape[..] else {
            crate::shape_err!("MaxPool2d: expects [N, C, H, W], got {shape:?}");
        };
        let pooled_shape = [n, c, h / 2, w / 2];
        let mut pooled = pool.take(pooled_shape.iter().product());
        let unpooled = t.take_value(y);
        {
            let u = unpooled.as_standard_layout();
            let u = u.as_slice().expect("standard layout");
            crate::kernels::max_pool_2x2(u, n * c, [h, w], &mut pooled);
        }
        pool.give(unpooled);
        let pooled = ArrayD::from_shape_vec(IxDyn(&pooled_shape), pooled).expect("the pooled size");
        Ok(t.constant(pooled))
    }
}
