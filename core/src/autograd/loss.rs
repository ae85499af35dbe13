//! Loss functions as fused ops: each returns a scalar (mean over the batch) with its own backward rule.

use ndarray::{ArrayD, IxDyn, Zip};

use super::tape::{Tape, Tensor, Var};
use super::vmath::{exp_nonpositive, log_sum_exp_rows, simd_dispatch};
use crate::{shape_err, value_err, Result};

fn scalar(v: f32) -> Tensor {
    ArrayD::from_elem(IxDyn(&[]), v)
}

fn same_shape(op: &str, pred: &[usize], target: &[usize]) -> Result<()> {
    if pred != target {
        shape_err!("{op}: predictions of shape {pred:?} and targets of shape {target:?} differ");
    }
    Ok(())
}

impl Tape {
    /// Mean squared error.
    pub fn mse_loss(&mut self, pred: Var, target: &Tensor) -> Result<Var> {
        same_shape("mse", self.shape(pred), target.shape())?;
        let diff = self.value(pred) - target;
        let n = diff.len().max(1) as f32;
        let y = scalar(diff.iter().map(|d| d * d).sum::<f32>() / n);
        // d/dp mean((p-t)²) = 2(p-t)/n
        Ok(self.push(y, &[pred], move |_, g| {
            vec![Some(&diff * (2.0 * g.sum() / n))]
        }))
    }

    /// Mean absolute error.
    pub fn mae_loss(&mut self, pred: Var, target: &Tensor) -> Result<Var> {
        same_shape("mae", self.shape(pred), target.shape())?;
        let diff = self.value(pred) - target;
        let n = diff.len().max(1) as f32;
        let y = scalar(diff.iter().map(|d| d.abs()).sum::<f32>() / n);
        Ok(self.push(y, &[pred], move |_, g| {
            let s = g.sum() / n;
            vec![Some(diff.mapv(|d| {
                if d > 0.0 {
                    s
                } else if d < 0.0 {
                    -s
                } else {
                    0.0
                }
            }))]
        }))
    }

    /// Huber loss (PyTorch's `HuberLoss`): quadratic within `delta`, linear beyond.
    pub fn huber_loss(&mut self, pred: Var, target: &Tensor, delta: f32) -> Result<Var> {
        same_shape("huber", self.shape(pred), target.shape())?;
        if delta <= 0.0 {
            value_err!("huber: delta must be positive, got {delta}");
        }
        let diff = self.value(pred) - target;
        let n = diff.len().max(1) as f32;
        let total: f32 = diff
            .iter()
            .map(|&d| {
                if d.abs() <= delta {
                    0.5 * d * d
                } else {
                    delta * (d.abs() - 0.5 * delta)
                }
            })
            .sum();
        Ok(self.push(scalar(total / n), &[pred], move |_, g| {
            let s = g.sum() / n;
            vec![Some(diff.mapv(|d| s * d.clamp(-delta, delta)))]
        }))
    }

    /// Cross-entropy between `logits` `[N, C]` and integer class `labels`, as PyTorch's
    /// `cross_entropy(logits, labels, weight, label_smoothing)` with mean reduction: the weighted sum
    /// divided by the sum of the labels' weights. Logits `[N, T, C]` (classes on the last axis)
    /// take `N·T` labels, row-major: a language model's loss over every position, as PyTorch's
    /// `cross_entropy(logits.reshape(-1, C), labels.reshape(-1))`.
    pub fn cross_entropy(
        &mut self,
        logits: Var,
        labels: &[usize],
        class_weights: Option<&[f32]>,
        label_smoothing: f32,
    ) -> Result<Var> {
        self.cross_entropy_ignoring(logits, labels, class_weights, label_smoothing, None)
    }

