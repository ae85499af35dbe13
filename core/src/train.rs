//! The fit loop, evaluation and prediction: batch after batch in Rust, with seeded shuffling, metrics,
//! validation, early stopping with best-weights restore, and a progress callback that can stop it.

use std::collections::BTreeMap;

use ndarray::{Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::autograd::{Tape, Tensor, Var};

/// A borrowed batch of inputs: the first axis is the sample.
pub type Input<'a> = ndarray::ArrayViewD<'a, f32>;
use crate::model::Model;
use crate::optim::{clip_grad_norm, Schedule, Scheduler};
use crate::{value_err, KilnError, Result};

/// What the model is trained to predict: class indices or values shaped like the output.
#[derive(Clone, Debug)]
pub enum Targets {
    /// Integer class labels, one per sample (for `cross_entropy`).
    Classes(Vec<usize>),
    /// Integer class labels `[samples, steps]` row-major, one per position of a sequence (a
    /// language model's next tokens), for `cross_entropy` on logits `[samples, steps, classes]`.
    Sequences {
        /// The labels, `steps` per sample.
        labels: Vec<usize>,
        /// Positions per sample (at least 1).
        steps: usize,
    },
    /// Real-valued targets, first axis the sample (for regression and `binary_cross_entropy`).
    Values(Tensor),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Sequences { labels, steps } => labels.len() / steps.max(&1),
            Targets::Values(v) => v.shape().first().copied().unwrap_or(0),
        }
    }
    /// The class labels, one per position, of class targets (`None` for values).
    pub fn class_labels(&self) -> Option<&[usize]> {
        match self {
            Targets::Classes(c) | Targets::Sequences { labels: c, .. } => Some(c),
            Targets::Values(_) => None,
        }
    }
    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
            Targets::Sequences { labels, steps } => Targets::Sequences {
                labels: idx
                    .iter()
                    .flat_map(|&i| &labels[i * steps..(i + 1) * steps])
                    .copied()
                    .collect(),
                steps: *steps,
            },
            Targets::Values(v) => Targets::Values(v.select(Axis(0), idx)),
        }
    }
}

/// A loss function by name, with its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    Mae,
    /// Huber loss with threshold `delta`.
    Huber {
        /// Where quadratic turns linear.
        #[serde(default = "one")]
        delta: f32,
    },
    /// Softmax cross-entropy on logits with integer labels.
    CrossEntropy {
        /// Label smoothing ε in [0, 1].
        #[serde(default)]
        label_smoothing: f32,
        /// One weight per class.
        #[serde(default)]
        class_weights: Option<Vec<f32>>,
        /// Labels equal to this count for nothing (loss, gradient, accuracy): the padding of a
        /// batch of sequences, as PyTorch's `ignore_index`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ignore_index: Option<usize>,
    },
    /// Sigmoid binary cross-entropy on logits.
    BinaryCrossEntropy,
}

fn one() -> f32 {
    1.0
}

impl Loss {
    /// A loss from its short name ("mse", "mae", "huber", "cross_entropy", "binary_cross_entropy").
    pub fn from_name(name: &str) -> Result<Loss> {
        Ok(match name {
            "mse" => Loss::Mse,
            "mae" => Loss::Mae,
            "huber" => Loss::Huber { delta: 1.0 },
            "cross_entropy" => Loss::CrossEntropy {
                label_smoothing: 0.0,
                class_weights: None,
                ignore_index: None,
            },
            "binary_cross_entropy" => Loss::BinaryCrossEntropy,
            other => {
                return Err(KilnError::Unknown {
                    kind: "loss",
                    name: other.into(),
                    hint: ". Known losses: mse, mae, huber, cross_entropy, binary_cross_entropy"
                        .into(),
                })
            }
        })
    }

    /// The label that counts for nothing, if the loss has one.
    pub fn ignore_index(&self) -> Option<usize> {
        match self {
            Loss::CrossEntropy { ignore_index, .. } => *ignore_index,
            _ => None,
        }
    }

    /// The denominator of the loss's mean over these targets: the summed class weights of the
    /// labels that count (cross-entropy), else the number of target values. A shard of a batch
    /// carries `denominator(shard) / denominator(batch)` of the batch's loss (see [`fit`]).
    pub fn denominator(&self, y: &Targets) -> f64 {
        match (self, y) {
            (
                Loss::CrossEntropy {
                    class_weights,
                    ignore_index,
                    ..
                },
                Targets::Classes(c) | Targets::Sequences { labels: c, .. },
            ) => c
                .iter()
                .filter(|&&l| Some(l) != *ignore_index)
                .map(|&l| match class_weights {
                    Some(w) => w.get(l).copied().unwrap_or(0.0) as f64,
                    None => 1.0,
                })
                .sum(),
            (_, Targets::Values(v)) => v.len() as f64,
            (_, t) => t.len() as f64,
        }
    }

    /// Whether the targets are class indices.
    pub fn wants_classes(&self) -> bool {
        matches!(self, Loss::CrossEntropy { .. })
    }

    /// Record the loss of `out` against `y` on the tape.
    pub fn apply(&self, t: &mut Tape, out: Var, y: &Targets) -> Result<Var> {
        match (self, y) {
            (
                Loss::CrossEntropy {
                    label_smoothing,
                    class_weights,
                    ignore_index,
                },
                Targets::Classes(c),
            ) => t.cross_entropy_ignoring(
                out,
                c,
                class_weights.as_deref(),
                *label_smoothing,
                *ignore_index,
            ),
            (
                Loss::CrossEntropy {
                    label_smoothing,
                    class_weights,
                    ignore_index,
                },
                Targets::Sequences { labels, steps },
            ) => {
                let shape = t.shape(out);
                if shape.len() != 3 || shape[1] != *steps {
                    crate::shape_err!(
                        "cross_entropy: labels of shape [{}, {steps}] (one per position) need logits \
                         [{0}, {steps}, classes]; the model's output has shape {shape:?} (one label \
                         per sample: pass a 1-D array; one-hot rows: pass y.argmax(axis=1))",
                        labels.len() / steps
                    );
                }
                t.cross_entropy_ignoring(
                    out,
                    labels,
                    class_weights.as_deref(),
                    *label_smoothing,
                    *ignore_index,
                )
            }
            (Loss::CrossEntropy { .. }, Targets::Values(_)) => {
                value_err!("cross_entropy needs integer class labels as targets")
            }
            (_, Targets::Classes(_) | Targets::Sequences { .. }) => {
                value_err!("this loss needs real-valued targets, not class labels")
            }
            (loss, Targets::Values(v)) => {
                let shape = t.shape(out).to_vec();
                if v.len() != shape.iter().product::<usize>() {
                    crate::shape_err!("loss: targets of shape {:?} do not match the model's output of shape {shape:?}", v.shape());
                }
                let v = v.to_shape(IxDyn(&shape)).unwrap().into_owned();
                match loss {
                    Loss::Mse => t.mse_loss(out, &v),
                    Loss::Mae => t.mae_loss(out, &v),
                    Loss::Huber { delta } => t.huber_loss(out, &v, *delta),
                    _ => t.bce_with_logits(out, &v),
                }
            }
        }
    }
}

