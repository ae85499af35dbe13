//! Reading an [`Op`] from JSON by hand. serde's derived `Deserialize` for a 35-variant enum of
//! structs is ~70 kB of wasm (a visitor per variant, per field set), a seventh of the browser's
//! small module; this reader goes through `serde_json::Value` with one match. `Serialize` stays
//! derived, and `every_op_round_trips` below keeps the two in step.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Dim, Op, Reduction, ScalarOp};
use crate::autograd::GeluApprox;
use crate::json_args::{Args, FromJson};
use crate::nn::{Attention, MaskKind};

impl FromJson for MaskKind {
    const WHAT: &'static str = "none, bool or float";
    fn from_json(v: &Value) -> Option<Self> {
        Some(match v.as_str()? {
            "none" => MaskKind::None,
            "bool" => MaskKind::Bool,
            "float" => MaskKind::Float,
            _ => return None,
        })
    }
}

impl FromJson for Dim {
    const WHAT: &'static str = "sizes, -1 or \"batch\"";
    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) if s == "batch" => Some(Dim::Batch),
            _ => v.as_i64().map(Dim::Size),
        }
    }
}
impl FromJson for ScalarOp {
    const WHAT: &'static str = "add, sub, rsub, mul, div, rdiv or pow";
    fn from_json(v: &Value) -> Option<Self> {
        Some(match v.as_str()? {
            "add" => ScalarOp::Add,
            "sub" => ScalarOp::Sub,
            "rsub" => ScalarOp::Rsub,
            "mul" => ScalarOp::Mul,
            "div" => ScalarOp::Div,
            "rdiv" => ScalarOp::Rdiv,
            "pow" => ScalarOp::Pow,
            _ => return None,
        })
    }
}
impl FromJson for Reduction {
    const WHAT: &'static str = "mean, sum or max";
    fn from_json(v: &Value) -> Option<Self> {
        Some(match v.as_str()? {
            "mean" => Reduction::Mean,
            "sum" => Reduction::Sum,
            "max" => Reduction::Max,
            _ => return None,
        })
    }
}
impl FromJson for GeluApprox {
    const WHAT: &'static str = "none or tanh";
    fn from_json(v: &Value) -> Option<Self> {
        Some(match v.as_str()? {
            "none" => GeluApprox::None,
            "tanh" => GeluApprox::Tanh,
            _ => return None,
        })
    }
}

/// An op's name and arguments (`"Relu"` or `{"Name": {arguments}}`).
fn header(v: &Value) -> Result<Args<'_>, String> {
    let (name, map) = match v {
        Value::String(s) => (s.as_str(), None),
        Value::Object(m) if m.len() == 1 => {
            let (k, a) = m.iter().next().expect("one entry");
            match a {
                Value::Object(args) => (k.as_str(), Some(args)),
                _ => return Err(format!("{k}: the arguments must be an object")),
            }
        }
        _ => return Err("an op is a name (\"Relu\") or {\"Name\": {arguments}}".into()),
    };
    Ok(Args { op: name, map })
}

/// `nn.MultiheadAttention`'s arguments, PyTorch's defaults where absent.
const ATTENTION_ARGS: &[&str] = &[
    "num_heads",
    "dropout",
    "batch_first",
    "bias",
    "need_weights",
    "average_attn_weights",
    "is_causal",
    "key_padding_mask",
    "attn_mask",
];

fn attention(a: &Args) -> Result<Attention, String> {
    Ok(Attention {
        num_heads: a.get("num_heads")?,
        dropout: a.or("dropout", 0.0)?,
        batch_first: a.or("batch_first", false)?,
        bias: a.or("bias", true)?,
        need_weights: a.or("need_weights", true)?,
        average_attn_weights: a.or("average_attn_weights", true)?,
        is_causal: a.or("is_causal", false)?,
        key_padding_mask: a.or("key_padding_mask", MaskKind::None)?,
        attn_mask: a.or("attn_mask", MaskKind::None)?,
    })
}

