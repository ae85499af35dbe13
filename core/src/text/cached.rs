//! [`Cached`]: a [`Step`] for causal language models that computes only the new position per
//! token, keeping every causal self-attention's keys and values (a key/value cache), so a token
//! costs the same early in the window as late in it; the windowed rerun
//! ([`super::step::Windowed`]) costs a whole window per token.
//!
//! A recurrent layer (one direction, `nn.GRU` / `nn.LSTM`) carries its state the same way: each
//! token runs one step from the state the last one left.
//!
//! It runs kiln's graph ([`crate::graph`]) wherever that comes from, a [`Source`]: kiln's own
//! [`Model`] (Python's `kiln.text.generate(model, …)`) or an ONNX file kiln's engine imported
//! (`InferenceSession` in Python, `model.generate` in kiln-wasm). The same rules and the same
//! run serve both.
//!
//! A model qualifies when its graph is position-wise apart from causal self-attention: every value
//! either does not depend on the ids (parameters and what is made of them) or has one time axis
//! along which position `p` depends only on ids `..=p` (embeddings and gathers by id, Linear,
//! matrix products with a constant, LayerNorm, activations, element-wise arithmetic,
//! permutations, reshapes that keep the time axis whole (`reshape(-1, H)` on a batch of one),
//! softmax and slices away from the time axis, and [`crate::nn::Attention::cacheable`] calls);
//! its input is ids `[batch, T]` and its first output logits `[batch, T, vocab]`. A parameter
//! shaped along time (a learnt position table `[T, E]` added to the embeddings) is read at the
//! new position. When the window is full, the next token starts a fresh cache on the last `T`
//! ids, as the windowed rerun would see them.

use super::Step;
use crate::autograd::{broadcast_shape, Tape, Tensor, Var};
use crate::graph::{axis, run_node, Dim, Graph, Op, Scope, Value};
use crate::nn::LayerSpec;
use crate::{value_err, Model, Result};
use std::sync::Arc;

/// Where a cached run finds what the graph's nodes read: its parameters and layers.
pub trait Source {
    /// Runs `f` with the scope that binds the graph's parameters and layers.
    fn scoped(&mut self, f: &mut dyn FnMut(&mut dyn Scope) -> Result<()>) -> Result<()>;
}

impl Source for &mut Model {
    fn scoped(&mut self, f: &mut dyn FnMut(&mut dyn Scope) -> Result<()>) -> Result<()> {
        f(&mut self.net)
    }
}

/// A model on kiln's ONNX engine as a [`Source`] (any handle to the session: a reference, an
/// `Rc`, an `Arc`).
#[cfg(feature = "export")]
pub struct Engine<E>(pub E);

#[cfg(feature = "export")]
impl<E: std::ops::Deref<Target = crate::onnx::engine::KilnSession>> Source for Engine<E> {
    fn scoped(&mut self, f: &mut dyn FnMut(&mut dyn Scope) -> Result<()>) -> Result<()> {
        self.0.scoped(f)
    }
}

/// Each value of the graph: independent of the ids, or along which axis it runs over time.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Const,
    Time(usize),
    /// A recurrent layer's tuple (its output along time, its final states).
    Recurrent(usize),
    /// A final state: it depends on every position, so nothing may read it.
    State,
}

/// A causal model run position by position with key/value caches and carried states.
pub struct Cached<'a> {
    source: Box<dyn Source + 'a>,
    run: Run,
}

/// What stepping a graph needs to know, found once (a session keeps it for all its generations).
pub(crate) struct Plan {
    graph: Graph,
    kinds: Vec<Kind>,
    /// Every value's shape on a whole window of ids `[1, window]` (a timed reshape's target).
    shapes: Vec<Vec<usize>>,
    window: usize,
}

/// What a cached generation keeps between tokens.
struct Run {
    plan: Arc<Plan>,
    history: Vec<u32>,
    /// Positions of `history[start..]` already in the caches.
    done: usize,
    start: usize,
    caches: Vec<Option<(Tensor, Tensor)>>,
}

