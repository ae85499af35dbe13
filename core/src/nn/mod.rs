//! Layers with PyTorch's names, state-dict keys and default initialisation.
//!
//! A layer is a [`Module`]: it runs `forward` on a [`Tape`] and lists its tensors by name. Every layer
//! can describe itself as a [`LayerSpec`], the serialisable architecture that checkpoints, the Python
//! package and the ONNX exporter share.

mod attention;
mod layers;
mod net;
mod rnn;
mod sequential;
mod simple;
mod spec;
mod summary;

pub use attention::{Attention, MaskKind, MultiheadAttention};
pub use layers::{BatchNorm, Conv, Embedding, LayerNorm, Linear};
pub use net::{GraphSpec, NamedModule, NamedParam, Net};
pub use rnn::{config_of as rnn_config, spec_of as rnn_spec, Recurrent};
pub use sequential::Sequential;
pub use simple::{Activation, Dropout, Flatten, Pool};
pub use spec::LayerSpec;
pub use summary::{Summary, SummaryRow};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::autograd::{Tape, Tensor, Var};
use crate::Result;

/// A named tensor of a module: a trainable parameter or a buffer (such as batch-norm running statistics).
///
/// The value and the trainable flag are private: every write goes through [`Param::value_mut`],
/// [`Param::set_value`] or [`Param::set_trainable`], which bump the parameter's version, so a tape
/// that bound the old value binds the new one next time (see [`Param::bind`]).
#[derive(Debug)]
pub struct Param {
    /// The current value.
    value: Tensor,
    /// The gradient from the last backward pass, if any.
    pub grad: Option<Tensor>,
    /// Whether optimizers update it. Buffers are never trainable; parameters can be frozen.
    trainable: bool,
    /// Whether this is a buffer (state, not a parameter).
    pub is_buffer: bool,
    /// Unique in the process (a clone gets its own): how tapes know which variables hold it.
    id: u64,
    /// Bumped by every write to the value or the trainable flag: a tape's variable holds one version.
    version: u64,
}

