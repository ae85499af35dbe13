//! Optimizers (SGD, Adam, AdamW, RMSprop) with PyTorch's update rules, learning-rate schedules and
//! gradient clipping. Optimizers see named parameters only; they never know the model's type.

use std::collections::HashMap;

use serde::Serialize;

use crate::autograd::Tensor;
use crate::nn::Param;
use crate::{value_err, Result};

fn betas() -> [f32; 2] {
    [0.9, 0.999]
}
fn adam_eps() -> f32 {
    1e-8
}
fn adamw_decay() -> f32 {
    1e-2
}
fn rms_alpha() -> f32 {
    0.99
}
// PyTorch's default learning rates: the one place Python's and the browser's optimizers get theirs
fn lr_1e3() -> f32 {
    1e-3
}
fn lr_1e2() -> f32 {
    1e-2
}

/// An optimizer and its hyper-parameters, with PyTorch's names and defaults. In JSON
/// `{"type": "Adam", "lr": 0.01}`; read by hand ([`crate::json_args`], the defaults below), written
/// by serde.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
#[allow(missing_docs)]
pub enum OptimizerSpec {
    SGD {
        #[serde(default = "lr_1e3")]
        lr: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        dampening: f32,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f32,
    },
    Adam {
        #[serde(default = "lr_1e3")]
        lr: f32,
        #[serde(default = "betas")]
        betas: [f32; 2],
        #[serde(default = "adam_eps")]
        eps: f32,
        #[serde(default)]
        weight_decay: f32,
        #[serde(default)]
        amsgrad: bool,
    },
    AdamW {
        #[serde(default = "lr_1e3")]
        lr: f32,
        #[serde(default = "betas")]
        betas: [f32; 2],
        #[serde(default = "adam_eps")]
        eps: f32,
        #[serde(default = "adamw_decay")]
        weight_decay: f32,
        #[serde(default)]
        amsgrad: bool,
    },
    RMSprop {
        #[serde(default = "lr_1e2")]
        lr: f32,
        #[serde(default = "rms_alpha")]
        alpha: f32,
        #[serde(default = "adam_eps")]
        eps: f32,
        #[serde(default)]
        weight_decay: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        centered: bool,
    },
}

impl OptimizerSpec {
    /// Check the hyper-parameters and make the optimizer.
    pub fn build(&self) -> Result<Optimizer> {
        let (lr, wd) = match *self {
            OptimizerSpec::SGD {
                lr,
                weight_decay,
                momentum,
                nesterov,
                dampening,
            } => {
                if momentum < 0.0 || (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
                    value_err!("SGD: momentum must be >= 0, and Nesterov needs momentum > 0 and dampening 0");
                }
                (lr, weight_decay)
            }
            OptimizerSpec::Adam {
                lr,
                weight_decay,
                betas,
                eps,
                ..
            }
            | OptimizerSpec::AdamW {
                lr,
                weight_decay,
                betas,
                eps,
                ..
            } => {
                if !betas.iter().all(|b| (0.0..1.0).contains(b)) || eps <= 0.0 {
                    value_err!("Adam: betas must be in [0, 1) and eps positive, got betas {betas:?}, eps {eps}");
                }
                (lr, weight_decay)
            }
            OptimizerSpec::RMSprop {
                lr,
                weight_decay,
                alpha,
                eps,
                momentum,
                ..
            } => {
                if !(0.0..=1.0).contains(&alpha) || eps <= 0.0 || momentum < 0.0 {
                    value_err!("RMSprop: alpha must be in [0, 1], eps positive and momentum >= 0");
                }
                (lr, weight_decay)
            }
        };
        if !(lr > 0.0 && lr.is_finite()) {
            value_err!("optimizer: the learning rate must be a positive number, got {lr}");
        }
        if wd < 0.0 {
            value_err!("optimizer: weight_decay must be >= 0, got {wd}");
        }
        Ok(Optimizer {
            spec: self.clone(),
            lr,
            step: 0,
            state: HashMap::new(),
        })
    }

    /// The configured (base) learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            OptimizerSpec::SGD { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::AdamW { lr, .. }
            | OptimizerSpec::RMSprop { lr, .. } => lr,
        }
    }
}

#[derive(Default)]
struct State {
    m: Option<Tensor>,
    v: Option<Tensor>,
    extra: Option<Tensor>,
}