/// Whether the graph qualifies: the kind of each value (`None` when some op would mix positions).
/// `shapes` are the values' shapes on ids `[1, window]`; `spec_of` gives a called module's spec.
fn plan(
    graph: &Graph,
    shapes: &[Vec<usize>],
    spec_of: &mut dyn FnMut(&str) -> Option<LayerSpec>,
) -> Option<Vec<Kind>> {
    use crate::nn::LayerSpec as S;
    if graph.inputs.len() != 1 || shapes.first()?.len() != 2 || shapes[0][1] < 2 {
        return None;
    }
    let mut kinds = vec![Kind::Time(1)];
    for (k, node) in graph.nodes.iter().enumerate() {
        let out = &shapes[graph.inputs.len() + k];
        let rank = out.len();
        let rank_of = |i: usize| shapes[i].len();
        // each timed input's time axis; for arithmetic, lined up with the output's axes from the
        // end, as broadcasting lines them up
        let binary = op_is_binary(&node.op);
        if node.inputs.iter().any(|&i| kinds[i] == Kind::State) {
            return None;
        }
        if let (Op::Item { index }, [i]) = (&node.op, node.inputs.as_slice()) {
            let Kind::Recurrent(a) = kinds[*i] else {
                return None;
            };
            kinds.push(if *index == 0 {
                Kind::Time(a)
            } else {
                Kind::State
            });
            continue;
        }
        let mut timed = node.inputs.iter().filter_map(|&i| match kinds[i] {
            Kind::Time(a) if binary => Some(a + rank - rank_of(i).min(rank)),
            Kind::Time(a) | Kind::Recurrent(a) => Some(a),
            Kind::Const | Kind::State => None,
        });
        let Some(a) = timed.next() else {
            if matches!(
                node.op,
                Op::Call { .. } | Op::MultiheadAttention(_) | Op::Item { .. }
            ) {
                return None;
            }
            kinds.push(Kind::Const);
            continue;
        };
        if timed.any(|b| b != a) {
            return None;
        }
        let x_rank = rank_of(node.inputs[0]);
        let away_from_time = |trailing: usize| a + trailing < x_rank;
        let only_first_timed = node.inputs[1..].iter().all(|&i| kinds[i] == Kind::Const);
        let ok = match &node.op {
            Op::MultiheadAttention(att) => {
                att.cacheable(&node.inputs) && a == if att.batch_first { 1 } else { 0 }
            }
            Op::Call { module } => match spec_of(module) {
                // one direction, no initial state given: its state carries over between tokens
                Some(spec @ (S::GRU { .. } | S::LSTM { .. })) => {
                    let cfg = crate::nn::rnn_config(&spec)?;
                    let along = if cfg.batch_first { 1 } else { 0 };
                    if cfg.bidirectional || node.inputs.len() != 1 || a != along {
                        return None;
                    }
                    kinds.push(Kind::Recurrent(a));
                    continue;
                }
                Some(S::Embedding { .. }) => true,
                Some(S::Linear { .. }) => away_from_time(1),
                Some(S::LayerNorm {
                    normalized_shape, ..
                }) => away_from_time(normalized_shape.len()),
                Some(
                    S::Dropout { .. }
                    | S::ReLU
                    | S::GELU { .. }
                    | S::LeakyReLU { .. }
                    | S::Sigmoid
                    | S::Tanh,
                ) => true,
                _ => false,
            },
            op if op.is_unary_elementwise() => true,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Embedding => true,
            Op::Linear => away_from_time(1),
            // x @ w with w a constant matrix: rows stay rows
            Op::MatMul => only_first_timed && rank_of(node.inputs[1]) == 2 && away_from_time(1),
            Op::Gather { dim } => {
                let d = axis(*dim, x_rank, "gather").ok()?;
                if kinds[node.inputs[0]] == Kind::Const {
                    // rows of a table picked by ids along time (an embedding as ONNX writes it)
                    kinds.push(Kind::Time(d + a));
                    continue;
                }
                only_first_timed && a < d
            }
            Op::LayerNorm { .. } => away_from_time(rank_of(node.inputs[1])),
            Op::Softmax { dim } | Op::LogSoftmax { dim } => {
                axis(*dim, x_rank, "softmax").ok() != Some(a)
            }
            Op::Slice { dim, .. } => axis(*dim, x_rank, "slice").ok() != Some(a),
            Op::Permute { dims } => {
                let at = dims
                    .iter()
                    .position(|&d| axis(d, x_rank, "permute").ok() == Some(a))?;
                kinds.push(Kind::Time(at));
                continue;
            }
            Op::Reshape { .. } | Op::Flatten { .. } => {
                kinds.push(Kind::Time(reshaped_time(&shapes[node.inputs[0]], a, out)?));
                continue;
            }
            _ => false,
        };
        if !ok {
            return None;
        }
        kinds.push(Kind::Time(a));
    }
    if graph.outputs.iter().any(|&o| kinds[o] == Kind::State) {
        return None;
    }
    match graph.outputs.first().map(|&o| (kinds[o], shapes[o].len())) {
        Some((Kind::Time(1), 3)) => Some(kinds),
        _ => None,
    }
}

