//! 2-D convolution over NCHW as a GEMM without an im2col matrix: weights packed once into panels
//! of `mr` output channels (the [`Kernel`]'s tile height); tiles of `nr` output positions (two
//! runs of `nr / 2`) read a zero-padded copy of the image in place, split in phases by the
//! stride so that a strided window reads consecutive inputs for consecutive outputs (stride 1:
//! always; strided windows larger than 1×1: when that takes no more tiles), and otherwise an
//! input panel packed per tile (`k × nr` values, a few KB that stay in L1 while every panel of
//! the group passes over them); bias, residual add and ReLU applied in the tile's store.

use super::tile::{tile_direct, tile_packed, Store, Taps, MR, NR};
use crate::autograd::Window;
use crate::{shape_err, Result};

/// The tallest tile of any kernel (the x86 kernels' `mr` is at most this).
const MAX_MR: usize = 16;

/// What a tile's store does to one value: the residual added, then ReLU.
#[inline(always)]
pub(super) fn finish(v: f32, residual: Option<f32>, relu: bool) -> f32 {
    let v = residual.map_or(v, |r| v + r);
    match relu {
        true if v > 0.0 => v,
        true => 0.0, // NaN too, as Tape::relu
        false => v,
    }
}

/// `packed(a, b, bias, store)`: see [`Kernel`].
pub(super) type PackedTile = fn(&[f32], &[f32], &[f32], Store);
/// `direct(a, x, bases, taps, bias, store)`: see [`Kernel`].
pub(super) type DirectTile = fn(&[f32], &[f32], [usize; 2], Taps, &[f32], Store);
/// `tile(panel, bias, store)`, one block over an input tile ([`PackedConv::blocks`]: one
/// instance for the packed and the direct tiles, where a closure per caller was two copies).
type BlockTile<'a> = dyn Fn(&[f32], &[f32], Store) + 'a;

/// A microkernel and its tile: `packed(a, b, bias, store)` computes one `mr × nr` tile from a
/// weight panel `a` (`k × mr`) and a packed input panel `b` (`k × nr`);
/// `direct(a, x, bases, taps, bias, store)` reads row `r` of its input in place as two runs of
/// `nr / 2` positions, `x[bases[0] + offsets[r]..]` and `x[bases[1] + offsets[r]..]` (the
/// [`Taps`]' offsets), for one block of channels or, with `direct_blocks`, for `bias.len() / mr`
/// blocks. Both check their slices' lengths, so a kernel is safe to call with any.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub(super) mr: usize,
    pub(super) nr: usize,
    pub(super) packed: PackedTile,
    /// (off x86-64 always [`tile_direct`], which [`Kernel::direct_tile`] calls by name)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) direct: DirectTile,
    /// Whether `direct` computes every block of a group in one call ([`tile_direct`]'s
    /// contract: panels one after another, each block's rows `mr · stride` further on), so that
    /// the blocks of a position tile share one call, one set of checks and one choice of reads;
    /// otherwise `direct` computes one block.
    pub(super) direct_blocks: bool,
    pub(super) name: &'static str,
    /// Whether a 1×1 strided window reads its one phase plane in place (see [`PackedConv::run`])
    /// rather than packing an input panel per tile.
    pub(super) strided_1x1_in_place: bool,
    /// Whether a tile computes fewer rows than `mr` when `bias` is shorter (`1..=mr` rows,
    /// stored straight to the output); otherwise `bias` holds `mr` values and a block with
    /// fewer channels is computed whole into a scratch tile and copied out.
    pub(super) partial_rows: bool,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernel {
    /// The 4×8 tile of `tile.rs`: wasm simd128 intrinsics in wasm, portable code elsewhere.
    pub const PORTABLE: Kernel = Kernel {
        mr: MR,
        nr: NR,
        packed: tile_packed,
        direct: tile_direct,
        direct_blocks: true,
        name: if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
            "simd128 4x8"
        } else {
            "portable 4x8"
        },
        strided_1x1_in_place: true,
        partial_rows: false,
    };

    /// The fastest kernel this CPU runs (x86-64: AVX-512 or AVX2+FMA when the CPU has them,
    /// detected on the first call), else [`Kernel::PORTABLE`].
    pub fn best() -> Kernel {
        Kernel::available()[0]
    }

    /// Every kernel this CPU runs, fastest first; the last is [`Kernel::PORTABLE`].
    pub fn available() -> &'static [Kernel] {
        static ALL: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            let native = super::x86::kernels();
            #[cfg(not(target_arch = "x86_64"))]
            let native: Vec<Kernel> = Vec::new();
            native.into_iter().chain([Kernel::PORTABLE]).collect()
        })
    }

    /// Its name and tile, e.g. `"avx2+fma 6x16"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its direct tile on these arguments. Off x86-64 the one kernel is [`Kernel::PORTABLE`]
    /// ([`Kernel::available`]), so this calls [`tile_direct`] by name: the call through the
    /// pointer took the float ResNet-8 1-2% longer in Chromium (alternating, 2026-12-04).
    #[inline(always)]
    fn direct_tile(
        &self,
        a: &[f32],
        x: &[f32],
        bases: [usize; 2],
        taps: Taps,
        b: &[f32],
        st: Store,
    ) {
        #[cfg(target_arch = "x86_64")]
        (self.direct)(a, x, bases, taps, b, st);
        #[cfg(not(target_arch = "x86_64"))]
        tile_direct(a, x, bases, taps, b, st);
    }
}

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
    /// Per group, `ceil(o / groups / mr)` panels of `k × mr` (zero rows past the group's channels).
    panels: Vec<f32>,
    bias: Vec<f32>,
    kernel: Kernel,
    /// The same weights for a channel-vector tile (x86-64 with AVX-512 or AVX2), which runs the
    /// geometries this kernel's tiles fill poorly (see [`PackedConv::run`]); `true`: always.
    #[cfg(target_arch = "x86_64")]
    channels: Option<(super::channels::ChannelPanels, bool)>,
}