/// An optimizer with its per-parameter state, keyed by parameter name.
pub struct Optimizer {
    spec: OptimizerSpec,
    lr: f32,
    step: u64,
    state: HashMap<String, State>,
}

fn zeros_like(t: &Tensor) -> Tensor {
    Tensor::zeros(t.raw_dim())
}

impl Optimizer {
    /// The learning rate in use now (schedules change it).
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Set the learning rate (used by schedules).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// The hyper-parameters.
    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }

    /// Update every trainable parameter that has a gradient, with PyTorch's rule for this optimizer.
    pub fn step(&mut self, params: Vec<(String, &mut Param)>) {
        self.step += 1;
        let (lr, t) = (self.lr, self.step as i32);
        for (name, p) in params {
            if !p.trainable() || p.grad.is_none() {
                continue;
            }
            let (value, grad) = p.value_mut_and_grad();
            let grad = grad.expect("checked above");
            let s = self.state.entry(name).or_default();
            match self.spec {
                OptimizerSpec::SGD {
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                    ..
                } => {
                    let mut g = grad.clone();
                    if weight_decay != 0.0 {
                        g.scaled_add(weight_decay, &*value);
                    }
                    if momentum != 0.0 {
                        let buf = match s.m.take() {
                            None => g.clone(),
                            Some(mut b) => {
                                b *= momentum;
                                b.scaled_add(1.0 - dampening, &g);
                                b
                            }
                        };
                        if nesterov {
                            g.scaled_add(momentum, &buf);
                        } else {
                            g.assign(&buf);
                        }
                        s.m = Some(buf);
                    }
                    value.scaled_add(-lr, &g);
                }
                OptimizerSpec::Adam {
                    betas,
                    eps,
                    weight_decay,
                    amsgrad,
                    ..
                }
                | OptimizerSpec::AdamW {
                    betas,
                    eps,
                    weight_decay,
                    amsgrad,
                    ..
                } => {
                    let decoupled = matches!(self.spec, OptimizerSpec::AdamW { .. });
                    let [b1, b2] = betas;
                    let mut g = grad.clone();
                    if decoupled {
                        *value *= 1.0 - lr * weight_decay;
                    } else if weight_decay != 0.0 {
                        g.scaled_add(weight_decay, &*value);
                    }
                    let m = s.m.get_or_insert_with(|| zeros_like(&g));
                    let v = s.v.get_or_insert_with(|| zeros_like(&g));
                    ndarray::Zip::from(&mut *m)
                        .and(&mut *v)
                        .and(&g)
                        .for_each(|m, v, &g| {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                        });
                    let vv = if amsgrad {
                        let vmax = s.extra.get_or_insert_with(|| zeros_like(&g));
                        ndarray::Zip::from(&mut *vmax)
                            .and(&*v)
                            .for_each(|a, &b| *a = a.max(b));
                        &*vmax
                    } else {
                        &*v
                    };
                    // PyTorch: p -= (lr / bc1) · m / (√v / √bc2 + eps)
                    let bc1 = 1.0 - b1.powi(t);
                    let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
                    let step = lr / bc1;
                    ndarray::Zip::from(&mut *value)
                        .and(&*m)
                        .and(vv)
                        .for_each(|p, &m, &v| *p -= step * m / (v.sqrt() / bc2_sqrt + eps));
                }
                OptimizerSpec::RMSprop {
                    alpha,
                    eps,
                    weight_decay,
                    momentum,
                    centered,
                    ..
                } => {
                    let mut g = grad.clone();
                    if weight_decay != 0.0 {
                        g.scaled_add(weight_decay, &*value);
                    }
                    let sq = s.v.get_or_insert_with(|| zeros_like(&g));
                    ndarray::Zip::from(&mut *sq)
                        .and(&g)
                        .for_each(|s, &g| *s = alpha * *s + (1.0 - alpha) * g * g);
                    let mut avg = sq.clone();
                    if centered {
                        let ga = s.extra.get_or_insert_with(|| zeros_like(&g));
                        ndarray::Zip::from(&mut *ga)
                            .and(&g)
                            .for_each(|a, &g| *a = alpha * *a + (1.0 - alpha) * g);
                        ndarray::Zip::from(&mut avg)
                            .and(&*ga)
                            .for_each(|a, &m| *a -= m * m);
                    }
                    avg.mapv_inplace(|a| a.sqrt() + eps);
                    if momentum > 0.0 {
                        let buf = s.m.get_or_insert_with(|| zeros_like(&g));
                        ndarray::Zip::from(&mut *buf)
                            .and(&g)
                            .and(&avg)
                            .for_each(|b, &g, &a| *b = momentum * *b + g / a);
                        value.scaled_add(-lr, buf);
                    } else {
                        ndarray::Zip::from(&mut *value)
                            .and(&g)
                            .and(&avg)
                            .for_each(|p, &g, &a| *p -= lr * g / a);
                    }
                }
            }
        }
    }
}

