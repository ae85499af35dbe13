//! Train a small MLP on two interleaved spirals and print loss and accuracy per epoch.
//! `cargo run --release -p kiln-core --example spirals`

use kiln_core::nn::LayerSpec;
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{Control, Event, FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{datasets, Model};

fn main() -> kiln_core::Result<()> {
    let (x, y) = datasets::two_spirals(500, 0.02, 1);
    let layers = LayerSpec::list_from_json(
        r#"[{"type":"Linear","in_features":2,"out_features":64},{"type":"Tanh"},
            {"type":"Linear","in_features":64,"out_features":64},{"type":"Tanh"},
            {"type":"Linear","in_features":64,"out_features":2}]"#,
    )?;
    let mut model = Model::new(&layers, 0)?;
    let adam = OptimizerSpec::Adam {
        lr: 1e-2,
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
        epochs: 60,
        batch_size: 32,
        validation_split: 0.0,
        ..FitConfig::default()
    };
    let mut report = |e: &Event, _: &mut Model| {
        if let Event::EpochEnd { epoch, logs } = e {
            println!(
                "epoch {epoch:3}  loss {:.4}  accuracy {:.3}",
                logs["loss"], logs["accuracy"]
            );
        }
        Control::Continue
    };
    let history = model.fit(
        x.view(),
        &Targets::Classes(y.clone()),
        None,
        &cfg,
        &mut Hooks {
            on_event: Some(&mut report),
            after_step: None,
            on_gradient: None,
        },
    )?;
    let logs = model.evaluate(x.view(), &Targets::Classes(y), 256)?;
    let sps = history.samples_per_sec.iter().copied().fold(0.0, f64::max);
    println!(
        "final accuracy {:.3} ({:.0} samples/s)",
        logs["accuracy"], sps
    );
    if logs["accuracy"] < 0.95 {
        eprintln!("accuracy below 95%: something is wrong");
        std::process::exit(1);
    }
    Ok(())
}