/// A metric reported per epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction of correct predictions (argmax for multi-class logits, logit > 0 for binary).
    Accuracy,
    /// Mean absolute error.
    Mae,
    /// Mean squared error.
    Mse,
}

impl Metric {
    /// A metric from its name ("accuracy"/"acc", "mae", "mse").
    pub fn from_name(name: &str) -> Result<Metric> {
        Ok(match name {
            "accuracy" | "acc" => Metric::Accuracy,
            "mae" => Metric::Mae,
            "mse" => Metric::Mse,
            other => {
                return Err(KilnError::Unknown {
                    kind: "metric",
                    name: other.into(),
                    hint: ". Known metrics: accuracy, mae, mse".into(),
                })
            }
        })
    }
    /// The log key.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
        }
    }
    /// (sum over the batch, count) so batches can be combined exactly; class labels equal to
    /// `ignore` count for nothing.
    fn batch_sum(&self, out: &Tensor, y: &Targets, ignore: Option<usize>) -> (f64, usize) {
        match (self, y) {
            (Metric::Accuracy, Targets::Classes(c) | Targets::Sequences { labels: c, .. }) => {
                // one row of class scores per label (the last axis holds the classes)
                let per = out.len() / c.len().max(1);
                let flat = match out.as_slice() {
                    Some(s) => std::borrow::Cow::Borrowed(s),
                    None => std::borrow::Cow::Owned(out.iter().copied().collect()),
                };
                let rows = flat.chunks(per.max(1)).zip(c);
                let counted = rows.filter(|(_, &l)| Some(l) != ignore);
                let (mut correct, mut total) = (0, 0);
                for (row, &l) in counted {
                    correct += (argmax(row.iter()) == l) as usize;
                    total += 1;
                }
                (correct as f64, total)
            }
            (Metric::Accuracy, Targets::Values(v)) => {
                let correct = out
                    .iter()
                    .zip(v.iter())
                    .filter(|(&o, &t)| (o > 0.0) == (t > 0.5))
                    .count();
                (correct as f64, v.len())
            }
            (Metric::Mae | Metric::Mse, Targets::Values(v)) => {
                let sq = *self == Metric::Mse;
                let s = out
                    .iter()
                    .zip(v.iter())
                    .map(|(&o, &t)| {
                        if sq {
                            ((o - t) as f64).powi(2)
                        } else {
                            (o - t).abs() as f64
                        }
                    })
                    .sum();
                (s, v.len())
            }
            (_, Targets::Classes(c) | Targets::Sequences { labels: c, .. }) => (0.0, c.len()),
        }
    }
}

/// A monitored log value turned into one to minimise: accuracies improve upwards, everything else
/// (losses, errors) downwards, as Keras' `mode="auto"` decides.
pub(crate) fn to_minimise(key: &str, value: f64) -> f64 {
    if key.ends_with("accuracy") {
        -value
    } else {
        value
    }
}

fn argmax<'a>(it: impl Iterator<Item = &'a f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in it.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Early stopping: stop when `monitor` has not improved by `min_delta` for `patience` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Log key watched ("val_loss" by default; falls back to "loss" without validation data).
    pub monitor: String,
    /// Epochs without improvement tolerated.
    pub patience: usize,
    /// Smallest change that counts as improvement.
    pub min_delta: f64,
    /// Put back the weights of the best epoch when stopping (and at the end of training).
    pub restore_best_weights: bool,
}

/// Save a checkpoint during training, atomically, after every epoch or only when `monitor` improves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpointing {
    /// Where the .kiln file goes (replaced atomically each time).
    pub path: String,
    /// Log key watched with `save_best_only` ("val_loss"; falls back to "loss").
    pub monitor: String,
    /// Save only when the monitored value reaches a new minimum.
    pub save_best_only: bool,
}

/// Everything `fit` needs besides the data (deserialisable, so bindings can pass it as JSON).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per gradient step.
    pub batch_size: usize,
    /// Reshuffle the training data every epoch (seeded).
    pub shuffle: bool,
    /// Fraction of the data, taken from the end before shuffling, held out for validation.
    pub validation_split: f32,
    /// Stop early when the monitored log stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Clip the gradients' global norm to this value.
    pub clip_grad_norm: Option<f32>,
    /// Learning-rate schedule, stepped per epoch.
    pub schedule: Option<Schedule>,
    /// Checkpoints written during training.
    pub checkpoint: Option<Checkpointing>,
    /// Gradual magnitude pruning while training (logs the real `sparsity` each epoch).
    #[cfg(feature = "onnx")]
    pub pruning: Option<crate::optimize::PruningSchedule>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            validation_split: 0.0,
            early_stopping: None,
            clip_grad_norm: None,
            schedule: None,
            checkpoint: None,
            #[cfg(feature = "onnx")]
            pruning: None,
        }
    }
}

/// Numbers logged after a batch or an epoch (`loss`, `accuracy`, `val_loss`, `lr`…).
pub type Logs = BTreeMap<String, f64>;

