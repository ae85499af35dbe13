//! Per-step times of kiln's engine on a model, and the convolution kernel alone, in wasm: the
//! engine's own plan timed by the host's clock (`env.now`, milliseconds), results printed through
//! `env.print`. Driven by bench/infer/profile-wasm.mjs.

use std::cell::RefCell;
use std::fmt::Write;

use kiln_core::autograd::QuantGrid;
use kiln_core::autograd::Window;
use kiln_core::kernels::{PackedConv, QConv};
use kiln_core::onnx::engine::{KilnSession, Value};

#[link(wasm_import_module = "env")]
extern "C" {
    fn now() -> f64;
    fn print(ptr: *const u8, len: usize);
}

thread_local! {
    static SESSION: RefCell<Option<KilnSession>> = const { RefCell::new(None) };
}

fn clock() -> f64 {
    // SAFETY: an imported host function without arguments.
    unsafe { now() }
}

fn say(s: &str) {
    // SAFETY: the host reads `len` bytes at `ptr`, which `s` owns for the call.
    unsafe { print(s.as_ptr(), s.len()) }
}

/// `n` bytes the host writes the model into.
#[no_mangle]
pub extern "C" fn alloc(n: usize) -> *mut u8 {
    let mut v = vec![0u8; n];
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Loads the model at `ptr..ptr + len`; 0 on success.
///
/// # Safety
/// `ptr` must come from `alloc(len)`, filled by the host; the call takes it back.
#[no_mangle]
pub unsafe extern "C" fn load(ptr: *mut u8, len: usize) -> i32 {
    // SAFETY: `ptr` came from `alloc(len)` and the host filled it.
    let bytes = unsafe { Vec::from_raw_parts(ptr, len, len) };
    match KilnSession::from_bytes(&bytes) {
        Ok(Ok(s)) => {
            SESSION.with(|c| *c.borrow_mut() = Some(s));
            0
        }
        Ok(Err(u)) => {
            say(&format!("declined: {}", u.0));
            1
        }
        Err(e) => {
            say(&format!("error: {e}"));
            2
        }
    }
}

/// Runs the loaded model `reps` times at `batch` as `KilnSession::run` does (no timer per step):
/// what a prediction costs inside wasm, for same-process A/B runs.
#[no_mangle]
pub extern "C" fn run(batch: usize, reps: usize) -> i32 {
    SESSION.with(|c| {
        let c = c.borrow();
        let Some(s) = c.as_ref() else { return 1 };
        let info = &s.inputs()[0];
        let shape: Vec<usize> = info
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { batch } else { d.unwrap_or(1) })
            .collect();
        let n: usize = shape.iter().product();
        let x = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&shape),
            (0..n).map(|i| ((i * 7919) % 17) as f32 / 16.0).collect(),
        )
        .expect("shape");
        for _ in 0..reps {
            let feeds = vec![(info.name.clone(), Value::F32(x.clone()))];
            if s.run(feeds).is_err() {
                return 2;
            }
        }
        0
    })
}

/// Runs the loaded model `reps` times at `batch` (plan `fused` or not) and, with `show`, prints
/// each step's median milliseconds, tab-separated, then the median total.
#[no_mangle]
pub extern "C" fn profile(batch: usize, reps: usize, fused: i32, show: i32) -> i32 {
    SESSION.with(|c| {
        let c = c.borrow();
        let Some(s) = c.as_ref() else { return 1 };
        let info = &s.inputs()[0];
        let shape: Vec<usize> = info
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { batch } else { d.unwrap_or(1) })
            .collect();
        let n: usize = shape.iter().product();
        let x = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&shape),
            (0..n).map(|i| ((i * 7919) % 17) as f32 / 16.0).collect(),
        )
        .expect("shape");
        let mut per_step: Vec<(String, Vec<f64>)> = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..reps.max(1) {
            let t0 = clock();
            let feeds = vec![(info.name.clone(), Value::F32(x.clone()))];
            let (_, steps) = match s.profile(feeds, &clock, fused != 0) {
                Ok(r) => r,
                Err(e) => {
                    say(&format!("error: {e}"));
                    return 2;
                }
            };
            totals.push(clock() - t0);
            if per_step.is_empty() {
                per_step = steps.iter().map(|(n, _)| (n.clone(), Vec::new())).collect();
            }
            for ((_, ts), (_, t)) in per_step.iter_mut().zip(&steps) {
                ts.push(*t);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let mut out = String::new();
        for (name, ts) in per_step.iter_mut() {
            let _ = writeln!(out, "{:.4}\t{name}", median(ts));
        }
        let _ = writeln!(
            out,
            "{:.4}\ttotal (median of {})",
            median(&mut totals),
            totals.len()
        );
        if show != 0 {
            say(&out);
        }
        0
    })
}

