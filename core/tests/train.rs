//! The fit loop end to end: learning, determinism, checkpoints, early stopping, interruption, errors.

use kiln_core::nn::LayerSpec;
use kiln_core::optim::{OptimizerSpec, Schedule};
use kiln_core::train::{Control, EarlyStopping, Event, FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{datasets, KilnError, Model, Tensor};

/// An MLP for the spirals, with batch norm unless `plain` (batch norm's noise at batch 16 slows this
/// tiny problem down; its exactness is checked against PyTorch in grad_fixtures.rs).
fn mlp_with(seed: u64, dropout: f32, plain: bool) -> Model {
    let bn = if plain {
        ""
    } else {
        r#"{"type":"BatchNorm1d","num_features":64},"#
    };
    let layers = LayerSpec::list_from_json(&format!(
        r#"[{{"type":"Linear","in_features":2,"out_features":64}},{bn}{{"type":"Tanh"}},
            {{"type":"Dropout","p":{dropout}}},{{"type":"Linear","in_features":64,"out_features":64}},{{"type":"Tanh"}},
            {{"type":"Linear","in_features":64,"out_features":2}}]"#
    ))
    .unwrap();
    let mut m = Model::new(&layers, seed).unwrap();
    let adam = OptimizerSpec::Adam {
        lr: 1e-2,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    m.compile(
        &adam,
        Loss::from_name("cross_entropy").unwrap(),
        vec![Metric::Accuracy],
    )
    .unwrap();
    m
}

fn mlp(seed: u64, dropout: f32) -> Model {
    mlp_with(seed, dropout, false)
}

/// 400 spiral points in a scrambled order, so a validation split from the end sees the whole spiral.
fn spirals() -> (Tensor, Targets) {
    let (x, y) = datasets::two_spirals(200, 0.0, 3);
    let order: Vec<usize> = (0..400).map(|i| (i * 97) % 400).collect();
    (
        x.select(ndarray::Axis(0), &order),
        Targets::Classes(order.iter().map(|&i| y[i]).collect()),
    )
}

fn cfg(epochs: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: 16,
        ..FitConfig::default()
    }
}

