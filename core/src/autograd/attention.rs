//! Multi-head scaled dot-product attention as two fused tape ops on the projections' own layout:
//! `q`, `k`, `v` are `[B, T, E]` with head `h` in columns `h·D..(h+1)·D` (what a Linear gives), so
//! no head is split off by a permute and no per-head GEMM is called.
//!
//! - [`Tape::attention_weights`]: `P = dropout(softmax(q·kᵀ/√D + mask))`, `[B, H, L, S]`;
//! - [`Tape::attention_apply`]: `O = P·v` with the heads merged back, `[B, L, E]`.
//!
//! Each is one pass over a head's rows with its backward beside it (a char transformer's heads are
//! 16×16 by 12: a general GEMM spends more on packing such tiles than on the products). Batches run
//! in parallel natively; every value is computed by the same loop whatever the thread count.

use ndarray::{ArrayD, IxDyn};
use rand::Rng;

use super::tape::{Tape, Tensor, Var};
use super::vmath::{in_blocks, load, simd_dispatch, softmax_row, store, LANES};
use crate::{shape_err, value_err, Result};

/// `f(b, block)` for every batch's block of `out` (`chunk` values each): in parallel natively
/// when `parallel` ([`Tape::parallel_ops`]), else in order.
fn per_batch(
    parallel: bool,
    out: &mut [f32],
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    #[cfg(not(target_arch = "wasm32"))]
    if parallel {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(b, block)| f(b, block));
        return;
    }
    #[cfg(target_arch = "wasm32")]
    let _ = parallel;
    out.chunks_mut(chunk)
        .enumerate()
        .for_each(|(b, block)| f(b, block));
}

/// `Σ_j a_j b_j`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Head columns `col..col + d` of `rows` rows (`e` apart) of `src`, transposed into `out`
/// (`[d, rows]`).
fn transpose_head(src: &[f32], rows: usize, e: usize, col: usize, d: usize, out: &mut [f32]) {
    for r in 0..rows {
        for (j, &v) in src[r * e + col..][..d].iter().enumerate() {
            out[j * rows + r] = v;
        }
    }
}

/// Head columns `col..col + d` of `rows` rows (`e` apart) of `src`, packed into `out` (`[rows, d]`).
fn gather_head(src: &[f32], rows: usize, e: usize, col: usize, d: usize, out: &mut [f32]) {
    for (r, dst) in out.chunks_exact_mut(d).take(rows).enumerate() {
        dst.copy_from_slice(&src[r * e + col..][..d]);
    }
}

/// `out[i·os + c] = alpha · Σ_j a[i·as + j] · b[j·n + c]` for `i < m`, `c < n`, `j < k`: a small
/// matrix product (a head's 16×12 by 12×16) with `b` contiguous. Each run of output columns is
/// summed in lanes held in registers (blocks of [`LANES`], then 4, then 1), so no output is loaded
/// and stored per term, and every output's sum runs over `j` in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn product(
    a: &[f32],
    a_stride: usize,
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    alpha: f32,
    out: &mut [f32],
    out_stride: usize,
) {
    for i in 0..m {
        let ar = &a[i * a_stride..][..k];
        let or = &mut out[i * out_stride..][..n];
        in_blocks!(n, [LANES, 4], |c, N| columns::<N>(ar, b, n, c, alpha, or));
    }
}

/// Columns `c..c + N` of one output row of [`product`].
#[inline(always)]
fn columns<const N: usize>(ar: &[f32], b: &[f32], n: usize, c: usize, alpha: f32, or: &mut [f32]) {
    let mut acc = [0.0f32; N];
    for (j, &aj) in ar.iter().enumerate() {
        let bj = load::<N>(b, j * n + c);
        for l in 0..N {
            acc[l] += aj * bj[l];
        }
    }
    for v in acc.iter_mut() {
        *v *= alpha;
    }
    store(or, c, acc);
}

/// Sizes of one attention call.
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    h: usize,
    l: usize,
    s: usize,
    d: usize,
}

impl Heads {
    fn e(&self) -> usize {
        self.h * self.d
    }
}

/// A slice of `t` in row-major order (borrowed when it already is).
fn flat(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => s.into(),
        None => t.iter().copied().collect::<Vec<_>>().into(),
    }
}

/// An additive mask `[mb, mh, L, S]` (`mb` 1 or B, `mh` 1 or H).
#[derive(Clone, Copy)]
struct Mask<'a> {
    values: &'a [f32],
    mb: usize,
    mh: usize,
}

