//! ONNX export: every layer of the catalogue as standard ONNX operators (opset 17 and later), written
//! with prost-generated ONNX types (src/onnx_pb.rs). The batch dimension is symbolic.

use crate::onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::dimension::Value as Dim, tensor_shape_proto::Dimension, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use ndarray::IxDyn;
use prost::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(crate) mod attention;
mod rnn;

use crate::autograd::{GeluApprox, Tape, Tensor};
use crate::graph::{Op as GraphOp, Reduction, ScalarOp, Value};
use crate::model::{Model, VERSION};
use crate::nn::{LayerSpec, Param};
use crate::{value_err, KilnError, Result};

/// Options of [`export_onnx`].
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Class names stored as `kiln.labels` (JSON list) in the metadata.
    pub labels: Option<Vec<String>>,
    /// `kiln.input_scale`: the factor the training input was multiplied by (raw · scale + offset).
    pub input_scale: Option<f32>,
    /// `kiln.input_offset`: the shift added after scaling.
    pub input_offset: Option<f32>,
    /// ONNX opset, at least 17. From 20 on, GELU is exported as the `Gelu` operator.
    pub opset: i64,
    /// Keep the batch dimension symbolic (`"batch"`); otherwise fix it to 1.
    pub dynamic_batch: bool,
    /// Name of the graph input.
    pub input_name: String,
    /// Name of the graph output.
    pub output_name: String,
    /// More `metadata_props` entries, written after kiln's own (e.g. `kiln.drift`, the training
    /// statistics of `crate::drift::Reference`).
    pub extra_metadata: Vec<(String, String)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            labels: None,
            input_scale: None,
            input_offset: None,
            opset: 17,
            dynamic_batch: true,
            input_name: "input".into(),
            output_name: "output".into(),
            extra_metadata: Vec::new(),
        }
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
    /// Values that are int64 in the ONNX graph (graph inputs of token ids).
    int_values: std::collections::HashSet<String>,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}
fn attr_ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}
fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}
fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: t.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

impl Graph {
    /// Append a node; returns its (single) output name.
    fn node(
        &mut self,
        scope: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.counter += 1;
        let output = format!("{scope}/{op}_{}", self.counter);
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attrs,
            ..Default::default()
        });
        output
    }

    fn constant_f32(&mut self, name: String, v: f32) -> String {
        self.initializers
            .push(f32_tensor(&name, &Tensor::from_elem(IxDyn(&[]), v)));
        name
    }

    /// A parameter as an initializer, once even when several nodes read it (a tied weight).
    fn param(&mut self, name: String, p: &Param) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.initializers.push(f32_tensor(&name, p.value()));
        }
        name
    }

    fn constant_i64(&mut self, name: String, values: &[i64]) -> String {
        self.initializers.push(i64_tensor(&name, values));
        name
    }

    /// `x` as float32: int64 inputs are cast once, where an op other than a lookup reads them.
    fn float(&mut self, x: &str) -> String {
        if !self.int_values.contains(x) {
            return x.to_string();
        }
        let cast = format!("{x}/as_float");
        if !self.nodes.iter().any(|n| n.output.first() == Some(&cast)) {
            self.nodes.push(NodeProto {
                name: cast.clone(),
                op_type: "Cast".into(),
                input: vec![x.into()],
                output: vec![cast.clone()],
                attribute: vec![attr_int("to", DataType::Float as i64)],
                ..Default::default()
            });
        }
        cast
    }
}