/// The output axis that a reshape from `from` (time along `a`) to `to` keeps the time axis as,
/// whole: the same length, with as many values before it (on a batch of one, `[1, T, H]` to
/// `[T, H]` and back); `None` when the reshape splits or merges it with other positions.
fn reshaped_time(from: &[usize], a: usize, to: &[usize]) -> Option<usize> {
    let before: usize = from[..a].iter().product();
    (0..to.len()).find(|&b| to[b] == from[a] && to[..b].iter().product::<usize>() == before)
}

impl<'a> Cached<'a> {
    /// For kiln's own model, when its graph runs position by position (see the module's notes);
    /// `Ok(None)` when it does not (the caller reruns the window instead).
    pub fn for_model(model: &'a mut Model) -> Result<Option<Self>> {
        let window = match model.input_shapes().as_slice() {
            [Some(s)] if s.len() == 1 && s[0] > 0 => s[0],
            _ => return Ok(None),
        };
        let Ok(graph) = model.net.require_graph() else {
            return Ok(None);
        };
        let graph = graph.clone();
        let mut source: Box<dyn Source + 'a> = Box::new(model);
        Ok(Plan::new(&mut *source, graph, window).map(|plan| Self::on(source, Arc::new(plan))))
    }

    /// For a model on kiln's ONNX engine (ids `[batch, T]` in, logits `[batch, T, vocab]` out),
    /// when its imported graph runs position by position; `Ok(None)` when it does not. The
    /// session finds that once, for all its generations.
    #[cfg(feature = "export")]
    pub fn for_engine<E>(session: E) -> Result<Option<Self>>
    where
        E: std::ops::Deref<Target = crate::onnx::engine::KilnSession> + 'a,
    {
        let plan = match session.step_plan.get() {
            Some(plan) => plan.clone(),
            None => {
                let plan = Plan::for_engine(&session).map(Arc::new);
                session.step_plan.get_or_init(|| plan).clone()
            }
        };
        Ok(plan.map(|plan| Self::on(Box::new(Engine(session)), plan)))
    }

    fn on(source: Box<dyn Source + 'a>, plan: Arc<Plan>) -> Self {
        let n = plan.graph.nodes.len();
        Cached {
            source,
            run: Run {
                plan,
                history: Vec::new(),
                done: 0,
                start: 0,
                caches: vec![None; n],
            },
        }
    }

    /// Run the positions `history[start + done..]` through the graph; the logits at the last.
    fn advance(&mut self) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        let run = &mut self.run;
        self.source.scoped(&mut |scope| {
            logits = run.advance(scope)?;
            Ok(())
        })?;
        Ok(logits)
    }
}

