//! ONNX → kiln's graph: what kiln's engine does when it loads a file. Each ONNX node becomes ops
//! of [`crate::graph`] (the graph Python's `forward` is traced into, the fit loop trains and the
//! exporter writes), recorded through the [`Tracer`]: every op runs as it is recorded, on zeros,
//! twice, with the free dimensions (the batch) at different sizes in the two runs. So shapes are
//! known at every node, int64 shape arithmetic is evaluated here rather than at run time (a
//! reshape target becomes sizes and `Dim::Batch`), and what cannot be expressed exactly — a size
//! that depends on a free dimension in a way kiln's graph cannot say, an operator or attribute
//! outside the list below — declines the model with the reason, and the caller uses tract.
//!
//! The operators: Gemm, MatMul, Conv (1-D, 2-D), MaxPool, AveragePool, GlobalAveragePool,
//! Flatten, Reshape, Transpose, Concat, Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Neg, Erf,
//! Reciprocal, LeakyRelu, Gelu, Softmax, LogSoftmax, Add, Sub, Mul, Div, Pow (constant exponent),
//! BatchNormalization (inference; folded into a scale and a shift), LayerNormalization, Gather,
//! ReduceSum/Mean/Max/Min, Slice, Squeeze, Unsqueeze, Shape, Size, ConstantOfShape, Expand, Cast,
//! CastLike, Identity, Dropout (inference), Constant.
//!
//! Attention: export writes `nn.MultiheadAttention` as standard operators (MatMul, Softmax, …) and
//! marks each call in the metadata (`kiln.attention`: the op, its inputs and output, its nodes).
//! A marked call whose nodes and constants are exactly what export writes for that call on those
//! inputs (compared node by node with a fresh emission) and whose intermediate values nothing else
//! reads imports as kiln's one attention op, so generation can keep its keys and values
//! (`text::Cached`); anything else, an edited mask included, imports operator by operator.

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, Ix1, IxDyn};

use super::ints;
use super::{tensor_value, IoInfo, Narrow, Unsupported, Value};
use crate::autograd::{GeluApprox, QuantGrid, Tape, Var};
use crate::graph::{Dim, Graph, Op, Reduction, ScalarOp, Scope, Tracer};
use crate::nn::{Module, Param};
use crate::onnx::export::attention::{emitted, Mark};
use crate::onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto,
    TensorProto,
};
use crate::{KilnError, Result, Tensor};

/// What an ONNX value is while the graph is imported.
#[derive(Clone)]
enum V {
    /// A float32 value of kiln's graph.
    F(usize),
    /// int64 data known only when the model runs (token ids), carried in the graph as whole
    /// numbers in float32 (exact to 2^24; the session refuses larger).
    Ids(usize),
    /// int64 known now (a shape, axes, indices): its value in each of the two trace runs.
    I([ArrayD<i64>; 2]),
    /// A float32 constant, by weight name (a graph value once a node reads it).
    C(String),
    /// `ConstantOfShape` of a shape that depends on a free dimension (a recurrent layer's zero
    /// initial state, as exporters write it): taken where "absent" means the same (GRU's and
    /// LSTM's `initial_h`), declined elsewhere.
    Fill(f32),
    /// An int8, uint8 or int32 constant (a quantized weight, zero point or bias) and its type's
    /// range: only DequantizeLinear reads it (and Q/DQ their zero points).
    Q8(ArrayD<i64>, [i64; 2]),
    /// `QuantizeLinear` of a float value: only a `DequantizeLinear` on the same grid reads it,
    /// and the pair becomes one `FakeQuant` node.
    Quant(usize, QuantGrid),
}

/// The model's weights as graph parameters: bound onto a tape once per name and tape (copied,
/// so one session serves any number of runs), read-only.
pub(super) struct Weights<'a> {
    pub(super) weights: &'a HashMap<String, Tensor>,
    pub(super) bound: HashMap<(u64, String), Var>,
    /// The layers import made for operators that are layers of kiln's (GRU, LSTM), by path.
    pub(super) modules: &'a mut Vec<(String, Box<dyn Module>)>,
}

impl Scope for Weights<'_> {
    fn module(&mut self, path: &str) -> Result<&dyn Module> {
        self.modules
            .iter()
            .find(|(n, _)| n == path)
            .map(|(_, m)| m.as_ref())
            .ok_or_else(|| KilnError::value(format!("an imported graph has no module {path:?}")))
    }
    fn tensor(&mut self, name: &str) -> Result<&Param> {
        Err(KilnError::value(format!(
            "an imported graph's weight {name:?} is read-only"
        )))
    }
    fn bind(&mut self, name: &str, t: &mut Tape) -> Result<Var> {
        let key = (t.id(), name.to_string());
        if let Some(&v) = self.bound.get(&key) {
            return Ok(v);
        }
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| KilnError::value(format!("the model has no weight {name:?}")))?;
        let v = t.constant(w.clone());
        self.bound.insert(key, v);
        Ok(v)
    }
}

/// An imported model: kiln's graph, its weights, and what each run frees when.
pub(super) struct Imported {
    pub(super) graph: Graph,
    pub(super) weights: HashMap<String, Tensor>,
    /// The constants import made that are not weights (indices, the ones of an Expand, a cast
    /// shape): buffers, never trained, when the graph becomes a kiln model.
    pub(super) buffers: HashSet<String>,
    /// Layers for the operators that are kiln layers (GRU, LSTM), with their weights.
    pub(super) modules: Vec<(String, Box<dyn Module>)>,
    /// The weights that are a `DequantizeLinear` of int8/uint8 values, by weight name: the
    /// integers the plan's integer kernels run on ([`super::plan`]).
    pub(super) quantized: HashMap<String, QWeight>,
}

/// An int8 or uint8 weight as its integers: `value = centred · scale`, one scale for the tensor
/// or one per index of `axis`.
pub(super) struct QWeight {
    /// `q - zero_point`, in `[-255, 255]`, in the weight's standard layout.
    pub(super) centred: Vec<i16>,
    pub(super) scale: Vec<f32>,
    pub(super) axis: usize,
}

/// The sizes a free dimension takes in the two trace runs: the first free dimension (the batch)
/// 2 and 3, the next 5 and 7, and so on, so no two free dimensions are mistaken for each other.
const FREE: [[usize; 2]; 6] = [[2, 3], [5, 7], [11, 13], [17, 19], [23, 29], [31, 37]];

pub(super) fn import(
    graph: &GraphProto,
    opset: i64,
    constants: HashMap<String, Value>,
    narrow: HashMap<String, Narrow>,
    inputs: &[IoInfo],
    outputs: &[&str],
    attention: Option<&str>,
) -> std::result::Result<Imported, Unsupported> {
    let mut im = Importer {
        opset,
        tracer: Tracer::new(),
        weights: HashMap::new(),
        bound: HashMap::new(),
        values: HashMap::new(),
        params: HashMap::new(),
        live: HashMap::new(),
        buffers: HashSet::new(),
        modules: Vec::new(),
        quantized: HashMap::new(),
    };
    for (name, v) in constants {
        let v = match v {
            Value::F32(t) => {
                im.weights.insert(name.clone(), t);
                V::C(name.clone())
            }
            Value::I64(t) => V::I([t.clone(), t]),
        };
        im.values.insert(name, v);
    }
    for (name, (q, range)) in narrow {
        im.values.insert(name, V::Q8(q, range));
    }
    im.inputs(inputs).map_err(Unsupported)?;
    // The last node reading each value, so the trace drops activations it no longer needs.
    let mut last_read: HashMap<&str, usize> = HashMap::new();
    for (k, n) in graph.node.iter().enumerate() {
        for i in &n.input {
            last_read.insert(i.as_str(), k);
        }
    }
    let kept: HashSet<&str> = outputs.iter().copied().collect();
    let mut dies_after: Vec<Vec<&str>> = vec![Vec::new(); graph.node.len()];
    for (name, k) in last_read {
        if !kept.contains(name) {
            dies_after[k].push(name);
        }
    }
    // attention calls export wrote as standard operators, by their first node
    let marks: HashMap<usize, Mark> = attention
        .and_then(|j| serde_json::from_str::<Vec<Mark>>(j).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| sealed(graph, outputs, m))
        .map(|m| (m.nodes[0], m))
        .collect();
    let mut skip_to = 0;
    for (k, (n, dead)) in graph.node.iter().zip(&dies_after).enumerate() {
        if k < skip_to || marks.get(&k).is_some_and(|m| im.attention(graph, m)) {
            skip_to = skip_to.max(marks.get(&k).map_or(0, |m| m.nodes[1]));
            for name in dead {
                im.forget(name);
            }
            continue;
        }
        let what = if n.name.is_empty() {
            n.op_type.clone()
        } else {
            format!("{} ({})", n.op_type, n.name)
        };
        im.node(n).map_err(|e| {
            Unsupported(if e.starts_with(&n.op_type) || e.starts_with("operator") {
                e
            } else {
                format!("{what}: {e}")
            })
        })?;
        for name in dead {
            im.forget(name);
        }
    }
    let mut out = Vec::with_capacity(outputs.len());
    for &o in outputs {
        out.push(match im.values.get(o).cloned() {
            Some(V::F(id)) => id,
            Some(V::C(w)) => im.param(&w).map_err(Unsupported)?,
            Some(_) => return Err(Unsupported(format!("output {o:?} is not float32"))),
            None => return Err(Unsupported(format!("output {o:?} is computed nowhere"))),
        });
    }
    let Importer {
        tracer,
        weights,
        buffers,
        modules,
        quantized,
        ..
    } = im;
    let graph = tracer
        .graph_with(out)
        .map_err(|e| Unsupported(e.to_string()))?;
    Ok(Imported {
        graph,
        weights,
        buffers,
        modules,
        quantized,
    })
}

