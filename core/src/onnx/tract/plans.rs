//! The runnable plans of one session: one per value of the model's free dimensions.
//!
//! Why not one plan for every batch size: a plan optimised with the batch dimension symbolic
//! re-derives, on every run, what a plan for a known size works out once while optimising —
//! convolution and pooling geometry, im2col patches, matmul shapes, with many small allocations.
//! On the digits CNN (wasm, batch 1) that per-run work was more than half of the time: the same
//! model with its batch fixed to 1 ran in 0.045 ms instead of 0.08 ms.
//!
//! So the session keeps the decluttered model, free dimensions symbolic, and the first run at a
//! new value of them (batch 1, then batch 64, …) substitutes the values (`set_symbols`) and
//! optimises a plan for exactly that shape; later runs at that shape reuse it. The optimising
//! that used to happen at load happens at the first run instead, so loading plus the first
//! prediction costs about what it did.
//!
//! Bounded: every specialised plan holds its own copy of the packed weights, so a session keeps
//! at most [`MAX_PLANS`] of them and at most [`WEIGHT_BUDGET`] bytes of weights across them (a
//! model with larger weights gets none: its run time dwarfs the per-run work saved). Shapes that
//! find the cache full run on the general plan, the symbolic one, made the first time it is
//! needed; so does a shape whose specialisation fails.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock, RwLock};

use tract_onnx::prelude::*;

use super::{describe, load_error, panic_message};
use crate::{KilnError, Result};

/// Most specialised plans one session keeps (distinct batch sizes, say).
pub(super) const MAX_PLANS: usize = 8;
/// Most bytes of weights the specialised plans of one session may hold between them.
pub(super) const WEIGHT_BUDGET: usize = 64 << 20;

/// A runnable plan and whether tract's optimiser made it (else it is the decluttered graph).
type Built = (Arc<TypedRunnableModel>, bool);

pub(super) struct Plans {
    /// Decluttered, free dimensions still symbolic: what every plan is made from.
    model: TypedModel,
    /// Each free symbol of the inputs, and where its value is read: (input index, axis).
    free: Vec<(Symbol, usize, usize)>,
    /// How many specialised plans this session may keep (0: weights over the budget).
    capacity: usize,
    /// Specialised plans by the values of `free`, oldest first.
    specialised: RwLock<Vec<(Vec<usize>, Arc<TypedRunnableModel>)>>,
    /// The plan for any value of the free dimensions; a message when even the decluttered graph
    /// cannot be planned.
    general: OnceLock<std::result::Result<Built, String>>,
}

impl Plans {
    /// Plans for `model` (decluttered), with kiln's own pool where it fits (`pool.rs`). A model
    /// without free dimensions has one shape only: its plan is made here, so load errors surface
    /// at load.
    pub(super) fn new(mut model: TypedModel) -> Result<Plans> {
        super::pool::use_tiled_max_pools(&mut model).map_err(load_error)?;
        let mut free: Vec<(Symbol, usize, usize)> = Vec::new();
        for (input, outlet) in model
            .input_outlets()
            .map_err(load_error)?
            .iter()
            .enumerate()
        {
            for (axis, dim) in model
                .outlet_fact(*outlet)
                .map_err(load_error)?
                .shape
                .iter()
                .enumerate()
            {
                if let TDim::Sym(s) = dim {
                    if !free.iter().any(|(f, _, _)| f == s) {
                        free.push((s.clone(), input, axis));
                    }
                }
            }
        }
        let weights = weight_bytes(&model);
        let capacity = if free.is_empty() {
            0
        } else {
            MAX_PLANS.min(WEIGHT_BUDGET / weights.max(1))
        };
        let plans = Plans {
            model,
            free,
            capacity,
            specialised: RwLock::new(Vec::new()),
            general: OnceLock::new(),
        };
        if plans.capacity == 0 {
            plans.general().map_err(KilnError::onnx)?;
        }
        Ok(plans)
    }

    /// The decluttered model (inputs' and outputs' facts are read from it).
    pub(super) fn model(&self) -> &TypedModel {
        &self.model
    }

    /// Whether tract's optimiser succeeds on the general (symbolic) plan; makes it if needed.
    pub(super) fn general_is_optimized(&self) -> bool {
        matches!(self.general(), Ok((_, true)))
    }

    /// The plan for inputs of these shapes (already checked against the model).
    pub(super) fn for_shapes(&self, shapes: &[&[usize]]) -> Result<Arc<TypedRunnableModel>> {
        if self.capacity == 0 {
            return self
                .general()
                .map(|(p, _)| p.clone())
                .map_err(KilnError::onnx);
        }
        let key: Vec<usize> = self.free.iter().map(|(_, i, a)| shapes[*i][*a]).collect();
        let find = |list: &[(Vec<usize>, Arc<TypedRunnableModel>)]| {
            list.iter().find(|(k, _)| *k == key).map(|(_, p)| p.clone())
        };
        // A poisoned lock only means a panic elsewhere while it was held; the list is still whole
        // (entries are pushed complete), so carry on with it.
        if let Some(plan) = find(&self.specialised.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(plan);
        }
        // Held while optimising, so two threads wanting the same new shape optimise it once.
        let mut list = self.specialised.write().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = find(&list) {
            return Ok(plan);
        }
        if list.len() >= self.capacity {
            drop(list);
            return self
                .general()
                .map(|(p, _)| p.clone())
                .map_err(KilnError::onnx);
        }
        let plan = match self.specialise(&key) {
            Some(plan) => plan,
            // Remembered under this key too, so the failing optimisation is not retried per run.
            None => self
                .general()
                .map(|(p, _)| p.clone())
                .map_err(KilnError::onnx)?,
        };
        list.push((key, plan.clone()));
        Ok(plan)
    }

