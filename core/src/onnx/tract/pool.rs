//! Max pooling over non-overlapping windows (kernel = stride, no padding, f32, NCHW): the pool
//! of nearly every small CNN (`MaxPool(2, 2)` after a conv).
//!
//! Why kiln has its own: tract 0.23.9 vectorises only the stride-1 2x2 pool; stride 2 runs a
//! scalar loop with bounds checks on every tap and `f32::max`, which on wasm32 is a call to
//! `fmaxf` (wasm's `f32.max` propagates NaN, Rust's `max` must not). Profiled on the digits CNN in
//! Node, the two MaxPools were 17 % of a batch-1 run and 24 % at batch 64. Here the windows
//! are walked row by row with a compare-and-select, which the compiler turns into straight-line
//! (and, with simd128, vector) code. NaN is ignored like tract's `max` does, so results match
//! tract's pool; a window of only NaN gives -inf (tract: f32::MIN).
//!
//! [`use_tiled_max_pools`] swaps tract's `MaxPool` for [`TiledMaxPool`] in a decluttered model
//! where the pool fits; every other pool stays tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// MaxPool with a `kh` x `kw` kernel and the same strides, no padding, f32 NCHW.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(super) struct TiledMaxPool {
    kh: usize,
    kw: usize,
}

impl TiledMaxPool {
    /// This op for tract's `pool` over an input of `fact`, if the pool is of that kind.
    fn for_pool(pool: &MaxPool, fact: &TypedFact) -> Option<TiledMaxPool> {
        let spec = &pool.pool_spec;
        let kernel = &spec.kernel_shape;
        let no_padding = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|p| *p == 0),
            // With ceil_mode a partial last window counts: not this op's geometry.
            PaddingSpec::ExplicitOnnxPool(before, after, ceil) => {
                !ceil && before.iter().chain(after).all(|p| *p == 0)
            }
            PaddingSpec::SameUpper | PaddingSpec::SameLower => false,
        };
        let fits = pool.with_index_outputs.is_none()
            && spec.data_format == DataFormat::NCHW
            && kernel.len() == 2
            && spec.strides.as_deref() == Some(&kernel[..])
            && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|d| *d == 1))
            && no_padding
            && fact.datum_type == f32::datum_type()
            && fact.rank() == 4
            // output_facts divides H and W: they must be known (the batch may stay symbolic)
            && fact.shape[2].to_usize().is_ok()
            && fact.shape[3].to_usize().is_ok();
        fits.then(|| TiledMaxPool {
            kh: kernel[0],
            kw: kernel[1],
        })
    }
}

impl Op for TiledMaxPool {
    fn name(&self) -> StaticName {
        "TiledMaxPool".into()
    }

    op_as_typed_op!();
}

impl EvalOp for TiledMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!(
                "TiledMaxPool wants an NCHW input, got shape {:?}",
                input.shape()
            );
        };
        let (oh, ow) = (h / self.kh, w / self.kw);
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out = vec![0f32; n * c * oh * ow];
        if oh > 0 && ow > 0 {
            for (plane, o) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                self.pool_plane(plane, w, o, ow);
            }
        }
        Ok(tvec!(
            Tensor::from_shape(&[n, c, oh, ow], &out)?.into_tvalue()
        ))
    }
}

impl TiledMaxPool {
    /// One channel plane (`w` wide) into its pooled plane (`ow` wide).
    ///
    /// Plain `while` loops on indices, not iterator adapters: the wasm build compiles kiln-core
    /// for size (`opt-level = "z"`), which leaves adapters like `zip`/`chunks_exact` as calls
    /// per element (measured: the pool then made the digits CNN slower than tract's own).
    fn pool_plane(&self, plane: &[f32], w: usize, out: &mut [f32], ow: usize) {
        let (kh, kw) = (self.kh, self.kw);
        let oh = out.len() / ow;
        let mut oy = 0;
        while oy < oh {
            let orow = &mut out[oy * ow..(oy + 1) * ow];
            let mut ox = 0;
            while ox < ow {
                orow[ox] = f32::NEG_INFINITY;
                ox += 1;
            }
            let mut ky = 0;
            while ky < kh {
                let row = &plane[(oy * kh + ky) * w..][..ow * kw];
                let mut ox = 0;
                if kw == 2 {
                    // the common case, written out so it compiles to pairwise selects
                    while ox < ow {
                        orow[ox] = greater(greater(orow[ox], row[2 * ox]), row[2 * ox + 1]);
                        ox += 1;
                    }
                } else {
                    while ox < ow {
                        let mut m = orow[ox];
                        let mut kx = 0;
                        while kx < kw {
                            m = greater(m, row[ox * kw + kx]);
                            kx += 1;
                        }
                        orow[ox] = m;
                        ox += 1;
                    }
                }
                ky += 1;
            }
            oy += 1;
        }
    }
}

