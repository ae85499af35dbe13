//! The drift monitor: a sliding window of live examples, kept as bin counts against the
//! reference's sketches, and the report: PSI and a two-sample KS test per feature, the shift in
//! predicted classes (chi-square) and in top-1 confidence (KS), and one verdict.

use std::collections::VecDeque;

use serde::Serialize;

use super::reference::{top1, OutputSummary, Reference, Sketch};
use super::stats::{chi_square, ks_p_value, psi};
use crate::{shape_err, value_err, Result};

/// Significance of the verdict, after Bonferroni's correction over every test of a report.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// The smallest PSI a test must also reach to count as drift (0.1: "some shift" by the usual
/// reading; 0.25: "a large one").
pub const DEFAULT_MIN_PSI: f64 = 0.1;
/// Window length when none is given.
pub const DEFAULT_WINDOW: usize = 200;
/// The longest window.
pub const MAX_WINDOW: usize = 1 << 20;
/// No verdict on fewer observations than this (or than the window, if shorter): a handful of
/// examples from one or two classes would look like drift.
pub const MIN_OBSERVED: usize = 10;

/// What the window remembers of one example.
struct Observation {
    bins: Box<[u8]>,
    class: Option<usize>,
    output_bin: Option<usize>,
    confidence: f64,
}

/// A sliding-window drift monitor over a model's live inputs and outputs.
pub struct DriftMonitor {
    reference: Reference,
    window: usize,
    alpha: f64,
    min_psi: f64,
    obs: VecDeque<Observation>,
    /// Per feature, live counts per bin.
    counts: Vec<Vec<u64>>,
    classes: Vec<u64>,
    outputs: Vec<u64>,
    confidence_sum: f64,
    seen: u64,
    rejected: u64,
    was_drifted: bool,
}

/// One feature's line in a report.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureReport {
    /// `x[17]`, or for images `mean`, `std`, `top-left`, …
    pub name: String,
    /// Its position among the features.
    pub index: usize,
    /// Population stability index, window against reference.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic on the binned CDFs.
    pub ks: f64,
    /// The KS test's p-value, Bonferroni-adjusted over the report's tests.
    pub p_value: f64,
    /// Whether this feature moved (adjusted p below alpha and PSI at least the minimum).
    pub drifted: bool,
}

/// The predicted-class mix, window against reference.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    /// PSI of the class proportions.
    pub psi: f64,
    /// Pearson's chi-square statistic.
    pub chi2: f64,
    /// Its p-value, Bonferroni-adjusted.
    pub p_value: f64,
    /// Whether the mix moved.
    pub drifted: bool,
    /// Share of the reference predicted as each class.
    pub reference: Vec<f64>,
    /// Share of the window predicted as each class.
    pub live: Vec<f64>,
}

/// Top-1 confidence (classifiers) or the output value (regressions), window against reference.
#[derive(Clone, Debug, Serialize)]
pub struct OutputReport {
    /// PSI over the reference's bins.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic.
    pub ks: f64,
    /// Its p-value, Bonferroni-adjusted.
    pub p_value: f64,
    /// Whether it moved.
    pub drifted: bool,
    /// Mean on the reference (classifiers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_mean: Option<f64>,
    /// Mean over the window.
    pub live_mean: f64,
}

/// What [`DriftMonitor::report`] says.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The verdict: some test moved (see [`FeatureReport::drifted`]), on at least
    /// [`MIN_OBSERVED`] observations (or a full window, if shorter).
    pub drifted: bool,
    /// The window is full.
    pub ready: bool,
    /// Examples in the window.
    pub observed: usize,
    /// The window's length.
    pub window: usize,
    /// Examples observed since the start.
    pub seen: u64,
    /// Examples refused (non-finite values, wrong shape) since the start; never in the window.
    pub rejected: u64,
    /// The largest PSI of any feature.
    pub psi: f64,
    /// The smallest adjusted p-value of any test.
    pub p_value: f64,
    /// Names of the features that moved, most moved first.
    pub moved: Vec<String>,
    /// Every feature, most moved first (smallest p-value, then largest PSI).
    pub features: Vec<FeatureReport>,
    /// The predicted-class mix, for classifiers.
    pub classes: Option<ClassReport>,
    /// Top-1 confidence, for classifiers.
    pub confidence: Option<OutputReport>,
    /// The output value, for models with one output value.
    pub output: Option<OutputReport>,
    /// The significance the verdict used.
    pub alpha: f64,
    /// The minimum PSI the verdict used.
    pub min_psi: f64,
}

