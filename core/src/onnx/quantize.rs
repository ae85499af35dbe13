//! Post-training int8 quantization, written as ONNX in the QDQ form (the form onnxruntime's
//! `quantize_static` writes by default): every Conv/Gemm weight is stored as int8 (symmetric, per
//! output channel on axis 0, or per tensor) behind a `DequantizeLinear`.
//!
//! - static: the Conv/Gemm input activations also pass through `QuantizeLinear → DequantizeLinear`
//!   with a uint8 scale and zero point calibrated on sample data (min/max or a percentile of the
//!   values each layer receives), and biases are int32 with scale `x_scale · w_scale`, so a runtime
//!   that fuses the pattern runs integer kernels and one that does not computes the very same values.
//! - dynamic (weight-only): int8 weights, float activations and biases; no calibration data needed.
//!
//! The graph is the fp32 export of [`crate::onnx::export`] rewritten node by node, so every layer the
//! exporter knows stays supported.

use std::collections::HashMap;

use crate::onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto,
    NodeProto, StringStringEntryProto, TensorProto,
};
use ndarray::Axis;
use prost::Message;

use crate::autograd::{Tape, Tensor};
use crate::onnx::export::{export_onnx, ExportOptions};
use crate::optimize::{check_samples, flat_layers, is_weighted};
use crate::train::Input;
use crate::{value_err, KilnError, Model, Result};

/// How activation ranges are calibrated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The `p` and `100 - p` percentiles (e.g. 99.99), which ignores rare outliers.
    Percentile(f32),
}

/// Static (weights and activations) or dynamic (weights only) quantization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuantizeMode {
    /// int8 weights, uint8 activations calibrated on data, int32 biases.
    Static,
    /// int8 weights only.
    Dynamic,
}

/// Options of [`quantize_onnx`].
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// One weight scale per output channel (axis 0) rather than one per tensor.
    pub per_channel: bool,
    /// How activation ranges are found (static mode).
    pub calibration: Calibration,
    /// Static or dynamic.
    pub mode: QuantizeMode,
    /// Labels, input scale, opset and names of the written graph.
    pub export: ExportOptions,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            per_channel: true,
            calibration: Calibration::MinMax,
            mode: QuantizeMode::Static,
            export: ExportOptions::default(),
        }
    }
}

/// The float range each weighted layer receives on the calibration data, by ONNX node scope
/// (`"/0"`, `"/2.1"`, as the exporter names nodes).
fn calibrate(model: &Model, x: &Input, method: Calibration) -> Result<HashMap<String, (f32, f32)>> {
    let mut seen: HashMap<String, Vec<f32>> = HashMap::new();
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    let mut record = |scope: String, values: &Tensor| match method {
        Calibration::MinMax => {
            let r = ranges.entry(scope).or_insert((0.0, 0.0));
            for &a in values.iter() {
                r.0 = r.0.min(a);
                r.1 = r.1.max(a);
            }
        }
        Calibration::Percentile(_) => seen.entry(scope).or_default().extend(values.iter()),
    };
    let n = x.shape()[0];
    let batches = (0..n).step_by(256).map(|start| {
        x.slice_axis(Axis(0), ndarray::Slice::from(start..(start + 256).min(n)))
            .to_owned()
    });
    if model.net.layers().is_some() {
        // a Sequential: its layers in order, nested Sequentials unrolled as the exporter names them
        let mut layers = flat_layers(model)?;
        for xb in batches {
            let mut t = Tape::inference();
            let mut v = t.constant(xb);
            for layer in layers.iter_mut() {
                if is_weighted(&layer.spec) {
                    record(
                        format!("/{}", layer.prefix.trim_end_matches('.')),
                        t.value(v),
                    );
                }
                v = layer.module.forward(&mut t, v)?;
            }
        }
    } else {
        // a graph: what each weighted module receives, node by node, on a copy of the model
        let mut scratch = Model::from_architecture(&model.architecture(), 0)?;
        scratch.net.load_state_dict(&model.net.state_dict())?;
        let graph = scratch.net.require_graph()?.clone();
        if graph.inputs.len() != 1 {
            value_err!(
                "quantize: static calibration takes models with one input; use mode=\"dynamic\""
            );
        }
        let weighted: HashMap<String, bool> = scratch
            .net
            .modules()
            .map(|(p, m)| (p.to_string(), is_weighted(&m.spec())))
            .collect();
        for xb in batches {
            let mut t = Tape::inference();
            let mut vals = vec![crate::graph::Value::One(t.constant(xb))];
            for node in &graph.nodes {
                let xs: Vec<_> = node.inputs.iter().map(|&i| vals[i].clone()).collect();
                if let crate::graph::Op::Call { module } = &node.op {
                    if weighted.get(module).copied().unwrap_or(false) {
                        record(format!("/{module}"), t.value(xs[0].var()?));
                    }
                }
                vals.push(crate::graph::run_node(
                    &mut scratch.net,
                    &mut t,
                    &node.op,
                    &xs,
                )?);
            }
        }
    }
    if let Calibration::Percentile(p) = method {
        for (scope, mut values) in seen {
            values.sort_unstable_by(f32::total_cmp);
            let at = |q: f32| {
                let i = (q / 100.0 * (values.len() - 1) as f32).round() as usize;
                values[i.min(values.len() - 1)]
            };
            // zero stays representable exactly (padding, ReLU outputs)
            ranges.insert(scope, (at(100.0 - p).min(0.0), at(p).max(0.0)));
        }
    }
    Ok(ranges)
}