/// Where output channel `j` of a group goes in its panels: `(block, row)`. `og` channels take
/// `ceil(og / mr)` blocks; a kernel that computes partial rows spreads them evenly (32 channels
/// on 6-row tiles: 6, 6, 5, 5, 5, 5 rather than five of 6 and one of 2, whose 4 accumulators
/// wait on the multiply-add's latency), another fills every block but the last.
fn block_of(j: usize, og: usize, kernel: &Kernel) -> (usize, usize) {
    let mr = kernel.mr;
    if !kernel.partial_rows {
        return (j / mr, j % mr);
    }
    let blocks = og.div_ceil(mr);
    let (base, extra) = (og / blocks, og % blocks);
    // the first `extra` blocks hold base + 1 channels
    let long = extra * (base + 1);
    match j < long {
        true => (j / (base + 1), j % (base + 1)),
        false => (extra + (j - long) / base, (j - long) % base),
    }
}

/// Block `blk`'s channels within its group: `(first, count)` (see [`block_of`]).
fn block_channels(blk: usize, og: usize, kernel: &Kernel) -> (usize, usize) {
    let mr = kernel.mr;
    if !kernel.partial_rows {
        return (blk * mr, mr.min(og - blk * mr));
    }
    let blocks = og.div_ceil(mr);
    let (base, extra) = (og / blocks, og % blocks);
    (blk * base + blk.min(extra), base + usize::from(blk < extra))
}

impl PackedConv {
    /// Packs `weight` (`[o, c/groups, kh, kw]`, standard layout) and an optional bias `[o]` for
    /// the fastest kernel this CPU runs ([`Kernel::best`]).
    pub fn new(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
    ) -> Result<Self> {
        Self::with_kernel(weight, shape, bias, win, groups, Kernel::best())
    }

    /// [`PackedConv::new`] for a given kernel (one of [`Kernel::available`]).
    pub fn with_kernel(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
        kernel: Kernel,
    ) -> Result<Self> {
        let mr = kernel.mr;
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
        let blocks = og.div_ceil(mr);
        let mut panels = vec![0f32; groups * blocks * k * mr];
        let slots = tap_slots(win);
        let kk = kh * kw;
        for (ch, w) in weight.chunks_exact(k.max(1)).enumerate() {
            let (g, j) = (ch / og, ch % og);
            let (blk, row) = block_of(j, og, &kernel);
            let panel = &mut panels[(g * blocks + blk) * k * mr..][..k * mr];
            // channel by channel, tap by tap: no division per value (training packs per step)
            for (ci, taps) in w.chunks_exact(kk.max(1)).enumerate() {
                for (&slot, &v) in slots.iter().zip(taps) {
                    panel[(ci * kk + slot) * mr + row] = v;
                }
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
            kernel,
            #[cfg(target_arch = "x86_64")]
            channels: None,
        })
    }

