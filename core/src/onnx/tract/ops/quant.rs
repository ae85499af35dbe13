//! onnxruntime's quantized contrib operators (domain `com.microsoft`) that its quantizer writes in
//! QOperator format around the standard QLinearConv / QLinearMatMul: QLinearAdd, QLinearMul,
//! QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool and QLinearConcat.
//!
//! Each is the float op between a dequantize and a quantize, as onnxruntime defines them:
//! `q(y) = saturate(round_half_to_even(y / scale) + zero_point)`.

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::tract_core::ops::{array::TypedConcat, cast::cast, math, nn};

pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("QLinearAdd", |_, n| build(n, Kind::Add));
    reg.insert("QLinearMul", |_, n| build(n, Kind::Mul));
    reg.insert("QLinearSigmoid", |_, n| build(n, Kind::Sigmoid));
    reg.insert("QLinearLeakyRelu", |_, n| {
        let alpha = n.get_attr_opt::<f32>("alpha")?.unwrap_or(0.01);
        build(n, Kind::LeakyRelu(alpha.to_bits()))
    });
    reg.insert("QLinearGlobalAveragePool", |_, n| {
        let channels_last = n.get_attr_opt::<i64>("channels_last")?.unwrap_or(0) != 0;
        build(n, Kind::GlobalAveragePool { channels_last })
    });
    reg.insert("QLinearConcat", |_, n| {
        build(n, Kind::Concat(n.get_attr::<i64>("axis")?))
    });
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Kind {
    Add,
    Mul,
    Sigmoid,
    LeakyRelu(u32),
    GlobalAveragePool { channels_last: bool },
    Concat(i64),
}

/// Where the quantized inputs sit among the node's inputs: (x, scale, zero point) triples, and
/// the output's scale and zero point.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QLinear {
    kind: Kind,
    /// Per quantized input: input index of x, scale, zero point (absent = 0).
    inputs: Vec<(usize, usize, Option<usize>)>,
    y_scale: usize,
    y_zero_point: Option<usize>,
}

