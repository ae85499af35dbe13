//! 2×2 max pooling with stride 2 and no padding (`MaxPool2d(2)`, the pooling CNNs use most), for
//! inference: no argmax kept. In wasm four outputs at a time: two rows of eight inputs, their even
//! and odd lanes split by shuffles, three `pmax`es (and two at a time from two rows of four).

/// `out[p, oy, ox] = max(x[p, 2oy..2oy+2, 2ox..2ox+2])` over `planes` planes of `h × w`; `out` is
/// `planes × (h/2) × (w/2)`. The window's values are taken in row order and a later one wins only
/// when greater, so ties and NaN resolve as in the tape's general pooling walk.
pub fn max_pool_2x2(x: &[f32], planes: usize, [h, w]: [usize; 2], out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    assert!(
        x.len() == planes * h * w && out.len() == planes * oh * ow,
        "max_pool_2x2: buffers do not fit {planes} planes of {h}x{w}"
    );
    for p in 0..planes {
        let plane = &x[p * h * w..][..h * w];
        for oy in 0..oh {
            let r0 = &plane[2 * oy * w..][..w];
            let r1 = &plane[(2 * oy + 1) * w..][..w];
            let dst = &mut out[(p * oh + oy) * ow..][..ow];
            let done = row4(r0, r1, dst);
            for ox in done..ow {
                let (a, b) = (&r0[2 * ox..2 * ox + 2], &r1[2 * ox..2 * ox + 2]);
                dst[ox] = window_max([a[0], a[1], b[0], b[1]]);
            }
        }
    }
}

/// One 2×2 window's maximum, its values in row order (`[a0, a1, b0, b1]`): a later value wins
/// only when greater, so ties and NaN resolve as in the tape's general pooling walk.
#[inline(always)]
pub(super) fn window_max([first, rest @ ..]: [f32; 4]) -> f32 {
    let mut best = first;
    for v in rest {
        if v > best {
            best = v;
        }
    }
    best
}

/// The 2×2 windows over rows (a0 a1) and (b0 b1), each row two vectors of four: lane i holds
/// window i's maximum, taken in the window's row order as [`window_max`] does
/// (`pmax(best, v) = best < v ? v : best`: a later value wins only when greater).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(super) fn windows(
    a0: core::arch::wasm32::v128,
    a1: core::arch::wasm32::v128,
    b0: core::arch::wasm32::v128,
    b1: core::arch::wasm32::v128,
) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    let even = |u, v| i32x4_shuffle::<0, 2, 4, 6>(u, v);
    let odd = |u, v| i32x4_shuffle::<1, 3, 5, 7>(u, v);
    let m = f32x4_pmax(even(a0, a1), odd(a0, a1));
    f32x4_pmax(f32x4_pmax(m, even(b0, b1)), odd(b0, b1))
}

/// The two 2×2 windows of two runs of four, `v[..4]` a row's and `v[4..]` the next row's (the
/// same columns; an integer tile's rows: [`super::QConv::run_pooled`]).
#[inline(always)]
pub(super) fn pool_runs(v: &[f32; 8]) -> [f32; 2] {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        // SAFETY: `v` is 8 readable f32s; v128.load takes unaligned addresses.
        let (a, b) = unsafe {
            (
                v128_load(v.as_ptr().cast()),
                v128_load(v[4..].as_ptr().cast()),
            )
        };
        let m = windows(a, a, b, b);
        [f32x4_extract_lane::<0>(m), f32x4_extract_lane::<1>(m)]
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    std::array::from_fn(|j| window_max([v[2 * j], v[2 * j + 1], v[4 + 2 * j], v[5 + 2 * j]]))
}

/// The outputs of one row four at a time; returns how many it wrote.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn row4(r0: &[f32], r1: &[f32], dst: &mut [f32]) -> usize {
    use core::arch::wasm32::*;
    let load = |s: &[f32]| {
        let s: &[f32; 4] = s[..4].try_into().expect("4 values");
        // SAFETY: `s` is 4 readable f32s; v128.load takes unaligned addresses.
        unsafe { v128_load(s.as_ptr().cast()) }
    };
    let quads = dst.len() / 4;
    for q in 0..quads {
        let (a0, a1) = (load(&r0[8 * q..]), load(&r0[8 * q + 4..]));
        let (b0, b1) = (load(&r1[8 * q..]), load(&r1[8 * q + 4..]));
        let m = windows(a0, a1, b0, b1);
        let d: &mut [f32; 4] = (&mut dst[4 * q..4 * q + 4]).try_into().expect("4 values");
        // SAFETY: `d` is 4 writable f32s, borrowed uniquely; unaligned is fine.
        unsafe { v128_store(d.as_mut_ptr().cast(), m) }
    }
    if dst.len() - 4 * quads < 2 {
        return quads * 4;
    }
    // two more outputs (a 4×4 plane's rows: the digits CNN's second pool): one vector per row
    let (a, b) = (load(&r0[8 * quads..]), load(&r1[8 * quads..]));
    let m = windows(a, a, b, b);
    dst[4 * quads] = f32x4_extract_lane::<0>(m);
    dst[4 * quads + 1] = f32x4_extract_lane::<1>(m);
    quads * 4 + 2
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn row4(_: &[f32], _: &[f32], _: &mut [f32]) -> usize {
    0
}