fn gelu_nodes(g: &mut Graph, scope: &str, x: &str, approx: GeluApprox, opset: i64) -> String {
    if opset >= 20 {
        let a = if approx == GeluApprox::Tanh {
            "tanh"
        } else {
            "none"
        };
        return g.node(scope, "Gelu", &[x], vec![attr_str("approximate", a)]);
    }
    let half = g.constant_f32(format!("{scope}/half"), 0.5);
    let one = g.constant_f32(format!("{scope}/one"), 1.0);
    let inner = match approx {
        GeluApprox::None => {
            // 0.5·x·(1 + erf(x/√2))
            let s = g.constant_f32(format!("{scope}/sqrt2"), std::f32::consts::SQRT_2);
            let d = g.node(scope, "Div", &[x, &s], vec![]);
            g.node(scope, "Erf", &[&d], vec![])
        }
        GeluApprox::Tanh => {
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            let c = g.constant_f32(format!("{scope}/c"), 0.044715);
            let k = g.constant_f32(format!("{scope}/k"), 0.797_884_6);
            let x2 = g.node(scope, "Mul", &[x, x], vec![]);
            let x3 = g.node(scope, "Mul", &[&x2, x], vec![]);
            let cx3 = g.node(scope, "Mul", &[&x3, &c], vec![]);
            let sum = g.node(scope, "Add", &[x, &cx3], vec![]);
            let u = g.node(scope, "Mul", &[&sum, &k], vec![]);
            g.node(scope, "Tanh", &[&u], vec![])
        }
    };
    let p = g.node(scope, "Add", &[&inner, &one], vec![]);
    let hx = g.node(scope, "Mul", &[x, &half], vec![]);
    g.node(scope, "Mul", &[&hx, &p], vec![])
}

