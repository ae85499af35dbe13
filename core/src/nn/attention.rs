//! `nn.MultiheadAttention`: PyTorch's parameters (`in_proj_weight`, `in_proj_bias`,
//! `out_proj.weight`, `out_proj.bias`), initialisation, masks and return values.
//!
//! The layer owns the weights; a call is the graph op [`crate::graph::Op::MultiheadAttention`],
//! which reads them as values and runs [`Attention::forward`]: the projections, the fused
//! [`Tape::attention_weights`] (scaled dot products per head, the masks, softmax, dropout) and
//! [`Tape::attention_apply`] (the weighted values, heads merged), then the output projection, all
//! tape ops with their own backward rules (so attention trains, and its gradient is checked, like
//! any composition of them).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{uniform_fan_in, LayerSpec, Module, Param};
use crate::autograd::{Tape, Tensor, Var};
use crate::{shape_err, value_err, Result};

/// How a mask tensor reads, as in PyTorch: `Bool` masks mark the positions that may NOT be
/// attended (true, any non-zero value, becomes −∞); `Float` masks are added to the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// No mask given.
    None,
    /// True (non-zero) = masked.
    Bool,
    /// Added to the attention scores (−∞ masks).
    Float,
}

/// One call of a multi-head attention: the layer's hyper-parameters and the call's arguments.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attention {
    /// Heads; `embed_dim` must be a multiple.
    pub num_heads: usize,
    /// Dropout on the attention weights, in training only.
    pub dropout: f32,
    /// Inputs and output are `[batch, seq, embed]` rather than `[seq, batch, embed]`.
    pub batch_first: bool,
    /// Whether the projections have biases (`in_proj_bias`, `out_proj.bias`).
    pub bias: bool,
    /// Return the attention weights as well as the output.
    pub need_weights: bool,
    /// Average the returned weights over the heads (`[B, L, S]` rather than `[B, H, L, S]`).
    pub average_attn_weights: bool,
    /// Without an `attn_mask`, mask every key after the query's position; with one, the mask is
    /// taken to be the causal mask (PyTorch's hint) and used as given.
    pub is_causal: bool,
    /// How `key_padding_mask` (`[B, S]`) reads, if given.
    pub key_padding_mask: MaskKind,
    /// How `attn_mask` (`[L, S]` or `[B·num_heads, L, S]`) reads, if given.
    pub attn_mask: MaskKind,
}

/// `-∞` where a boolean mask is set, the value itself for an additive one.
fn additive(kind: MaskKind, m: &Tensor) -> Tensor {
    match kind {
        MaskKind::Bool => m.mapv(|v| if v != 0.0 { f32::NEG_INFINITY } else { 0.0 }),
        _ => m.clone(),
    }
}

impl Attention {
    /// How many value inputs the op reads: query, key, value, the weights, then the masks given.
    pub fn arity(&self) -> usize {
        5 + 2 * self.bias as usize
            + (self.key_padding_mask != MaskKind::None) as usize
            + (self.attn_mask != MaskKind::None) as usize
    }

