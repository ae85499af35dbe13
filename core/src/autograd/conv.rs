//! Convolutions (im2col + one GEMM per group over the whole batch) and 2-D pooling.

use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, IxDyn};

use super::linalg::gemm;
use super::tape::{Tape, Var};
use crate::{shape_err, Result};

/// Geometry of a 2-D convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Zero (or -inf for max pooling) padding on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
}

impl Window {
    /// The output size for an input of `h × w`, or None when the window does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Option<[usize; 2]> {
        let f = |i: usize, d: usize| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            let padded = i + 2 * self.padding[d];
            (padded >= span && self.stride[d] > 0).then(|| (padded - span) / self.stride[d] + 1)
        };
        Some([f(h, 0)?, f(w, 1)?])
    }
}

/// Everything the im2col layout needs to know.
#[derive(Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    win: Window,
}

impl Geometry {
    /// Visit every run of taps that lands inside the input, as `(column row, first column index,
    /// first input offset, length)`: within a run, column `col + i` reads input `at + i · stride`.
    /// Whole runs (not single taps) keep the inner loops free of bounds tests: for stride 1 a run
    /// is one slice copy.
    #[inline]
    fn for_each_run(
        &self,
        channels: std::ops::Range<usize>,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let l = self.oh * self.ow;
        let c0 = channels.start;
        for c in channels {
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = ((c - c0) * kh + ki) * kw + kj;
                    // ix = ox·sw + off − pw must lie in [0, w)
                    let off = kj * dw;
                    let lo = if pw > off { (pw - off).div_ceil(sw) } else { 0 };
                    let hi = if self.w + pw > off {
                        ((self.w - 1 + pw - off) / sw + 1).min(self.ow)
                    } else {
                        0
                    };
                    if lo >= hi {
                        continue;
                    }
                    for n in 0..self.n {
                        let plane = (n * self.c + c) * self.h * self.w;
                        for oy in 0..self.oh {
                            let iy = (oy * sh + ki * dh) as isize - ph as isize;
                            if iy < 0 || iy >= self.h as isize {
                                continue;
                            }
                            let at = plane + iy as usize * self.w + lo * sw + off - pw;
                            f(row, n * l + oy * self.ow + lo, at, hi - lo);
                        }
                    }
                }
            }
        }
    }
}

impl Geometry {
    /// The output columns `[lo, hi)` whose tap at horizontal offset `off` (`kj · dilation`) lands
    /// inside the input: `ix = ox·stride + off − pad` in `[0, w)`. Empty as `(0, 0)`.
    #[inline]
    fn columns(&self, off: usize) -> (usize, usize) {
        let (sw, pw) = (self.win.stride[1], self.win.padding[1]);
        let lo = if pw > off { (pw - off).div_ceil(sw) } else { 0 };
        let hi = if self.w + pw > off {
            ((self.w - 1 + pw - off) / sw + 1).min(self.ow)
        } else {
            0
        };
        if lo >= hi {
            (0, 0)
        } else {
            (lo, hi)
        }
    }

