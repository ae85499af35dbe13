//! A digits-sized `fit` for profiling the training step (not a benchmark: `make bench` races PyTorch).
//! `cargo run --release -p kiln-core --example fit_profile -- cnn 30` (case `cnn` or `mlp`, epochs);
//! under `valgrind --tool=callgrind` use a few epochs.

use kiln_core::nn::LayerSpec;
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{Model, Tensor};
use ndarray::{Dimension, IxDyn};

const MLP: &str = r#"[{"type":"Linear","in_features":64,"out_features":128},{"type":"ReLU"},
    {"type":"Linear","in_features":128,"out_features":64},{"type":"ReLU"},{"type":"Linear","in_features":64,"out_features":10}]"#;
const CNN: &str = r#"[{"type":"Conv2d","in_channels":1,"out_channels":16,"kernel_size":[3,3],"padding":[1,1]},{"type":"ReLU"},
    {"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Conv2d","in_channels":16,"out_channels":32,"kernel_size":[3,3],"padding":[1,1]},
    {"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Flatten"},{"type":"Linear","in_features":128,"out_features":10}]"#;

fn main() -> kiln_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("cnn", |s| s.as_str());
    let epochs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let (layers, shape) = match case {
        "mlp" => (MLP, vec![1347, 64]),
        "cnn" => (CNN, vec![1347, 1, 8, 8]),
        other => panic!("case {other}: cnn or mlp"),
    };
    // digits-like pixels in [0, 1] and ten classes, from a fixed formula
    let x = Tensor::from_shape_fn(IxDyn(&shape), |d| {
        let s = d.slice();
        ((s[0] * 31 + s.iter().skip(1).sum::<usize>() * 7) % 17) as f32 / 16.0
    });
    let y: Vec<usize> = (0..shape[0]).map(|i| (i * 7) % 10).collect();
    let mut model = Model::new(&LayerSpec::list_from_json(layers)?, 0)?;
    let adam = OptimizerSpec::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    model.compile(
        &adam,
        Loss::from_name("cross_entropy")?,
        vec![Metric::Accuracy],
    )?;
    let cfg = FitConfig {
        epochs,
        batch_size: 32,
        validation_split: 0.0,
        ..FitConfig::default()
    };
    let start = std::time::Instant::now();
    let history = model.fit(
        x.view(),
        &Targets::Classes(y),
        None,
        &cfg,
        &mut Hooks::default(),
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{case}: {epochs} epochs, {:.0} samples/s, final loss {:.4}",
        (shape[0] * epochs) as f64 / secs,
        history.history["loss"].last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
