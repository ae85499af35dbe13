//! The operators kiln's engine runs, each on kiln-core's own ops (the ones training uses), with
//! ONNX's semantics. `Op::parse` (parse.rs) declines, with the reason, what they cannot run exactly;
//! the shape and reduction operators are in shape.rs.

use ndarray::{ArrayD, Ix1, IxDyn};

use super::shape::{self as shape_ops, Reduce, SliceAttrs};
use super::Value;
use crate::autograd::{gemm, GeluApprox, Tape, Var};
use crate::onnx::pb::tensor_proto::DataType;
use crate::Tensor;
use crate::{shape_err, value_err, Result};

/// One ONNX operator with its attributes read.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Conv {
        stride: Vec<usize>,
        pad: Vec<usize>,
        dilation: Vec<usize>,
        groups: usize,
    },
    Pool {
        max: bool,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    },
    GlobalAveragePool,
    Flatten(i64),
    Reshape,
    Transpose(Option<Vec<usize>>),
    Concat(i64),
    Unary(Unary),
    LeakyRelu(f32),
    Gelu(GeluApprox),
    Softmax {
        axis: i64,
        log: bool,
        legacy: bool,
    },
    Binary(Binary),
    BatchNorm(f32),
    LayerNorm {
        axis: i64,
        eps: f32,
    },
    Gather(i64),
    Cast(DataType),
    /// Cast to input 1's element type.
    CastLike,
    /// The number of elements, as an int64 scalar.
    Size,
    Identity,
    Constant(Value),
    Reduce {
        kind: Reduce,
        /// The attribute (opset < 18; ReduceSum < 13); `None`: input 1, when given.
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_empty: bool,
    },
    /// `Some`: starts, ends and axes as attributes (opset < 10); `None`: inputs 1-4.
    Slice(Option<SliceAttrs>),
    /// The axes attribute (opset < 13); `None`: input 1.
    Unsqueeze(Option<Vec<i64>>),
    Squeeze(Option<Vec<i64>>),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    ConstantOfShape(Value),
    Expand,
    /// `x ^ p` for a one-element constant exponent `p` (checked at load).
    Pow,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Neg,
    Erf,
    Reciprocal,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// What an operator works on: float values on the tape, float weights borrowed from the model
