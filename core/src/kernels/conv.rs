//! 2-D convolution over NCHW as a GEMM without an im2col matrix: weights packed once into panels
//! of [`MR`] output channels; tiles of [`NR`] output positions read a zero-padded copy of the
//! image in place (its rows split by column phase when strided) when output rows are a whole
//! number of runs of four, and
//! otherwise an input panel packed per tile (`k × NR` values, a few KB that stay in L1 while every panel of the group passes over
//! them); bias, residual add and ReLU applied in the tile's store.

use super::tile::{tile_direct, tile_packed, Offsets, Store, MR, NR};
use crate::autograd::Window;
use crate::{shape_err, Result};

/// A convolution's weights, packed in panels for the microkernel, with its geometry and a
/// per-channel bias.
#[derive(Clone, Debug)]
pub struct PackedConv {
    /// Output channels.
    o: usize,
    /// Input channels per group.
    cg: usize,
    groups: usize,
    win: Window,
    /// `cg · kh · kw`: the reduction length.
    k: usize,
    /// Per group, `ceil(o / groups / MR)` panels of `k × MR` (zero rows past the group's channels).
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedConv {
    /// Packs `weight` (`[o, c/groups, kh, kw]`, standard layout) and an optional bias `[o]`.
    pub fn new(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
    ) -> Result<Self> {
        let [o, cg, kh, kw] = shape[..] else {
            shape_err!("Conv2d: expects a weight [O, C/groups, kh, kw], got {shape:?}");
        };
        if groups == 0 || o % groups != 0 || weight.len() != o * cg * kh * kw {
            shape_err!("Conv2d: weight {shape:?} does not fit groups={groups}");
        }
        if [kh, kw] != win.kernel {
            shape_err!(
                "Conv2d: weight {shape:?} does not fit kernel {:?}",
                win.kernel
            );
        }
        if bias.is_some_and(|b| b.len() != o) {
            shape_err!("Conv2d: bias does not fit {o} output channels");
        }
        let k = cg * kh * kw;
        let og = o / groups;
        let blocks = og.div_ceil(MR);
        let mut panels = vec![0f32; groups * blocks * k * MR];
        for (ch, w) in weight.chunks_exact(k.max(1)).enumerate() {
            let (g, j) = (ch / og, ch % og);
            let panel = &mut panels[(g * blocks + j / MR) * k * MR..][..k * MR];
            for (r, &v) in w.iter().enumerate() {
                panel[r * MR + j % MR] = v;
            }
        }
        Ok(PackedConv {
            o,
            cg,
            groups,
            win,
            k,
            panels,
            bias: bias.map_or_else(|| vec![0.0; o], <[f32]>::to_vec),
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.o
    }

    /// Multiplies output channel `i` by `s[i]` (weights and bias): a BatchNorm's scale folded in.
    pub fn scale_channels(&mut self, s: &[f32]) {
        let og = self.o / self.groups;
        let panel = self.k * MR;
        for (ch, &si) in s.iter().enumerate().take(self.o) {
            let (g, j) = (ch / og, ch % og);
            let start = (g * og.div_ceil(MR) + j / MR) * panel;
            for v in self.panels[start..start + panel]
                .iter_mut()
                .skip(j % MR)
                .step_by(MR)
            {
                *v *= si;
            }
            self.bias[ch] *= si;
        }
    }

    /// Adds `t[i]` to output channel `i`'s bias: a BatchNorm's shift folded in.
    pub fn shift_channels(&mut self, t: &[f32]) {
        for (b, &ti) in self.bias.iter_mut().zip(t) {
            *b += ti;
        }
    }

    /// The output shape for an input of shape `[n, c, h, w]`, or the error naming the misfit.
    pub fn output_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        let [n, c, h, w] = x[..] else {
            shape_err!("Conv2d: expects input [N, C, H, W], got {x:?}");
        };
        if c != self.cg * self.groups {
            shape_err!(
                "Conv2d: input with {c} channels does not fit a weight for {} (groups={})",
                self.cg * self.groups,
                self.groups
            );
        }
        let Some([oh, ow]) = self.win.output_size(h, w) else {
            shape_err!(
                "Conv2d: a {:?} kernel (dilation {:?}, padding {:?}) does not fit input {x:?}",
                self.win.kernel,
                self.win.dilation,
                self.win.padding
            );
        };
        Ok([n, self.o, oh, ow])
    }

    /// `out = relu?(conv(x) + bias + residual?)`; `x` is `[n, c, h, w]` in standard layout,
    /// `residual` and `out` have the output's shape ([`PackedConv::output_shape`]).
    pub fn run(
        &self,
        x: &[f32],
        shape: &[usize],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let [n, o, oh, ow] = self.output_shape(shape)?;
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        let p = oh * ow;
        if x.len() != n * c * h * w
            || out.len() != n * o * p
            || residual.is_some_and(|r| r.len() != out.len())
        {
            shape_err!(
                "Conv2d: buffers do not fit input {shape:?} and output [{n}, {o}, {oh}, {ow}]"
            );
        }
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let cg = self.cg;
        let mut part = [0f32; MR * NR];
        // (a strided 1×1 convolution reads a quarter of the image or less: splitting all of it
        // by phase would cost more than packing what it reads)
        if ow % 4 == 0 && (sw == 1 || kw > 1) {
            // Four positions of an output row read four contiguous inputs once each padded row
            // is split into its `sw` phases (columns ≡ 0, 1, … mod sw, each `wq` long; one phase
            // when sw = 1): the tiles (two such runs, in one row or two) read that zero-padded
            // copy of the image in place, row (ci, ki, kj) at a fixed offset from each run's
            // first input. Output column ox's tap kj reads padded column ox·sw + kj·dw: phase
            // (kj·dw) mod sw, index ox + (kj·dw) / sw.
            let (hp, wp) = (h + 2 * ph, w + 2 * pw);
            let wq = wp.div_ceil(sw);
            let row_len = sw * wq;
            let mut xp = vec![0f32; cg * hp * row_len + NR];
            let mut offsets = Vec::with_capacity(self.k);
            for ci in 0..cg {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let col = kj * dw;
                        offsets.push((ci * hp + ki * dh) * row_len + (col % sw) * wq + col / sw);
                    }
                }
            }
            let offsets = Offsets::new(offsets);
            let run_at = |q: usize| (q * 4 / ow) * sh * row_len + q * 4 % ow;
            for img in 0..n {
                for g in 0..self.groups {
                    let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                    for (ci, plane) in xg.chunks_exact(h * w).enumerate() {
                        for (y, row) in plane.chunks_exact(w).enumerate() {
                            let dst = &mut xp[(ci * hp + y + ph) * row_len..][..row_len];
                            if sw == 1 {
                                dst[pw..pw + w].copy_from_slice(row);
                                continue;
                            }
                            for (x, &v) in row.iter().enumerate() {
                                let col = x + pw;
                                dst[(col % sw) * wq + col / sw] = v;
                            }
                        }
                    }
                    for p0 in (0..p).step_by(NR) {
                        let nr = NR.min(p - p0);
                        let q = p0 / 4;
                        // a last run of four alone reads its own inputs twice
                        let bases = [run_at(q), run_at(if nr > 4 { q + 1 } else { q })];
                        self.blocks(
                            [img, g, p0, nr],
                            p,
                            residual,
                            relu,
                            out,
                            &mut part,
                            |a, b, st| tile_direct(a, &xp, bases, &offsets, b, st),
                        );
                    }
                }
            }
            return Ok(());
        }
        let mut bt = vec![0f32; self.k * NR];
        for img in 0..n {
            for g in 0..self.groups {
                let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                for p0 in (0..p).step_by(NR) {
                    let nr = NR.min(p - p0);
                    self.pack(xg, [h, w, ow], p0, nr, &mut bt);
                    let at = [img, g, p0, nr];
                    self.blocks(at, p, residual, relu, out, &mut part, |a, b, st| {
                        tile_packed(a, &bt, b, st)
                    });
                }
            }
        }
        Ok(())
    }