/// Emit one layer. `input_shape` is the layer's input shape (batch first) from a dry run.
fn emit(
    g: &mut Graph,
    spec: &LayerSpec,
    tensors: &[(String, &Param)],
    prefix: &str,
    x: &str,
    input_shape: &[usize],
    opset: i64,
) -> Result<String> {
    let scope = format!("/{}", prefix.trim_end_matches('.'));
    let t = |name: &str| -> Result<&Param> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| KilnError::onnx(format!("export: layer {prefix} has no tensor {name}")))
    };
    use LayerSpec as S;
    Ok(match spec {
        S::Linear { bias, .. } => {
            let w = g.param(format!("{prefix}weight"), t("weight")?);
            let b = if *bias {
                Some(g.param(format!("{prefix}bias"), t("bias")?))
            } else {
                None
            };
            linear_nodes(g, &scope, x, &w, b.as_deref(), input_shape.len())
        }
        S::Conv1d {
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } => conv(
            g,
            &scope,
            prefix,
            x,
            &t,
            *bias,
            &[*kernel_size],
            &[*stride],
            &[*padding],
            &[*dilation],
            *groups,
        )?,
        S::Conv2d {
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } => conv(
            g,
            &scope,
            prefix,
            x,
            &t,
            *bias,
            kernel_size,
            stride,
            padding,
            dilation,
            *groups,
        )?,
        S::MaxPool2d {
            kernel_size,
            stride,
            padding,
        }
        | S::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => {
            let is_max = matches!(spec, S::MaxPool2d { .. });
            let pads = [padding[0], padding[1], padding[0], padding[1]];
            let mut attrs = vec![
                attr_ints("kernel_shape", kernel_size),
                attr_ints("strides", stride),
                attr_ints("pads", &pads),
            ];
            if !is_max {
                attrs.push(attr_int("count_include_pad", 1));
            }
            g.node(
                &scope,
                if is_max { "MaxPool" } else { "AveragePool" },
                &[x],
                attrs,
            )
        }
        S::Flatten { start_dim, end_dim } => {
            let out = crate::nn::Flatten {
                start_dim: *start_dim,
                end_dim: *end_dim,
            }
            .output_shape(input_shape)?;
            if out.len() == 2 && *start_dim == 1 {
                g.node(&scope, "Flatten", &[x], vec![attr_int("axis", 1)])
            } else {
                // keep the batch dimension symbolic: 0 copies it, the rest is fixed
                let mut shape: Vec<i64> = out.iter().map(|&d| d as i64).collect();
                shape[0] = 0;
                let name = format!("{prefix}shape");
                g.initializers.push(i64_tensor(&name, &shape));
                g.node(&scope, "Reshape", &[x, &name], vec![])
            }
        }
        S::ReLU => g.node(&scope, "Relu", &[x], vec![]),
        S::LeakyReLU { negative_slope } => g.node(
            &scope,
            "LeakyRelu",
            &[x],
            vec![attr_float("alpha", *negative_slope)],
        ),
        S::GELU { approximate } => gelu_nodes(g, &scope, x, *approximate, opset),
        S::Sigmoid => g.node(&scope, "Sigmoid", &[x], vec![]),
        S::Tanh => g.node(&scope, "Tanh", &[x], vec![]),
        S::Softmax { dim } => g.node(&scope, "Softmax", &[x], vec![attr_int("axis", *dim as i64)]),
        S::Dropout { .. } => x.to_string(),
        S::BatchNorm1d { eps, .. } | S::BatchNorm2d { eps, .. } => {
            let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .map(|n| Ok(g.param(format!("{prefix}{n}"), t(n)?)))
                .collect::<Result<_>>()?;
            g.node(
                &scope,
                "BatchNormalization",
                &[x, &names[0], &names[1], &names[2], &names[3]],
                vec![attr_float("epsilon", *eps)],
            )
        }
        S::LayerNorm {
            normalized_shape,
            eps,
        } => {
            let w = g.param(format!("{prefix}weight"), t("weight")?);
            let b = g.param(format!("{prefix}bias"), t("bias")?);
            g.node(
                &scope,
                "LayerNormalization",
                &[x, &w, &b],
                vec![
                    attr_int("axis", -(normalized_shape.len() as i64)),
                    attr_float("epsilon", *eps),
                ],
            )
        }
        S::Embedding { .. } => {
            let w = g.param(format!("{prefix}weight"), t("weight")?);
            // ids arrive as int64 when this is the first layer, otherwise as floats to cast
            let ids = if g.int_values.contains(x) {
                x.to_string()
            } else {
                g.node(
                    &scope,
                    "Cast",
                    &[x],
                    vec![attr_int("to", DataType::Int64 as i64)],
                )
            };
            g.node(&scope, "Gather", &[&w, &ids], vec![attr_int("axis", 0)])
        }
        S::Sequential { .. } => value_err!("export: nested Sequential is flattened before export"),
        S::GRU { .. } | S::LSTM { .. } => {
            value_err!("export: a recurrent layer is emitted with its states (emit_rnn)")
        }
        S::MultiheadAttention { .. } => {
            value_err!("export: MultiheadAttention is emitted at its calls (emit_attention)")
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn conv<'a>(
    g: &mut Graph,
    scope: &str,
    prefix: &str,
    x: &str,
    t: &dyn Fn(&str) -> Result<&'a Param>,
    bias: bool,
    kernel: &[usize],
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    groups: usize,
) -> Result<String> {
    let w = g.param(format!("{prefix}weight"), t("weight")?);
    let mut ins = vec![x.to_string(), w];
    if bias {
        ins.push(g.param(format!("{prefix}bias"), t("bias")?));
    }
    Ok(conv_node(
        g, scope, &ins, kernel, stride, padding, dilation, groups,
    ))
}

/// One `Conv` node (1-D or 2-D: one entry per spatial axis; symmetric pads), for a layer's
/// convolution and the graph's `conv1d`/`conv2d` ops alike.
#[allow(clippy::too_many_arguments)]
fn conv_node(
    g: &mut Graph,
    scope: &str,
    ins: &[String],
    kernel: &[usize],
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    groups: usize,
) -> String {
    let pads: Vec<usize> = padding.iter().chain(padding.iter()).copied().collect();
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    g.node(
        scope,
        "Conv",
        &ins,
        vec![
            attr_ints("kernel_shape", kernel),
            attr_ints("strides", stride),
            attr_ints("pads", &pads),
            attr_ints("dilations", dilation),
            attr_int("group", groups as i64),
        ],
    )
}

/// `name` as int64 indices: as it is when it already is int64, through a `Cast` otherwise (the
/// graph carries ids as whole numbers in float32).
fn int64_ids(g: &mut Graph, scope: &str, name: &str) -> String {
    if g.int_values.contains(name) {
        name.to_string()
    } else {
        g.node(
            scope,
            "Cast",
            &[name],
            vec![attr_int("to", DataType::Int64 as i64)],
        )
    }
}

fn value_info(name: &str, elem: DataType, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(d.map_or_else(
                || Dim::DimParam("batch".into()),
                |v| Dim::DimValue(v as i64),
            )),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `x·Wᵀ + b`: Gemm for 2-D inputs, MatMul (and Add) for batches of sequences.
fn linear_nodes(
    g: &mut Graph,
    scope: &str,
    x: &str,
    w: &str,
    b: Option<&str>,
    rank: usize,
) -> String {
    if rank == 2 {
        let mut ins = vec![x, w];
        ins.extend(b);
        return g.node(scope, "Gemm", &ins, vec![attr_int("transB", 1)]);
    }
    let wt = g.node(scope, "Transpose", &[w], vec![attr_ints("perm", &[1, 0])]);
    let y = g.node(scope, "MatMul", &[x, &wt], vec![]);
    match b {
        Some(b) => g.node(scope, "Add", &[&y, b], vec![]),
        None => y,
    }
}

/// Flatten nested Sequentials into (state-dict prefix, spec) pairs.
fn flatten_specs(specs: &[LayerSpec], prefix: &str, out: &mut Vec<(String, LayerSpec)>) {
    for (i, s) in specs.iter().enumerate() {
        match s {
            LayerSpec::Sequential { layers } => {
                flatten_specs(layers, &format!("{prefix}{i}."), out)
            }
            other => out.push((format!("{prefix}{i}."), other.clone())),
        }
    }
}

/// The graph op as the layer that computes the same thing, where there is one (so both export alike).
fn as_layer(op: &GraphOp) -> Option<LayerSpec> {
    Some(match op {
        GraphOp::Relu => LayerSpec::ReLU,
        GraphOp::LeakyRelu { negative_slope } => LayerSpec::LeakyReLU {
            negative_slope: *negative_slope,
        },
        GraphOp::Gelu { approximate } => LayerSpec::GELU {
            approximate: *approximate,
        },
        GraphOp::Sigmoid => LayerSpec::Sigmoid,
        GraphOp::Tanh => LayerSpec::Tanh,
        GraphOp::Dropout { p } => LayerSpec::Dropout { p: *p },
        GraphOp::Flatten { start_dim, end_dim } if *start_dim > 0 => LayerSpec::Flatten {
            start_dim: *start_dim,
            end_dim: *end_dim,
        },
        GraphOp::MaxPool2d {
            kernel_size,
            stride,
            padding,
        } => LayerSpec::MaxPool2d {
            kernel_size: *kernel_size,
            stride: *stride,
            padding: *padding,
        },
        GraphOp::AvgPool2d {
            kernel_size,
            stride,
            padding,
        } => LayerSpec::AvgPool2d {
            kernel_size: *kernel_size,
            stride: *stride,
            padding: *padding,
        },
        _ => return None,
    })
}

fn norm_axis(dim: isize, rank: usize) -> Result<i64> {
    Ok(crate::graph::axis(dim, rank, "export")? as i64)
}

/// Emit one graph node (other than a module call); `shapes` are its inputs' shapes and, last, its
/// own output's shape, from the dry run (batch 1).
fn emit_op(
    g: &mut Graph,
    op: &GraphOp,
    k: usize,
    xs: &[String],
    shapes: &[Vec<usize>],
    model: &Model,
    opset: i64,
) -> Result<String> {
    let out_shape = shapes
        .last()
        .expect("the output's shape is last")
        .as_slice();
    let scope = format!("/node{k}");
    let f = |g: &mut Graph, i: usize| g.float(&xs[i]);
    let reduce_axes = |g: &mut Graph, name: &str, axes: &[i64], op: &str, x: &str, keep: bool| {
        let keep = attr_int("keepdims", keep as i64);
        if opset >= 18 || op == "ReduceSum" {
            let a = g.constant_i64(format!("{scope}/{name}"), axes);
            g.node(&scope, op, &[x, &a], vec![keep])
        } else {
            g.node(&scope, op, &[x], vec![attr_ints_i64("axes", axes), keep])
        }
    };
    Ok(match op {
        GraphOp::Call { .. } | GraphOp::Item { .. } | GraphOp::MultiheadAttention(_) => {
            unreachable!("module calls and their tuples are emitted by export_onnx")
        }
        GraphOp::Param { name } => {
            let (_, p) = model
                .net
                .tensors()
                .into_iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| {
                    KilnError::onnx(format!("export: the model has no tensor {name}"))
                })?;
            g.param(name.clone(), p)
        }
        GraphOp::Add | GraphOp::Sub | GraphOp::Mul | GraphOp::Div | GraphOp::MatMul => {
            let name = match op {
                GraphOp::Add => "Add",
                GraphOp::Sub => "Sub",
                GraphOp::Mul => "Mul",
                GraphOp::Div => "Div",
                _ => "MatMul",
            };
            let (a, b) = (f(g, 0), f(g, 1));
            g.node(&scope, name, &[&a, &b], vec![])
        }
        GraphOp::Neg => {
            let x = f(g, 0);
            g.node(&scope, "Neg", &[&x], vec![])
        }
        GraphOp::Scalar { kind, value } => {
            let x = f(g, 0);
            let c = g.constant_f32(format!("{scope}/c"), *value);
            let (name, swap) = match kind {
                ScalarOp::Add => ("Add", false),
                ScalarOp::Sub => ("Sub", false),
                ScalarOp::Rsub => ("Sub", true),
                ScalarOp::Mul => ("Mul", false),
                ScalarOp::Div => ("Div", false),
                ScalarOp::Rdiv => ("Div", true),
                ScalarOp::Pow => ("Pow", false),
            };
            if swap {
                g.node(&scope, name, &[&c, &x], vec![])
            } else {
                g.node(&scope, name, &[&x, &c], vec![])
            }
        }
        GraphOp::Exp | GraphOp::Log | GraphOp::Sqrt | GraphOp::Erf => {
            let x = f(g, 0);
            let name = match op {
                GraphOp::Exp => "Exp",
                GraphOp::Log => "Log",
                GraphOp::Erf => "Erf",
                _ => "Sqrt",
            };
            g.node(&scope, name, &[&x], vec![])
        }
        GraphOp::FakeQuant {
            scale,
            zero_point,
            qmin,
            ..
        } => {
            // uint8 when the grid starts at 0 (activations), int8 otherwise
            let x = f(g, 0);
            let s = g.constant_f32(format!("{scope}/scale"), *scale);
            let z = format!("{scope}/zero_point");
            let (dtype, byte) = if *qmin >= 0.0 {
                (DataType::Uint8, *zero_point as u8)
            } else {
                (DataType::Int8, (*zero_point as i8) as u8)
            };
            g.initializers.push(TensorProto {
                name: z.clone(),
                data_type: dtype as i32,
                raw_data: vec![byte],
                ..Default::default()
            });
            let q = g.node(&scope, "QuantizeLinear", &[&x, &s, &z], vec![]);
            g.node(&scope, "DequantizeLinear", &[&q, &s, &z], vec![])
        }
        GraphOp::Softmax { dim } | GraphOp::LogSoftmax { dim } => {
            let x = f(g, 0);
            let name = if matches!(op, GraphOp::Softmax { .. }) {
                "Softmax"
            } else {
                "LogSoftmax"
            };
            let axis = norm_axis(*dim, shapes[0].len())?;
            g.node(&scope, name, &[&x], vec![attr_int("axis", axis)])
        }
        GraphOp::Reshape { .. } | GraphOp::Flatten { .. } => {
            // the dry run's shape, with the batch kept free: 0 copies the input's first axis
            let x = f(g, 0);
            let keeps_batch = out_shape.first() == shapes[0].first()
                && !matches!(op, GraphOp::Flatten { start_dim: 0, .. });
            let batch_first = match op {
                GraphOp::Reshape { shape } => {
                    matches!(shape.first(), Some(crate::graph::Dim::Batch))
                }
                _ => keeps_batch,
            };
            let mut target: Vec<i64> = out_shape.iter().map(|&d| d as i64).collect();
            if batch_first {
                target[0] = 0;
            } else if !target.is_empty() {
                // the batch is merged into the first axis (or moved): let ONNX infer it
                target[0] = -1;
            }
            let t = g.constant_i64(format!("{scope}/shape"), &target);
            g.node(&scope, "Reshape", &[&x, &t], vec![])
        }
        GraphOp::Permute { dims } => {
            let x = f(g, 0);
            let r = shapes[0].len();
            let perm = dims
                .iter()
                .map(|&d| norm_axis(d, r))
                .collect::<Result<Vec<_>>>()?;
            g.node(
                &scope,
                "Transpose",
                &[&x],
                vec![attr_ints_i64("perm", &perm)],
            )
        }
        GraphOp::Reduce {
            kind,
            dims,
            keepdim,
        } => {
            let x = f(g, 0);
            let r = shapes[0].len();
            let mut axes = dims
                .iter()
                .map(|&d| norm_axis(d, r))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            axes.dedup();
            if *kind == Reduction::Mean && r == 4 && axes == [2, 3] {
                // global average pooling: the operator every engine has a kernel for
                let pooled = g.node(&scope, "GlobalAveragePool", &[&x], vec![]);
                return Ok(if *keepdim {
                    pooled
                } else {
                    g.node(&scope, "Flatten", &[&pooled], vec![attr_int("axis", 1)])
                });
            }
            let name = match kind {
                Reduction::Mean => "ReduceMean",
                Reduction::Sum => "ReduceSum",
                Reduction::Max => "ReduceMax",
            };
            reduce_axes(g, "axes", &axes, name, &x, *keepdim)
        }
        GraphOp::Slice { dim, start, end } => {
            let x = f(g, 0);
            let axis = norm_axis(*dim, shapes[0].len())?;
            let s = g.constant_i64(format!("{scope}/starts"), &[*start as i64]);
            let e = g.constant_i64(format!("{scope}/ends"), &[*end as i64]);
            let a = g.constant_i64(format!("{scope}/axes"), &[axis]);
            g.node(&scope, "Slice", &[&x, &s, &e, &a], vec![])
        }
        GraphOp::Concat { dim } => {
            let ins: Vec<String> = (0..xs.len()).map(|i| f(g, i)).collect();
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            let axis = norm_axis(*dim, shapes[0].len())?;
            g.node(&scope, "Concat", &ins, vec![attr_int("axis", axis)])
        }
        GraphOp::Linear => {
            let ins: Vec<String> = (0..xs.len()).map(|i| f(g, i)).collect();
            linear_nodes(
                g,
                &scope,
                &ins[0],
                &ins[1],
                ins.get(2).map(String::as_str),
                shapes[0].len(),
            )
        }
        GraphOp::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let ins: Vec<String> = (0..xs.len()).map(|i| f(g, i)).collect();
            let kernel = &shapes[1][2..];
            conv_node(g, &scope, &ins, kernel, stride, padding, dilation, *groups)
        }
        GraphOp::LayerNorm { eps } => {
            let ins: Vec<String> = (0..xs.len()).map(|i| f(g, i)).collect();
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            g.node(
                &scope,
                "LayerNormalization",
                &ins,
                vec![
                    attr_int("axis", -(shapes[1].len() as i64)),
                    attr_float("epsilon", *eps),
                ],
            )
        }
        GraphOp::Embedding => {
            let w = f(g, 1);
            let ids = int64_ids(g, &scope, &xs[0]);
            g.node(&scope, "Gather", &[&w, &ids], vec![attr_int("axis", 0)])
        }
        GraphOp::Gather { dim } => {
            let x = f(g, 0);
            let ids = int64_ids(g, &scope, &xs[1]);
            let axis = norm_axis(*dim, shapes[0].len())?;
            g.node(&scope, "Gather", &[&x, &ids], vec![attr_int("axis", axis)])
        }
        GraphOp::Conv1d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let ins: Vec<String> = (0..xs.len()).map(|i| f(g, i)).collect();
            let kernel = &shapes[1][2..];
            conv_node(
                g,
                &scope,
                &ins,
                kernel,
                &[*stride],
                &[*padding],
                &[*dilation],
                *groups,
            )
        }
        other => {
            let spec = as_layer(other)
                .ok_or_else(|| KilnError::onnx(format!("export: no ONNX form for {other:?}")))?;
            let x = f(g, 0);
            emit(g, &spec, &[], &format!("node{k}."), &x, &shapes[0], opset)?
        }
    })
}