impl DriftMonitor {
    /// A monitor of `window` examples against `reference`, with the default thresholds.
    pub fn new(reference: Reference, window: usize) -> Result<DriftMonitor> {
        DriftMonitor::with_thresholds(reference, window, DEFAULT_ALPHA, DEFAULT_MIN_PSI)
    }

    /// A monitor with its own significance `alpha` (0 < alpha < 1) and minimum PSI (≥ 0).
    pub fn with_thresholds(
        reference: Reference,
        window: usize,
        alpha: f64,
        min_psi: f64,
    ) -> Result<DriftMonitor> {
        if !(1..=MAX_WINDOW).contains(&window) {
            value_err!("drift: window must be between 1 and {MAX_WINDOW} examples, got {window}");
        }
        if !(alpha > 0.0 && alpha < 1.0) {
            value_err!("drift: alpha must be between 0 and 1, got {alpha}");
        }
        if !(min_psi >= 0.0 && min_psi.is_finite()) {
            value_err!("drift: min_psi must be 0 or more, got {min_psi}");
        }
        let counts = reference
            .sketches
            .iter()
            .map(|s| vec![0; s.bins()])
            .collect();
        let (classes, outputs) = match &reference.outputs {
            OutputSummary::None => (Vec::new(), Vec::new()),
            OutputSummary::Classes {
                proportions,
                confidence,
                ..
            } => (vec![0; proportions.len()], vec![0; confidence.bins()]),
            OutputSummary::Value(s) => (Vec::new(), vec![0; s.bins()]),
        };
        Ok(DriftMonitor {
            reference,
            window,
            alpha,
            min_psi,
            obs: VecDeque::with_capacity(window.min(4096)),
            counts,
            classes,
            outputs,
            confidence_sum: 0.0,
            seen: 0,
            rejected: 0,
            was_drifted: false,
        })
    }

