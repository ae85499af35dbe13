//! Whether a graph treats the samples of a batch independently in training, so the fit loop may
//! split a batch into shards, run each on its own tape and add their gradients (a data-parallel
//! step, [`crate::train::fit`]) with the same result as the whole batch; and whether kiln's
//! engine may run a batch in chunks and join the chunks' outputs (`onnx::engine`, `CHUNK_VALUES`).
//!
//! The analysis follows, for every value, where the samples sit: in contiguous blocks along one
//! axis (`Rows`), nowhere (a parameter: the same for every sample) or mixed. Anything it does not
//! know to keep samples apart counts as mixing them, so an unusual graph runs unsplit, never wrong.
//! A reshape or flatten of the sample axis keeps each sample's values in one contiguous block, so
//! the shards' rows still concatenate to the batch's.

use super::{Dim, Graph, Op};
use crate::nn::LayerSpec;

/// Where a value's samples are.
#[derive(Clone, Debug, PartialEq)]
enum Rows {
    /// Each sample's values form one contiguous block along `axis`; `rank` when known.
    Samples { axis: usize, rank: Option<usize> },
    /// The same for every sample (a parameter), of this rank when known.
    Shared(Option<usize>),
    /// A module's several outputs.
    Tuple(Vec<Rows>),
    /// Samples mixed (or unknown): the graph must not be split.
    Mixed,
}

use Rows::{Mixed, Samples, Shared};

fn samples(axis: usize, rank: Option<usize>) -> Rows {
    Samples { axis, rank }
}

/// `dim` against `rank` (negative counts from the end), if it resolves.
fn resolve(dim: isize, rank: Option<usize>) -> Option<usize> {
    if dim >= 0 {
        Some(dim as usize)
    } else {
        let r = rank? as isize;
        (dim + r >= 0).then_some((dim + r) as usize)
    }
}

/// The output of an element-wise op on two values (with broadcasting).
fn broadcast(a: &Rows, b: &Rows) -> Rows {
    match (a, b) {
        (Shared(x), Shared(y)) => Shared(x.zip(*y).map(|(x, y)| x.max(y))),
        (Samples { axis, rank }, Shared(c)) | (Shared(c), Samples { axis, rank }) => {
            // the parameter lines up with the trailing axes: it must stay right of the sample axis
            match (rank, c) {
                (Some(r), Some(c)) if c + axis < *r => samples(*axis, Some(*r)),
                _ => Mixed,
            }
        }
        (x @ Samples { rank: Some(_), .. }, y @ Samples { .. }) if x == y => x.clone(),
        _ => Mixed,
    }
}

/// A layer called on `xs`, given what the layer is.
fn call(spec: &LayerSpec, xs: &[Rows]) -> Rows {
    use LayerSpec as S;
    if spec.couples_samples() || xs.iter().any(|x| matches!(x, Mixed | Rows::Tuple(_))) {
        return Mixed;
    }
    if xs.iter().all(|x| matches!(x, Shared(_))) {
        return Shared(None); // a layer on parameters only: the same for every sample
    }
    match (spec, xs) {
        (S::GRU { batch_first, .. } | S::LSTM { batch_first, .. }, [x]) => match x {
            // (output [B, T, H], h_n [layers, B, H] (and c_n)): h_n's samples run along axis 1
            Samples { axis: 0, .. } if *batch_first => {
                let mut outs = vec![samples(0, Some(3)), samples(1, Some(3))];
                if matches!(spec, S::LSTM { .. }) {
                    outs.push(samples(1, Some(3)));
                }
                Rows::Tuple(outs)
            }
            _ => Mixed,
        },
        (_, [Samples { axis: 0, rank }]) => layer_rows(spec, *rank),
        _ => Mixed,
    }
}

