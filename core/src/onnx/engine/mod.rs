//! kiln's own ONNX engine: imports an ONNX file into kiln's graph ([`crate::graph`], the one
//! Python's `forward` is traced into, the fit loop trains and the exporter writes) and runs it on
//! kiln-core's autodiff ops in inference mode, without tract. It takes the graphs kiln exports
//! and the plain MLPs, CNNs and ResNets other tools write with the same operators, PyTorch's
//! `Shape → Gather → Unsqueeze → Concat → Reshape` flatten with a free batch included: int64
//! shape arithmetic is evaluated when the file is imported (`import.rs`, `ints.rs`), so what runs
//! is kiln's graph and nothing else. int64 inputs are token ids, for Gather.
//!
//! Why a second engine: in the browser, tract costs 2.1 MB of gzip download, ~150 ms of wasm
//! compilation and model optimisation before the first prediction, and its per-call overhead
//! dominates the small models that belong in a page. kiln's forward ops already exist (they train
//! the model) and compile to a fraction of that. `KilnSession::from_bytes` answers
//! [`Unsupported`] for any graph it cannot run exactly (an operator, attribute or element type
//! outside its list, a shape the graph cannot say), and kiln-wasm then loads the graph with tract
//! instead, so every model still runs. Outputs are checked against onnxruntime and tract in the
//! tests (wasm/tests, core/tests).

mod import;
mod ints;
mod plan;

use std::collections::{BTreeMap, HashMap};

use ndarray::{ArrayD, IxDyn};
use prost::Message;

use crate::autograd::Tape;
use crate::graph::Graph;
use crate::onnx::pb::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim, ModelProto, TensorProto,
    ValueInfoProto,
};
use crate::{KilnError, Result, Tensor};

/// A value flowing through the graph: kiln computes in float32; int64 carries indices and shapes.
#[derive(Clone, Debug)]
pub enum Value {
    /// float32 activations and weights.
    F32(Tensor),
    /// int64 token ids, Reshape shapes, Gather indices.
    I64(ArrayD<i64>),
}

impl Value {
    fn shape(&self) -> &[usize] {
        match self {
            Value::F32(t) => t.shape(),
            Value::I64(t) => t.shape(),
        }
    }
    fn dtype(&self) -> &'static str {
        match self {
            Value::F32(_) => "float32",
            Value::I64(_) => "int64",
        }
    }
}

/// A graph input or output: its name, dims (`None` for a free dimension such as the batch) and
/// element type (`"float32"` or `"int64"`).
#[derive(Clone, Debug)]
pub struct IoInfo {
    /// The name in the graph.
    pub name: String,
    /// One entry per axis; `None` where the size is free.
    pub dims: Vec<Option<usize>>,
    /// The name of each free dimension (`"batch"`), so inputs sharing one are checked together.
    pub symbols: Vec<Option<String>>,
    /// `"float32"` or `"int64"`.
    pub dtype: &'static str,
}

/// Why kiln's engine declined a model: the first thing it cannot run (`"operator Sin"`,
/// `"Conv with asymmetric pads [0, 0, 1, 1]"`, `"Add on int64 values"`). Not an error in the model.
#[derive(Clone, Debug)]
pub struct Unsupported(pub String);

/// From this many nodes tract's load takes seconds (bench/load/chains.py: ~1 s at 2,000 in Node).
pub const TRACT_SLOW_NODES: usize = 2000;

/// What to tell a caller about to load the ONNX file `bytes` with tract after kiln's engine
/// declined it, when its graph is long enough for that to take a while (tract's load grows faster
/// than the graph): None for shorter graphs and for bytes that are not a model.
pub fn slow_fallback_warning(bytes: &[u8], remedy: &str) -> Option<String> {
    let nodes = ModelProto::decode(bytes).map_or(0, |m| m.graph.map_or(0, |g| g.node.len()));
    (nodes >= TRACT_SLOW_NODES).then(|| {
        let mut grouped = nodes.to_string();
        let len = grouped.len();
        for at in (1..len).rev().filter(|i| (len - i) % 3 == 0) {
            grouped.insert(at, ',');
        }
        format!(
            "kiln's engine declined this model, so tract loads it; its {grouped} nodes will take a \
             while (tract's load grows faster than the graph: about 1 s at 2,000 nodes and 8 s at \
             8,000 in Node on a 2-core machine, minutes past 30,000) and the thread is busy \
             meanwhile. {remedy}"
        )
    })
}

