//! Reading an ONNX node into an [`Op`]: its attributes, with ONNX's defaults, and the reason for
//! declining any value kiln's engine cannot honour exactly — asymmetric pads, `auto_pad`,
//! `ceil_mode`, a second output — so such graphs go to tract.

use ndarray::{ArrayD, IxDyn};

use super::ops::{Binary, Op, Unary};
use super::shape::{Reduce, SliceAttrs};
use super::{tensor_value, Value};
use crate::autograd::GeluApprox;
use crate::onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto,
};

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}
fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn usizes(
    n: &NodeProto,
    name: &str,
    len: usize,
    default: usize,
) -> std::result::Result<Vec<usize>, String> {
    match ints(n, name) {
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

impl Op {
    pub(super) fn parse(n: &NodeProto, opset: i64) -> std::result::Result<Op, String> {
        let what = || format!("operator {}", n.op_type);
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(format!("{} with {} outputs", n.op_type, n.output.len()));
        }
        let no_auto_pad = || match attr(n, "auto_pad").map(|a| a.s.as_slice()) {
            None | Some(b"NOTSET") => Ok(()),
            Some(s) => Err(format!(
                "{} auto_pad={}",
                n.op_type,
                String::from_utf8_lossy(s)
            )),
        };
        Ok(match n.op_type.as_str() {
            "Gemm" => Op::Gemm {
                alpha: float(n, "alpha", 1.0),
                beta: float(n, "beta", 1.0),
                trans_a: int(n, "transA", 0) != 0,
                trans_b: int(n, "transB", 0) != 0,
            },
            "MatMul" => Op::MatMul,
            "Conv" => {
                no_auto_pad()?;
                let k = ints(n, "kernel_shape").map(|k| k.len());
                let rank = k.unwrap_or(2);
                if !(1..=2).contains(&rank) {
                    return Err(format!("Conv over {rank} dimensions"));
                }
                let pads = usizes(n, "pads", 2 * rank, 0)?;
                let pad = symmetric(&pads)
                    .ok_or_else(|| format!("Conv with asymmetric pads {pads:?}"))?;
                Op::Conv {
                    stride: usizes(n, "strides", rank, 1)?,
                    pad,
                    dilation: usizes(n, "dilations", rank, 1)?,
                    groups: int(n, "group", 1).max(1) as usize,
                }
            }
            "MaxPool" | "AveragePool" => {
                no_auto_pad()?;
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
                Op::Pool {
                    max,
                    kernel: [kernel[0], kernel[1]],
                    stride: [stride[0], stride[1]],
                    pad: [pad[0], pad[1]],
                }
            }
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "Flatten" => Op::Flatten(int(n, "axis", 1)),
            "Reshape" => {
                if int(n, "allowzero", 0) != 0 {
                    return Err("Reshape allowzero=1".into());
                }
                Op::Reshape
            }
            "Transpose" => {
                Op::Transpose(ints(n, "perm").map(|p| p.iter().map(|&x| x as usize).collect()))
            }
            "Concat" => Op::Concat(int(n, "axis", 0)),
            "Relu" => Op::Unary(Unary::Relu),
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            "Tanh" => Op::Unary(Unary::Tanh),
            "Exp" => Op::Unary(Unary::Exp),
            "Log" => Op::Unary(Unary::Log),
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Neg" => Op::Unary(Unary::Neg),
            "Erf" => Op::Unary(Unary::Erf),
            "LeakyRelu" => Op::LeakyRelu(float(n, "alpha", 0.01)),
            "Gelu" => match attr(n, "approximate").map(|a| a.s.as_slice()) {
                None | Some(b"none") => Op::Gelu(GeluApprox::None),
                Some(b"tanh") => Op::Gelu(GeluApprox::Tanh),
                Some(s) => return Err(format!("Gelu approximate={}", String::from_utf8_lossy(s))),
            },
            "Softmax" | "LogSoftmax" => Op::Softmax {
                axis: int(n, "axis", if opset >= 13 { -1 } else { 1 }),
                log: n.op_type == "LogSoftmax",
                legacy: opset < 13,
            },
            "Add" => Op::Binary(Binary::Add),
            "Sub" => Op::Binary(Binary::Sub),
            "Mul" => Op::Binary(Binary::Mul),
            "Div" => Op::Binary(Binary::Div),
            "BatchNormalization" => {
                if int(n, "training_mode", 0) != 0 {
                    return Err("BatchNormalization in training mode".into());
                }
                Op::BatchNorm(float(n, "epsilon", 1e-5))
            }
            "LayerNormalization" => {
                if int(n, "stash_type", 1) != 1 {
                    return Err("LayerNormalization stash_type".into());
                }
                Op::LayerNorm {
                    axis: int(n, "axis", -1),
                    eps: float(n, "epsilon", 1e-5),
                }
            }
            "Gather" => Op::Gather(int(n, "axis", 0)),
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" => Op::Reduce {
                kind: match n.op_type.as_str() {
                    "ReduceSum" => Reduce::Sum,
                    "ReduceMean" => Reduce::Mean,
                    "ReduceMax" => Reduce::Max,
                    _ => Reduce::Min,
                },
                axes: ints(n, "axes"),
                keepdims: int(n, "keepdims", 1) != 0,
                noop_empty: int(n, "noop_with_empty_axes", 0) != 0,
            },
            "Slice" if opset < 10 => Op::Slice(Some(SliceAttrs {
                starts: ints(n, "starts").ok_or("Slice without starts")?,
                ends: ints(n, "ends").ok_or("Slice without ends")?,
                axes: ints(n, "axes"),
            })),
            "Slice" => Op::Slice(None),
            "Unsqueeze" => Op::Unsqueeze(ints(n, "axes")),
            "Squeeze" => Op::Squeeze(ints(n, "axes")),
            "Shape" => Op::Shape {
                start: int(n, "start", 0),
                end: attr(n, "end").map(|a| a.i),
            },
            "ConstantOfShape" => match attr(n, "value").and_then(|a| a.t.as_ref()) {
                None => Op::ConstantOfShape(Value::F32(ArrayD::zeros(IxDyn(&[1])))),
                Some(t) => match tensor_value(t)? {
                    v if v.shape().iter().product::<usize>() == 1 => Op::ConstantOfShape(v),
                    _ => return Err("ConstantOfShape value of more than one element".into()),
                },
            },
            "Expand" => Op::Expand,
            "Pow" => Op::Pow,
            "Reciprocal" => Op::Unary(Unary::Reciprocal),
            "Cast" => match DataType::try_from(int(n, "to", 0) as i32) {
                Ok(t @ (DataType::Float | DataType::Int64)) => Op::Cast(t),
                _ => return Err(format!("Cast to element type {}", int(n, "to", 0))),
            },
            "CastLike" => Op::CastLike,
            "Size" => Op::Size,
            "Identity" | "Dropout" => Op::Identity,
            "Constant" => {
                let list = |n: usize| IxDyn(&[n]);
                if let Some(a) = attr(n, "value") {
                    if a.r#type == AttributeType::Tensor as i32 || a.t.is_some() {
                        Op::Constant(tensor_value(a.t.as_ref().ok_or_else(what)?)?)
                    } else {
                        return Err("Constant that is not a tensor".into());
                    }
                } else if let Some(a) = attr(n, "value_float") {
                    Op::Constant(Value::F32(ArrayD::from_elem(IxDyn(&[]), a.f)))
                } else if let Some(a) = attr(n, "value_floats") {
                    let v = ArrayD::from_shape_vec(list(a.floats.len()), a.floats.clone());
                    Op::Constant(Value::F32(v.expect("1-D")))
                } else if let Some(a) = attr(n, "value_int") {
                    Op::Constant(Value::I64(ArrayD::from_elem(IxDyn(&[]), a.i)))
                } else if let Some(a) = attr(n, "value_ints") {
                    let v = ArrayD::from_shape_vec(list(a.ints.len()), a.ints.clone());
                    Op::Constant(Value::I64(v.expect("1-D")))
                } else {
                    return Err("Constant that is not a tensor".into());
                }
            }
            _ => return Err(what()),
        })
    }
}
