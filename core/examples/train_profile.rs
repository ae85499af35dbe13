//! Training steps of the digits CNN (the training benchmark's, batch 32), timed natively:
//! `cargo run --release --example train_profile -- [STEPS] [cpu]` prints the median µs per step
//! over rounds of 50 steps (`cpu`: this thread's CPU time, not the wall clock). For profilers
//! and A/B runs of the convolution's training path.
use kiln_core::autograd::Tape;
use kiln_core::nn::LayerSpec;
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{Loss, Targets};
use kiln_core::{Model, Tensor};
use ndarray::{Dimension, IxDyn};
use std::time::Instant;

const CNN: &str = r#"[{"type":"Conv2d","in_channels":1,"out_channels":16,"kernel_size":[3,3],"padding":[1,1]},{"type":"ReLU"},
    {"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Conv2d","in_channels":16,"out_channels":32,"kernel_size":[3,3],"padding":[1,1]},
    {"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Flatten"},{"type":"Linear","in_features":128,"out_features":10}]"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: usize = args
        .next()
        .map_or(2000, |s| s.parse().expect("a step count"));
    let cpu = args.next().is_some_and(|a| a == "cpu");
    let adam = OptimizerSpec::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    let loss = Loss::from_name("cross_entropy").unwrap();
    let y = Targets::Classes((0..32).map(|i| i % 10).collect());
    let mut model = Model::new(&LayerSpec::list_from_json(CNN).unwrap(), 0).unwrap();
    model.compile(&adam, loss.clone(), vec![]).unwrap();
    let x = Tensor::from_shape_fn(IxDyn(&[32, 1, 8, 8]), |d| {
        (d.slice().iter().sum::<usize>() % 7) as f32 / 7.0
    });
    let start = Instant::now();
    let now = || match cpu {
        true => thread_cpu_ms(),
        false => start.elapsed().as_secs_f64() * 1e3,
    };
    let mut rounds = Vec::new();
    for _ in 0..steps.div_ceil(50) {
        let t0 = now();
        for _ in 0..50 {
            let mut t = Tape::new(true, 0);
            let input = t.constant(x.clone());
            let out = model.net.forward_all(&mut t, &[input]).unwrap()[0];
            let l = loss.apply(&mut t, out, &y).unwrap();
            t.backward(l).unwrap();
            model.net.zero_grad();
            model.net.collect_grads(&mut t);
            model.optimizer_step().unwrap();
        }
        rounds.push((now() - t0) / 50.0 * 1e3);
    }
    rounds.sort_by(f64::total_cmp);
    let med = rounds[rounds.len() / 2];
    println!(
        "{med:.1} µs/step median ({} rounds of 50, min {:.1}), {:.0} samples/s",
        rounds.len(),
        rounds[0],
        32.0 / med * 1e6
    );
}

/// This thread's CPU time in milliseconds (Linux's `CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ms() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; 3 is CLOCK_THREAD_CPUTIME_ID.
    let ok = unsafe { clock_gettime(3, &mut t) } == 0;
    assert!(ok, "clock_gettime");
    t.sec as f64 * 1e3 + t.nsec as f64 * 1e-6
}
