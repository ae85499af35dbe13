//! The tape: every op appends a node holding its value and, when a gradient is wanted, the rule that
//! turns the output's gradient into its inputs' gradients. `backward` walks the tape once in reverse.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{KilnError, Result};

/// kiln's tensor: an n-dimensional array of f32.
pub type Tensor = ArrayD<f32>;

/// A handle to a value recorded on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// What a backward rule sees: the op's inputs and output, and which inputs want a gradient.
pub struct BackwardCtx<'a> {
    tape: &'a Tape,
    inputs: &'a [Var],
    output: &'a Tensor,
}

impl BackwardCtx<'_> {
    /// The value of the op's `i`-th input.
    pub fn input(&self, i: usize) -> &Tensor {
        &self.tape.nodes[self.inputs[i].0].value
    }
    /// The op's own output value.
    pub fn output(&self) -> &Tensor {
        self.output
    }
    /// How many inputs the op has.
    pub fn inputs_len(&self) -> usize {
        self.inputs.len()
    }
    /// Whether the `i`-th input needs a gradient (skip the work when it does not).
    pub fn needs(&self, i: usize) -> bool {
        self.tape.nodes[self.inputs[i].0].requires_grad
    }
}

/// A backward rule: from the output's gradient, one gradient per input (None where not needed).
pub type BackwardFn = Box<dyn Fn(&BackwardCtx, &Tensor) -> Vec<Option<Tensor>> + Send + Sync>;

struct Node {
    value: Tensor,
    inputs: Vec<Var>,
    backward: Option<BackwardFn>,
    requires_grad: bool,
}

/// `f` boxed as a backward rule. Without the `train` feature (kiln-wasm's predict-only module) no
/// tape records (see [`Tape::new`]) and no rule is ever boxed, so the linker drops every op's backward
/// code: that is most of the autodiff's size.
#[cfg(feature = "train")]
fn rule<F>(f: F) -> Option<BackwardFn>
where
    F: Fn(&BackwardCtx, &Tensor) -> Vec<Option<Tensor>> + Send + Sync + 'static,
{
    Some(Box::new(f))
}

#[cfg(not(feature = "train"))]
fn rule<F>(_: F) -> Option<BackwardFn> {
    None
}

/// The parts of a packed multi-output value (see [`Tape::push_multi`]).
fn split<'a>(
    flat: &'a [f32],
    shapes: &[Vec<usize>],
    offsets: &[usize],
) -> Vec<ArrayViewD<'a, f32>> {
    shapes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            ArrayViewD::from_shape(IxDyn(s), &flat[offsets[k]..offsets[k + 1]])
                .expect("a part of the packed outputs")
        })
        .collect()
}

/// A recording of one forward pass. Create one per step; it owns every intermediate value.
pub struct Tape {
    nodes: Vec<Node>,
    grads: Vec<Option<Tensor>>,
    /// Whether layers behave as in training (dropout active, batch-norm on batch statistics).
    pub training: bool,
    /// Whether one op may spread its work over rayon's threads (attention's batches, a recurrent
    /// layer's chunks). Off on a shard of a data-parallel step, whose sibling shard holds the
    /// other core already. Either way every value is computed by the same loop: same bits.
    pub(crate) parallel_ops: bool,
    record: bool,
    rng: ChaCha8Rng,
    id: u64,
    /// Parameters bound on this tape, by the parameter's id: every variable it was bound to, with
    /// the version of the value each holds, newest last. A parameter used twice at one version (a
    /// module called twice, a tied weight) is one variable; after a write to the parameter (a
    /// loaded state dict, an optimizer step, a freeze) the next bind makes a new one, so a tape
    /// that lives across calls (Python's eager graph) never hands out a stale copy.
    bound: std::collections::HashMap<u64, Vec<(u64, Var)>>,
    /// New values for buffers (batch-norm running statistics), by the buffer's id: a forward pass
    /// reads the model without changing it, and whoever owns the model applies these after it.
    updates: Vec<(u64, Tensor)>,
}

