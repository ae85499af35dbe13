//! 2-D convolution on integers: a QDQ model's `Conv(DQ(Q(x)), DQ(w_int8))` as an i16 × i16 → i32
//! GEMM ([`super::qtile`]). Weights are packed once as centred integers (`q - zero_point`) in
//! panels of [`MR`] channels, input channels in pairs; the input is quantized once per call onto
//! its grid (as ONNX's `QuantizeLinear`: divide, round half to even, saturate), centred (so
//! padding is 0, as in the float graph) and stored with its channels interleaved in pairs. With
//! output rows a whole number of runs of four (the digits CNN's 4×4 maps too), tiles read a
//! zero-padded copy in place (the quantization writes it; a horizontal stride splits its rows in
//! column phases, as the float kernel's phase split does); otherwise each tile packs its
//! `kp × NR` input panel as the float kernel does ([`super::conv::pack`], on pairs). A
//! QDQ Linear layer runs as a 1×1 convolution over its rows ([`QConv::linear`]). The store dequantizes with one scale per
//! channel (`input scale · weight scale`, times a folded BatchNorm's) and a float bias, then adds
//! a residual and applies ReLU, or pools: a `MaxPool2d(2)` after the convolution is taken from
//! each tile where tiles read in place ([`QConv::run_pooled`], the unpooled map never written;
//! with the scales borrowed per tile, the digits CNN int8 1.21-1.22x faster in Node's wasm,
//! 1.18-1.20x in Chromium's, alternating against the separate pooling, 2026-12-04).
//!
//! The integer sums are exact, so this computes what the float graph computes up to float
//! rounding in the store (one multiply and one add per output, where the float graph rounds each
//! of its `k` multiply-adds).

use super::conv::{pack, strided_copy};
use super::pool::pool_runs;
use super::qtile::{qdot_channels, qtile_direct, qtile_packed, QStore};
use super::tile::{Taps, MR, NR};
use crate::autograd::{QuantGrid, Window};
use crate::{shape_err, value_err, Result};

/// Where a tile's values go ([`QConv::blocks`]): planes of `plane` values in `out` (the pooled
/// map's with `pool`), a residual in the same layout, ReLU, and `MaxPool2d(2)` (a full tile of
/// two rows' runs, no residual).
#[derive(Clone, Copy)]
struct Dest<'a> {
    plane: usize,
    residual: Option<&'a [f32]>,
    relu: bool,
    pool: bool,
}

