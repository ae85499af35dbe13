//! Gradual magnitude pruning during `fit` (Zhu & Gupta, 2017, "To prune, or not to prune"): the
//! sparsity rises from `initial_sparsity` to `target_sparsity` between `start_epoch` and
//! `end_epoch` along `s_t = s_f + (s_i - s_f) (1 - p)^power`, p the fraction of that span done. It
//! prunes fast while many redundant weights remain, then slowly, so training can recover.
//!
//! Every `frequency` optimizer steps the [`Pruner`] recomputes the masks by magnitude
//! ([`magnitude_masks`]) at the schedule's sparsity; after every step it multiplies the weights by
//! them, so neither the gradient nor the optimizer's momentum can bring a pruned weight back. The fit
//! loop drives it when [`crate::train::FitConfig::pruning`] is set; afterwards the zeros are plain
//! weights, and [`super::make_permanent`] cuts structurally pruned channels out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::prune::{apply_masks, magnitude_masks, sparsity_report, PruneOptions, PruneScope};
use crate::autograd::Tensor;
use crate::{value_err, Model, Result};

/// How the sparsity grows from `start_epoch` to `end_epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsityCurve {
    /// Zhu & Gupta's polynomial decay of the remaining density (`power` 3 in the paper).
    Polynomial,
    /// Straight to `target_sparsity` at `start_epoch`, then held (one-shot pruning, fine-tuned).
    Constant,
}

/// The pruning part of a fit configuration (JSON: `{"target_sparsity": 0.8, "end_epoch": 6}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruningSchedule {
    /// Fraction of weights (or of channels, when structured) zero at the end, in [0, 1).
    pub target_sparsity: f32,
    /// Sparsity at `start_epoch`, in [0, target_sparsity].
    pub initial_sparsity: f32,
    /// Epoch (from 0) whose first step starts pruning.
    pub start_epoch: usize,
    /// Epoch (from 0) at whose first step the target is reached; `None`: the last epoch.
    pub end_epoch: Option<usize>,
    /// Optimizer steps between mask updates; `None`: once per epoch.
    pub frequency: Option<usize>,
    /// The curve from initial to target.
    pub schedule: SparsityCurve,
    /// Exponent of the polynomial curve.
    pub power: f32,
    /// Whole output channels rather than single weights.
    pub structured: bool,
    /// Global or per-layer ranking (unstructured only).
    pub scope: PruneScope,
}

impl Default for PruningSchedule {
    fn default() -> Self {
        PruningSchedule {
            target_sparsity: 0.5,
            initial_sparsity: 0.0,
            start_epoch: 0,
            end_epoch: None,
            frequency: None,
            schedule: SparsityCurve::Polynomial,
            power: 3.0,
            structured: false,
            scope: PruneScope::Global,
        }
    }
}

/// Holds the masks while `fit` trains and raises the sparsity on schedule.
pub struct Pruner {
    cfg: PruningSchedule,
    /// First and last update steps, and steps between updates.
    begin: usize,
    end: usize,
    every: usize,
    /// Optimizer steps taken so far.
    steps: usize,
    masks: BTreeMap<String, Tensor>,
}

impl Pruner {
    /// Check the schedule against a fit of `epochs` epochs of `steps_per_epoch` optimizer steps, and
    /// apply the first round when pruning starts at step 0.
    pub fn new(
        model: &mut Model,
        cfg: &PruningSchedule,
        epochs: usize,
        steps_per_epoch: usize,
    ) -> Result<Pruner> {
        let (s_i, s_f) = (cfg.initial_sparsity, cfg.target_sparsity);
        if !(0.0..1.0).contains(&s_f) {
            value_err!("Pruning: target_sparsity must be in [0, 1), got {s_f}");
        }
        if !(0.0..=s_f).contains(&s_i) {
            value_err!(
                "Pruning: initial_sparsity must be in [0, target_sparsity = {s_f}], got {s_i}"
            );
        }
        if !(cfg.power.is_finite() && cfg.power > 0.0) {
            value_err!("Pruning: power must be positive, got {}", cfg.power);
        }
        let last = epochs.saturating_sub(1);
        let end_epoch = cfg.end_epoch.unwrap_or(last).max(cfg.start_epoch);
        if cfg.start_epoch > last || end_epoch > last {
            value_err!(
                "Pruning: start_epoch {} and end_epoch {end_epoch} must fall within the {epochs} epochs \
                 of this fit (counted from 0): the target is reached at the start of end_epoch",
                cfg.start_epoch
            );
        }
        if cfg.frequency == Some(0) {
            value_err!("Pruning: frequency must be a positive number of steps");
        }
        let mut pruner = Pruner {
            cfg: cfg.clone(),
            begin: cfg.start_epoch * steps_per_epoch,
            end: end_epoch * steps_per_epoch,
            every: cfg.frequency.unwrap_or(steps_per_epoch).max(1),
            steps: 0,
            masks: BTreeMap::new(),
        };
        // fails early on a model without Linear/Conv layers
        magnitude_masks(model, &pruner.options(0.0))?;
        pruner.update(model)?;
        Ok(pruner)
    }