/// What the progress callback is told.
pub enum Event<'a> {
    /// A batch finished. Epochs and batches count from 1.
    BatchEnd {
        /// Current epoch.
        epoch: usize,
        /// Batch within the epoch.
        batch: usize,
        /// Batches per epoch.
        batches: usize,
        /// Running means over the epoch so far.
        logs: &'a Logs,
    },
    /// An epoch finished (validation included).
    EpochEnd {
        /// Epoch just finished.
        epoch: usize,
        /// The epoch's logs.
        logs: &'a Logs,
    },
}

/// The callback's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop training now, keeping the weights reached.
    Stop,
    /// Go on with this learning rate from now on.
    SetLr(f32),
}

/// The per-epoch record of a `fit`, Keras style.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// One list per log key, one value per completed epoch.
    pub history: BTreeMap<String, Vec<f64>>,
    /// Completed epochs.
    pub epochs: usize,
    /// Why training ended early, if it did ("early_stopping", "callback").
    pub stopped_by: Option<String>,
    /// Training samples per second in each epoch (gradient steps only; 0 where no clock exists).
    pub samples_per_sec: Vec<f64>,
}

/// The progress callback: told of every batch and epoch, it may stop training or change the rate.
/// It is handed the model as it stands (a binding lends it to user code that reads or saves the
/// weights mid-fit: Keras's `ModelCheckpoint`, a callback that logs a layer's norm).
pub type EventHook<'a> = &'a mut dyn FnMut(&Event, &mut Model) -> Control;

/// The gradient hook: sees (and may change) the flat gradient before each optimizer step.
pub type GradientHook<'a> = &'a mut dyn FnMut(&mut [f32]);

/// The step hook: runs after every optimizer step and may change the model (pruning masks use it).
pub type StepHook<'a> = &'a mut dyn FnMut(&mut Model);

/// Optional hooks into the loop.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called after every batch and epoch; may stop training.
    pub on_event: Option<EventHook<'a>>,
    /// Called after backward and before the optimizer step with the flat gradient of every trainable
    /// parameter (state-dict order); it may change it in place (for gradient all-reduce).
    pub on_gradient: Option<GradientHook<'a>>,
    /// Called after every optimizer step (to hold pruned weights at zero, say).
    pub after_step: Option<StepHook<'a>>,
}

struct Clock(#[cfg(not(target_arch = "wasm32"))] std::time::Instant);

impl Clock {
    fn start() -> Self {
        Clock(
            #[cfg(not(target_arch = "wasm32"))]
            std::time::Instant::now(),
        )
    }
    fn seconds(&self) -> f64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.0.elapsed().as_secs_f64();
        #[cfg(target_arch = "wasm32")]
        0.0
    }
}

fn check_data(what: &str, xs: &[Input], ys: &[Targets]) -> Result<()> {
    let Some(x0) = xs.first() else {
        value_err!("{what}: no input given");
    };
    if x0.ndim() < 1 || x0.shape()[0] == 0 {
        value_err!("{what}: the input is empty (shape {:?})", x0.shape());
    }
    let n = x0.shape()[0];
    for (k, x) in xs.iter().enumerate() {
        let which = if xs.len() > 1 {
            format!(" {k}")
        } else {
            String::new()
        };
        if x.ndim() < 1 || x.shape()[0] != n {
            crate::shape_err!(
                "{what}: input{which} has {} samples, input 0 has {n}",
                x.shape().first().unwrap_or(&0)
            );
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            value_err!(
                "{what}: the input{which} contains {} at flat index {i}",
                x.iter().nth(i).unwrap()
            );
        }
    }
    for y in ys {
        if n != y.len() {
            crate::shape_err!("{what}: {n} input samples but {} targets", y.len());
        }
        if let Targets::Values(v) = y {
            if v.iter().any(|v| !v.is_finite()) {
                value_err!("{what}: the targets contain NaN or infinity");
            }
        }
    }
    Ok(())
}

/// The rows `idx` of every input, as constants on the tape.
fn batch_inputs(t: &mut Tape, xs: &[Input], idx: &[usize]) -> Vec<Var> {
    xs.iter()
        .map(|x| t.constant(x.select(Axis(0), idx)))
        .collect()
}

/// The summed loss over every output (each against its own targets).
fn total_loss(loss: &Loss, t: &mut Tape, outs: &[Var], ys: &[Targets]) -> Result<Var> {
    weighted_loss(loss, t, outs, ys, None)
}

/// [`total_loss`] with output `o`'s loss scaled by `weights[o]` (a shard's share of its batch).
fn weighted_loss(
    loss: &Loss,
    t: &mut Tape,
    outs: &[Var],
    ys: &[Targets],
    weights: Option<&[f32]>,
) -> Result<Var> {
    if outs.len() != ys.len() {
        value_err!(
            "the model returns {} outputs but {} sets of targets were given (one per output)",
            outs.len(),
            ys.len()
        );
    }
    let mut total: Option<Var> = None;
    for (k, (o, y)) in outs.iter().zip(ys).enumerate() {
        let mut l = loss.apply(t, *o, y)?;
        if let Some(w) = weights {
            l = t.scale(l, w[k]);
        }
        total = Some(match total {
            Some(acc) => t.add(acc, l)?,
            None => l,
        });
    }
    Ok(total.expect("at least one output"))
}

/// Batches of at least this many samples train as two shards, one per core, when the model keeps
/// its samples apart ([`crate::nn::Net::splits_by_sample`]) and has convolutions, recurrent layers
/// or attention ([`crate::nn::Net::pays_to_split`]): below it a shard's work does not pay for a
/// second tape and a thread hand-off. The split depends on the batch size only, so the result does not depend on how
/// many threads run it.
pub const MIN_SPLIT_BATCH: usize = 32;

/// Whether data-parallel steps are on: yes unless the environment sets `KILN_DATA_PARALLEL=0`
/// (read at each `fit`; for A/B measurements of the split against the whole batch). The browser
/// has no environment: on there.
pub fn data_parallel_enabled() -> bool {
    !matches!(
        std::env::var("KILN_DATA_PARALLEL")
            .as_deref()
            .map(str::trim),
        Ok("0")
    )
}