/// Whether a marked attention call's nodes are in the graph and only its output leaves them (what
/// else reads a value inside must see it computed).
fn sealed(graph: &GraphProto, outputs: &[&str], m: &Mark) -> bool {
    let [a, b] = m.nodes;
    if a >= b || b > graph.node.len() {
        return false;
    }
    let inside: HashSet<&str> = graph.node[a..b]
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .filter(|&o| o != m.output)
        .collect();
    let outside = graph.node[..a].iter().chain(&graph.node[b..]);
    inside.len() + 1
        == graph.node[a..b]
            .iter()
            .map(|n| n.output.len())
            .sum::<usize>()
        && !outputs.iter().any(|o| inside.contains(o))
        && !outside
            .flat_map(|n| &n.input)
            .any(|i| inside.contains(i.as_str()))
}

/// The same node, by the fields export writes (by hand rather than `==`: the derived comparison of
/// every nested ONNX message is a visible share of the browser's small module).
fn same_node(a: &NodeProto, b: &NodeProto) -> bool {
    a.op_type == b.op_type
        && a.domain == b.domain
        && a.name == b.name
        && a.input == b.input
        && a.output == b.output
        && a.attribute.len() == b.attribute.len()
        && a.attribute.iter().zip(&b.attribute).all(|(x, y)| {
            let plain = |a: &AttributeProto| {
                a.t.is_none()
                    && a.g.is_none()
                    && a.sparse_tensor.is_none()
                    && a.tensors.is_empty()
                    && a.graphs.is_empty()
                    && a.sparse_tensors.is_empty()
                    && a.type_protos.is_empty()
                    && a.strings.is_empty()
                    && a.ref_attr_name.is_empty()
            };
            plain(x)
                && plain(y)
                && x.name == y.name
                && x.r#type == y.r#type
                && x.f.to_bits() == y.f.to_bits()
                && x.i == y.i
                && x.s == y.s
                && x.ints == y.ints
                && x.floats.len() == y.floats.len()
                && x.floats
                    .iter()
                    .zip(&y.floats)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// The same constant, name and stored values included.
fn same_tensor(a: &TensorProto, b: &TensorProto) -> bool {
    a.name == b.name
        && a.dims == b.dims
        && a.data_type == b.data_type
        && a.raw_data == b.raw_data
        && a.int64_data == b.int64_data
        && a.int32_data == b.int32_data
        && a.float_data.len() == b.float_data.len()
        && a.float_data
            .iter()
            .zip(&b.float_data)
            .all(|(p, q)| p.to_bits() == q.to_bits())
        && a.external_data.is_empty()
        && b.external_data.is_empty()
}

struct Importer {
    opset: i64,
    tracer: Tracer,
    weights: HashMap<String, Tensor>,
    bound: HashMap<(u64, String), Var>,
    values: HashMap<String, V>,
    /// Weight name → the value of its one `Param` node.
    params: HashMap<String, usize>,
    /// Graph value → how many ONNX names hold it (Identity and Cast add names, not values).
    live: HashMap<usize, usize>,
    buffers: HashSet<String>,
    modules: Vec<(String, Box<dyn Module>)>,
    quantized: HashMap<String, QWeight>,
}

type R<T> = std::result::Result<T, String>;

/// A reshape-like operator's output shape for trace run `k` and the input's shape in it.
type ShapeRule<'a> = dyn Fn(usize, &[usize]) -> R<Vec<usize>> + 'a;

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}
fn ints_attr(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn usizes(n: &NodeProto, name: &str, len: usize, default: usize) -> R<Vec<usize>> {
    match ints_attr(n, name) {
        None => Ok(vec![default; len]),
        Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
            Ok(v.iter().map(|&x| x as usize).collect())
        }
        Some(v) => Err(format!("{} {name}={v:?}", n.op_type)),
    }
}
/// ONNX pads `[b1, b2, …, e1, e2, …]` as one symmetric pad per axis, or None when begin ≠ end.
fn symmetric(pads: &[usize]) -> Option<Vec<usize>> {
    let (b, e) = pads.split_at(pads.len() / 2);
    (b == e).then(|| b.to_vec())
}
fn no_auto_pad(n: &NodeProto) -> R<()> {
    match attr(n, "auto_pad").map(|a| a.s.as_slice()) {
        None | Some(b"NOTSET") => Ok(()),
        Some(s) => Err(format!(
            "{} auto_pad={}",
            n.op_type,
            String::from_utf8_lossy(s)
        )),
    }
}

/// The same int64 values in both runs (by hand: ndarray's `==` is a sizeable generic).
/// `f` over two constants broadcast together (import-time folding).
fn fold(op: &str, a: &Tensor, b: &Tensor, f: fn(f32, f32) -> f32) -> R<Tensor> {
    let shape =
        crate::autograd::broadcast_shape(op, a.shape(), b.shape()).map_err(|e| e.to_string())?;
    let (a, b) = (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape)));
    let (a, b) = a
        .zip(b)
        .ok_or_else(|| format!("{op}: shapes that do not broadcast"))?;
    Ok(ndarray::Zip::from(&a).and(&b).map_collect(|&x, &y| f(x, y)))
}

fn same(a: &ArrayD<i64>, b: &ArrayD<i64>) -> bool {
    a.shape() == b.shape() && a.iter().eq(b.iter())
}

/// A reshape from `x` (its shape in the two runs) to `out` as kiln's graph says it: fixed
/// sizes, `"batch"` where the size is x's first axis in both runs, one `-1` for the rest.
fn reshape_dims(x: [&[usize]; 2], out: [&[usize]; 2]) -> R<Vec<Dim>> {
    let mut infer = false;
    (0..out[0].len())
        .map(|i| {
            let (a, b) = (out[0][i], out[1][i]);
            if a == b {
                Ok(Dim::Size(a as i64))
            } else if x[0].first() == Some(&a) && x[1].first() == Some(&b) {
                Ok(Dim::Batch)
            } else if !std::mem::replace(&mut infer, true) {
                Ok(Dim::Size(-1))
            } else {
                Err(format!(
                    "a reshape from {:?} to {:?} that two free dimensions decide",
                    x[0], out[0]
                ))
            }
        })
        .collect()
}

impl Importer {
    fn inputs(&mut self, inputs: &[IoInfo]) -> R<()> {
        let mut symbols: Vec<Option<String>> = Vec::new();
        for info in inputs {
            let mut shapes = [Vec::new(), Vec::new()];
            for (d, sym) in info.dims.iter().zip(&info.symbols) {
                let sizes = match d {
                    Some(n) => [*n, *n],
                    None => {
                        // one pair of sizes per named free dimension; each unnamed one its own
                        let k = match sym {
                            Some(s) => symbols.iter().position(|x| x.as_deref() == Some(s)),
                            None => None,
                        }
                        .unwrap_or_else(|| {
                            symbols.push(sym.clone());
                            symbols.len() - 1
                        });
                        *FREE
                            .get(k)
                            .ok_or("inputs with more than six free dimensions")?
                    }
                };
                shapes[0].push(sizes[0]);
                shapes[1].push(sizes[1]);
            }
            let per_sample = info.dims[1.min(info.dims.len())..]
                .iter()
                .copied()
                .collect::<Option<Vec<usize>>>();
            let id = self
                .tracer
                .input_at(&info.name, info.dtype, per_sample, shapes)
                .map_err(|e| e.to_string())?;
            let v = if info.dtype == "int64" {
                V::Ids(id)
            } else {
                V::F(id)
            };
            self.set(&info.name, v);
        }
        Ok(())
    }

    fn set(&mut self, name: &str, v: V) {
        // a quantized value holds the float value its DequantizeLinear will round
        if let V::F(id) | V::Ids(id) | V::Quant(id, _) = v {
            *self.live.entry(id).or_default() += 1;
        }
        if let Some(V::F(old) | V::Ids(old) | V::Quant(old, _)) =
            self.values.insert(name.to_string(), v)
        {
            // a name written twice (invalid ONNX, but harmless): the old value loses a holder
            self.drop_holder(old);
        }
    }

    fn forget(&mut self, name: &str) {
        if let Some(V::F(id) | V::Ids(id) | V::Quant(id, _)) = self.values.remove(name) {
            self.drop_holder(id);
        }
    }

