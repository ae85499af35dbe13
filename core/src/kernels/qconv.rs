//! 2-D convolution on integers: a QDQ model's `Conv(DQ(Q(x)), DQ(w_int8))` as an i16 × i16 → i32
//! GEMM ([`super::qtile`]). Weights are packed once as centred integers (`q - zero_point`) in
//! panels of [`MR`] channels, input channels in pairs; the input is quantized once per call onto
//! its grid (as ONNX's `QuantizeLinear`: divide, round half to even, saturate), centred (so
//! padding is 0, as in the float graph) and stored with its channels interleaved in pairs. With a
//! horizontal stride of 1 and rows a whole number of tiles, tiles read a zero-padded copy in
//! place (the quantization writes it); otherwise each tile packs its `kp × NR` input panel as the
//! float kernel does ([`super::conv::pack`], on pairs). The store dequantizes with one scale per
//! channel (`input scale · weight scale`, times a folded BatchNorm's) and a float bias, then adds
//! a residual and applies ReLU.
//!
//! The integer sums are exact, so this computes what the float graph computes up to float
//! rounding in the store (one multiply and one add per output, where the float graph rounds each
//! of its `k` multiply-adds).

use super::conv::pack;
use super::qtile::{qtile_direct, qtile_packed, QStore};
use super::tile::{MR, NR};
use crate::autograd::{QuantGrid, Window};
use crate::{shape_err, value_err, Result};