/// Scale gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(params: &mut [(String, &mut Param)], max_norm: f32) -> f32 {
    let total: f32 = params
        .iter()
        .filter_map(|(_, p)| p.grad.as_ref())
        .map(|g| g.iter().map(|v| v * v).sum::<f32>())
        .sum::<f32>()
        .sqrt();
    if total > max_norm {
        let scale = max_norm / (total + 1e-6);
        for (_, p) in params.iter_mut() {
            if let Some(g) = p.grad.as_mut() {
                *g *= scale;
            }
        }
    }
    total
}

/// A learning-rate schedule, stepped once per epoch. In JSON `{"type": "Step", "step_size": 5,
/// "gamma": 0.5}`; read by hand, as [`OptimizerSpec`] is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Schedule {
    /// Multiply by `gamma` every `step_size` epochs (PyTorch `StepLR`).
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to `eta_min` over `t_max` epochs (PyTorch `CosineAnnealingLR`).
    Cosine {
        /// Epochs of one half cosine.
        t_max: usize,
        /// Final learning rate.
        #[serde(default)]
        eta_min: f32,
    },
    /// Linear warm-up from `start_factor` × base to the base rate over `warmup_epochs` (PyTorch `LinearLR`).
    Warmup {
        /// Epochs of warm-up.
        warmup_epochs: usize,
        /// Starting fraction of the base rate.
        #[serde(default = "third")]
        start_factor: f32,
    },
    /// Multiply by `factor` when the monitored value has not improved for `patience` epochs.
    ReduceOnPlateau {
        /// The log key watched ("val_loss" by default).
        #[serde(default = "val_loss")]
        monitor: String,
        /// Decay factor.
        #[serde(default = "tenth")]
        factor: f32,
        /// Epochs without improvement before a decay.
        #[serde(default = "ten")]
        patience: usize,
        /// Lower bound on the rate.
        #[serde(default)]
        min_lr: f32,
    },
}

fn third() -> f32 {
    1.0 / 3.0
}
fn val_loss() -> String {
    "val_loss".into()
}
fn tenth() -> f32 {
    0.1
}
fn ten() -> usize {
    10
}

/// A schedule's running state.
pub struct Scheduler {
    schedule: Schedule,
    base: f32,
    best: f64,
    bad_epochs: usize,
}

impl Scheduler {
    /// Track `schedule` starting from `base_lr`.
    pub fn new(schedule: Schedule, base_lr: f32) -> Result<Self> {
        match &schedule {
            Schedule::Step { step_size: 0, .. } | Schedule::Cosine { t_max: 0, .. } => {
                value_err!("schedule: step_size and t_max must be positive")
            }
            Schedule::ReduceOnPlateau { factor, .. } if !(0.0..1.0).contains(factor) => {
                value_err!("ReduceOnPlateau: factor must be in [0, 1)")
            }
            _ => {}
        }
        Ok(Scheduler {
            schedule,
            base: base_lr,
            best: f64::INFINITY,
            bad_epochs: 0,
        })
    }

