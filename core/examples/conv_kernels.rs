//! Each native convolution kernel on the ResNet-8's and the digits CNN's geometries, in GFLOP/s
//! (the fastest of 15 timed batches by this thread's CPU time, so that a busy host's steal time stays out, one thread): what kiln's engine's plan runs (`PackedConv::best`,
//! the channel tile where it suits) beside every tile kernel this CPU has.
//! `cargo run --release -p kiln-core --example conv_kernels -- [BATCH] [ROW]` (ROW: only the
//! rows whose label contains it, e.g. `"64->64"`, and only the plan's kernel: for `perf record`)
#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_ms;

use kiln_core::autograd::Window;
use kiln_core::kernels::{Kernel, PackedConv};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(64, |b| b.parse().expect("a batch size"));
    let only = std::env::args().nth(2);
    // (in channels, size, out channels, kernel, stride, padding, residual)
    let convs = [
        (3, 32, 16, 3, 1, 1, false),
        (16, 32, 16, 3, 1, 1, false),
        (16, 32, 16, 3, 1, 1, true),
        (16, 32, 32, 3, 2, 1, false),
        (16, 32, 32, 1, 2, 0, false),
        (32, 16, 32, 3, 1, 1, true),
        (32, 16, 64, 3, 2, 1, false),
        (64, 8, 64, 3, 1, 1, true),
        (1, 8, 16, 3, 1, 1, false),
        (16, 4, 32, 3, 1, 1, false),
    ];
    println!("batch {n}, GFLOP/s: plan (best) then each tile kernel");
    for (c, h, o, k, s, p, res) in convs {
        let win = Window {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
        };
        let w: Vec<f32> = (0..o * c * k * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.01 - 0.06)
            .collect();
        let bias: Vec<f32> = (0..o).map(|i| i as f32 * 0.01).collect();
        let x: Vec<f32> = (0..n * c * h * h)
            .map(|i| ((i * 7919) % 17) as f32 / 16.0)
            .collect();
        let shape = [n, c, h, h];
        let mut line = format!(
            "{c:>3}->{o:<3} {h:>2}x{h:<2} k{k} s{s}{}",
            if res { " +res" } else { "     " }
        );
        if only
            .as_ref()
            .is_some_and(|row| !line.contains(row.as_str()))
        {
            continue;
        }
        let mut convs = vec![PackedConv::best(&w, &[o, c, k, k], Some(&bias), win, 1).unwrap()];
        for &kern in Kernel::available().iter().filter(|_| only.is_none()) {
            convs.push(
                PackedConv::with_kernel(&w, &[o, c, k, k], Some(&bias), win, 1, kern).unwrap(),
            );
        }
        for conv in &convs {
            let out_shape = conv.output_shape(&shape).unwrap();
            let len: usize = out_shape.iter().product();
            let mut out = vec![0f32; len];
            let r = vec![0.5f32; len];
            let residual = res.then_some(&r[..]);
            let flops = 2.0 * (len * c * k * k) as f64;
            let reps = ((2e8 / flops) as usize).max(1);
            let best = (0..16)
                .map(|_| {
                    let t = thread_cpu_ms();
                    for _ in 0..reps {
                        conv.run(&x, &shape, residual, true, &mut out).unwrap();
                    }
                    (thread_cpu_ms() - t) * 1e-3 / reps as f64
                })
                .skip(1)
                .fold(f64::INFINITY, f64::min);
            line += &format!("  {:>6.1}", flops / best / 1e9);
        }
        println!("{line}");
    }
    let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
    println!("columns: plan, {}", names.join(", "));
}