    /// Run on `xs` = query, key, value, `in_proj_weight`, [`in_proj_bias`], `out_proj.weight`,
    /// [`out_proj.bias`], [key_padding_mask], [attn_mask]: the output and, when asked for, the weights.
    ///
    /// # Shapes
    /// query `[B, L, E]`, key and value `[B, S, E]` (`[L, B, E]`, `[S, B, E]` unless `batch_first`)
    /// → output shaped like query; weights `[B, L, S]` (averaged) or `[B, H, L, S]`.
    pub fn forward(&self, t: &mut Tape, xs: &[Var]) -> Result<(Var, Option<Var>)> {
        const NAME: &str = "MultiheadAttention";
        if xs.len() != self.arity() {
            value_err!(
                "{NAME}: takes query, key, value, its weights and the masks given ({} values), got {}",
                self.arity(),
                xs.len()
            );
        }
        let mut at = 3;
        let mut next = || {
            at += 1;
            xs[at - 1]
        };
        let in_w = next();
        let in_b = self.bias.then(&mut next);
        let out_w = next();
        let out_b = self.bias.then(&mut next);
        let kpm = (self.key_padding_mask != MaskKind::None).then(&mut next);
        let mask = (self.attn_mask != MaskKind::None).then(&mut next);

        let sw = t.shape(in_w).to_vec();
        if sw.len() != 2 || sw[0] != 3 * sw[1] {
            shape_err!("{NAME}: in_proj_weight must be [3·embed_dim, embed_dim], got {sw:?}");
        }
        let (e, h) = (sw[1], self.num_heads);
        if h == 0 || e % h != 0 {
            value_err!("{NAME}: embed_dim ({e}) must be divisible by num_heads ({h})");
        }
        // batch first inside: [B, T, E]
        let seq = |t: &mut Tape, x: Var, what: &str| -> Result<Var> {
            let s = t.shape(x).to_vec();
            if s.len() != 3 || s[2] != e {
                let layout = if self.batch_first {
                    "[batch, seq, embed_dim]"
                } else {
                    "[seq, batch, embed_dim]"
                };
                shape_err!(
                    "{NAME}: {what} of shape {s:?} does not fit embed_dim {e} (expects {layout})"
                );
            }
            if self.batch_first {
                Ok(x)
            } else {
                t.permute(x, &[1, 0, 2])
            }
        };
        let q = seq(t, xs[0], "query")?;
        let k = if xs[1] == xs[0] {
            q
        } else {
            seq(t, xs[1], "key")?
        };
        let v = match xs[2] {
            x if x == xs[1] => k,
            x if x == xs[0] => q,
            x => seq(t, x, "value")?,
        };
        let (sq, sk, sv) = (
            t.shape(q).to_vec(),
            t.shape(k).to_vec(),
            t.shape(v).to_vec(),
        );
        let (b, l, s) = (sq[0], sq[1], sk[1]);
        if sk[0] != b || sv[0] != b || sv[1] != s {
            shape_err!("{NAME}: query {sq:?}, key {sk:?} and value {sv:?} (batch first) need one batch size, and key and value one length");
        }

        // the three projections, [B, T, E] each, head h in columns h·D..
        let qp = project(t, q, in_w, in_b, 0)?;
        let kp = project(t, k, in_w, in_b, 1)?;
        let vp = project(t, v, in_w, in_b, 2)?;

        // one additive mask [B or 1, H or 1, L, S]: attn_mask (or the causal one), key padding
        let mut m: Option<Tensor> = None;
        if let Some(am) = mask {
            let ms = t.shape(am).to_vec();
            let am = additive(self.attn_mask, t.value(am));
            let shape = match ms[..] {
                [ml, mr] if ml == l && mr == s => [1, 1, l, s],
                [n, ml, mr] if n == b * h && ml == l && mr == s => [b, h, l, s],
                _ => shape_err!("{NAME}: attn_mask of shape {ms:?} must be [L, S] = [{l}, {s}] or [batch·num_heads, L, S] = [{}, {l}, {s}]", b * h),
            };
            m = Some(
                am.into_shape_with_order(ndarray::IxDyn(&shape))
                    .expect("sizes agree"),
            );
        } else if self.is_causal {
            m = Some(causal(l, s, 0));
        }
        if let Some(pm) = kpm {
            let ms = t.shape(pm).to_vec();
            if ms != [b, s] {
                shape_err!(
                    "{NAME}: key_padding_mask of shape {ms:?} must be [batch, S] = [{b}, {s}]"
                );
            }
            let pm = additive(self.key_padding_mask, t.value(pm))
                .into_shape_with_order(ndarray::IxDyn(&[b, 1, 1, s]))
                .expect("sizes agree");
            m = Some(match m {
                Some(m) => &m + &pm,
                None => pm
                    .broadcast(ndarray::IxDyn(&[b, 1, l, s]))
                    .expect("[B, 1, 1, S] spreads over the queries")
                    .to_owned(),
            });
        }
        let attn = t.attention_weights(qp, kp, h, m, self.dropout)?; // [B, H, L, S]
        let o = self.merge(t, attn, vp, out_w, out_b)?;
        let weights = match (self.need_weights, self.average_attn_weights) {
            (false, _) => None,
            (true, true) => Some(t.mean(attn, &[1], false)?),
            (true, false) => Some(attn),
        };
        Ok((o, weights))
    }