    /// [`cross_entropy`](Self::cross_entropy) where labels equal to `ignore` (a batch's padding)
    /// count for nothing: PyTorch's `ignore_index`, the mean over the other labels. A batch whose
    /// labels are all ignored has loss 0 and no gradient.
    pub fn cross_entropy_ignoring(
        &mut self,
        logits: Var,
        labels: &[usize],
        class_weights: Option<&[f32]>,
        label_smoothing: f32,
        ignore: Option<usize>,
    ) -> Result<Var> {
        let s = self.shape(logits).to_vec();
        let rows: usize = s[..s.len().saturating_sub(1)].iter().product();
        if s.len() < 2 || rows != labels.len() {
            shape_err!(
                "cross_entropy: logits of shape {s:?} need shape [N, classes] with N = {} labels \
                 (or [N, T, classes] with N·T labels)",
                labels.len()
            );
        }
        let (n, c) = (rows, s[s.len() - 1]);
        let counts = |l: &usize| Some(*l) != ignore;
        if let Some(&bad) = labels.iter().filter(|l| counts(l)).find(|&&l| l >= c) {
            value_err!(
                "cross_entropy: label {bad} is out of range for {c} classes (labels must be 0..{})",
                c.saturating_sub(1)
            );
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            value_err!("cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}");
        }
        let ones = vec![1.0; c];
        let w = class_weights.unwrap_or(&ones);
        if w.len() != c {
            shape_err!("cross_entropy: {} class weights for {c} classes", w.len());
        }
        let z: f32 = labels.iter().filter(|l| counts(l)).map(|&l| w[l]).sum();
        if labels.iter().all(|l| !counts(l)) {
            return Ok(self.push(scalar(0.0), &[logits], move |_, _| vec![None]));
        }
        if z <= 0.0 {
            value_err!(
                "cross_entropy: the labels' class weights sum to {z}; they must be positive"
            );
        }
        // The target distribution q, already divided by Z: on a counted row with label l,
        // q[j] = smooth·w[j] + hit·[j = l] (ignored rows: q = 0). Kept as two numbers per row.
        let eps = label_smoothing;
        let smooth = (eps / c as f32) / z;
        let w_total: f32 = w.iter().sum();
        let x = self.value(logits).as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut lse = vec![0.0f32; n];
        log_sum_exp_rows(xs, c, &mut lse);
        let mut hit = vec![0.0f32; n];
        let mut loss = 0.0f32;
        for (i, (&l, row)) in labels.iter().zip(xs.chunks_exact(c)).enumerate() {
            if !counts(&l) {
                continue;
            }
            hit[i] = (1.0 - eps) * w[l] / z;
            // -Σ_j q[j]·log p[j], log p[j] = x[j] - lse
            loss += hit[i] * (lse[i] - row[l]);
            if eps > 0.0 {
                let spread: f32 = row.iter().zip(w).map(|(&v, &wj)| wj * (lse[i] - v)).sum();
                loss += smooth * spread;
            }
        }
        drop(x);
        let labels = labels.to_vec();
        let ws = w.to_vec();
        Ok(self.push(scalar(loss), &[logits], move |ctx, g| {
            // d/dlogit[i,j] = p[i,j] · Σ_c q[i,c] - q[i,j]
            let x = ctx.input(0).as_standard_layout();
            let mut grad = vec![0.0f32; n * c];
            let rows = CeRows {
                c,
                lse: &lse,
                hit: &hit,
                labels: &labels,
                ignore,
                smooth,
                w: &ws,
                w_total,
                scale: g.sum(),
            };
            cross_entropy_grad(x.as_slice().expect("standard layout"), &rows, &mut grad);
            vec![Some(
                ArrayD::from_shape_vec(IxDyn(&s), grad).expect("same size"),
            )]
        }))
    }

    /// Binary cross-entropy on logits (PyTorch's `binary_cross_entropy_with_logits`), mean reduction.
    pub fn bce_with_logits(&mut self, logits: Var, target: &Tensor) -> Result<Var> {
        same_shape("binary_cross_entropy", self.shape(logits), target.shape())?;
        let x = self.value(logits);
        let n = x.len().max(1) as f32;
        // max(x,0) - x·y + log(1 + e^-|x|), stable for any x
        let total = Zip::from(x).and(target).fold(0.0f32, |acc, &x, &y| {
            acc + x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
        });
        let target = target.clone();
        Ok(self.push(scalar(total / n), &[logits], move |c, g| {
            let s = g.sum() / n;
            vec![Some(
                Zip::from(c.input(0))
                    .and(&target)
                    .map_collect(|&x, &y| s * (1.0 / (1.0 + (-x).exp()) - y)),
            )]
        }))
    }
}

/// What [`cross_entropy_grad`] needs of the forward pass, per row of logits.
struct CeRows<'a> {
    c: usize,
    lse: &'a [f32],
    /// The target's weight on the row's own label, `(1 − ε)·w[l] / Z` (0 on ignored rows).
    hit: &'a [f32],
    labels: &'a [usize],
    ignore: Option<usize>,
    /// `ε / C / Z`: the smoothing's share of each class, times its weight.
    smooth: f32,
    w: &'a [f32],
    w_total: f32,
    /// The loss's incoming gradient.
    scale: f32,
}

