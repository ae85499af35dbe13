//! Bounds checks in front of tract's Gather and GatherElements.
//!
//! tract 0.23.9 indexes without checking: an out-of-range index (a token id past the end of an
//! embedding table, say) panics. Natively kiln catches that, but on wasm32 a panic aborts the
//! whole module, so the indices are checked first and a bad one becomes an ordinary error.

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::array::{Gather, GatherElements};

pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Gather", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(0);
        Ok((
            expand(Checked {
                axis,
                inner: Inner::Gather(Gather::new(axis)),
            }),
            vec![],
        ))
    });
    reg.insert("GatherElements", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(0);
        let inner = Inner::Elements(GatherElements::new(axis));
        Ok((expand(Checked { axis, inner }), vec![]))
    });
}

/// Gather / GatherElements(data, indices) with the indices checked against `data.shape[axis]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Checked {
    axis: i64,
    inner: Inner,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Inner {
    Gather(Gather),
    Elements(GatherElements),
}

impl Expansion for Checked {
    fn name(&self) -> StaticName {
        match self.inner {
            Inner::Gather(_) => "Gather",
            Inner::Elements(_) => "GatherElements",
        }
        .into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        match &self.inner {
            Inner::Gather(op) => op.rules(s, inputs, outputs),
            Inner::Elements(op) => op.rules(s, inputs, outputs),
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        ensure!(
            (0..rank).contains(&axis),
            "axis {} out of range for rank {rank}",
            self.axis
        );
        let check = IndexCheck {
            axis: axis as usize,
        };
        // Constant indices (shape arithmetic in exported graphs: Shape -> Gather -> Reshape) are
        // checked now, keeping them constant for tract's folding.
        let size = model.outlet_fact(inputs[0])?.shape[axis as usize]
            .to_i64()
            .ok();
        if let (Some(k), Some(n)) = (model.outlet_fact(inputs[1])?.konst.clone(), size) {
            check.check(&k, n)?;
            return match &self.inner {
                Inner::Gather(op) => op.wire(prefix, model, inputs),
                Inner::Elements(op) => op.wire(prefix, model, inputs),
            };
        }
        let indices = model.wire_node(
            format!("{prefix}.check_indices"),
            check,
            &[inputs[1], inputs[0]],
        )?;
        let inputs = [inputs[0], indices[0]];
        match &self.inner {
            Inner::Gather(op) => op.wire(prefix, model, &inputs),
            Inner::Elements(op) => op.wire(prefix, model, &inputs),
        }
    }
}

/// Passes `indices` through unchanged once every value is in `[-n, n)`, `n = data.shape[axis]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct IndexCheck {
    axis: usize,
}

impl Op for IndexCheck {
    fn name(&self) -> StaticName {
        "IndexCheck".into()
    }
    op_as_typed_op!();
}

impl EvalOp for IndexCheck {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (indices, data) = args_2!(inputs);
        let n = *data
            .shape()
            .get(self.axis)
            .context("data rank below the gather axis")? as i64;
        self.check(&indices, n)?;
        Ok(tvec!(indices))
    }
}

impl IndexCheck {
    fn check(&self, indices: &Tensor, n: i64) -> TractResult<()> {
        let wide = indices.cast_to::<i64>()?;
        let view = wide.to_plain_array_view::<i64>()?;
        if let Some(bad) = view.iter().find(|&&i| i < -n || i >= n) {
            bail!(
                "index {bad} is out of range for an axis of size {n} (valid: {} to {})",
                -n,
                n - 1
            );
        }
        Ok(())
    }
}

impl TypedOp for IndexCheck {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}