/// The output of a one-input layer on a batch-first value of `rank`.
fn layer_rows(spec: &LayerSpec, rank: Option<usize>) -> Rows {
    use LayerSpec as S;
    match spec {
        S::Linear { .. }
        | S::Conv1d { .. }
        | S::Conv2d { .. }
        | S::MaxPool2d { .. }
        | S::AvgPool2d { .. }
        | S::ReLU
        | S::LeakyReLU { .. }
        | S::GELU { .. }
        | S::Sigmoid
        | S::Tanh
        | S::Dropout { .. } => samples(0, rank),
        S::LayerNorm {
            normalized_shape, ..
        } => match rank {
            Some(r) if normalized_shape.len() < r => samples(0, rank),
            _ => Mixed,
        },
        S::Softmax { dim } => match resolve(*dim, rank) {
            Some(d) if d != 0 => samples(0, rank),
            _ => Mixed,
        },
        S::Embedding { .. } => samples(0, rank.map(|r| r + 1)),
        // a flatten keeps each sample's values contiguous, whichever axes it merges
        S::Flatten { start_dim, end_dim } => {
            let r = rank
                .and_then(|r| Some(r - (resolve(*end_dim, rank)? - resolve(*start_dim, rank)?)));
            samples(0, r)
        }
        S::Sequential { layers } => layers.iter().fold(samples(0, rank), |x, l| match x {
            Samples { axis: 0, rank } => layer_rows(l, rank),
            _ => Mixed,
        }),
        S::BatchNorm1d { .. } | S::BatchNorm2d { .. } => Mixed,
        S::GRU { .. } | S::LSTM { .. } | S::MultiheadAttention { .. } => Mixed,
    }
}

/// The output of a graph op (not a module call) on `xs`.
fn op_rows(op: &Op, xs: &[Rows], param_rank: &dyn Fn(&str) -> Option<usize>) -> Rows {
    if let Op::Param { name } = op {
        return Shared(param_rank(name));
    }
    if let Op::Item { index } = op {
        return match xs {
            [Rows::Tuple(parts)] => parts.get(*index).cloned().unwrap_or(Mixed),
            _ => Mixed,
        };
    }
    if xs.iter().any(|x| matches!(x, Mixed | Rows::Tuple(_))) {
        return Mixed;
    }
    if xs.iter().all(|x| matches!(x, Shared(_))) {
        return Shared(None);
    }
    let Some(Samples { axis, rank }) = xs.first().cloned() else {
        return Mixed; // a parameter first, samples later (`w @ x`, a gather by sample ids)
    };
    let rest_shared = xs[1..].iter().all(|x| matches!(x, Shared(_)));
    let keep = |ok: bool| if ok { samples(axis, rank) } else { Mixed };
    match op {
        op if op.is_unary_elementwise() => keep(xs.len() == 1),
        Op::Add | Op::Sub | Op::Mul | Op::Div if xs.len() == 2 => broadcast(&xs[0], &xs[1]),
        Op::MatMul if xs.len() == 2 => match (&xs[1], rank) {
            // rows of the left factor times a weight matrix
            (Shared(Some(2)), Some(r)) if axis + 1 < r => samples(axis, rank),
            // batched products of two batch-first values of one rank ≥ 3 (attention scores)
            (
                Samples {
                    axis: 0,
                    rank: Some(r2),
                },
                Some(r),
            ) if axis == 0 && r == *r2 && r >= 3 => samples(0, rank),
            _ => Mixed,
        },
        Op::Softmax { dim } | Op::LogSoftmax { dim } | Op::Slice { dim, .. } => {
            keep(resolve(*dim, rank).is_some_and(|d| d != axis) && rest_shared)
        }
        Op::Reshape { shape } => match shape.first() {
            Some(Dim::Batch | Dim::Size(-1)) if axis == 0 => samples(0, Some(shape.len())),
            _ => Mixed,
        },
        Op::Flatten { start_dim, end_dim } if axis == 0 => {
            let r = rank
                .and_then(|r| Some(r - (resolve(*end_dim, rank)? - resolve(*start_dim, rank)?)));
            samples(0, r)
        }
        Op::Permute { dims } => {
            let moved: Option<Vec<usize>> = dims.iter().map(|&d| resolve(d, rank)).collect();
            match moved.and_then(|m| m.iter().position(|&d| d == axis)) {
                Some(p) if rank == Some(dims.len()) => samples(p, rank),
                _ => Mixed,
            }
        }
        Op::Reduce { dims, keepdim, .. } => {
            let Some(ds) = dims
                .iter()
                .map(|&d| resolve(d, rank))
                .collect::<Option<Vec<_>>>()
            else {
                return Mixed;
            };
            if ds.contains(&axis) || dims.is_empty() {
                return Mixed;
            }
            if *keepdim {
                samples(axis, rank)
            } else {
                let before = ds.iter().filter(|&&d| d < axis).count();
                samples(axis - before, rank.map(|r| r - ds.len()))
            }
        }
        Op::Concat { dim } => {
            let same = xs.iter().all(|x| *x == xs[0]) && rank.is_some();
            keep(same && resolve(*dim, rank).is_some_and(|d| d != axis))
        }
        Op::MaxPool2d { .. } | Op::AvgPool2d { .. } | Op::Conv2d { .. } | Op::Conv1d { .. } => {
            keep(axis == 0 && rest_shared)
        }
        Op::Linear => keep(rank.is_some_and(|r| axis + 1 < r) && rest_shared),
        Op::LayerNorm { .. } => match (&xs.get(1), rank) {
            (Some(Shared(Some(c))), Some(r)) if c + axis < r && rest_shared => samples(axis, rank),
            _ => Mixed,
        },
        Op::Embedding => match xs.get(1) {
            Some(Shared(_)) if xs.len() == 2 => samples(axis, rank.map(|r| r + 1)),
            _ => Mixed,
        },
        Op::Gather { dim } => match (xs.get(1), resolve(*dim, rank)) {
            (Some(Shared(Some(ci))), Some(d)) if xs.len() == 2 && d != axis => {
                let axis = if d < axis { axis + ci - 1 } else { axis };
                samples(axis, rank.map(|r| r + ci - 1))
            }
            _ => Mixed,
        },
        Op::MultiheadAttention(att) => {
            // query, key, value batch-first; the weights shared; masks: a key-padding mask per
            // sample, an attention mask shared by all
            let qkv_ok = att.batch_first
                && axis == 0
                && rank == Some(3)
                && xs[1..3].iter().all(|x| *x == samples(0, Some(3)));
            let weights = 2 + 2 * att.bias as usize;
            let mut ok = qkv_ok && xs.len() == att.arity();
            if ok {
                ok = xs[3..3 + weights].iter().all(|x| matches!(x, Shared(_)));
                let mut at = 3 + weights;
                if att.key_padding_mask != crate::nn::MaskKind::None {
                    ok &= xs[at] == samples(0, Some(2));
                    at += 1;
                }
                if att.attn_mask != crate::nn::MaskKind::None {
                    ok &= matches!(xs[at], Shared(_));
                }
            }
            if !ok {
                Mixed
            } else if att.need_weights {
                Rows::Tuple(vec![samples(0, Some(3)), samples(0, None)])
            } else {
                samples(0, Some(3))
            }
        }
        _ => Mixed,
    }
}

