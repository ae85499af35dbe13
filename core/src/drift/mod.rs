//! Drift: does what a deployed model sees still look like what it was trained on?
//!
//! At export, [`Reference::build`] summarises the training inputs (a quantile sketch per feature:
//! every value of a flat input, or per channel and 3×3 regions for images) and the model's own
//! outputs on them (the predicted-class mix and the top-1 confidence), and export stores
//! [`Reference::encode`]'s text as the `kiln.drift` metadata. Where the model runs, a
//! [`DriftMonitor`] keeps a sliding window of live examples as bin counts against those sketches
//! and reports PSI and a two-sample Kolmogorov–Smirnov test per feature, a chi-square test on the
//! class mix, a KS test on confidence, and one verdict. Python and wasm both run this code, so the
//! same stream gives the same report. [`Feedback`] is the file of examples a user labelled there.
//!
//! ```
//! use kiln_core::drift::{DriftMonitor, Reference};
//! let train: Vec<f32> = (0..400).map(|i| (i % 20) as f32).collect(); // 100 examples of 4 values
//! let reference = Reference::decode(&Reference::build(&[4], &train, None)?.encode())?;
//! let mut monitor = DriftMonitor::new(reference, 50)?;
//! let live: Vec<f32> = (0..200).map(|i| (i % 20) as f32 + 8.0).collect();
//! monitor.observe_batch(&live, &[50, 4], None)?;
//! assert!(monitor.report().drifted);
//! # Ok::<(), kiln_core::KilnError>(())
//! ```

mod base64;
mod features;
mod feedback;
mod monitor;
mod reference;
mod stats;

