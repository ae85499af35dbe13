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

use crate::autograd::{GeluApprox, Tape, Tensor};
use crate::model::{Model, VERSION};
use crate::nn::{LayerSpec, Module, Param};
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
        }
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
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

    fn param(&mut self, name: String, p: &Param) -> String {
        self.initializers.push(f32_tensor(&name, &p.value));
        name
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
            let mut ins = vec![x.to_string(), w];
            if *bias {
                ins.push(g.param(format!("{prefix}bias"), t("bias")?));
            }
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            g.node(&scope, "Gemm", &ins, vec![attr_int("transB", 1)])
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
            let ids = if x == "__int_input__" {
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
    let pads: Vec<usize> = padding.iter().chain(padding.iter()).copied().collect();
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    Ok(g.node(
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
    ))
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

/// The model as ONNX bytes.
pub fn export_onnx(model: &Model, opts: &ExportOptions) -> Result<Vec<u8>> {
    if opts.opset < 17 {
        value_err!(
            "export: opset must be 17 or later (LayerNormalization needs 17), got {}",
            opts.opset
        );
    }
    let Some(sample) = model.input_shape.clone() else {
        value_err!("export: the model does not know its input shape yet: fit or predict once, or give input_shape");
    };
    let mut flat = Vec::new();
    flatten_specs(&model.net.specs(), "", &mut flat);
    let tensors = model.net.tensors();
    // A dry run on zeros (batch 1, eval mode) gives every layer's input shape.
    let mut shape = vec![1];
    shape.extend(&sample);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        counter: 0,
    };
    let int_input = matches!(flat.first(), Some((_, LayerSpec::Embedding { .. })));
    let mut x = if int_input {
        "__int_input__".to_string()
    } else {
        opts.input_name.clone()
    };
    for (prefix, spec) in &flat {
        let own: Vec<(String, &Param)> = tensors
            .iter()
            .filter_map(|(n, p)| {
                n.strip_prefix(prefix.as_str())
                    .map(|rest| (rest.to_string(), *p))
            })
            .collect();
        x = emit(&mut g, spec, &own, prefix, &x, &shape, opts.opset)?;
        let mut t = Tape::inference();
        let v = t.constant(Tensor::zeros(IxDyn(&shape)));
        let out = spec.build(&mut rng)?.forward(&mut t, v)?;
        shape = t.shape(out).to_vec();
    }
    // Name the graph's ends as asked.
    let rename = |s: &mut String, from: &str, to: &str| {
        if s == from {
            *s = to.to_string();
        }
    };
    if x == opts.input_name || x == "__int_input__" {
        x = g.node("/output", "Identity", &[&x], vec![]);
    }
    for n in g.nodes.iter_mut() {
        n.input
            .iter_mut()
            .for_each(|i| rename(i, "__int_input__", &opts.input_name));
        n.output
            .iter_mut()
            .for_each(|o| rename(o, &x, &opts.output_name));
        n.input
            .iter_mut()
            .for_each(|i| rename(i, &x, &opts.output_name));
    }
    let batch = if opts.dynamic_batch { None } else { Some(1) };
    let in_dims: Vec<Option<usize>> = std::iter::once(batch)
        .chain(sample.iter().map(|&d| Some(d)))
        .collect();
    let out_dims: Vec<Option<usize>> = std::iter::once(batch)
        .chain(shape[1..].iter().map(|&d| Some(d)))
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
            input: vec![value_info(
                &opts.input_name,
                if int_input {
                    DataType::Int64
                } else {
                    DataType::Float
                },
                &in_dims,
            )],
            output: vec![value_info(&opts.output_name, DataType::Float, &out_dims)],
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