/// One batch's attention weights (`block`: `[H, L, S]`): per head the scaled scores as a small
/// product with the transposed keys, the mask, and the softmax in lanes.
#[inline(always)]
fn weights_batch_body(
    n: Heads,
    scale: f32,
    q: &[f32],
    k: &[f32],
    mask: Option<Mask>,
    b: usize,
    block: &mut [f32],
) {
    let (e, ls) = (n.e(), n.l * n.s);
    let (qb, kb) = (&q[b * n.l * e..], &k[b * n.s * e..]);
    let mut kt = vec![0.0f32; n.d * n.s];
    for (hi, head) in block.chunks_exact_mut(ls).enumerate() {
        transpose_head(kb, n.s, e, hi * n.d, n.d, &mut kt);
        product(&qb[hi * n.d..], e, n.l, n.d, &kt, n.s, scale, head, n.s);
        let m = mask.map(|m| &m.values[((b % m.mb) * m.mh + hi % m.mh) * ls..][..ls]);
        if let Some(m) = m {
            for (v, &a) in head.iter_mut().zip(m) {
                *v += a;
            }
        }
        for row in head.chunks_exact_mut(n.s) {
            softmax_row(row);
        }
    }
}
simd_dispatch!(weights_batch, weights_batch_avx2, weights_batch_body, (n: Heads, scale: f32, q: &[f32], k: &[f32], mask: Option<Mask>, b: usize, block: &mut [f32]));

/// One batch's backward of the weights: from `P` (before dropout), the incoming `g` and the dropout
/// scales, `∂q` then `∂k` into `block` (`[L, E]` then `[S, E]`); `q`, `k` are the batch's rows.
/// Per head, `∂S = P ⊙ (∂P − Σ ∂P ⊙ P)·scale` (`[L, S]`), then `∂q_h = ∂S·k_h` and
/// `∂k_h = ∂Sᵀ·q_h` as small products.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weights_back_batch_body(
    n: Heads,
    scale: f32,
    p: &[f32],
    g: &[f32],
    keep: Option<&[f32]>,
    qb: &[f32],
    kb: &[f32],
    block: &mut [f32],
) {
    let (e, ls) = (n.e(), n.l * n.s);
    let (dq, dk) = block.split_at_mut(n.l * e);
    let mut ds = vec![0.0f32; ls];
    let mut dst = vec![0.0f32; ls];
    let (mut kh, mut qh) = (vec![0.0f32; n.s * n.d], vec![0.0f32; n.l * n.d]);
    for hi in 0..n.h {
        for li in 0..n.l {
            let row = hi * ls + li * n.s;
            let (pr, gr) = (&p[row..row + n.s], &g[row..row + n.s]);
            let d = &mut ds[li * n.s..][..n.s];
            // ∂P before dropout, then through the softmax
            match keep {
                Some(k) => {
                    for ((d, &gv), &kv) in d.iter_mut().zip(gr).zip(&k[row..row + n.s]) {
                        *d = gv * kv;
                    }
                }
                None => d.copy_from_slice(gr),
            }
            let inner = dot(d, pr);
            for (d, &pv) in d.iter_mut().zip(pr) {
                *d = pv * (*d - inner) * scale;
            }
        }
        transpose_head(&ds, n.l, n.s, 0, n.s, &mut dst);
        gather_head(kb, n.s, e, hi * n.d, n.d, &mut kh);
        gather_head(qb, n.l, e, hi * n.d, n.d, &mut qh);
        product(&ds, n.s, n.l, n.s, &kh, n.d, 1.0, &mut dq[hi * n.d..], e);
        product(&dst, n.l, n.s, n.l, &qh, n.d, 1.0, &mut dk[hi * n.d..], e);
    }
}
simd_dispatch!(weights_back_batch, weights_back_batch_avx2, weights_back_batch_body, (n: Heads, scale: f32, p: &[f32], g: &[f32], keep: Option<&[f32]>, qb: &[f32], kb: &[f32], block: &mut [f32]));

/// One batch's `O = P·v`, heads merged (`block`: `[L, E]`; `p`: `[H, L, S]`, `vb`: `[S, E]`).
#[inline(always)]
fn apply_batch_body(n: Heads, p: &[f32], vb: &[f32], block: &mut [f32]) {
    let (e, ls) = (n.e(), n.l * n.s);
    let mut vh = vec![0.0f32; n.s * n.d];
    for hi in 0..n.h {
        gather_head(vb, n.s, e, hi * n.d, n.d, &mut vh);
        product(
            &p[hi * ls..],
            n.s,
            n.l,
            n.s,
            &vh,
            n.d,
            1.0,
            &mut block[hi * n.d..],
            e,
        );
    }
}
simd_dispatch!(apply_batch, apply_batch_avx2, apply_batch_body, (n: Heads, p: &[f32], vb: &[f32], block: &mut [f32]));