    /// [`PackedConv::new`] that also packs the weights for the channel-vector tile when the CPU
    /// has one (x86-64 with AVX-512 or AVX2), which then runs the geometries it suits
    /// ([`PackedConv::channels_suit`]); what kiln's engine's plan uses. (The tape's inference
    /// convolution, `autograd/conv.rs`, still packs with [`PackedConv::new`].)
    pub fn best(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
    ) -> Result<Self> {
        #[allow(unused_mut)]
        let mut conv = Self::new(weight, shape, bias, win, groups)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(tile) = super::channels::ChannelTile::for_channels(conv.o / groups) {
            conv.channels = Some((conv.pack_channels(weight, tile), false));
        }
        Ok(conv)
    }

    /// [`PackedConv::new`] running every geometry on the channel-vector tile `tile` (one of
    /// [`super::ChannelTile::available`]): the tests check each tile on every geometry.
    #[cfg(all(test, target_arch = "x86_64"))]
    pub(super) fn with_channel_tile(
        weight: &[f32],
        shape: &[usize],
        bias: Option<&[f32]>,
        win: Window,
        groups: usize,
        tile: super::ChannelTile,
    ) -> Result<Self> {
        let mut conv = Self::new(weight, shape, bias, win, groups)?;
        conv.channels = Some((conv.pack_channels(weight, tile), true));
        Ok(conv)
    }

    #[cfg(target_arch = "x86_64")]
    fn pack_channels(
        &self,
        weight: &[f32],
        tile: super::ChannelTile,
    ) -> super::channels::ChannelPanels {
        let [kh, kw] = self.win.kernel;
        let shape = [self.o, self.cg, kh, kw];
        super::channels::ChannelPanels::new(weight, shape, &self.bias, self.groups, tile)
    }