    /// Writes the im2col matrix of `channels` into `out` (zeroed, `k × N·L`): `k` rows
    /// (channel, ki, kj) of `N·L` columns (image, oy, ox); taps that read the padding stay 0.
    fn im2col(&self, x: &[f32], channels: std::ops::Range<usize>, out: &mut [f32]) {
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let (h, w, ow) = (self.h, self.w, self.ow);
        let mut rows = out.chunks_exact_mut(ow);
        for c in channels {
            for ki in 0..kh {
                for kj in 0..kw {
                    let off = kj * dw;
                    let (lo, hi) = self.columns(off);
                    for img in 0..self.n {
                        let plane = &x[(img * self.c + c) * h * w..][..h * w];
                        for oy in 0..self.oh {
                            let dst = rows.next().expect("k rows of N·L columns");
                            let iy = (oy * sh + ki * dh) as isize - ph as isize;
                            if iy < 0 || iy >= h as isize || lo == hi {
                                continue;
                            }
                            let first = iy as usize * w + lo * sw + off - pw;
                            let dst = &mut dst[lo..hi];
                            if sw == 1 && dst.len() >= 16 {
                                dst.copy_from_slice(&plane[first..first + dst.len()]);
                            } else if sw == 1 {
                                // a plain slice zip: unrolled, where step_by(1) stays scalar
                                let src = &plane[first..first + dst.len()];
                                for (d, s) in dst.iter_mut().zip(src) {
                                    *d = *s;
                                }
                            } else {
                                // short runs (small maps) copy faster element by element than
                                // through memcpy, a bulk-memory call with a fixed cost on wasm
                                for (d, s) in dst.iter_mut().zip(plane[first..].iter().step_by(sw))
                                {
                                    *d = *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Geometry::im2col`]: adds every column value of `cols` (the rows of
    /// `channels`) to the input position it was read from, in `dx`.
    fn col2im(&self, cols: &[f32], channels: std::ops::Range<usize>, dx: &mut [f32]) {
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let (h, w, ow) = (self.h, self.w, self.ow);
        let mut rows = cols.chunks_exact(ow);
        for c in channels {
            for ki in 0..kh {
                for kj in 0..kw {
                    let off = kj * dw;
                    let (lo, hi) = self.columns(off);
                    for img in 0..self.n {
                        let plane = &mut dx[(img * self.c + c) * h * w..][..h * w];
                        for oy in 0..self.oh {
                            let src = rows.next().expect("k rows of N·L columns");
                            let iy = (oy * sh + ki * dh) as isize - ph as isize;
                            if iy < 0 || iy >= h as isize || lo == hi {
                                continue;
                            }
                            let row = &mut plane[iy as usize * w..][..w];
                            let first = lo * sw + off - pw;
                            let src = &src[lo..hi];
                            if sw == 1 {
                                for (d, s) in row[first..first + src.len()].iter_mut().zip(src) {
                                    *d += s;
                                }
                            } else {
                                for (d, s) in row[first..].iter_mut().step_by(sw).zip(src) {
                                    *d += s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `[a, b, l]` → `[b, a, l]` for a standard-layout buffer, adding `bias[i]` to every value of
/// row `i` when given: whole rows of `l` values move at once (ndarray's generic permuted copy
/// walks element by element and showed up as a quarter of a CNN step), into a buffer that is
/// written once, not zeroed first.
fn swap_outer(src: &[f32], a: usize, b: usize, l: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = Vec::with_capacity(src.len());
    for j in 0..b {
        for i in 0..a {
            let row = &src[(i * b + j) * l..][..l];
            match bias {
                Some(bias) => out.extend(row.iter().map(|v| v + bias[i])),
                None => out.extend_from_slice(row),
            }
        }
    }
    out
}

impl Tape {
    /// 2-D convolution as PyTorch's `conv2d` (cross-correlation), with groups.
    ///
    /// # Shapes
    /// `x: [N, C, H, W]`, `weight: [O, C/groups, kh, kw]`, `bias: [O]` → `[N, O, H', W']`
    #[allow(clippy::too_many_arguments)] // PyTorch's conv2d signature, argument for argument
    pub fn conv2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Var> {
        let (sx, sw) = (self.shape(x).to_vec(), self.shape(weight).to_vec());
        if sx.len() != 4 || sw.len() != 4 {
            shape_err!("Conv2d: expects input [N, C, H, W] and weight [O, C/groups, kh, kw], got {sx:?} and {sw:?}");
        }
        let (n, c, h, w, o) = (sx[0], sx[1], sx[2], sx[3], sw[0]);
        if groups == 0 || c % groups != 0 || o % groups != 0 || sw[1] * groups != c {
            shape_err!(
                "Conv2d: input with {c} channels does not fit weight {sw:?} with groups={groups}"
            );
        }
        if let Some(b) = bias {
            if self.shape(b) != [o] {
                shape_err!(
                    "Conv2d: bias of shape {:?} does not fit {o} output channels",
                    self.shape(b)
                );
            }
        }
        let win = Window {
            kernel: [sw[2], sw[3]],
            stride,
            padding,
            dilation,
        };
        let Some([oh, ow]) = win.output_size(h, w) else {
            shape_err!("Conv2d: a {:?} kernel (dilation {dilation:?}, padding {padding:?}) does not fit input {sx:?}", win.kernel);
        };
        let geo = Geometry {
            n,
            c,
            h,
            w,
            oh,
            ow,
            win,
        };
        let needs_grad = [Some(x), Some(weight), bias]
            .into_iter()
            .flatten()
            .any(|v| self.requires_grad(v));
        if !needs_grad {
            // Inference: the packed tiled kernel, without an im2col matrix.
            let wv = self.value(weight).as_standard_layout();
            let bv = bias.map(|b| self.value(b).as_standard_layout());
            let packed = crate::kernels::PackedConv::new(
                wv.as_slice().expect("standard layout"),
                &sw,
                bv.as_ref().map(|b| b.as_slice().expect("standard layout")),
                win,
                groups,
            )?;
            let xv = self.value(x).as_standard_layout();
            let mut y = vec![0f32; n * o * oh * ow];
            packed.run(
                xv.as_slice().expect("standard layout"),
                &sx,
                None,
                false,
                &mut y,
            )?;
            let y = ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), y).expect("the output's size");
            return Ok(self.constant(y));
        }
        let (cg, og) = (c / groups, o / groups);
        let k = cg * sw[2] * sw[3];
        let nl = n * oh * ow;
        // cols[g] is a (k × N·L) matrix: one column per output position of every image in the batch.
        // Training keeps it for the weight's gradient, so the forward GEMM reads it too (the packed
        // inference kernel would need it built anyway, and runs one image at a time: on 8×8 and
        // 4×4 maps its tiles are mostly padding).
        let xs = self.value(x).as_standard_layout();
        let xs = xs.as_slice().expect("standard layout");
        let mut cols = vec![0f32; groups * k * nl];
        for (g, block) in cols.chunks_exact_mut((k * nl).max(1)).enumerate() {
            geo.im2col(xs, g * cg..(g + 1) * cg, block);
        }
        let wv = self.value(weight).as_standard_layout();
        let w2 = wv
            .view()
            .into_shape_with_order((o, k))
            .expect("[O, C/groups, kh, kw]");
        let mut y2 = ndarray::Array2::<f32>::zeros((o, nl));
        for g in 0..groups {
            let cg_view =
                ArrayView2::from_shape((k, nl), &cols[g * k * nl..(g + 1) * k * nl]).unwrap();
            let mut out = y2.slice_mut(ndarray::s![g * og..(g + 1) * og, ..]);
            gemm(
                1.0,
                &w2.slice(ndarray::s![g * og..(g + 1) * og, ..]),
                &cg_view,
                0.0,
                &mut out,
            );
        }
        let bv = bias.map(|b| self.value(b).as_standard_layout());
        // (O, N·L) + bias → [N, O, H', W']
        let y = swap_outer(
            y2.as_slice().expect("standard layout"),
            o,
            n,
            oh * ow,
            bv.as_ref().map(|b| b.as_slice().expect("standard layout")),
        );
        drop(wv);
        drop(bv);
        let y = ArrayD::from_shape_vec(IxDyn(&[n, o, oh, ow]), y).unwrap();
        let inputs: Vec<Var> = [x, weight].into_iter().chain(bias).collect();
        Ok(self.push(y, &inputs, move |ctx, gy| {
            // gy [N, O, H', W'] → (O, N·L)
            let gs = gy.as_standard_layout();
            let g2 = swap_outer(gs.as_slice().expect("standard layout"), n, o, oh * ow, None);
            let g2 = ArrayView2::from_shape((o, nl), &g2).expect("(O, N·L)");
            let wv = ctx.input(1).as_standard_layout();
            let w2 = wv.view().into_shape_with_order((o, k)).unwrap();
            let mut grads = vec![None, None];
            if ctx.needs(0) {
                let mut dx = vec![0f32; n * c * h * w];
                let mut dcols = ndarray::Array2::<f32>::zeros((k, nl));
                for g in 0..groups {
                    let mut dc: ArrayViewMut2<f32> = dcols.view_mut();
                    gemm(
                        1.0,
                        &w2.slice(ndarray::s![g * og..(g + 1) * og, ..]).t(),
                        &g2.slice(ndarray::s![g * og..(g + 1) * og, ..]),
                        0.0,
                        &mut dc,
                    );
                    let dcs = dcols.as_slice().expect("standard layout");
                    geo.col2im(dcs, g * cg..(g + 1) * cg, &mut dx);
                }
                grads[0] = Some(ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).unwrap());
            }
            if ctx.needs(1) {
                let mut dw = ndarray::Array2::<f32>::zeros((o, k));
                for g in 0..groups {
                    let cg_view =
                        ArrayView2::from_shape((k, nl), &cols[g * k * nl..(g + 1) * k * nl])
                            .unwrap();
                    let mut out = dw.slice_mut(ndarray::s![g * og..(g + 1) * og, ..]);
                    gemm(
                        1.0,
                        &g2.slice(ndarray::s![g * og..(g + 1) * og, ..]),
                        &cg_view.t(),
                        0.0,
                        &mut out,
                    );
                }
                grads[1] = Some(
                    dw.into_shape_with_order(IxDyn(&[o, cg, win.kernel[0], win.kernel[1]]))
                        .unwrap(),
                );
            }
            if ctx.inputs_len() == 3 {
                grads.push(
                    ctx.needs(2)
                        .then(|| g2.sum_axis(ndarray::Axis(1)).into_dyn()),
                );
            }
            grads
        }))
    }

    /// 1-D convolution, computed as a 2-D one of height 1.
    ///
    /// # Shapes
    /// `x: [N, C, L]`, `weight: [O, C/groups, k]`, `bias: [O]` → `[N, O, L']`
    #[allow(clippy::too_many_arguments)]
    pub fn conv1d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Result<Var> {
        let (sx, sw) = (self.shape(x).to_vec(), self.shape(weight).to_vec());
        if sx.len() != 3 || sw.len() != 3 {
            shape_err!("Conv1d: expects input [N, C, L] and weight [O, C/groups, k], got {sx:?} and {sw:?}");
        }
        let x4 = self.reshape(x, &[sx[0], sx[1], 1, sx[2]])?;
        let w4 = self.reshape(weight, &[sw[0], sw[1], 1, sw[2]])?;
        let y = self.conv2d(
            x4,
            w4,
            bias,
            [1, stride],
            [0, padding],
            [1, dilation],
            groups,
        )?;
        let sy = self.shape(y).to_vec();
        self.reshape(y, &[sy[0], sy[1], sy[3]])
    }

    /// 2-D max pooling (padding counts as -inf, as in PyTorch).
    ///
    /// # Shapes
    /// `x: [N, C, H, W]` → `[N, C, H', W']`
    pub fn max_pool2d(
        &mut self,
        x: Var,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Var> {
        self.pool2d(
            x,
            Window {
                kernel,
                stride,
                padding,
                dilation: [1, 1],
            },
            true,
        )
    }

    /// 2-D average pooling; padded zeros count in the average (PyTorch's `count_include_pad=True`).
    ///
    /// # Shapes
    /// `x: [N, C, H, W]` → `[N, C, H', W']`
    pub fn avg_pool2d(
        &mut self,
        x: Var,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Var> {
        self.pool2d(
            x,
            Window {
                kernel,
                stride,
                padding,
                dilation: [1, 1],
            },
            false,
        )
    }

    fn pool2d(&mut self, x: Var, win: Window, is_max: bool) -> Result<Var> {
        let name = if is_max { "MaxPool2d" } else { "AvgPool2d" };
        let sx = self.shape(x).to_vec();
        if sx.len() != 4 {
            shape_err!("{name}: expects input [N, C, H, W], got {sx:?}");
        }
        if win.padding[0] * 2 > win.kernel[0] || win.padding[1] * 2 > win.kernel[1] {
            shape_err!(
                "{name}: padding {:?} must be at most half the kernel {:?}",
                win.padding,
                win.kernel
            );
        }
        let (n, c, h, w) = (sx[0], sx[1], sx[2], sx[3]);
        let Some([oh, ow]) = win.output_size(h, w) else {
            shape_err!(
                "{name}: a {:?} window does not fit input {sx:?}",
                win.kernel
            );
        };
        // One "image" per (n, c) plane: reuse the tap walker with a single channel per plane.
        let geo = Geometry {
            n: n * c,
            c: 1,
            h,
            w,
            oh,
            ow,
            win,
        };
        let xs = self.value(x).as_standard_layout();
        let xs = xs.as_slice().unwrap();
        let total = n * c * oh * ow;
        if is_max
            && win.kernel == [2, 2]
            && win.stride == [2, 2]
            && win.padding == [0, 0]
            && !self.requires_grad(x)
        {
            // MaxPool2d(2) for inference: no argmax to keep, four outputs at a time in wasm
            let mut out = vec![0f32; total];
            crate::kernels::max_pool_2x2(xs, n * c, [h, w], &mut out);
            let y = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out).unwrap();
            return Ok(self.constant(y));
        }
        let taps = win.kernel[0] * win.kernel[1];
        let mut out = vec![if is_max { f32::NEG_INFINITY } else { 0.0 }; total];
        let mut arg = if is_max {
            vec![usize::MAX; total]
        } else {
            Vec::new()
        };
        let step = win.stride[1];
        if is_max && win.padding == [0, 0] && win.kernel == [2, 2] && win.stride == [2, 2] {
            // MaxPool2d(2) when training (inference took the kernel above): rows two at a time,
            // the argmax kept for the gradient
            let planes = xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow));
            for (p, ((plane, outp), argp)) in planes.zip(arg.chunks_exact_mut(oh * ow)).enumerate()
            {
                for oy in 0..oh {
                    let first = 2 * oy * w;
                    let (r0, r1) = (&plane[first..][..2 * ow], &plane[first + w..][..2 * ow]);
                    let base = p * h * w + first;
                    let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                    let dst = outp[oy * ow..][..ow]
                        .iter_mut()
                        .zip(&mut argp[oy * ow..][..ow]);
                    for (ox, ((d, at), (a, b))) in dst.zip(pairs).enumerate() {
                        // the window's first value wins ties and NaN, as in the general walk;
                        // selects, not branches: which tap wins is data, not a pattern
                        let (mut best, mut tap) = (a[0], 0);
                        for (v, t) in [(a[1], 1), (b[0], w), (b[1], w + 1)] {
                            let wins = v > best;
                            best = if wins { v } else { best };
                            tap = if wins { t } else { tap };
                        }
                        *d = best;
                        *at = base + 2 * ox + tap;
                    }
                }
            }
        } else if win.padding == [0, 0] && win.kernel == win.stride {
            // Non-overlapping windows without padding (MaxPool2d(2), the common case): walk each
            // window directly; the general walk below pays per run of one or two taps here.
            let [kh, kw] = win.kernel;
            for p in 0..n * c {
                let plane = &xs[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = (p * oh + oy) * ow + ox;
                        let first = oy * kh * w + ox * kw;
                        if is_max {
                            // The window's first value wins ties and NaN, as in the general walk.
                            let (mut best, mut best_at) = (plane[first], first);
                            for ki in 0..kh {
                                let row = first + ki * w;
                                for (j, &v) in plane[row..row + kw].iter().enumerate() {
                                    if v > best {
                                        best = v;
                                        best_at = row + j;
                                    }
                                }
                            }
                            out[o] = best;
                            arg[o] = p * h * w + best_at;
                        } else {
                            let mut sum = 0.0;
                            for ki in 0..kh {
                                let row = first + ki * w;
                                sum += plane[row..row + kw].iter().sum::<f32>();
                            }
                            out[o] = sum;
                        }
                    }
                }
            }
        } else {
            geo.for_each_run(0..1, |_, col, at, len| {
                if is_max {
                    for i in 0..len {
                        let (v, o) = (xs[at + i * step], col + i);
                        if v > out[o] || arg[o] == usize::MAX {
                            out[o] = v;
                            arg[o] = at + i * step;
                        }
                    }
                } else {
                    for (i, o) in out[col..col + len].iter_mut().enumerate() {
                        *o += xs[at + i * step];
                    }
                }
            });
        }
        if !is_max {
            let inv = 1.0 / taps as f32;
            out.iter_mut().for_each(|v| *v *= inv);
        }
        let y = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), out).unwrap();
        Ok(self.push(y, &[x], move |_, gy| {
            let gs = gy.as_standard_layout();
            let gs = gs.as_slice().unwrap();
            let mut dx = vec![0f32; n * c * h * w];
            if is_max {
                for (col, &at) in arg.iter().enumerate() {
                    dx[at] += gs[col];
                }
            } else {
                let inv = 1.0 / taps as f32;
                let step = win.stride[1];
                geo.for_each_run(0..1, |_, col, at, len| {
                    for i in 0..len {
                        dx[at + i * step] += gs[col + i] * inv;
                    }
                });
            }
            vec![Some(
                ArrayD::from_shape_vec(IxDyn(&[n, c, h, w]), dx).unwrap(),
            )]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check, check_at, random_inputs};
    use super::*;

    fn to_vec(t: &super::super::Tensor) -> Vec<f32> {
        t.iter().copied().collect()
    }

    #[test]
    fn conv2d_gradients_over_geometries() {
        check(&[&[2, 3, 5, 5], &[4, 3, 3, 3], &[4]], |t, v| {
            t.conv2d(v[0], v[1], Some(v[2]), [1, 1], [0, 0], [1, 1], 1)
                .unwrap()
        });
        check(&[&[2, 2, 6, 5], &[3, 2, 3, 2]], |t, v| {
            t.conv2d(v[0], v[1], None, [2, 1], [1, 2], [1, 1], 1)
                .unwrap()
        });
        check(&[&[1, 4, 7, 7], &[6, 2, 3, 3], &[6]], |t, v| {
            t.conv2d(v[0], v[1], Some(v[2]), [2, 2], [1, 1], [2, 2], 2)
                .unwrap()
        });
    }

    #[test]
    fn conv2d_known_value() {
        // A 3x3 ones kernel over a 3x3 ramp with padding 1: the centre is the sum of all nine values.
        let mut t = Tape::inference();
        let x = t.constant(
            ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 3]), (1..=9).map(|v| v as f32).collect())
                .unwrap(),
        );
        let w = t.constant(ArrayD::ones(IxDyn(&[1, 1, 3, 3])));
        let y = t.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1).unwrap();
        assert_eq!(t.shape(y), &[1, 1, 3, 3]);
        assert_eq!(
            to_vec(t.value(y)),
            vec![12., 21., 16., 27., 45., 33., 24., 39., 28.]
        );
    }

    #[test]
    fn conv1d_gradients() {
        check(&[&[2, 3, 9], &[4, 3, 3], &[4]], |t, v| {
            t.conv1d(v[0], v[1], Some(v[2]), 2, 1, 1, 1).unwrap()
        });
        check(&[&[1, 4, 8], &[2, 2, 2]], |t, v| {
            t.conv1d(v[0], v[1], None, 1, 0, 3, 2).unwrap()
        });
    }

    #[test]
    fn pooling_gradients() {
        // distinct values so the max is unique and small moves do not change the argmax
        let x = random_inputs(&[&[2, 3, 6, 6]], 9).remove(0);
        let spaced = ArrayD::from_shape_vec(
            x.raw_dim(),
            (0..x.len())
                .map(|i| ((i * 37) % 216) as f32 * 0.1)
                .collect(),
        )
        .unwrap();
        check_at(vec![spaced.clone()], |t, v| {
            t.max_pool2d(v[0], [2, 2], [2, 2], [0, 0]).unwrap()
        });
        check_at(vec![spaced], |t, v| {
            t.max_pool2d(v[0], [3, 3], [2, 2], [1, 1]).unwrap()
        });
        check(&[&[2, 3, 6, 6]], |t, v| {
            t.avg_pool2d(v[0], [2, 2], [2, 2], [0, 0]).unwrap()
        });
        check(&[&[1, 2, 5, 5]], |t, v| {
            t.avg_pool2d(v[0], [3, 3], [2, 2], [1, 1]).unwrap()
        });
    }

    #[test]
    fn max_pool_2x2_matches_a_naive_max_with_ties_nan_and_odd_sizes() {
        // 7x7 planes (the last row and column dropped), ties and NaN in the windows
        let vals: Vec<f32> = (0..2 * 3 * 7 * 7)
            .map(|i| match i % 11 {
                0 => f32::NAN,
                3 | 4 => 1.5,
                _ => ((i * 29) % 17) as f32 - 8.0,
            })
            .collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3, 7, 7]), vals.clone()).unwrap();
        for grad in [false, true] {
            let mut t = Tape::new(grad, 0);
            let xv = t.leaf(x.clone(), grad);
            let y = t.max_pool2d(xv, [2, 2], [2, 2], [0, 0]).unwrap();
            let got = to_vec(t.value(y));
            assert_eq!(t.shape(y), [2, 3, 3, 3]);
            for (o, g) in got.iter().enumerate() {
                let (p, oy, ox) = (o / 9, o / 3 % 3, o % 3);
                let at = |i: usize, j: usize| vals[p * 49 + (2 * oy + i) * 7 + 2 * ox + j];
                let mut best = at(0, 0);
                for v in [at(0, 1), at(1, 0), at(1, 1)] {
                    if v > best {
                        best = v;
                    }
                }
                assert!(
                    g.to_bits() == best.to_bits(),
                    "grad {grad}, at {o}: {g} vs {best}"
                );
            }
            if grad {
                // each window's gradient goes to the value it picked
                t.backward_with(y, ArrayD::ones(IxDyn(&[2, 3, 3, 3])))
                    .unwrap();
                let dx = to_vec(t.grad(xv).unwrap());
                assert_eq!(dx.iter().sum::<f32>(), 54.0);
                for (i, &d) in dx.iter().enumerate() {
                    assert!(d == 0.0 || d == 1.0, "{i}: {d}");
                }
            }
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let mut t = Tape::inference();
        let x = t.constant(ArrayD::zeros(IxDyn(&[1, 3, 4, 4])));
        let w = t.constant(ArrayD::zeros(IxDyn(&[2, 2, 3, 3])));
        let e = t
            .conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 channels"), "{e}");
        let w = t.constant(ArrayD::zeros(IxDyn(&[2, 3, 5, 5])));
        assert!(t.conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 1).is_err());
        assert!(t.max_pool2d(x, [5, 5], [1, 1], [0, 0]).is_err());
        let flat = t.constant(ArrayD::zeros(IxDyn(&[3, 4])));
        assert!(t.avg_pool2d(flat, [2, 2], [2, 2], [0, 0]).is_err());
    }
}