fn build(node: &NodeProto, kind: Kind) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    // tract numbers only the inputs that are present; map ONNX positions to those.
    let present: Vec<Option<usize>> = {
        let mut next = 0;
        node.input
            .iter()
            .map(|i| {
                (!i.is_empty()).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let at = |ix: usize| present.get(ix).copied().flatten();
    let need =
        |ix: usize, what: &str| at(ix).with_context(|| format!("input {ix} ({what}) is required"));
    let op = match kind {
        Kind::Concat(_) => {
            let n = node.input.len().saturating_sub(2) / 3;
            ensure!(
                n > 0 && node.input.len() == 2 + 3 * n,
                "QLinearConcat takes Y_scale, Y_zero_point, then (X, scale, zero point) triples"
            );
            let inputs = (0..n)
                .map(|i| {
                    Ok((
                        need(2 + 3 * i, "X")?,
                        need(3 + 3 * i, "X_scale")?,
                        at(4 + 3 * i),
                    ))
                })
                .collect::<TractResult<_>>()?;
            QLinear {
                kind,
                inputs,
                y_scale: need(0, "Y_scale")?,
                y_zero_point: at(1),
            }
        }
        Kind::Add | Kind::Mul => QLinear {
            kind,
            inputs: vec![
                (need(0, "A")?, need(1, "A_scale")?, at(2)),
                (need(3, "B")?, need(4, "B_scale")?, at(5)),
            ],
            y_scale: need(6, "C_scale")?,
            y_zero_point: at(7),
        },
        _ => QLinear {
            kind,
            inputs: vec![(need(0, "X")?, need(1, "X_scale")?, at(2))],
            y_scale: need(3, "Y_scale")?,
            y_zero_point: at(4),
        },
    };
    Ok((expand(op), vec![]))
}

fn konst(model: &mut TypedModel, name: String, v: f32) -> TractResult<OutletId> {
    model.add_const(name, tensor0(v))
}

fn binary(
    model: &mut TypedModel,
    name: String,
    op: impl Into<Box<dyn TypedOp>>,
    a: OutletId,
    b: OutletId,
) -> TractResult<OutletId> {
    let op: Box<dyn TypedOp> = op.into();
    Ok(wire_with_rank_broadcast(name, model, op, &[a, b])?[0])
}

/// `(x - zero_point) * scale` in f32.
fn dequantize(
    model: &mut TypedModel,
    name: &str,
    x: OutletId,
    scale: OutletId,
    zp: Option<OutletId>,
) -> TractResult<OutletId> {
    let mut x = model.wire_node(format!("{name}.x_f32"), cast(f32::datum_type()), &[x])?[0];
    if let Some(zp) = zp {
        let zp = model.wire_node(format!("{name}.zp_f32"), cast(f32::datum_type()), &[zp])?[0];
        x = binary(model, format!("{name}.sub_zp"), math::sub(), x, zp)?;
    }
    let scale = model.wire_node(
        format!("{name}.scale_f32"),
        cast(f32::datum_type()),
        &[scale],
    )?[0];
    binary(model, format!("{name}.scale"), math::mul(), x, scale)
}

/// `saturate(round_half_to_even(y / scale) + zero_point)` as the zero point's type.
fn quantize(
    model: &mut TypedModel,
    name: &str,
    y: OutletId,
    scale: OutletId,
    zp: Option<OutletId>,
    dt: DatumType,
) -> TractResult<OutletId> {
    let scale = model.wire_node(
        format!("{name}.y_scale_f32"),
        cast(f32::datum_type()),
        &[scale],
    )?[0];
    let y = binary(model, format!("{name}.div_scale"), math::div(), y, scale)?;
    let mut y = model.wire_node(format!("{name}.round"), math::round_half_to_even(), &[y])?[0];
    if let Some(zp) = zp {
        let zp = model.wire_node(format!("{name}.y_zp_f32"), cast(f32::datum_type()), &[zp])?[0];
        y = binary(model, format!("{name}.add_zp"), math::add(), y, zp)?;
    }
    let (lo, hi) = if dt.unquantized() == DatumType::I8 {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let lo = konst(model, format!("{name}.lo"), lo)?;
    let hi = konst(model, format!("{name}.hi"), hi)?;
    let y = binary(model, format!("{name}.max"), math::max(), y, lo)?;
    let y = binary(model, format!("{name}.min"), math::min(), y, hi)?;
    Ok(model.wire_node(format!("{name}.cast"), cast(dt.unquantized()), &[y])?[0])
}

impl Expansion for QLinear {
    fn name(&self) -> StaticName {
        format!("QLinear{:?}", self.kind).into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        match self.y_zero_point {
            Some(zp) => s.equals(&outputs[0].datum_type, &inputs[zp].datum_type)?,
            None => s.equals(&outputs[0].datum_type, u8::datum_type())?,
        }
        let x0 = self.inputs[0].0;
        match self.kind {
            Kind::Add | Kind::Mul => {
                let x1 = self.inputs[1].0;
                s.given_2(&inputs[x0].shape, &inputs[x1].shape, move |s, a, b| {
                    s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
                })?;
            }
            Kind::Concat(_) | Kind::GlobalAveragePool { .. } => {
                s.equals(&outputs[0].rank, &inputs[x0].rank)?;
            }
            _ => s.equals(&outputs[0].shape, &inputs[x0].shape)?,
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut xs = vec![];
        for (i, &(x, scale, zp)) in self.inputs.iter().enumerate() {
            let name = format!("{prefix}.dequantize{i}");
            xs.push(dequantize(
                model,
                &name,
                inputs[x],
                inputs[scale],
                zp.map(|z| inputs[z]),
            )?);
        }
        let y = match self.kind {
            Kind::Add => binary(model, format!("{prefix}.add"), math::add(), xs[0], xs[1])?,
            Kind::Mul => binary(model, format!("{prefix}.mul"), math::mul(), xs[0], xs[1])?,
            Kind::Sigmoid => {
                model.wire_node(format!("{prefix}.sigmoid"), nn::sigmoid(), &[xs[0]])?[0]
            }
            Kind::LeakyRelu(alpha) => {
                let op = nn::leaky_relu(f32::from_bits(alpha));
                model.wire_node(format!("{prefix}.leaky_relu"), op, &[xs[0]])?[0]
            }
            Kind::GlobalAveragePool { channels_last } => {
                let shape = model.outlet_fact(xs[0])?.shape.to_tvec();
                ensure!(
                    shape.len() >= 3,
                    "QLinearGlobalAveragePool needs [N, C, spatial...] input"
                );
                let axes: TVec<usize> = if channels_last {
                    (1..shape.len() - 1).collect()
                } else {
                    (2..shape.len()).collect()
                };
                let count = axes.iter().map(|&a| shape[a].clone()).product::<TDim>();
                let count = count.to_i64().context("spatial dimensions must be known")? as f32;
                let sum = nn::Reduce::new(axes, nn::Reducer::Sum);
                let sum = model.wire_node(format!("{prefix}.sum"), sum, &[xs[0]])?[0];
                let count = konst(model, format!("{prefix}.count"), count)?;
                binary(model, format!("{prefix}.mean"), math::div(), sum, count)?
            }
            Kind::Concat(axis) => {
                let rank = model.outlet_fact(xs[0])?.rank() as i64;
                let axis = if axis < 0 { axis + rank } else { axis };
                ensure!((0..rank).contains(&axis), "concat axis out of range");
                model.wire_node(
                    format!("{prefix}.concat"),
                    TypedConcat::new(axis as usize),
                    &xs,
                )?[0]
            }
        };
        let dt = match self.y_zero_point {
            Some(zp) => model.outlet_fact(inputs[zp])?.datum_type,
            None => u8::datum_type(),
        };
        let y = quantize(
            model,
            prefix,
            y,
            inputs[self.y_scale],
            self.y_zero_point.map(|z| inputs[z]),
            dt,
        )?;
        Ok(tvec!(y))
    }
}