/// uint8 scale and zero point covering `[lo, hi]` (which contains 0).
fn activation_qparams(lo: f32, hi: f32) -> (f32, u8) {
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Symmetric int8 weights: one scale per output channel (axis 0) or one for the tensor.
fn quantize_weight(w: &Tensor, per_channel: bool) -> (Vec<i8>, Vec<f32>) {
    let rows = if per_channel { w.shape()[0] } else { 1 };
    let flat: Vec<f32> = w.iter().copied().collect();
    let per_row = flat.len() / rows;
    let mut q = Vec::with_capacity(flat.len());
    let mut scales = Vec::with_capacity(rows);
    for row in flat.chunks(per_row) {
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // an all-zero (pruned) channel still needs a positive scale
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

fn tensor(name: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn f32s(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Float,
        v.iter().flat_map(|f| f.to_le_bytes()).collect(),
    )
}

fn node(op: &str, inputs: &[&str], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: axis
            .map(|i| AttributeProto {
                name: "axis".into(),
                r#type: AttributeType::Int as i32,
                i,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// The model as a quantized ONNX graph. `calibration` is required in static mode.
pub fn quantize_onnx(
    model: &Model,
    calibration: Option<Input>,
    opts: &QuantizeOptions,
) -> Result<Vec<u8>> {
    let ranges = match (opts.mode, &calibration) {
        (QuantizeMode::Static, None) => value_err!(
            "quantize: static quantization needs calibration data (a few hundred typical inputs)"
        ),
        (QuantizeMode::Static, Some(x)) => {
            check_samples("quantize: calibration data", model, x)?;
            if let Calibration::Percentile(p) = opts.calibration {
                if !(50.0..=100.0).contains(&p) || !p.is_finite() {
                    value_err!("quantize: the percentile must be in [50, 100], got {p}");
                }
            }
            calibrate(model, x, opts.calibration)?
        }
        (QuantizeMode::Dynamic, Some(x)) => {
            check_samples("quantize: calibration data", model, x)?;
            HashMap::new()
        }
        (QuantizeMode::Dynamic, None) => HashMap::new(),
    };
    let fp32 = export_onnx(model, &opts.export)?;
    let mut proto = ModelProto::decode(fp32.as_slice())
        .map_err(|e| KilnError::onnx(format!("quantize: re-reading the export: {e}")))?;
    let weights = model.net.state_dict();
    let graph = proto.graph.as_mut().expect("the exporter writes a graph");
    let mut nodes = Vec::with_capacity(graph.node.len() * 3);
    let mut drop_inits: Vec<String> = Vec::new();
    for mut n in std::mem::take(&mut graph.node) {
        if n.op_type != "Conv" && n.op_type != "Gemm" {
            nodes.push(n);
            continue;
        }
        let scope = n.name.rsplit_once('/').map_or("", |(s, _)| s).to_string();
        let w_name = n.input[1].clone();
        let w = weights
            .get(&w_name)
            .ok_or_else(|| KilnError::onnx(format!("quantize: no weight {w_name}")))?;
        let (q, w_scales) = quantize_weight(w, opts.per_channel);
        let axis = opts.per_channel.then_some(0);
        let sdims: Vec<usize> = if opts.per_channel {
            vec![w_scales.len()]
        } else {
            vec![]
        };
        // Short names and no zero points for the symmetric tensors (they default to 0): on a small
        // model the graph's bookkeeping is a visible part of the file.
        let p = w_name.trim_end_matches("weight");
        let (wq, ws, wdq) = (format!("{p}wq"), format!("{p}ws"), format!("{p}w"));
        let wbytes = q.iter().map(|&v| v as u8).collect();
        graph
            .initializer
            .push(tensor(&wq, w.shape(), DataType::Int8, wbytes));
        graph.initializer.push(f32s(&ws, &sdims, &w_scales));
        nodes.push(node("DequantizeLinear", &[&wq, &ws], &wdq, axis));
        drop_inits.push(w_name.clone());
        n.input[1] = wdq;
        if opts.mode == QuantizeMode::Static {
            let &(lo, hi) = ranges.get(&scope).ok_or_else(|| {
                KilnError::onnx(format!("quantize: no calibrated range for {scope}"))
            })?;
            let (xs, xz) = activation_qparams(lo, hi);
            let x_name = n.input[0].clone();
            let (s_name, z_name) = (format!("{p}xs"), format!("{p}xz"));
            graph.initializer.push(f32s(&s_name, &[], &[xs]));
            // A missing zero point means uint8 zero, what non-negative inputs (pixels, ReLU outputs)
            // get anyway: one initializer and two references fewer.
            let qparams: Vec<&str> = if xz == 0 {
                vec![&s_name]
            } else {
                graph
                    .initializer
                    .push(tensor(&z_name, &[], DataType::Uint8, vec![xz]));
                vec![&s_name, &z_name]
            };
            let (xq, xdq) = (format!("{p}xq"), format!("{p}x"));
            nodes.push(node(
                "QuantizeLinear",
                &[&[x_name.as_str()], &qparams[..]].concat(),
                &xq,
                None,
            ));
            nodes.push(node(
                "DequantizeLinear",
                &[&[xq.as_str()], &qparams[..]].concat(),
                &xdq,
                None,
            ));
            n.input[0] = xdq;
            if let Some(b_name) = n.input.get(2).cloned() {
                let b = &weights[&b_name];
                // bias scale x_scale · w_scale[c], so the int32 bias adds straight onto the int32
                // accumulator of an integer kernel
                let bq: Vec<u8> = b
                    .iter()
                    .enumerate()
                    .map(|(c, v)| {
                        let s = xs * w_scales[if opts.per_channel { c } else { 0 }];
                        (v / s).round_ties_even().clamp(-2.147e9, 2.147e9) as i32
                    })
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                let (bq_n, bs_n, bdq) = (format!("{p}bq"), format!("{p}bs"), format!("{p}b"));
                graph
                    .initializer
                    .push(tensor(&bq_n, &[b.len()], DataType::Int32, bq));
                // computed in the graph (constant-folded by runtimes) rather than stored
                nodes.push(node("Mul", &[&s_name, &ws], &bs_n, None));
                nodes.push(node("DequantizeLinear", &[&bq_n, &bs_n], &bdq, axis));
                drop_inits.push(b_name);
                n.input[2] = bdq;
            }
        }
        nodes.push(n);
    }
    graph.node = nodes;
    graph.initializer.retain(|t| !drop_inits.contains(&t.name));
    compact(graph);
    let describe = match opts.mode {
        QuantizeMode::Static => format!(
            "int8 static qdq {} {}",
            if opts.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            match opts.calibration {
                Calibration::MinMax => "minmax".to_string(),
                Calibration::Percentile(p) => format!("percentile {p}"),
            }
        ),
        QuantizeMode::Dynamic => format!(
            "int8 weight-only {}",
            if opts.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        ),
    };
    proto.metadata_props.push(StringStringEntryProto {
        key: "kiln.quantization".into(),
        value: describe,
    });
    Ok(proto.encode_to_vec())
}

/// On a small model the graph's bookkeeping is a visible part of an int8 file (the 2.7k-weight
/// digits CNN: ~800 of ~3,700 bytes), so: no node names (optional in ONNX), one- or two-letter names
/// for every tensor but the graph's inputs and outputs, and no attribute a runtime can infer (a
/// Conv's `kernel_shape` is the weight's shape) or that states a default.
fn compact(graph: &mut GraphProto) {
    let keep: Vec<String> = graph
        .input
        .iter()
        .chain(&graph.output)
        .map(|v| v.name.clone())
        .collect();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut counter = 0;
    let mut short = |name: &mut String| {
        if name.is_empty() || keep.contains(name) {
            return;
        }
        if let Some(s) = renamed.get(name.as_str()) {
            *name = s.clone();
            return;
        }
        // a graph's own input and output names (`x`, `numeric`) are never handed out
        let next = loop {
            let s = short_name(counter);
            counter += 1;
            if !keep.contains(&s) {
                break s;
            }
        };
        renamed.insert(std::mem::take(name), next.clone());
        *name = next;
    };
    for t in graph.initializer.iter_mut() {
        short(&mut t.name);
    }
    for n in graph.node.iter_mut() {
        n.name.clear();
        n.input.iter_mut().for_each(&mut short);
        n.output.iter_mut().for_each(&mut short);
        let op = n.op_type.clone();
        n.attribute.retain(|a| {
            let all = |v: i64| !a.ints.is_empty() && a.ints.iter().all(|&i| i == v);
            let inferable = match (op.as_str(), a.name.as_str()) {
                ("Conv", "kernel_shape") => true,
                ("Conv", "strides" | "dilations") | ("MaxPool" | "AveragePool", "strides") => {
                    all(1)
                }
                ("Conv" | "MaxPool" | "AveragePool", "pads") => all(0),
                ("Conv", "group") | ("Flatten", "axis") => a.i == 1,
                _ => false,
            };
            !inferable
        });
    }
    for v in graph.value_info.iter_mut() {
        short(&mut v.name);
    }
}

/// `a`…`z`, `A`…`Z`, then two letters (the caller skips the graph's own input and output names).
fn short_name(i: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let n = LETTERS.len();
    let mut out = vec![LETTERS[i % n]];
    let mut rest = i / n;
    while rest > 0 {
        out.push(LETTERS[(rest - 1) % n]);
        rest = (rest - 1) / n;
    }
    String::from_utf8(out).expect("ascii")
}

/// Quantize to a file, written atomically.
pub fn quantize_onnx_to(
    model: &Model,
    calibration: Option<Input>,
    path: impl AsRef<std::path::Path>,
    opts: &QuantizeOptions,
) -> Result<()> {
    crate::model::write_atomic(path.as_ref(), &quantize_onnx(model, calibration, opts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn weights_round_trip_within_half_a_step() {
        let w =
            Tensor::from_shape_vec(IxDyn(&[2, 3]), vec![0.5, -1.0, 0.25, 0.0, 0.0, 0.0]).unwrap();
        let (q, s) = quantize_weight(&w, true);
        assert_eq!(q[1], -127);
        assert_eq!(&q[3..], &[0, 0, 0]);
        assert_eq!(s[1], 1.0, "an all-zero channel keeps a usable scale");
        for (v, q) in w.iter().take(3).zip(&q) {
            assert!((v - *q as f32 * s[0]).abs() <= s[0] / 2.0 + 1e-7);
        }
    }

    #[test]
    fn short_names_are_unique() {
        let names: std::collections::HashSet<String> = (0..3000).map(short_name).collect();
        assert_eq!(names.len(), 3000);
        assert_eq!(
            (short_name(0), short_name(51), short_name(52)),
            ("a".into(), "Z".into(), "aa".into())
        );
        assert!(names.iter().all(|n| n.len() <= 3));
    }

    #[test]
    fn activation_range_keeps_zero_exact() {
        let (s, z) = activation_qparams(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 64);
        assert_eq!(activation_qparams(0.0, 0.0), (1.0, 0));
    }
}