    /// The kernel it runs on.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.o
    }

    /// Multiplies output channel `i` by `s[i]` (weights and bias): a BatchNorm's scale folded in.
    pub fn scale_channels(&mut self, s: &[f32]) {
        let og = self.o / self.groups;
        let mr = self.kernel.mr;
        let panel = self.k * mr;
        for (ch, &si) in s.iter().enumerate().take(self.o) {
            let (g, j) = (ch / og, ch % og);
            let (blk, row) = block_of(j, og, &self.kernel);
            let start = (g * og.div_ceil(mr) + blk) * panel;
            for v in self.panels[start..start + panel]
                .iter_mut()
                .skip(row)
                .step_by(mr)
            {
                *v *= si;
            }
            self.bias[ch] *= si;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some((c, _)) = &mut self.channels {
            c.scale_channels(s);
        }
    }

    /// Adds `t[i]` to output channel `i`'s bias: a BatchNorm's shift folded in.
    pub fn shift_channels(&mut self, t: &[f32]) {
        for (b, &ti) in self.bias.iter_mut().zip(t) {
            *b += ti;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some((c, _)) = &mut self.channels {
            c.shift_channels(t);
        }
    }

    /// The output shape for an input of shape `[n, c, h, w]`, or the error naming the misfit.
    pub fn output_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        output_shape(self.win, self.cg, self.groups, self.o, x)
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
        let [n, o, oh, ow] = checked_buffers(self.output_shape(shape)?, shape, x, residual, out)?;
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        #[cfg(target_arch = "x86_64")]
        if let Some((ch, always)) = &self.channels {
            if *always || self.channels_suit(ch.tile(), [oh, ow]) {
                let dims = [n, o, oh, ow];
                ch.run(
                    self.win,
                    self.groups,
                    x,
                    [c, h, w],
                    dims,
                    residual,
                    relu,
                    out,
                );
                return Ok(());
            }
        }
        let p = oh * ow;
        let Window {
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            dilation: [dh, dw],
        } = self.win;
        let cg = self.cg;
        let Kernel { nr, packed, .. } = self.kernel;
        let run = nr / 2;
        let mut part = vec![0f32; self.kernel.mr * nr];
        // Tiles read a zero-padded, phase-split copy of the image in place: each channel split by
        // (row mod sh, column mod sw) into sh·sw planes of hq × wq, so that every stride is a
        // stride-1 convolution over the planes: `run` positions of an output row read `run`
        // contiguous inputs, row (ci, ki, kj) of the reduction at a fixed offset from each run's
        // first input (the panels' rows are in the order of those offsets, see `taps`). When
        // output rows are a whole number of runs, a tile's two runs lie in one output row or two;
        // otherwise every output row is computed `wq` wide, so that consecutive positions read
        // consecutive inputs whatever the width, into `wide`, and the `ow` positions that exist
        // copied out (unless that computes more than twice the positions that exist: then input
        // panels are packed per tile, below).
        let rows = ow % run == 0;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
        let plane = hq * wq;
        let pq = if rows { p } else { oh * wq };
        // A strided window reads its phase-split image in place when its output rows are whole
        // runs, or when computing them wide takes no more tiles than packing does (8×8 outputs of
        // a 3×3 stride-2 conv are 72 positions wide: three tiles of 32 for two). Natively a 1×1
        // strided window packs (its panel is the split, without the zeroed planes or the wide
        // rows; AVX-512's channel tile takes it anyway); the 4×8 tile (wasm's), where a packed
        // tile of a short reduction ran at a fifth of a direct one's speed (the ResNet-8's 1×1
        // stride-2 shortcut: 5 GFLOP/s in wasm), reads the one phase plane its taps read.
        let strided = sh > 1 || sw > 1;
        let whole = rows || pq.div_ceil(nr) <= p.div_ceil(nr);
        let in_place = kh * kw > 1 || self.kernel.strided_1x1_in_place;
        if !strided || (whole && in_place) {
            // only the phases some tap reads are kept: a 1×1 stride-2 window reads one plane of
            // four; `rank` numbers the row (column) phases kept
            let rank = |stride: usize, taps: usize, dil: usize| {
                let mut rank = vec![None; stride];
                for t in 0..taps {
                    rank[t * dil % stride] = Some(0);
                }
                let mut kept = 0;
                for r in rank.iter_mut().flatten() {
                    *r = kept;
                    kept += 1;
                }
                (rank, kept)
            };
            let ((row_rank, rows_kept), (col_rank, cols_kept)) =
                (rank(sh, kh, dh), rank(sw, kw, dw));
            let phases = rows_kept * cols_kept;
            // per column phase kept: its plane, its first column x0 (padded column x0 + pw is
            // that phase mod sw) and where that lands in the plane's row
            let cols: Vec<(usize, usize, usize)> = col_rank
                .iter()
                .enumerate()
                .filter_map(|(px, b)| {
                    let x0 = (px + sw - pw % sw) % sw;
                    b.filter(|_| x0 < w).map(|b| (b, x0, (x0 + pw) / sw))
                })
                .collect();
            let mut xp = vec![0f32; cg * phases * plane + nr + 2 * wq];
            let mut offsets = vec![0; self.k];
            let slots = tap_slots(self.win);
            for ci in 0..cg {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let (ri, cj) = (ki * dh, kj * dw);
                        let (Some(a), Some(b)) = (row_rank[ri % sh], col_rank[cj % sw]) else {
                            unreachable!("every tap's phase is kept")
                        };
                        offsets[ci * kh * kw + slots[ki * kw + kj]] =
                            (ci * phases + a * cols_kept + b) * plane + ri / sh * wq + cj / sw;
                    }
                }
            }
            let taps = Taps::new(&offsets);
            // the first input of run `q`
            let run_at = |q: usize| match rows {
                true => (q * run / ow) * wq + q * run % ow,
                false => q * run,
            };
            let mut wide = if rows { Vec::new() } else { vec![0f32; o * pq] };
            let og = o / self.groups;
            for img in 0..n {
                for g in 0..self.groups {
                    let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                    for (ci, src) in xg.chunks_exact(h * w).enumerate() {
                        let planes = &mut xp[ci * phases * plane..][..phases * plane];
                        let kept = [sw, cols_kept];
                        let hw = [h, w];
                        split_phases(src, hw, ph, [hq, wq], &row_rank, kept, &cols, planes);
                    }
                    for p0 in (0..pq).step_by(nr) {
                        let len = nr.min(pq - p0);
                        let q = p0 / run;
                        // a last run alone reads its own inputs twice
                        let bases = [run_at(q), run_at(if len > run { q + 1 } else { q })];
                        let read = (xp.as_slice(), bases, taps);
                        if rows {
                            let at = [img, g, p0, len];
                            self.blocks_direct(at, p, residual, relu, out, &mut part, read);
                        } else {
                            let at = [0, g, p0, len];
                            let wide = &mut wide;
                            self.blocks_direct(at, pq, None, false, wide, &mut part, read);
                        }
                    }
                    if rows {
                        continue;
                    }
                    for ch in g * og..(g + 1) * og {
                        for oy in 0..oh {
                            let src = &wide[ch * pq + oy * wq..][..ow];
                            let at = (img * o + ch) * p + oy * ow;
                            for (j, (d, &v)) in out[at..at + ow].iter_mut().zip(src).enumerate() {
                                *d = finish(v, residual.map(|r| r[at + j]), relu);
                            }
                        }
                    }
                }
            }
            return Ok(());
        }
        let mut bt = vec![0f32; self.k * nr];
        let slots = tap_slots(self.win);
        for img in 0..n {
            for g in 0..self.groups {
                let xg = &x[(img * c + g * cg) * h * w..][..cg * h * w];
                for p0 in (0..p).step_by(nr) {
                    let len = nr.min(p - p0);
                    self.pack(xg, [h, w, ow], p0, len, &slots, &mut bt);
                    let at = [img, g, p0, len];
                    self.blocks(at, p, residual, relu, out, &mut part, &|a, b, st| {
                        packed(a, &bt, b, st)
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether [`PackedConv::run_pooled`] pools in the tiles' store (x86-64 with AVX-512 or AVX2: the
    /// channel-vector tile computes the pooling windows' positions together), rather than
    /// running the convolution and then [`super::max_pool_2x2`].
    pub fn pools_in_store(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let pools = self.channels.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let pools = false;
        pools
    }

    /// `out = max_pool_2x2(relu?(conv(x) + bias))`: the convolution followed by `MaxPool2d(2)`
    /// (2×2, stride 2, no padding; an odd last row or column dropped), `out`
    /// `[n, o, oh / 2, ow / 2]` for the convolution's output `[n, o, oh, ow]`
    /// ([`PackedConv::output_shape`]), which must be at least 2×2.
    pub fn run_pooled(
        &self,
        x: &[f32],
        shape: &[usize],
        relu: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let dims = checked_pooled(self.output_shape(shape)?, shape, x, out)?;
        let [n, o, oh, ow] = dims;
        #[cfg(target_arch = "x86_64")]
        if let Some((ch, _)) = &self.channels {
            let chw = [shape[1], shape[2], shape[3]];
            ch.run_pooled(self.win, self.groups, x, chw, dims, relu, out);
            return Ok(());
        }
        let mut full = vec![0f32; n * o * oh * ow];
        self.run(x, shape, None, relu, &mut full)?;
        super::max_pool_2x2(&full, n * o, [oh, ow], out);
        Ok(())
    }

    /// Whether the channel-vector tile runs an output of `oh × ow`: when this kernel's own tiles
    /// would compute padding columns (rows not a whole number of runs), or (AVX-512's tiles)
    /// read a strided window. Measured at batch 64 on ResNet-8 and the
    /// digits CNN: with AVX-512 the channel tile took 0.6-0.8x the time on 4×4 and 8×8 maps and
    /// stride-2 windows, 1.05x on a 16×16 map of 32 channels and 1.3x on a 32×32 map of 16 (its
    /// transposed store costs more than this kernel's padding-free tiles there); with AVX2 the
    /// 4×16 channel tile took 0.5x on a 4×4 map and 1.1-1.6x on every stride-1 map whose rows
    /// are whole runs of 8; on the stride-2 windows `conv_kernels` (whole batch) read 0.9-0.97x
    /// for the 3×3s and 1.23x for the 1×1, but the engine's run in chunks of 8 samples 1.2x for
    /// the first 3×3 (a noisy host): not taken.
    #[cfg(target_arch = "x86_64")]
    fn channels_suit(&self, tile: super::ChannelTile, [_oh, ow]: [usize; 2]) -> bool {
        let strided = self.win.stride != [1, 1] && tile.tier > 1;
        strided || ow % (self.kernel.nr / 2) != 0
    }

    /// [`PackedConv::blocks`] for the direct tile reading `(x, bases, taps)`: one call for the
    /// group's blocks when the kernel's direct tile takes them ([`Kernel`]'s `direct_blocks`)
    /// and every block is whole (a position tile of `nr`, the group's channels a whole number of
    /// `mr`). Against a call per block, in wasm (relaxed module, float ResNet-8, alternating,
    /// 2026-12-06): Node 20 0.95x / 0.91-0.95x the time at batch 1 / 64, Chromium about 0.96x /
    /// 0.98x. Kept beside [`PackedConv::blocks`] rather than folded into it (a span of blocks per
    /// call there, as `QConv::blocks` does): that took the float ResNet-8 2% longer in Node (its
    /// direct tile then called through `&dyn` per position tile); so did a shared per-block
    /// helper in `tile_direct` in place of its two loops.
    #[allow(clippy::too_many_arguments)]
    fn blocks_direct(
        &self,
        [img, g, p0, nr]: [usize; 4],
        p: usize,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        part: &mut [f32],
        (x, bases, taps): (&[f32], [usize; 2], Taps),
    ) {
        let Kernel { mr, nr: full, .. } = self.kernel;
        let og = self.o / self.groups;
        if self.kernel.direct_blocks && nr == full && og.is_multiple_of(mr) {
            let a = &self.panels[g * og * self.k..][..og * self.k];
            let at = (img * self.o + g * og) * p + p0;
            let st = Store {
                out: &mut out[at..],
                stride: p,
                residual: residual.map(|r| &r[at..]),
                relu,
            };
            let bias = &self.bias[g * og..][..og];
            return self.kernel.direct_tile(a, x, bases, taps, bias, st);
        }
        let tile =
            |a: &[f32], b: &[f32], st: Store| self.kernel.direct_tile(a, x, bases, taps, b, st);
        self.blocks([img, g, p0, nr], p, residual, relu, out, part, &tile);
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
        part: &mut [f32],
        tile: &BlockTile,
    ) {
        let (full_mr, full_nr) = (self.kernel.mr, self.kernel.nr);
        let og = self.o / self.groups;
        let blocks = og.div_ceil(full_mr);
        for blk in 0..blocks {
            let (first, mr) = block_channels(blk, og, &self.kernel);
            let o0 = g * og + first;
            let a = &self.panels[(g * blocks + blk) * self.k * full_mr..][..self.k * full_mr];
            let at = (img * self.o + o0) * p + p0;
            if nr == full_nr && (mr == full_mr || self.kernel.partial_rows) {
                // (a block of fewer channels than the tile's rows, stored straight: measured
                // on AVX2 in-process against the scratch tile, ResNet-8's layers at batch 64,
                // 4-15% less time on 16-channel outputs, 2-5% on 32 and 64)
                let st = Store {
                    out: &mut out[at..],
                    stride: p,
                    residual: residual.map(|r| &r[at..]),
                    relu,
                };
                // the block's biases as they are (mr of them, full_mr unless partial_rows): a
                // padded copy per tile took the float ResNet-8 2-4% longer in wasm (Node 20,
                // alternating; a run-time length made it memset and memcpy calls)
                tile(a, &self.bias[o0..o0 + mr], st);
                continue;
            }
            let mut bias = [0f32; MAX_MR];
            let bias = &mut bias[..full_mr];
            bias[..mr].copy_from_slice(&self.bias[o0..o0 + mr]);
            // A partial tile: computed whole into `part`, then the part that exists.
            let st = Store {
                out: part,
                stride: full_nr,
                residual: None,
                relu: false,
            };
            tile(a, bias, st);
            for i in 0..mr {
                let dst = &mut out[at + i * p..][..nr];
                for (j, d) in dst.iter_mut().enumerate() {
                    let r = residual.map(|r| r[at + i * p + j]);
                    *d = finish(part[i * full_nr + j], r, relu);
                }
            }
        }
    }

    /// Packs the `k × full` input panel (`full` the kernel's `nr`) of output positions
    /// `p0..p0 + nr` of one image's group (`x`: `[cg, h, w]`).
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        x: &[f32],
        hw: [usize; 3],
        p0: usize,
        nr: usize,
        slots: &[usize],
        bt: &mut [f32],
    ) {
        pack(
            self.win,
            self.cg,
            x,
            hw,
            p0,
            nr,
            self.kernel.nr,
            Some(slots),
            bt,
        )
    }
}

/// Where each tap `ki · kw + kj` of a window goes in a channel's rows of the reduction: ordered
/// by the offset it reads at in the phase-split image ([`split_phases`]): by phase (row mod
/// stride, column mod stride), then by row and column within the phase. So a direct tile reads
/// its rows in memory order, one phase plane after another (the tiles take any order: [`Taps`]),
/// and the weights are packed in the same order. Stride 1 keeps the taps in order.
fn tap_slots(win: Window) -> Vec<usize> {
    let Window {
        kernel: [kh, kw],
        stride: [sh, sw],
        dilation: [dh, dw],
        ..
    } = win;
    // phase by phase (no sort: a sort's code would grow the wasm module), rows and columns in
    // increasing order within each
    let mut slots = vec![0; kh * kw];
    let mut next = 0;
    for a in 0..sh {
        for b in 0..sw {
            for ki in (0..kh).filter(|ki| ki * dh % sh == a) {
                for kj in (0..kw).filter(|kj| kj * dw % sw == b) {
                    slots[ki * kw + kj] = next;
                    next += 1;
                }
            }
        }
    }
    slots
}

/// Copies one `h × w` channel into the interior of its zero-padded (`ph` rows, `pw` columns)
/// image split in phases by the strides `sh = row_rank.len()` and `sw`: padded row `y`, column
/// `x` goes to plane `row_rank[y mod sh] · cols_kept + b` at `(y / sh, x / sw)` of its
/// `hq × wq`, `(b, x0, col)` in `cols` for each column phase kept (its rank, its first column in
/// `src` and that column's place in the plane's row); phases no tap reads are left out. A
/// window's tap then reads, for consecutive output positions of a row, consecutive values of one
/// plane. The padding is left as it is: zero in a buffer made zero.
#[allow(clippy::too_many_arguments)]
fn split_phases(
    src: &[f32],
    [h, w]: [usize; 2],
    ph: usize,
    [hq, wq]: [usize; 2],
    row_rank: &[Option<usize>],
    [sw, cols_kept]: [usize; 2],
    cols: &[(usize, usize, usize)],
    planes: &mut [f32],
) {
    let sh = row_rank.len();
    let plane = hq * wq;
    let (mut yq, mut yr) = (ph / sh, ph % sh);
    // how many values each column phase takes from a row (no division per row)
    let counts: Vec<usize> = cols
        .iter()
        .map(|&(_, x0, _)| (w - x0).div_ceil(sw))
        .collect();
    for row in src.chunks_exact(w).take(h) {
        if let Some(a) = row_rank[yr] {
            let at = |b: usize, col: usize| (a * cols_kept + b) * plane + yq * wq + col;
            if let (2, [(b0, 0, c0), (b1, 1, c1)] | [(b1, 1, c1), (b0, 0, c0)]) = (sw, cols) {
                // both column phases in one pass over the row's pairs (planes b0 and b1)
                let (i0, i1) = (at(*b0, *c0), at(*b1, *c1));
                let (n0, n1) = (w.div_ceil(2), w / 2);
                let (even, odd) = match i0 < i1 {
                    true => {
                        let (lo, hi) = planes.split_at_mut(i1);
                        (&mut lo[i0..i0 + n0], &mut hi[..n1])
                    }
                    false => {
                        let (lo, hi) = planes.split_at_mut(i0);
                        (&mut hi[..n0], &mut lo[i1..i1 + n1])
                    }
                };
                deinterleave(row, even, odd);
            } else {
                for (&(b, x0, col), &count) in cols.iter().zip(&counts) {
                    strided_copy(&mut planes[at(b, col)..][..count], &row[x0..], sw);
                }
            }
        }
        yr += 1;
        if yr == sh {
            (yq, yr) = (yq + 1, 0);
        }
    }
}

/// `dst[i] = src[i · step]` for every `i` (`src` must hold them). Stride 2 as a loop over
/// pairs, which LLVM vectorises (with a scalar tail), where indexing by `i · step` stays
/// scalar: the ResNet-8's 1x1 stride-2 convs (packed panels) took 8-20% less time natively at
/// batch 64 on AVX2. `split_phases` uses it for a lone column phase (a stride-2 window that
/// reads both goes through [`deinterleave`]), and [`super::QConv`] to gather a strided 1×1
/// window's pixels.
#[inline]
pub(super) fn strided_copy<T: Copy>(dst: &mut [T], src: &[T], step: usize) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * step < src.len(),
        "strided_copy: the source is short"
    );
    match step {
        1 => dst.copy_from_slice(&src[..n]),
        2 => {
            let pairs = src[..2 * n - 1].chunks_exact(2);
            if let [v] = pairs.remainder() {
                dst[n - 1] = *v;
            }
            for (d, pair) in dst.iter_mut().zip(pairs) {
                *d = pair[0];
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[i * step];
            }
        }
    }
}

/// `even[i] = row[2i]`, `odd[i] = row[2i + 1]`: a row's two column phases of stride 2 in one
/// pass. Every value of every pair is used, so LLVM vectorises the loop without the scalar
/// tail it gives a loop over one value of each pair (a gap at the end), which was a third of
/// the phase split's time. Not inlined: inlined into `PackedConv::run`, LLVM lost the slices'
/// noalias and took the scalar loop (a stride-2 3x3 conv ran 4-9% slower natively).
#[inline(never)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let half = row.len() / 2;
    if let [v] = row.chunks_exact(2).remainder() {
        even[half] = *v;
    }
    for ((pair, e), o) in row
        .chunks_exact(2)
        .zip(&mut even[..half])
        .zip(&mut odd[..half])
    {
        *e = pair[0];
        *o = pair[1];
    }
}

