//! The integer microkernel: one `MR × NR` tile of `C = A·B` in i32, `A` a packed panel of
//! centred weights (`q - zero_point`, i16) and `B` a packed panel of centred activations (i16),
//! dequantized in the store: `out = relu?(f32(acc) · scale + bias + residual?)`.
//!
//! The vectors run along the positions, as in the float kernel ([`super::tile`]). The reduction
//! goes two input channels at a time: the input is stored with channels interleaved in pairs
//! (one `u32` holds channel `2c` and `2c + 1` of a pixel as two i16), so one row of the panel is
//! `NR` such pairs, two vector loads that `i32x4_dot_i16x8` takes as they are (it multiplies
//! eight i16 pairs and adds each pair), and `A`'s two channels at a tap are one 32-bit splat. Per
//! row: two loads, four splats and eight dot-add pairs for 64 multiply-adds, where the float
//! kernel does 32 in as many instructions. XNNPACK's and MLAS's wasm QS8 kernels work the same
//! way (i16 extended values, `i32x4.dot_i16x8_s`, `c2` packing). Values are centred at
//! quantization, so no zero-point terms remain, and `|A|, |B| ≤ 255` keep each pair's sum far
//! inside i32; [`super::qconv::QConv`] checks that a whole reduction fits.

use super::tile::{Taps, MR, NR};

/// Where a call's tiles go, and how they are dequantized: `scale.len() / MR` blocks (one tile
/// each, its panel the next `kp × MR` of the call's weights) of `MR` rows of `NR` values, row `i`
/// of block `b` at `out[(b · MR + i) · stride..]` (and so in `residual`). A call per position
/// tile rather than per block: the checks, the store's setup and the choice of reads made once
/// (int8 ResNet-8 in wasm: see `QConv::blocks`).
pub struct QStore<'a> {
    pub out: &'a mut [f32],
    pub stride: usize,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
    /// Per row: the product of the two scales (times any folded BatchNorm scale); `MR` a block.
    pub scale: &'a [f32],
    /// Per row, as `scale`.
    pub bias: &'a [f32],
}

/// One block of a [`QStore`]: `MR` rows of `NR` values.
struct Block<'a> {
    out: &'a mut [f32],
    stride: usize,
    residual: Option<&'a [f32]>,
    relu: bool,
    scale: &'a [f32; MR],
    bias: &'a [f32; MR],
}