#[test]
fn learns_spirals_with_validation_split() {
    let (x, y) = spirals();
    let mut m = mlp_with(0, 0.0, true);
    let h = m
        .fit(
            x.view(),
            &y,
            None,
            &FitConfig {
                validation_split: 0.2,
                ..cfg(60)
            },
            &mut Hooks::default(),
        )
        .unwrap();
    assert_eq!(h.epochs, 60);
    assert_eq!(h.history["val_accuracy"].len(), 60);
    assert!(
        h.history["loss"][59] < h.history["loss"][0] / 2.0,
        "{:?}",
        h.history["loss"]
    );
    assert!(
        h.history["val_accuracy"][59] > 0.85,
        "{:?}",
        h.history["val_accuracy"]
    );
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let (x, y) = spirals();
    let run = |seed| {
        let mut m = mlp(seed, 0.3);
        m.fit(x.view(), &y, None, &cfg(3), &mut Hooks::default())
            .unwrap();
        m.flat_params()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn checkpoint_round_trip_predicts_identically() {
    let (x, y) = spirals();
    let mut m = mlp(1, 0.0);
    m.fit(x.view(), &y, None, &cfg(2), &mut Hooks::default())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.kiln");
    m.save(&path).unwrap();
    let mut back = Model::load(&path).unwrap();
    assert_eq!(
        back.predict(x.view(), 64).unwrap(),
        m.predict(x.view(), 64).unwrap()
    );
    assert_eq!(back.input_shape(), Some(vec![2]));
    // no temporary file is left behind
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let bytes = std::fs::read(&path).unwrap();
    let e = Model::from_bytes(&bytes[..bytes.len() / 2]).err().unwrap();
    assert!(matches!(e, KilnError::Checkpoint(_)), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn early_stopping_restores_the_best_weights() {
    let (x, y) = spirals();
    let mut m = mlp(2, 0.0);
    // an absurd learning rate makes validation loss worse quickly
    m.optimizer_mut().unwrap().set_lr(5.0);
    let es = EarlyStopping {
        monitor: "val_loss".into(),
        patience: 1,
        min_delta: 0.0,
        restore_best_weights: true,
    };
    let mut best_seen = f64::INFINITY;
    let mut weights_seen = Vec::new();
    let mut track = |e: &Event, model: &mut Model| {
        if let Event::EpochEnd { logs, .. } = e {
            best_seen = best_seen.min(logs["val_loss"]);
            // the hook holds the model as it stands: what a binding lends to user callbacks
            weights_seen.push(model.flat_params());
        }
        Control::Continue
    };
    let h = m
        .fit(
            x.view(),
            &y,
            Some((x.view(), &y)),
            &FitConfig {
                early_stopping: Some(es),
                ..cfg(30)
            },
            &mut Hooks {
                on_event: Some(&mut track),
                after_step: None,
                on_gradient: None,
            },
        )
        .unwrap();
    assert_eq!(h.stopped_by.as_deref(), Some("early_stopping"));
    assert_eq!(weights_seen.len(), h.epochs);
    assert_ne!(
        weights_seen[0], weights_seen[1],
        "the hook saw the weights move"
    );
    let now = m.evaluate(x.view(), &y, 64).unwrap()["loss"];
    assert!(
        (now - best_seen).abs() < 1e-4,
        "restored loss {now} vs best {best_seen}"
    );
}

#[test]
fn a_callback_can_stop_mid_epoch_and_weights_are_kept() {
    let (x, y) = spirals();
    let mut m = mlp(3, 0.0);
    let before = m.flat_params();
    let mut batches = 0;
    let mut stop = |e: &Event, _: &mut Model| {
        if let Event::BatchEnd { .. } = e {
            batches += 1;
        }
        if batches == 5 {
            Control::Stop
        } else {
            Control::Continue
        }
    };
    let h = m
        .fit(
            x.view(),
            &y,
            None,
            &cfg(5),
            &mut Hooks {
                on_event: Some(&mut stop),
                after_step: None,
                on_gradient: None,
            },
        )
        .unwrap();
    assert_eq!((h.stopped_by.as_deref(), h.epochs), (Some("callback"), 0));
    assert_ne!(m.flat_params(), before, "five steps were taken and kept");
}

#[test]
fn gradient_hook_sees_and_can_change_the_flat_gradient() {
    let (x, y) = spirals();
    let mut m = mlp(4, 0.0);
    let before = m.flat_params();
    let n = before.len();
    let mut zero = |g: &mut [f32]| {
        assert_eq!(g.len(), n);
        assert!(g.iter().any(|v| *v != 0.0));
        g.fill(0.0);
    };
    let sgd = OptimizerSpec::SGD {
        lr: 0.1,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    m.compile(&sgd, Loss::from_name("cross_entropy").unwrap(), vec![])
        .unwrap();
    m.fit(
        x.view(),
        &y,
        None,
        &cfg(1),
        &mut Hooks {
            on_event: None,
            after_step: None,
            on_gradient: Some(&mut zero),
        },
    )
    .unwrap();
    assert_eq!(
        m.flat_params(),
        before,
        "zeroed gradients leave SGD weights unchanged"
    );
    let mut flat = before.clone();
    flat[0] += 1.0;
    m.set_flat_params(&flat).unwrap();
    assert_eq!(m.flat_params()[0], before[0] + 1.0);
    assert!(m.set_flat_params(&flat[1..]).is_err());
}

#[test]
fn regression_with_schedule_and_clipping() {
    let layers = LayerSpec::list_from_json(r#"[{"type":"Linear","in_features":3,"out_features":16},{"type":"GELU"},{"type":"Linear","in_features":16,"out_features":1}]"#).unwrap();
    let mut m = Model::new(&layers, 0).unwrap();
    let sgd = OptimizerSpec::SGD {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 1e-4,
    };
    m.compile(&sgd, Loss::from_name("mse").unwrap(), vec![Metric::Mae])
        .unwrap();
    let x = datasets::two_spirals(100, 0.0, 0).0;
    let x = ndarray::concatenate(
        ndarray::Axis(1),
        &[x.view(), x.slice(ndarray::s![.., 0..1]).into_dyn()],
    )
    .unwrap();
    let y: Tensor = x
        .map_axis(ndarray::Axis(1), |r| 2.0 * r[0] - r[1] + 0.5)
        .insert_axis(ndarray::Axis(1));
    let c = FitConfig {
        clip_grad_norm: Some(1.0),
        schedule: Some(Schedule::Cosine {
            t_max: 30,
            eta_min: 0.0,
        }),
        ..cfg(30)
    };
    let h = m
        .fit(
            x.view(),
            &Targets::Values(y.clone()),
            None,
            &c,
            &mut Hooks::default(),
        )
        .unwrap();
    assert!(h.history["mae"][29] < 0.1, "{:?}", h.history["mae"]);
    assert!(h.history["lr"][29] < 0.01);
}

#[test]
fn bad_input_gives_clear_errors() {
    let (x, y) = spirals();
    let mut m = mlp(5, 0.0);
    let e = m
        .fit(
            x.view(),
            &Targets::Classes(vec![0; 3]),
            None,
            &cfg(1),
            &mut Hooks::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("400 input samples but 3 targets"), "{e}");
    let mut bad = x.clone();
    bad[[3, 1]] = f32::NAN;
    assert!(m
        .fit(bad.view(), &y, None, &cfg(1), &mut Hooks::default())
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    let e = m
        .fit(
            x.view(),
            &Targets::Classes(vec![5; 400]),
            None,
            &cfg(1),
            &mut Hooks::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 5") && e.contains("2 classes"), "{e}");
    let wide = Tensor::zeros(vec![4, 3]);
    let e = m.predict(wide.view(), 8).unwrap_err().to_string();
    // failed fits leave the input shape unknown, so the first layer names both shapes
    assert!(
        e.contains("Linear") && e.contains("[4, 3]") && e.contains("[64, 2]"),
        "{e}"
    );
    let mut fresh = Model::new(&m.net.specs(), 0).unwrap();
    assert!(fresh
        .fit(x.view(), &y, None, &cfg(1), &mut Hooks::default())
        .unwrap_err()
        .to_string()
        .contains("not compiled"));
}

#[test]
fn exploding_loss_names_epoch_and_batch() {
    let (x, y) = spirals();
    let big = x.mapv(|v| v * 1e30);
    let layers =
        LayerSpec::list_from_json(r#"[{"type":"Linear","in_features":2,"out_features":2}]"#)
            .unwrap();
    let mut m = Model::new(&layers, 0).unwrap();
    m.compile(
        &OptimizerSpec::SGD {
            lr: 1e10,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        Loss::from_name("mse").unwrap(),
        vec![],
    )
    .unwrap();
    let yv = Targets::Values(Tensor::zeros(vec![400, 2]));
    let _ = y;
    let e = m
        .fit(big.view(), &yv, None, &cfg(3), &mut Hooks::default())
        .unwrap_err();
    assert!(
        matches!(e, KilnError::NonFiniteLoss { epoch: 1, .. }),
        "{e}"
    );
}

/// A save killed mid-write leaves `.NAME.tmp-PID`; the next save of the same path removes those of
/// processes that are gone (and keeps another live process's, and other files).
#[test]
fn saves_clean_up_temporaries_left_by_killed_saves() {
    let dir = std::env::temp_dir().join(format!("kiln-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.kiln");
    let dead = dir.join(".m.kiln.tmp-4000000000"); // beyond any pid_max: no such process
    let live = dir.join(format!(".m.kiln.tmp-{}", 1)); // init is always running
    let other = dir.join(".n.kiln.tmp-4000000000"); // another checkpoint's
    for f in [&dead, &live, &other] {
        std::fs::write(f, b"half a checkpoint").unwrap();
    }
    let layers =
        LayerSpec::list_from_json(r#"[{"type":"Linear","in_features":2,"out_features":1}]"#)
            .unwrap();
    let model = Model::new(&layers, 0).unwrap();
    model.save(&path).unwrap();
    assert!(!dead.exists(), "the killed save's temporary is gone");
    assert!(
        live.exists() && other.exists(),
        "a live writer's and another path's are kept"
    );
    Model::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