/// About the most values a batch's largest convolution output holds in one chunk (512 KB): a
/// batch whose samples are computed apart runs in chunks of that many samples, so that a layer's
/// output is still in the CPU's L2 cache when the next layer reads it, where a whole batch's
/// went out to L3 or memory between layers. The ResNet-8 at batch 64 (16 × 32 × 32 values per
/// sample: chunks of 8) took 0.30 ms per sample natively at batches 1 to 8 and 0.37-0.39 at 64
/// (AVX-512, one thread, 2026-12-03); models whose convolutions are small (the digits CNN: 1,024
/// values per sample) or that have none run whole. Natively only: in wasm (simd128, Node, same
/// process) the float ResNet-8 ran the same in chunks (0.98-1.02x) and its int8 twin 1.12-1.19x
/// faster, but the code put the small module past its 0.5 MB gzip budget.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const CHUNK_VALUES: usize = 1 << 17;

#[cfg(not(target_arch = "wasm32"))]
/// Rows `start..start + len` of `x` (standard layout) along axis 0, as a tensor of their own.
fn rows_of(x: &Tensor, start: usize, len: usize) -> Tensor {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = len;
    let all = x
        .as_slice()
        .expect("a standard-layout input (chunked_rows)");
    let data = all[start * per..(start + len) * per].to_vec();
    Tensor::from_shape_vec(ndarray::IxDyn(&shape), data).expect("the rows' shape")
}

#[cfg(not(target_arch = "wasm32"))]
/// The chunks' values of one output, batch-first, one after another (by their values in order,
/// not `ndarray::concatenate`, whose generic copies cost the small wasm module 15 KB gzip).
fn join(parts: &[&Tensor]) -> Result<Tensor> {
    let mut shape = parts[0].shape().to_vec();
    shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
    let mut data = Vec::with_capacity(shape.iter().product());
    for p in parts {
        match p.as_slice() {
            Some(v) => data.extend_from_slice(v),
            None => data.extend(p.iter()),
        }
    }
    Tensor::from_shape_vec(ndarray::IxDyn(&shape), data)
        .map_err(|e| KilnError::onnx(format!("joining a batch's chunks: {e}")))
}

/// A model ready to run on kiln's engine.
pub struct KilnSession {
    graph: Graph,
    buffers: std::collections::HashSet<String>,
    /// Layers for the operators that are kiln layers (GRU, LSTM): a run binds their weights
    /// (through `&mut`), so runs take turns on them.
    modules: std::sync::Mutex<Vec<(String, Box<dyn crate::nn::Module>)>>,
    weights: HashMap<String, Tensor>,
    /// Made once at load: convolutions packed and fused with what follows them.
    plan: plan::Plan,
    /// Freed activations' buffers, reused by the next runs.
    pool: std::sync::Mutex<plan::Pool>,
    /// Whether every sample of a batch is computed from its own inputs alone
    /// ([`Graph::splits_by_sample`]), so a batch may run in chunks ([`CHUNK_VALUES`]; natively).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    splits: bool,
    /// The chunk found for inputs of these per-sample shapes: samples per chunk.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    chunk: std::sync::Mutex<Option<(Vec<Vec<usize>>, usize)>>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    metadata: BTreeMap<String, String>,
    /// How `text::Cached` steps the graph (None: it does not qualify), found on first use.
    pub(crate) step_plan: std::sync::OnceLock<Option<std::sync::Arc<crate::text::Plan>>>,
}