/// `grad[i, j] = (p[i, j]·Σ_c q[i, c] − q[i, j]) · scale`, `p = e^(x − lse)`, in one pass.
#[inline(always)]
fn cross_entropy_grad_body(x: &[f32], r: &CeRows, grad: &mut [f32]) {
    let c = r.c;
    for (i, (row, out)) in x.chunks_exact(c).zip(grad.chunks_exact_mut(c)).enumerate() {
        let l = r.labels[i];
        if Some(l) == r.ignore {
            continue;
        }
        let qsum = r.hit[i] + r.smooth * r.w_total;
        let (lse, k) = (r.lse[i], qsum * r.scale);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = exp_nonpositive(v - lse) * k;
        }
        if r.smooth != 0.0 {
            for (o, &wj) in out.iter_mut().zip(r.w) {
                *o -= r.smooth * wj * r.scale;
            }
        }
        out[l] -= r.hit[i] * r.scale;
    }
}
simd_dispatch!(cross_entropy_grad, cross_entropy_grad_avx2, cross_entropy_grad_body, (x: &[f32], r: &CeRows, grad: &mut [f32]));

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check, random_inputs};
    use super::*;
    use ndarray::Axis;

    #[test]
    fn regression_losses_gradients() {
        let t0 = random_inputs(&[&[4, 3]], 21).remove(0);
        check(&[&[4, 3]], |t, v| t.mse_loss(v[0], &t0).unwrap());
        check(&[&[4, 3]], |t, v| t.mae_loss(v[0], &t0).unwrap());
        check(&[&[4, 3]], |t, v| {
            t.huber_loss(v[0], &(&t0 * 2.0), 0.5).unwrap()
        });
    }

    #[test]
    fn classification_losses_gradients() {
        check(&[&[5, 4]], |t, v| {
            t.cross_entropy(v[0], &[0, 3, 1, 1, 2], None, 0.0).unwrap()
        });
        check(&[&[5, 4]], |t, v| {
            t.cross_entropy(v[0], &[0, 3, 1, 1, 2], Some(&[1.0, 2.0, 0.5, 1.5]), 0.1)
                .unwrap()
        });
        let y = random_inputs(&[&[6, 2]], 3)
            .remove(0)
            .mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
        check(&[&[6, 2]], |t, v| t.bce_with_logits(v[0], &y).unwrap());
    }

    #[test]
    fn cross_entropy_over_many_classes_matches_its_definition() {
        // 11 classes: a block of LANES and a tail in the log-sum-exp and gradient loops; class
        // weights, smoothing and an ignored label together
        let w: Vec<f32> = (0..11).map(|j| 0.5 + j as f32 * 0.1).collect();
        let labels = [0, 10, 3, 7, 0];
        check(&[&[5, 11]], |t, v| {
            t.cross_entropy_ignoring(v[0], &labels, Some(&w), 0.2, Some(7))
                .unwrap()
        });
        let x = random_inputs(&[&[5, 11]], 9).remove(0) * 6.0;
        let mut t = Tape::inference();
        let xv = t.constant(x.clone());
        let l = t
            .cross_entropy_ignoring(xv, &labels, Some(&w), 0.2, Some(7))
            .unwrap();
        let got = t.value(l)[[]] as f64;
        let (eps, c) = (0.2f64, 11.0f64);
        let kept: Vec<usize> = (0..5).filter(|&i| labels[i] != 7).collect();
        let z: f64 = kept.iter().map(|&i| w[labels[i]] as f64).sum();
        let mut want = 0.0f64;
        for &i in &kept {
            let row: Vec<f64> = (0..11).map(|j| x[[i, j]] as f64).collect();
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            for (j, &v) in row.iter().enumerate() {
                let hit = if j == labels[i] {
                    (1.0 - eps) * w[j] as f64
                } else {
                    0.0
                };
                want -= (eps / c * w[j] as f64 + hit) / z * (v - lse);
            }
        }
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn cross_entropy_at_training_scale_matches_float64_in_loss_and_gradient() {
        // a language model's batch: 512 rows of 61 classes, logits up to ±40 (far from the
        // gradient check's small values), plain labels: the float32 one-pass loss and every
        // gradient against the float64 definition, to float32 rounding
        let (n, c) = (512usize, 61usize);
        let x = random_inputs(&[&[n, c]], 3).remove(0) * 40.0;
        let labels: Vec<usize> = (0..n).map(|i| (i * 37 + 5) % c).collect();
        let mut t = Tape::new(true, 0);
        let xv = t.leaf(x.clone(), true);
        let l = t.cross_entropy(xv, &labels, None, 0.0).unwrap();
        let got = t.value(l)[[]] as f64;
        t.backward(l).unwrap();
        let grad = t.grad(xv).unwrap().clone();
        let mut want = 0.0f64;
        for (i, &label) in labels.iter().enumerate() {
            let row: Vec<f64> = (0..c).map(|j| x[[i, j]] as f64).collect();
            let top = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v));
            let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
            want += (lse - row[label]) / n as f64;
            for (j, &v) in row.iter().enumerate() {
                let g = ((v - lse).exp() - if j == label { 1.0 } else { 0.0 }) / n as f64;
                let have = grad[[i, j]] as f64;
                assert!(
                    (have - g).abs() < 1e-8 + 1e-5 * g.abs(),
                    "[{i}, {j}]: {have} vs {g}"
                );
            }
        }
        assert!((got - want).abs() < 1e-5 * want.abs(), "{got} vs {want}");
    }

    #[test]
    fn sequence_cross_entropy_is_the_mean_over_every_position() {
        // [2, 3, 4] logits against [2, 3] labels: the same loss and gradients as [6, 4] against 6
        check(&[&[2, 3, 4]], |t, v| {
            t.cross_entropy(v[0], &[0, 3, 1, 1, 2, 0], Some(&[1.0, 2.0, 0.5, 1.5]), 0.1)
                .unwrap()
        });
        let x = random_inputs(&[&[2, 3, 4]], 9).remove(0);
        let labels = [0, 3, 1, 1, 2, 0];
        let mut t = Tape::new(true, 0);
        let a = t.leaf(x.clone(), true);
        let b = t.leaf(x.into_shape_with_order(IxDyn(&[6, 4])).unwrap(), true);
        let la = t.cross_entropy(a, &labels, None, 0.0).unwrap();
        let lb = t.cross_entropy(b, &labels, None, 0.0).unwrap();
        assert_eq!(t.value(la), t.value(lb));
        let e = t
            .cross_entropy(a, &labels[..3], None, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2, 3, 4]") && e.contains("N·T"), "{e}");
    }

    #[test]
    fn ignored_labels_count_for_nothing() {
        // the loss of [6, 4] logits with labels 1 and 4 ignored = the loss of the other four rows
        check(&[&[6, 4]], |t, v| {
            t.cross_entropy_ignoring(
                v[0],
                &[0, 2, 3, 2, 1, 2],
                Some(&[1.0, 2.0, 0.5, 1.5]),
                0.1,
                Some(2),
            )
            .unwrap()
        });
        let x = random_inputs(&[&[6, 4]], 4).remove(0);
        let mut t = Tape::new(true, 0);
        let all = t.leaf(x.clone(), true);
        let a = t
            .cross_entropy_ignoring(all, &[0, 0, 3, 1, 0, 1], None, 0.0, Some(0))
            .unwrap();
        // labels [0, 0, 3, 1, 0, 1] with 0 ignored keep rows 2, 3, 5: the loss of those rows alone
        let kept = t.leaf(x.select(Axis(0), &[2, 3, 5]), true);
        let b = t.cross_entropy(kept, &[3, 1, 1], None, 0.0).unwrap();
        assert!((t.value(a).sum() - t.value(b).sum()).abs() < 1e-6);
        // an ignored label may be out of range; all ignored: loss 0
        let c = t
            .cross_entropy_ignoring(all, &[9, 9, 9, 9, 9, 9], None, 0.0, Some(9))
            .unwrap();
        assert_eq!(t.value(c).sum(), 0.0);
    }

    #[test]
    fn cross_entropy_matches_pytorch() {
        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.], [1., -1., 0.]]), torch.tensor([2, 0]),
        //     weight=torch.tensor([1., 2., 3.]), label_smoothing=0.2)  -> 0.590939   (without extras: 0.407606)
        let mut t = Tape::new(true, 0);
        let x = t.leaf(
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1., 2., 3., 1., -1., 0.]).unwrap(),
            true,
        );
        let plain = t.cross_entropy(x, &[2, 0], None, 0.0).unwrap();
        assert!(
            (t.value(plain).sum() - 0.407_606).abs() < 1e-5,
            "{}",
            t.value(plain)
        );
        let full = t
            .cross_entropy(x, &[2, 0], Some(&[1., 2., 3.]), 0.2)
            .unwrap();
        assert!(
            (t.value(full).sum() - 0.590_939).abs() < 1e-5,
            "{}",
            t.value(full)
        );
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let mut t = Tape::new(true, 0);
        let x = t.leaf(ArrayD::zeros(IxDyn(&[2, 3])), true);
        let e = t
            .cross_entropy(x, &[0, 3], None, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 3") && e.contains("3 classes"), "{e}");
        assert!(t.cross_entropy(x, &[0], None, 0.0).is_err());
        assert!(t.mse_loss(x, &ArrayD::zeros(IxDyn(&[3, 2]))).is_err());
        assert!(t
            .huber_loss(x, &ArrayD::zeros(IxDyn(&[2, 3])), 0.0)
            .is_err());
    }
}