    /// The rate for epoch `epoch` (0-based), given the current rate and the previous epoch's logs.
    pub fn lr_for(
        &mut self,
        epoch: usize,
        current: f32,
        last_logs: Option<&std::collections::BTreeMap<String, f64>>,
    ) -> f32 {
        match &self.schedule {
            Schedule::Step { step_size, gamma } => {
                self.base * gamma.powi((epoch / step_size) as i32)
            }
            Schedule::Cosine { t_max, eta_min } => {
                let e = (epoch.min(*t_max)) as f32 / *t_max as f32;
                eta_min + (self.base - eta_min) * 0.5 * (1.0 + (std::f32::consts::PI * e).cos())
            }
            Schedule::Warmup {
                warmup_epochs,
                start_factor,
            } => {
                if epoch >= *warmup_epochs {
                    self.base
                } else {
                    self.base
                        * (start_factor
                            + (1.0 - start_factor) * epoch as f32 / *warmup_epochs as f32)
                }
            }
            Schedule::ReduceOnPlateau {
                monitor,
                factor,
                patience,
                min_lr,
            } => {
                let Some((key, v)) = last_logs.and_then(|l| {
                    l.get_key_value(monitor.as_str())
                        .or_else(|| l.get_key_value("loss"))
                }) else {
                    return current;
                };
                let v = crate::train::to_minimise(key, *v);
                // PyTorch's relative threshold 1e-4, for values of either sign (negated accuracies)
                let bar = if self.best.is_finite() {
                    self.best - self.best.abs() * 1e-4
                } else {
                    self.best
                };
                if v < bar {
                    self.best = v;
                    self.bad_epochs = 0;
                    current
                } else {
                    self.bad_epochs += 1;
                    if self.bad_epochs > *patience {
                        self.bad_epochs = 0;
                        (current * factor).max(*min_lr)
                    } else {
                        current
                    }
                }
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for OptimizerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let (name, a) =
            crate::json_args::tagged(&v, "type", "optimizer").map_err(D::Error::custom)?;
        let read = || -> std::result::Result<OptimizerSpec, String> {
            Ok(match name {
                "SGD" => {
                    a.only(&[
                        "type",
                        "lr",
                        "momentum",
                        "dampening",
                        "nesterov",
                        "weight_decay",
                    ])?;
                    OptimizerSpec::SGD {
                        lr: a.or("lr", lr_1e3())?,
                        momentum: a.or("momentum", 0.0)?,
                        dampening: a.or("dampening", 0.0)?,
                        nesterov: a.or("nesterov", false)?,
                        weight_decay: a.or("weight_decay", 0.0)?,
                    }
                }
                "Adam" | "AdamW" => {
                    a.only(&["type", "lr", "betas", "eps", "weight_decay", "amsgrad"])?;
                    let (lr, betas, eps, amsgrad) = (
                        a.or("lr", lr_1e3())?,
                        a.or("betas", betas())?,
                        a.or("eps", adam_eps())?,
                        a.or("amsgrad", false)?,
                    );
                    if name == "Adam" {
                        let weight_decay = a.or("weight_decay", 0.0)?;
                        OptimizerSpec::Adam {
                            lr,
                            betas,
                            eps,
                            weight_decay,
                            amsgrad,
                        }
                    } else {
                        let weight_decay = a.or("weight_decay", adamw_decay())?;
                        OptimizerSpec::AdamW {
                            lr,
                            betas,
                            eps,
                            weight_decay,
                            amsgrad,
                        }
                    }
                }
                "RMSprop" => {
                    a.only(&[
                        "type",
                        "lr",
                        "alpha",
                        "eps",
                        "weight_decay",
                        "momentum",
                        "centered",
                    ])?;
                    OptimizerSpec::RMSprop {
                        lr: a.or("lr", lr_1e2())?,
                        alpha: a.or("alpha", rms_alpha())?,
                        eps: a.or("eps", adam_eps())?,
                        weight_decay: a.or("weight_decay", 0.0)?,
                        momentum: a.or("momentum", 0.0)?,
                        centered: a.or("centered", false)?,
                    }
                }
                other => {
                    return Err(format!(
                    "unknown variant `{other}`, expected one of `SGD`, `Adam`, `AdamW`, `RMSprop`"
                ))
                }
            })
        };
        read().map_err(D::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let (name, a) =
            crate::json_args::tagged(&v, "type", "schedule").map_err(D::Error::custom)?;
        let read = || -> std::result::Result<Schedule, String> {
            Ok(match name {
                "Step" => {
                    a.only(&["type", "step_size", "gamma"])?;
                    Schedule::Step {
                        step_size: a.get("step_size")?,
                        gamma: a.get("gamma")?,
                    }
                }
                "Cosine" => {
                    a.only(&["type", "t_max", "eta_min"])?;
                    Schedule::Cosine {
                        t_max: a.get("t_max")?,
                        eta_min: a.or("eta_min", 0.0)?,
                    }
                }
                "Warmup" => {
                    a.only(&["type", "warmup_epochs", "start_factor"])?;
                    Schedule::Warmup {
                        warmup_epochs: a.get("warmup_epochs")?,
                        start_factor: a.or("start_factor", third())?,
                    }
                }
                "ReduceOnPlateau" => {
                    a.only(&["type", "monitor", "factor", "patience", "min_lr"])?;
                    Schedule::ReduceOnPlateau {
                        monitor: a.or("monitor", val_loss())?,
                        factor: a.or("factor", tenth())?,
                        patience: a.or("patience", ten())?,
                        min_lr: a.or("min_lr", 0.0)?,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown variant `{other}`, expected one of `Step`, `Cosine`, `Warmup`, `ReduceOnPlateau`"
                    ))
                }
            })
        };
        read().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn param(v: &[f32], g: &[f32]) -> Param {
        let mut p = Param::new(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap());
        p.grad = Some(ArrayD::from_shape_vec(IxDyn(&[g.len()]), g.to_vec()).unwrap());
        p
    }

    fn run(spec: OptimizerSpec, steps: usize) -> Vec<f32> {
        let mut opt = spec.build().unwrap();
        let mut p = param(&[1.0, -2.0], &[0.5, 0.25]);
        for _ in 0..steps {
            opt.step(vec![("w".into(), &mut p)]);
        }
        p.value().iter().copied().collect()
    }

    // Expected values computed with torch.optim on w=[1,-2], constant grad [0.5, 0.25], lr 0.1.
    #[test]
    fn updates_match_pytorch() {
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        let sgd = run(
            OptimizerSpec::SGD {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            2,
        );
        // buf1 = g, buf2 = 1.9g; nesterov steps: g + .9·buf → 1.9g, then 2.71g: total 4.61g·0.1
        assert!(close(&sgd, &[1.0 - 0.2305, -2.0 - 0.11525]), "{sgd:?}");
        let adam = run(
            OptimizerSpec::Adam {
                lr: 0.1,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
                amsgrad: false,
            },
            3,
        );
        // with a constant gradient Adam moves by ≈ lr per step
        assert!(close(&adam, &[0.7, -2.3]), "{adam:?}");
        let adamw = run(
            OptimizerSpec::AdamW {
                lr: 0.1,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.1,
                amsgrad: false,
            },
            1,
        );
        assert!(close(&adamw, &[0.99 - 0.1, -1.98 - 0.1]), "{adamw:?}");
        let rms = run(
            OptimizerSpec::RMSprop {
                lr: 0.1,
                alpha: 0.99,
                eps: 1e-8,
                weight_decay: 0.0,
                momentum: 0.0,
                centered: false,
            },
            1,
        );
        // sq = 0.01 g², step = lr·g/(0.1|g|) = 1.0 in magnitude
        assert!(close(&rms, &[0.0, -3.0]), "{rms:?}");
    }

    #[test]
    fn clipping_limits_the_global_norm() {
        let mut a = param(&[0.0], &[3.0]);
        let mut b = param(&[0.0], &[4.0]);
        let mut ps = vec![("a".to_string(), &mut a), ("b".to_string(), &mut b)];
        assert_eq!(clip_grad_norm(&mut ps, 1.0), 5.0);
        let g = ps[0].1.grad.as_ref().unwrap()[[0]];
        assert!((g - 0.6).abs() < 1e-5);
    }

    #[test]
    fn schedules() {
        let mut s = Scheduler::new(
            Schedule::Step {
                step_size: 2,
                gamma: 0.5,
            },
            1.0,
        )
        .unwrap();
        assert_eq!(
            (
                s.lr_for(1, 1.0, None),
                s.lr_for(2, 1.0, None),
                s.lr_for(5, 1.0, None)
            ),
            (1.0, 0.5, 0.25)
        );
        let mut c = Scheduler::new(
            Schedule::Cosine {
                t_max: 10,
                eta_min: 0.0,
            },
            1.0,
        )
        .unwrap();
        assert!(
            (c.lr_for(5, 1.0, None) - 0.5).abs() < 1e-6 && c.lr_for(10, 1.0, None).abs() < 1e-6
        );
        let mut w = Scheduler::new(
            Schedule::Warmup {
                warmup_epochs: 4,
                start_factor: 0.2,
            },
            1.0,
        )
        .unwrap();
        assert!((w.lr_for(2, 1.0, None) - 0.6).abs() < 1e-6 && w.lr_for(4, 1.0, None) == 1.0);
        let mut p = Scheduler::new(
            Schedule::ReduceOnPlateau {
                monitor: "val_loss".into(),
                factor: 0.5,
                patience: 1,
                min_lr: 0.0,
            },
            1.0,
        )
        .unwrap();
        let logs = |v: f64| std::collections::BTreeMap::from([("val_loss".to_string(), v)]);
        let mut lr = 1.0;
        for v in [1.0, 0.9, 0.95, 0.95] {
            lr = p.lr_for(0, lr, Some(&logs(v)));
        }
        assert_eq!(lr, 0.5);
    }

    #[test]
    fn bad_hyper_parameters_are_errors() {
        assert!(OptimizerSpec::Adam {
            lr: -1.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false
        }
        .build()
        .is_err());
        assert!(OptimizerSpec::SGD {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0
        }
        .build()
        .is_err());
        assert!(Scheduler::new(
            Schedule::Step {
                step_size: 0,
                gamma: 0.5
            },
            1.0
        )
        .is_err());
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn specs_read_by_hand_round_trip_with_defaults_and_refuse_unknown_names() {
        for spec in [
            OptimizerSpec::SGD {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
                weight_decay: 1e-4,
            },
            OptimizerSpec::Adam {
                lr: 1e-3,
                betas: [0.8, 0.99],
                eps: 1e-7,
                weight_decay: 0.0,
                amsgrad: true,
            },
            OptimizerSpec::AdamW {
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.01,
                amsgrad: false,
            },
            OptimizerSpec::RMSprop {
                lr: 1e-2,
                alpha: 0.9,
                eps: 1e-8,
                weight_decay: 0.0,
                momentum: 0.5,
                centered: true,
            },
        ] {
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(
                serde_json::from_str::<OptimizerSpec>(&json).unwrap(),
                spec,
                "{json}"
            );
        }
        let adamw: OptimizerSpec = serde_json::from_str(r#"{"type":"AdamW"}"#).unwrap();
        assert_eq!(
            adamw,
            OptimizerSpec::AdamW {
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.01,
                amsgrad: false
            }
        );
        let rms: OptimizerSpec = serde_json::from_str(r#"{"type":"RMSprop"}"#).unwrap();
        assert!(matches!(rms, OptimizerSpec::RMSprop { lr, .. } if lr == 1e-2));
        for bad in [
            r#"{"type":"Adam","lr":"x"}"#,
            r#"{"type":"Adam","momentum":0.9}"#,
            r#"{"type":"Nope"}"#,
            r#"{"lr":1}"#,
            "3",
        ] {
            assert!(serde_json::from_str::<OptimizerSpec>(bad).is_err(), "{bad}");
        }
        for sched in [
            Schedule::Step {
                step_size: 3,
                gamma: 0.5,
            },
            Schedule::Cosine {
                t_max: 10,
                eta_min: 1e-4,
            },
            Schedule::Warmup {
                warmup_epochs: 2,
                start_factor: 0.25,
            },
            Schedule::ReduceOnPlateau {
                monitor: "loss".into(),
                factor: 0.5,
                patience: 2,
                min_lr: 1e-5,
            },
        ] {
            let json = serde_json::to_string(&sched).unwrap();
            assert_eq!(
                serde_json::from_str::<Schedule>(&json).unwrap(),
                sched,
                "{json}"
            );
        }
        let plateau: Schedule = serde_json::from_str(r#"{"type":"ReduceOnPlateau"}"#).unwrap();
        assert_eq!(
            plateau,
            Schedule::ReduceOnPlateau {
                monitor: "val_loss".into(),
                factor: 0.1,
                patience: 10,
                min_lr: 0.0
            }
        );
        assert!(serde_json::from_str::<Schedule>(r#"{"type":"Step","step_size":3}"#).is_err());
        assert!(serde_json::from_str::<Schedule>(
            r#"{"type":"Step","step_size":3,"gamma":0.5,"x":1}"#
        )
        .is_err());
    }
}