/// Every tape gets its own id, so a parameter bound on one tape is never mistaken for a value of another.
static NEXT_TAPE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Tape {
    /// A tape that records backward rules. `training` selects layer behaviour; `seed` drives dropout.
    /// Built without the `train` feature, kiln-core keeps no backward rules: every tape is an
    /// inference tape and [`Tape::backward`] says so.
    pub fn new(training: bool, seed: u64) -> Self {
        Tape {
            nodes: Vec::with_capacity(64),
            grads: Vec::new(),
            training,
            parallel_ops: true,
            record: cfg!(feature = "train"),
            rng: ChaCha8Rng::seed_from_u64(seed),
            id: NEXT_TAPE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            bound: std::collections::HashMap::new(),
            updates: Vec::new(),
        }
    }

    /// A tape for inference: no backward rules are kept and layers run in eval mode.
    pub fn inference() -> Self {
        Tape {
            record: false,
            ..Tape::new(false, 0)
        }
    }

    /// This tape's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The tape's random generator (dropout masks).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Bind a parameter (by its process-unique `key`) at `version` of its value: the leaf holding
    /// `value`, made once per tape, key and version; later calls at the same version return the
    /// same variable without calling `value`, a call at another version makes a new leaf.
    pub fn bind(
        &mut self,
        key: u64,
        version: u64,
        value: impl FnOnce() -> Tensor,
        requires_grad: bool,
    ) -> Var {
        if let Some(&(at, v)) = self.bound.get(&key).and_then(|b| b.last()) {
            if at == version {
                return v;
            }
        }
        let v = self.leaf(value(), requires_grad);
        self.bound.entry(key).or_default().push((version, v));
        v
    }

    /// Take the gradient (after backward) of the parameter `key` out of the tape: the sum over
    /// every variable it was bound to here (one per version of its value it was used at), or None
    /// when it was not bound or no gradient reached it.
    pub fn take_bound_grad(&mut self, key: u64) -> Option<Tensor> {
        let n = self.bound.get(&key).map_or(0, Vec::len);
        let mut sum: Option<Tensor> = None;
        for i in 0..n {
            let v = self.bound[&key][i].1;
            if let Some(g) = self.take_grad(v) {
                match &mut sum {
                    Some(acc) => *acc += &g,
                    slot => *slot = Some(g),
                }
            }
        }
        sum
    }

    /// The new value recorded for the buffer `key` by this tape's forward pass, if any.
    pub fn update_of(&self, key: u64) -> Option<&Tensor> {
        self.updates.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Record a buffer's new value (replacing an earlier one of the same pass).
    pub fn set_update(&mut self, key: u64, value: Tensor) {
        match self.updates.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.updates.push((key, value)),
        }
    }

    /// Move the recorded buffer values out (see [`Tape::set_update`]).
    pub fn take_updates(&mut self) -> Vec<(u64, Tensor)> {
        std::mem::take(&mut self.updates)
    }

    /// A constant input (no gradient).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.leaf(value, false)
    }

    /// A leaf value; with `requires_grad` its gradient is kept by [`Tape::backward`].
    pub fn leaf(&mut self, value: Tensor, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            value,
            inputs: Vec::new(),
            backward: None,
            requires_grad: requires_grad && self.record,
        });
        Var(self.nodes.len() - 1)
    }

    /// The value held by `v`.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// Take the value out of the tape (cheap; the tape keeps an empty array in its place).
    pub fn take_value(&mut self, v: Var) -> Tensor {
        std::mem::replace(&mut self.nodes[v.0].value, ArrayD::zeros(IxDyn(&[0])))
    }

    /// The shape of `v`'s value.
    pub fn shape(&self, v: Var) -> &[usize] {
        self.nodes[v.0].value.shape()
    }

    /// Whether `v` takes part in the gradient.
    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Record an op's output. The backward rule is dropped when no input needs a gradient.
    pub fn push<F>(&mut self, value: Tensor, inputs: &[Var], backward: F) -> Var
    where
        F: Fn(&BackwardCtx, &Tensor) -> Vec<Option<Tensor>> + Send + Sync + 'static,
    {
        let requires_grad = self.record && inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        self.nodes.push(Node {
            value,
            inputs: if requires_grad {
                inputs.to_vec()
            } else {
                Vec::new()
            },
            backward: if requires_grad { rule(backward) } else { None },
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// Record an op with several outputs (a recurrent layer's sequence and final states). The tape
    /// keeps one node holding the outputs packed end to end, and one small node per output that
    /// reads its part; `backward` receives every output's gradient (zeros where an output was unused)
    /// and the outputs' values, and returns one gradient per input.
    pub fn push_multi<F>(&mut self, values: Vec<Tensor>, inputs: &[Var], backward: F) -> Vec<Var>
    where
        F: Fn(&BackwardCtx, &[ArrayViewD<f32>], &[ArrayViewD<f32>]) -> Vec<Option<Tensor>>
            + Send
            + Sync
            + 'static,
    {
        let shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape().to_vec()).collect();
        let mut offsets = vec![0];
        for v in &values {
            offsets.push(offsets.last().expect("starts at 0") + v.len());
        }
        let total = offsets[values.len()];
        let mut packed = Vec::with_capacity(total);
        for v in &values {
            packed.extend(v.iter().copied());
        }
        let (shapes_b, offsets_b) = (shapes.clone(), offsets.clone());
        let whole = self.push(
            ArrayD::from_shape_vec(IxDyn(&[total]), packed).expect("flat"),
            inputs,
            move |c, g| {
                let g = g.as_standard_layout();
                let out = c
                    .output()
                    .as_slice()
                    .expect("packed outputs are contiguous");
                let g = g.as_slice().expect("standard layout");
                backward(
                    c,
                    &split(out, &shapes_b, &offsets_b),
                    &split(g, &shapes_b, &offsets_b),
                )
            },
        );
        values
            .into_iter()
            .enumerate()
            .map(|(k, v)| {
                let (start, end) = (offsets[k], offsets[k + 1]);
                self.push(v, &[whole], move |_, g| {
                    let mut full = vec![0.0; total];
                    for (d, s) in full[start..end].iter_mut().zip(g.iter()) {
                        *d = *s;
                    }
                    vec![Some(
                        ArrayD::from_shape_vec(IxDyn(&[total]), full).expect("flat"),
                    )]
                })
            })
            .collect()
    }

    /// Back-propagate from the scalar `loss` (gradient 1), filling every needed gradient.
    pub fn backward(&mut self, loss: Var) -> Result<()> {
        if self.nodes[loss.0].value.len() != 1 {
            return Err(KilnError::shape(format!(
                "backward: the loss must be a single value, got shape {:?}",
                self.nodes[loss.0].value.shape()
            )));
        }
        let seed = ArrayD::ones(self.nodes[loss.0].value.raw_dim());
        self.backward_with(loss, seed)
    }

    /// Back-propagate from `out` with an explicit output gradient.
    pub fn backward_with(&mut self, out: Var, grad: Tensor) -> Result<()> {
        if !cfg!(feature = "train") {
            return Err(KilnError::value(
                "backward: this kiln-core was built without the `train` feature (predict only)",
            ));
        }
        if grad.shape() != self.nodes[out.0].value.shape() {
            return Err(KilnError::shape(format!(
                "backward: gradient shape {:?} does not match the value's shape {:?}",
                grad.shape(),
                self.nodes[out.0].value.shape()
            )));
        }
        self.grads = vec![None; self.nodes.len()];
        self.grads[out.0] = Some(grad);
        for i in (0..=out.0).rev() {
            let Some(g) = self.grads[i].take() else {
                continue;
            };
            let node = &self.nodes[i];
            let Some(rule) = &node.backward else {
                // A leaf keeps its gradient for the caller; intermediate ones are dropped once used.
                self.grads[i] = Some(g);
                continue;
            };
            let ctx = BackwardCtx {
                tape: self,
                inputs: &node.inputs,
                output: &node.value,
            };
            let input_grads = rule(&ctx, &g);
            let inputs = std::mem::take(&mut self.nodes[i].inputs);
            for (v, ig) in inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !self.nodes[v.0].requires_grad {
                    continue;
                }
                if ig.shape() != self.nodes[v.0].value.shape() {
                    return Err(KilnError::shape(format!(
                        "backward: internal gradient shape {:?} for a value of shape {:?}",
                        ig.shape(),
                        self.nodes[v.0].value.shape()
                    )));
                }
                match &mut self.grads[v.0] {
                    Some(acc) => *acc += &ig,
                    slot => *slot = Some(ig),
                }
            }
            self.nodes[i].inputs = inputs;
        }
        Ok(())
    }

    /// The gradient of a leaf after [`Tape::backward`], if it received one.
    pub fn grad(&self, v: Var) -> Option<&Tensor> {
        self.grads.get(v.0).and_then(|g| g.as_ref())
    }

    /// Move a leaf's gradient out of the tape.
    pub fn take_grad(&mut self, v: Var) -> Option<Tensor> {
        self.grads.get_mut(v.0).and_then(|g| g.take())
    }
}