    /// Substitutes the free dimensions' values and optimises; `None` if tract fails on that.
    fn specialise(&self, values: &[usize]) -> Option<Arc<TypedRunnableModel>> {
        let subs: HashMap<Symbol, TDim> = self
            .free
            .iter()
            .zip(values)
            .map(|((s, _, _), v)| (s.clone(), TDim::Val(*v as i64)))
            .collect();
        let built = catch_unwind(AssertUnwindSafe(|| {
            self.model
                .set_symbols(&subs)?
                .into_optimized()?
                .into_runnable()
        }));
        built.ok()?.ok()
    }

    /// The general plan: optimised with the free dimensions symbolic, or the decluttered graph
    /// when the optimiser fails on it (right answers, only slower).
    fn general(&self) -> std::result::Result<&Built, String> {
        self.general
            .get_or_init(|| {
                let optimized = catch_unwind(AssertUnwindSafe(|| {
                    self.model.clone().into_optimized()?.into_runnable()
                }));
                if let Ok(Ok(plan)) = optimized {
                    return Ok((plan, true));
                }
                match catch_unwind(AssertUnwindSafe(|| self.model.clone().into_runnable())) {
                    Ok(Ok(plan)) => Ok((plan, false)),
                    Ok(Err(e)) => Err(format!("cannot load the ONNX model: {}", describe(&e))),
                    Err(p) => Err(format!(
                        "tract panicked while loading the model: {}",
                        panic_message(p)
                    )),
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Bytes of the model's constant tensors (its weights, mostly).
fn weight_bytes(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| n.inputs.is_empty())
        .flat_map(|n| n.outputs.iter())
        .filter_map(|o| o.fact.konst.as_ref())
        .map(|k| k.len() * k.datum_type().size_of())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y = x + c` with `x: [N, k]` (N free) and a constant `c: [1, k]`.
    fn add_const(k: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let n = model.symbols.sym("N");
        let x = model
            .add_source("x", f32::fact([n.to_dim(), k.to_dim()]))
            .unwrap();
        let c = model
            .add_const("c", Tensor::from_shape(&[1, k], &vec![0.5f32; k]).unwrap())
            .unwrap();
        let y = model
            .wire_node("add", tract_onnx::tract_core::ops::math::add(), &[x, c])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        model.into_decluttered().unwrap()
    }

    fn run(plan: &Arc<TypedRunnableModel>, batch: usize, k: usize) -> Vec<f32> {
        let x = Tensor::from_shape(&[batch, k], &vec![1.0f32; batch * k]).unwrap();
        let out = plan.run(tvec!(x.into_tvalue())).unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn one_plan_per_batch_size_up_to_the_cap_then_the_general_one() {
        let plans = Plans::new(add_const(3)).unwrap();
        assert_eq!(plans.capacity, MAX_PLANS);
        let mut seen = Vec::new();
        for batch in 1..=MAX_PLANS + 3 {
            let plan = plans.for_shapes(&[&[batch, 3]]).unwrap();
            // A specialised plan knows its batch size: its input fact is concrete.
            let fact = plan.model().input_fact(0).unwrap();
            assert_eq!(
                fact.shape.is_concrete(),
                batch <= MAX_PLANS,
                "batch {batch}"
            );
            assert_eq!(run(&plan, batch, 3), vec![1.5; batch * 3]);
            seen.push(plan);
        }
        assert_eq!(plans.specialised.read().unwrap().len(), MAX_PLANS);
        // The same size again gets the same plan, not a new one.
        assert!(Arc::ptr_eq(
            &seen[1],
            &plans.for_shapes(&[&[2, 3]]).unwrap()
        ));
        let general = plans.general().unwrap().0.clone();
        assert!(Arc::ptr_eq(&seen[MAX_PLANS], &general));
        assert!(plans.general_is_optimized());
    }

    #[test]
    fn heavy_weights_get_fewer_specialised_plans() {
        // 3 Mi floats = 12 MiB of weights: 64 MiB / 12 MiB leaves room for 5 copies.
        let plans = Plans::new(add_const(3 << 20)).unwrap();
        assert_eq!(plans.capacity, 5);
        assert_eq!(weight_bytes(&plans.model), 12 << 20);
    }

    #[test]
    fn a_model_without_free_dimensions_is_planned_at_load() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3])).unwrap();
        model.select_output_outlets(&[x]).unwrap();
        let plans = Plans::new(model).unwrap();
        assert_eq!(plans.capacity, 0);
        assert!(plans.general.get().is_some());
        let plan = plans.for_shapes(&[&[2, 3]]).unwrap();
        assert_eq!(run(&plan, 2, 3), vec![1.0; 6]);
    }
}