/// The output shape of a convolution (window `win`, `cg` input channels in each of `groups`
/// groups, `o` outputs) for an input of shape `[n, c, h, w]`, or the error naming the misfit. The
/// float and the integer kernels share it.
pub(super) fn output_shape(
    win: Window,
    cg: usize,
    groups: usize,
    o: usize,
    x: &[usize],
) -> Result<[usize; 4]> {
    let [n, c, h, w] = x[..] else {
        shape_err!("Conv2d: expects input [N, C, H, W], got {x:?}");
    };
    if c != cg * groups {
        shape_err!(
            "Conv2d: input with {c} channels does not fit a weight for {} (groups={groups})",
            cg * groups
        );
    }
    let Some([oh, ow]) = win.output_size(h, w) else {
        shape_err!(
            "Conv2d: a {:?} kernel (dilation {:?}, padding {:?}) does not fit input {x:?}",
            win.kernel,
            win.dilation,
            win.padding
        );
    };
    Ok([n, o, oh, ow])
}

/// `dims` (the output shape) when the input `x` of shape `shape`, `residual` and `out` have the
/// lengths those shapes need, else the error.
pub(super) fn checked_buffers(
    dims: [usize; 4],
    shape: &[usize],
    x: &[f32],
    residual: Option<&[f32]>,
    out: &[f32],
) -> Result<[usize; 4]> {
    let [n, o, oh, ow] = dims;
    if x.len() != shape.iter().product::<usize>()
        || out.len() != n * o * oh * ow
        || residual.is_some_and(|r| r.len() != out.len())
    {
        shape_err!("Conv2d: buffers do not fit input {shape:?} and output [{n}, {o}, {oh}, {ow}]");
    }
    Ok(dims)
}