/// The shards of a batch of `n` samples: `[0, n)` whole, or two halves (see [`MIN_SPLIT_BATCH`]).
#[allow(clippy::single_range_in_vec_init)] // one shard: the whole batch
pub fn shard_ranges(n: usize, splits: bool) -> Vec<std::ops::Range<usize>> {
    if splits && n >= MIN_SPLIT_BATCH {
        let half = n.div_ceil(2);
        vec![0..half, half..n]
    } else {
        vec![0..n]
    }
}

/// The dropout seed of shard `k` of a step seeded `seed` (shard 0 keeps the step's own seed).
fn shard_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        return seed;
    }
    // splitmix64 of seed + k
    let mut z = seed.wrapping_add((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One shard's forward and backward pass: its tape (holding the gradients and any buffer values
/// the pass recorded), its weighted loss and its outputs.
struct ShardRun {
    tape: Tape,
    loss: f32,
    outs: Vec<Tensor>,
}

/// `f` on every shard: shard 0 on the calling thread and the others on rayon's threads natively
/// (a fit called from Python runs outside rayon's pool: handing every shard to the pool and
/// waiting costs a thread wake-up each way, more than a small step); one after the other in wasm
/// (no threads there). Results in shard order either way, so they combine in the same order.
fn run_shards<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    if n > 1 {
        let slots: Vec<std::sync::Mutex<Option<R>>> =
            (1..n).map(|_| std::sync::Mutex::new(None)).collect();
        let first = rayon::in_place_scope(|s| {
            for (k, slot) in slots.iter().enumerate() {
                let f = &f;
                s.spawn(move |_| *slot.lock().expect("a shard panicked") = Some(f(k + 1)));
            }
            f(0)
        });
        let rest = slots.into_iter().map(|s| {
            s.into_inner()
                .expect("a shard panicked")
                .expect("the scope ran every shard")
        });
        return std::iter::once(first).chain(rest).collect();
    }
    (0..n).map(f).collect()
}

/// A training step's forward and backward passes on the samples `chunk` of `xs`, `ys` (already
/// selected as `yb`), split into shards by [`shard_ranges`], each on its own tape; the shards'
/// losses are weighted by their share of the batch's mean, so their gradients add up to the
/// batch's. The net is only read: the caller collects the gradients and stores buffers.
fn step_passes(
    net: &crate::nn::Net,
    loss: &Loss,
    xs: &[Input],
    chunk: &[usize],
    yb: &[Targets],
    ranges: &[std::ops::Range<usize>],
    seed: u64,
) -> Result<Vec<ShardRun>> {
    let whole: Vec<f64> = yb.iter().map(|y| loss.denominator(y)).collect();
    let runs = run_shards(ranges.len(), |k| -> Result<ShardRun> {
        let idx = &chunk[ranges[k].clone()];
        let mut t = Tape::new(true, shard_seed(seed, k));
        // a shard's ops run in order: the other shard holds the other core (names-gpt 1.04x,
        // names-lm 1.12x samples/s against the ops' own rayon splits inside the shards)
        t.parallel_ops = ranges.len() == 1;
        let inputs = batch_inputs(&mut t, xs, idx);
        let outs = net.forward(&mut t, &inputs)?;
        let l = if ranges.len() == 1 {
            total_loss(loss, &mut t, &outs, yb)?
        } else {
            let local: Vec<usize> = ranges[k].clone().collect();
            let ys: Vec<Targets> = yb.iter().map(|y| y.select(&local)).collect();
            let weights: Vec<f32> = ys
                .iter()
                .zip(&whole)
                .map(|(y, &w)| {
                    if w > 0.0 {
                        (loss.denominator(y) / w) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            weighted_loss(loss, &mut t, &outs, &ys, Some(&weights))?
        };
        let lv = t.value(l).sum();
        if lv.is_finite() {
            t.backward(l)?;
        }
        let outs = outs.iter().map(|&o| t.take_value(o)).collect();
        Ok(ShardRun {
            tape: t,
            loss: lv,
            outs,
        })
    });
    runs.into_iter().collect()
}

/// The log key of a metric: `accuracy` for one output, `output_1_accuracy` for the second of several.
fn metric_key(name: &str, output: usize, outputs: usize) -> String {
    if outputs == 1 {
        name.to_string()
    } else {
        format!("output_{output}_{name}")
    }
}

/// Run the model on `xs` (one array per input) in batches, in evaluation mode; one tensor per output.
pub fn predict(net: &mut crate::nn::Net, xs: &[Input], batch_size: usize) -> Result<Vec<Tensor>> {
    check_data("predict", xs, &[])?;
    let mut outs: Vec<Vec<Tensor>> = Vec::new();
    let n = xs[0].shape()[0];
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let mut t = Tape::inference();
        let vars = batch_inputs(&mut t, xs, &idx);
        let out = net.forward_all(&mut t, &vars)?;
        if outs.is_empty() {
            outs = vec![Vec::new(); out.len()];
        }
        for (k, o) in out.into_iter().enumerate() {
            outs[k].push(t.value(o).clone());
        }
    }
    Ok(outs
        .iter()
        .map(|batches| {
            let views: Vec<_> = batches.iter().map(|o| o.view()).collect();
            ndarray::concatenate(Axis(0), &views).expect("batches share their trailing shape")
        })
        .collect())
}

/// Loss and metrics over a data set, in evaluation mode.
pub fn evaluate(
    model: &mut Model,
    xs: &[Input],
    ys: &[Targets],
    batch_size: usize,
) -> Result<Logs> {
    check_data("evaluate", xs, ys)?;
    let loss = model.loss()?.clone();
    let metrics = model.metrics.clone();
    let outputs = ys.len();
    let n = xs[0].shape()[0];
    let mut sums = vec![0.0; metrics.len() * outputs + 1];
    let mut counts = vec![0usize; metrics.len() * outputs + 1];
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let yb: Vec<Targets> = ys.iter().map(|y| y.select(&idx)).collect();
        let mut t = Tape::inference();
        let vars = batch_inputs(&mut t, xs, &idx);
        let outs = model.net.forward_all(&mut t, &vars)?;
        let l = total_loss(&loss, &mut t, &outs, &yb)?;
        sums[0] += t.value(l).sum() as f64 * idx.len() as f64;
        counts[0] += idx.len();
        for (o, (out, y)) in outs.iter().zip(&yb).enumerate() {
            for (k, m) in metrics.iter().enumerate() {
                let (s, c) = m.batch_sum(t.value(*out), y, loss.ignore_index());
                sums[1 + o * metrics.len() + k] += s;
                counts[1 + o * metrics.len() + k] += c;
            }
        }
    }
    let mut logs = Logs::new();
    logs.insert("loss".into(), sums[0] / counts[0].max(1) as f64);
    for o in 0..outputs {
        for (k, m) in metrics.iter().enumerate() {
            let i = 1 + o * metrics.len() + k;
            logs.insert(
                metric_key(m.name(), o, outputs),
                sums[i] / counts[i].max(1) as f64,
            );
        }
    }
    Ok(logs)
}

/// Train `model` (compiled) on `xs` (one array per input), `ys` (one set of targets per output; the
/// outputs' losses are summed). Validation data, when given, overrides `validation_split`.
pub fn fit(
    model: &mut Model,
    xs: &[Input],
    ys: &[Targets],
    validation: Option<(&[Input], &[Targets])>,
    cfg: &FitConfig,
    hooks: &mut Hooks,
) -> Result<History> {
    check_data("fit", xs, ys)?;
    let loss = model.loss()?.clone();
    if ys
        .iter()
        .any(|y| loss.wants_classes() != y.class_labels().is_some())
    {
        value_err!("fit: the loss {loss:?} does not match the kind of targets given");
    }
    let outputs = model.num_outputs();
    if ys.len() != outputs {
        value_err!("fit: the model returns {outputs} output(s) but {} sets of targets were given (one per output)", ys.len());
    }
    if cfg.batch_size == 0 {
        value_err!("fit: batch_size must be positive");
    }
    if !(0.0..1.0).contains(&cfg.validation_split) {
        value_err!(
            "fit: validation_split must be in [0, 1), got {}",
            cfg.validation_split
        );
    }
    let n = xs[0].shape()[0];
    let (train_idx, split_val): (Vec<usize>, Option<Vec<usize>>) = match validation {
        Some(_) => ((0..n).collect(), None),
        None if cfg.validation_split > 0.0 => {
            let n_val = ((n as f32) * cfg.validation_split) as usize;
            if n_val == 0 || n_val >= n {
                value_err!(
                    "fit: validation_split {} leaves {} of {n} samples for validation",
                    cfg.validation_split,
                    n_val
                );
            }
            ((0..n - n_val).collect(), Some((n - n_val..n).collect()))
        }
        None => ((0..n).collect(), None),
    };
    let split_data: Option<(Vec<Tensor>, Vec<Targets>)> = split_val.map(|idx| {
        (
            xs.iter().map(|x| x.select(Axis(0), &idx)).collect(),
            ys.iter().map(|y| y.select(&idx)).collect(),
        )
    });
    let split_views: Option<Vec<Input>> = split_data
        .as_ref()
        .map(|(a, _)| a.iter().map(|t| t.view()).collect());
    let val: Option<(&[Input], &[Targets])> = validation.or(split_views
        .as_deref()
        .zip(split_data.as_ref().map(|(_, b)| b.as_slice())));
    if let Some((vx, vy)) = val {
        check_data("validation data", vx, vy)?;
    }
    model.remember_inputs(xs)?;
    let metrics = model.metrics.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(model.seed ^ 0x6b69_6c6e_5f66_6974 ^ model.fits_done);
    model.fits_done += 1;
    let base_lr = model.optimizer()?.spec().lr();
    let mut scheduler = cfg
        .schedule
        .clone()
        .map(|s| Scheduler::new(s, base_lr))
        .transpose()?;
    let mut history = History::default();
    let mut best: Option<(f64, BTreeMap<String, Tensor>)> = None;
    let mut waited = 0;
    let batches = train_idx.len().div_ceil(cfg.batch_size);
    // Gradual pruning runs in native fits only: linking the pruner into the browser's Trainer costs its
    // small module ~20 kB gzip, for a feature the JS Trainer does not offer yet
    #[cfg(feature = "onnx")]
    let mut pruner = match &cfg.pruning {
        Some(p) => Some(crate::optimize::Pruner::new(model, p, cfg.epochs, batches)?),
        None => None,
    };
    let mut order = train_idx.clone();
    // the batch is split into shards when the model keeps its samples apart and it pays (decided once)
    let splits =
        data_parallel_enabled() && model.net.splits_by_sample() && model.net.pays_to_split();
    let mut last_logs: Option<Logs> = None;
    let mut best_checkpoint = f64::INFINITY;
    'epochs: for epoch in 1..=cfg.epochs {
        if let Some(s) = scheduler.as_mut() {
            let opt = model.optimizer_mut()?;
            let lr = s.lr_for(epoch - 1, opt.lr(), last_logs.as_ref());
            opt.set_lr(lr);
        }
        if cfg.shuffle {
            order.shuffle(&mut rng);
        }
        let clock = Clock::start();
        let mut sums = vec![0.0f64; metrics.len() * outputs + 1];
        let mut counts = vec![0usize; metrics.len() * outputs + 1];
        let mut logs = Logs::new();
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let yb: Vec<Targets> = ys.iter().map(|y| y.select(chunk)).collect();
            let ranges = shard_ranges(chunk.len(), splits);
            let runs = step_passes(&model.net, &loss, xs, chunk, &yb, &ranges, rng.next_u64())?;
            let lv: f32 = runs.iter().map(|r| r.loss).sum();
            let mut runs = runs;
            for r in runs.iter_mut() {
                model.net.apply_updates(&mut r.tape);
            }
            if !lv.is_finite() {
                return Err(KilnError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    value: lv,
                });
            }
            model.net.zero_grad();
            for r in runs.iter_mut() {
                model.net.collect_grads(&mut r.tape);
            }
            if let Some(hook) = hooks.on_gradient.as_mut() {
                let mut flat = model.flatten_trainable(|p| p.grad.as_ref());
                hook(&mut flat);
                model.unflatten_trainable(&flat, |p, g| p.grad = Some(g));
            }
            let out_values: Vec<Tensor> = if runs.len() == 1 {
                runs.pop().expect("one shard").outs
            } else {
                (0..outputs)
                    .map(|o| {
                        let parts: Vec<_> = runs.iter().map(|r| r.outs[o].view()).collect();
                        ndarray::concatenate(Axis(0), &parts)
                            .expect("shards' outputs share their trailing shape")
                    })
                    .collect()
            };
            drop(runs);
            let mut named: Vec<(String, &mut crate::nn::Param)> = model
                .net
                .tensors_mut()
                .into_iter()
                .filter(|(_, p)| p.trainable())
                .collect();
            if let Some(max) = cfg.clip_grad_norm {
                clip_grad_norm(&mut named, max);
            }
            model
                .optimizer
                .as_mut()
                .expect("checked by optimizer()")
                .step(named);
            #[cfg(feature = "onnx")]
            if let Some(p) = pruner.as_mut() {
                p.after_step(model)?;
            }
            if let Some(hook) = hooks.after_step.as_mut() {
                hook(model);
            }
            sums[0] += lv as f64 * chunk.len() as f64;
            counts[0] += chunk.len();
            logs.insert("loss".into(), sums[0] / counts[0] as f64);
            for (o, (out, y)) in out_values.iter().zip(&yb).enumerate() {
                for (k, m) in metrics.iter().enumerate() {
                    let i = 1 + o * metrics.len() + k;
                    let (s, c) = m.batch_sum(out, y, loss.ignore_index());
                    sums[i] += s;
                    counts[i] += c;
                    logs.insert(
                        metric_key(m.name(), o, outputs),
                        sums[i] / counts[i].max(1) as f64,
                    );
                }
            }
            if let Some(cb) = hooks.on_event.as_mut() {
                let event = Event::BatchEnd {
                    epoch,
                    batch: b + 1,
                    batches,
                    logs: &logs,
                };
                match cb(&event, model) {
                    Control::Stop => {
                        history.stopped_by = Some("callback".into());
                        break 'epochs;
                    }
                    Control::SetLr(lr) => model.optimizer_mut()?.set_lr(lr),
                    Control::Continue => {}
                }
            }
        }
        let secs = clock.seconds();
        history.samples_per_sec.push(if secs > 0.0 {
            train_idx.len() as f64 / secs
        } else {
            0.0
        });
        if let Some((vx, vy)) = val {
            for (k, v) in evaluate(model, vx, vy, 256)? {
                logs.insert(format!("val_{k}"), v);
            }
        }
        logs.insert("lr".into(), model.optimizer()?.lr() as f64);
        #[cfg(feature = "onnx")]
        if pruner.is_some() {
            let s = crate::optimize::Pruner::measured_sparsity(model)?;
            logs.insert("sparsity".into(), s);
        }
        for (k, v) in &logs {
            history.history.entry(k.clone()).or_default().push(*v);
        }
        history.epochs = epoch;
        if let Some(cb) = hooks.on_event.as_mut() {
            match cb(&Event::EpochEnd { epoch, logs: &logs }, model) {
                Control::Stop => {
                    history.stopped_by = Some("callback".into());
                    break;
                }
                Control::SetLr(lr) => model.optimizer_mut()?.set_lr(lr),
                Control::Continue => {}
            }
        }
        if let Some(ck) = &cfg.checkpoint {
            let key = if logs.contains_key(&ck.monitor) {
                ck.monitor.as_str()
            } else {
                "loss"
            };
            let value = to_minimise(key, logs[key]);
            if !ck.save_best_only || value < best_checkpoint {
                best_checkpoint = value;
                model.save(&ck.path)?;
            }
        }
        if let Some(es) = &cfg.early_stopping {
            let key = if logs.contains_key(&es.monitor) {
                es.monitor.as_str()
            } else {
                "loss"
            };
            let value = to_minimise(key, logs[key]);
            let improved = best.as_ref().is_none_or(|(b, _)| value < b - es.min_delta);
            if improved {
                best = Some((
                    value,
                    if es.restore_best_weights {
                        model.net.state_dict()
                    } else {
                        BTreeMap::new()
                    },
                ));
                waited = 0;
            } else {
                waited += 1;
                if waited > es.patience {
                    history.stopped_by = Some("early_stopping".into());
                    break;
                }
            }
        }
        last_logs = Some(logs);
    }
    // An interrupted fit keeps the weights it reached; otherwise early stopping may restore the best.
    let interrupted = history.stopped_by.as_deref() == Some("callback");
    if let (Some(es), Some((_, weights)), false) = (&cfg.early_stopping, best, interrupted) {
        if es.restore_best_weights && !weights.is_empty() {
            model.net.load_state_dict(&weights)?;
            // the best epoch may predate the last pruning round: keep the promised sparsity
            #[cfg(feature = "onnx")]
            if let Some(p) = &pruner {
                p.reapply(model);
            }
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{GraphSpec, LayerSpec};
    use crate::optim::OptimizerSpec;
    use rand::Rng;

    fn adam() -> OptimizerSpec {
        OptimizerSpec::Adam {
            lr: 1e-2,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }

    fn sequential(json: &str, loss: Loss) -> Model {
        let mut m = Model::new(&LayerSpec::list_from_json(json).unwrap(), 3).unwrap();
        m.compile(&adam(), loss, vec![]).unwrap();
        m
    }

    fn graph(json: &str, loss: Loss) -> Model {
        let spec: GraphSpec = serde_json::from_str(json).unwrap();
        let mut m = Model::from_graph_spec(&spec, 3).unwrap();
        m.compile(&adam(), loss, vec![]).unwrap();
        m
    }

    fn ce(ignore_index: Option<usize>) -> Loss {
        Loss::CrossEntropy {
            label_smoothing: 0.0,
            class_weights: None,
            ignore_index,
        }
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Tensor::from_shape_simple_fn(shape.to_vec(), || rng.random_range(-1.0..1.0))
    }

    fn ids(shape: &[usize], vocab: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Tensor::from_shape_simple_fn(shape.to_vec(), || rng.random_range(0..vocab) as f32)
    }

    /// The loss and the flat gradient of one step on the whole of `x`, `y`, split by `ranges`.
    fn step(
        m: &mut Model,
        x: &Tensor,
        y: &Targets,
        ranges: &[std::ops::Range<usize>],
    ) -> (f32, Vec<f32>) {
        let chunk: Vec<usize> = (0..x.shape()[0]).collect();
        let loss = m.loss().unwrap().clone();
        m.remember_inputs(&[x.view()]).unwrap();
        let ys = [y.clone()];
        let mut runs = step_passes(&m.net, &loss, &[x.view()], &chunk, &ys, ranges, 11).unwrap();
        m.net.zero_grad();
        for r in runs.iter_mut() {
            m.net.collect_grads(&mut r.tape);
        }
        let lv = runs.iter().map(|r| r.loss).sum();
        (lv, m.flatten_trainable(|p| p.grad.as_ref()))
    }

    /// Two shards give the whole batch's loss and gradient (1e-5 relative to the largest entry).
    fn shards_match_the_batch(m: &mut Model, x: &Tensor, y: &Targets) {
        m.remember_inputs(&[x.view()]).unwrap();
        assert!(
            m.net.splits_by_sample(),
            "this model keeps its samples apart"
        );
        let n = x.shape()[0];
        let ranges = shard_ranges(n, true);
        assert_eq!(ranges.len(), 2);
        let whole_range = std::iter::once(0..n).collect::<Vec<_>>(); // one shard: the whole batch
        let (whole_loss, whole) = step(m, x, y, &whole_range);
        let (split_loss, split) = step(m, x, y, &ranges);
        assert!(
            (whole_loss - split_loss).abs() <= 1e-5 * whole_loss.abs(),
            "{whole_loss} vs {split_loss}"
        );
        let scale = whole.iter().fold(0.0f32, |a, g| a.max(g.abs()));
        assert!(scale > 0.0);
        for (i, (a, b)) in whole.iter().zip(&split).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "gradient {i}: {a} whole, {b} in shards"
            );
        }
    }

    #[test]
    fn an_mlp_in_shards_has_the_batchs_gradient() {
        let mut m = sequential(
            r#"[{"type":"Linear","in_features":5,"out_features":16},{"type":"Tanh"},
                {"type":"Linear","in_features":16,"out_features":3}]"#,
            Loss::Mse,
        );
        shards_match_the_batch(
            &mut m,
            &random(&[37, 5], 1),
            &Targets::Values(random(&[37, 3], 2)),
        );
    }

    #[test]
    fn a_cnn_in_shards_has_the_batchs_gradient() {
        let mut m = sequential(
            r#"[{"type":"Conv2d","in_channels":1,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]},
                {"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Flatten"},
                {"type":"Linear","in_features":64,"out_features":3}]"#,
            Loss::CrossEntropy {
                label_smoothing: 0.1,
                class_weights: Some(vec![1.0, 3.0, 0.5]),
                ignore_index: None,
            },
        );
        // class weights make the shards' denominators differ from their sample counts
        let labels: Vec<usize> = (0..32).map(|i| if i < 16 { 1 } else { i % 3 }).collect();
        shards_match_the_batch(
            &mut m,
            &random(&[32, 1, 8, 8], 3),
            &Targets::Classes(labels),
        );
    }

    #[test]
    fn a_gru_language_model_with_ignored_labels_in_shards_has_the_batchs_gradient() {
        let mut m = graph(
            include_str!("../tests/fixtures/tiny_gru_lm.json"),
            ce(Some(0)),
        );
        // the first shard's labels are mostly padding, the second's hardly: unequal denominators
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let labels: Vec<usize> = (0..32 * 5)
            .map(|i| {
                if i < 16 * 5 && i % 5 != 0 {
                    0
                } else {
                    rng.random_range(0..7)
                }
            })
            .collect();
        let y = Targets::Sequences { labels, steps: 5 };
        shards_match_the_batch(&mut m, &ids(&[32, 5], 7, 5), &y);
    }

    #[test]
    fn a_transformer_in_shards_has_the_batchs_gradient() {
        let mut m = graph(include_str!("../tests/fixtures/tiny_gpt.json"), ce(Some(0)));
        let labels: Vec<usize> = ids(&[33, 5], 7, 6).iter().map(|&v| v as usize).collect();
        let y = Targets::Sequences { labels, steps: 5 };
        shards_match_the_batch(&mut m, &ids(&[33, 5], 7, 7), &y);
    }

    /// A shard's tape runs attention's batches and a recurrent layer's chunks in order
    /// (`parallel_ops` off: the other shard holds the other core), a whole batch's tape spreads
    /// them over rayon's threads: the same bits either way.
    #[test]
    fn ops_give_the_same_bits_on_their_own_threads_and_in_order() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for fixture in [
            include_str!("../tests/fixtures/tiny_gru_lm.json"),
            include_str!("../tests/fixtures/tiny_gpt.json"),
        ] {
            let mut m = graph(fixture, ce(Some(0)));
            let x = ids(&[32, 5], 7, 12);
            let labels: Vec<usize> = ids(&[32, 5], 7, 13).iter().map(|&v| v as usize).collect();
            let y = [Targets::Sequences { labels, steps: 5 }];
            m.remember_inputs(&[x.view()]).unwrap();
            let loss = m.loss().unwrap().clone();
            let run = |m: &mut Model, parallel: bool| {
                let mut t = Tape::new(true, 3);
                t.parallel_ops = parallel;
                let chunk: Vec<usize> = (0..32).collect();
                let inputs = batch_inputs(&mut t, &[x.view()], &chunk);
                let outs = pool.install(|| m.net.forward(&mut t, &inputs)).unwrap();
                let l = total_loss(&loss, &mut t, &outs, &y).unwrap();
                pool.install(|| t.backward(l)).unwrap();
                m.net.zero_grad();
                m.net.collect_grads(&mut t);
                let mut bits: Vec<u32> = t.value(outs[0]).iter().map(|v| v.to_bits()).collect();
                bits.extend(
                    m.flatten_trainable(|p| p.grad.as_ref())
                        .iter()
                        .map(|g| g.to_bits()),
                );
                bits
            };
            let (threads, in_order) = (run(&mut m, true), run(&mut m, false));
            assert_eq!(threads.len(), in_order.len());
            assert!(
                threads == in_order,
                "outputs and gradients differ in their bits"
            );
        }
    }

    const CNN_WITH_DROPOUT: &str = r#"[{"type":"Conv2d","in_channels":1,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]},
        {"type":"ReLU"},{"type":"Dropout","p":0.3},{"type":"Flatten"},{"type":"Linear","in_features":64,"out_features":3}]"#;

    /// Training with dropout gives the same bits on one thread and on two.
    #[test]
    fn sharded_training_does_not_depend_on_the_thread_count() {
        let x = random(&[96, 1, 4, 4], 8);
        let y = Targets::Classes((0..96).map(|i| i % 3).collect());
        let train = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut m = sequential(CNN_WITH_DROPOUT, ce(None));
                assert!(m.net.pays_to_split());
                let cfg = FitConfig {
                    epochs: 3,
                    batch_size: 32,
                    ..FitConfig::default()
                };
                m.fit(x.view(), &y, None, &cfg, &mut Hooks::default())
                    .unwrap();
                m.flat_params()
            })
        };
        let one = train(1);
        let two = train(2);
        assert!(one
            .iter()
            .zip(&two)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_ne!(
            one,
            sequential(
                r#"[{"type":"Linear","in_features":5,"out_features":32},{"type":"ReLU"},
            {"type":"Dropout","p":0.3},{"type":"Linear","in_features":32,"out_features":3}]"#,
                ce(None)
            )
            .flat_params()
        );
    }

    /// Batch norm in training mixes the samples: such a model trains unsplit, its running
    /// statistics still updated by every step.
    #[test]
    fn batch_norm_models_are_not_split() {
        let mut m = sequential(
            r#"[{"type":"Linear","in_features":5,"out_features":8},{"type":"BatchNorm1d","num_features":8},
                {"type":"ReLU"},{"type":"Linear","in_features":8,"out_features":3}]"#,
            ce(None),
        );
        let x = random(&[64, 5], 9);
        m.remember_inputs(&[x.view()]).unwrap();
        assert!(!m.net.splits_by_sample());
        assert!(LayerSpec::from_json(
            r#"{"type":"Sequential","layers":[{"type":"BatchNorm2d","num_features":2}]}"#
        )
        .unwrap()
        .couples_samples());
        let y = Targets::Classes((0..64).map(|i| i % 3).collect());
        let cfg = FitConfig {
            epochs: 1,
            batch_size: 64,
            shuffle: false,
            ..FitConfig::default()
        };
        m.fit(x.view(), &y, None, &cfg, &mut Hooks::default())
            .unwrap();
        // one step at momentum 0.1 from zero: the running mean is a tenth of the batch's mean
        let mut t = Tape::inference();
        let v = t.constant(x.clone());
        let first = m.net.modules().next().unwrap().1;
        let h = first.forward(&mut t, v).unwrap();
        let before: Vec<f32> = t
            .value(h)
            .mean_axis(Axis(0))
            .unwrap()
            .iter()
            .copied()
            .collect();
        let running = m.net.state_dict()["1.running_mean"].clone();
        assert!(running.iter().any(|&r| r != 0.0));
        // (the first layer's weights moved after the step: compare loosely)
        for (r, b) in running.iter().zip(&before) {
            assert!((r - 0.1 * b).abs() < 0.05, "{r} vs {}", 0.1 * b);
        }
    }

    /// Graphs that mix samples (a mean over the batch, a concatenation along it) are not split;
    /// per-sample reshapes, broadcasts and attention are.
    #[test]
    fn graphs_that_mix_samples_are_not_split() {
        let with_node = |node: &str| {
            format!(
                r#"{{"modules":[{{"name":"fc","spec":{{"type":"Linear","in_features":3,"out_features":3}}}}],
                   "graph":{{"inputs":[{{"name":"x","shape":[3]}}],
                   "nodes":[{{"op":{{"Call":{{"module":"fc"}}}},"inputs":[0]}},{node}],"outputs":[2]}}}}"#
            )
        };
        let splits = |node: &str| {
            let spec: GraphSpec = serde_json::from_str(&with_node(node)).unwrap();
            Model::from_graph_spec(&spec, 0)
                .unwrap()
                .net
                .splits_by_sample()
        };
        assert!(splits(r#"{"op":"Relu","inputs":[1]}"#));
        assert!(splits(
            r#"{"op":{"Reduce":{"kind":"mean","dims":[1],"keepdim":true}},"inputs":[1]}"#
        ));
        assert!(splits(r#"{"op":{"Reshape":{"shape":[-1]}},"inputs":[1]}"#));
        assert!(!splits(
            r#"{"op":{"Reduce":{"kind":"mean","dims":[0],"keepdim":true}},"inputs":[1]}"#
        ));
        assert!(!splits(
            r#"{"op":{"Reduce":{"kind":"sum","dims":[-2],"keepdim":false}},"inputs":[1]}"#
        ));
        assert!(!splits(r#"{"op":{"Concat":{"dim":0}},"inputs":[1,0]}"#));
        assert!(!splits(r#"{"op":{"Softmax":{"dim":0}},"inputs":[1]}"#));
        assert!(!splits(
            r#"{"op":{"Reshape":{"shape":[2,-1]}},"inputs":[1]}"#
        ));
        assert!(!splits(r#"{"op":{"Permute":{"dims":[1,0]}},"inputs":[1]}"#));
        assert!(splits(r#"{"op":{"Concat":{"dim":1}},"inputs":[1,0]}"#));
        let tiny = |json: &str| {
            let spec: GraphSpec = serde_json::from_str(json).unwrap();
            Model::from_graph_spec(&spec, 0)
                .unwrap()
                .net
                .splits_by_sample()
        };
        assert!(tiny(include_str!("../tests/fixtures/tiny_gru_lm.json")));
        assert!(tiny(include_str!("../tests/fixtures/tiny_gpt.json")));
        // below the minimum a batch stays whole
        assert_eq!(shard_ranges(MIN_SPLIT_BATCH - 1, true).len(), 1);
        assert_eq!(shard_ranges(MIN_SPLIT_BATCH, false).len(), 1);
        assert_eq!(shard_ranges(33, true), vec![0..17, 17..33]);
    }
}