/// Only a `MultiheadAttention` op, for the export's attention marks (`kiln.attention`): reading
/// them with the whole [`Op`] reader linked it into the browser's small module.
pub(crate) fn deserialize_attention<'de, D: Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
    let v = Value::deserialize(d)?;
    let a = header(&v).map_err(D::Error::custom)?;
    if a.op != "MultiheadAttention" {
        return Err(D::Error::custom(format!(
            "an attention mark of {:?}, not MultiheadAttention",
            a.op
        )));
    }
    let att = attention(&a).map_err(D::Error::custom)?;
    a.only(ATTENTION_ARGS).map_err(D::Error::custom)?;
    Ok(Op::MultiheadAttention(att))
}

fn parse(v: &Value) -> Result<Op, String> {
    let a = header(v)?;
    let name = a.op;
    use Op as O;
    let (op, known): (Op, &[&str]) = match name {
        "Call" => (
            O::Call {
                module: a.get("module")?,
            },
            &["module"],
        ),
        "Item" => (
            O::Item {
                index: a.get("index")?,
            },
            &["index"],
        ),
        "Param" => (
            O::Param {
                name: a.get("name")?,
            },
            &["name"],
        ),
        "Add" => (O::Add, &[]),
        "Sub" => (O::Sub, &[]),
        "Mul" => (O::Mul, &[]),
        "Div" => (O::Div, &[]),
        "MatMul" => (O::MatMul, &[]),
        "Neg" => (O::Neg, &[]),
        "Scalar" => (
            O::Scalar {
                kind: a.get("kind")?,
                value: a.get("value")?,
            },
            &["kind", "value"],
        ),
        "Relu" => (O::Relu, &[]),
        "LeakyRelu" => (
            O::LeakyRelu {
                negative_slope: a.get("negative_slope")?,
            },
            &["negative_slope"],
        ),
        "Gelu" => (
            O::Gelu {
                approximate: a.get("approximate")?,
            },
            &["approximate"],
        ),
        "FakeQuant" => (
            O::FakeQuant {
                scale: a.get("scale")?,
                zero_point: a.get("zero_point")?,
                qmin: a.get("qmin")?,
                qmax: a.get("qmax")?,
            },
            &["scale", "zero_point", "qmin", "qmax"],
        ),
        "Sigmoid" => (O::Sigmoid, &[]),
        "Tanh" => (O::Tanh, &[]),
        "Exp" => (O::Exp, &[]),
        "Log" => (O::Log, &[]),
        "Sqrt" => (O::Sqrt, &[]),
        "Erf" => (O::Erf, &[]),
        "Softmax" => (O::Softmax { dim: a.get("dim")? }, &["dim"]),
        "LogSoftmax" => (O::LogSoftmax { dim: a.get("dim")? }, &["dim"]),
        "Dropout" => (O::Dropout { p: a.get("p")? }, &["p"]),
        "Reshape" => (
            O::Reshape {
                shape: a.get("shape")?,
            },
            &["shape"],
        ),
        "Flatten" => (
            O::Flatten {
                start_dim: a.or("start_dim", 1)?,
                end_dim: a.or("end_dim", -1)?,
            },
            &["start_dim", "end_dim"],
        ),
        "Permute" => (
            O::Permute {
                dims: a.get("dims")?,
            },
            &["dims"],
        ),
        "Reduce" => (
            O::Reduce {
                kind: a.get("kind")?,
                dims: a.get("dims")?,
                keepdim: a.get("keepdim")?,
            },
            &["kind", "dims", "keepdim"],
        ),
        "Slice" => (
            O::Slice {
                dim: a.get("dim")?,
                start: a.get("start")?,
                end: a.get("end")?,
            },
            &["dim", "start", "end"],
        ),
        "Concat" => (O::Concat { dim: a.get("dim")? }, &["dim"]),
        "MaxPool2d" | "AvgPool2d" => {
            let (kernel_size, stride, padding) = (
                a.get("kernel_size")?,
                a.get("stride")?,
                a.or("padding", [0, 0])?,
            );
            let op = if name == "MaxPool2d" {
                O::MaxPool2d {
                    kernel_size,
                    stride,
                    padding,
                }
            } else {
                O::AvgPool2d {
                    kernel_size,
                    stride,
                    padding,
                }
            };
            (op, &["kernel_size", "stride", "padding"])
        }
        "Linear" => (O::Linear, &[]),
        "Conv2d" => (
            O::Conv2d {
                stride: a.or("stride", [1, 1])?,
                padding: a.or("padding", [0, 0])?,
                dilation: a.or("dilation", [1, 1])?,
                groups: a.or("groups", 1)?,
            },
            &["stride", "padding", "dilation", "groups"],
        ),
        "LayerNorm" => (
            O::LayerNorm {
                eps: a.or("eps", 1e-5)?,
            },
            &["eps"],
        ),
        "Embedding" => (O::Embedding, &[]),
        "Gather" => (O::Gather { dim: a.get("dim")? }, &["dim"]),
        "Conv1d" => (
            O::Conv1d {
                stride: a.or("stride", 1)?,
                padding: a.or("padding", 0)?,
                dilation: a.or("dilation", 1)?,
                groups: a.or("groups", 1)?,
            },
            &["stride", "padding", "dilation", "groups"],
        ),
        "MultiheadAttention" => (O::MultiheadAttention(attention(&a)?), ATTENTION_ARGS),
        other => return Err(format!("unknown graph op {other:?}")),
    };
    a.only(known)?;
    Ok(op)
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse(&Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        let ops = vec![
            Op::Call {
                module: "blocks.0.conv1".into(),
            },
            Op::Item { index: 1 },
            Op::Param {
                name: "scale".into(),
            },
            Op::Add,
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::MatMul,
            Op::Neg,
            Op::Scalar {
                kind: ScalarOp::Rdiv,
                value: 2.5,
            },
            Op::Relu,
            Op::LeakyRelu {
                negative_slope: 0.2,
            },
            Op::Gelu {
                approximate: GeluApprox::Tanh,
            },
            Op::Sigmoid,
            Op::Tanh,
            Op::Exp,
            Op::Log,
            Op::Sqrt,
            Op::Erf,
            Op::FakeQuant {
                scale: 0.25,
                zero_point: 128.0,
                qmin: 0.0,
                qmax: 255.0,
            },
            Op::Gather { dim: -2 },
            Op::Conv1d {
                stride: 2,
                padding: 1,
                dilation: 1,
                groups: 1,
            },
            Op::Softmax { dim: -1 },
            Op::LogSoftmax { dim: 1 },
            Op::Dropout { p: 0.25 },
            Op::Reshape {
                shape: vec![Dim::Batch, Dim::Size(-1), Dim::Size(3)],
            },
            Op::Flatten {
                start_dim: 2,
                end_dim: -2,
            },
            Op::Permute {
                dims: vec![0, 2, 1],
            },
            Op::Reduce {
                kind: Reduction::Max,
                dims: vec![-1],
                keepdim: true,
            },
            Op::Slice {
                dim: 1,
                start: 2,
                end: 5,
            },
            Op::Concat { dim: 1 },
            Op::MaxPool2d {
                kernel_size: [2, 2],
                stride: [2, 2],
                padding: [0, 1],
            },
            Op::AvgPool2d {
                kernel_size: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
            },
            Op::Linear,
            Op::Conv2d {
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                groups: 2,
            },
            Op::LayerNorm { eps: 1e-6 },
            Op::Embedding,
            Op::MultiheadAttention(Attention {
                num_heads: 2,
                dropout: 0.1,
                batch_first: true,
                bias: false,
                need_weights: true,
                average_attn_weights: false,
                is_causal: true,
                key_padding_mask: MaskKind::Bool,
                attn_mask: MaskKind::Float,
            }),
        ];
        for op in ops {
            let json = serde_json::to_string(&op).unwrap();
            let back: Op = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, op, "{json}");
        }
    }

    #[test]
    fn defaults_typos_and_unknown_ops() {
        let op: Op = serde_json::from_str(r#"{"Flatten":{}}"#).unwrap();
        assert_eq!(
            op,
            Op::Flatten {
                start_dim: 1,
                end_dim: -1
            }
        );
        let e = serde_json::from_str::<Op>(r#"{"Softmax":{"dimm":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing argument `dim`"), "{e}");
        let e = serde_json::from_str::<Op>(r#"{"Softmax":{"dim":1,"axis":0}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown argument `axis`"), "{e}");
        let e = serde_json::from_str::<Op>(r#""Transformer""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown graph op"), "{e}");
        assert!(serde_json::from_str::<Op>("[1, 2]").is_err());
        assert!(serde_json::from_str::<Op>(r#"{"Softmax":3}"#).is_err());
    }
}