/// A pooled convolution's checks ([`PackedConv::run_pooled`], [`super::QConv::run_pooled`]):
/// the convolution's output `dims` at least 2×2, `x` of `shape` and `out` the pooled
/// `[n, o, oh / 2, ow / 2]`.
pub(super) fn checked_pooled(
    dims: [usize; 4],
    shape: &[usize],
    x: &[f32],
    out: &[f32],
) -> Result<[usize; 4]> {
    let [n, o, oh, ow] = dims;
    if oh < 2 || ow < 2 {
        shape_err!("MaxPool2d: a [2, 2] window does not fit input {dims:?}");
    }
    let pooled = [n, o, oh / 2, ow / 2];
    if x.len() != shape.iter().product::<usize>() || out.len() != pooled.iter().product::<usize>() {
        shape_err!("Conv2d: buffers do not fit input {shape:?} and pooled output {pooled:?}");
    }
    Ok(dims)
}

/// Packs the `k × full` input panel of output positions `p0..p0 + nr` of one image's group
/// (`x`: `[cg, h, w]`) of a convolution with window `win`, for a tile `full` positions wide: row
/// `(ci, ki, kj)` holds the input each position's tap reads, or 0 (`T::default()`) in the padding;
/// columns past `nr` are 0; `slots` puts tap `ki · kw + kj` at another row of its channel's (the
/// float panels' order, see `taps`). The float kernels pack f32, the integer kernel ([`super::qconv`]) i16.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack<T: Copy + Default>(
    win: Window,
    cg: usize,
    x: &[T],
    [h, w, ow]: [usize; 3],
    p0: usize,
    nr: usize,
    full: usize,
    slots: Option<&[usize]>,
    bt: &mut [T],
) {
    let Window {
        kernel: [kh, kw],
        stride: [sh, sw],
        padding: [ph, pw],
        dilation: [dh, dw],
    } = win;
    if nr < full {
        bt.fill(T::default());
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
                for ci in 0..cg {
                    let t = ki * kw + kj;
                    let r = ci * kh * kw + slots.map_or(t, |s| s[t]);
                    let dst = &mut bt[r * full + col..][..len];
                    if !row_in || a == b {
                        dst.fill(T::default());
                        continue;
                    }
                    let src = (ci * h + iy as usize) * w + lo * sw + off - pw;
                    if len == full && a == 0 && b == full && sw == 1 {
                        dst.copy_from_slice(&x[src..src + full]);
                        continue;
                    }
                    dst[..a].fill(T::default());
                    dst[b..].fill(T::default());
                    strided_copy(&mut dst[a..b], &x[src..], sw);
                }
            }
        }
        pos += len;
        col += len;
    }
}