    fn drop_holder(&mut self, id: usize) {
        if let Some(n) = self.live.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&id);
                self.tracer.release(id);
            }
        }
    }

    fn get(&self, n: &NodeProto, i: usize) -> R<V> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Err(format!("{} without input {i}", n.op_type)),
            Some(name) => self
                .values
                .get(name)
                .cloned()
                .ok_or_else(|| format!("input {name:?} is computed nowhere")),
        }
    }

    fn given(&self, n: &NodeProto, i: usize) -> bool {
        n.input.get(i).is_some_and(|s| !s.is_empty())
    }

    fn param(&mut self, w: &str) -> R<usize> {
        if let Some(&id) = self.params.get(w) {
            return Ok(id);
        }
        let id = self.op(Op::Param { name: w.into() }, vec![])?;
        self.params.insert(w.into(), id);
        Ok(id)
    }

    /// A new constant (a folded one) under a name no other weight has.
    fn new_const(&mut self, base: &str, t: Tensor) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.weights.contains_key(&name) {
            name = format!("{base}#{k}");
            k += 1;
        }
        self.weights.insert(name.clone(), t);
        name
    }

    /// A new constant that is not a weight (a Constant node's value, a fill, a cast shape).
    fn buffer_const(&mut self, base: &str, t: Tensor) -> String {
        let name = self.new_const(base, t);
        self.buffers.insert(name.clone());
        name
    }

    /// A new constant that is not a weight (an index list, the ones of an Expand), as a value.
    fn new_buffer(&mut self, base: &str, t: Tensor) -> R<usize> {
        let name = self.new_const(base, t);
        self.buffers.insert(name.clone());
        self.param(&name)
    }

    /// A new constant as a graph value.
    fn new_weight(&mut self, base: &str, t: Tensor) -> R<usize> {
        let name = self.new_const(base, t);
        self.param(&name)
    }

    /// Input `i` as a float32 graph value.
    fn f(&mut self, n: &NodeProto, i: usize) -> R<usize> {
        match self.get(n, i)? {
            V::F(id) => Ok(id),
            V::C(w) => self.param(&w),
            V::Ids(_) | V::I(_) => Err(format!("{} on int64 values", n.op_type)),
            V::Fill(_) => Err(format!(
                "{} of a ConstantOfShape whose shape depends on a free dimension",
                n.op_type
            )),
            V::Q8(..) => Err(format!(
                "{} on an int8/uint8/int32 constant (kiln's engine reads those through DequantizeLinear only)",
                n.op_type
            )),
            V::Quant(..) => Err(format!(
                "{} on a quantized tensor (kiln's engine runs QuantizeLinear only where DequantizeLinear reads it)",
                n.op_type
            )),
        }
    }

    /// The scalar float constant at input `i`.
    fn scalar(&self, n: &NodeProto, i: usize) -> R<f32> {
        match self.constant(n, i) {
            Some(t) if t.len() == 1 => Ok(*t.iter().next().expect("one")),
            Some(_) => Err(format!("{} with a per-axis input {i}", n.op_type)),
            None => Err(format!("{} whose input {i} is not a constant", n.op_type)),
        }
    }

    /// The grid of a QuantizeLinear / DequantizeLinear: its scalar scale and zero point (uint8 0
    /// when absent, or the `output_dtype` attribute's type).
    fn grid(&self, n: &NodeProto) -> R<QuantGrid> {
        let scale = self.scalar(n, 1)?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("{} with scale {scale}", n.op_type));
        }
        let (zero_point, [lo, hi]) = if self.given(n, 2) {
            match self.get(n, 2)? {
                V::Q8(z, range) if z.len() == 1 && range[1] <= 255 => {
                    (z.iter().copied().next().expect("one"), range)
                }
                _ => {
                    return Err(format!(
                        "{} whose zero point is not one int8 or uint8 constant",
                        n.op_type
                    ))
                }
            }
        } else {
            match int(n, "output_dtype", DataType::Uint8 as i64) {
                t if t == DataType::Uint8 as i64 => (0, [0, 255]),
                t if t == DataType::Int8 as i64 => (0, [-128, 127]),
                t => return Err(format!("{} to element type {t}", n.op_type)),
            }
        };
        Ok(QuantGrid {
            scale,
            zero_point: zero_point as f32,
            qmin: lo as f32,
            qmax: hi as f32,
        })
    }

    /// `DequantizeLinear`: of a `QuantizeLinear` on the same grid, one `FakeQuant` node; of a
    /// quantized constant (a weight per tensor or per output channel, an int32 bias), the float
    /// constant it stands for, folded now.
    fn dequantize(&mut self, n: &NodeProto) -> R<V> {
        match self.get(n, 0)? {
            V::Quant(x, grid) => {
                let here = self.grid(n)?;
                if here.scale != grid.scale || here.zero_point != grid.zero_point {
                    return Err("DequantizeLinear on another grid than its QuantizeLinear's".into());
                }
                let op = Op::FakeQuant {
                    scale: grid.scale,
                    zero_point: grid.zero_point,
                    qmin: grid.qmin,
                    qmax: grid.qmax,
                };
                Ok(V::F(self.op(op, vec![x])?))
            }
            V::Q8(q, range) => {
                let scale = self
                    .constant(n, 1)
                    .cloned()
                    .ok_or("DequantizeLinear whose scale is not a constant")?;
                let zero = if self.given(n, 2) {
                    match self.get(n, 2)? {
                        V::Q8(z, _) => z.mapv(|v| v as f32),
                        _ => return Err("DequantizeLinear whose zero point is not an integer constant".into()),
                    }
                } else {
                    ArrayD::zeros(scale.raw_dim())
                };
                if zero.len() != scale.len() || scale.ndim() > 1 || zero.ndim() > 1 {
                    return Err("DequantizeLinear with a zero point unlike its scale, or a blocked scale".into());
                }
                // per axis: the scale and zero point along `axis`, broadcast over the rest
                let mut along = vec![1; q.ndim()];
                if scale.len() != 1 {
                    let axis = int(n, "axis", 1);
                    let a = if axis < 0 { axis + q.ndim() as i64 } else { axis };
                    if !(0..q.ndim() as i64).contains(&a) || q.shape()[a as usize] != scale.len() {
                        return Err(format!("DequantizeLinear with axis {axis} for a {} scale of a {:?} tensor", scale.len(), q.shape()));
                    }
                    along[a as usize] = scale.len();
                }
                let shaped = |t: Tensor| t.into_shape_with_order(IxDyn(&along)).expect("same length");
                let (s, z) = (shaped(scale), shaped(zero));
                let centred = fold(&n.op_type, &q.mapv(|v| v as f32), &z, |q, z| q - z)?;
                let t = fold(&n.op_type, &centred, &s, |x, s| x * s)?;
                let base = n.output.first().cloned().unwrap_or_default();
                let name = self.new_const(&base, t);
                // int8 / uint8 weights (not int32 biases): kept as integers for the plan
                if range[1] <= 255 && centred.shape() == q.shape() {
                    let axis = along.iter().position(|&a| a != 1).unwrap_or(0);
                    let centred = centred.as_standard_layout().iter().map(|&v| v as i16).collect();
                    let scale = s.iter().copied().collect();
                    self.quantized.insert(name.clone(), QWeight { centred, scale, axis });
                }
                Ok(V::C(name))
            }
            _ => Err("DequantizeLinear of a value computed when the model runs (kiln's engine runs QDQ pairs and quantized constants)".into()),
        }
    }

    /// Input `i` as a graph value of either kind, for the operators that move values without
    /// computing on them; `true` when it carries int64 ids.
    fn data(&mut self, n: &NodeProto, i: usize) -> R<(usize, bool)> {
        match self.get(n, i)? {
            V::Ids(id) => Ok((id, true)),
            _ => self.f(n, i).map(|id| (id, false)),
        }
    }

    /// Input `i` as int64 known at import, in both runs.
    fn ints(&self, n: &NodeProto, i: usize) -> R<[ArrayD<i64>; 2]> {
        match self.get(n, i)? {
            V::I(v) => Ok(v),
            V::Ids(_) => Err(format!(
                "{} with input {i} given when the model runs: kiln's engine needs shapes, axes and indices fixed by the model",
                n.op_type
            )),
            _ => Err(format!("{} with a float32 input {i} where int64 is expected", n.op_type)),
        }
    }

    /// Input `i` as a list of integers that is the same whatever the free dimensions are.
    fn fixed_list(&self, n: &NodeProto, i: usize) -> R<Vec<i64>> {
        let [a, b] = self.ints(n, i)?;
        if !same(&a, &b) {
            return Err(format!(
                "{} whose input {i} depends on a free dimension ({a} or {b})",
                n.op_type
            ));
        }
        ints::list(&a)
    }

    /// The float constant at input `i`, when it is one.
    fn constant(&self, n: &NodeProto, i: usize) -> Option<&Tensor> {
        match self.get(n, i).ok()? {
            V::C(w) => self.weights.get(&w),
            _ => None,
        }
    }

    fn op(&mut self, op: Op, inputs: Vec<usize>) -> R<usize> {
        let mut scope = Weights {
            weights: &self.weights,
            bound: std::mem::take(&mut self.bound),
            modules: &mut self.modules,
        };
        let r = self.tracer.op(&mut scope, op, inputs, None);
        self.bound = scope.bound;
        r.map_err(|e| e.to_string())
    }

    /// A marked attention call as kiln's one attention op, when the file's nodes and constants for
    /// it are exactly what export writes for that call on these inputs (else false, nothing
    /// recorded, and its operators import one by one).
    fn attention(&mut self, graph: &GraphProto, m: &Mark) -> bool {
        let mut shapes = Vec::with_capacity(m.inputs.len());
        for name in &m.inputs {
            shapes.push(match self.values.get(name) {
                Some(V::F(id)) => self.shapes(*id)[0].clone(),
                Some(V::C(w)) => self.weights[w].shape().to_vec(),
                _ => return false,
            });
        }
        let Ok((nodes, constants, out)) = emitted(m, &shapes, self.opset) else {
            return false;
        };
        let written = &graph.node[m.nodes[0]..m.nodes[1]];
        if out != m.output
            || written.len() != nodes.len()
            || !written.iter().zip(&nodes).all(|(a, b)| same_node(a, b))
            || !constants
                .iter()
                .all(|c| graph.initializer.iter().any(|t| same_tensor(t, c)))
        {
            return false;
        }
        let mut ins = Vec::with_capacity(m.inputs.len());
        for name in &m.inputs {
            let id = match self.values.get(name).cloned() {
                Some(V::F(id)) => Ok(id),
                Some(V::C(w)) => self.param(&w),
                _ => return false,
            };
            match id {
                Ok(id) => ins.push(id),
                Err(_) => return false,
            }
        }
        match self.op(m.op.clone(), ins) {
            Ok(y) => {
                self.set(&m.output, V::F(y));
                true
            }
            Err(_) => false,
        }
    }

    fn shapes(&self, id: usize) -> [Vec<usize>; 2] {
        self.tracer.run_shapes(id).map(<[usize]>::to_vec)
    }

    fn rank(&self, id: usize) -> usize {
        self.tracer.run_shapes(id)[0].len()
    }

    /// `x` viewed with the shape `out` has in each run (no node when it already has it).
    fn reshape_to(&mut self, x: usize, out: [Vec<usize>; 2]) -> R<usize> {
        let xs = self.shapes(x);
        if xs == out {
            return Ok(x);
        }
        let dims = reshape_dims([&xs[0], &xs[1]], [&out[0], &out[1]])?;
        let y = self.op(Op::Reshape { shape: dims }, vec![x])?;
        if self.shapes(y) != out {
            return Err(format!(
                "a reshape kiln's graph cannot say ({:?} to {:?})",
                xs[0], out[0]
            ));
        }
        Ok(y)
    }

    /// Reshape-like operators on a value of either kind: the output shape of run `k` from
    /// `f(k, input shape)`.
    fn reshaped(&mut self, n: &NodeProto, f: &ShapeRule) -> R<V> {
        if let V::I(v) = self.get(n, 0)? {
            let [a, b] = v;
            return Ok(V::I([
                ints::reshape(&a, &f(0, a.shape())?)?,
                ints::reshape(&b, &f(1, b.shape())?)?,
            ]));
        }
        let (x, ids) = self.data(n, 0)?;
        let [s0, s1] = self.shapes(x);
        let y = self.reshape_to(x, [f(0, &s0)?, f(1, &s1)?])?;
        Ok(if ids { V::Ids(y) } else { V::F(y) })
    }

    fn node(&mut self, n: &NodeProto) -> R<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("operator {}::{}", n.domain, n.op_type));
        }
        if matches!(n.op_type.as_str(), "GRU" | "LSTM") {
            return self.recurrent(n);
        }
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(format!("{} with {} outputs", n.op_type, n.output.len()));
        }
        let v = self.value(n)?;
        let out = n.output.first().cloned().unwrap_or_default();
        self.set(&out, v);
        Ok(())
    }

    fn value(&mut self, n: &NodeProto) -> R<V> {
        // moving or picking parts of a constant fill gives the same fill (PyTorch slices each
        // layer's zero initial state out of one ConstantOfShape)
        if let (
            "Slice" | "Transpose" | "Reshape" | "Unsqueeze" | "Squeeze" | "Gather" | "Expand",
            Ok(V::Fill(v)),
        ) = (n.op_type.as_str(), self.get(n, 0))
        {
            return Ok(V::Fill(v));
        }
        let op_type = n.op_type.as_str();
        Ok(match op_type {
            "Identity" | "Dropout" => self.get(n, 0)?,
            "QuantizeLinear" => {
                let x = self.f(n, 0)?;
                V::Quant(x, self.grid(n)?)
            }
            "DequantizeLinear" => self.dequantize(n)?,
            "Constant" => self.constant_node(n)?,
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Neg" | "Erf" | "Reciprocal"
            | "LeakyRelu" | "Gelu" => {
                let op = match op_type {
                    "Relu" => Op::Relu,
                    "Sigmoid" => Op::Sigmoid,
                    "Tanh" => Op::Tanh,
                    "Exp" => Op::Exp,
                    "Log" => Op::Log,
                    "Sqrt" => Op::Sqrt,
                    "Neg" => Op::Neg,
                    "Erf" => Op::Erf,
                    "Reciprocal" => Op::Scalar {
                        kind: ScalarOp::Rdiv,
                        value: 1.0,
                    },
                    "LeakyRelu" => Op::LeakyRelu {
                        negative_slope: float(n, "alpha", 0.01),
                    },
                    _ => Op::Gelu {
                        approximate: match attr(n, "approximate").map(|a| a.s.as_slice()) {
                            None | Some(b"none") => GeluApprox::None,
                            Some(b"tanh") => GeluApprox::Tanh,
                            Some(s) => {
                                return Err(format!(
                                    "Gelu approximate={}",
                                    String::from_utf8_lossy(s)
                                ))
                            }
                        },
                    },
                };
                let x = self.f(n, 0)?;
                V::F(self.op(op, vec![x])?)
            }
            "Add" | "Sub" | "Mul" | "Div" => self.binary(n)?,
            // shape arithmetic only (PyTorch's legacy exporter checks embed_dim % num_heads)
            "Mod" => match (self.get(n, 0)?, self.get(n, 1)?) {
                (V::I([a0, a1]), V::I([b0, b1])) => {
                    let op = if int(n, "fmod", 0) != 0 {
                        "Fmod"
                    } else {
                        "Mod"
                    };
                    V::I([ints::arith(op, &a0, &b0)?, ints::arith(op, &a1, &b1)?])
                }
                _ => return Err("Mod on float values".into()),
            },
            "Pow" => {
                let p = match self.get(n, 1)? {
                    V::C(w) if self.weights[&w].len() == 1 => {
                        self.weights[&w].iter().copied().next()
                    }
                    V::I([a, b]) if a.len() == 1 && same(&a, &b) => {
                        a.iter().map(|&v| v as f32).next()
                    }
                    _ => None,
                }
                .ok_or("Pow with an exponent that is not a one-element constant")?;
                let x = self.f(n, 0)?;
                V::F(self.op(
                    Op::Scalar {
                        kind: ScalarOp::Pow,
                        value: p,
                    },
                    vec![x],
                )?)
            }
            "Gemm" => self.gemm(n)?,
            "MatMul" => self.matmul(n)?,
            "Conv" => self.conv(n)?,
            "MaxPool" | "AveragePool" => self.pool(n)?,
            "GlobalAveragePool" => {
                let x = self.f(n, 0)?;
                let dims = (2..self.rank(x) as isize).collect();
                V::F(self.op(
                    Op::Reduce {
                        kind: Reduction::Mean,
                        dims,
                        keepdim: true,
                    },
                    vec![x],
                )?)
            }
            "Softmax" | "LogSoftmax" => {
                let x = self.f(n, 0)?;
                let r = self.rank(x);
                let a = ints::axis(int(n, "axis", if self.opset >= 13 { -1 } else { 1 }), r)?;
                if self.opset < 13 && a + 1 != r {
                    // before opset 13 the input is flattened to 2-D at `axis`
                    return Err(format!(
                        "{op_type} before opset 13 over axis {a} of a rank-{r} input"
                    ));
                }
                let dim = a as isize;
                let op = if op_type == "Softmax" {
                    Op::Softmax { dim }
                } else {
                    Op::LogSoftmax { dim }
                };
                V::F(self.op(op, vec![x])?)
            }
            "BatchNormalization" => self.batch_norm(n)?,
            "LayerNormalization" => self.layer_norm(n)?,
            "Flatten" => {
                let a = int(n, "axis", 1);
                self.reshaped(n, &|_, s| {
                    let r = s.len() as i64;
                    let a = if a < 0 { a + r } else { a };
                    if !(0..=r).contains(&a) {
                        return Err(format!("Flatten axis {a} for rank {r}"));
                    }
                    let (outer, inner) = s.split_at(a as usize);
                    Ok(vec![outer.iter().product(), inner.iter().product()])
                })?
            }
            "Reshape" => {
                let [t0, t1] = self.ints(n, 1)?;
                // the target of each run against the input's shape in that run
                let targets = [ints::list(&t0)?, ints::list(&t1)?];
                // allowzero=1 (what PyTorch's dynamo exporter writes) reads a 0 as a 0-sized
                // axis, not "copy this one": the same reshape when the target has no 0
                if int(n, "allowzero", 0) != 0 && targets.iter().flatten().any(|&d| d == 0) {
                    return Err("Reshape allowzero=1 to a shape with a 0".into());
                }
                self.reshaped(n, &|k, s| ints::reshape_target(s, &targets[k]))?
            }
            "Unsqueeze" | "Squeeze" => {
                let list = match ints_attr(n, "axes") {
                    Some(a) if self.opset < 13 => Some(a),
                    _ if self.given(n, 1) => Some(self.fixed_list(n, 1)?),
                    _ => None,
                };
                if op_type == "Unsqueeze" {
                    let list = list.ok_or("Unsqueeze without axes")?;
                    self.reshaped(n, &|_, s| ints::unsqueezed(s, &list))?
                } else {
                    self.reshaped(n, &|_, s| ints::squeezed(s, list.as_deref()))?
                }
            }
            "Transpose" => {
                let (x, ids) = self.data(n, 0)?;
                let r = self.rank(x);
                let dims: Vec<isize> = match ints_attr(n, "perm") {
                    Some(p) => p.iter().map(|&d| d as isize).collect(),
                    None => (0..r as isize).rev().collect(),
                };
                let y = self.op(Op::Permute { dims }, vec![x])?;
                if ids {
                    V::Ids(y)
                } else {
                    V::F(y)
                }
            }
            "Concat" => self.concat(n)?,
            "Gather" => self.gather(n)?,
            "Slice" => self.slice(n)?,
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" => self.reduce(n)?,
            "Shape" => {
                let s = self.input_shapes(n)?;
                let (start, end) = (int(n, "start", 0), attr(n, "end").map(|a| a.i));
                V::I(s.map(|s| ints::shape_of(&s, start, end)))
            }
            "Size" => {
                let s = self.input_shapes(n)?;
                V::I(s.map(|s| ArrayD::from_elem(IxDyn(&[]), s.iter().product::<usize>() as i64)))
            }
            "ConstantOfShape" => {
                let [d0, d1] = self.ints(n, 0)?;
                if !same(&d0, &d1) {
                    return match attr(n, "value").and_then(|a| a.t.as_ref()) {
                        None => Ok(V::Fill(0.0)),
                        Some(t) => match tensor_value(t)? {
                            Value::F32(v) if v.len() == 1 => {
                                Ok(V::Fill(v.iter().copied().next().expect("1")))
                            }
                            _ => Err("ConstantOfShape of int64 values and a free shape".into()),
                        },
                    };
                }
                let dims = self.fixed_list(n, 0)?;
                if dims.iter().any(|&d| d < 0) {
                    return Err(format!("ConstantOfShape of shape {dims:?}"));
                }
                let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
                let fill = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                    None => Value::F32(ArrayD::zeros(IxDyn(&[1]))),
                    Some(t) => tensor_value(t)?,
                };
                match fill {
                    Value::F32(v) if v.len() == 1 => {
                        let t =
                            ArrayD::from_elem(IxDyn(&dims), v.iter().copied().next().expect("1"));
                        V::C(self.buffer_const(&format!("{}/value", n.output[0]), t))
                    }
                    Value::I64(v) if v.len() == 1 => {
                        let t =
                            ArrayD::from_elem(IxDyn(&dims), v.iter().copied().next().expect("1"));
                        V::I([t.clone(), t])
                    }
                    _ => return Err("ConstantOfShape value of more than one element".into()),
                }
            }
            "Expand" => self.expand(n)?,
            "Cast" | "CastLike" => {
                let to_int = if op_type == "Cast" {
                    match DataType::try_from(int(n, "to", 0) as i32) {
                        Ok(DataType::Float) => false,
                        Ok(DataType::Int64) => true,
                        _ => return Err(format!("Cast to element type {}", int(n, "to", 0))),
                    }
                } else {
                    matches!(self.get(n, 1)?, V::I(_) | V::Ids(_))
                };
                match (self.get(n, 0)?, to_int) {
                    (V::F(_) | V::C(_), false) | (V::I(_) | V::Ids(_), true) => self.get(n, 0)?,
                    (V::Ids(id), false) => V::F(id),
                    (V::C(w), true) => {
                        let t = self.weights[&w].mapv(|x| x.trunc() as i64);
                        V::I([t.clone(), t])
                    }
                    (V::I([a, b]), false) if same(&a, &b) => V::C(
                        self.buffer_const(&format!("{}/cast", n.output[0]), a.mapv(|v| v as f32)),
                    ),
                    (V::I(_), false) => {
                        return Err(
                            "Cast to float32 of a size that depends on a free dimension".into()
                        )
                    }
                    (V::F(_), true) => {
                        return Err("Cast of computed float32 values to int64".into())
                    }
                    (V::Fill(v), false) => V::Fill(v),
                    (V::Fill(_), true) => {
                        return Err("Cast to int64 of a ConstantOfShape of a free size".into())
                    }
                    (V::Q8(..) | V::Quant(..), _) => return Err("Cast of a quantized value".into()),
                }
            }
            _ => return Err(format!("operator {op_type}")),
        })
    }

    /// The shape of input 0 in each run, whatever kind of value it is.
    fn input_shapes(&self, n: &NodeProto) -> R<[Vec<usize>; 2]> {
        Ok(match self.get(n, 0)? {
            V::F(id) | V::Ids(id) => self.shapes(id),
            V::I([a, b]) => [a.shape().to_vec(), b.shape().to_vec()],
            V::C(w) => {
                let s = self.weights[&w].shape().to_vec();
                [s.clone(), s]
            }
            V::Fill(_) => return Err(format!("{} of a ConstantOfShape of a free size", n.op_type)),
            V::Q8(..) | V::Quant(..) => return Err(format!("{} of a quantized value", n.op_type)),
        })
    }

    fn constant_node(&mut self, n: &NodeProto) -> R<V> {
        let list = |len: usize| IxDyn(&[len]);
        let v = if let Some(a) = attr(n, "value") {
            if a.r#type == AttributeType::Tensor as i32 || a.t.is_some() {
                tensor_value(a.t.as_ref().ok_or("Constant without its tensor")?)?
            } else {
                return Err("Constant that is not a tensor".into());
            }
        } else if let Some(a) = attr(n, "value_float") {
            Value::F32(ArrayD::from_elem(IxDyn(&[]), a.f))
        } else if let Some(a) = attr(n, "value_floats") {
            Value::F32(ArrayD::from_shape_vec(list(a.floats.len()), a.floats.clone()).expect("1-D"))
        } else if let Some(a) = attr(n, "value_int") {
            Value::I64(ArrayD::from_elem(IxDyn(&[]), a.i))
        } else if let Some(a) = attr(n, "value_ints") {
            Value::I64(ArrayD::from_shape_vec(list(a.ints.len()), a.ints.clone()).expect("1-D"))
        } else {
            return Err("Constant that is not a tensor".into());
        };
        Ok(match v {
            Value::F32(t) => {
                V::C(self.buffer_const(n.output.first().map_or("", String::as_str), t))
            }
            Value::I64(t) => V::I([t.clone(), t]),
        })
    }

    fn binary(&mut self, n: &NodeProto) -> R<V> {
        let op_type = n.op_type.as_str();
        if let (V::I([a0, a1]), V::I([b0, b1])) = (self.get(n, 0)?, self.get(n, 1)?) {
            return Ok(V::I([
                ints::arith(op_type, &a0, &b0)?,
                ints::arith(op_type, &a1, &b1)?,
            ]));
        }
        // Two float constants (a QDQ bias's scale, x_scale · w_scale): folded now.
        if let (Some(a), Some(b)) = (self.constant(n, 0), self.constant(n, 1)) {
            let f: fn(f32, f32) -> f32 = match op_type {
                "Add" => |x, y| x + y,
                "Sub" => |x, y| x - y,
                "Mul" => |x, y| x * y,
                _ => |x, y| x / y,
            };
            let t = fold(op_type, a, b, f)?;
            return Ok(V::C(self.buffer_const(&n.output[0], t)));
        }
        // A one-element constant on either side (that does not raise the rank): a scalar op.
        for side in [1, 0] {
            let Some((value, c_rank)) = self
                .constant(n, side)
                .filter(|c| c.len() == 1)
                .map(|c| (*c.iter().next().expect("one element"), c.ndim()))
            else {
                continue;
            };
            let x = self.f(n, 1 - side)?;
            if c_rank > self.rank(x) {
                break;
            }
            let kind = match (op_type, side) {
                ("Add", _) => ScalarOp::Add,
                ("Mul", _) => ScalarOp::Mul,
                ("Sub", 1) => ScalarOp::Sub,
                ("Sub", _) => ScalarOp::Rsub,
                ("Div", 1) => ScalarOp::Div,
                _ => ScalarOp::Rdiv,
            };
            return Ok(V::F(self.op(Op::Scalar { kind, value }, vec![x])?));
        }
        let (a, b) = (self.f(n, 0)?, self.f(n, 1)?);
        let op = match op_type {
            "Add" => Op::Add,
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            _ => Op::Div,
        };
        Ok(V::F(self.op(op, vec![a, b])?))
    }

    fn gemm(&mut self, n: &NodeProto) -> R<V> {
        let (alpha, beta) = (float(n, "alpha", 1.0), float(n, "beta", 1.0));
        let (trans_a, trans_b) = (int(n, "transA", 0) != 0, int(n, "transB", 0) != 0);
        let (a, b) = (self.f(n, 0)?, self.f(n, 1)?);
        let c = if self.given(n, 2) {
            Some(self.f(n, 2)?)
        } else {
            None
        };
        let (ra, rb) = (self.rank(a), self.rank(b));
        if ra != 2 || rb != 2 {
            return Err(format!("Gemm of rank-{ra} and rank-{rb} inputs"));
        }
        let n_out = self.shapes(b)[0][if trans_b { 0 } else { 1 }];
        let plain_bias = c.is_none_or(|c| self.shapes(c)[0] == [n_out]);
        if trans_b && !trans_a && alpha == 1.0 && beta == 1.0 && plain_bias {
            // x·Wᵀ + b: a Linear layer
            let ins = [Some(a), Some(b), c].into_iter().flatten().collect();
            return Ok(V::F(self.op(Op::Linear, ins)?));
        }
        let t = Op::Permute { dims: vec![1, 0] };
        let a = if trans_a {
            self.op(t.clone(), vec![a])?
        } else {
            a
        };
        let b = if trans_b { self.op(t, vec![b])? } else { b };
        let mut y = self.op(Op::MatMul, vec![a, b])?;
        if alpha != 1.0 {
            y = self.op(
                Op::Scalar {
                    kind: ScalarOp::Mul,
                    value: alpha,
                },
                vec![y],
            )?;
        }
        if let Some(c) = c {
            let c = if beta != 1.0 {
                self.op(
                    Op::Scalar {
                        kind: ScalarOp::Mul,
                        value: beta,
                    },
                    vec![c],
                )?
            } else {
                c
            };
            y = self.op(Op::Add, vec![y, c])?;
        }
        Ok(V::F(y))
    }

    fn matmul(&mut self, n: &NodeProto) -> R<V> {
        let (mut a, mut b) = (self.f(n, 0)?, self.f(n, 1)?);
        // numpy's rule for 1-D operands: a vector on the left is a row [1, k], on the right a
        // column [k, 1], and that axis is dropped from the product.
        let (row, col) = (self.rank(a) == 1, self.rank(b) == 1);
        if row {
            a = self.reshape_to(a, self.shapes(a).map(|s| vec![1, s[0]]))?;
        }
        if col {
            b = self.reshape_to(b, self.shapes(b).map(|s| vec![s[0], 1]))?;
        }
        let y = self.op(Op::MatMul, vec![a, b])?;
        if !(row || col) {
            return Ok(V::F(y));
        }
        let out = self.shapes(y).map(|mut s| {
            let r = s.len();
            if col {
                s.remove(r - 1);
            }
            if row {
                s.remove(s.len() - if col { 1 } else { 2 });
            }
            s
        });
        Ok(V::F(self.reshape_to(y, out)?))
    }

    fn conv(&mut self, n: &NodeProto) -> R<V> {
        no_auto_pad(n)?;
        let (x, w) = (self.f(n, 0)?, self.f(n, 1)?);
        let rank = self.rank(w).saturating_sub(2);
        if let Some(k) = ints_attr(n, "kernel_shape") {
            if k.len() != rank {
                return Err(format!(
                    "Conv kernel_shape {k:?} for a rank-{} weight",
                    rank + 2
                ));
            }
        }
        if !(1..=2).contains(&rank) {
            return Err(format!("Conv over {rank} dimensions"));
        }
        let pads = usizes(n, "pads", 2 * rank, 0)?;
        let pad = symmetric(&pads).ok_or_else(|| format!("Conv with asymmetric pads {pads:?}"))?;
        let (stride, dilation) = (
            usizes(n, "strides", rank, 1)?,
            usizes(n, "dilations", rank, 1)?,
        );
        let groups = int(n, "group", 1).max(1) as usize;
        let mut ins = vec![x, w];
        if self.given(n, 2) {
            ins.push(self.f(n, 2)?);
        }
        let op = if rank == 1 {
            Op::Conv1d {
                stride: stride[0],
                padding: pad[0],
                dilation: dilation[0],
                groups,
            }
        } else {
            Op::Conv2d {
                stride: [stride[0], stride[1]],
                padding: [pad[0], pad[1]],
                dilation: [dilation[0], dilation[1]],
                groups,
            }
        };
        Ok(V::F(self.op(op, ins)?))
    }

    fn pool(&mut self, n: &NodeProto) -> R<V> {
        no_auto_pad(n)?;
        let max = n.op_type == "MaxPool";
        let kernel = usizes(n, "kernel_shape", 2, 0)
            .map_err(|_| format!("{} that is not 2-D", n.op_type))?;
        let pads = usizes(n, "pads", 4, 0)?;
        let pad = symmetric(&pads)
            .ok_or_else(|| format!("{} with asymmetric pads {pads:?}", n.op_type))?;
        if int(n, "ceil_mode", 0) != 0
            || usizes(n, "dilations", 2, 1)? != [1, 1]
            || int(n, "storage_order", 0) != 0
        {
            return Err(format!(
                "{} with ceil_mode, dilations or storage_order",
                n.op_type
            ));
        }
        if !max && int(n, "count_include_pad", 0) == 0 && pad.iter().any(|&p| p > 0) {
            return Err("AveragePool excluding padding".into());
        }
        if (0..2).any(|i| 2 * pad[i] > kernel[i]) {
            return Err(format!(
                "{} with pads {pad:?} over half the kernel {kernel:?}",
                n.op_type
            ));
        }
        let stride = usizes(n, "strides", 2, 1)?;
        let (kernel_size, stride, padding) = (
            [kernel[0], kernel[1]],
            [stride[0], stride[1]],
            [pad[0], pad[1]],
        );
        let op = if max {
            Op::MaxPool2d {
                kernel_size,
                stride,
                padding,
            }
        } else {
            Op::AvgPool2d {
                kernel_size,
                stride,
                padding,
            }
        };
        let x = self.f(n, 0)?;
        Ok(V::F(self.op(op, vec![x])?))
    }

    /// Inference batch normalization, folded: `x · s + t` with `s = γ / √(var + ε)` and
    /// `t = β - mean · s`, per channel (axis 1).
    fn batch_norm(&mut self, n: &NodeProto) -> R<V> {
        if int(n, "training_mode", 0) != 0 {
            return Err("BatchNormalization in training mode".into());
        }
        let eps = float(n, "epsilon", 1e-5);
        if (1..5).any(|i| self.constant(n, i).is_none()) {
            return self.batch_norm_computed(n, eps);
        }
        let stat = |i: usize| -> R<ndarray::Array1<f32>> {
            self.constant(n, i)
                .ok_or_else(|| format!("BatchNormalization with input {i} computed by the graph"))?
                .clone()
                .into_dimensionality::<Ix1>()
                .map_err(|_| "BatchNormalization statistics must be 1-D".to_string())
        };
        let (g, b, mean, var) = (stat(1)?, stat(2)?, stat(3)?, stat(4)?);
        let x = self.f(n, 0)?;
        let shape = self.shapes(x)[0].clone();
        let c = *shape.get(1).ok_or("BatchNormalization of a rank-1 input")?;
        if [g.len(), b.len(), mean.len(), var.len()]
            .iter()
            .any(|&l| l != c)
        {
            return Err(format!(
                "BatchNormalization statistics for {c} channels of another length"
            ));
        }
        let s: Vec<f32> = (0..c).map(|i| g[i] / (var[i] + eps).sqrt()).collect();
        let t: Vec<f32> = (0..c).map(|i| b[i] - mean[i] * s[i]).collect();
        let mut per_channel = vec![c];
        per_channel.extend(std::iter::repeat_n(1, shape.len() - 2));
        let as_tensor = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&per_channel), v).expect("c");
        let out = &n.output[0];
        let s = self.new_weight(&format!("{out}/scale"), as_tensor(s))?;
        let t = self.new_weight(&format!("{out}/shift"), as_tensor(t))?;
        let y = self.op(Op::Mul, vec![x, s])?;
        Ok(V::F(self.op(Op::Add, vec![y, t])?))
    }

    /// Batch normalization whose statistics the graph computes (or takes as inputs):
    /// `(x - mean) / √(var + ε) · γ + β`, each statistic viewed as `[C, 1, …]`.
    fn batch_norm_computed(&mut self, n: &NodeProto, eps: f32) -> R<V> {
        let x = self.f(n, 0)?;
        let r = self.rank(x);
        let mut stat = |i: usize| -> R<usize> {
            let v = self.f(n, i)?;
            let out = self.shapes(v).map(|s| {
                let mut o = s.clone();
                o.extend(std::iter::repeat_n(1, r.saturating_sub(2)));
                o
            });
            if self.rank(v) != 1 {
                return Err("BatchNormalization statistics must be 1-D".into());
            }
            self.reshape_to(v, out)
        };
        let (g, b, mean, var) = (stat(1)?, stat(2)?, stat(3)?, stat(4)?);
        let centred = self.op(Op::Sub, vec![x, mean])?;
        let v = self.op(
            Op::Scalar {
                kind: ScalarOp::Add,
                value: eps,
            },
            vec![var],
        )?;
        let sd = self.op(Op::Sqrt, vec![v])?;
        let normed = self.op(Op::Div, vec![centred, sd])?;
        let scaled = self.op(Op::Mul, vec![normed, g])?;
        Ok(V::F(self.op(Op::Add, vec![scaled, b])?))
    }

    fn layer_norm(&mut self, n: &NodeProto) -> R<V> {
        if int(n, "stash_type", 1) != 1 {
            return Err("LayerNormalization stash_type".into());
        }
        let eps = float(n, "epsilon", 1e-5);
        let x = self.f(n, 0)?;
        let [s0, s1] = self.shapes(x);
        let a = ints::axis(int(n, "axis", -1), s0.len())?;
        if s0[a..] != s1[a..] {
            return Err("LayerNormalization over a free dimension".into());
        }
        let normalized = s0[a..].to_vec();
        let mut affine = |k: usize, fill: f32| -> R<usize> {
            let t = match self.constant(n, k) {
                Some(t) => t.clone(),
                None if !self.given(n, k) => ArrayD::from_elem(IxDyn(&normalized), fill),
                None => {
                    return Err(format!(
                        "LayerNormalization with input {k} computed by the graph"
                    ))
                }
            };
            if t.len() != normalized.iter().product::<usize>() {
                return Err(format!(
                    "LayerNormalization input {k} of shape {:?} for {normalized:?}",
                    t.shape()
                ));
            }
            let t = t
                .into_shape_with_order(IxDyn(&normalized))
                .expect("sizes checked");
            self.new_weight(&format!("{}/ln{k}", n.output[0]), t)
        };
        let (w, b) = (affine(1, 1.0)?, affine(2, 0.0)?);
        Ok(V::F(self.op(Op::LayerNorm { eps }, vec![x, w, b])?))
    }

    fn concat(&mut self, n: &NodeProto) -> R<V> {
        let a = int(n, "axis", 0);
        let vals: Vec<V> = (0..n.input.len())
            .map(|i| self.get(n, i))
            .collect::<R<_>>()?;
        if vals.iter().all(|v| matches!(v, V::I(_))) {
            let pick = |k: usize| -> Vec<&ArrayD<i64>> {
                vals.iter()
                    .map(|v| match v {
                        V::I(x) => &x[k],
                        _ => unreachable!("all int64"),
                    })
                    .collect()
            };
            return Ok(V::I([
                ints::concat(&pick(0), a)?,
                ints::concat(&pick(1), a)?,
            ]));
        }
        let all_ids = vals.iter().all(|v| matches!(v, V::Ids(_)));
        if !all_ids && vals.iter().any(|v| matches!(v, V::I(_) | V::Ids(_))) {
            return Err("Concat of float32 and int64 values".into());
        }
        let ins: Vec<usize> = (0..n.input.len())
            .map(|i| self.data(n, i).map(|d| d.0))
            .collect::<R<_>>()?;
        let r = self.rank(ins[0]);
        let dim = ints::axis(a, r)? as isize;
        let y = self.op(Op::Concat { dim }, ins)?;
        Ok(if all_ids { V::Ids(y) } else { V::F(y) })
    }

    fn gather(&mut self, n: &NodeProto) -> R<V> {
        let a = int(n, "axis", 0);
        if let (V::I([x0, x1]), V::I([i0, i1])) = (self.get(n, 0)?, self.get(n, 1)?) {
            return Ok(V::I([
                ints::gather(&x0, &i0, a)?,
                ints::gather(&x1, &i1, a)?,
            ]));
        }
        let (x, ids) = self.data(n, 0)?;
        let r = self.rank(x);
        let axis = ints::axis(a, r)?;
        let indices = match self.get(n, 1)? {
            V::Ids(id) => id,
            V::I([i0, i1]) => {
                if !same(&i0, &i1) {
                    return Err("Gather with indices that depend on a free dimension".into());
                }
                // checked here against both runs' sizes, negative ones kept (counted from the
                // end at run time, as ONNX does)
                let [s0, s1] = self.shapes(x);
                ints::indices(&i0, s0[axis], axis)?;
                ints::indices(&i0, s1[axis], axis)?;
                self.new_buffer(&format!("{}/indices", n.output[0]), i0.mapv(|v| v as f32))?
            }
            _ => return Err("Gather with float32 indices".into()),
        };
        let y = self.op(Op::Gather { dim: axis as isize }, vec![x, indices])?;
        Ok(if ids { V::Ids(y) } else { V::F(y) })
    }

    fn slice(&mut self, n: &NodeProto) -> R<V> {
        let (starts, ends, axes, steps) = if self.opset < 10 {
            (
                ints_attr(n, "starts").ok_or("Slice without starts")?,
                ints_attr(n, "ends").ok_or("Slice without ends")?,
                ints_attr(n, "axes"),
                None,
            )
        } else {
            let opt = |i: usize| -> R<Option<Vec<i64>>> {
                if self.given(n, i) {
                    self.fixed_list(n, i).map(Some)
                } else {
                    Ok(None)
                }
            };
            (
                self.fixed_list(n, 1)?,
                self.fixed_list(n, 2)?,
                opt(3)?,
                opt(4)?,
            )
        };
        let k = starts.len();
        let axes_list = axes.unwrap_or_else(|| (0..k as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; k]);
        if ends.len() != k || axes_list.len() != k || steps.len() != k {
            return Err(format!(
                "Slice with {k} starts, {} ends, {} axes and {} steps",
                ends.len(),
                axes_list.len(),
                steps.len()
            ));
        }
        let shapes = self.input_shapes(n)?;
        let picked = ints::axes(&axes_list, shapes[0].len())?;
        // each axis's indices in each run
        let mut per_axis = Vec::with_capacity(k);
        for (j, &a) in picked.iter().enumerate() {
            let pick = |s: &[usize]| ints::slice_indices(s[a], starts[j], ends[j], steps[j]);
            per_axis.push((a, pick(&shapes[0])?, pick(&shapes[1])?));
        }
        if let V::I([x0, x1]) = self.get(n, 0)? {
            let (mut y0, mut y1) = (x0, x1);
            for (a, i0, i1) in &per_axis {
                y0 = crate::arrays::take(&y0, *a, i0);
                y1 = crate::arrays::take(&y1, *a, i1);
            }
            return Ok(V::I([y0, y1]));
        }
        let (mut x, ids) = self.data(n, 0)?;
        for (a, i0, i1) in per_axis {
            let whole = |idx: &[usize], d: usize| {
                idx.len() == d && idx.iter().enumerate().all(|(k, &i)| i == k)
            };
            if whole(&i0, shapes[0][a]) && whole(&i1, shapes[1][a]) {
                continue;
            }
            if i0 != i1 {
                return Err(format!(
                    "Slice of axis {a} with bounds that depend on a free dimension"
                ));
            }
            let contiguous = i0.windows(2).all(|w| w[1] == w[0] + 1);
            x = if contiguous {
                let start = i0.first().copied().unwrap_or(0);
                let op = Op::Slice {
                    dim: a as isize,
                    start,
                    end: start + i0.len(),
                };
                self.op(op, vec![x])?
            } else {
                let t = ArrayD::from_shape_vec(
                    IxDyn(&[i0.len()]),
                    i0.iter().map(|&i| i as f32).collect(),
                )
                .expect("1-D");
                let idx = self.new_buffer(&format!("{}/indices", n.output[0]), t)?;
                self.op(Op::Gather { dim: a as isize }, vec![x, idx])?
            };
        }
        Ok(if ids { V::Ids(x) } else { V::F(x) })
    }

    fn reduce(&mut self, n: &NodeProto) -> R<V> {
        let kind = n.op_type.as_str();
        let keepdims = int(n, "keepdims", 1) != 0;
        let noop_empty = int(n, "noop_with_empty_axes", 0) != 0;
        let list = match ints_attr(n, "axes") {
            Some(a) => Some(a),
            None if self.given(n, 1) => Some(self.fixed_list(n, 1)?),
            None => None,
        };
        let x = self.f(n, 0)?;
        let [s0, s1] = self.shapes(x);
        let r = s0.len();
        let reduced = match list {
            Some(l) if !l.is_empty() => ints::axes(&l, r)?,
            _ if noop_empty => return Ok(V::F(x)),
            _ => (0..r).collect(),
        };
        if reduced.is_empty() {
            return Ok(V::F(x));
        }
        if reduced.iter().any(|&a| s0[a] == 0 || s1[a] == 0) {
            // an empty set: ONNX's identity of the reduction (0 for a sum, ∓inf for max / min;
            // NaN, 0/0, for a mean), as a constant when its shape is fixed
            if s0 != s1 {
                return Err(format!("{kind} over an empty axis of a free size"));
            }
            let out: Vec<usize> = (0..r)
                .filter_map(|a| match (reduced.contains(&a), keepdims) {
                    (false, _) => Some(s0[a]),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            let fill = match kind {
                "ReduceSum" => 0.0,
                "ReduceMean" => f32::NAN,
                "ReduceMax" => f32::NEG_INFINITY,
                _ => f32::INFINITY,
            };
            let t = ArrayD::from_elem(IxDyn(&out), fill);
            return Ok(V::C(
                self.buffer_const(&format!("{}/empty", n.output[0]), t),
            ));
        }
        let dims: Vec<isize> = reduced.iter().map(|&a| a as isize).collect();
        let y = match kind {
            "ReduceSum" | "ReduceMean" => {
                let kind = if kind == "ReduceSum" {
                    Reduction::Sum
                } else {
                    Reduction::Mean
                };
                self.op(
                    Op::Reduce {
                        kind,
                        dims,
                        keepdim: keepdims,
                    },
                    vec![x],
                )?
            }
            _ => {
                // min(x) = -max(-x), exactly; several axes one after another
                let min = kind == "ReduceMin";
                let mut y = if min { self.op(Op::Neg, vec![x])? } else { x };
                let mut sorted = reduced.clone();
                sorted.sort_unstable();
                for &a in sorted.iter().rev() {
                    let op = Op::Reduce {
                        kind: Reduction::Max,
                        dims: vec![a as isize],
                        keepdim: keepdims,
                    };
                    y = self.op(op, vec![y])?;
                }
                if min {
                    y = self.op(Op::Neg, vec![y])?;
                }
                y
            }
        };
        Ok(V::F(y))
    }

    /// Expand: numpy's broadcast of x against the shape, both ways. As `x · ones`, with the
    /// ones' sizes fixed where the target's are and 1 on the free dimensions x already has.
    fn expand(&mut self, n: &NodeProto) -> R<V> {
        let [t0, t1] = self.ints(n, 1)?;
        let (t0, t1) = (ints::list(&t0)?, ints::list(&t1)?);
        if t0.iter().chain(&t1).any(|&d| d < 0) {
            return Err(format!("Expand to {t0:?}"));
        }
        let to_us = |t: &[i64]| t.iter().map(|&d| d as usize).collect::<Vec<_>>();
        let (t0, t1) = (to_us(&t0), to_us(&t1));
        // one number spread over a shape with a free dimension (PyTorch's dynamo exporter writes a
        // recurrent layer's zero initial state so): a fill, as ConstantOfShape of that shape
        if let (V::C(w), true) = (self.get(n, 0)?, t0 != t1) {
            let c = &self.weights[&w];
            if c.len() == 1 {
                return Ok(V::Fill(c.iter().copied().next().expect("one value")));
            }
        }
        if let V::I([x0, x1]) = self.get(n, 0)? {
            let grow = |x: ArrayD<i64>, t: &[usize]| -> R<ArrayD<i64>> {
                let out = ints::broadcast(x.shape(), t)?;
                Ok(x.broadcast(IxDyn(&out)).expect("checked").to_owned())
            };
            return Ok(V::I([grow(x0, &t0)?, grow(x1, &t1)?]));
        }
        let x = self.f(n, 0)?;
        let [s0, s1] = self.shapes(x);
        let out = [ints::broadcast(&s0, &t0)?, ints::broadcast(&s1, &t1)?];
        if out == [s0.clone(), s1.clone()] {
            return Ok(V::F(x));
        }
        let ones: Vec<usize> = if t0 == t1 {
            t0.clone()
        } else if t0.len() == t1.len() {
            t0.iter()
                .zip(&t1)
                .map(|(&a, &b)| if a == b { a } else { 1 })
                .collect()
        } else {
            return Err("Expand to a rank that depends on a free dimension".into());
        };
        let ones = self.new_buffer(&format!("{}/ones", n.output[0]), ArrayD::ones(IxDyn(&ones)))?;
        let y = self.op(Op::Mul, vec![x, ones])?;
        if self.shapes(y) != out {
            return Err(format!("Expand of {s0:?} to {t0:?} over a free dimension"));
        }
        Ok(V::F(y))
    }

    /// ONNX's GRU and LSTM (one layer, forward or bidirectional, PyTorch's semantics: GRU with
    /// `linear_before_reset=1`) as kiln's `nn.GRU` / `nn.LSTM` layer, its gate blocks reordered
    /// once by `RnnCell::from_onnx_gates`. Outputs: `Y` `[T, D, B, H]` (`[B, T, D, H]` with
    /// `layout=1`), `Y_h` and LSTM's `Y_c` `[D, B, H]` (`[B, D, H]`).
    fn recurrent(&mut self, n: &NodeProto) -> R<()> {
        use crate::autograd::RnnCell;
        let cell = if n.op_type == "GRU" {
            RnnCell::Gru
        } else {
            RnnCell::Lstm
        };
        let name = n.op_type.as_str();
        let hidden = int(n, "hidden_size", 0);
        if hidden <= 0 {
            return Err(format!("{name} without hidden_size"));
        }
        let hidden = hidden as usize;
        let directions = match attr(n, "direction").map(|a| a.s.as_slice()) {
            None | Some(b"forward") => 1,
            Some(b"bidirectional") => 2,
            Some(d) => return Err(format!("{name} direction={}", String::from_utf8_lossy(d))),
        };
        if cell == RnnCell::Gru && int(n, "linear_before_reset", 0) != 1 {
            return Err("GRU with linear_before_reset=0 (PyTorch's GRU is 1)".into());
        }
        if attr(n, "activations").is_some()
            || attr(n, "clip").is_some()
            || int(n, "input_forget", 0) != 0
        {
            return Err(format!("{name} with activations, clip or input_forget"));
        }
        if self.given(n, 4) {
            return Err(format!("{name} with sequence_lens"));
        }
        if cell == RnnCell::Lstm && self.given(n, 7) {
            return Err("LSTM with peepholes".into());
        }
        let batch_first = int(n, "layout", 0) == 1;
        let gh = cell.gates() * hidden;
        let weight = |i: usize| -> R<Tensor> {
            self.constant(n, i)
                .cloned()
                .ok_or_else(|| format!("{name} with input {i} computed by the graph"))
        };
        let (w, r) = (weight(1)?, weight(2)?);
        let input_size = *w
            .shape()
            .get(2)
            .ok_or_else(|| format!("{name} W of shape {:?}", w.shape()))?;
        if w.shape() != [directions, gh, input_size] || r.shape() != [directions, gh, hidden] {
            return Err(format!(
                "{name} W {:?} / R {:?} for hidden_size {hidden}",
                w.shape(),
                r.shape()
            ));
        }
        let b = if self.given(n, 3) {
            let b = weight(3)?;
            if b.shape() != [directions, 2 * gh] {
                return Err(format!("{name} B of shape {:?}", b.shape()));
            }
            Some(b)
        } else {
            None
        };
        let spec = crate::nn::rnn_spec(&crate::autograd::RnnConfig {
            cell,
            input_size,
            hidden_size: hidden,
            num_layers: 1,
            bias: b.is_some(),
            batch_first,
            dropout: 0.0,
            bidirectional: directions == 2,
        });
        let mut module = spec
            .build(&mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0))
            .map_err(|e| e.to_string())?;
        let ax0 = ndarray::Axis(0);
        for (pname, p) in module.tensors_mut() {
            let d = usize::from(pname.ends_with("_reverse"));
            p.set_value(if pname.starts_with("weight_ih") {
                cell.from_onnx_gates(&w.index_axis(ax0, d).to_owned().into_dyn())
            } else if pname.starts_with("weight_hh") {
                cell.from_onnx_gates(&r.index_axis(ax0, d).to_owned().into_dyn())
            } else {
                let bd = b.as_ref().expect("bias names come with a bias");
                let bd = bd.index_axis(ax0, d);
                let half = if pname.starts_with("bias_ih") {
                    0..gh
                } else {
                    gh..2 * gh
                };
                cell.from_onnx_gates(&bd.slice(ndarray::s![half]).to_owned().into_dyn())
            });
        }
        // a path no other layer has, from the node's name
        let base: String = n
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if base.is_empty() {
            name.to_lowercase()
        } else {
            base
        };
        let mut path = base.clone();
        let mut k = 1;
        while self.modules.iter().any(|(p, _)| *p == path) {
            path = format!("{base}_{k}");
            k += 1;
        }
        self.modules.push((path.clone(), module));
        let x = self.f(n, 0)?;
        let mut ins = vec![x];
        // initial states, [D, B, H] for kiln (ONNX's layout=1 has them [B, D, H]); zeros = absent
        let mut state = |i: usize| -> R<Option<usize>> {
            if !self.given(n, i) || matches!(self.get(n, i)?, V::Fill(v) if v == 0.0) {
                return Ok(None);
            }
            let h = self.f(n, i)?;
            Ok(Some(if batch_first {
                self.op(
                    Op::Permute {
                        dims: vec![1, 0, 2],
                    },
                    vec![h],
                )?
            } else {
                h
            }))
        };
        let h0 = state(5)?;
        let c0 = if cell == RnnCell::Lstm {
            state(6)?
        } else {
            None
        };
        match (cell, h0, c0) {
            (RnnCell::Gru, Some(h), _) => ins.push(h),
            (RnnCell::Lstm, Some(h), Some(c)) => ins.extend([h, c]),
            (RnnCell::Lstm, None, None) | (RnnCell::Gru, None, _) => {}
            _ => return Err("LSTM with one of initial_h and initial_c".into()),
        }
        let call = self.op(Op::Call { module: path }, ins)?;
        let out = self.op(Op::Item { index: 0 }, vec![call])?;
        // [T, B, D·H] → [T, B, D, H] → [T, D, B, H]; batch first: [B, T, D·H] → [B, T, D, H]
        let split = self
            .shapes(out)
            .map(|s| vec![s[0], s[1], directions, hidden]);
        let mut y = self.reshape_to(out, split)?;
        if !batch_first {
            y = self.op(
                Op::Permute {
                    dims: vec![0, 2, 1, 3],
                },
                vec![y],
            )?;
        }
        let mut outs = vec![y];
        for index in 1..=1 + usize::from(cell == RnnCell::Lstm) {
            let h = self.op(Op::Item { index }, vec![call])?;
            outs.push(if batch_first {
                self.op(
                    Op::Permute {
                        dims: vec![1, 0, 2],
                    },
                    vec![h],
                )?
            } else {
                h
            });
        }
        for (out_name, v) in n.output.iter().zip(outs) {
            if !out_name.is_empty() {
                self.set(out_name, V::F(v));
            }
        }
        Ok(())
    }
}