/// Runs the loaded model at `batch` on the fused plan and on the unfused one (every node on its
/// own, in float: the reference) and prints the largest difference of their outputs, so the
/// wasm kernels (simd128 or relaxed) are checked where they run.
#[no_mangle]
pub extern "C" fn check(batch: usize) -> i32 {
    SESSION.with(|c| {
        let c = c.borrow();
        let Some(s) = c.as_ref() else { return 1 };
        let info = &s.inputs()[0];
        let shape: Vec<usize> = info
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { batch } else { d.unwrap_or(1) })
            .collect();
        let n: usize = shape.iter().product();
        // past the calibrated range too (-2..6), so activations saturate at both ends
        let x = ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&shape),
            (0..n).map(|i| ((i * 7919) % 33) as f32 / 4.0 - 2.0).collect(),
        )
        .expect("shape");
        let run = |fused: bool| {
            let feeds = vec![(info.name.clone(), Value::F32(x.clone()))];
            s.profile(feeds, &clock, fused).map(|(o, _)| o)
        };
        let (Ok(a), Ok(b)) = (run(true), run(false)) else {
            say("error");
            return 2;
        };
        let diff = a
            .iter()
            .zip(&b)
            .flat_map(|(a, b)| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max);
        let top = b.iter().flat_map(|b| b.iter()).fold(0f32, |m, v| m.max(v.abs()));
        say(&format!(
            "batch {batch}: fused vs unfused outputs differ by at most {diff:e} (largest |output| {top})"
        ));
        0
    })
}

/// One convolution alone (`[n, c, h, w]` input, `o` outputs, square kernel `k`, stride, padding):
/// prints the median ms of `reps` runs and GFLOP/s (2 flops per multiply-add).
#[no_mangle]
pub extern "C" fn conv(
    n: usize,
    c: usize,
    h: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    reps: usize,
) -> i32 {
    let win = Window {
        kernel: [k, k],
        stride: [stride; 2],
        padding: [pad; 2],
        dilation: [1, 1],
    };
    let w: Vec<f32> = (0..o * c * k * k)
        .map(|i| ((i % 13) as f32 - 6.0) / 13.0)
        .collect();
    let Ok(p) = PackedConv::new(&w, &[o, c, k, k], None, win, 1) else {
        return 1;
    };
    let Ok(shape) = p.output_shape(&[n, c, h, h]) else {
        return 2;
    };
    let x: Vec<f32> = (0..n * c * h * h)
        .map(|i| ((i % 17) as f32) / 16.0)
        .collect();
    let mut out = vec![0f32; shape.iter().product()];
    let mut ts = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = clock();
        let _ = p.run(&x, &[n, c, h, h], None, true, &mut out);
        ts.push(clock() - t0);
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    let ms = ts[ts.len() / 2];
    let flops = 2.0 * (shape.iter().product::<usize>() * c * k * k) as f64;
    say(&format!(
        "{ms:.4} ms\t{:.2} GFLOP/s\tconv {n}x{c}x{h}x{h} -> {o}, {k}x{k}/{stride}",
        flops / ms / 1e6
    ));
    0
}

/// [`conv`] on the integer kernel ([`QConv`]: the input quantized onto a uint8 grid in the call,
/// int8 weights), printed alike with `qconv` in the line.
#[no_mangle]
pub extern "C" fn qconv(
    n: usize,
    c: usize,
    h: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    reps: usize,
) -> i32 {
    let win = Window {
        kernel: [k, k],
        stride: [stride; 2],
        padding: [pad; 2],
        dilation: [1, 1],
    };
    let w: Vec<i16> = (0..o * c * k * k).map(|i| (i % 255) as i16 - 127).collect();
    let grid = QuantGrid {
        scale: 1.0 / 255.0,
        zero_point: 3.0,
        qmin: 0.0,
        qmax: 255.0,
    };
    let Ok(p) = QConv::new(&w, &[o, c, k, k], &[0.01], None, grid, win, 1) else {
        return 1;
    };
    let Ok(shape) = p.output_shape(&[n, c, h, h]) else {
        return 2;
    };
    let x: Vec<f32> = (0..n * c * h * h)
        .map(|i| ((i % 17) as f32) / 16.0)
        .collect();
    let mut out = vec![0f32; shape.iter().product()];
    let mut ts = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = clock();
        let _ = p.run(&x, &[n, c, h, h], None, true, &mut out);
        ts.push(clock() - t0);
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    let ms = ts[ts.len() / 2];
    let flops = 2.0 * (shape.iter().product::<usize>() * c * k * k) as f64;
    say(&format!(
        "{ms:.4} ms\t{:.2} GFLOP/s\tqconv {n}x{c}x{h}x{h} -> {o}, {k}x{k}/{stride}",
        flops / ms / 1e6
    ));
    0
}