/// One batch's backward of [`apply_batch_body`]: `∂P` (`[H, L, S]`) then `∂v` (`[S, E]`) into
/// `block`: per head `∂P_h = g_h·v_hᵀ` and `∂v_h = P_hᵀ·g_h` as small products.
#[inline(always)]
fn apply_back_batch_body(n: Heads, p: &[f32], vb: &[f32], gb: &[f32], block: &mut [f32]) {
    let (e, ls) = (n.e(), n.l * n.s);
    let (dp, dv) = block.split_at_mut(n.h * ls);
    let (mut vt, mut pt, mut gh) = (
        vec![0.0f32; n.d * n.s],
        vec![0.0f32; ls],
        vec![0.0f32; n.l * n.d],
    );
    for hi in 0..n.h {
        transpose_head(vb, n.s, e, hi * n.d, n.d, &mut vt);
        transpose_head(&p[hi * ls..], n.l, n.s, 0, n.s, &mut pt);
        gather_head(gb, n.l, e, hi * n.d, n.d, &mut gh);
        product(
            &gb[hi * n.d..],
            e,
            n.l,
            n.d,
            &vt,
            n.s,
            1.0,
            &mut dp[hi * ls..],
            n.s,
        );
        product(&pt, n.l, n.s, n.l, &gh, n.d, 1.0, &mut dv[hi * n.d..], e);
    }
}
simd_dispatch!(apply_back_batch, apply_back_batch_avx2, apply_back_batch_body, (n: Heads, p: &[f32], vb: &[f32], gb: &[f32], block: &mut [f32]));

impl Tape {
    /// The attention weights of `heads` heads: `dropout(softmax(q·kᵀ/√D + mask))` per head, the
    /// softmax over the keys, dropout (probability `dropout`) on a training tape only. `mask` is
    /// added to the scores (−∞ masks): `[B or 1, H or 1, L, S]`.
    ///
    /// # Shapes
    /// `q: [B, L, H·D]`, `k: [B, S, H·D]` → `[B, H, L, S]`
    pub fn attention_weights(
        &mut self,
        q: Var,
        k: Var,
        heads: usize,
        mask: Option<Tensor>,
        dropout: f32,
    ) -> Result<Var> {
        const NAME: &str = "attention_weights";
        let (sq, sk) = (self.shape(q).to_vec(), self.shape(k).to_vec());
        if sq.len() != 3 || sk.len() != 3 || sq[0] != sk[0] || sq[2] != sk[2] {
            shape_err!("{NAME}: q {sq:?} and k {sk:?} must be [B, L, E] and [B, S, E]");
        }
        if heads == 0 || sq[2] % heads != 0 {
            value_err!(
                "{NAME}: E ({}) must be a multiple of heads ({heads})",
                sq[2]
            );
        }
        if !(0.0..1.0).contains(&dropout) {
            value_err!("{NAME}: dropout must be in [0, 1), got {dropout}");
        }
        let n = Heads {
            b: sq[0],
            h: heads,
            l: sq[1],
            s: sk[1],
            d: sq[2] / heads,
        };
        let (mb, mh) = match &mask {
            None => (0, 0),
            Some(m) => match m.shape() {
                &[mb, mh, ml, ms]
                    if (mb == 1 || mb == n.b) && (mh == 1 || mh == n.h) && ml == n.l && ms == n.s =>
                {
                    (mb, mh)
                }
                other => shape_err!(
                    "{NAME}: mask of shape {other:?} must be [B or 1, H or 1, L, S] = [{}, {}, {}, {}]",
                    n.b,
                    n.h,
                    n.l,
                    n.s
                ),
            },
        };
        let mask = mask.map(|m| flat(&m).into_owned());
        let scale = 1.0 / (n.d as f32).sqrt();
        let (qv, kv) = (flat(self.value(q)), flat(self.value(k)));
        let (e, hls) = (n.e(), n.h * n.l * n.s);
        let par = self.parallel_ops;
        let mut p = vec![0.0f32; n.b * hls];
        let mask = mask.as_deref().map(|m| Mask { values: m, mb, mh });
        per_batch(par, &mut p, hls, |b, block| {
            weights_batch(n, scale, &qv, &kv, mask, b, block)
        });
        drop((qv, kv));
        // the same draws as Tape::dropout on a tensor of this shape
        let keep = (self.training && dropout > 0.0).then(|| {
            let scale = 1.0 / (1.0 - dropout);
            let rng = self.rng();
            (0..p.len())
                .map(|_| {
                    if rng.random::<f32>() < dropout {
                        0.0
                    } else {
                        scale
                    }
                })
                .collect::<Vec<f32>>()
        });
        let out: Vec<f32> = match &keep {
            Some(keep) => p.iter().zip(keep).map(|(a, b)| a * b).collect(),
            None => p.clone(),
        };
        let y = ArrayD::from_shape_vec(IxDyn(&[n.b, n.h, n.l, n.s]), out).expect("B×H×L×S");
        Ok(self.push(y, &[q, k], move |c, g| {
            let g = flat(g);
            let (qv, kv) = (flat(c.input(0)), flat(c.input(1)));
            let (lq, lk) = (n.l * e, n.s * e);
            // per batch: ∂q's rows then ∂k's
            let mut dqk = vec![0.0f32; n.b * (lq + lk)];
            per_batch(par, &mut dqk, lq + lk, |b, block| {
                let (qb, kb) = (&qv[b * lq..][..lq], &kv[b * lk..][..lk]);
                let at = b * hls;
                let keep = keep.as_deref().map(|k| &k[at..at + hls]);
                weights_back_batch(
                    n,
                    scale,
                    &p[at..at + hls],
                    &g[at..at + hls],
                    keep,
                    qb,
                    kb,
                    block,
                )
            });
            let (mut dq, mut dk) = (Vec::with_capacity(n.b * lq), Vec::with_capacity(n.b * lk));
            for block in dqk.chunks_exact(lq + lk) {
                dq.extend_from_slice(&block[..lq]);
                dk.extend_from_slice(&block[lq..]);
            }
            vec![
                c.needs(0)
                    .then(|| ArrayD::from_shape_vec(IxDyn(&[n.b, n.l, e]), dq).expect("B×L×E")),
                c.needs(1)
                    .then(|| ArrayD::from_shape_vec(IxDyn(&[n.b, n.s, e]), dk).expect("B×S×E")),
            ]
        }))
    }