/// A quantized convolution's packed integer weights, its geometry, its input's grid and the
/// per-channel dequantization.
#[derive(Clone, Debug)]
pub struct QConv {
    o: usize,
    cg: usize,
    groups: usize,
    win: Window,
    /// Rows of a panel: `ceil(cg / 2) · kh · kw` (channel pairs × taps).
    kp: usize,
    /// Per group, `ceil(o / groups / MR)` panels of `kp × MR` pairs of centred weights (two i16
    /// in a u32, the even channel low).
    panels: Vec<u32>,
    grid: QuantGrid,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl QConv {
    /// Packs `centred` (`q - zero_point` of an int8/uint8 weight `[o, c/groups, kh, kw]`, standard
    /// layout) with its scales (one, or one per output channel), an optional float bias `[o]`,
    /// and the grid the input is quantized onto. `Err` when the pieces do not fit, or when an
    /// output's i32 sum could overflow (`Σ|w| · the largest |input|` past `i32::MAX`).
    pub fn new(
        centred: &[i16],
        shape: &[usize],
        w_scale: &[f32],
        bias: Option<&[f32]>,
        grid: QuantGrid,
        win: Window,
        groups: usize,
    ) -> Result<Self> {
        let [o, cg, kh, kw] = shape[..] else {
            shape_err!("QConv: expects a weight [O, C/groups, kh, kw], got {shape:?}");
        };
        if groups == 0 || o % groups != 0 || centred.len() != o * cg * kh * kw {
            shape_err!("QConv: weight {shape:?} does not fit groups={groups}");
        }
        if [kh, kw] != win.kernel {
            shape_err!(
                "QConv: weight {shape:?} does not fit kernel {:?}",
                win.kernel
            );
        }
        if bias.is_some_and(|b| b.len() != o) || !(w_scale.len() == 1 || w_scale.len() == o) {
            shape_err!("QConv: bias or scales do not fit {o} output channels");
        }
        let centre = [grid.zero_point - grid.qmin, grid.qmax - grid.zero_point];
        let widest = centre[0].max(centre[1]);
        if !(grid.scale > 0.0 && (0.0..=255.0).contains(&widest) && centre[0] >= 0.0)
            || centred.iter().any(|v| v.unsigned_abs() > 255)
        {
            value_err!("QConv: weights or an input grid wider than 8 bits: {grid:?}");
        }
        let k = cg * kh * kw;
        for (ch, w) in centred.chunks_exact(k.max(1)).enumerate() {
            let sum: i64 = w.iter().map(|&v| (v as i64).abs()).sum();
            if sum * widest as i64 > i32::MAX as i64 {
                value_err!(
                    "QConv: output channel {ch}'s integer sum could overflow i32 ({sum} · {widest})"
                );
            }
        }
        let kp = cg.div_ceil(2) * kh * kw;
        let og = o / groups;
        let blocks = og.div_ceil(MR);
        let mut panels = vec![0u32; groups * blocks * kp * MR];
        for (ch, w) in centred.chunks_exact(k.max(1)).enumerate() {
            let (g, j) = (ch / og, ch % og);
            let panel = &mut panels[(g * blocks + j / MR) * kp * MR..][..kp * MR];
            for (r, &v) in w.iter().enumerate() {
                let (ci, tap) = (r / (kh * kw), r % (kh * kw));
                let row = (ci / 2) * kh * kw + tap;
                panel[row * MR + j % MR] |= (v as u16 as u32) << (16 * (ci % 2));
            }
        }
        let scale = (0..o)
            .map(|ch| grid.scale * w_scale[if w_scale.len() == 1 { 0 } else { ch }])
            .collect();
        Ok(QConv {
            o,
            cg,
            groups,
            win,
            kp,
            panels,
            grid,
            scale,
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.o
    }

    /// Multiplies output channel `i` by `s[i]` (its dequantization scale and bias).
    pub fn scale_channels(&mut self, s: &[f32]) {
        for ((sc, b), &si) in self.scale.iter_mut().zip(&mut self.bias).zip(s) {
            *sc *= si;
            *b *= si;
        }
    }

    /// Adds `t[i]` to output channel `i`'s bias.
    pub fn shift_channels(&mut self, t: &[f32]) {
        for (b, &ti) in self.bias.iter_mut().zip(t) {
            *b += ti;
        }
    }

    /// The output shape for an input of shape `[n, c, h, w]`, or the error naming the misfit.
    pub fn output_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        super::conv::output_shape(self.win, self.cg, self.groups, self.o, x)
    }

    /// `out = relu?(dequantize(conv(quantize(x))) + residual?)`; `x` is `[n, c, h, w]` in standard
    /// layout (float: quantized here onto the input's grid), `residual` and `out` have the
    /// output's shape.
    pub fn run(
        &self,
        x: &[f32],
        shape: &[usize],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let [n, _, oh, ow] =
            super::conv::checked_buffers(self.output_shape(shape)?, shape, x, residual, out)?;
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        let p = oh * ow;
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let (cg, cg2) = (self.cg, self.cg.div_ceil(2));
        let mut part = [0f32; MR * NR];
        if sw == 1 && ow % NR == 0 {
            // NR positions of an output row read NR contiguous inputs: tiles read the quantized,
            // zero-padded image in place, row (pair, ki, kj) at a fixed offset from the tile's
            // first input
            let (hp, wp) = (h + 2 * ph, w + 2 * pw);
            let mut xp = vec![0u32; cg2 * hp * wp + NR];
            let mut offsets = Vec::with_capacity(self.kp);
            for cp in 0..cg2 {
                for ki in 0..kh {
                    for kj in 0..kw {
                        offsets.push((cp * hp + ki * dh) * wp + kj * dw);
                    }
                }
            }
            let run_at = |q: usize| (q * 4 / ow) * sh * wp + q * 4 % ow;
            for img in 0..n {
                for g in 0..self.groups {
                    let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                    quantize_pairs(xg, [cg, h, w], [ph, pw, wp], self.grid, &mut xp);
                    for p0 in (0..p).step_by(NR) {
                        let nr = NR.min(p - p0);
                        let q = p0 / 4;
                        // a last run of four alone reads its own inputs twice
                        let bases = [run_at(q), run_at(if nr > 4 { q + 1 } else { q })];
                        let at = [img, g, p0, nr];
                        self.blocks(at, p, residual, relu, out, &mut part, |a, st| {
                            qtile_direct(a, &xp, bases, &offsets, st)
                        });
                    }
                }
            }
            return Ok(());
        }
        let mut xq = vec![0u32; cg2 * h * w];
        let mut bt = vec![0u32; self.kp * NR];
        for img in 0..n {
            for g in 0..self.groups {
                let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                quantize_pairs(xg, [cg, h, w], [0, 0, w], self.grid, &mut xq);
                for p0 in (0..p).step_by(NR) {
                    let nr = NR.min(p - p0);
                    pack(self.win, cg2, &xq, [h, w, ow], p0, nr, NR, None, &mut bt);
                    let at = [img, g, p0, nr];
                    self.blocks(at, p, residual, relu, out, &mut part, |a, st| {
                        qtile_packed(a, &bt, st)
                    });
                }
            }
        }
        Ok(())
    }

    /// Every panel of group `g` over one packed tile of input.
    #[allow(clippy::too_many_arguments)]
    fn blocks(
        &self,
        [img, g, p0, nr]: [usize; 4],
        p: usize,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        part: &mut [f32; MR * NR],
        tile: impl Fn(&[u32], QStore),
    ) {
        let og = self.o / self.groups;
        let blocks = og.div_ceil(MR);
        let panel = self.kp * MR;
        for blk in 0..blocks {
            let o0 = g * og + blk * MR;
            let mr = MR.min(og - blk * MR);
            let a = &self.panels[(g * blocks + blk) * panel..][..panel];
            let (mut scale, mut bias) = ([0f32; MR], [0f32; MR]);
            scale[..mr].copy_from_slice(&self.scale[o0..o0 + mr]);
            bias[..mr].copy_from_slice(&self.bias[o0..o0 + mr]);
            let at = (img * self.o + o0) * p + p0;
            if mr == MR && nr == NR {
                let st = QStore {
                    out: &mut out[at..],
                    stride: p,
                    residual: residual.map(|r| &r[at..]),
                    relu,
                    scale: &scale,
                    bias: &bias,
                };
                tile(a, st);
                continue;
            }
            // a partial tile: computed whole into `part`, then the part that exists
            let st = QStore {
                out: part,
                stride: NR,
                residual: None,
                relu: false,
                scale: &scale,
                bias: &bias,
            };
            tile(a, st);
            for i in 0..mr {
                let dst = &mut out[at + i * p..][..nr];
                for (j, d) in dst.iter_mut().enumerate() {
                    let mut v = part[i * NR + j];
                    if let Some(r) = residual {
                        v += r[at + i * p + j];
                    }
                    *d = match relu {
                        true if v > 0.0 => v,
                        true => 0.0, // NaN too, as Tape::relu
                        false => v,
                    };
                }
            }
        }
    }
}

/// One image's group `x` (`[cg, h, w]`) quantized onto `grid`, centred (`q - zero_point`), its
/// channels interleaved in pairs (`u32`: the even channel's i16 low, an odd last channel's
/// partner 0), into `dst` as `[ceil(cg / 2), h + 2·ph, wp]` at row `ph`, column `pw` (the
/// padding, untouched, stays 0).
fn quantize_pairs(
    x: &[f32],
    [cg, h, w]: [usize; 3],
    [ph, pw, wp]: [usize; 3],
    grid: QuantGrid,
    dst: &mut [u32],
) {
    // clamp(round(x / s) + z, qmin, qmax) - z, exact as the rounding gives whole numbers
    let (lo, hi) = (grid.qmin - grid.zero_point, grid.qmax - grid.zero_point);
    let q = |v: f32| {
        let v = v / grid.scale;
        // NaN becomes `lo`, as in `pairs4`
        let v = if lo < v { v } else { lo };
        let v = if v < hi { v } else { hi };
        v.round_ties_even() as i32 as u16 as u32
    };
    let hp = h + 2 * ph;
    for cp in 0..cg.div_ceil(2) {
        let even = &x[2 * cp * h * w..][..h * w];
        let odd = (2 * cp + 1 < cg).then(|| &x[(2 * cp + 1) * h * w..][..h * w]);
        for y in 0..h {
            let d = &mut dst[(cp * hp + y + ph) * wp + pw..][..w];
            let e = &even[y * w..][..w];
            match odd {
                Some(odd) => {
                    let o = &odd[y * w..][..w];
                    let done = pairs4(e, o, [grid.scale, lo, hi], d);
                    for ((d, &a), &b) in d.iter_mut().zip(e).zip(o).skip(done) {
                        *d = q(a) | (q(b) << 16);
                    }
                }
                None => {
                    for (d, &a) in d.iter_mut().zip(e) {
                        *d = q(a);
                    }
                }
            }
        }
    }
}

/// The quantization of [`quantize_pairs`] four pixels at a time in simd128: how many pixels it
/// did.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn pairs4(e: &[f32], o: &[f32], [s, lo, hi]: [f32; 3], d: &mut [u32]) -> usize {
    use core::arch::wasm32::*;
    let (s, lo, hi) = (f32x4_splat(s), f32x4_splat(lo), f32x4_splat(hi));
    // 1.5 · 2^23: adding it rounds a value in (-2^22, 2^22) to a whole number, half to even
    // (the float add's rounding), and leaves that number in the low mantissa bits
    let magic = f32x4_splat(12_582_912.0);
    let q = |x: &[f32]| {
        let x: &[f32; 4] = x.try_into().expect("4 values");
        // SAFETY: `x` is 4 readable f32s (16 bytes); v128.load takes unaligned addresses.
        let v = unsafe { v128_load(x.as_ptr().cast()) };
        // clamping first is the same (the bounds are whole numbers); NaN becomes `lo`
        let v = f32x4_pmin(hi, f32x4_pmax(lo, f32x4_div(v, s)));
        i32x4_sub(f32x4_add(v, magic), magic)
    };
    let n = e.len().min(o.len()).min(d.len()) / 4 * 4;
    for ((d, e), o) in d[..n]
        .chunks_exact_mut(4)
        .zip(e.chunks_exact(4))
        .zip(o.chunks_exact(4))
    {
        let both = i16x8_narrow_i32x4(q(e), q(o));
        let v = i16x8_shuffle::<0, 4, 1, 5, 2, 6, 3, 7>(both, both);
        let d: &mut [u32; 4] = d.try_into().expect("4 values");
        // SAFETY: `d` is 4 writable u32s (16 bytes), borrowed uniquely.
        unsafe { v128_store(d.as_mut_ptr().cast(), v) }
    }
    n
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn pairs4(_: &[f32], _: &[f32], _: [f32; 3], _: &mut [u32]) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const U8: QuantGrid = QuantGrid {
        scale: 0.02,
        zero_point: 37.0,
        qmin: 0.0,
        qmax: 255.0,
    };
    const I8: QuantGrid = QuantGrid {
        scale: 0.015,
        zero_point: -5.0,
        qmin: -128.0,
        qmax: 127.0,
    };

    /// The convolution of the centred integers in i64, dequantized as the store does.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        wq: &[i16],
        [o, cg, kh, kw]: [usize; 4],
        scale: &[f32],
        bias: &[f32],
        grid: QuantGrid,
        win: Window,
        groups: usize,
    ) -> Vec<f32> {
        let [oh, ow] = win.output_size(h, w).unwrap();
        let xq: Vec<i64> = x
            .iter()
            .map(|&v| (grid.quantize(v) - grid.zero_point) as i64)
            .collect();
        let og = o / groups;
        let mut out = vec![0f32; n * o * oh * ow];
        for img in 0..n {
            for oc in 0..o {
                let g = oc / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i64;
                        for ci in 0..cg {
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let iy = (oy * win.stride[0] + ki * win.dilation[0]) as isize
                                        - win.padding[0] as isize;
                                    let ix = (ox * win.stride[1] + kj * win.dilation[1]) as isize
                                        - win.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xi = ((img * c + g * cg + ci) * h + iy as usize) * w
                                        + ix as usize;
                                    let wi = ((oc * cg + ci) * kh + ki) * kw + kj;
                                    acc += xq[xi] * wq[wi] as i64;
                                }
                            }
                        }
                        let s = grid.scale * scale[if scale.len() == 1 { 0 } else { oc }];
                        out[((img * o + oc) * oh + oy) * ow + ox] = acc as f32 * s + bias[oc];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn integer_convolution_is_the_exact_integer_sum_on_random_geometries() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        // (n, c, h, w, o, kernel, stride, padding, dilation, groups)
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        );
        let cases: &[Case] = &[
            (1, 3, 12, 12, 16, 3, 1, 1, 1, 1),
            (2, 16, 8, 8, 32, 3, 2, 1, 1, 1),
            (3, 1, 8, 8, 16, 3, 1, 1, 1, 1), // k = 9: odd, a zero last row
            (2, 5, 7, 9, 6, 3, 1, 1, 1, 1),  // partial tiles and panels
            (1, 4, 11, 10, 6, 3, 2, 2, 2, 2),
            (2, 8, 9, 9, 8, 3, 1, 1, 1, 8), // depthwise
            (2, 16, 6, 6, 8, 1, 2, 0, 1, 1),
            // tiles reading the padded image in place: an odd channel count, dilation, groups
            (2, 5, 8, 16, 6, 3, 1, 1, 1, 1),
            (1, 4, 12, 16, 6, 3, 1, 2, 2, 2),
            (2, 8, 8, 8, 8, 3, 1, 1, 1, 8),
            (3, 16, 4, 4, 32, 3, 1, 1, 1, 1), // runs of four in two rows
            (2, 5, 3, 4, 7, 3, 1, 1, 1, 1),   // a last run of four alone
        ];
        for &(n, c, h, w, o, kk, s, p, d, groups) in cases {
            let win = Window {
                kernel: [kk, kk],
                stride: [s, s],
                padding: [p, p],
                dilation: [d, d],
            };
            let cg = c / groups;
            // inputs past both ends of the grid's range saturate (0 and 255 for uint8)
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|_| rng.random_range(-1.5f32..5.0))
                .collect();
            let wq: Vec<i16> = (0..o * cg * kk * kk)
                .map(|_| rng.random_range(-128i16..=127))
                .collect();
            let per_channel: Vec<f32> = (0..o).map(|_| rng.random_range(0.001f32..0.01)).collect();
            let bias: Vec<f32> = (0..o).map(|_| rng.random_range(-1f32..1.0)).collect();
            for grid in [U8, I8] {
                for scale in [&per_channel[..1], &per_channel[..]] {
                    let shape = [o, cg, kk, kk];
                    let q = QConv::new(&wq, &shape, scale, Some(&bias), grid, win, groups).unwrap();
                    let want = reference(
                        &x,
                        [n, c, h, w],
                        &wq,
                        shape,
                        scale,
                        &bias,
                        grid,
                        win,
                        groups,
                    );
                    assert_eq!(
                        q.output_shape(&[n, c, h, w])
                            .unwrap()
                            .iter()
                            .product::<usize>(),
                        want.len()
                    );
                    let mut got = vec![f32::NAN; want.len()];
                    q.run(&x, &[n, c, h, w], None, false, &mut got).unwrap();
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                            "{:?} {grid:?} at {i}: {a} vs {b}",
                            (n, c, h, w, o, kk, s, p, d, groups)
                        );
                    }
                    // the store's residual and ReLU
                    let res: Vec<f32> = (0..want.len())
                        .map(|_| rng.random_range(-2f32..2.0))
                        .collect();
                    q.run(&x, &[n, c, h, w], Some(&res), true, &mut got)
                        .unwrap();
                    for (i, ((a, b), r)) in got.iter().zip(&want).zip(&res).enumerate() {
                        let b = (b + r).max(0.0);
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "fused at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sums_that_could_overflow_i32_are_declined_and_the_largest_that_fit_are_exact() {
        let win = Window {
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        // |w| = 255 (uint8 weights centred at 0) against inputs 255 from the centre: k · 65025
        // fits i32 up to k = 33025
        let grid = QuantGrid {
            scale: 1.0,
            zero_point: 0.0,
            qmin: 0.0,
            qmax: 255.0,
        };
        let too_many = 33026;
        let e = QConv::new(
            &vec![255; too_many],
            &[1, too_many, 1, 1],
            &[1.0],
            None,
            grid,
            win,
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
        let k = 33025;
        let q = QConv::new(&vec![-255; k], &[1, k, 1, 1], &[1.0], None, grid, win, 1).unwrap();
        let mut out = [0f32; 8];
        // inputs far past the grid saturate at 255
        q.run(&vec![1e6; k * 8], &[1, k, 1, 8], None, false, &mut out)
            .unwrap();
        let want = -(k as f64 * 255.0 * 255.0);
        assert!(
            out.iter()
                .all(|&v| (v as f64 - want).abs() <= want.abs() * 1e-7),
            "{out:?}"
        );
        assert!(want < -2.1e9, "the sum is near i32::MIN: {want}");
    }

    #[test]
    fn misfits_are_errors() {
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        assert!(QConv::new(&[0; 54], &[2, 3, 3, 3], &[1.0], None, U8, win, 4).is_err());
        assert!(QConv::new(&[0; 53], &[2, 3, 3, 3], &[1.0], None, U8, win, 1).is_err());
        assert!(QConv::new(&[0; 54], &[2, 3, 3, 3], &[1.0; 3], None, U8, win, 1).is_err());
        assert!(QConv::new(&[300; 54], &[2, 3, 3, 3], &[1.0], None, U8, win, 1).is_err());
        let wide = QuantGrid {
            qmax: 65535.0,
            ..U8
        };
        assert!(QConv::new(&[0; 54], &[2, 3, 3, 3], &[1.0], None, wide, win, 1).is_err());
        let p = QConv::new(&[0; 54], &[2, 3, 3, 3], &[1.0], None, U8, win, 1).unwrap();
        assert!(p.output_shape(&[1, 4, 5, 5]).is_err());
        let mut out = vec![0.0; 18];
        assert!(p
            .run(&[0.0; 74], &[1, 3, 5, 5], None, false, &mut out)
            .is_err());
    }
}