    /// The reference the monitor compares against.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The window's length.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Checks a batch of examples (`shape` = `[batch, ...input shape]`) without adding it: the
    /// number of examples, or an error naming what is wrong. Call it before running the model.
    pub fn check_inputs(&self, inputs: &[f32], shape: &[usize]) -> Result<usize> {
        let want = &self.reference.input_shape;
        if shape.len() != want.len() + 1 || &shape[1..] != want.as_slice() {
            shape_err!(
                "drift: observations of shape {shape:?} do not match the model's input [batch, {}]",
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let per = self.reference.features.input_len();
        if shape[0].checked_mul(per) != Some(inputs.len()) {
            shape_err!(
                "drift: shape {shape:?} needs {} values, got {}",
                shape[0].saturating_mul(per),
                inputs.len()
            );
        }
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            value_err!(
                "drift: observation {} has a non-finite value ({}) at position {}; nothing of this batch was added to the window",
                i / per,
                inputs[i],
                i % per
            );
        }
        Ok(shape[0])
    }

    /// [`check_inputs`](Self::check_inputs), counting a refused batch in the report's `rejected`:
    /// what a binding calls before it runs the model on the batch.
    pub fn admit(&mut self, inputs: &[f32], shape: &[usize]) -> Result<usize> {
        let checked = self.check_inputs(inputs, shape);
        if checked.is_err() {
            self.rejected += shape.first().copied().unwrap_or(1).max(1) as u64;
        }
        checked
    }

    /// Adds a batch of examples and the model's outputs on them (`[batch, classes]`; required
    /// when the reference watches outputs). All or nothing: a batch with a non-finite value or a
    /// wrong shape is refused whole, counted in `rejected`, and the window is unchanged.
    pub fn observe_batch(
        &mut self,
        inputs: &[f32],
        shape: &[usize],
        outputs: Option<(&[f32], &[usize])>,
    ) -> Result<usize> {
        let checked = self.check_batch(inputs, shape, outputs);
        let n = match checked {
            Ok(n) => n,
            Err(e) => {
                self.rejected += shape.first().copied().unwrap_or(1).max(1) as u64;
                return Err(e);
            }
        };
        let per = self.reference.features.input_len();
        let mut row = Vec::with_capacity(self.counts.len());
        for i in 0..n {
            row.clear();
            self.reference
                .features
                .extract(&inputs[i * per..(i + 1) * per], &mut row);
            let bins: Box<[u8]> = self
                .reference
                .sketches
                .iter()
                .zip(&row)
                .map(|(s, &v)| s.bin(v) as u8)
                .collect();
            let (class, output_bin, confidence) = match (&self.reference.outputs, outputs) {
                (OutputSummary::Classes { confidence, .. }, Some((data, out_shape))) => {
                    let c = out_shape[1];
                    let (k, p) = top1(&data[i * c..(i + 1) * c]).expect("checked finite");
                    (Some(k), Some(confidence.bin(p)), p)
                }
                (OutputSummary::Value(s), Some((data, _))) => {
                    let v = data[i] as f64;
                    (None, Some(s.bin(v)), v)
                }
                _ => (None, None, 0.0),
            };
            self.push(Observation {
                bins,
                class,
                output_bin,
                confidence,
            });
        }
        self.seen += n as u64;
        Ok(n)
    }

    fn check_batch(
        &self,
        inputs: &[f32],
        shape: &[usize],
        outputs: Option<(&[f32], &[usize])>,
    ) -> Result<usize> {
        let n = self.check_inputs(inputs, shape)?;
        let want = match &self.reference.outputs {
            OutputSummary::None => return Ok(n),
            OutputSummary::Classes { proportions, .. } => proportions.len(),
            OutputSummary::Value(_) => 1,
        };
        let Some((data, out_shape)) = outputs else {
            value_err!("drift: this model's reference watches its outputs: pass the model's outputs with the inputs");
        };
        if out_shape != [n, want] || data.len() != n * want {
            shape_err!(
                "drift: outputs of shape {out_shape:?} ({} values) do not match {n} examples of {want} scores",
                data.len()
            );
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            value_err!(
                "drift: the model's output for observation {} is not finite ({}); nothing of this batch was added to the window",
                i / want,
                data[i]
            );
        }
        Ok(n)
    }

    fn push(&mut self, o: Observation) {
        if self.obs.len() == self.window {
            let old = self.obs.pop_front().expect("a full window");
            self.count(&old, false);
        }
        self.count(&o, true);
        self.obs.push_back(o);
    }

    fn count(&mut self, o: &Observation, add: bool) {
        let step = |c: &mut u64| {
            if add {
                *c += 1
            } else {
                *c -= 1
            }
        };
        for (counts, &b) in self.counts.iter_mut().zip(o.bins.iter()) {
            step(&mut counts[b as usize]);
        }
        if let Some(k) = o.class {
            step(&mut self.classes[k]);
        }
        if let Some(b) = o.output_bin {
            step(&mut self.outputs[b]);
        }
        self.confidence_sum += if add { o.confidence } else { -o.confidence };
    }

    /// Empties the window (the counts of seen and rejected examples stay).
    pub fn reset(&mut self) {
        self.obs.clear();
        self.counts.iter_mut().for_each(|c| c.fill(0));
        self.classes.fill(0);
        self.outputs.fill(0);
        self.confidence_sum = 0.0;
        self.was_drifted = false;
    }

    /// The report on the current window.
    pub fn report(&self) -> Report {
        self.evaluate(true)
    }

    /// The report; without `detail`, features are neither named nor sorted (the verdict and the
    /// numbers are the same): what `drift_started` needs after every observation.
    fn evaluate(&self, detail: bool) -> Report {
        let n = self.obs.len() as u64;
        let nf = n as f64;
        let m = self.reference.count as f64;
        let watched_outputs = !matches!(self.reference.outputs, OutputSummary::None);
        let tests = self.counts.len()
            + usize::from(watched_outputs)
            + usize::from(!self.classes.is_empty());
        let adjust = |p: f64| (p * tests as f64).min(1.0);
        let sketch_test = |s: &Sketch, counts: &[u64]| -> (f64, f64, f64) {
            let psi = psi(&s.proportions, m, counts, n);
            let (mut live, mut refc, mut d) = (0u64, 0.0, 0.0f64);
            for (j, &c) in counts.iter().enumerate().take(counts.len() - 1) {
                live += c;
                refc += s.proportions[j];
                d = d.max((live as f64 / nf.max(1.0) - refc).abs());
            }
            let p = if n == 0 { 1.0 } else { ks_p_value(d, nf, m) };
            (psi, d, adjust(p))
        };
        let enough = self.obs.len() >= MIN_OBSERVED.min(self.window);
        let moved = |p: f64, psi: f64| enough && p < self.alpha && psi >= self.min_psi;
        let mut features: Vec<FeatureReport> = self
            .reference
            .sketches
            .iter()
            .zip(&self.counts)
            .enumerate()
            .map(|(index, (s, counts))| {
                let (psi, ks, p_value) = sketch_test(s, counts);
                FeatureReport {
                    name: if detail {
                        self.reference.features.name(index)
                    } else {
                        String::new()
                    },
                    index,
                    psi,
                    ks,
                    p_value,
                    drifted: moved(p_value, psi),
                }
            })
            .collect();
        if detail {
            features.sort_by(|a, b| {
                a.p_value
                    .total_cmp(&b.p_value)
                    .then(b.psi.total_cmp(&a.psi))
                    .then(a.index.cmp(&b.index))
            });
        }
        let live_mean = if n == 0 {
            0.0
        } else {
            self.confidence_sum / nf
        };
        let (classes, confidence, output) = match &self.reference.outputs {
            OutputSummary::None => (None, None, None),
            OutputSummary::Classes {
                proportions,
                confidence,
                confidence_mean,
            } => {
                let class_psi = psi(proportions, m, &self.classes, n);
                let (chi2, p) = chi_square(proportions, m, &self.classes, n);
                let p_value = adjust(p);
                let (cpsi, ks, cp) = sketch_test(confidence, &self.outputs);
                (
                    Some(ClassReport {
                        psi: class_psi,
                        chi2,
                        p_value,
                        drifted: moved(p_value, class_psi),
                        reference: proportions.clone(),
                        live: self
                            .classes
                            .iter()
                            .map(|&c| c as f64 / nf.max(1.0))
                            .collect(),
                    }),
                    Some(OutputReport {
                        psi: cpsi,
                        ks,
                        p_value: cp,
                        drifted: moved(cp, cpsi),
                        reference_mean: Some(*confidence_mean),
                        live_mean,
                    }),
                    None,
                )
            }
            OutputSummary::Value(s) => {
                let (psi, ks, p_value) = sketch_test(s, &self.outputs);
                let report = OutputReport {
                    psi,
                    ks,
                    p_value,
                    drifted: moved(p_value, psi),
                    reference_mean: None,
                    live_mean,
                };
                (None, None, Some(report))
            }
        };
        let mut p_value = features.iter().map(|f| f.p_value).fold(1.0, f64::min);
        let mut drifted = features.iter().any(|f| f.drifted);
        if let Some(c) = &classes {
            p_value = p_value.min(c.p_value);
            drifted |= c.drifted;
        }
        for o in confidence.iter().chain(&output) {
            p_value = p_value.min(o.p_value);
            drifted |= o.drifted;
        }
        Report {
            drifted,
            ready: self.obs.len() == self.window,
            observed: self.obs.len(),
            window: self.window,
            seen: self.seen,
            rejected: self.rejected,
            psi: features.iter().map(|f| f.psi).fold(0.0, f64::max),
            p_value,
            moved: features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| f.name.clone())
                .collect(),
            features,
            classes,
            confidence,
            output,
            alpha: self.alpha,
            min_psi: self.min_psi,
        }
    }

    /// The report when the verdict has just turned to drift since the last call (then not again
    /// until the window is quiet once more): what `onDrift` callbacks are given.
    pub fn drift_started(&mut self) -> Option<Report> {
        let drifted = self.evaluate(false).drifted;
        let started = drifted && !self.was_drifted;
        self.was_drifted = drifted;
        started.then(|| self.report())
    }
}

impl Report {
    /// The report as JSON, the form both bindings hand out.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("reports serialise")
    }
}