impl Graph {
    /// Whether training on a batch equals training on its shards: every output holds the
    /// samples in blocks along axis 0, each computed from its own sample's inputs only, and no
    /// module mixes the samples in training (batch-norm's batch statistics). `module` gives a
    /// module's spec by path, `param_rank` a parameter's rank by name. Unknown means no.
    pub fn splits_by_sample(
        &self,
        module: &dyn Fn(&str) -> Option<LayerSpec>,
        param_rank: &dyn Fn(&str) -> Option<usize>,
    ) -> bool {
        let mut values: Vec<Rows> = self
            .inputs
            .iter()
            .map(|i| samples(0, i.shape.as_ref().map(|s| s.len() + 1)))
            .collect();
        for node in &self.nodes {
            let xs: Vec<Rows> = node
                .inputs
                .iter()
                .map(|&i| values.get(i).cloned().unwrap_or(Mixed))
                .collect();
            let out = match &node.op {
                Op::Call { module: path } => match module(path) {
                    Some(spec) => call(&spec, &xs),
                    None => Mixed,
                },
                op => op_rows(op, &xs, param_rank),
            };
            values.push(out);
        }
        !self.outputs.is_empty()
            && self
                .outputs
                .iter()
                .all(|&o| matches!(values.get(o), Some(Samples { axis: 0, .. })))
    }
}
