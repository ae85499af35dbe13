//! The integer microkernel: one `MR × NR` tile of `C = A·B` in i32, `A` a packed panel of
//! centred weights (`q - zero_point`, i16) and `B` a packed panel of centred activations (i16),
//! dequantized in the store: `out = relu?(f32(acc) · scale + bias + residual?)`.
//!
//! The vectors run along the positions, as in the float kernel ([`super::tile`]). The reduction
//! goes two taps at a time: `i32x4_dot_i16x8` multiplies eight i16 pairs and adds each pair, so
//! `B`'s rows `k` and `k + 1` are interleaved (two shuffles per pair of rows) and `A`'s two taps
//! of a channel are one 32-bit splat. Per pair of taps: two loads, two shuffles, four splats and
//! eight dot-add pairs for 64 multiply-adds (the float kernel does 32 in as many instructions).
//! This is the shape of XNNPACK's and MLAS's wasm QS8 kernels (i16 extended inputs,
//! `i32x4.dot_i16x8_s`). Values are centred at quantization, so no zero-point terms remain, and
//! `|A|, |B| ≤ 255` keep every pair's sum far inside i32; [`super::qconv::QConv`] checks that a
//! whole reduction fits.

use super::tile::{MR, NR};

/// Where a tile goes, and how it is dequantized: `MR` rows of `NR` values, `stride` apart in `out`
/// (and in `residual`).
pub struct QStore<'a> {
    pub out: &'a mut [f32],
    pub stride: usize,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
    /// Per row: the product of the two scales (times any folded BatchNorm scale).
    pub scale: &'a [f32; MR],
    pub bias: &'a [f32; MR],
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::{QStore, MR, NR};
    use core::arch::wasm32::*;

    #[inline(always)]
    fn load16(src: &[i16]) -> v128 {
        let src: &[i16; 8] = src[..8].try_into().expect("8 values");
        // SAFETY: `src` is 8 readable i16s (16 bytes); v128.load takes unaligned addresses.
        unsafe { v128_load(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn loadf(src: &[f32]) -> v128 {
        let src: &[f32; 4] = src[..4].try_into().expect("4 values");
        // SAFETY: `src` is 4 readable f32s (16 bytes).
        unsafe { v128_load(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn store(dst: &mut [f32], v: v128) {
        let dst: &mut [f32; 4] = (&mut dst[..4]).try_into().expect("4 values");
        // SAFETY: `dst` is 4 writable f32s (16 bytes), borrowed uniquely.
        unsafe { v128_store(dst.as_mut_ptr().cast(), v) }
    }

    /// `a`: `kp × MR × 2` (pairs of taps per channel), `b`: `2·kp` rows of `NR`.
    #[inline(always)]
    pub fn tile(a: &[i16], b: &[i16], st: QStore) {
        let mut c = [[i32x4_splat(0); 2]; MR];
        for (ak, bk) in a.chunks_exact(2 * MR).zip(b.chunks_exact(2 * NR)) {
            let (r0, r1) = (load16(&bk[..NR]), load16(&bk[NR..]));
            // positions 0..4 and 4..8, each as (tap k, tap k + 1)
            let lo = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(r0, r1);
            let hi = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(r0, r1);
            for (ci, pair) in c.iter_mut().zip(ak.chunks_exact(2)) {
                let pair: &[i16; 2] = pair.try_into().expect("a pair");
                // SAFETY: `pair` is 2 readable i16s (4 bytes).
                let av = unsafe { v128_load32_splat(pair.as_ptr().cast()) };
                ci[0] = i32x4_add(ci[0], i32x4_dot_i16x8(av, lo));
                ci[1] = i32x4_add(ci[1], i32x4_dot_i16x8(av, hi));
            }
        }
        let zero = f32x4_splat(0.0);
        for (i, ci) in c.iter().enumerate() {
            let row = i * st.stride;
            let (s, t) = (f32x4_splat(st.scale[i]), f32x4_splat(st.bias[i]));
            let mut v0 = f32x4_add(f32x4_mul(f32x4_convert_i32x4(ci[0]), s), t);
            let mut v1 = f32x4_add(f32x4_mul(f32x4_convert_i32x4(ci[1]), s), t);
            if let Some(r) = st.residual {
                let r = &r[row..row + NR];
                v0 = f32x4_add(v0, loadf(&r[..4]));
                v1 = f32x4_add(v1, loadf(&r[4..]));
            }
            if st.relu {
                v0 = f32x4_pmax(zero, v0);
                v1 = f32x4_pmax(zero, v1);
            }
            let out = &mut st.out[row..row + NR];
            store(&mut out[..4], v0);
            store(&mut out[4..], v1);
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod portable {
    use super::{QStore, MR, NR};

    /// `a`: `kp × MR × 2` (pairs of taps per channel), `b`: `2·kp` rows of `NR`.
    #[inline(always)]
    pub fn tile(a: &[i16], b: &[i16], st: QStore) {
        let mut c = [[0i32; NR]; MR];
        for (ak, bk) in a.chunks_exact(2 * MR).zip(b.chunks_exact(2 * NR)) {
            let (r0, r1): (&[i16; NR], &[i16; NR]) = (
                bk[..NR].try_into().expect("NR"),
                bk[NR..].try_into().expect("NR"),
            );
            for (ci, pair) in c.iter_mut().zip(ak.chunks_exact(2)) {
                let (a0, a1) = (pair[0] as i32, pair[1] as i32);
                for ((cij, &b0), &b1) in ci.iter_mut().zip(r0).zip(r1) {
                    *cij += a0 * b0 as i32 + a1 * b1 as i32;
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            let row = i * st.stride;
            let out = &mut st.out[row..row + NR];
            for (j, (o, &acc)) in out.iter_mut().zip(ci).enumerate() {
                let mut v = acc as f32 * st.scale[i] + st.bias[i];
                if let Some(r) = st.residual {
                    v += r[row + j];
                }
                *o = match st.relu {
                    true if v > 0.0 => v,
                    true => 0.0,
                    false => v,
                };
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd::tile as qtile;

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub use portable::tile as qtile;