/// `tile(panel, block)` for each block of `st`, in order, its panel the next `a.len() / blocks`
/// values of `a`.
#[inline(always)]
fn each_block(a: &[u32], st: QStore, mut tile: impl FnMut(&[u32], Block)) {
    let QStore {
        out,
        stride,
        residual,
        relu,
        scale,
        bias,
    } = st;
    let (scales, biases) = (scale.as_chunks::<MR>().0, bias.as_chunks::<MR>().0);
    let blocks = scales.len();
    assert!(
        blocks > 0
            && !a.is_empty()
            && scale.len() == blocks * MR
            && bias.len() == scale.len()
            && a.len().is_multiple_of(blocks * MR),
        "an integer tile: MR scales and a panel per block"
    );
    let panel = a.len() / blocks;
    for (b, ((a, scale), bias)) in a.chunks_exact(panel).zip(scales).zip(biases).enumerate() {
        let at = b * MR * stride;
        let block = Block {
            out: &mut out[at..],
            stride,
            residual: residual.map(|r| &r[at..]),
            relu,
            scale,
            bias,
        };
        tile(a, block);
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::{Block, MR, NR};
    use core::arch::wasm32::*;

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

    #[inline(always)]
    fn load(src: &[u32]) -> v128 {
        let src: &[u32; 4] = src[..4].try_into().expect("4 values");
        // SAFETY: `src` is 4 readable u32s (16 bytes); v128.load takes unaligned addresses.
        unsafe { v128_load(src.as_ptr().cast()) }
    }

    /// One row of the reduction: `ak`'s `MR` channel pairs against `NR` positions' pairs.
    #[inline(always)]
    fn row(c: &mut [[v128; 2]; MR], ak: &[u32], [r0, r1]: [&[u32; 4]; 2]) {
        let (lo, hi) = (load(r0), load(r1));
        for (ci, &pair) in c.iter_mut().zip(ak) {
            let av = u32x4_splat(pair);
            ci[0] = i32x4_add(ci[0], i32x4_dot_i16x8(av, lo));
            ci[1] = i32x4_add(ci[1], i32x4_dot_i16x8(av, hi));
        }
    }

    /// Two rows of the reduction, row by row: each row's two input vectors, then its `MR`
    /// channels. What V8 11 (Node 20) runs fastest: the order below took it 1.16x as long.
    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    fn rows2(c: &mut [[v128; 2]; MR], ak: [&[u32]; 2], r: [[&[u32; 4]; 2]; 2]) {
        row(c, ak[0], r[0]);
        row(c, ak[1], r[1]);
    }

    /// Two rows of the reduction, channel by channel: both rows' four input vectors first, then
    /// per channel both rows' splats and dots. The same i32 sums (integer adds in any order), in
    /// the order Chromium 156's V8 runs fastest: the row-by-row order took it 1.15-1.18x as long
    /// on an AVX-512/VNNI EPYC (the ResNet-8 and the digits CNN int8, alternating in one page,
    /// 2026-12-04), where V8 11 measured the opposite. Engines with relaxed SIMD (the module that
    /// has it) are the newer V8s, so the relaxed module takes this order and the simd128 module
    /// the other; the machine code V8 makes of either was not visible here (Chromium's release
    /// build prints none), so why is not known.
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    fn rows2(c: &mut [[v128; 2]; MR], ak: [&[u32]; 2], r: [[&[u32; 4]; 2]; 2]) {
        let [[a, b], [d, e]] = r.map(|r| r.map(|v| load(v)));
        for ((ci, &p0), &p1) in c.iter_mut().zip(ak[0]).zip(ak[1]) {
            let (v0, v1) = (u32x4_splat(p0), u32x4_splat(p1));
            ci[0] = i32x4_add(
                ci[0],
                i32x4_add(i32x4_dot_i16x8(v0, a), i32x4_dot_i16x8(v1, d)),
            );
            ci[1] = i32x4_add(
                ci[1],
                i32x4_add(i32x4_dot_i16x8(v0, b), i32x4_dot_i16x8(v1, e)),
            );
        }
    }

    /// [`super::qdot_channels`]: a panel row (`MR` channels' pairs) is one vector, the input's
    /// pair a splat; two accumulators for the even and odd rows.
    #[inline(always)]
    pub fn dot_channels(a: &[u32], x: &[u32], stride: usize) -> [i32; MR] {
        let (mut even, mut odd) = (i32x4_splat(0), i32x4_splat(0));
        let mut rows = a.chunks_exact(MR).zip(x.iter().step_by(stride.max(1)));
        while let (Some((a0, &x0)), Some((a1, &x1))) = (rows.next(), rows.next()) {
            even = i32x4_add(even, i32x4_dot_i16x8(load(a0), u32x4_splat(x0)));
            odd = i32x4_add(odd, i32x4_dot_i16x8(load(a1), u32x4_splat(x1)));
        }
        let kp = a.len() / MR;
        if kp % 2 == 1 {
            if let (Some(a0), Some(&x0)) = (a.chunks_exact(MR).last(), x.get((kp - 1) * stride)) {
                even = i32x4_add(even, i32x4_dot_i16x8(load(a0), u32x4_splat(x0)));
            }
        }
        let sum = i32x4_add(even, odd);
        [
            i32x4_extract_lane::<0>(sum),
            i32x4_extract_lane::<1>(sum),
            i32x4_extract_lane::<2>(sum),
            i32x4_extract_lane::<3>(sum),
        ]
    }

    /// `a`: `kp × MR` channel pairs, `rows`: `kp` rows of `NR` pairs, as two runs of four.
    /// Two rows per turn of the loop: V8 puts a stack check and the loop's own counting in
    /// every turn, a third of a row's instructions.
    #[inline(always)]
    pub fn tile<'a>(a: &[u32], mut rows: impl Iterator<Item = [&'a [u32; 4]; 2]>, st: Block) {
        let mut c = [[i32x4_splat(0); 2]; MR];
        let mut two = a.chunks_exact(2 * MR);
        for ak in &mut two {
            let (Some(r0), Some(r1)) = (rows.next(), rows.next()) else {
                break;
            };
            rows2(&mut c, [&ak[..MR], &ak[MR..]], [r0, r1]);
        }
        if let (Some(ak), Some(r)) = (two.remainder().get(..MR), rows.next()) {
            row(&mut c, ak, r);
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
    use super::{Block, MR, NR};

    /// The two i16 of a channel pair.
    #[inline(always)]
    fn halves(v: u32) -> [i32; 2] {
        [v as u16 as i16 as i32, (v >> 16) as u16 as i16 as i32]
    }

    /// [`super::qdot_channels`].
    #[inline(always)]
    pub fn dot_channels(a: &[u32], x: &[u32], stride: usize) -> [i32; MR] {
        let mut acc = [0i32; MR];
        for (ak, &xv) in a.chunks_exact(MR).zip(x.iter().step_by(stride.max(1))) {
            let [x0, x1] = halves(xv);
            for (c, &w) in acc.iter_mut().zip(ak) {
                let [w0, w1] = halves(w);
                *c += w0 * x0 + w1 * x1;
            }
        }
        acc
    }

    /// `a`: `kp × MR` channel pairs, `rows`: `kp` rows of `NR` pairs, as two runs of four.
    #[inline(always)]
    pub fn tile<'a>(a: &[u32], rows: impl Iterator<Item = [&'a [u32; 4]; 2]>, st: Block) {
        let mut c = [[0i32; NR]; MR];
        for (ak, [r0, r1]) in a.chunks_exact(MR).zip(rows) {
            let mut r = [[0; 2]; NR];
            for (d, &v) in r.iter_mut().zip(r0.iter().chain(r1)) {
                *d = halves(v);
            }
            for (ci, &pair) in c.iter_mut().zip(ak) {
                let [a0, a1] = halves(pair);
                for (cij, [b0, b1]) in ci.iter_mut().zip(r) {
                    *cij += a0 * b0 + a1 * b1;
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
use simd::{dot_channels, tile as qtile};

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use portable::{dot_channels, tile as qtile};

/// The `MR` channels of a panel `a` (`kp × MR` channel pairs) against one row of input pairs,
/// `x[0], x[stride], …` (`kp` of them): each channel's i32 sum. What a Linear layer runs on a
/// few rows, where a tile of `NR` positions would be mostly empty.
#[inline(never)]
pub fn qdot_channels(a: &[u32], x: &[u32], stride: usize) -> [i32; MR] {
    dot_channels(a, x, stride)
}

/// Four values at `x[at..]`.
#[inline(always)]
fn quad(x: &[u32], at: usize) -> &[u32; 4] {
    x[at..at + 4].try_into().expect("4 values")
}

/// Tiles over a packed input panel `b` (`kp × NR` channel pairs), one per block of `st`.
#[inline(never)]
pub fn qtile_packed(a: &[u32], b: &[u32], st: QStore) {
    each_block(a, st, |a, block| {
        let rows = b.chunks_exact(NR).map(|r| [quad(r, 0), quad(r, 4)]);
        qtile(a, rows, block)
    })
}

/// Tiles reading their input rows in place, one per block of `st`, as two runs of four positions:
/// row `r` is `x[bases[0] + offsets[r]..][..4]` then `x[bases[1] + offsets[r]..][..4]` (a
/// zero-padded image of channel pairs, where four positions of an output row read contiguous
/// inputs). No offset passes `taps.reach()` ([`Taps`]), so the reads are checked once per call,
/// against it.
#[inline(never)]
pub fn qtile_direct(a: &[u32], x: &[u32], bases: [usize; 2], taps: Taps, st: QStore) {
    let (offsets, last) = (taps.offsets(), taps.reach());
    // Every read below lies in x[base..base + last + 4] for its base (the runs meet when
    // bases[1] is bases[0] + 4): checked once, here.
    assert!(
        bases[0].max(bases[1]) + last + 4 <= x.len(),
        "qtile_direct: rows reach past the image"
    );
    if bases[1] == bases[0] + 4 {
        // both runs in one row: eight contiguous values per row
        let x = &x[bases[0]..];
        return each_block(a, st, |a, block| {
            let rows = offsets.iter().map(|&o| {
                // SAFETY: o <= last (Taps) and bases[0] + last + NR = bases[1] + last + 4 <= the
                // image's length (asserted above), so the NR values at o are inside `x`;
                // [u32; NR] has u32's alignment.
                let r: &[u32; NR] = unsafe { &*x.as_ptr().add(o).cast::<[u32; NR]>() };
                [quad(r, 0), quad(r, 4)]
            });
            qtile(a, rows, block)
        });
    }
    let (x0, x1) = (&x[bases[0]..], &x[bases[1]..]);
    each_block(a, st, |a, block| {
        let rows = offsets.iter().map(|&o| {
            // SAFETY: o <= last (Taps) and each base + last + 4 <= the image's length (asserted
            // above).
            unsafe {
                [
                    &*x0.as_ptr().add(o).cast::<[u32; 4]>(),
                    &*x1.as_ptr().add(o).cast::<[u32; 4]>(),
                ]
            }
        });
        qtile(a, rows, block)
    })
}
