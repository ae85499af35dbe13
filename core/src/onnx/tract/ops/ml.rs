//! scikit-learn's operators (ONNX domain `ai.onnx.ml`) as skl2onnx writes them.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::identity::Identity;

pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
    reg.insert("Binarizer", |_, node| {
        let threshold = node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0);
        Ok((
            expand(Binarizer {
                threshold: threshold.to_bits(),
            }),
            vec![],
        ))
    });
    // kiln returns tensors, not lists of maps: the probabilities matrix passes through as is
    // (columns in the order of the ZipMap's class labels).
    reg.insert("ZipMap", |_, _| Ok((Box::<Identity>::default(), vec![])));
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// `Y = (X - offset) * scale`, per feature (the last axis) or with one value for all.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

fn scaler(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let offset: Vec<f32> = node
        .get_attr_opt_vec("offset")?
        .unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    node.expect(
        !offset.is_empty() && !scale.is_empty(),
        "offset and scale to be non-empty",
    )?;
    Ok((
        expand(Scaler {
            offset: rctensor1(&offset),
            scale: rctensor1(&scale),
        }),
        vec![],
    ))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        let fact = model.outlet_fact(x)?.clone();
        if fact.datum_type != f32::datum_type() {
            let to_f32 = tract_core::ops::cast::cast(f32::datum_type());
            x = model.wire_node(format!("{prefix}.to_f32"), to_f32, &[x])?[0];
        }
        // Per-feature vectors broadcast along the last axis; a rank-0 input takes scalars only.
        let rank = fact.rank().max(1);
        let offset = self
            .offset
            .clone()
            .into_tensor()
            .broadcast_into_rank(rank)?;
        let scale = self.scale.clone().into_tensor().broadcast_into_rank(rank)?;
        let offset = model.add_const(format!("{prefix}.offset"), offset)?;
        let scale = model.add_const(format!("{prefix}.scale"), scale)?;
        let y = wire_with_rank_broadcast(
            prefix.to_string() + ".sub",
            model,
            tract_core::ops::math::sub(),
            &[x, offset],
        )?;
        wire_with_rank_broadcast(
            prefix.to_string() + ".mul",
            model,
            tract_core::ops::math::mul(),
            &[y[0], scale],
        )
    }
}

/// `Y = X > threshold ? 1 : 0`, in X's element type.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Binarizer {
    threshold: u32,
}

impl Expansion for Binarizer {
    fn name(&self) -> StaticName {
        "Binarizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let threshold = tensor0(f32::from_bits(self.threshold))
            .cast_to_dt(dt)?
            .into_owned();
        let threshold = model.add_const(format!("{prefix}.threshold"), threshold)?;
        let above = tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_gt(), None);
        let above = wire_with_rank_broadcast(
            format!("{prefix}.gt"),
            model,
            above,
            &[inputs[0], threshold],
        )?;
        model.wire_node(
            format!("{prefix}.cast"),
            tract_core::ops::cast::cast(dt),
            &above,
        )
    }
}