fn attr_ints_i64(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// The model as ONNX bytes: one ONNX input per graph input (named as in `forward`), one output per
/// graph output (`output`, or `output_0`, `output_1`, … for several).
pub fn export_onnx(model: &Model, opts: &ExportOptions) -> Result<Vec<u8>> {
    if opts.opset < 17 {
        value_err!(
            "export: opset must be 17 or later (LayerNormalization needs 17), got {}",
            opts.opset
        );
    }
    let graph = model.net.require_graph()?.clone();
    let mut inputs = graph.inputs.clone();
    if inputs.len() == 1 && model.net.layers().is_some() {
        inputs[0].name = opts.input_name.clone();
    }
    for i in &inputs {
        if i.shape.is_none() {
            if inputs.len() == 1 {
                value_err!("export: the model does not know its input shape yet: fit or predict once, or give input_shape");
            }
            value_err!("export: the model does not know the shape of input {:?} yet: fit or predict once, or give input_shape", i.name);
        }
    }
    let tensors = model.net.tensors();
    let mut attention_marks = Vec::new();
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        counter: 0,
        int_values: inputs
            .iter()
            .filter(|i| i.dtype == "int64")
            .map(|i| i.name.clone())
            .collect(),
    };
    // A dry run on zeros (batch 1, eval mode) gives every value's shape.
    let mut scratch = Model::from_architecture(&model.architecture(), 0)?;
    let mut t = Tape::inference();
    let mut names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    let mut vars = Vec::new();
    for i in &inputs {
        let mut shape = vec![1];
        shape.extend(i.shape.as_ref().expect("checked above"));
        vars.push(Value::One(t.constant(Tensor::zeros(IxDyn(&shape)))));
        shapes.push(shape);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // the ONNX names of each tuple value's elements (a recurrent layer's output and states)
    let mut tuple_names: std::collections::HashMap<usize, Vec<String>> = Default::default();
    for (k, node) in graph.nodes.iter().enumerate() {
        let xs: Vec<Value> = node.inputs.iter().map(|&i| vars[i].clone()).collect();
        let v = crate::graph::run_node(&mut scratch.net, &mut t, &node.op, &xs)?;
        let out_shape = match &v {
            Value::One(v) => t.shape(*v).to_vec(),
            Value::Tuple(_) => Vec::new(),
        };
        let in_names: Vec<String> = node.inputs.iter().map(|&i| names[i].clone()).collect();
        let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&i| shapes[i].clone()).collect();
        let name = match &node.op {
            GraphOp::Item { index } => tuple_names
                .get(&node.inputs[0])
                .and_then(|names| names.get(*index))
                .cloned()
                .ok_or_else(|| {
                    KilnError::onnx(format!(
                        "export: node {k} reads item {index} of a value that has none"
                    ))
                })?,
            GraphOp::Call { module } => {
                let spec = model
                    .net
                    .modules()
                    .find(|(n, _)| n == module)
                    .map(|(_, m)| m.spec())
                    .ok_or_else(|| KilnError::onnx(format!("export: no module {module}")))?;
                if let Some(cfg) = crate::nn::rnn_config(&spec) {
                    let prefix = format!("{module}.");
                    let own: Vec<(String, &Param)> = tensors
                        .iter()
                        .filter_map(|(n, p)| {
                            n.strip_prefix(prefix.as_str())
                                .map(|rest| (rest.to_string(), *p))
                        })
                        .collect();
                    let outs = rnn::emit_rnn(&mut g, &cfg, &own, &prefix, &in_names)?;
                    let first = outs[0].clone();
                    tuple_names.insert(inputs.len() + k, outs);
                    names.push(first);
                    shapes.push(out_shape);
                    vars.push(v);
                    continue;
                }
                let mut flat = Vec::new();
                match &spec {
                    LayerSpec::Sequential { layers } => {
                        flatten_specs(layers, &format!("{module}."), &mut flat)
                    }
                    other => flat.push((format!("{module}."), other.clone())),
                }
                let mut x = in_names[0].clone();
                let mut shape = in_shapes[0].clone();
                for (prefix, spec) in &flat {
                    let own: Vec<(String, &Param)> = tensors
                        .iter()
                        .filter_map(|(n, p)| {
                            n.strip_prefix(prefix.as_str())
                                .map(|rest| (rest.to_string(), *p))
                        })
                        .collect();
                    if !matches!(spec, LayerSpec::Embedding { .. }) {
                        x = g.float(&x);
                    }
                    x = emit(&mut g, spec, &own, prefix, &x, &shape, opts.opset)?;
                    let mut t = Tape::inference();
                    let v = t.constant(Tensor::zeros(IxDyn(&shape)));
                    let out = spec.build(&mut rng)?.forward(&mut t, v)?;
                    shape = t.shape(out).to_vec();
                }
                x
            }
            GraphOp::MultiheadAttention(att) => {
                let (first, counter) = (g.nodes.len(), g.counter);
                let (o, w) =
                    attention::emit_attention(&mut g, att, k, &in_names, &in_shapes, opts.opset)?;
                match w {
                    Some(w) => {
                        tuple_names.insert(inputs.len() + k, vec![o.clone(), w]);
                    }
                    None => attention_marks.push(attention::Mark {
                        op: node.op.clone(),
                        node: k,
                        counter,
                        nodes: [first, g.nodes.len()],
                        inputs: in_names.clone(),
                        output: o.clone(),
                    }),
                }
                o
            }
            op => {
                let mut s = in_shapes.clone();
                s.push(out_shape.clone());
                emit_op(&mut g, op, k, &in_names, &s, model, opts.opset)?
            }
        };
        names.push(name);
        shapes.push(out_shape);
        vars.push(v);
    }
    // Name the graph's ends: rename the producing node's output, or add an Identity where the
    // value is an input, an initializer, or returned twice.
    let out_names: Vec<String> = if graph.outputs.len() == 1 {
        vec![opts.output_name.clone()]
    } else {
        (0..graph.outputs.len())
            .map(|i| format!("{}_{i}", opts.output_name))
            .collect()
    };
    for (i, (&o, out_name)) in graph.outputs.iter().zip(&out_names).enumerate() {
        let value = names[o].clone();
        let produced = g
            .nodes
            .iter()
            .position(|n| n.output.first() == Some(&value));
        let unique = graph.outputs.iter().filter(|&&p| names[p] == value).count() == 1
            && !g.int_values.contains(&value);
        match produced {
            Some(p) if unique && !inputs.iter().any(|inp| inp.name == value) => {
                g.nodes[p].output[0] = out_name.clone();
                for n in g.nodes.iter_mut() {
                    for inp in n.input.iter_mut() {
                        if *inp == value {
                            *inp = out_name.clone();
                        }
                    }
                }
                for later in names.iter_mut().skip(o) {
                    if *later == value {
                        *later = out_name.clone();
                    }
                }
            }
            _ => {
                let v = g.float(&value);
                g.node(&format!("/output{i}"), "Identity", &[&v], vec![]);
                let last = g.nodes.len() - 1;
                g.nodes[last].output[0] = out_name.clone();
            }
        }
    }
    let batch = if opts.dynamic_batch { None } else { Some(1) };
    let dims_of = |shape: &[usize]| -> Vec<Option<usize>> {
        std::iter::once(batch)
            .chain(shape[1..].iter().map(|&d| Some(d)))
            .collect()
    };
    let onnx_inputs = inputs
        .iter()
        .zip(&shapes)
        .map(|(i, s)| {
            let elem = if i.dtype == "int64" {
                DataType::Int64
            } else {
                DataType::Float
            };
            value_info(&i.name, elem, &dims_of(s))
        })
        .collect();
    let onnx_outputs = graph
        .outputs
        .iter()
        .zip(&out_names)
        .map(|(&o, name)| value_info(name, DataType::Float, &dims_of(&shapes[o])))
        .collect();
    let mut metadata = vec![("kiln.version".to_string(), VERSION.to_string())];
    if let Some(labels) = &opts.labels {
        metadata.push((
            "kiln.labels".into(),
            serde_json::to_string(labels).expect("strings serialise"),
        ));
    }
    if let Some(s) = opts.input_scale {
        metadata.push(("kiln.input_scale".into(), s.to_string()));
    }
    if let Some(o) = opts.input_offset {
        metadata.push(("kiln.input_offset".into(), o.to_string()));
    }
    // kiln's engine imports each marked call (checked node by node) as one attention op
    if !attention_marks.is_empty() {
        metadata.push((
            attention::MARKS_KEY.into(),
            serde_json::to_string(&attention_marks).expect("marks serialise"),
        ));
    }
    metadata.extend(opts.extra_metadata.iter().cloned());
    let proto = ModelProto {
        // the IR version that goes with the opset (onnx's VERSION_TABLE)
        ir_version: match opts.opset {
            ..=18 => 8,
            19..=20 => 9,
            _ => 10,
        },
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "kiln".into(),
        producer_version: VERSION.into(),
        graph: Some(GraphProto {
            name: "kiln".into(),
            node: g.nodes,
            initializer: g.initializers,
            input: onnx_inputs,
            output: onnx_outputs,
            ..Default::default()
        }),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    };
    Ok(proto.encode_to_vec())
}

/// Export to a file, written atomically.
pub fn export_onnx_to(
    model: &Model,
    path: impl AsRef<std::path::Path>,
    opts: &ExportOptions,
) -> Result<()> {
    crate::model::write_atomic(path.as_ref(), &export_onnx(model, opts)?)
}