impl Plan {
    /// The plan of `graph` with ids `[1, window]` from `source`, when it qualifies.
    fn new(source: &mut dyn Source, graph: Graph, window: usize) -> Option<Plan> {
        // every value's shape on a whole window of ids, and the layers' specs
        let mut shapes = vec![vec![1, window]];
        let mut kinds = None;
        let planned = source.scoped(&mut |scope| {
            let mut t = Tape::inference();
            let x = t.constant(Tensor::zeros(vec![1, window]));
            crate::graph::run_observed(scope, &graph, &mut t, &[x], &mut |_, t, v| {
                shapes.push(t.shape(v).to_vec())
            })?;
            if shapes.len() == graph.nodes.len() + 1 {
                kinds = plan(&graph, &shapes, &mut |m| {
                    scope.module(m).ok().map(|m| m.spec())
                });
            }
            Ok(())
        });
        let (Ok(()), Some(kinds)) = (planned, kinds) else {
            return None;
        };
        Some(Plan {
            graph,
            kinds,
            shapes,
            window,
        })
    }

    #[cfg(feature = "export")]
    fn for_engine(session: &crate::onnx::engine::KilnSession) -> Option<Plan> {
        let window = match session.inputs() {
            [i] if matches!(i.dims.as_slice(), [None | Some(1), Some(t)] if *t > 0) => i.dims[1]?,
            _ => return None,
        };
        if session.outputs().first().map(|o| o.dims.len()) != Some(3) {
            return None;
        }
        Plan::new(&mut Engine(session), session.graph().0.clone(), window)
    }
}

impl Run {
    fn advance(&mut self, scope: &mut dyn Scope) -> Result<Vec<f32>> {
        let plan = self.plan.clone();
        if self.history.len() - self.start > plan.window {
            // the window is full: a fresh cache over the last `window` ids
            self.start = self.history.len() - plan.window;
            self.done = 0;
            self.caches.iter_mut().for_each(|c| *c = None);
        }
        let new = &self.history[self.start + self.done..];
        if new.is_empty() {
            value_err!("generate: nothing to feed the model");
        }
        let (p, n) = (self.done, new.len());
        let mut t = Tape::inference();
        let ids = Tensor::from_shape_vec(vec![1, n], new.iter().map(|&v| v as f32).collect())
            .expect("sized");
        let mut values = vec![Value::One(t.constant(ids))];
        let n_in = plan.graph.inputs.len();
        for (k, node) in plan.graph.nodes.iter().enumerate() {
            let kind = plan.kinds[n_in + k];
            if let Op::Item { .. } = node.op {
                let v = run_node(scope, &mut t, &node.op, &[values[node.inputs[0]].clone()])?;
                values.push(v);
                continue;
            }
            let mut xs: Vec<Var> = node
                .inputs
                .iter()
                .map(|&i| values[i].var())
                .collect::<Result<_>>()?;
            if let (Kind::Recurrent(_), Op::Call { module }) = (kind, &node.op) {
                // the state the last token left, as the initial state of this one
                if let Some((h, c)) = self.caches[k].take() {
                    xs.push(t.constant(h));
                    if !c.is_empty() {
                        xs.push(t.constant(c));
                    }
                }
                let outs = scope.module(module)?.forward_multi(&mut t, &xs)?;
                let state = |i: usize| outs.get(i).map(|&v| t.value(v).clone());
                let empty = Tensor::zeros(vec![0]);
                self.caches[k] =
                    Some((state(1).unwrap_or(empty.clone()), state(2).unwrap_or(empty)));
                values.push(Value::Tuple(outs));
                continue;
            }
            let v = match (&node.op, kind) {
                (Op::MultiheadAttention(att), _) => {
                    att.forward_cached(&mut t, &xs, &mut self.caches[k])?
                }
                (Op::Reshape { .. } | Op::Flatten { .. }, Kind::Time(b)) => {
                    // the window's target with the new positions along time
                    let mut to = plan.shapes[n_in + k].clone();
                    to[b] = n;
                    let shape = to.iter().map(|&d| Dim::Size(d as i64)).collect();
                    let vals = [Value::One(xs[0])];
                    run_node(scope, &mut t, &Op::Reshape { shape }, &vals)?.var()?
                }
                (op, _) => {
                    // a constant along time (a position table) is read at the new positions
                    if let (Kind::Time(_), true, true) =
                        (kind, node.inputs.len() == 2, op_is_binary(op))
                    {
                        for j in 0..2 {
                            if plan.kinds[node.inputs[j]] == Kind::Const {
                                let (other, id) = (xs[1 - j], node.inputs[1 - j]);
                                xs[j] = self.along_time(&mut t, xs[j], other, id, p, n)?;
                            }
                        }
                    }
                    let vals: Vec<Value> = xs.iter().map(|&x| Value::One(x)).collect();
                    run_node(scope, &mut t, op, &vals)?.var()?
                }
            };
            values.push(Value::One(v));
        }
        self.done += n;
        let out = values[plan.graph.outputs[0]].var()?;
        let o = t.value(out);
        let (rows, vocab) = (o.shape()[1], o.shape()[2]);
        let last = o.as_standard_layout();
        let flat = last.as_slice().expect("standard layout");
        Ok(flat[(rows - 1) * vocab..rows * vocab].to_vec())
    }