pub use features::Features;
pub use feedback::{model_version, Feedback};
pub use monitor::{
    ClassReport, DriftMonitor, FeatureReport, OutputReport, Report, DEFAULT_ALPHA, DEFAULT_MIN_PSI,
    DEFAULT_WINDOW, MAX_WINDOW,
};
pub use reference::{missing, top1, OutputSummary, Reference, Sketch, BINS, METADATA_KEY};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn normal(rng: &mut ChaCha8Rng) -> f32 {
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    /// `n` examples of 8 standard normal features, with 3-class logits that follow feature 0.
    fn data(rng: &mut ChaCha8Rng, n: usize, shift: impl Fn(&mut [f32])) -> (Vec<f32>, Vec<f32>) {
        let mut x = Vec::with_capacity(n * 8);
        let mut out = Vec::with_capacity(n * 3);
        for _ in 0..n {
            let mut row: Vec<f32> = (0..8).map(|_| normal(rng)).collect();
            shift(&mut row);
            out.extend([row[0] * 2.0, 0.0, -row[0] * 2.0 + row[1]]);
            x.extend(row);
        }
        (x, out)
    }

    fn reference(rng: &mut ChaCha8Rng) -> Reference {
        let (x, out) = data(rng, 2000, |_| {});
        Reference::build(&[8], &x, Some((&out, &[2000, 3]))).unwrap()
    }

    /// Share of fresh windows of `window` examples whose report says drift.
    fn alarm_rate(
        r: &Reference,
        rng: &mut ChaCha8Rng,
        windows: usize,
        window: usize,
        shift: impl Fn(&mut [f32]) + Copy,
    ) -> f64 {
        let mut alarms = 0;
        for _ in 0..windows {
            let mut m = DriftMonitor::new(r.clone(), window).unwrap();
            let (x, out) = data(rng, window, shift);
            m.observe_batch(&x, &[window, 8], Some((&out, &[window, 3])))
                .unwrap();
            let drifted = m.report().drifted;
            // the quick verdict onDrift uses after each observation is the report's
            assert_eq!(m.drift_started().is_some(), drifted);
            alarms += drifted as usize;
        }
        alarms as f64 / windows as f64
    }

    #[test]
    fn in_distribution_windows_stay_quiet() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let r = reference(&mut rng);
        let rate = alarm_rate(&r, &mut rng, 400, 200, |_| {});
        eprintln!("false alarms: {rate} of 400 windows of 200");
        assert!(rate <= 0.02, "false-alarm rate {rate}");
    }

    #[test]
    fn three_kinds_of_shift_are_caught_in_a_window_of_200() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let r = reference(&mut rng);
        // a feature's mean moves by 0.5 sd; a feature's spread doubles; the model's inputs move
        // so that its class mix changes (feature 0 → class mix and confidence)
        let mean = alarm_rate(&r, &mut rng, 100, 200, |x| x[5] += 0.5);
        let spread = alarm_rate(&r, &mut rng, 100, 200, |x| x[3] *= 2.0);
        let classes = alarm_rate(&r, &mut rng, 100, 200, |x| x[0] = x[0].abs());
        let big_mean = alarm_rate(&r, &mut rng, 100, 200, |x| x[5] += 0.75);
        eprintln!("detected: mean +0.5 sd {mean}, +0.75 sd {big_mean}, spread x2 {spread}, class mix {classes}");
        assert!(mean >= 0.8 && big_mean >= 0.99, "{mean} {big_mean}");
        assert!(spread >= 0.95 && classes >= 0.95, "{spread} {classes}");
    }

    #[test]
    fn the_report_names_the_feature_that_moved() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let r = reference(&mut rng);
        let mut m = DriftMonitor::new(r, 200).unwrap();
        let (x, out) = data(&mut rng, 200, |x| x[6] += 1.0);
        m.observe_batch(&x, &[200, 8], Some((&out, &[200, 3])))
            .unwrap();
        let rep = m.report();
        assert!(rep.drifted && rep.ready);
        assert_eq!(rep.moved, vec!["x[6]".to_string()]);
        assert_eq!(rep.features[0].name, "x[6]");
        assert!(rep.psi > 0.25 && rep.features[0].psi == rep.psi);
        assert!(!rep.classes.unwrap().drifted);
    }

    #[test]
    fn the_window_slides_and_forgets() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let r = reference(&mut rng);
        let mut m = DriftMonitor::new(r, 100).unwrap();
        let (x, out) = data(&mut rng, 100, |x| x[2] += 2.0);
        m.observe_batch(&x, &[100, 8], Some((&out, &[100, 3])))
            .unwrap();
        let started = m.drift_started().expect("the shifted window drifted");
        assert_eq!(started.to_json(), m.report().to_json(), "the full report");
        assert!(m.drift_started().is_none(), "fires once per episode");
        let (x, out) = data(&mut rng, 100, |_| {});
        m.observe_batch(&x, &[100, 8], Some((&out, &[100, 3])))
            .unwrap();
        let rep = m.report();
        assert!(!rep.drifted, "{:?}", rep.moved);
        assert_eq!((rep.observed, rep.seen), (100, 200));
    }

    #[test]
    fn no_verdict_before_ten_observations() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let r = reference(&mut rng);
        let mut m = DriftMonitor::new(r, 100).unwrap();
        let (x, out) = data(&mut rng, 10, |x| x[1] += 5.0);
        m.observe_batch(&x[..9 * 8], &[9, 8], Some((&out[..27], &[9, 3])))
            .unwrap();
        let early = m.report();
        assert!(
            !early.drifted && early.features[0].p_value < 1e-3,
            "{early:?}"
        );
        m.observe_batch(&x[9 * 8..], &[1, 8], Some((&out[27..], &[1, 3])))
            .unwrap();
        assert!(m.report().drifted);
    }

    #[test]
    fn bad_observations_are_refused_and_leave_the_window_alone() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let r = reference(&mut rng);
        let mut m = DriftMonitor::new(r, 50).unwrap();
        let (x, out) = data(&mut rng, 10, |_| {});
        m.observe_batch(&x, &[10, 8], Some((&out, &[10, 3])))
            .unwrap();
        let before = m.report().to_json();
        let mut bad = x.clone();
        bad[8 * 3 + 2] = f32::NAN;
        let e = m
            .observe_batch(&bad, &[10, 8], Some((&out, &[10, 3])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("observation 3") && e.contains("position 2"),
            "{e}"
        );
        let e = m
            .observe_batch(&x, &[8, 10], Some((&out, &[8, 3])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[8, 10]") && e.contains("[batch, 8]"), "{e}");
        let e = m.observe_batch(&x, &[10, 8], None).unwrap_err().to_string();
        assert!(e.contains("outputs"), "{e}");
        let mut nan_out = out.clone();
        nan_out[4] = f32::INFINITY;
        assert!(m
            .observe_batch(&x, &[10, 8], Some((&nan_out, &[10, 3])))
            .is_err());
        let after = m.report();
        assert_eq!(after.rejected, 38); // 10 + 8 + 10 + 10
                                        // the window is what it was: only the rejected count moved
        let got = after.to_json().replace("\"rejected\":38", "\"rejected\":0");
        assert_eq!(got, before);
        assert!(DriftMonitor::new(m.reference().clone(), 0).is_err());
    }
}
