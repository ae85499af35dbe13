//! Quantization, pruning and distillation on a small CNN trained on a synthetic image task: the int8
//! ONNX runs in tract close to the float model, pruning hits its sparsity and shrinking keeps the
//! outputs, distillation teaches a smaller student, and bad input gives clear errors.
#![cfg(feature = "onnx")]

use kiln_core::nn::LayerSpec;
use kiln_core::onnx::tract::{TensorData, TractSession};
use kiln_core::optim::OptimizerSpec;
use kiln_core::optimize::{
    distill, fit_masked, make_permanent, prune, quantize_onnx, sparsity_report, Calibration,
    DistillConfig, PruneOptions, PruneScope, PruningSchedule, QuantizeMode, QuantizeOptions,
};
use kiln_core::train::{EarlyStopping, Event, FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{KilnError, Model, Tensor};
use rand::{Rng, SeedableRng};

/// 1×8×8 noisy images with a bright 3×3 blob in one of four quadrants; the label is the quadrant.
fn blobs(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut x = Tensor::zeros(vec![n, 1, 8, 8]);
    let mut y = Vec::new();
    for i in 0..n {
        let q = rng.random_range(0..4usize);
        let (r0, c0) = (
            (q / 2) * 4 + rng.random_range(0..2),
            (q % 2) * 4 + rng.random_range(0..2),
        );
        for r in 0..8 {
            for c in 0..8 {
                let blob = (r0..r0 + 3).contains(&r) && (c0..c0 + 3).contains(&c);
                x[[i, 0, r, c]] = rng.random_range(0.0..0.4) + if blob { 1.0 } else { 0.0 };
            }
        }
        y.push(q);
    }
    (x, y)
}

fn cnn(channels: usize, hidden: usize, seed: u64) -> Model {
    let json = format!(
        r#"[{{"type":"Conv2d","in_channels":1,"out_channels":{channels},"kernel_size":[3,3],"padding":[1,1]}},
            {{"type":"ReLU"}},{{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]}},{{"type":"Flatten"}},
            {{"type":"Linear","in_features":{},"out_features":{hidden}}},{{"type":"ReLU"}},
            {{"type":"Linear","in_features":{hidden},"out_features":4}}]"#,
        channels * 16
    );
    let mut m = Model::new(&LayerSpec::list_from_json(&json).unwrap(), seed).unwrap();
    let opt = OptimizerSpec::Adam {
        lr: 1e-2,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    m.compile(
        &opt,
        Loss::from_name("cross_entropy").unwrap(),
        vec![Metric::from_name("accuracy").unwrap()],
    )
    .unwrap();
    m
}

fn trained() -> (Model, Tensor, Vec<usize>) {
    let (x, y) = blobs(400, 1);
    let mut m = cnn(8, 32, 0);
    let cfg = FitConfig {
        epochs: 8,
        batch_size: 32,
        ..FitConfig::default()
    };
    m.fit(
        x.view(),
        &Targets::Classes(y.clone()),
        None,
        &cfg,
        &mut Hooks::default(),
    )
    .unwrap();
    (m, x, y)
}

fn accuracy(out: &Tensor, y: &[usize]) -> f32 {
    let hits = out
        .outer_iter()
        .zip(y)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            best == label
        })
        .count();
    hits as f32 / y.len() as f32
}

fn run(bytes: &[u8], x: &Tensor) -> Tensor {
    let sess = TractSession::from_bytes(bytes).unwrap();
    match sess
        .run(vec![TensorData::F32(x.clone())])
        .unwrap()
        .remove(0)
    {
        TensorData::F32(a) => a,
        other => panic!("output {:?}", other.dtype()),
    }
}