    /// A constant operand of a per-position op, sliced to positions `p..p + n` where it runs along
    /// the other operand's time axis with the window's length (a learnt position table).
    fn along_time(
        &self,
        t: &mut Tape,
        c: Var,
        other: Var,
        other_id: usize,
        p: usize,
        n: usize,
    ) -> Result<Var> {
        let Kind::Time(a) = self.plan.kinds[other_id] else {
            return Ok(c);
        };
        let (rc, ro) = (t.shape(c).len(), t.shape(other).len());
        // the constant's axis that broadcasting lines up with the time axis
        let Some(at) = (a + rc).checked_sub(ro) else {
            return Ok(c);
        };
        if at >= rc || t.shape(c)[at] != self.plan.window {
            broadcast_shape("generate", t.shape(c), t.shape(other))?;
            return Ok(c);
        }
        t.slice(c, at, p, p + n)
    }
}

/// The step generation runs a model on kiln's engine with: [`Cached`] when its imported graph
/// qualifies, else the windowed rerun. The one rule for kiln-wasm's `model.generate` and
/// Python's `InferenceSession`.
#[cfg(feature = "export")]
pub fn engine_step<'a, E>(session: E) -> Result<Box<dyn Step + 'a>>
where
    E: std::ops::Deref<Target = crate::onnx::engine::KilnSession> + Clone + 'a,
{
    Ok(match Cached::for_engine(session.clone())? {
        Some(c) => Box::new(c),
        None => Box::new(super::Windowed::for_engine(session)?),
    })
}

/// [`engine_step`] for an `InferenceSession`: cached on kiln's engine when the graph qualifies,
/// else (tract's engine too) the windowed rerun.
#[cfg(feature = "onnx")]
pub fn session_step(
    session: &crate::onnx::session::InferenceSession,
) -> Result<Box<dyn Step + '_>> {
    if let Some(kiln) = session.kiln() {
        if let Some(c) = Cached::for_engine(kiln)? {
            return Ok(Box::new(c));
        }
    }
    Ok(Box::new(super::Windowed::for_session(session)?))
}

fn op_is_binary(op: &Op) -> bool {
    matches!(op, Op::Add | Op::Sub | Op::Mul | Op::Div)
}