/// `v` if it is greater than `m`, else `m`: a compare and a select (no `fmaxf` call on wasm);
/// a NaN `v` is ignored.
#[inline(always)]
fn greater(m: f32, v: f32) -> f32 {
    if v > m {
        v
    } else {
        m
    }
}

impl TypedOp for TiledMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        let (h, w) = (s[2].to_usize()?, s[3].to_usize()?);
        Ok(tvec!(f32::fact([
            s[0].clone(),
            s[1].clone(),
            (h / self.kh).to_dim(),
            (w / self.kw).to_dim(),
        ])))
    }

    as_op!();
}

/// Replaces each of tract's MaxPools in `model` that [`TiledMaxPool`] covers.
pub(super) fn use_tiled_max_pools(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else {
            continue;
        };
        let Some(op) = TiledMaxPool::for_pool(pool, model.outlet_fact(node.inputs[0])?) else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    fn tract_pool(k: usize, padding: PaddingSpec) -> MaxPool {
        MaxPool::new(
            PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(k, k),
                padding,
                dilations: None,
                strides: Some(tvec!(k, k)),
                input_channels: 3,
                output_channels: 3,
            },
            None,
        )
    }

    /// A model `x -> MaxPool -> y`, run by tract as is and after the swap; both must agree.
    fn compare(k: usize, h: usize, w: usize) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3, h, w])).unwrap();
        let y = model
            .wire_node("pool", tract_pool(k, PaddingSpec::Valid), &[x])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let mut swapped = model.clone();
        use_tiled_max_pools(&mut swapped).unwrap();
        assert!(swapped.nodes().iter().any(|n| n.op_is::<TiledMaxPool>()));
        // values with ties, negatives and a NaN (ignored by both)
        let mut data: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        data[5] = f32::NAN;
        let input = Tensor::from_shape(&[2, 3, h, w], &data).unwrap();
        let run = |m: TypedModel| {
            let out = m
                .into_runnable()
                .unwrap()
                .run(tvec!(input.clone().into_tvalue()))
                .unwrap();
            out[0].clone().into_tensor()
        };
        let (want, got) = (run(model), run(swapped));
        assert_eq!(got.shape(), want.shape(), "k {k}, {h}x{w}");
        assert_eq!(
            got.to_plain_array_view::<f32>().unwrap(),
            want.to_plain_array_view::<f32>().unwrap(),
            "k {k}, {h}x{w}"
        );
    }

    #[test]
    fn matches_tracts_pool() {
        for (k, h, w) in [(2, 8, 8), (2, 7, 9), (3, 9, 6), (3, 10, 11), (2, 3, 2)] {
            compare(k, h, w);
        }
    }

    #[test]
    fn other_pools_stay_tracts() {
        let fact = f32::fact([1, 3, 8, 8]);
        let padded = PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1));
        assert!(TiledMaxPool::for_pool(&tract_pool(2, padded), &fact).is_none());
        let ceil = PaddingSpec::ExplicitOnnxPool(tvec!(0, 0), tvec!(0, 0), true);
        assert!(TiledMaxPool::for_pool(&tract_pool(2, ceil), &fact).is_none());
        let mut overlapping = tract_pool(3, PaddingSpec::Valid);
        overlapping.pool_spec.strides = Some(tvec!(1, 1));
        assert!(TiledMaxPool::for_pool(&overlapping, &fact).is_none());
        let ints = i32::fact([1, 3, 8, 8]);
        assert!(TiledMaxPool::for_pool(&tract_pool(2, PaddingSpec::Valid), &ints).is_none());
        assert!(TiledMaxPool::for_pool(&tract_pool(2, PaddingSpec::Valid), &fact).is_some());
    }
}