impl KilnSession {
    /// Parses `bytes` as ONNX. `Err` for bytes that are not a valid model; `Ok(Err(Unsupported))`
    /// for a valid model this engine does not run (the caller then uses tract).
    pub fn from_bytes(bytes: &[u8]) -> Result<std::result::Result<Self, Unsupported>> {
        if bytes.is_empty() {
            return Err(KilnError::onnx("not a valid ONNX model: the data is empty"));
        }
        let proto = ModelProto::decode(bytes)
            .map_err(|e| KilnError::onnx(format!("not a valid ONNX model: {e}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| KilnError::onnx("not a valid ONNX model: it has no graph"))?;
        Ok(Self::build(&proto, graph))
    }

    fn build(
        proto: &ModelProto,
        graph: &crate::onnx::pb::GraphProto,
    ) -> std::result::Result<Self, Unsupported> {
        let unsupported = |m: String| Unsupported(m);
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        if let Some(o) = proto
            .opset_import
            .iter()
            .find(|o| !(o.domain.is_empty() || o.domain == "ai.onnx"))
        {
            return Err(unsupported(format!("operator set {:?}", o.domain)));
        }
        // Up to the newest opset kiln's operators were checked against (onnx 1.23): from 23 on,
        // the versions of the operators here only add element types kiln declines anyway.
        if !(7..=28).contains(&opset) {
            return Err(unsupported(format!("opset {opset}")));
        }
        let mut constants = HashMap::new();
        let mut narrow = HashMap::new();
        for t in &graph.initializer {
            match narrow_ints(t).map_err(unsupported)? {
                Some(q) => narrow.insert(t.name.clone(), q).map(|_| ()),
                None => constants
                    .insert(t.name.clone(), tensor_value(t).map_err(unsupported)?)
                    .map(|_| ()),
            };
        }
        let inputs = graph
            .input
            .iter()
            .filter(|v| !constants.contains_key(&v.name) && !narrow.contains_key(&v.name))
            .map(io_info)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let attention = proto
            .metadata_props
            .iter()
            .find(|p| p.key == crate::onnx::export::attention::MARKS_KEY)
            .map(|p| p.value.as_str());
        let imported = import::import(graph, opset, constants, narrow, &inputs, &names, attention)?;
        // after the nodes, so a graph is declined for its first operator kiln lacks
        let outputs = graph
            .output
            .iter()
            .map(io_info)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if let Some(o) = outputs.iter().find(|o| o.dtype != "float32") {
            return Err(unsupported(format!("output {:?} is not float32", o.name)));
        }
        let metadata = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let plan = plan::Plan::new(
            &imported.graph,
            &imported.weights,
            &imported.quantized,
            true,
        );
        let splits = cfg!(not(target_arch = "wasm32"))
            && imported.graph.splits_by_sample(&|_| None, &|name| {
                imported.weights.get(name).map(|w| w.ndim())
            });
        Ok(KilnSession {
            splits,
            chunk: Default::default(),
            graph: imported.graph,
            buffers: imported.buffers,
            modules: std::sync::Mutex::new(imported.modules),
            weights: imported.weights,
            plan,
            pool: Default::default(),
            inputs,
            outputs,
            metadata,
            step_plan: Default::default(),
        })
    }

    /// The graph's inputs (initializers excluded).
    pub fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    /// The model's `metadata_props`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// `kiln.labels` from the metadata, when it is a JSON list of strings.
    pub fn labels(&self) -> Option<Vec<String>> {
        self.metadata
            .get("kiln.labels")
            .and_then(|l| serde_json::from_str(l).ok())
    }

    /// Runs the graph on named inputs; returns the outputs in graph order. Inputs are checked as
    /// kiln's tract session checks them, with the same messages.
    pub fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<Tensor>> {
        self.run_plan(feeds, None, None)
    }

    /// [`KilnSession::run`], timing each step of the plan by `now` (a clock in milliseconds):
    /// the outputs, and each step's name (`Conv2d·s+b+relu → [1, 16, 32, 32]`, `Relu → …`) with
    /// its milliseconds. A batch run in chunks ([`CHUNK_VALUES`]) sums each step over the chunks
    /// and names it by the first chunk's shapes (`→ [8, 16, 32, 32]` at batch 64; a first run at
    /// a sample shape, which sizes the chunk, shows `[1, …]`). With `fused` false every node runs
    /// on its own, as before the plan packed and fused the convolutions (the reference path).
    #[allow(clippy::type_complexity)]
    pub fn profile(
        &self,
        feeds: Vec<(String, Value)>,
        now: &dyn Fn() -> f64,
        fused: bool,
    ) -> Result<(Vec<Tensor>, Vec<(String, f64)>)> {
        let mut timings = Vec::new();
        let unfused =
            (!fused).then(|| plan::Plan::new(&self.graph, &self.weights, &HashMap::new(), false));
        let out = self.run_plan(feeds, unfused.as_ref(), Some((now, &mut timings)))?;
        Ok((out, timings))
    }

    fn run_plan(
        &self,
        feeds: Vec<(String, Value)>,
        plan: Option<&plan::Plan>,
        timings: Option<plan::Timings>,
    ) -> Result<Vec<Tensor>> {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        let feeds = crate::onnx::feeds::in_graph_order(&names, feeds)?;
        let mut free = crate::onnx::feeds::FreeDims::default();
        for (info, value) in self.inputs.iter().zip(&feeds) {
            if value.dtype() != info.dtype || !crate::onnx::feeds::fits(&info.dims, value.shape()) {
                return Err(crate::onnx::feeds::mismatch(
                    &info.name,
                    &info.dims,
                    info.dtype,
                    value.shape(),
                    value.dtype(),
                ));
            }
            free.bind(&info.name, &info.symbols, value.shape())?;
        }
        let mut values = Vec::with_capacity(feeds.len());
        for (value, info) in feeds.into_iter().zip(&self.inputs) {
            values.push(match value {
                Value::F32(v) => v,
                Value::I64(v) => {
                    // ids travel in float32, exactly up to 2^24
                    if let Some(bad) = v.iter().find(|i| i.unsigned_abs() > 1 << 24) {
                        return Err(KilnError::value(format!(
                            "input {:?}: the id {bad} is larger than kiln's engine takes (2^24)",
                            info.name
                        )));
                    }
                    v.mapv(|i| i as f32)
                }
            });
        }
        let plan = plan.unwrap_or(&self.plan);
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(n) = self.chunked_rows(&values) {
            return self.run_in_chunks(values, n, plan, &mut pool, timings);
        }
        // One inference tape for the run: weights are copied onto it on first use; each
        // activation is freed after its last use.
        let mut tape = Tape::inference();
        let xs: Vec<crate::Var> = values.into_iter().map(|v| tape.constant(v)).collect();
        let mut timings = timings;
        let mut out = Vec::new();
        self.scoped(&mut |scope| {
            out = plan.run(
                &self.graph,
                scope,
                &mut tape,
                &xs,
                &mut pool,
                timings.take(),
            )?;
            Ok(())
        })
        .map_err(|e| KilnError::onnx(e.to_string()))?;
        Ok(out)
    }

    /// The batch size when these inputs run in chunks ([`KilnSession::run_in_chunks`]): the
    /// graph keeps samples apart and every input is a standard-layout batch of the same size > 1.
    #[cfg(not(target_arch = "wasm32"))]
    fn chunked_rows(&self, feeds: &[Tensor]) -> Option<usize> {
        let n = *feeds.first()?.shape().first()?;
        let fits = |x: &Tensor| x.shape().first() == Some(&n) && x.is_standard_layout();
        (self.splits && n > 1 && feeds.iter().all(fits)).then_some(n)
    }

    /// A batch of `n` samples computed apart, run in chunks ([`CHUNK_VALUES`]): the first run at
    /// a per-sample shape runs one sample alone and sizes the chunk by its largest convolution
    /// output. Natively only: in wasm the float ResNet-8 measured the same in chunks and the small
    /// module has no room for this code.
    #[cfg(not(target_arch = "wasm32"))]
    fn run_in_chunks(
        &self,
        feeds: Vec<Tensor>,
        n: usize,
        plan: &plan::Plan,
        pool: &mut plan::Pool,
        timings: Option<plan::Timings>,
    ) -> Result<Vec<Tensor>> {
        let samples = |x: &Tensor| x.shape()[1..].to_vec();
        let shapes: Vec<Vec<usize>> = feeds.iter().map(samples).collect();
        let known = self
            .chunk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(s, _)| *s == shapes)
            .map(|(_, c)| *c);
        // samples per chunk, and whether this run finds it
        let (mut chunk, learn) = match known {
            None => (1, true),
            Some(c) => (c, false),
        };
        let mut timings = timings;
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
        if learn {
            pool.peak(); // from here: the first chunk's
        }
        // one tape and one scope for all chunks: weights are bound once
        let mut tape = Tape::inference();
        self.scoped(&mut |scope| {
            let mut start = 0;
            while start < n {
                let len = chunk.min(n - start);
                let xs: Vec<crate::Var> = feeds
                    .iter()
                    .map(|x| match len == n {
                        true => tape.constant(x.clone()),
                        false => tape.constant(rows_of(x, start, len)),
                    })
                    .collect();
                let mut more = Vec::new();
                let t = match (&mut timings, outs.is_empty()) {
                    (Some((now, all)), true) => Some((*now, &mut **all)),
                    (Some((now, _)), false) => Some((*now, &mut more)),
                    (None, _) => None,
                };
                outs.push(plan.run(&self.graph, scope, &mut tape, &xs, pool, t)?);
                if let Some((_, all)) = &mut timings {
                    for ((_, ms), (_, more)) in all.iter_mut().zip(&more) {
                        *ms += more;
                    }
                }
                if learn && start == 0 {
                    // samples per chunk from the first sample's largest convolution output
                    chunk = match pool.peak() {
                        0 => n,
                        peak => (CHUNK_VALUES / peak).clamp(1, n),
                    };
                    *self
                        .chunk
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((shapes.clone(), chunk));
                }
                start += len;
            }
            Ok(())
        })
        .map_err(|e| KilnError::onnx(e.to_string()))?;
        if outs.len() == 1 {
            return Ok(outs.pop().expect("one run"));
        }
        (0..outs[0].len())
            .map(|k| join(&outs.iter().map(|o| &o[k]).collect::<Vec<_>>()))
            .collect()
    }

    /// Runs `f` with the scope the imported graph's nodes read: the weights (bound onto a tape
    /// once per name and tape, copied, read-only) and the layers import made (GRU, LSTM), which
    /// runs take turns on. What a run uses, and what `text::Cached` steps the graph with.
    pub fn scoped(
        &self,
        f: &mut dyn FnMut(&mut dyn crate::graph::Scope) -> Result<()>,
    ) -> Result<()> {
        let mut modules = self
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut scope = import::Weights {
            weights: &self.weights,
            bound: HashMap::new(),
            modules: &mut modules,
        };
        f(&mut scope)
    }

    /// The imported graph (kiln's own, as Python's models are) and its weights by name.
    pub fn graph(&self) -> (&Graph, &HashMap<String, Tensor>) {
        (&self.graph, &self.weights)
    }

    /// The file as a kiln model that trains: the imported graph, the file's initializers as its
    /// parameters (BatchNorm folded into a trainable scale and shift) and the constants import
    /// made as buffers, named as in the file. `Err` naming why for a file kiln's engine declines.
    /// The model's graph is what `export_onnx` writes back, so a PyTorch export can be fine-tuned
    /// in a notebook or a page and shipped again.
    pub fn into_model(self, seed: u64) -> Result<crate::Model> {
        let mut names: Vec<&String> = self.weights.keys().collect();
        names.sort();
        let params = names
            .iter()
            .map(|&n| crate::nn::NamedParam {
                name: n.clone(),
                shape: self.weights[n].shape().to_vec(),
                buffer: self.buffers.contains(n),
            })
            .collect();
        let modules = self
            .modules
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let spec = crate::nn::GraphSpec {
            modules: modules
                .iter()
                .map(|(name, m)| crate::nn::NamedModule {
                    name: name.clone(),
                    spec: m.spec(),
                })
                .collect(),
            params,
            graph: Some(self.graph),
        };
        let mut model = crate::Model::from_graph_spec(&spec, seed)?;
        let mut dict: std::collections::BTreeMap<String, Tensor> =
            self.weights.into_iter().collect();
        for (name, m) in &modules {
            for (t, p) in m.tensors() {
                dict.insert(format!("{name}.{t}"), p.value().clone());
            }
        }
        model.net.load_state_dict(&dict)?;
        Ok(model)
    }

    /// [`KilnSession::into_model`] from the file's bytes.
    pub fn model_from_bytes(bytes: &[u8], seed: u64) -> Result<crate::Model> {
        match Self::from_bytes(bytes)? {
            Ok(s) => s.into_model(seed),
            Err(Unsupported(why)) => Err(KilnError::onnx(format!(
                "kiln cannot train this ONNX file ({why}): kiln's graph does not express that (tract can still run it)"
            ))),
        }
    }
}

fn io_info(v: &ValueInfoProto) -> std::result::Result<IoInfo, Unsupported> {
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(crate::onnx::pb::type_proto::Value::TensorType(t)) => t,
        _ => return Err(Unsupported(format!("{:?}: not a tensor", v.name))),
    };
    let dtype = match DataType::try_from(tensor.elem_type) {
        Ok(DataType::Float) => "float32",
        Ok(DataType::Int64) => "int64",
        _ => {
            return Err(Unsupported(format!(
                "{:?}: element type {}",
                v.name, tensor.elem_type
            )))
        }
    };
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or(&[]);
    let mut out = IoInfo {
        name: v.name.clone(),
        dims: Vec::new(),
        symbols: Vec::new(),
        dtype,
    };
    for d in dims {
        match &d.value {
            Some(Dim::DimValue(n)) if *n >= 0 => {
                out.dims.push(Some(*n as usize));
                out.symbols.push(None);
            }
            Some(Dim::DimParam(p)) if !p.is_empty() => {
                out.dims.push(None);
                out.symbols.push(Some(p.clone()));
            }
            _ => {
                out.dims.push(None);
                out.symbols.push(None);
            }
        }
    }
    if tensor.shape.is_none() {
        return Err(Unsupported(format!("{:?}: no shape", v.name)));
    }
    Ok(out)
}

/// An initializer or Constant as a [`Value`] (float32 and int64 only, stored inline).
/// An int8, uint8 or int32 constant's values and its type's range.
pub(super) type Narrow = (ArrayD<i64>, [i64; 2]);

/// An int8, uint8 or int32 initializer (a quantized weight, zero point or bias) as its values and
/// the type's range; None for other element types.
fn narrow_ints(t: &TensorProto) -> std::result::Result<Option<Narrow>, String> {
    let (range, width) = match DataType::try_from(t.data_type) {
        Ok(DataType::Int8) => ([-128, 127], 1),
        Ok(DataType::Uint8) => ([0, 255], 1),
        Ok(DataType::Int32) => ([i32::MIN as i64, i32::MAX as i64], 4),
        _ => return Ok(None),
    };
    if !t.external_data.is_empty() {
        return Err(format!("{:?}: weights in an external file", t.name));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let data: Vec<i64> = match (width, t.raw_data.is_empty()) {
        (1, false) if range[0] < 0 => t.raw_data.iter().map(|&b| b as i8 as i64).collect(),
        (1, false) => t.raw_data.iter().map(|&b| b as i64).collect(),
        (_, false) => t
            .raw_data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
            .collect(),
        // int32_data holds every narrow type's values when raw_data is not used
        (_, true) => t.int32_data.iter().map(|&v| v as i64).collect(),
    };
    if data.len() != shape.iter().product::<usize>()
        || data.iter().any(|v| !(range[0]..=range[1]).contains(v))
    {
        return Err(format!("{:?}: malformed tensor data", t.name));
    }
    let q =
        ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| format!("{:?}: {e}", t.name))?;
    Ok(Some((q, range)))
}

fn tensor_value(t: &TensorProto) -> std::result::Result<Value, String> {
    if !t.external_data.is_empty() {
        return Err(format!("{:?}: weights in an external file", t.name));
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = shape.iter().product();
    let bad = || format!("{:?}: malformed tensor data", t.name);
    match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => {
            let data: Vec<f32> = if !t.raw_data.is_empty() {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            if data.len() != n {
                return Err(bad());
            }
            Ok(Value::F32(
                ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|_| bad())?,
            ))
        }
        Ok(DataType::Int64) => {
            let data: Vec<i64> = if !t.raw_data.is_empty() {
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            if data.len() != n {
                return Err(bad());
            }
            Ok(Value::I64(
                ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|_| bad())?,
            ))
        }
        _ => Err(format!("{:?}: element type {}", t.name, t.data_type)),
    }
}
