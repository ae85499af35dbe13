//! Knowledge distillation (Hinton, Vinyals & Dean, 2015): train a student on the teacher's softened
//! outputs. Per batch the loss is
//!
//! `alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)`
//!
//! with `t`, `s` the teacher's and student's logits. The T² factor keeps the soft term's gradient on
//! the scale of the hard one when T changes. Without labels the loss is the soft term alone.

use ndarray::Axis;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::check_samples;
use crate::autograd::{softmax_values, Tape};
use crate::train::Input;
use crate::{shape_err, value_err, KilnError, Model, Result};

/// Options of [`distill`].
#[derive(Clone, Debug)]
pub struct DistillConfig {
    /// Softmax temperature T (> 0); 1 is the plain softmax, larger values soften it.
    pub temperature: f32,
    /// Weight of the soft (teacher) term, in [0, 1].
    pub alpha: f32,
    /// Passes over the data.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Seeds the shuffling and dropout.
    pub seed: u64,
}

/// What [`distill`] measured: the mean loss of each epoch.
#[derive(Clone, Debug, Default)]
pub struct DistillReport {
    /// Mean total loss per epoch.
    pub loss: Vec<f32>,
    /// Mean soft (KL · T²) term per epoch.
    pub soft_loss: Vec<f32>,
}

/// Train `student` (whose optimizer must be set) to imitate `teacher` on `x`, with optional class
/// labels `y` for the hard term. The teacher is only run, in evaluation mode.
pub fn distill(
    teacher: &mut Model,
    student: &mut Model,
    x: Input,
    y: Option<&[usize]>,
    cfg: &DistillConfig,
) -> Result<DistillReport> {
    if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
        value_err!(
            "distill: temperature must be positive, got {}",
            cfg.temperature
        );
    }
    if !(0.0..=1.0).contains(&cfg.alpha) {
        value_err!("distill: alpha must be in [0, 1], got {}", cfg.alpha);
    }
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        value_err!("distill: epochs and batch_size must be positive");
    }
    check_samples("distill: teacher input", teacher, &x)?;
    if student.input_shape().is_none() {
        student.set_input_shape(teacher.input_shape())?;
    }
    check_samples("distill: student input", student, &x)?;
    student.optimizer().map_err(|_| {
        KilnError::value("distill: the student has no optimizer: compile it or pass lr")
    })?;
    let n = x.shape()[0];
    if let Some(y) = y {
        if y.len() != n {
            shape_err!("distill: {} labels for {n} samples", y.len());
        }
    }
    if y.is_none() && cfg.alpha < 1.0 {
        value_err!("distill: alpha < 1 weighs a hard-label term: pass y, or set alpha=1");
    }
    // the teacher's logits once, in eval mode (it does not change)
    let teacher_out = teacher.predict(x.view(), 256)?;
    let probe = student.predict(x.slice_axis(Axis(0), ndarray::Slice::from(0..1)), 1)?;
    if teacher_out.ndim() != 2 || probe.shape()[1..] != teacher_out.shape()[1..] {
        shape_err!(
            "distill: the teacher's outputs have shape {:?} per sample and the student's {:?}: they must match (logits over the same classes)",
            &teacher_out.shape()[1..],
            &probe.shape()[1..]
        );
    }
    let temp = cfg.temperature;
    let soft_targets = softmax_values(&(&teacher_out / temp), 1);
    // Σ p log p of the targets: makes the reported soft term a true KL (0 when the student matches)
    let entropy_term: Vec<f32> = soft_targets
        .axis_iter(Axis(0))
        .map(|r| r.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut report = DistillReport::default();
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let (mut total, mut soft_total) = (0.0f64, 0.0f64);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let m = chunk.len() as f32;
            let mut t = Tape::new(true, rng.next_u64());
            let input = t.constant(x.select(Axis(0), chunk));
            let logits = student.net.forward_all(&mut t, &[input])?[0];
            let scaled = t.scale(logits, 1.0 / temp);
            let log_p = t.log_softmax(scaled, 1)?;
            let targets = t.constant(soft_targets.select(Axis(0), chunk));
            let cross = t.mul(log_p, targets)?;
            let summed = t.sum(cross, &[0, 1], false)?;
            // T²·KL = T²·(Σ p log p − Σ p log q) / m; the constant part only shifts the reported value
            let soft = t.scale(summed, -temp * temp / m);
            let ent: f32 = chunk.iter().map(|&i| entropy_term[i]).sum::<f32>() * temp * temp / m;
            let soft_value = t.value(soft).sum() + ent;
            let loss = match y {
                Some(y) if cfg.alpha < 1.0 => {
                    let labels: Vec<usize> = chunk.iter().map(|&i| y[i]).collect();
                    let hard = t.cross_entropy(logits, &labels, None, 0.0)?;
                    let a = t.scale(soft, cfg.alpha);
                    let h = t.scale(hard, 1.0 - cfg.alpha);
                    t.add(a, h)?
                }
                _ => soft,
            };
            let lv = t.value(loss).sum() + cfg.alpha * ent;
            if !lv.is_finite() {
                return Err(KilnError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    value: lv,
                });
            }
            t.backward(loss)?;
            student.net.zero_grad();
            student.net.collect_grads(&mut t);
            drop(t);
            student.optimizer_step()?;
            total += lv as f64 * m as f64;
            soft_total += soft_value as f64 * m as f64;
        }
        report.loss.push((total / n as f64) as f32);
        report.soft_loss.push((soft_total / n as f64) as f32);
    }
    Ok(report)
}