    /// The heads' outputs `attn · v` merged and projected, back in the caller's layout.
    fn merge(
        &self,
        t: &mut Tape,
        attn: Var,
        vp: Var,
        out_w: Var,
        out_b: Option<Var>,
    ) -> Result<Var> {
        let o = t.attention_apply(attn, vp)?; // [B, L, E]
        let o = t.linear(o, out_w, out_b)?;
        if self.batch_first {
            Ok(o)
        } else {
            t.permute(o, &[1, 0, 2])
        }
    }

    /// Whether a call can run position by position with a key/value cache
    /// ([`Attention::forward_cached`]): causal self-attention without masks or returned weights.
    pub fn cacheable(&self, xs: &[usize]) -> bool {
        self.is_causal
            && !self.need_weights
            && self.key_padding_mask == MaskKind::None
            && self.attn_mask == MaskKind::None
            && xs.len() >= 3
            && xs[0] == xs[1]
            && xs[1] == xs[2]
    }

    /// Causal self-attention (a [`Attention::cacheable`] call) for new positions only: `xs[0]`
    /// holds the `n` positions after the `p` whose keys and values `cache` holds (`[B, H, p, D]`
    /// each); they attend to those and to each other causally, and join the cache. The output
    /// equals rows `p..p + n` of [`Attention::forward`] on the whole sequence.
    pub fn forward_cached(
        &self,
        t: &mut Tape,
        xs: &[Var],
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Var> {
        let bias = self.bias as usize;
        let (in_w, out_w) = (xs[3], xs[4 + bias]);
        let (in_b, out_b) = (self.bias.then(|| xs[4]), self.bias.then(|| xs[6]));
        let x = if self.batch_first {
            xs[0]
        } else {
            t.permute(xs[0], &[1, 0, 2])?
        };
        let (h, n) = (self.num_heads, t.shape(x)[1]);
        let q = project(t, x, in_w, in_b, 0)?;
        let mut k = project(t, x, in_w, in_b, 1)?;
        let mut v = project(t, x, in_w, in_b, 2)?;
        let p = cache.as_ref().map_or(0, |(kc, _)| kc.shape()[1]);
        if let Some((kc, vc)) = cache.take() {
            let (kc, vc) = (t.constant(kc), t.constant(vc));
            k = t.concat(&[kc, k], 1)?;
            v = t.concat(&[vc, v], 1)?;
        }
        *cache = Some((t.value(k).clone(), t.value(v).clone()));
        let mask = (n > 1).then(|| causal(n, p + n, p));
        let attn = t.attention_weights(q, k, h, mask, 0.0)?; // [B, H, n, p + n]
        self.merge(t, attn, v, out_w, out_b)
    }
}

/// The causal mask for queries at positions `offset..offset + rows` over keys `0..cols`: −∞
/// where the key comes after the query.
fn causal(rows: usize, cols: usize, offset: usize) -> Tensor {
    Tensor::from_shape_fn(ndarray::IxDyn(&[1, 1, rows, cols]), |ix| {
        if ix[3] > offset + ix[2] {
            f32::NEG_INFINITY
        } else {
            0.0
        }
    })
}

/// Rows `part·E .. (part+1)·E` of the packed projection applied to `x` `[B, T, E]`: `[B, T, E]`,
/// head `h` in columns `h·D..(h+1)·D` (the layout the fused attention ops read).
fn project(t: &mut Tape, x: Var, in_w: Var, in_b: Option<Var>, part: usize) -> Result<Var> {
    let e = t.shape(in_w)[1];
    let w = t.slice(in_w, 0, part * e, (part + 1) * e)?;
    let bias = match in_b {
        Some(bv) => Some(t.slice(bv, 0, part * e, (part + 1) * e)?),
        None => None,
    };
    t.linear(x, w, bias)
}

/// The layer: it owns the weights a [`crate::graph::Op::MultiheadAttention`] call reads.
///
/// # Shapes
/// `in_proj_weight: [3·E, E]` (query, key and value rows in that order), `in_proj_bias: [3·E]`,
/// `out_proj.weight: [E, E]`, `out_proj.bias: [E]`.
pub struct MultiheadAttention {
    spec: LayerSpec,
    weights: Vec<(String, Param)>,
}

impl MultiheadAttention {
    /// PyTorch's initialisation: `in_proj_weight` Xavier-uniform, `out_proj.weight` as a Linear's
    /// (U(±1/√E)), both biases zero.
    pub fn new(spec: LayerSpec, rng: &mut ChaCha8Rng) -> Result<Self> {
        let LayerSpec::MultiheadAttention {
            embed_dim: e,
            num_heads,
            dropout,
            bias,
            ..
        } = spec
        else {
            value_err!("MultiheadAttention: not its spec: {}", spec.type_name());
        };
        if e == 0 || num_heads == 0 {
            value_err!("MultiheadAttention: embed_dim and num_heads must be positive");
        }
        if e % num_heads != 0 {
            value_err!(
                "MultiheadAttention: embed_dim ({e}) must be divisible by num_heads ({num_heads})"
            );
        }
        if !(0.0..1.0).contains(&dropout) {
            value_err!("MultiheadAttention: dropout must be in [0, 1), got {dropout}");
        }
        let bound = (6.0 / (e + 3 * e) as f32).sqrt();
        let in_w =
            Tensor::from_shape_simple_fn(vec![3 * e, e], || rng.random_range(-1.0..1.0) * bound);
        let mut weights = vec![("in_proj_weight".to_string(), Param::new(in_w))];
        if bias {
            weights.push((
                "in_proj_bias".into(),
                Param::new(Tensor::zeros(vec![3 * e])),
            ));
        }
        let out_w = uniform_fan_in(&[e, e], e, rng);
        weights.push(("out_proj.weight".into(), Param::new(out_w)));
        if bias {
            weights.push(("out_proj.bias".into(), Param::new(Tensor::zeros(vec![e]))));
        }
        Ok(MultiheadAttention { spec, weights })
    }
}

impl Module for MultiheadAttention {
    fn forward(&self, _t: &mut Tape, _x: Var) -> Result<Var> {
        value_err!(
            "MultiheadAttention: {}",
            self.spec.chain_refusal().expect("attention refuses chains")
        )
    }

