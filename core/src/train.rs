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
    if outs.len() != ys.len() {
        value_err!(
            "the model returns {} outputs but {} sets of targets were given (one per output)",
            outs.len(),
            ys.len()
        );
    }
    let mut total: Option<Var> = None;
    for (o, y) in outs.iter().zip(ys) {
        let l = loss.apply(t, *o, y)?;
        total = Some(match total {
            Some(acc) => t.add(acc, l)?,
            None => l,
        });
    }
    Ok(total.expect("at least one output"))
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
            let mut t = Tape::new(true, rng.next_u64());
            let inputs = batch_inputs(&mut t, xs, chunk);
            let outs = model.net.forward_all(&mut t, &inputs)?;
            let l = total_loss(&loss, &mut t, &outs, &yb)?;
            let lv = t.value(l).sum();
            if !lv.is_finite() {
                return Err(KilnError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    value: lv,
                });
            }
            t.backward(l)?;
            model.net.zero_grad();
            model.net.collect_grads(&mut t);
            if let Some(hook) = hooks.on_gradient.as_mut() {
                let mut flat = model.flatten_trainable(|p| p.grad.as_ref());
                hook(&mut flat);
                model.unflatten_trainable(&flat, |p, g| p.grad = Some(g));
            }
            let out_values: Vec<Tensor> = outs.iter().map(|&o| t.take_value(o)).collect();
            drop(t);
            let mut named: Vec<(String, &mut crate::nn::Param)> = model
                .net
                .tensors_mut()
                .into_iter()
                .filter(|(_, p)| p.trainable)
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