/// (copied onto the tape only by the operators that need them there), or int64 arrays.
pub(super) enum Arg<'a> {
    F(Var),
    C(&'a Tensor),
    I(&'a ArrayD<i64>),
}

/// Input `i` as a value on the tape (a borrowed weight is copied onto it).
pub(super) fn var(t: &mut Tape, args: &[Option<Arg>], i: usize) -> Result<Var> {
    match args.get(i) {
        Some(Some(Arg::F(v))) => Ok(*v),
        Some(Some(Arg::C(c))) => Ok(t.constant((*c).clone())),
        Some(Some(Arg::I(_))) => value_err!("input {i} is int64 where float32 is expected"),
        _ => value_err!("input {i} is missing"),
    }
}

/// Optional input `i` as a value on the tape.
fn opt_var(t: &mut Tape, args: &[Option<Arg>], i: usize) -> Result<Option<Var>> {
    match args.get(i) {
        None | Some(None) => Ok(None),
        _ => var(t, args, i).map(Some),
    }
}

/// What an operator gives back.
#[derive(Debug)]
pub(super) enum Out {
    F(Var),
    I(ArrayD<i64>),
}

impl Op {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Conv { .. } => "Conv",
            Op::Pool { max: true, .. } => "MaxPool",
            Op::Pool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Flatten(_) => "Flatten",
            Op::Reshape => "Reshape",
            Op::Transpose(_) => "Transpose",
            Op::Concat(_) => "Concat",
            Op::Unary(_) | Op::LeakyRelu(_) | Op::Gelu(_) => "activation",
            Op::Softmax { .. } => "Softmax",
            Op::Binary(_) => "elementwise",
            Op::BatchNorm(_) => "BatchNormalization",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::Gather(_) => "Gather",
            Op::Cast(_) => "Cast",
            Op::CastLike => "CastLike",
            Op::Size => "Size",
            Op::Identity => "Identity",
            Op::Constant(_) => "Constant",
            Op::Reduce { kind, .. } => match kind {
                Reduce::Sum => "ReduceSum",
                Reduce::Mean => "ReduceMean",
                Reduce::Max => "ReduceMax",
                Reduce::Min => "ReduceMin",
            },
            Op::Slice(_) => "Slice",
            Op::Unsqueeze(_) => "Unsqueeze",
            Op::Squeeze(_) => "Squeeze",
            Op::Shape { .. } => "Shape",
            Op::ConstantOfShape(_) => "ConstantOfShape",
            Op::Expand => "Expand",
            Op::Pow => "Pow",
        }
    }

    /// Whether the output is int64, given which inputs are: shape operators pass input 0's type
    /// on, the rest compute on float32 only. `Err` (the model is declined at load) where an
    /// operator would get int64 values it does not compute on.
    pub(super) fn output_is_int(
        &self,
        op_type: &str,
        ints: &[bool],
    ) -> std::result::Result<bool, String> {
        let first = ints.first().copied().unwrap_or(false);
        match self {
            Op::Shape { .. } | Op::Size => Ok(true),
            Op::CastLike => Ok(ints.get(1).copied().unwrap_or(false)),
            Op::ConstantOfShape(v) | Op::Constant(v) => Ok(matches!(v, Value::I64(_))),
            Op::Cast(to) => Ok(*to == DataType::Int64),
            Op::Identity
            | Op::Reshape
            | Op::Unsqueeze(_)
            | Op::Squeeze(_)
            | Op::Slice(_)
            | Op::Gather(_)
            | Op::Expand => Ok(first),
            Op::Concat(_) if ints.iter().all(|&i| i == first) => Ok(first),
            Op::Concat(_) => Err("Concat of float32 and int64 values".into()),
            Op::Reduce { .. } | Op::Pow if !first => Ok(false),
            _ if !ints.iter().any(|&i| i) => Ok(false),
            _ => Err(format!("{op_type} on int64 values")),
        }
    }

    /// Runs the operator on the tape `t` (inference mode: nothing is recorded for backward).
    pub(super) fn run(&self, t: &mut Tape, args: &[Option<Arg>]) -> Result<Out> {
        let rank = |v: Var, t: &Tape| t.shape(v).len() as i64;
        let axis = |a: i64, r: i64| -> Result<usize> {
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) {
                value_err!("axis {a} is out of range for rank {r}");
            }
            Ok(a as usize)
        };
        Ok(Out::F(match self {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                // x·Wᵀ + b with W and b the model's own (a Linear layer): one GEMM straight from the
                // borrowed weights, without copying them onto the tape for every run.
                if let (true, false, Some(Some(Arg::C(w)))) = (*trans_b, *trans_a, args.get(1)) {
                    let bias = match args.get(2) {
                        None | Some(None) => Some(None),
                        Some(Some(Arg::C(b))) if b.ndim() == 1 && b.len() == w.shape()[0] => {
                            Some(Some(*b))
                        }
                        _ => None,
                    };
                    let x = var(t, args, 0)?;
                    if let (Some(bias), 2, 2, 1.0, 1.0) =
                        (bias, t.shape(x).len(), w.ndim(), *alpha, *beta)
                    {
                        let xv = t
                            .value(x)
                            .view()
                            .into_dimensionality::<ndarray::Ix2>()
                            .expect("rank 2");
                        let wv = w
                            .view()
                            .into_dimensionality::<ndarray::Ix2>()
                            .expect("rank 2");
                        if xv.ncols() != wv.ncols() {
                            shape_err!(
                                "Gemm: input of shape {:?} does not fit weight of shape {:?}",
                                xv.shape(),
                                wv.shape()
                            );
                        }
                        let mut y = match bias {
                            Some(b) => b
                                .broadcast((xv.nrows(), wv.nrows()))
                                .expect("checked")
                                .to_owned(),
                            None => ndarray::Array2::zeros((xv.nrows(), wv.nrows())),
                        };
                        match (xv.as_slice(), wv.as_slice()) {
                            // A few rows (batch 1 in a page): one dot product per output, straight
                            // over W's contiguous rows; a GEMM kernel spends most of such a call
                            // packing and masking its tiles.
                            (Some(xs), Some(ws)) if xv.nrows() <= 4 => {
                                let k = xv.ncols();
                                for (xr, mut yr) in xs.chunks_exact(k).zip(y.rows_mut()) {
                                    for (yj, wr) in yr.iter_mut().zip(ws.chunks_exact(k)) {
                                        *yj += dot(xr, wr);
                                    }
                                }
                            }
                            _ => {
                                let beta = if bias.is_some() { 1.0 } else { 0.0 };
                                gemm(1.0, &xv, &wv.t(), beta, &mut y.view_mut());
                            }
                        }
                        return Ok(Out::F(t.constant(y.into_dyn())));
                    }
                }
                let (a, b, c) = (var(t, args, 0)?, var(t, args, 1)?, opt_var(t, args, 2)?);
                let simple_bias = c.is_none_or(|c| t.shape(c).len() == 1);
                if *trans_b && !*trans_a && *alpha == 1.0 && *beta == 1.0 && simple_bias {
                    t.linear(a, b, c)?
                } else {
                    let a = if *trans_a { t.transpose(a, 0, 1)? } else { a };
                    let b = if *trans_b { t.transpose(b, 0, 1)? } else { b };
                    let mut y = t.matmul(a, b)?;
                    if *alpha != 1.0 {
                        y = t.scale(y, *alpha);
                    }
                    if let Some(c) = c {
                        let c = if *beta != 1.0 { t.scale(c, *beta) } else { c };
                        y = t.add(y, c)?;
                    }
                    y
                }
            }
            Op::MatMul => {
                let (mut a, mut b) = (var(t, args, 0)?, var(t, args, 1)?);
                // numpy's rule for 1-D operands: a vector on the left is a row [1, k], on the
                // right a column [k, 1], and that axis is dropped from the product.
                let (row, col) = (t.shape(a).len() == 1, t.shape(b).len() == 1);
                if row {
                    let k = t.shape(a)[0];
                    a = t.reshape(a, &[1, k])?;
                }
                if col {
                    let k = t.shape(b)[0];
                    b = t.reshape(b, &[k, 1])?;
                }
                let y = t.matmul(a, b)?;
                if row || col {
                    let mut s = t.shape(y).to_vec();
                    let r = s.len();
                    if col {
                        s.remove(r - 1);
                    }
                    if row {
                        s.remove(s.len() - if col { 1 } else { 2 });
                    }
                    t.reshape(y, &s)?
                } else {
                    y
                }
            }
            Op::Conv {
                stride,
                pad,
                dilation,
                groups,
            } => {
                let (x, w, b) = (var(t, args, 0)?, var(t, args, 1)?, opt_var(t, args, 2)?);
                match stride.len() {
                    1 => t.conv1d(x, w, b, stride[0], pad[0], dilation[0], *groups)?,
                    _ => t.conv2d(
                        x,
                        w,
                        b,
                        [stride[0], stride[1]],
                        [pad[0], pad[1]],
                        [dilation[0], dilation[1]],
                        *groups,
                    )?,
                }
            }
            Op::Pool {
                max,
                kernel,
                stride,
                pad,
            } => {
                let x = var(t, args, 0)?;
                if *max {
                    t.max_pool2d(x, *kernel, *stride, *pad)?
                } else {
                    t.avg_pool2d(x, *kernel, *stride, *pad)?
                }
            }
            Op::GlobalAveragePool => {
                let x = var(t, args, 0)?;
                let axes: Vec<usize> = (2..t.shape(x).len()).collect();
                t.mean(x, &axes, true)?
            }
            Op::Flatten(a) => {
                let x = var(t, args, 0)?;
                let s = t.shape(x).to_vec();
                let r = s.len() as i64;
                let a = if *a < 0 { a + r } else { *a };
                if !(0..=r).contains(&a) {
                    value_err!("Flatten axis {a} for rank {r}");
                }
                let (outer, inner) = s.split_at(a as usize);
                t.reshape(x, &[outer.iter().product(), inner.iter().product()])?
            }
            Op::Reshape => {
                let Some(Some(Arg::I(shape))) = args.get(1) else {
                    value_err!("Reshape needs an int64 shape");
                };
                if let Some(Some(Arg::I(x))) = args.first() {
                    let target = reshape_target(x.shape(), shape.iter().copied())?;
                    return Ok(Out::I(shape_ops::int_reshape(x, &target)?));
                }
                let x = var(t, args, 0)?;
                let target = reshape_target(t.shape(x), shape.iter().copied())?;
                t.reshape(x, &target)?
            }
            Op::Transpose(perm) => {
                let x = var(t, args, 0)?;
                let perm = perm
                    .clone()
                    .unwrap_or_else(|| (0..t.shape(x).len()).rev().collect());
                t.permute(x, &perm)?
            }
            Op::Concat(a) if matches!(args.first(), Some(Some(Arg::I(_)))) => {
                return shape_ops::concat_ints(args, *a)
            }
            Op::Concat(a) => {
                let xs = (0..args.len())
                    .map(|i| var(t, args, i))
                    .collect::<Result<Vec<_>>>()?;
                let r = rank(xs[0], t);
                t.concat(&xs, axis(*a, r)?)?
            }
            Op::Unary(u) => {
                let x = var(t, args, 0)?;
                match u {
                    Unary::Relu => t.relu(x),
                    Unary::Sigmoid => t.sigmoid(x),
                    Unary::Tanh => t.tanh(x),
                    Unary::Exp => t.exp(x),
                    Unary::Log => t.log(x),
                    Unary::Sqrt => t.sqrt(x),
                    Unary::Neg => t.neg(x),
                    Unary::Erf => {
                        let y = t.value(x).mapv(libm::erff);
                        t.constant(y)
                    }
                    Unary::Reciprocal => {
                        let one = t.constant(ArrayD::from_elem(IxDyn(&[]), 1.0));
                        t.div(one, x)?
                    }
                }
            }
            Op::LeakyRelu(alpha) => {
                let x = var(t, args, 0)?;
                t.leaky_relu(x, *alpha)
            }
            Op::Gelu(approx) => {
                let x = var(t, args, 0)?;
                t.gelu(x, *approx)
            }
            Op::Softmax {
                axis: a,
                log,
                legacy,
            } => {
                let x = var(t, args, 0)?;
                let r = rank(x, t);
                let a = axis(*a, r)?;
                if *legacy && a as i64 != r - 1 {
                    value_err!("Softmax before opset 13 over axis {a} of a rank-{r} input");
                }
                if *log {
                    t.log_softmax(x, a)?
                } else {
                    t.softmax(x, a)?
                }
            }
            Op::Binary(op) => {
                let (a, b) = (var(t, args, 0)?, var(t, args, 1)?);
                match op {
                    Binary::Add => t.add(a, b)?,
                    Binary::Sub => t.sub(a, b)?,
                    Binary::Mul => t.mul(a, b)?,
                    Binary::Div => t.div(a, b)?,
                }
            }
            Op::BatchNorm(eps) => {
                let (x, w, b, m, v) = (
                    var(t, args, 0)?,
                    var(t, args, 1)?,
                    var(t, args, 2)?,
                    var(t, args, 3)?,
                    var(t, args, 4)?,
                );
                let one_d = |v: Var, t: &Tape| {
                    t.value(v)
                        .clone()
                        .into_dimensionality::<Ix1>()
                        .map_err(|_| {
                            crate::KilnError::shape("BatchNormalization statistics must be 1-D")
                        })
                };
                let (mean, var) = (one_d(m, t)?, one_d(v, t)?);
                t.batch_norm(x, w, b, Some((&mean, &var)), *eps)?.0
            }
            Op::LayerNorm { axis: a, eps } => {
                let (x, w) = (var(t, args, 0)?, var(t, args, 1)?);
                let r = rank(x, t);
                let a = axis(*a, r)?;
                let normalized = t.shape(x)[a..].to_vec();
                let w = if t.shape(w) != normalized.as_slice() {
                    t.reshape(w, &normalized)?
                } else {
                    w
                };
                let b = match opt_var(t, args, 2)? {
                    Some(b) if t.shape(b) != normalized.as_slice() => t.reshape(b, &normalized)?,
                    Some(b) => b,
                    None => t.constant(ArrayD::zeros(IxDyn(&normalized))),
                };
                t.layer_norm(x, w, b, *eps)?
            }
            Op::Gather(a) => return shape_ops::gather(t, args, *a),
            Op::Reduce {
                kind,
                axes,
                keepdims,
                noop_empty,
            } => return shape_ops::reduce(t, args, *kind, axes, *keepdims, *noop_empty),
            Op::Slice(attrs) => return shape_ops::slice(t, args, attrs),
            Op::Unsqueeze(axes) => return shape_ops::unsqueeze(t, args, axes),
            Op::Squeeze(axes) => return shape_ops::squeeze(t, args, axes),
            Op::Shape { start, end } => return shape_ops::shape(t, args, *start, *end),
            Op::ConstantOfShape(v) => return shape_ops::constant_of_shape(t, args, v),
            Op::Expand => return shape_ops::expand(t, args),
            Op::Pow => {
                let x = var(t, args, 0)?;
                let p = match args.get(1) {
                    Some(Some(Arg::C(c))) if c.len() == 1 => c.iter().copied().next(),
                    Some(Some(Arg::I(i))) if i.len() == 1 => i.iter().map(|&v| v as f32).next(),
                    _ => None,
                };
                let Some(p) = p else {
                    value_err!("Pow needs a one-element constant exponent");
                };
                t.pow(x, p)
            }
            Op::Size => {
                let n = match args.first() {
                    Some(Some(Arg::F(v))) => t.shape(*v).iter().product::<usize>(),
                    Some(Some(Arg::C(c))) => c.len(),
                    Some(Some(Arg::I(i))) => i.len(),
                    _ => value_err!("input 0 is missing"),
                };
                return Ok(Out::I(ArrayD::from_elem(IxDyn(&[]), n as i64)));
            }
            Op::CastLike => {
                let to = match args.get(1) {
                    Some(Some(Arg::I(_))) => DataType::Int64,
                    Some(Some(_)) => DataType::Float,
                    _ => value_err!("CastLike needs input 1"),
                };
                return Op::Cast(to).run(t, &args[..1]);
            }
            Op::Cast(to) => match (to, args.first()) {
                (DataType::Float, Some(Some(Arg::F(v)))) => *v,
                (DataType::Float, Some(Some(Arg::C(c)))) => t.constant((*c).clone()),
                (DataType::Int64, Some(Some(Arg::C(c)))) => {
                    return Ok(Out::I(c.mapv(|x| x.trunc() as i64)))
                }
                (DataType::Float, Some(Some(Arg::I(i)))) => t.constant(i.mapv(|v| v as f32)),
                (DataType::Int64, Some(Some(Arg::I(i)))) => return Ok(Out::I((*i).clone())),
                (DataType::Int64, Some(Some(Arg::F(v)))) => {
                    let values = t.value(*v);
                    if values.iter().any(|x| !x.is_finite()) {
                        value_err!("Cast of NaN or infinity to int64");
                    }
                    return Ok(Out::I(values.mapv(|x| x.trunc() as i64)));
                }
                _ => value_err!("Cast input is missing"),
            },
            Op::Identity => match args.first() {
                Some(Some(Arg::F(v))) => *v,
                Some(Some(Arg::C(c))) => t.constant((*c).clone()),
                Some(Some(Arg::I(i))) => return Ok(Out::I((*i).clone())),
                _ => value_err!("input 0 is missing"),
            },
            Op::Constant(_) => unreachable!("constants are folded at load"),
        }))
    }
}