#[test]
fn int8_static_and_dynamic_run_in_tract_close_to_fp32() {
    let (mut m, x, y) = trained();
    let fp32 = m.predict(x.view(), 64).unwrap();
    let acc32 = accuracy(&fp32, &y);
    assert!(acc32 > 0.9, "the fp32 model learned the task: {acc32}");
    let float_bytes = kiln_core::onnx::export::export_onnx(&m, &Default::default()).unwrap();
    for (mode, calibration) in [
        (QuantizeMode::Static, Calibration::MinMax),
        (QuantizeMode::Static, Calibration::Percentile(99.99)),
        (QuantizeMode::Dynamic, Calibration::MinMax),
    ] {
        let opts = QuantizeOptions {
            mode,
            calibration,
            ..Default::default()
        };
        let q = quantize_onnx(&m, Some(x.view()), &opts).unwrap();
        let out = run(&q, &x);
        let acc8 = accuracy(&out, &y);
        assert!(
            (acc32 - acc8).abs() <= 0.02,
            "{mode:?} {calibration:?}: {acc32} vs {acc8}"
        );
        let worst = out
            .iter()
            .zip(fp32.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let spread = fp32.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            worst < 0.1 * spread,
            "{mode:?}: max diff {worst} vs output range {spread}"
        );
        assert!(
            worst > 0.0,
            "{mode:?}: quantization changed nothing, so it did not happen"
        );
        let ratio = float_bytes.len() as f32 / q.len() as f32;
        if std::env::var("KILN_DUMP").is_ok() {
            std::fs::write(format!("/tmp/q_{mode:?}.onnx"), &q).unwrap();
            std::fs::write("/tmp/q_fp32.onnx", &float_bytes).unwrap();
        }
        assert!(ratio > 3.0, "{mode:?}: only {ratio:.2}x smaller");
    }
}

#[test]
fn int8_convolutions_run_on_integer_kernels_in_kilns_engine() {
    use kiln_core::onnx::engine::{KilnSession, Value};
    let (m, x, y) = trained();
    for per_channel in [false, true] {
        let opts = QuantizeOptions {
            per_channel,
            ..Default::default()
        };
        let q = quantize_onnx(&m, Some(x.view()), &opts).unwrap();
        let kiln = KilnSession::from_bytes(&q).unwrap().ok().unwrap();
        let feeds = || vec![("input".to_string(), Value::F32(x.clone()))];
        let name = kiln.inputs()[0].name.clone();
        let feeds = || {
            let mut f = feeds();
            f[0].0 = name.clone();
            f
        };
        // the plan: the convolution on integers, quantizing its own input (the QDQ pair absorbed)
        // and pooling its output; both Linear layers on integers, their QDQ pairs (and the
        // flatten) absorbed too
        let (int8, steps) = kiln.profile(feeds(), &|| 0.0, true).unwrap();
        let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
        for step in ["QConv2d+relu+pool", "QLinear+relu", "QLinear "] {
            assert!(names.iter().any(|n| n.starts_with(step)), "{names:?}");
        }
        assert!(
            !names.iter().any(|n| ["FakeQuant", "MaxPool", "Reshape"]
                .iter()
                .any(|o| n.starts_with(o))),
            "{names:?}"
        );
        // inputs far past the calibrated range: every quantization saturates at one end or the
        // other, on integers as in float
        let wide = x.mapv(|v| v * 8.0 - 3.0);
        let wide_feeds = || vec![(name.clone(), Value::F32(wide.clone()))];
        let (a, _) = kiln.profile(wide_feeds(), &|| 0.0, true).unwrap();
        let (b, _) = kiln.profile(wide_feeds(), &|| 0.0, false).unwrap();
        let spread = b[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a[0]
            .iter()
            .zip(b[0].iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 0.02 * spread, "saturated: {worst} of {spread}");
        // every node on its own: float arithmetic on the dequantized weights and fake-quantized
        // activations, onnxruntime's QDQ semantics
        let (float, _) = kiln.profile(feeds(), &|| 0.0, false).unwrap();
        let (a, b) = (&int8[0], &float[0]);
        let close = a
            .iter()
            .zip(b.iter())
            .filter(|(a, b)| (*a - *b).abs() <= 1e-4 * (1.0 + b.abs()))
            .count();
        assert!(
            close as f32 >= 0.99 * a.len() as f32,
            "per_channel={per_channel}: {close} of {} agree",
            a.len()
        );
        let spread = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 0.02 * spread, "per_channel={per_channel}: {worst}");
        assert!((accuracy(a, &y) - accuracy(b, &y)).abs() <= 0.01);
    }
}