    /// The heads' outputs merged: `O[b, l, h·D + j] = Σ_s P[b, h, l, s] · v[b, s, h·D + j]`.
    ///
    /// # Shapes
    /// `p: [B, H, L, S]`, `v: [B, S, H·D]` → `[B, L, H·D]`
    pub fn attention_apply(&mut self, p: Var, v: Var) -> Result<Var> {
        let (sp, sv) = (self.shape(p).to_vec(), self.shape(v).to_vec());
        if sp.len() != 4
            || sv.len() != 3
            || sp[0] != sv[0]
            || sp[3] != sv[1]
            || sp[1] == 0
            || sv[2] % sp[1] != 0
        {
            shape_err!(
                "attention_apply: weights {sp:?} and v {sv:?} must be [B, H, L, S] and [B, S, H·D]"
            );
        }
        let n = Heads {
            b: sp[0],
            h: sp[1],
            l: sp[2],
            s: sp[3],
            d: sv[2] / sp[1],
        };
        let (e, hls) = (n.e(), n.h * n.l * n.s);
        let par = self.parallel_ops;
        let (pv, vv) = (flat(self.value(p)), flat(self.value(v)));
        let mut o = vec![0.0f32; n.b * n.l * e];
        per_batch(par, &mut o, n.l * e, |b, block| {
            let vb = &vv[b * n.s * e..][..n.s * e];
            apply_batch(n, &pv[b * hls..][..hls], vb, block)
        });
        drop((pv, vv));
        let y = ArrayD::from_shape_vec(IxDyn(&[n.b, n.l, e]), o).expect("B×L×E");
        Ok(self.push(y, &[p, v], move |c, g| {
            let g = flat(g);
            let (pv, vv) = (flat(c.input(0)), flat(c.input(1)));
            let lv = n.s * e;
            // per batch: ∂P's heads then ∂v's rows
            let mut both = vec![0.0f32; n.b * (hls + lv)];
            per_batch(par, &mut both, hls + lv, |b, block| {
                let (vb, gb) = (&vv[b * lv..][..lv], &g[b * n.l * e..][..n.l * e]);
                apply_back_batch(n, &pv[b * hls..][..hls], vb, gb, block)
            });
            let (mut dp, mut dv) = (Vec::with_capacity(n.b * hls), Vec::with_capacity(n.b * lv));
            for block in both.chunks_exact(hls + lv) {
                dp.extend_from_slice(&block[..hls]);
                dv.extend_from_slice(&block[hls..]);
            }
            vec![
                c.needs(0).then(|| {
                    ArrayD::from_shape_vec(IxDyn(&[n.b, n.h, n.l, n.s]), dp).expect("B×H×L×S")
                }),
                c.needs(1)
                    .then(|| ArrayD::from_shape_vec(IxDyn(&[n.b, n.s, e]), dv).expect("B×S×E")),
            ]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;

    #[test]
    fn fused_attention_gradients_with_and_without_masks() {
        // B 2, L 3, S 4, 2 heads of 3
        check(&[&[2, 3, 6], &[2, 4, 6]], |t, v| {
            t.attention_weights(v[0], v[1], 2, None, 0.0).unwrap()
        });
        let mask = Tensor::from_shape_fn(IxDyn(&[2, 1, 3, 4]), |ix| {
            if ix[3] > ix[2] + ix[0] {
                f32::NEG_INFINITY
            } else {
                0.1 * ix[3] as f32
            }
        });
        check(&[&[2, 3, 6], &[2, 4, 6]], move |t, v| {
            t.attention_weights(v[0], v[1], 2, Some(mask.clone()), 0.0)
                .unwrap()
        });
        check(&[&[2, 2, 3, 4], &[2, 4, 6]], |t, v| {
            t.attention_apply(v[0], v[1]).unwrap()
        });
        // heads of 12: the small products' columns in a block of 8 and one of 4
        check(&[&[1, 3, 12], &[1, 5, 12]], |t, v| {
            t.attention_weights(v[0], v[1], 1, None, 0.0).unwrap()
        });
        check(&[&[1, 1, 3, 5], &[1, 5, 12]], |t, v| {
            t.attention_apply(v[0], v[1]).unwrap()
        });
        // 9 keys: the softmax's lanes take a block of 8 and a tail; a causal mask over them
        let causal = Tensor::from_shape_fn(IxDyn(&[1, 1, 3, 9]), |ix| {
            if ix[3] > ix[2] + 6 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        });
        check(&[&[1, 3, 4], &[1, 9, 4]], move |t, v| {
            t.attention_weights(v[0], v[1], 2, Some(causal.clone()), 0.0)
                .unwrap()
        });
    }

    #[test]
    fn fused_attention_matches_the_per_head_composition() {
        let ins = super::super::gradcheck::random_inputs(&[&[2, 3, 6], &[2, 4, 6], &[2, 4, 6]], 4);
        let mut t = Tape::inference();
        let (q, k, v) = (
            t.constant(ins[0].clone()),
            t.constant(ins[1].clone()),
            t.constant(ins[2].clone()),
        );
        let p = t.attention_weights(q, k, 2, None, 0.0).unwrap();
        let o = t.attention_apply(p, v).unwrap();
        let (o, p) = (t.value(o).clone(), t.value(p).clone());
        for b in 0..2 {
            for h in 0..2 {
                for l in 0..3 {
                    let scores: Vec<f32> = (0..4)
                        .map(|s| {
                            (0..3)
                                .map(|j| ins[0][[b, l, 3 * h + j]] * ins[1][[b, s, 3 * h + j]])
                                .sum::<f32>()
                                / 3f32.sqrt()
                        })
                        .collect();
                    let top = scores.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    let z: f32 = scores.iter().map(|s| (s - top).exp()).sum();
                    for s in 0..4 {
                        let want = (scores[s] - top).exp() / z;
                        assert!((p[[b, h, l, s]] - want).abs() < 1e-6);
                    }
                    for j in 0..3 {
                        let want: f32 = (0..4)
                            .map(|s| p[[b, h, l, s]] * ins[2][[b, s, 3 * h + j]])
                            .sum();
                        assert!((o[[b, l, 3 * h + j]] - want).abs() < 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let mut t = Tape::inference();
        let q = t.constant(Tensor::zeros(IxDyn(&[2, 3, 6])));
        let k = t.constant(Tensor::zeros(IxDyn(&[2, 4, 5])));
        assert!(t.attention_weights(q, k, 2, None, 0.0).is_err());
        let k = t.constant(Tensor::zeros(IxDyn(&[2, 4, 6])));
        assert!(t.attention_weights(q, k, 4, None, 0.0).is_err());
        let m = Tensor::zeros(IxDyn(&[3, 1, 3, 4]));
        let e = t
            .attention_weights(q, k, 2, Some(m), 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3, 1, 3, 4]"), "{e}");
    }
}