    /// Every panel of group `g` over one tile of input (`tile(panel, bias, store)` computes
    /// it): positions `p0..p0 + nr` of image `img`, each of the `p` an output plane holds.
    #[allow(clippy::too_many_arguments)]
    fn blocks(
        &self,
        [img, g, p0, nr]: [usize; 4],
        p: usize,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        part: &mut [f32; MR * NR],
        tile: impl Fn(&[f32], &[f32; MR], Store),
    ) {
        let og = self.o / self.groups;
        let blocks = og.div_ceil(MR);
        for blk in 0..blocks {
            let o0 = g * og + blk * MR;
            let mr = MR.min(og - blk * MR);
            let a = &self.panels[(g * blocks + blk) * self.k * MR..][..self.k * MR];
            let mut bias = [0f32; MR];
            bias[..mr].copy_from_slice(&self.bias[o0..o0 + mr]);
            let at = (img * self.o + o0) * p + p0;
            if mr == MR && nr == NR {
                let st = Store {
                    out: &mut out[at..],
                    stride: p,
                    residual: residual.map(|r| &r[at..]),
                    relu,
                };
                tile(a, &bias, st);
                continue;
            }
            // A partial tile: computed whole into `part`, then the part that exists.
            let st = Store {
                out: part,
                stride: NR,
                residual: None,
                relu: false,
            };
            tile(a, &bias, st);
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

    /// Packs the `k × NR` input panel of output positions `p0..p0 + nr` of one image's group
    /// (`x`: `[cg, h, w]`): row `(ci, ki, kj)` holds the input each position's tap reads, or 0
    /// in the padding; columns past `nr` are 0.
    fn pack(&self, x: &[f32], [h, w, ow]: [usize; 3], p0: usize, nr: usize, bt: &mut [f32]) {
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        if nr < NR {
            bt.fill(0.0);
        }
        let (mut pos, mut col) = (p0, 0);
        while pos < p0 + nr {
            // a run of positions in one output row
            let (oy, ox0) = (pos / ow, pos % ow);
            let len = (ow - ox0).min(p0 + nr - pos);
            for ki in 0..kh {
                let iy = (oy * sh + ki * dh) as isize - ph as isize;
                let row_in = (0..h as isize).contains(&iy);
                for kj in 0..kw {
                    // ix = ox·sw + off − pw lies in [0, w) for ox in [lo, hi)
                    let off = kj * dw;
                    let lo = if pw > off { (pw - off).div_ceil(sw) } else { 0 };
                    let hi = if w + pw > off {
                        (w - 1 + pw - off) / sw + 1
                    } else {
                        0
                    };
                    let (lo, hi) = (lo.clamp(ox0, ox0 + len), hi.clamp(ox0, ox0 + len));
                    let (a, b) = (lo - ox0, hi.max(lo) - ox0);
                    for ci in 0..self.cg {
                        let r = (ci * kh + ki) * kw + kj;
                        let dst = &mut bt[r * NR + col..][..len];
                        if !row_in || a == b {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = (ci * h + iy as usize) * w + lo * sw + off - pw;
                        if len == NR && a == 0 && b == NR && sw == 1 {
                            let s: &[f32; NR] = x[src..src + NR].try_into().expect("NR values");
                            dst.copy_from_slice(s);
                            continue;
                        }
                        dst[..a].fill(0.0);
                        dst[b..].fill(0.0);
                        for (i, d) in dst[a..b].iter_mut().enumerate() {
                            *d = x[src + i * sw];
                        }
                    }
                }
            }
            pos += len;
            col += len;
        }
    }
}