    fn tensors(&self) -> Vec<(String, &Param)> {
        self.weights.iter().map(|(n, p)| (n.clone(), p)).collect()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.weights
            .iter_mut()
            .map(|(n, p)| (n.clone(), p))
            .collect()
    }

    fn spec(&self) -> LayerSpec {
        self.spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck::{check_at, random_inputs};

    fn call(kpm: MaskKind, mask: MaskKind) -> Attention {
        Attention {
            num_heads: 2,
            dropout: 0.0,
            batch_first: true,
            bias: true,
            need_weights: false,
            average_attn_weights: true,
            is_causal: false,
            key_padding_mask: kpm,
            attn_mask: mask,
        }
    }

    /// Every input's gradient (query, key, value and the four weights) against finite differences,
    /// with the causal mask, a boolean key-padding mask, a float mask, both layouts and the weights.
    #[test]
    fn attention_gradients() {
        let (b, l, s, e) = (2, 3, 4, 4);
        let shapes: [&[usize]; 7] = [
            &[b, l, e],
            &[b, s, e],
            &[b, s, e],
            &[3 * e, e],
            &[3 * e],
            &[e, e],
            &[e],
        ];
        // the second sample's last key is padding
        let mut pad = Tensor::zeros(vec![b, s]);
        pad[[1, s - 1]] = 1.0;
        let float_mask = random_inputs(&[&[l, s]], 3).remove(0);
        let cases = [
            (call(MaskKind::None, MaskKind::None), vec![]),
            (
                Attention {
                    is_causal: true,
                    ..call(MaskKind::Bool, MaskKind::None)
                },
                vec![pad.clone()],
            ),
            (
                call(MaskKind::Bool, MaskKind::Float),
                vec![pad.clone(), float_mask],
            ),
            (
                Attention {
                    need_weights: true,
                    batch_first: false,
                    ..call(MaskKind::None, MaskKind::None)
                },
                vec![],
            ),
        ];
        for (att, masks) in cases {
            let mut ins = random_inputs(&shapes, 5);
            if !att.batch_first {
                for x in ins.iter_mut().take(3) {
                    *x = x
                        .clone()
                        .permuted_axes(vec![1, 0, 2])
                        .as_standard_layout()
                        .into_owned();
                }
            }
            check_at(ins, |t, v| {
                // the masks are data: constants on the tape, not inputs with gradients
                let mut xs = v.to_vec();
                xs.extend(masks.iter().map(|m| t.constant(m.clone())));
                let (o, w) = att.forward(t, &xs).unwrap();
                match w {
                    // both outputs in one scalar: the weights flattened beside the output
                    Some(w) => {
                        let ow = t.shape(o).iter().product::<usize>();
                        let ww = t.shape(w).iter().product::<usize>();
                        let o = t.reshape(o, &[ow]).unwrap();
                        let w = t.reshape(w, &[ww]).unwrap();
                        t.concat(&[o, w], 0).unwrap()
                    }
                    None => o,
                }
            });
        }
    }

    #[test]
    fn masks_zero_the_weights_they_mask() {
        let mut t = Tape::inference();
        let (b, l, e) = (1, 3, 4);
        let ins = random_inputs(&[&[b, l, e], &[3 * e, e], &[3 * e], &[e, e], &[e]], 1);
        let x = t.constant(ins[0].clone());
        let ws: Vec<Var> = ins[1..].iter().map(|w| t.constant(w.clone())).collect();
        let mut pad = Tensor::zeros(vec![b, l]);
        pad[[0, 0]] = 1.0;
        let pad = t.constant(pad);
        let att = Attention {
            is_causal: true,
            need_weights: true,
            ..call(MaskKind::Bool, MaskKind::None)
        };
        let (_, w) = att
            .forward(&mut t, &[x, x, x, ws[0], ws[1], ws[2], ws[3], pad])
            .unwrap();
        let w = t.value(w.unwrap());
        // query 1 sees keys 0 and 1; key 0 is padding: all of its weight is on key 1
        assert_eq!(w.shape(), &[1, 3, 3]);
        assert!((w[[0, 1, 1]] - 1.0).abs() < 1e-6 && w[[0, 1, 0]] == 0.0 && w[[0, 1, 2]] == 0.0);
        // query 0 sees only key 0, which is padding: NaN, as PyTorch
        assert!(w[[0, 0, 0]].is_nan());
    }

    #[test]
    fn bad_shapes_and_arguments_are_named() {
        let spec = |e, h| LayerSpec::MultiheadAttention {
            embed_dim: e,
            num_heads: h,
            dropout: 0.0,
            bias: true,
            batch_first: true,
        };
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let e = MultiheadAttention::new(spec(6, 4), &mut rng)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("embed_dim (6)") && e.contains("num_heads (4)"),
            "{e}"
        );
        let m = MultiheadAttention::new(spec(4, 2), &mut rng).unwrap();
        let names: Vec<String> = m.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "in_proj_weight",
                "in_proj_bias",
                "out_proj.weight",
                "out_proj.bias"
            ]
        );
        let mut t = Tape::inference();
        let ins = random_inputs(&[&[2, 3, 5], &[12, 4], &[12], &[4, 4], &[4], &[2, 2]], 1);
        let v: Vec<Var> = ins.into_iter().map(|x| t.constant(x)).collect();
        let att = call(MaskKind::None, MaskKind::None);
        let e = att
            .forward(&mut t, &[v[0], v[0], v[0], v[1], v[2], v[3], v[4]])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("query of shape [2, 3, 5]") && e.contains("embed_dim 4"),
            "{e}"
        );
        let x = t.constant(Tensor::zeros(vec![2, 3, 4]));
        let att = call(MaskKind::Bool, MaskKind::None);
        let e = att
            .forward(&mut t, &[x, x, x, v[1], v[2], v[3], v[4], v[5]])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key_padding_mask of shape [2, 2]") && e.contains("[2, 3]"),
            "{e}"
        );
    }
}