#[test]
fn quantize_rejects_bad_calibration_data() {
    let (m, _, _) = trained();
    let wrong = Tensor::zeros(vec![10, 1, 7, 7]);
    let e = quantize_onnx(&m, Some(wrong.view()), &QuantizeOptions::default()).unwrap_err();
    assert!(
        matches!(e, KilnError::Shape(_)) && e.to_string().contains("[1, 7, 7]"),
        "{e}"
    );
    let e = quantize_onnx(&m, None, &QuantizeOptions::default()).unwrap_err();
    assert!(e.to_string().contains("calibration"), "{e}");
    let mut nan = Tensor::zeros(vec![2, 1, 8, 8]);
    nan[[0, 0, 0, 0]] = f32::NAN;
    assert!(matches!(
        quantize_onnx(&m, Some(nan.view()), &QuantizeOptions::default()),
        Err(KilnError::Value(_))
    ));
}

#[test]
fn unstructured_pruning_hits_the_target_globally_and_per_layer() {
    let (m0, x, y) = trained();
    let mut m = Model::from_bytes(&m0.to_bytes().unwrap()).unwrap();
    for scope in [PruneScope::Global, PruneScope::PerLayer] {
        // each scope on a fresh copy: pruning never revives a zeroed weight
        m = Model::from_bytes(&m0.to_bytes().unwrap()).unwrap();
        let report = prune(
            &mut m,
            &PruneOptions {
                sparsity: 0.5,
                structured: false,
                scope,
            },
        )
        .unwrap();
        let (zeros, total) = report
            .iter()
            .fold((0, 0), |(z, t), l| (z + l.zeros, t + l.total));
        assert!(
            (zeros as f32 / total as f32 - 0.5).abs() < 0.01,
            "{scope:?}: {report:?}"
        );
        if scope == PruneScope::PerLayer {
            for l in &report {
                assert!(
                    (l.zeros as f32 / l.total as f32 - 0.5).abs() < 0.02,
                    "{l:?}"
                );
            }
        }
    }
    // half the weights gone, the easy task is still solved
    assert!(accuracy(&m.predict(x.view(), 64).unwrap(), &y) > 0.85);
    // fine-tuning with the mask keeps every pruned weight at zero and still learns
    let zeros_before: usize = sparsity_report(&m).unwrap().iter().map(|l| l.zeros).sum();
    let e = fit_masked(&mut m, x.view(), &Targets::Classes(y.clone()), 1, 32).unwrap_err();
    assert!(e.to_string().contains("not compiled"), "{e}");
    let adam = OptimizerSpec::Adam {
        lr: 1e-2,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    m.compile(&adam, Loss::from_name("cross_entropy").unwrap(), vec![])
        .unwrap();
    let losses = fit_masked(&mut m, x.view(), &Targets::Classes(y.clone()), 3, 32).unwrap();
    assert!(losses[2] <= losses[0] * 1.05, "{losses:?}");
    let zeros_after: usize = sparsity_report(&m).unwrap().iter().map(|l| l.zeros).sum();
    assert_eq!(zeros_before, zeros_after);
    for bad in [1.0, -0.1, f32::NAN] {
        let e = prune(
            &mut m,
            &PruneOptions {
                sparsity: bad,
                structured: false,
                scope: PruneScope::Global,
            },
        );
        assert!(matches!(e, Err(KilnError::Value(_))), "{bad}");
    }
}

/// Zeros among the Linear/Conv weights.
fn zeros(m: &Model) -> usize {
    sparsity_report(m).unwrap().iter().map(|l| l.zeros).sum()
}

#[test]
fn fit_prunes_gradually_on_schedule_and_holds_the_masks() {
    let (m0, x, y) = trained();
    let mut m = Model::from_bytes(&m0.to_bytes().unwrap()).unwrap();
    let adam = OptimizerSpec::Adam {
        lr: 5e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    m.compile(
        &adam,
        Loss::from_name("cross_entropy").unwrap(),
        vec![Metric::from_name("accuracy").unwrap()],
    )
    .unwrap();
    let total: usize = sparsity_report(&m).unwrap().iter().map(|l| l.total).sum();
    // 400 samples / 40 = 10 steps per epoch; masks raised every 5 steps from epoch 1 to epoch 3
    let cfg = FitConfig {
        epochs: 5,
        batch_size: 40,
        pruning: Some(PruningSchedule {
            target_sparsity: 0.8,
            start_epoch: 1,
            end_epoch: Some(3),
            frequency: Some(5),
            ..PruningSchedule::default()
        }),
        ..FitConfig::default()
    };
    // watch the real sparsity after every step: it only grows, and it grows in steps
    let mut seen: Vec<usize> = Vec::new();
    let mut watch = |m: &mut Model| seen.push(zeros(m));
    let h = m
        .fit(
            x.view(),
            &Targets::Classes(y.clone()),
            None,
            &cfg,
            &mut Hooks {
                after_step: Some(&mut watch),
                ..Hooks::default()
            },
        )
        .unwrap();
    assert_eq!(seen.len(), 50);
    assert!(
        seen[..9].iter().all(|&z| z == 0),
        "epoch 0 trains dense: {:?}",
        &seen[..10]
    );
    assert!(
        seen.windows(2).all(|w| w[1] >= w[0]),
        "pruned weights never come back"
    );
    let levels: std::collections::BTreeSet<usize> = seen.iter().copied().collect();
    assert!(levels.len() >= 4, "several rounds, not one: {levels:?}");
    let s = &h.history["sparsity"];
    assert_eq!(s.len(), 5);
    assert!(s[0] < 0.01 && s[1] > 0.3 && s[2] > s[1], "{s:?}");
    assert!(
        (s[3] - 0.8).abs() < 0.005 && (s[4] - 0.8).abs() < 0.005,
        "{s:?}"
    );
    assert_eq!(zeros(&m), seen[49]);
    assert!((zeros(&m) as f64 / total as f64 - 0.8).abs() < 0.005);
    // still solves the easy task at 80% zeros
    assert!(accuracy(&m.predict(x.view(), 64).unwrap(), &y) > 0.85);
}

#[test]
fn structured_pruning_in_fit_then_made_permanent() {
    let (mut m, x, y) = trained();
    let cfg = FitConfig {
        epochs: 3,
        batch_size: 32,
        validation_split: 0.25,
        early_stopping: Some(EarlyStopping {
            monitor: "val_loss".into(),
            patience: 10,
            min_delta: 0.0,
            restore_best_weights: true,
        }),
        pruning: Some(PruningSchedule {
            target_sparsity: 0.5,
            structured: true,
            end_epoch: Some(1),
            ..PruningSchedule::default()
        }),
        ..FitConfig::default()
    };
    let mut epochs = 0;
    let mut count = |e: &Event, _: &mut Model| {
        if matches!(e, Event::EpochEnd { .. }) {
            epochs += 1;
        }
        kiln_core::train::Control::Continue
    };
    m.fit(
        x.view(),
        &Targets::Classes(y.clone()),
        None,
        &cfg,
        &mut Hooks {
            on_event: Some(&mut count),
            ..Hooks::default()
        },
    )
    .unwrap();
    assert_eq!(epochs, 3);
    // even if early stopping put back an earlier (denser) epoch, the final masks hold
    let report = sparsity_report(&m).unwrap();
    assert_eq!(
        (report[0].zero_channels, report[1].zero_channels),
        (4, 16),
        "{report:?}"
    );
    let before = m.predict(x.view(), 64).unwrap();
    let small = make_permanent(&m).unwrap();
    assert!(small.net.num_trainable() < m.net.num_trainable() / 2 + 100);
    let after = Model::from_bytes(&small.to_bytes().unwrap())
        .unwrap()
        .predict(x.view(), 64)
        .unwrap();
    let diff = before
        .iter()
        .zip(after.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn pruning_schedules_that_do_not_fit_are_refused() {
    let (mut m, x, y) = trained();
    let weights = m.flat_params();
    for (bad, word) in [
        (
            PruningSchedule {
                target_sparsity: 1.0,
                ..Default::default()
            },
            "target_sparsity",
        ),
        (
            PruningSchedule {
                end_epoch: Some(2),
                ..Default::default()
            },
            "end_epoch",
        ),
        (
            PruningSchedule {
                start_epoch: 5,
                ..Default::default()
            },
            "start_epoch",
        ),
        (
            PruningSchedule {
                frequency: Some(0),
                ..Default::default()
            },
            "frequency",
        ),
    ] {
        let cfg = FitConfig {
            epochs: 2,
            pruning: Some(bad),
            ..FitConfig::default()
        };
        let e = m
            .fit(
                x.view(),
                &Targets::Classes(y.clone()),
                None,
                &cfg,
                &mut Hooks::default(),
            )
            .unwrap_err();
        assert!(
            matches!(e, KilnError::Value(_)) && e.to_string().contains(word),
            "{e}"
        );
    }
    assert_eq!(
        m.flat_params(),
        weights,
        "a refused schedule trains nothing"
    );
    let json: Result<FitConfig, _> = serde_json::from_str(r#"{"pruning": {"target": 0.5}}"#);
    assert!(json.is_err(), "unknown fields are refused");
    let cfg: FitConfig = serde_json::from_str(
        r#"{"pruning": {"target_sparsity": 0.5, "scope": "layer", "schedule": "constant"}}"#,
    )
    .unwrap();
    assert_eq!(cfg.pruning.unwrap().scope, PruneScope::PerLayer);
}

#[test]
fn structured_pruning_shrinks_the_model_without_changing_its_outputs() {
    let (mut m, x, _) = trained();
    let report = prune(
        &mut m,
        &PruneOptions {
            sparsity: 0.5,
            structured: true,
            scope: PruneScope::PerLayer,
        },
    )
    .unwrap();
    assert_eq!((report[0].zero_channels, report[0].channels), (4, 8));
    assert_eq!((report[1].zero_channels, report[1].channels), (16, 32));
    assert_eq!(report[2].zero_channels, 0, "the output layer is kept whole");
    let before = m.predict(x.view(), 64).unwrap();
    let mut small = make_permanent(&m).unwrap();
    let specs = small.net.specs();
    assert!(
        matches!(
            specs[0],
            LayerSpec::Conv2d {
                out_channels: 4,
                ..
            }
        ),
        "{specs:?}"
    );
    assert!(
        matches!(
            specs[4],
            LayerSpec::Linear {
                in_features: 64,
                out_features: 16,
                ..
            }
        ),
        "{specs:?}"
    );
    assert!(matches!(
        specs[6],
        LayerSpec::Linear {
            in_features: 16,
            out_features: 4,
            ..
        }
    ));
    let after = small.predict(x.view(), 64).unwrap();
    let diff = before
        .iter()
        .zip(after.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "shrinking changed the outputs by {diff}");
    assert!(small.net.num_trainable() < m.net.num_trainable() / 2 + 100);
    assert_eq!(sparsity_report(&small).unwrap()[0].zero_channels, 0);
}

#[test]
fn distillation_teaches_a_smaller_student() {
    let (mut teacher, x, y) = trained();
    let (xt, yt) = blobs(200, 2);
    let teacher_acc = accuracy(&teacher.predict(xt.view(), 64).unwrap(), &yt);
    let mut student = cnn(2, 8, 3);
    let cfg = DistillConfig {
        temperature: 4.0,
        alpha: 0.9,
        epochs: 10,
        batch_size: 32,
        seed: 0,
    };
    let report = distill(&mut teacher, &mut student, x.view(), Some(&y), &cfg).unwrap();
    assert!(report.loss[9] < report.loss[0] / 2.0, "{report:?}");
    assert!(
        report.soft_loss.iter().all(|&v| v >= -1e-4),
        "KL is never negative: {report:?}"
    );
    let student_acc = accuracy(&student.predict(xt.view(), 64).unwrap(), &yt);
    assert!(
        student_acc > teacher_acc - 0.1,
        "student {student_acc} vs teacher {teacher_acc}"
    );
    // soft targets alone (no labels) also train
    let mut s2 = cnn(2, 8, 4);
    let cfg1 = DistillConfig {
        alpha: 1.0,
        ..cfg.clone()
    };
    distill(&mut teacher, &mut s2, x.view(), None, &cfg1).unwrap();
    assert!(accuracy(&s2.predict(xt.view(), 64).unwrap(), &yt) > 0.8);
    // a student over 3 classes cannot learn from a 4-class teacher
    let json = r#"[{"type":"Flatten"},{"type":"Linear","in_features":64,"out_features":3}]"#;
    let mut wrong = Model::new(&LayerSpec::list_from_json(json).unwrap(), 0).unwrap();
    wrong
        .set_optimizer(&OptimizerSpec::SGD {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        })
        .unwrap();
    let e = distill(&mut teacher, &mut wrong, x.view(), Some(&y), &cfg).unwrap_err();
    assert!(
        matches!(e, KilnError::Shape(_)) && e.to_string().contains("[4]"),
        "{e}"
    );
    let e = distill(&mut teacher, &mut student, x.view(), None, &cfg).unwrap_err();
    assert!(e.to_string().contains("alpha"), "{e}");
}