/// Every parameter gets its own id, so tapes can tell parameters apart without borrowing them
/// mutably (several tapes read one model at once in a data-parallel step).
static NEXT_PARAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_param_id() -> u64 {
    NEXT_PARAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Clone for Param {
    fn clone(&self) -> Self {
        Param {
            value: self.value.clone(),
            grad: self.grad.clone(),
            trainable: self.trainable,
            is_buffer: self.is_buffer,
            id: next_param_id(),
            version: 0,
        }
    }
}

impl Param {
    /// A trainable parameter.
    pub fn new(value: Tensor) -> Self {
        Param {
            value,
            grad: None,
            trainable: true,
            is_buffer: false,
            id: next_param_id(),
            version: 0,
        }
    }

    /// A buffer: saved and exported with the model, never trained.
    pub fn buffer(value: Tensor) -> Self {
        Param {
            value,
            grad: None,
            trainable: false,
            is_buffer: true,
            id: next_param_id(),
            version: 0,
        }
    }

    /// The current value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The value, to change in place (an optimizer step, pruning): counts as a write, so tapes
    /// bind the new value from now on.
    pub fn value_mut(&mut self) -> &mut Tensor {
        self.version += 1;
        &mut self.value
    }

    /// The value to change in place beside the gradient to read (an optimizer step): a write, as
    /// [`Param::value_mut`].
    pub fn value_mut_and_grad(&mut self) -> (&mut Tensor, Option<&Tensor>) {
        self.version += 1;
        (&mut self.value, self.grad.as_ref())
    }

    /// Replace the value (a loaded state dict or flat buffer); tapes bind the new one from now on.
    /// The caller keeps the shape (the loaders check it).
    pub fn set_value(&mut self, value: Tensor) {
        self.version += 1;
        self.value = value;
    }

    /// Whether optimizers update it.
    pub fn trainable(&self) -> bool {
        self.trainable
    }

    /// Freeze (false) or unfreeze (true); tapes bind it with the new flag from now on.
    pub fn set_trainable(&mut self, trainable: bool) {
        if trainable != self.trainable {
            self.version += 1;
            self.trainable = trainable;
        }
    }

    /// Put the value on the tape (a copy, so the tape owns its values), which remembers where, so
    /// the gradient can be collected after backward. Bound twice on one tape while the value is
    /// unchanged (a module called twice, a tied weight) it is one variable, so both uses add to
    /// its gradient; bound after a write (see [`Param::value_mut`]) it is a new variable holding
    /// the new value. Reads the parameter only: any number of tapes may bind it at once.
    pub fn bind(&self, t: &mut Tape) -> Var {
        t.bind(self.id, self.version, || self.value.clone(), self.trainable)
    }

    /// The buffer's value as this tape's forward pass sees it: the value it recorded with
    /// [`Param::update`] earlier in the pass, else the stored one.
    pub fn current<'a>(&'a self, t: &'a Tape) -> &'a Tensor {
        t.update_of(self.id).unwrap_or(&self.value)
    }

    /// Record a new value for this buffer (batch-norm's running statistics in training): the
    /// model's owner applies it after the forward pass ([`crate::nn::Net::forward_all`]).
    pub fn update(&self, t: &mut Tape, value: Tensor) {
        t.set_update(self.id, value);
    }

    /// Take the value this tape recorded for the buffer, if any (see [`Param::update`]).
    pub fn apply_update(&mut self, updates: &mut Vec<(u64, Tensor)>) {
        if let Some(i) = updates.iter().position(|(k, _)| *k == self.id) {
            self.set_value(updates.swap_remove(i).1);
        }
    }

    /// Add this parameter's gradient from the tape (after backward) to its `grad`, as PyTorch
    /// accumulates until `zero_grad`: the sum over every use on the tape, also uses at an
    /// earlier value (a forward pass before a write, one after it).
    pub fn collect_grad(&mut self, t: &mut Tape) {
        let Some(g) = t.take_bound_grad(self.id) else {
            return;
        };
        match &mut self.grad {
            Some(acc) => *acc += &g,
            slot => *slot = Some(g),
        }
    }
}

/// A layer or a container of layers.
pub trait Module: Send + Sync {
    /// Run the layer on `x`, recording on `t` (whose `training` flag selects train or eval behaviour).
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var>;

    /// Run on several inputs with several outputs: a recurrent layer takes `(x, h0)` and returns
    /// `(output, h_n)`. Other layers take one input and return one value.
    fn forward_multi(&self, t: &mut Tape, xs: &[Var]) -> Result<Vec<Var>> {
        match xs {
            [x] => Ok(vec![self.forward(t, *x)?]),
            _ => crate::value_err!(
                "{} takes one input, got {}",
                self.spec().type_name(),
                xs.len()
            ),
        }
    }

    /// The layer's tensors with their state-dict names (`"weight"`, `"running_mean"`, `"0.weight"`…).
    fn tensors(&self) -> Vec<(String, &Param)> {
        Vec::new()
    }

    /// The same, mutable.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        Vec::new()
    }

    /// The layer's architecture, enough to rebuild it (weights aside).
    fn spec(&self) -> LayerSpec;
}

/// PyTorch's default for Linear and Conv weights and biases: U(-1/√fan_in, 1/√fan_in)
/// (`kaiming_uniform_(a=√5)` works out to this bound).
pub(crate) fn uniform_fan_in(shape: &[usize], fan_in: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f32).sqrt()
    } else {
        0.0
    };
    Tensor::from_shape_simple_fn(shape.to_vec(), || rng.random_range(-1.0..1.0) * bound)
}

/// Standard normal values (Box–Muller), PyTorch's default for `Embedding`.
pub(crate) fn standard_normal(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::from_shape_simple_fn(shape.to_vec(), || {
        let u1: f32 = rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    })
}