/// `a · b` for equally long slices, with four-lane SIMD on wasm (simd128) and eight independent
/// accumulators elsewhere.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        let mut acc = f32x4_splat(0.0);
        let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
        let tail: f32 = a4
            .remainder()
            .iter()
            .zip(b4.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a4.zip(b4) {
            let xv = f32x4(x[0], x[1], x[2], x[3]);
            let yv = f32x4(y[0], y[1], y[2], y[3]);
            acc = f32x4_add(acc, f32x4_mul(xv, yv));
        }
        f32x4_extract_lane::<0>(acc)
            + f32x4_extract_lane::<1>(acc)
            + f32x4_extract_lane::<2>(acc)
            + f32x4_extract_lane::<3>(acc)
            + tail
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let mut acc = [0f32; 8];
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a8.zip(b8) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// ONNX Reshape's target: `0` copies the input's size on that axis, one `-1` takes the rest.
fn reshape_target(input: &[usize], shape: impl Iterator<Item = i64>) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::new();
    let mut infer = None;
    for (i, d) in shape.enumerate() {
        match d {
            0 => out.push(*input.get(i).ok_or_else(|| {
                crate::KilnError::shape(format!(
                    "Reshape: 0 at axis {i} of a rank-{} input",
                    input.len()
                ))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            d => shape_err!("Reshape: size {d} in the target shape"),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            shape_err!("Reshape: cannot infer -1 for {total} values into {out:?}");
        }
        out[i] = total / known;
    }
    Ok(out)
}