/// Below this many rows a Linear layer ([`QConv::run_rows`]) puts the output channels in the
/// vectors' lanes instead of the rows.
const FEW_ROWS: usize = 4;

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
    /// With one input channel per group (an image model's first convolution, a depthwise one)
    /// and a horizontal stride of 1: the rows of a panel and the panels with taps paired along
    /// the kernel's row instead of channels (`kh · ceil(kw / 2)` rows where the pairs of channels
    /// leave `kh · kw` half empty), for tiles reading the image in place.
    taps: Option<(usize, Vec<u32>)>,
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
        let taps = (cg == 1 && kw > 1 && win.stride[1] == 1).then(|| {
            let kt = kh * kw.div_ceil(2);
            let mut panels = vec![0u32; groups * blocks * kt * MR];
            for (ch, w) in centred.chunks_exact(k.max(1)).enumerate() {
                let (g, j) = (ch / og, ch % og);
                let panel = &mut panels[(g * blocks + j / MR) * kt * MR..][..kt * MR];
                for (r, &v) in w.iter().enumerate() {
                    let (ki, kj) = (r / kw, r % kw);
                    let row = ki * kw.div_ceil(2) + kj / 2;
                    panel[row * MR + j % MR] |= (v as u16 as u32) << (16 * (kj % 2));
                }
            }
            (kt, panels)
        });
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
            taps,
            grid,
            scale,
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.o
    }

    /// Input channels per group (a Linear layer's input features).
    pub fn in_features(&self) -> usize {
        self.cg
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

    /// A Linear layer `x · wᵀ + bias` as a 1×1 convolution: `centred` is the `[o, k]` weight
    /// (standard layout), the rest as in [`QConv::new`]; run it with [`QConv::run_rows`].
    pub fn linear(
        centred: &[i16],
        [o, k]: [usize; 2],
        w_scale: &[f32],
        bias: Option<&[f32]>,
        grid: QuantGrid,
    ) -> Result<Self> {
        let win = Window {
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        Self::new(centred, &[o, k, 1, 1], w_scale, bias, grid, win, 1)
    }

    /// `out = relu?(dequantize(quantize(x) · wᵀ))` for a [`QConv::linear`]: `x` is `[n, k]`,
    /// `out` `[n, o]`, both in standard layout. The rows are the convolution's positions (an
    /// image of one row of `n` pixels), so the tiles and their store are the convolution's.
    pub fn run_rows(&self, x: &[f32], n: usize, relu: bool, out: &mut [f32]) -> Result<()> {
        let (o, k) = (self.o, self.cg);
        if self.win.kernel != [1, 1] || self.win.padding != [0, 0] || self.groups != 1 {
            value_err!("QConv::run_rows: not a Linear layer ({:?})", self.win);
        }
        if x.len() != n * k || out.len() != n * o {
            shape_err!(
                "QConv::run_rows: {} inputs and {} outputs do not fit {n} rows of {k} → {o}",
                x.len(),
                out.len()
            );
        }
        if n < FEW_ROWS {
            // a few rows: the output channels in the lanes, one dot per panel row (a tile of
            // NR positions would compute NR rows whatever n is)
            let mut xp = vec![0u32; self.kp * n];
            quantize_rows(x, [n, k, n], self.grid, &mut xp);
            let panel = self.kp * MR;
            for (blk, a) in self.panels.chunks_exact(panel).enumerate() {
                let o0 = blk * MR;
                let mr = MR.min(o - o0);
                for m in 0..n {
                    let acc = qdot_channels(a, &xp[m..], n);
                    for (i, &acc) in acc.iter().enumerate().take(mr) {
                        let v = acc as f32 * self.scale[o0 + i] + self.bias[o0 + i];
                        out[m * o + o0 + i] = match relu {
                            true if v > 0.0 => v,
                            true => 0.0, // NaN too, as Tape::relu
                            false => v,
                        };
                    }
                }
            }
            return Ok(());
        }
        let np = n.div_ceil(NR) * NR;
        let mut xp = vec![0u32; self.kp * np];
        quantize_rows(x, [n, k, np], self.grid, &mut xp);
        let offsets: Vec<usize> = (0..self.kp).map(|c| c * np).collect();
        let reads = Taps::new(&offsets);
        // the tiles write channel-major ([o, n]); the rows are transposed back after
        let mut t = vec![0f32; o * n];
        let mut part = self.scratch();
        for p0 in (0..n).step_by(NR) {
            let nr = NR.min(n - p0);
            self.blocks(
                (self.kp, &self.panels[..]),
                [0, 0, p0, nr],
                Dest {
                    plane: n,
                    residual: None,
                    relu,
                    pool: false,
                },
                &mut t,
                &mut part,
                &|a, st| qtile_direct(a, &xp, [p0, p0 + 4], reads, st),
            );
        }
        for (ch, col) in t.chunks_exact(n.max(1)).enumerate().take(o) {
            for (m, &v) in col.iter().enumerate() {
                out[m * o + ch] = v;
            }
        }
        Ok(())
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
        let (c, win) = (shape[1], self.win);
        if win.kernel == [1, 1] && win.padding == [0, 0] && win.stride != [1, 1] {
            // A strided 1×1 window (a ResNet's shortcut) reads one pixel in `sh · sw`: those
            // pixels, gathered, are a stride-1 image, so only they are quantized and the tiles
            // read it in place (quantizing the whole image and packing each tile's panel took
            // 1.1-1.2x the float shortcut's time in wasm).
            let ([h, w], [sh, sw]) = ([shape[2], shape[3]], win.stride);
            let mut xs = vec![0f32; n * c * oh * ow];
            for (plane, dst) in x.chunks_exact(h * w).zip(xs.chunks_exact_mut(oh * ow)) {
                for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
                    strided_copy(row, &plane[y * sh * w..], sw);
                }
            }
            let unit = Window {
                stride: [1, 1],
                ..win
            };
            return self.run_window(&xs, [n, c, oh, ow], unit, residual, relu, false, out);
        }
        self.run_window(
            x,
            [n, c, shape[2], shape[3]],
            win,
            residual,
            relu,
            false,
            out,
        )
    }

    /// `out = max_pool_2x2(relu?(dequantize(conv(quantize(x)))))`: the convolution followed by
    /// `MaxPool2d(2)` (2×2, stride 2, no padding; an odd last row or column dropped), `out`
    /// `[n, o, oh / 2, ow / 2]` for the convolution's output `[n, o, oh, ow]`, which must be at
    /// least 2×2. Where tiles read the image in place, each tile computes two rows of an output
    /// row pair (two runs of four) and its windows' maxima are stored: the unpooled map is never
    /// written, and the positions no window covers never computed. Else the convolution, then
    /// [`super::max_pool_2x2`]. The same values either way.
    pub fn run_pooled(
        &self,
        x: &[f32],
        shape: &[usize],
        relu: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let dims = super::conv::checked_pooled(self.output_shape(shape)?, shape, x, out)?;
        let [n, o, oh, ow] = dims;
        if self.pools_in_store(ow) {
            let chw = [n, shape[1], shape[2], shape[3]];
            return self.run_window(x, chw, self.win, None, relu, true, out);
        }
        let mut full = vec![0f32; dims.iter().product()];
        self.run(x, shape, None, relu, &mut full)?;
        super::max_pool_2x2(&full, n * o, [oh, ow], out);
        Ok(())
    }

    /// Whether [`QConv::run_pooled`] pools in the tiles' store for an output `ow` wide (where
    /// they read in place), rather than running the convolution and then
    /// [`super::max_pool_2x2`].
    pub fn pools_in_store(&self, ow: usize) -> bool {
        self.reads_in_place(self.win, ow)
    }

    /// Whether tiles read the quantized, zero-padded image in place through `win` for an output
    /// `ow` wide (NR positions of an output row read NR contiguous inputs), rather than pack
    /// their panels. A strided 1×1 window with padding (the unpadded ones are gathered to
    /// stride 1 by [`QConv::run`]) packs.
    fn reads_in_place(&self, win: Window, ow: usize) -> bool {
        let [kh, kw] = win.kernel;
        ow.is_multiple_of(4) && (win.stride[1] == 1 || (self.taps.is_none() && kh * kw > 1))
    }

    /// [`QConv::run`] on an input `[n, c, h, w]` (checked) through window `win`: the weights'
    /// own, or a strided 1×1 one's as stride 1 on the pixels it reads. With `pool` (tiles
    /// reading in place, no residual: [`QConv::run_pooled`]) `out` is the pooled output.
    #[allow(clippy::too_many_arguments)]
    fn run_window(
        &self,
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        win: Window,
        residual: Option<&[f32]>,
        relu: bool,
        pool: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = win;
        let [_, _, oh, ow] =
            super::conv::output_shape(win, self.cg, self.groups, self.o, &[n, c, h, w])?;
        let p = oh * ow;
        let (cg, cg2) = (self.cg, self.cg.div_ceil(2));
        let mut part = self.scratch();
        if self.reads_in_place(win, ow) {
            // NR positions of an output row read NR contiguous inputs: tiles read the quantized,
            // zero-padded image in place, row (pair, ki, kj) at a fixed offset from the tile's
            // first input. A horizontal stride splits each padded row into `sw` phases of `wq`
            // columns (column x to phase x mod sw, at x / sw), so that consecutive outputs read
            // consecutive inputs of one phase; a row of the split image is `wr` long.
            let (hp, wp) = (h + 2 * ph, w + 2 * pw);
            let wq = wp.div_ceil(sw);
            let wr = sw * wq;
            let mut xp = vec![0u32; cg2 * hp * wr + NR];
            // sw > 1: the padded image before its split
            let mut unsplit = match sw {
                1 => Vec::new(),
                _ => vec![0u32; cg2 * hp * wp],
            };
            let mut offsets = Vec::with_capacity(self.kp);
            // one channel: pixel (y, x) paired with (y, x + dw), the taps of a row two at a time
            // (a partner past the row meets a zero weight)
            let mut single = match self.taps {
                Some(_) => vec![0u32; hp * wp + NR + dw],
                None => Vec::new(),
            };
            let weights = match &self.taps {
                Some((kt, panels)) => {
                    for ki in 0..kh {
                        for jp in 0..kw.div_ceil(2) {
                            offsets.push(ki * dh * wp + 2 * jp * dw);
                        }
                    }
                    (*kt, &panels[..])
                }
                None => {
                    for cp in 0..cg2 {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let (phase, col) = (kj * dw % sw, kj * dw / sw);
                                offsets.push((cp * hp + ki * dh) * wr + phase * wq + col);
                            }
                        }
                    }
                    (self.kp, &self.panels[..])
                }
            };
            // with a stride the offsets of a row's taps go by phase, not in order
            let reads = Taps::new(&offsets);
            let run_at = |q: usize| (q * 4 / ow) * sh * wr + q * 4 % ow;
            for img in 0..n {
                for g in 0..self.groups {
                    let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                    if self.taps.is_some() {
                        quantize_pairs(xg, [1, h, w], [ph, pw, wp], self.grid, &mut single);
                        // zipped slices (no index checks), so the loop runs in SIMD lanes
                        let pairs = xp.iter_mut().zip(&single).zip(&single[dw..]);
                        for ((d, &a), &b) in pairs {
                            *d = a | (b << 16);
                        }
                    } else if sw == 1 {
                        quantize_pairs(xg, [cg, h, w], [ph, pw, wp], self.grid, &mut xp);
                    } else {
                        quantize_pairs(xg, [cg, h, w], [ph, pw, wp], self.grid, &mut unsplit);
                        for (src, dst) in unsplit.chunks_exact(wp).zip(xp.chunks_exact_mut(wr)) {
                            for (b, phase) in dst.chunks_exact_mut(wq).enumerate() {
                                for (d, &v) in phase.iter_mut().zip(src[b..].iter().step_by(sw)) {
                                    *d = v;
                                }
                            }
                        }
                    }
                    if pool {
                        // a tile: rows 2y and 2y + 1 at columns x0..x0 + 4, two pooled outputs
                        let (qh, qw) = (oh / 2, ow / 2);
                        for y in 0..qh {
                            for x0 in (0..ow).step_by(4) {
                                let bases = [2 * y * sh * wr + x0, (2 * y + 1) * sh * wr + x0];
                                let at = [img, g, y * qw + x0 / 2, NR];
                                let to = Dest {
                                    plane: qh * qw,
                                    residual: None,
                                    relu,
                                    pool: true,
                                };
                                self.blocks(weights, at, to, out, &mut part, &|a, st| {
                                    qtile_direct(a, &xp, bases, reads, st)
                                });
                            }
                        }
                        continue;
                    }
                    for p0 in (0..p).step_by(NR) {
                        let nr = NR.min(p - p0);
                        let q = p0 / 4;
                        // a last run of four alone reads its own inputs twice
                        let bases = [run_at(q), run_at(if nr > 4 { q + 1 } else { q })];
                        let at = [img, g, p0, nr];
                        let to = Dest {
                            plane: p,
                            residual,
                            relu,
                            pool: false,
                        };
                        self.blocks(weights, at, to, out, &mut part, &|a, st| {
                            qtile_direct(a, &xp, bases, reads, st)
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
                    pack(win, cg2, &xq, [h, w, ow], p0, nr, NR, None, &mut bt);
                    let at = [img, g, p0, nr];
                    let weights = (self.kp, &self.panels[..]);
                    let to = Dest {
                        plane: p,
                        residual,
                        relu,
                        pool: false,
                    };
                    self.blocks(weights, at, to, out, &mut part, &|a, st| {
                        qtile_packed(a, &bt, st)
                    });
                }
            }
        }
        Ok(())
    }

    /// The scratch [`QConv::blocks`] computes partial and pooled tiles into: a group's blocks of
    /// `MR × NR`.
    fn scratch(&self) -> Vec<f32> {
        vec![0f32; (self.o / self.groups).div_ceil(MR) * MR * NR]
    }

    /// Every panel of group `g` (`panels`, of `kp` rows) over one tile of input: its `nr`
    /// positions from `p0` (the pooled map's with `to.pool`) of image `img`'s planes in `out`;
    /// `part` is [`QConv::scratch`].
    fn blocks(
        &self,
        (kp, panels): (usize, &[u32]),
        [img, g, p0, nr]: [usize; 4],
        to: Dest,
        out: &mut [f32],
        part: &mut [f32],
        tile: &dyn Fn(&[u32], QStore),
    ) {
        let Dest {
            plane: p,
            residual,
            relu,
            pool,
        } = to;
        let og = self.o / self.groups;
        let blocks = og.div_ceil(MR);
        let panel = kp * MR;
        // One call for all of the group's blocks when every one is whole (the checks, the
        // store's setup and the choice of reads made once per position tile: against a call per
        // block, int8 in wasm, relaxed module, alternating: ResNet-8 Node 20 1.07x / 1.07-1.08x
        // faster at batch 1 / 64, Chromium 156 1.015x / 1.025x); otherwise a call per block.
        let span = if og.is_multiple_of(MR) { blocks } else { 1 };
        for blk in (0..blocks).step_by(span) {
            let o0 = g * og + blk * MR;
            let mr = (span * MR).min(og - blk * MR);
            let a = &panels[(g * blocks + blk) * panel..][..span * panel];
            let at = (img * self.o + o0) * p + p0;
            // the scales and biases as they are, copied only for a partial block: a copy per
            // tile took the int8 ResNet-8 and digits CNN 4-10% longer in wasm (Node 20,
            // alternating; 3-8% in Chromium; a run-time length made it two memcpy calls)
            let (mut ps, mut pb) = ([0f32; MR], [0f32; MR]);
            let whole = mr == span * MR;
            let (scale, bias): (&[f32], &[f32]) = match whole {
                true => (&self.scale[o0..o0 + mr], &self.bias[o0..o0 + mr]),
                false => {
                    ps[..mr].copy_from_slice(&self.scale[o0..o0 + mr]);
                    pb[..mr].copy_from_slice(&self.bias[o0..o0 + mr]);
                    (&ps, &pb)
                }
            };
            if whole && nr == NR && !pool {
                let st = QStore {
                    out: &mut out[at..],
                    stride: p,
                    residual: residual.map(|r| &r[at..]),
                    relu,
                    scale,
                    bias,
                };
                tile(a, st);
                continue;
            }
            let part = &mut part[..span * MR * NR];
            // a partial tile, or a pooled one: computed whole into `part` (pooled: ReLU'd in
            // the store, as there is no residual), then the part that exists, or its pooling
            let st = QStore {
                out: part,
                stride: NR,
                residual: None,
                relu: relu && pool,
                scale,
                bias,
            };
            tile(a, st);
            if pool {
                // the first run is row 2y, the second row 2y + 1: two windows a channel
                for (i, v) in part.chunks_exact(NR).take(mr).enumerate() {
                    let v: &[f32; NR] = v.try_into().expect("a row of the tile");
                    out[at + i * p..][..2].copy_from_slice(&pool_runs(v));
                }
                continue;
            }
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
    let g = bounds(grid);
    let q = |v: f32| centred(v, g);
    let hp = h + 2 * ph;
    for cp in 0..cg.div_ceil(2) {
        let even = &x[2 * cp * h * w..][..h * w];
        let odd = (2 * cp + 1 < cg).then(|| &x[(2 * cp + 1) * h * w..][..h * w]);
        for y in 0..h {
            let d = &mut dst[(cp * hp + y + ph) * wp + pw..][..w];
            let e = &even[y * w..][..w];
            let o = odd.map(|odd| &odd[y * w..][..w]);
            let done = pairs4(e, o, g, d);
            match o {
                Some(o) => {
                    for ((d, &a), &b) in d.iter_mut().zip(e).zip(o).skip(done) {
                        *d = q(a) | (q(b) << 16);
                    }
                }
                None => {
                    for (d, &a) in d.iter_mut().zip(e).skip(done) {
                        *d = q(a);
                    }
                }
            }
        }
    }
}

/// `[scale, qmin - zero_point, qmax - zero_point]`: what [`centred`] quantizes with.
fn bounds(grid: QuantGrid) -> [f32; 3] {
    [
        grid.scale,
        grid.qmin - grid.zero_point,
        grid.qmax - grid.zero_point,
    ]
}

/// `clamp(round(v / s) + z, qmin, qmax) - z` (ONNX's QuantizeLinear, centred), as the low 16
/// bits of a `u32`: exact, as the rounding gives whole numbers. NaN becomes `lo`, as in
/// [`simd::centred4`].
#[inline(always)]
fn centred(v: f32, [s, lo, hi]: [f32; 3]) -> u32 {
    let v = v / s;
    let v = if lo < v { v } else { lo };
    let v = if v < hi { v } else { hi };
    v.round_ties_even() as i32 as u16 as u32
}

/// One image's rows `x` (`[n, k]`) quantized onto `grid` and centred, transposed into `dst` as
/// `[ceil(k / 2), np]` pairs (`u32`: element `2c` of a row low, `2c + 1` high, an odd last
/// element's partner 0): the layout [`quantize_pairs`] writes for an image of one row of `n`
/// pixels, so the integer convolution runs a Linear layer as a 1×1 convolution.
fn quantize_rows(x: &[f32], [n, k, np]: [usize; 3], grid: QuantGrid, dst: &mut [u32]) {
    let g = bounds(grid);
    let mut row = vec![0u32; k.div_ceil(2)];
    for (m, xs) in x.chunks_exact(k).take(n).enumerate() {
        let done = simd::row8(xs, g, &mut row);
        for (c, d) in row.iter_mut().enumerate().skip(done / 2) {
            let hi = xs.get(2 * c + 1).map_or(0, |&v| centred(v, g));
            *d = centred(xs[2 * c], g) | (hi << 16);
        }
        for (c, &v) in row.iter().enumerate() {
            dst[c * np + m] = v;
        }
    }
}

/// [`centred`] in simd128, four values at a time, and the loops that use it: how many values of
/// their input each did.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// `[scale, lo, hi, 1.5 · 2^23]` splatted: adding the last rounds a value in (-2^22, 2^22)
    /// to a whole number, half to even (the float add's rounding), and leaves that number in
    /// the low mantissa bits.
    #[inline(always)]
    fn splats([s, lo, hi]: [f32; 3]) -> [v128; 4] {
        [s, lo, hi, 12_582_912.0].map(|v| f32x4_splat(v))
    }

    #[inline(always)]
    fn centred4(x: &[f32], [s, lo, hi, magic]: [v128; 4]) -> v128 {
        let x: &[f32; 4] = x[..4].try_into().expect("4 values");
        // SAFETY: `x` is 4 readable f32s (16 bytes); v128.load takes unaligned addresses.
        let v = unsafe { v128_load(x.as_ptr().cast()) };
        // clamping first is the same (the bounds are whole numbers); NaN becomes `lo`
        let v = f32x4_pmin(hi, f32x4_pmax(lo, f32x4_div(v, s)));
        i32x4_sub(f32x4_add(v, magic), magic)
    }

    #[inline(always)]
    fn store(d: &mut [u32], v: v128) {
        let d: &mut [u32; 4] = (&mut d[..4]).try_into().expect("4 values");
        // SAFETY: `d` is 4 writable u32s (16 bytes), borrowed uniquely.
        unsafe { v128_store(d.as_mut_ptr().cast(), v) }
    }

    /// [`super::quantize_pairs`]'s rows: pixel `i` of channel `e` low, of `o` high (`o` None: an
    /// odd last channel, its partner 0).
    #[inline(always)]
    pub fn pairs4(e: &[f32], o: Option<&[f32]>, g: [f32; 3], d: &mut [u32]) -> usize {
        let g = splats(g);
        let n = e.len().min(o.map_or(e.len(), <[f32]>::len)).min(d.len()) / 4 * 4;
        for (i, (d, e)) in d[..n]
            .chunks_exact_mut(4)
            .zip(e.chunks_exact(4))
            .enumerate()
        {
            let odd = o.map_or(i32x4_splat(0), |o| centred4(&o[4 * i..], g));
            let both = i16x8_narrow_i32x4(centred4(e, g), odd);
            store(d, i16x8_shuffle::<0, 4, 1, 5, 2, 6, 3, 7>(both, both));
        }
        n
    }

    /// [`super::quantize_rows`]' row: neighbours paired as they are (eight values, four pairs).
    #[inline(always)]
    pub fn row8(x: &[f32], g: [f32; 3], d: &mut [u32]) -> usize {
        let g = splats(g);
        let n = (x.len() / 8).min(d.len() / 4);
        for (d, x) in d.chunks_exact_mut(4).zip(x.chunks_exact(8)).take(n) {
            store(d, i16x8_narrow_i32x4(centred4(x, g), centred4(&x[4..], g)));
        }
        8 * n
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod simd {
    #[inline(always)]
    pub fn pairs4(_: &[f32], _: Option<&[f32]>, _: [f32; 3], _: &mut [u32]) -> usize {
        0
    }
    #[inline(always)]
    pub fn row8(_: &[f32], _: [f32; 3], _: &mut [u32]) -> usize {
        0
    }
}

use simd::pairs4;

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
            // one input channel: taps paired along the kernel's row (odd, even and wide kernels,
            // dilation, depthwise, runs of four)
            (2, 1, 8, 8, 4, 5, 1, 2, 1, 1),
            (1, 1, 9, 9, 5, 2, 1, 0, 1, 1),
            (2, 8, 8, 8, 8, 3, 1, 2, 2, 8),
            (2, 4, 4, 4, 4, 3, 1, 1, 1, 4),
            (1, 1, 6, 6, 3, 3, 2, 1, 1, 1), // stride 2: channel pairs, packed
            // strided tiles reading the column-phase split in place (rows of runs of four): a
            // ResNet's stride-2 3x3 and 1x1, dilation and odd channels, stride 3, one channel, groups
            (2, 16, 16, 16, 32, 3, 2, 1, 1, 1),
            (2, 16, 16, 16, 8, 1, 2, 0, 1, 1),
            (1, 5, 17, 17, 6, 3, 2, 1, 2, 1),
            (1, 3, 10, 10, 4, 3, 3, 1, 1, 1),
            (2, 1, 16, 16, 4, 3, 2, 1, 1, 1),
            (2, 8, 16, 16, 8, 3, 2, 1, 1, 4),
            // strided 1x1 windows run on the pixels they read, gathered: odd sizes and groups
            // (rows not runs of four: packed), stride 3 (in place)
            (2, 6, 17, 15, 8, 1, 2, 0, 1, 2),
            (1, 4, 12, 12, 4, 1, 3, 0, 1, 1),
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
    fn pooling_in_the_store_is_the_convolution_then_its_pooling() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        // (n, c, h, w, o, kernel, stride, padding): in place with taps paired (one channel, the
        // digits CNN's first), channel pairs (its second, 4x4 -> 2x2), partial panels, an odd
        // last row, stride 2 (the phase split); packed (rows not runs of four: the fallback),
        // and an odd last column with it
        let cases = [
            (3, 1, 8, 8, 16, 3, 1, 1),
            (2, 16, 4, 4, 32, 3, 1, 1),
            (2, 5, 8, 8, 6, 3, 1, 1),
            (1, 3, 7, 8, 7, 3, 1, 1),
            (2, 4, 17, 16, 8, 3, 2, 1),
            (2, 3, 6, 6, 5, 3, 1, 1),
            (1, 2, 7, 7, 4, 3, 1, 1),
        ];
        for (n, c, h, w, o, kk, s, p) in cases {
            let win = Window {
                kernel: [kk, kk],
                stride: [s, s],
                padding: [p, p],
                dilation: [1, 1],
            };
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|_| rng.random_range(-1.5f32..5.0))
                .collect();
            let wq: Vec<i16> = (0..o * c * kk * kk)
                .map(|_| rng.random_range(-128i16..=127))
                .collect();
            // negative scales too (a folded BatchNorm's): the maximum is taken after them
            let scale: Vec<f32> = (0..o).map(|_| rng.random_range(-0.01f32..0.01)).collect();
            let bias: Vec<f32> = (0..o).map(|_| rng.random_range(-1f32..1.0)).collect();
            let q = QConv::new(&wq, &[o, c, kk, kk], &scale, Some(&bias), U8, win, 1).unwrap();
            let [_, _, oh, ow] = q.output_shape(&[n, c, h, w]).unwrap();
            let pooled = n * o * (oh / 2) * (ow / 2);
            for relu in [false, true] {
                let mut full = vec![0f32; n * o * oh * ow];
                q.run(&x, &[n, c, h, w], None, relu, &mut full).unwrap();
                let mut want = vec![0f32; pooled];
                super::super::max_pool_2x2(&full, n * o, [oh, ow], &mut want);
                let mut got = vec![f32::NAN; pooled];
                q.run_pooled(&x, &[n, c, h, w], relu, &mut got).unwrap();
                for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == v.to_bits(),
                        "{:?} relu {relu} at {i}: {g} vs {v}",
                        (n, c, h, w, o, kk, s, p)
                    );
                }
            }
        }
        // a map smaller than the window, or buffers that do not fit: errors, not panics
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        };
        let q = QConv::new(&[1; 9], &[1, 1, 3, 3], &[1.0], None, U8, win, 1).unwrap();
        let e = q.run_pooled(&[1.0; 12], &[1, 1, 3, 4], false, &mut []);
        assert!(e.unwrap_err().to_string().contains("MaxPool2d"));
        let e = q.run_pooled(&[1.0; 36], &[1, 1, 6, 6], false, &mut [0.0; 3]);
        assert!(e.unwrap_err().to_string().contains("pooled output"));
    }

    #[test]
    fn a_linear_layer_on_rows_is_the_exact_integer_sum() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        // (rows, in, out): partial tiles of rows and of outputs, an odd k, k past one row of eight;
        // under FEW_ROWS rows the channels-in-lanes dot, with an odd number of pairs and one pair
        for (n, k, o) in [
            (1, 128, 10),
            (64, 128, 10),
            (3, 7, 5),
            (9, 16, 4),
            (17, 33, 9),
            (2, 33, 9),
            (1, 1, 3),
            (4, 20, 6),
        ] {
            // inputs past both ends of the grid's range saturate
            let x: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.5f32..5.0)).collect();
            let wq: Vec<i16> = (0..o * k)
                .map(|_| rng.random_range(-128i16..=127))
                .collect();
            let scale: Vec<f32> = (0..o).map(|_| rng.random_range(0.001f32..0.01)).collect();
            let bias: Vec<f32> = (0..o).map(|_| rng.random_range(-1f32..1.0)).collect();
            for grid in [U8, I8] {
                let q = QConv::linear(&wq, [o, k], &scale, Some(&bias), grid).unwrap();
                assert_eq!((q.in_features(), q.out_channels()), (k, o));
                for relu in [false, true] {
                    let mut got = vec![f32::NAN; n * o];
                    q.run_rows(&x, n, relu, &mut got).unwrap();
                    for m in 0..n {
                        for j in 0..o {
                            let acc: i64 = (0..k)
                                .map(|i| {
                                    let xq = grid.quantize(x[m * k + i]) - grid.zero_point;
                                    xq as i64 * wq[j * k + i] as i64
                                })
                                .sum();
                            let mut want = acc as f32 * grid.scale * scale[j] + bias[j];
                            if relu {
                                want = want.max(0.0);
                            }
                            let g = got[m * o + j];
                            assert!(
                                (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{:?} {grid:?} relu={relu} at ({m}, {j}): {g} vs {want}",
                                (n, k, o)
                            );
                        }
                    }
                }
            }
        }
        // misfits: a buffer of another size, and a convolution that is not 1×1
        let q = QConv::linear(&[1; 12], [3, 4], &[1.0], None, U8).unwrap();
        assert!(q.run_rows(&[0.0; 7], 2, false, &mut [0.0; 6]).is_err());
        assert!(q.run_rows(&[0.0; 8], 2, false, &mut [0.0; 5]).is_err());
        let win = Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
        };
        let c = QConv::new(&[1; 9], &[1, 1, 3, 3], &[1.0], None, U8, win, 1).unwrap();
        assert!(c.run_rows(&[0.0; 2], 2, false, &mut [0.0; 2]).is_err());
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