    fn options(&self, sparsity: f32) -> PruneOptions {
        PruneOptions {
            sparsity,
            structured: self.cfg.structured,
            scope: self.cfg.scope,
        }
    }

    /// The sparsity the schedule asks for after `step` optimizer steps (0 before it starts).
    pub fn sparsity_at(&self, step: usize) -> f32 {
        let (s_i, s_f) = (self.cfg.initial_sparsity, self.cfg.target_sparsity);
        if step < self.begin {
            return 0.0;
        }
        if self.cfg.schedule == SparsityCurve::Constant || self.end == self.begin {
            return s_f;
        }
        let p = ((step - self.begin) as f32 / (self.end - self.begin) as f32).min(1.0);
        s_f + (s_i - s_f) * (1.0 - p).powf(self.cfg.power)
    }

    /// Recompute the masks when the step count is on the schedule's grid; apply them either way.
    fn update(&mut self, model: &mut Model) -> Result<()> {
        let s = self.steps;
        let on_grid = s >= self.begin
            && s <= self.end
            && ((s - self.begin).is_multiple_of(self.every) || s == self.end);
        if on_grid {
            let sparsity = self.sparsity_at(s);
            // a zero sparsity needs no masks (and no per-step multiply)
            self.masks = if sparsity > 0.0 {
                magnitude_masks(model, &self.options(sparsity))?
            } else {
                BTreeMap::new()
            };
        }
        apply_masks(model, &self.masks);
        Ok(())
    }

    /// Called by the fit loop after each optimizer step.
    pub fn after_step(&mut self, model: &mut Model) -> Result<()> {
        self.steps += 1;
        self.update(model)
    }

    /// Put the current masks back (after early stopping restored earlier weights, say).
    pub fn reapply(&self, model: &mut Model) {
        apply_masks(model, &self.masks);
    }

    /// The real fraction of zeros over all Linear/Conv weights (what the epoch logs call `sparsity`).
    pub fn measured_sparsity(model: &Model) -> Result<f64> {
        let report = sparsity_report(model)?;
        let (zeros, total) = report
            .iter()
            .fold((0, 0), |(z, t), l| (z + l.zeros, t + l.total));
        Ok(if total > 0 {
            zeros as f64 / total as f64
        } else {
            0.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::LayerSpec;

    fn mlp() -> Model {
        let json = r#"[{"type":"Linear","in_features":8,"out_features":16},{"type":"ReLU"},
                       {"type":"Linear","in_features":16,"out_features":4}]"#;
        Model::new(&LayerSpec::list_from_json(json).unwrap(), 0).unwrap()
    }

    #[test]
    fn polynomial_schedule_rises_fast_then_slowly_to_the_target() {
        let mut m = mlp();
        let cfg = PruningSchedule {
            target_sparsity: 0.8,
            start_epoch: 1,
            end_epoch: Some(3),
            ..PruningSchedule::default()
        };
        let p = Pruner::new(&mut m, &cfg, 5, 10).unwrap();
        assert_eq!(p.sparsity_at(9), 0.0, "nothing before start_epoch");
        assert_eq!(p.sparsity_at(10), 0.0, "initial sparsity at the start");
        assert!(
            (p.sparsity_at(20) - 0.7).abs() < 1e-6,
            "1 - (1/2)^3 of the way"
        );
        assert!((p.sparsity_at(30) - 0.8).abs() < 1e-6);
        assert!(
            (p.sparsity_at(45) - 0.8).abs() < 1e-6,
            "held after end_epoch"
        );
        let firsts: Vec<f32> = (10..=30).step_by(5).map(|s| p.sparsity_at(s)).collect();
        let gains: Vec<f32> = firsts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gains.windows(2).all(|g| g[1] < g[0]), "{gains:?} shrink");
    }

    #[test]
    fn schedules_outside_the_fit_are_refused() {
        let mut m = mlp();
        let bad = |cfg: PruningSchedule| {
            Pruner::new(&mut mlp(), &cfg, 4, 10)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(bad(PruningSchedule {
            target_sparsity: 1.0,
            ..Default::default()
        })
        .contains("target_sparsity"));
        assert!(bad(PruningSchedule {
            end_epoch: Some(4),
            ..Default::default()
        })
        .contains("end_epoch"));
        assert!(bad(PruningSchedule {
            frequency: Some(0),
            ..Default::default()
        })
        .contains("frequency"));
        assert!(bad(PruningSchedule {
            initial_sparsity: 0.6,
            ..Default::default()
        })
        .contains("initial"));
        let constant = PruningSchedule {
            schedule: SparsityCurve::Constant,
            target_sparsity: 0.5,
            ..Default::default()
        };
        Pruner::new(&mut m, &constant, 1, 3).unwrap();
        let zeros = Pruner::measured_sparsity(&m).unwrap();
        assert!((zeros - 0.5).abs() < 0.01, "one-shot at step 0: {zeros}");
    }
}