impl Step for Cached<'_> {
    fn start(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        let r = &mut self.run;
        r.history = context.to_vec();
        r.start = r.history.len().saturating_sub(r.plan.window);
        r.done = 0;
        r.caches.iter_mut().for_each(|c| *c = None);
        self.advance()
    }

    fn next(&mut self, token: u32) -> Result<Vec<f32>> {
        self.run.history.push(token);
        self.advance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::GraphSpec;

    /// Embedding + a learnt position table → causal self-attention (both layouts) → LayerNorm →
    /// GELU → Linear: per-position logits `[B, T, vocab]`.
    fn model(batch_first: bool, causal: bool) -> Model {
        let att = format!(
            r#"{{"MultiheadAttention":{{"num_heads":2,"batch_first":{batch_first},"need_weights":false,"is_causal":{causal}}}}}"#
        );
        let (into, back) = if batch_first {
            (
                r#"{"op":{"Permute":{"dims":[0,1,2]}},"inputs":[3]}"#,
                r#"{"op":{"Permute":{"dims":[0,1,2]}},"inputs":[9]}"#,
            )
        } else {
            (
                r#"{"op":{"Permute":{"dims":[1,0,2]}},"inputs":[3]}"#,
                r#"{"op":{"Permute":{"dims":[1,0,2]}},"inputs":[9]}"#,
            )
        };
        let json = format!(
            r#"{{"modules":[{{"name":"emb","spec":{{"type":"Embedding","num_embeddings":7,"embedding_dim":4}}}},
                {{"name":"attn","spec":{{"type":"MultiheadAttention","embed_dim":4,"num_heads":2,"batch_first":{batch_first}}}}},
                {{"name":"norm","spec":{{"type":"LayerNorm","normalized_shape":[4]}}}},
                {{"name":"head","spec":{{"type":"Linear","in_features":4,"out_features":7}}}}],
              "params":[{{"name":"pos","shape":[6,4]}}],
              "graph":{{"inputs":[{{"name":"ids","dtype":"int64","shape":[6]}}],
                "nodes":[{{"op":{{"Call":{{"module":"emb"}}}},"inputs":[0]}},
                         {{"op":{{"Param":{{"name":"pos"}}}},"inputs":[]}},
                         {{"op":"Add","inputs":[1,2]}},
                         {into},
                         {{"op":{{"Param":{{"name":"attn.in_proj_weight"}}}},"inputs":[]}},
                         {{"op":{{"Param":{{"name":"attn.in_proj_bias"}}}},"inputs":[]}},
                         {{"op":{{"Param":{{"name":"attn.out_proj.weight"}}}},"inputs":[]}},
                         {{"op":{{"Param":{{"name":"attn.out_proj.bias"}}}},"inputs":[]}},
                         {{"op":{att},"inputs":[4,4,4,5,6,7,8]}},
                         {back},
                         {{"op":"Add","inputs":[10,3]}},
                         {{"op":{{"Call":{{"module":"norm"}}}},"inputs":[11]}},
                         {{"op":{{"Gelu":{{"approximate":"none"}}}},"inputs":[12]}},
                         {{"op":{{"Call":{{"module":"head"}}}},"inputs":[13]}}],
                "outputs":[14]}}}}"#
        );
        let spec: GraphSpec = serde_json::from_str(&json).unwrap();
        let mut m = Model::from_graph_spec(&spec, 3).unwrap();
        // non-zero biases and position table, so a misread one shows
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
        for (_, p) in m.net.tensors_mut() {
            p.value_mut()
                .mapv_inplace(|v| v + rand::Rng::random_range(&mut rng, -0.5..0.5));
        }
        m
    }

    /// The whole window's run (right-padded as the windowed rerun pads), read at position `at`.
    fn full(m: &mut Model, ids: &[u32], at: usize) -> Vec<f32> {
        let mut x = Tensor::zeros(vec![1, 6]);
        for (i, &v) in ids.iter().enumerate() {
            x[[0, i]] = v as f32;
        }
        let out = m.predict(x.view(), 1).unwrap();
        out.slice(ndarray::s![0, at, ..]).to_vec()
    }

    #[test]
    fn cached_steps_give_the_whole_windows_logits_position_by_position() {
        for batch_first in [true, false] {
            let mut m = model(batch_first, true);
            let seq = [2u32, 5, 1, 6, 3, 4, 2, 5, 6];
            let mut want = Vec::new();
            for end in 2..=seq.len() {
                let window = &seq[end.saturating_sub(6)..end];
                want.push(full(&mut m, window, window.len() - 1));
            }
            let mut c = Cached::for_model(&mut m)
                .unwrap()
                .expect("a causal transformer is cached");
            let mut got = vec![c.start(&seq[..2]).unwrap()];
            for &tok in &seq[2..] {
                got.push(c.next(tok).unwrap());
            }
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = g.iter().zip(w).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
                assert!(err < 1e-5, "batch_first {batch_first}, step {k}: {err}");
            }
        }
    }

    /// Embedding → GRU (batch first) or a 2-layer LSTM (time-major, between Permutes) → Linear.
    fn recurrent(cell: &str, extra: &str, nodes: &str, output: usize) -> Model {
        let json = format!(
            r#"{{"modules":[{{"name":"emb","spec":{{"type":"Embedding","num_embeddings":7,"embedding_dim":4}}}},
                {{"name":"rnn","spec":{{"type":"{cell}","input_size":4,"hidden_size":5{extra}}}}},
                {{"name":"head","spec":{{"type":"Linear","in_features":5,"out_features":7}}}}],
              "graph":{{"inputs":[{{"name":"ids","dtype":"int64","shape":[6]}}],"nodes":[{nodes}],"outputs":[{output}]}}}}"#
        );
        let spec: GraphSpec = serde_json::from_str(&json).unwrap();
        Model::from_graph_spec(&spec, 4).unwrap()
    }

    // emb → rnn → (out, h) → head(out); value 4 is h_n
    const GRU_NODES: &str = r#"{"op":{"Call":{"module":"emb"}},"inputs":[0]},{"op":{"Call":{"module":"rnn"}},"inputs":[1]},
        {"op":{"Item":{"index":0}},"inputs":[2]},{"op":{"Item":{"index":1}},"inputs":[2]},{"op":{"Call":{"module":"head"}},"inputs":[3]}"#;
    // emb → time-major → rnn → out → batch-major → head
    const LSTM_NODES: &str = r#"{"op":{"Call":{"module":"emb"}},"inputs":[0]},{"op":{"Permute":{"dims":[1,0,2]}},"inputs":[1]},
        {"op":{"Call":{"module":"rnn"}},"inputs":[2]},{"op":{"Item":{"index":0}},"inputs":[3]},{"op":{"Permute":{"dims":[1,0,2]}},"inputs":[4]},
        {"op":{"Call":{"module":"head"}},"inputs":[5]}"#;

    fn steps_match_whole_windows(m: &mut Model, what: &str) {
        let seq = [2u32, 5, 1, 6, 3, 4, 2, 5, 6];
        let mut want = Vec::new();
        for end in 2..=seq.len() {
            let window = &seq[end.saturating_sub(6)..end];
            want.push(full(m, window, window.len() - 1));
        }
        let mut c = Cached::for_model(m).unwrap().expect(what);
        let mut got = vec![c.start(&seq[..2]).unwrap()];
        for &tok in &seq[2..] {
            got.push(c.next(tok).unwrap());
        }
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = g.iter().zip(w).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err < 1e-5, "{what}, step {k}: {err}");
        }
    }

    #[test]
    fn recurrent_layers_carry_their_state_between_tokens() {
        let mut gru = recurrent("GRU", r#","batch_first":true"#, GRU_NODES, 5);
        steps_match_whole_windows(&mut gru, "a GRU");
        let mut lstm = recurrent("LSTM", r#","num_layers":2"#, LSTM_NODES, 6);
        steps_match_whole_windows(&mut lstm, "a two-layer time-major LSTM");
    }

    /// The logits a step gives for `seq` fed one id at a time after its first two.
    fn stepped(step: &mut dyn Step, seq: &[u32]) -> Vec<Vec<f32>> {
        let mut got = vec![step.start(&seq[..2]).unwrap()];
        for &tok in &seq[2..] {
            got.push(step.next(tok).unwrap());
        }
        got
    }

    #[cfg(feature = "export")]
    #[test]
    fn kilns_engine_imports_exported_attention_as_the_op_and_caches_it() {
        use crate::onnx::engine::KilnSession;
        use crate::onnx::export::{export_onnx, ExportOptions};
        use crate::onnx::pb::ModelProto;
        use prost::Message;
        let seq = [2u32, 5, 1, 6, 3, 4, 2, 5, 6];
        for batch_first in [true, false] {
            let m = model(batch_first, true);
            let bytes = export_onnx(&m, &ExportOptions::default()).unwrap();
            let engine = KilnSession::from_bytes(&bytes).unwrap().unwrap();
            let ops = |s: &KilnSession| {
                let g = s.graph().0;
                g.nodes
                    .iter()
                    .filter(|n| matches!(n.op, Op::MultiheadAttention(_)))
                    .count()
            };
            assert_eq!(
                ops(&engine),
                1,
                "batch_first {batch_first}: the marked call is one op"
            );
            let mut cached = Cached::for_engine(&engine)
                .unwrap()
                .expect("causal attention qualifies");
            let mut windowed = crate::text::Windowed::for_engine(&engine).unwrap();
            let (got, want) = (stepped(&mut cached, &seq), stepped(&mut windowed, &seq));
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = g.iter().zip(w).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
                assert!(err < 1e-5, "batch_first {batch_first}, step {k}: {err}");
            }
            // a file whose operators are not exactly export's for the mark imports them one by
            // one (and is not cached): here the causal mask lets position 0 see position 1
            let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
            let g = proto.graph.as_mut().unwrap();
            let mask = g
                .initializer
                .iter_mut()
                .find(|t| t.name.ends_with("/causal"))
                .unwrap();
            mask.raw_data[4..8].copy_from_slice(&0f32.to_le_bytes());
            let edited = KilnSession::from_bytes(&proto.encode_to_vec())
                .unwrap()
                .unwrap();
            assert_eq!(ops(&edited), 0, "an edited mask is not the op");
            assert!(Cached::for_engine(&edited).unwrap().is_none());
            let ids =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 6]), vec![2i64, 5, 1, 6, 3, 4])
                    .unwrap();
            let run = |s: &KilnSession| {
                s.run(vec![(
                    "ids".into(),
                    crate::onnx::engine::Value::I64(ids.clone()),
                )])
                .unwrap()
                .remove(0)
            };
            let (a, b) = (run(&engine), run(&edited));
            let row0 = |t: &Tensor| t.slice(ndarray::s![0, 0, ..]).to_vec();
            assert_ne!(
                row0(&a),
                row0(&b),
                "the edit shows in the plain operators' output"
            );
            let rest = |t: &Tensor| t.slice(ndarray::s![0, 1.., ..]).to_owned();
            let err = (rest(&a) - rest(&b)).fold(0f32, |e, d| e.max(d.abs()));
            assert!(
                err < 1e-5,
                "the op and the plain operators agree elsewhere: {err}"
            );
        }
    }

    #[test]
    fn models_that_mix_positions_are_not_cached() {
        let mut m = model(true, false); // attention without the causal mask sees the future
        assert!(Cached::for_model(&mut m).unwrap().is_none());
        // a GRU whose final state is returned reads every position; so does a bidirectional one
        let mut m = recurrent("GRU", r#","batch_first":true"#, GRU_NODES, 4);
        assert!(Cached::for_model(&mut m).unwrap().is_none());
        let mut m = recurrent(
            "GRU",
            r#","batch_first":true,"bidirectional":true"#,
            GRU_NODES,
            5,
        );
        assert!(Cached::for_model(&mut m).unwrap().is_none());
    }
}
