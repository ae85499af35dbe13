//! Element-wise math the compiler vectorises: `exp`, `σ` and `tanh` without libm calls (so a loop
//! over them runs in SIMD lanes), the lane blocks the fused ops' loops run on, and the dispatch that
//! compiles a loop for AVX2 when the CPU has it. The recurrent gates, the attention softmax and the
//! cross-entropy's log-sum-exp all take their `exp` from here: one `exp` in one place.

/// Values per block of a fused element-wise loop. A loop written per element over many slices stays
/// scalar (LLVM gives up on the run-time alias checks between a dozen pointers: a GRU step's gate
/// loop ran one value at a time, a quarter of a char-GRU's training); the same body on fixed
/// arrays of `LANES` values (locals, which alias nothing) runs in one AVX2 register, or two simd128
/// ones in wasm.
pub(super) const LANES: usize = 8;

/// `LANES` values of `s` from `at`.
#[inline(always)]
pub(super) fn load<const N: usize>(s: &[f32], at: usize) -> [f32; N] {
    s[at..at + N].try_into().expect("N values")
}

/// Write `v` into `s` at `at`.
#[inline(always)]
pub(super) fn store<const N: usize>(s: &mut [f32], at: usize, v: [f32; N]) {
    s[at..at + N].copy_from_slice(&v);
}

/// `e^x` for `x ≤ 0` without a libm call, so the loops around it vectorise: Cody–Waite reduction by
/// `ln 2` and Cephes' degree-6 polynomial (within 2 ulp of libm's `expf`). Below −87, where `e^x`
/// stops being a normal float, it gives 0 (so a −∞ score, a masked key, weighs exactly nothing);
/// NaN stays NaN.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    // adding 1.5·2^23 rounds to an integer, kept in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    const LOW: f32 = -87.0;
    let under = x < LOW;
    let x = if under { LOW } else { x };
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let exponent = (k.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    let v = e * f32::from_bits(exponent << 23);
    if under {
        0.0
    } else {
        v
    }
}

/// `1 / (1 + e^-x)`, branch-free (the exponent is never positive, so it never overflows).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// `tanh` through one `exp` (`2σ(2x) − 1`): the libm `tanhf` (via `expm1f`) was a quarter of a
/// char-GRU's training time; this one is within 3e-7 of it, absolutely (a few float32 roundings).
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` fn) compiled for AVX2 when the CPU
/// has it (8 lanes; the baseline x86-64 target has 4), else as built. No fused multiply-adds are
/// formed either way (Rust does not contract), so both give bit-identical results.
macro_rules! simd_dispatch {
    ($(#[$doc:meta])* $vis:vis $name:ident, $avx2:ident, $body:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU was just checked for AVX2.
                unsafe { return $avx2($($arg),*) }
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
}
pub(super) use simd_dispatch;

/// Runs `$body` for every index `$j` of `0..$len` in blocks, widest first: `$n` (a `const`) is
/// each width listed while a whole block fits, then 1 for the rest. A body calling
/// `f::<$n>(.., $j, ..)` so runs on fixed arrays of `$n` values (see [`LANES`]).
macro_rules! in_blocks {
    ($len:expr, [$($width:expr),+], |$j:ident, $n:ident| $body:expr) => {{
        let len = $len;
        let mut $j = 0;
        $({
            const $n: usize = $width;
            while $j + $n <= len {
                $body;
                $j += $n;
            }
        })+
        {
            const $n: usize = 1;
            while $j < len {
                $body;
                $j += 1;
            }
        }
    }};
}
pub(super) use in_blocks;

/// `row ← e^(row − max row) / Σ`, in place: a softmax over one row, `exp` in lanes. An all −∞ row
/// (every key masked) gives NaN, as PyTorch's softmax does.
#[inline(always)]
pub(super) fn softmax_row(row: &mut [f32]) {
    let top = max(row);
    let mut sum = [0.0f32; LANES];
    let mut blocks = row.chunks_exact_mut(LANES);
    for b in &mut blocks {
        for (v, s) in b.iter_mut().zip(sum.iter_mut()) {
            *v = exp_nonpositive(*v - top);
            *s += *v;
        }
    }
    let mut total: f32 = sum.iter().sum();
    for v in blocks.into_remainder() {
        *v = exp_nonpositive(*v - top);
        total += *v;
    }
    let inv = 1.0 / total;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The largest value (−∞ for none), in lanes.
#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    for b in blocks {
        for (m, &v) in m.iter_mut().zip(b) {
            *m = if v > *m { v } else { *m };
        }
    }
    m.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v))
}

/// `log Σ e^v` over `row`, stable (the maximum taken out first), `exp` in lanes.
#[inline(always)]
fn log_sum_exp(row: &[f32]) -> f32 {
    let top = max(row);
    let mut sum = [0.0f32; LANES];
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    for b in blocks {
        for (&v, s) in b.iter().zip(sum.iter_mut()) {
            *s += exp_nonpositive(v - top);
        }
    }
    let total: f32 =
        sum.iter().sum::<f32>() + tail.iter().map(|&v| exp_nonpositive(v - top)).sum::<f32>();
    top + total.ln()
}

/// `out[i] = log Σ_j e^x[i·width + j]` for every row of `x`.
#[inline(always)]
fn log_sum_exp_rows_body(x: &[f32], width: usize, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(width).zip(out.iter_mut()) {
        *o = log_sum_exp(row);
    }
}
simd_dispatch!(
    /// `out[i] = log Σ_j e^x[i·width + j]` for every row of `x` (`width` > 0), stable.
    pub(super) log_sum_exp_rows, log_sum_exp_rows_avx2, log_sum_exp_rows_body,
    (x: &[f32], width: usize, out: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_without_libm_is_within_4e7_of_it_relatively() {
        for i in -10000..=10000 {
            let x = i as f32 / 100.0;
            let want = if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            };
            assert!(
                (sigmoid(x) - want).abs() <= 4e-7 * want.max(1e-30),
                "{x}: {} vs {want}",
                sigmoid(x)
            );
        }
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0);
    }

    #[test]
    fn tanh_through_sigmoid_is_within_3e7_of_libm() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "{x}");
        }
    }

    #[test]
    fn softmax_and_exp_in_lanes_match_libm() {
        // lengths below, at and past a block, with −∞ (masked) entries
        for len in [1, 3, 8, 9, 16, 17, 90] {
            let row: Vec<f32> = (0..len)
                .map(|i| {
                    if i % 5 == 3 {
                        f32::NEG_INFINITY
                    } else {
                        ((i * 37 % 11) as f32 - 5.0) * 1.7
                    }
                })
                .collect();
            let top = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let z: f64 = row.iter().map(|&v| ((v - top) as f64).exp()).sum();
            let mut got = row.clone();
            softmax_row(&mut got);
            for (g, &v) in got.iter().zip(&row) {
                let want = ((v - top) as f64).exp() / z;
                assert!((*g as f64 - want).abs() < 1e-6, "{len}: {g} vs {want}");
            }
        }
        let mut masked = [f32::NEG_INFINITY; 3];
        softmax_row(&mut masked);
        assert!(masked.iter().all(|v| v.is_nan()));
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            assert!((got - want).abs() <= 2.5e-7 * want, "{x}: {got} vs {want}");
        }
    }
}
