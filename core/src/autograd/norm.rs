//! Batch normalisation, layer normalisation and embedding lookup.

use ndarray::{Array1, Array3, ArrayD, Axis, IxDyn};

use super::tape::{Tape, Tensor, Var};
use crate::{shape_err, value_err, Result};

/// Batch statistics from a training-mode [`Tape::batch_norm`]: per-channel mean and *biased* variance,
/// plus how many values each was computed from (for the unbiased running-variance update).
pub struct BatchStats {
    /// Mean of each channel over the batch and spatial positions.
    pub mean: Array1<f32>,
    /// Biased variance of each channel.
    pub var: Array1<f32>,
    /// Number of values per channel.
    pub count: usize,
}

/// `x` as `[N, C, S]`, S being the product of the spatial dimensions (1 for `[N, C]`).
fn as_ncs(x: &Tensor) -> Array3<f32> {
    let s = x.shape();
    let spatial: usize = s[2..].iter().product();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((s[0], s[1], spatial))
        .unwrap()
}

fn per_channel(v: &Array1<f32>) -> ndarray::ArrayView3<'_, f32> {
    v.view().into_shape_with_order((1, v.len(), 1)).unwrap()
}

impl Tape {
    /// Batch normalisation over every axis but the channel axis 1. With `running` (eval mode) the given
    /// mean and variance are used; otherwise the batch's own, which are returned for the running update.
    ///
    /// # Shapes
    /// `x: [N, C, ...]`, `weight`, `bias`: `[C]` → same as `x`
    pub fn batch_norm(
        &mut self,
        x: Var,
        weight: Var,
        bias: Var,
        running: Option<(&Array1<f32>, &Array1<f32>)>,
        eps: f32,
    ) -> Result<(Var, Option<BatchStats>)> {
        let sx = self.shape(x).to_vec();
        if sx.len() < 2 {
            shape_err!("BatchNorm: expects input [N, C, ...], got {sx:?}");
        }
        let c = sx[1];
        if self.shape(weight) != [c] || self.shape(bias) != [c] {
            shape_err!(
                "BatchNorm: input {sx:?} has {c} channels but the layer has {:?}",
                self.shape(weight)
            );
        }
        let x3 = as_ncs(self.value(x));
        let count = sx[0] * x3.shape()[2];
        let (mean, var, stats) = match running {
            Some((m, v)) => {
                if m.len() != c {
                    shape_err!(
                        "BatchNorm: running statistics for {} channels, input has {c}",
                        m.len()
                    );
                }
                (m.clone(), v.clone(), None)
            }
            None => {
                if count < 2 {
                    value_err!("BatchNorm: training needs more than one value per channel, got input {sx:?}");
                }
                let mean = x3.mean_axis(Axis(2)).unwrap().mean_axis(Axis(0)).unwrap();
                let centred = &x3 - &per_channel(&mean);
                let var = (&centred * &centred)
                    .mean_axis(Axis(2))
                    .unwrap()
                    .mean_axis(Axis(0))
                    .unwrap();
                (
                    mean.clone(),
                    var.clone(),
                    Some(BatchStats { mean, var, count }),
                )
            }
        };
        let invstd = var.mapv(|v| 1.0 / (v + eps).sqrt());
        let xhat = (&x3 - &per_channel(&mean)) * per_channel(&invstd);
        let w: Array1<f32> = self.value(weight).clone().into_dimensionality().unwrap();
        let b: Array1<f32> = self.value(bias).clone().into_dimensionality().unwrap();
        let y = (&xhat * &per_channel(&w) + per_channel(&b))
            .into_shape_with_order(IxDyn(&sx))
            .unwrap();
        let batch_stats = running.is_none();
        let v = self.push(y, &[x, weight, bias], move |ctx, g| {
            let g3 = as_ncs(g);
            let sum_c = |a: &Array3<f32>| a.sum_axis(Axis(2)).sum_axis(Axis(0));
            let dgamma = sum_c(&(&g3 * &xhat));
            let dbeta = sum_c(&g3);
            let dx = ctx.needs(0).then(|| {
                let dxhat = &g3 * &per_channel(&w);
                let dx = if batch_stats {
                    // dx = invstd/m · (m·dx̂ - Σdx̂ - x̂·Σ(dx̂·x̂)), sums per channel
                    let m = count as f32;
                    let s1 = sum_c(&dxhat);
                    let s2 = sum_c(&(&dxhat * &xhat));
                    (&dxhat * m - per_channel(&s1) - &(&xhat * &per_channel(&s2)))
                        * per_channel(&invstd.mapv(|v| v / m))
                } else {
                    &dxhat * &per_channel(&invstd)
                };
                dx.into_shape_with_order(ctx.input(0).raw_dim()).unwrap()
            });
            vec![dx, Some(dgamma.into_dyn()), Some(dbeta.into_dyn())]
        });
        Ok((v, stats))
    }

