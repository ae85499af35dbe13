//! One training step (forward, backward, Adam) of the small models kiln is built for, and the GEMM
//! kernel in GFLOP/s. `cargo bench -p kiln-core` (or `make bench`, which also pits kiln against PyTorch).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_core::autograd::{gemm, Tape};
use kiln_core::nn::LayerSpec;
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{Loss, Targets};
use kiln_core::{Model, Tensor};
use ndarray::{Array2, Dimension, IxDyn};

const MLP: &str = r#"[{"type":"Linear","in_features":64,"out_features":128},{"type":"ReLU"},
    {"type":"Linear","in_features":128,"out_features":64},{"type":"ReLU"},{"type":"Linear","in_features":64,"out_features":10}]"#;
const CNN: &str = r#"[{"type":"Conv2d","in_channels":1,"out_channels":16,"kernel_size":[3,3],"padding":[1,1]},{"type":"ReLU"},
    {"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Conv2d","in_channels":16,"out_channels":32,"kernel_size":[3,3],"padding":[1,1]},
    {"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Flatten"},{"type":"Linear","in_features":128,"out_features":10}]"#;

fn step(model: &mut Model, x: &Tensor, y: &Targets, loss: &Loss) {
    let mut t = Tape::new(true, 0);
    let input = t.constant(x.clone());
    let out = model.net.forward_all(&mut t, &[input]).unwrap()[0];
    let l = loss.apply(&mut t, out, y).unwrap();
    t.backward(l).unwrap();
    model.net.zero_grad();
    model.net.collect_grads(&mut t);
    model.optimizer_step().unwrap();
}

fn train_steps(c: &mut Criterion) {
    let adam = OptimizerSpec::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
    };
    let loss = Loss::from_name("cross_entropy").unwrap();
    let y = Targets::Classes((0..32).map(|i| i % 10).collect());
    let mut group = c.benchmark_group("train_step_batch32");
    group.throughput(Throughput::Elements(32));
    for (name, layers, shape) in [
        ("mlp_64_128_64_10", MLP, vec![32, 64]),
        ("cnn_c16_c32_8x8", CNN, vec![32, 1, 8, 8]),
    ] {
        let mut model = Model::new(&LayerSpec::list_from_json(layers).unwrap(), 0).unwrap();
        model.compile(&adam, loss.clone(), vec![]).unwrap();
        let x = Tensor::from_shape_fn(IxDyn(&shape), |d| {
            (d.slice().iter().sum::<usize>() % 7) as f32 / 7.0
        });
        group.bench_function(name, |b| b.iter(|| step(&mut model, &x, &y, &loss)));
    }
    group.finish();
}

fn gemm_gflops(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    for n in [256usize, 512, 1024] {
        let a = Array2::<f32>::from_shape_fn((n, n), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.1);
        let b = a.t().to_owned();
        let mut out = Array2::<f32>::zeros((n, n));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64)); // elements/s = FLOP/s
        group.sample_size(if n >= 1024 { 10 } else { 30 });
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| gemm(1.0, &a.view(), &b.view(), 0.0, &mut out.view_mut()))
        });
    }
    group.finish();
}

criterion_group!(benches, train_steps, gemm_gflops);
criterion_main!(benches);