    /// Layer normalisation over the last `normalized_dims` axes, with elementwise affine parameters.
    ///
    /// # Shapes
    /// `x: [..., *normalized_shape]`, `weight`, `bias`: `normalized_shape` → same as `x`
    pub fn layer_norm(&mut self, x: Var, weight: Var, bias: Var, eps: f32) -> Result<Var> {
        let sx = self.shape(x).to_vec();
        let ns = self.shape(weight).to_vec();
        if sx.len() < ns.len() || sx[sx.len() - ns.len()..] != ns[..] || self.shape(bias) != ns {
            shape_err!("LayerNorm: input {sx:?} does not end with normalized_shape {ns:?}");
        }
        let d: usize = ns.iter().product();
        let rows = self.value(x).len() / d.max(1);
        let x2 = self
            .value(x)
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, d))
            .unwrap();
        let mean = x2.mean_axis(Axis(1)).unwrap().insert_axis(Axis(1));
        let centred = &x2 - &mean;
        let var = (&centred * &centred)
            .mean_axis(Axis(1))
            .unwrap()
            .insert_axis(Axis(1));
        let invstd = var.mapv(|v| 1.0 / (v + eps).sqrt());
        let xhat = centred * &invstd;
        let w = self
            .value(weight)
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((1, d))
            .unwrap();
        let b = self
            .value(bias)
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((1, d))
            .unwrap();
        let y = (&xhat * &w + &b).into_shape_with_order(IxDyn(&sx)).unwrap();
        Ok(self.push(y, &[x, weight, bias], move |ctx, g| {
            let g2 = g
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((rows, d))
                .unwrap();
            let dw = (&g2 * &xhat)
                .sum_axis(Axis(0))
                .into_shape_with_order(IxDyn(&ns))
                .unwrap();
            let db = g2
                .sum_axis(Axis(0))
                .into_shape_with_order(IxDyn(&ns))
                .unwrap();
            let dx = ctx.needs(0).then(|| {
                let dxhat = &g2 * &w;
                let s1 = dxhat.sum_axis(Axis(1)).insert_axis(Axis(1));
                let s2 = (&dxhat * &xhat).sum_axis(Axis(1)).insert_axis(Axis(1));
                let m = d as f32;
                ((&dxhat * m - &s1 - &(&xhat * &s2)) * &invstd.mapv(|v| v / m))
                    .into_shape_with_order(IxDyn(&sx))
                    .unwrap()
            });
            vec![dx, Some(dw), Some(db)]
        }))
    }

    /// Rows of `table` picked by integer `ids`; the output has `ids`' shape plus the embedding width.
    ///
    /// # Shapes
    /// `table: [num_embeddings, dim]`, `ids: [...]` → `[..., dim]`
    pub fn embedding(&mut self, table: Var, ids: &ArrayD<usize>) -> Result<Var> {
        let st = self.shape(table).to_vec();
        if st.len() != 2 {
            shape_err!("Embedding: table must be [num_embeddings, dim], got {st:?}");
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= st[0]) {
            value_err!(
                "Embedding: index {bad} is out of range for {} embeddings",
                st[0]
            );
        }
        let flat: Vec<usize> = ids.iter().copied().collect();
        let rows = crate::arrays::take(self.value(table), 0, &flat);
        let mut shape = ids.shape().to_vec();
        shape.push(st[1]);
        let y = rows.into_shape_with_order(IxDyn(&shape)).unwrap();
        Ok(self.push(y, &[table], move |ctx, g| {
            let mut dt = ArrayD::<f32>::zeros(ctx.input(0).raw_dim());
            let g2 = g.to_shape((flat.len(), st[1])).unwrap();
            for (r, &i) in flat.iter().enumerate() {
                let mut row = dt.index_axis_mut(Axis(0), i);
                row += &g2.row(r);
            }
            vec![Some(dt)]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;

    #[test]
    fn batch_norm_gradients_train_and_eval() {
        check(&[&[6, 3], &[3], &[3]], |t, v| {
            t.batch_norm(v[0], v[1], v[2], None, 1e-5).unwrap().0
        });
        check(&[&[3, 2, 3, 2], &[2], &[2]], |t, v| {
            t.batch_norm(v[0], v[1], v[2], None, 1e-5).unwrap().0
        });
        let (m, var) = (Array1::from(vec![0.1, -0.2]), Array1::from(vec![0.5, 2.0]));
        check(&[&[3, 2, 2, 2], &[2], &[2]], |t, v| {
            t.batch_norm(v[0], v[1], v[2], Some((&m, &var)), 1e-5)
                .unwrap()
                .0
        });
    }

    #[test]
    fn batch_norm_normalises_and_reports_stats() {
        let mut t = Tape::new(true, 0);
        let x = t.leaf(
            ArrayD::from_shape_vec(IxDyn(&[4, 1]), vec![1., 2., 3., 4.]).unwrap(),
            false,
        );
        let w = t.leaf(ArrayD::ones(IxDyn(&[1])), true);
        let b = t.leaf(ArrayD::zeros(IxDyn(&[1])), true);
        let (y, stats) = t.batch_norm(x, w, b, None, 0.0).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.mean[0], stats.var[0], stats.count), (2.5, 1.25, 4));
        assert!(t.value(y).mean().unwrap().abs() < 1e-6);
    }

    #[test]
    fn layer_norm_gradients() {
        check(&[&[4, 5], &[5], &[5]], |t, v| {
            t.layer_norm(v[0], v[1], v[2], 1e-5).unwrap()
        });
        check(&[&[2, 3, 4], &[3, 4], &[3, 4]], |t, v| {
            t.layer_norm(v[0], v[1], v[2], 1e-5).unwrap()
        });
    }

    #[test]
    fn embedding_gradient_and_errors() {
        let ids = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0, 2, 2, 1, 0, 4]).unwrap();
        check(&[&[5, 3]], |t, v| t.embedding(v[0], &ids).unwrap());
        let mut t = Tape::inference();
        let table = t.constant(ArrayD::zeros(IxDyn(&[3, 2])));
        let e = t.embedding(table, &ids).unwrap_err().to_string();
        assert!(e.contains("index 4"), "{e}");
    }
}
