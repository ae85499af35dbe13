//! x86-64 only: convolution tiles with the output channels in the vectors, as MLAS's NCHWc
//! kernels and XNNPACK's run them, over kiln's NCHW values: a tile is `mr` output positions ×
//! `nc` output channels; each position's inputs are broadcast from wherever its window lies in a
//! zero-padded copy of the image (or in the input itself when there is no padding), and each
//! reduction row of the weights (packed once, `nc` channels wide, bias at the panel's head) is
//! loaded as vectors. So any stride, dilation or map size fills every lane: the positions of a
//! tile may come from different rows and images (the batch folds into the positions, where
//! [`super::PackedConv`]'s own tiles, positions in the vectors, leave most lanes of a 4×4 or 8×8
//! map's vectors empty or compute padding columns). The tile is stored transposed into NCHW, with
//! the residual added and ReLU applied on the way.

use super::conv::finish;
use super::tile::Taps;
use crate::autograd::Window;

/// Where a channel tile goes.
pub(super) enum ChannelStore<'a> {
    /// `mr` rows of `nc`, as computed.
    Tile(&'a mut [f32]),
    /// Row by row: position `i`'s `nc` channels at `i · stride` (a Linear layer's rows), ReLU
    /// applied.
    Rows {
        out: &'a mut [f32],
        stride: usize,
        relu: bool,
    },
    /// Transposed: the tile's `mr` positions are consecutive, channel `j < chans` a run of `mr`
    /// at `j · stride`, the residual's at the same place added, then ReLU.
    Nchw {
        out: &'a mut [f32],
        stride: usize,
        residual: Option<&'a [f32]>,
        relu: bool,
        chans: usize,
    },
    /// Pooled: the tile's `mr` positions are `mr / 4` windows of a 2×2 max pool, four positions
    /// each in row order; ReLU applied to every position, then each window's maximum taken (a
    /// later position wins only when greater, as [`super::max_pool_2x2`]); window `i`'s channel
    /// `j < chans` goes to `j · stride + i` (windows consecutive in an NCHW plane).
    Pooled {
        out: &'a mut [f32],
        stride: usize,
        relu: bool,
        chans: usize,
    },
    /// As `Pooled`, the `mr / 4` windows stored as rows of `nc`.
    PooledTile { out: &'a mut [f32], relu: bool },
}

/// `run(w, bias, x, bases, taps, dst)`: `c[i][j] = bias[j] + Σ_r x[bases[i] + offsets[r]] ·
/// w[r · nc + j]` for `i < mr`, `j < nc` (the [`Taps`]' offsets), stored into `dst`. Checks its
/// slices.
pub(super) type ChannelTileFn = fn(&[f32], &[f32], &[f32], &[usize], Taps, ChannelStore);

/// A channel-vector microkernel: `mr` positions × `nc` channels.
#[derive(Clone, Copy)]
pub struct ChannelTile {
    pub(super) mr: usize,
    pub(super) nc: usize,
    pub(super) run: ChannelTileFn,
    pub(super) name: &'static str,
    /// Its instruction set's rank (AVX-512 2, AVX2 1): kiln's plan takes the highest the CPU
    /// has; the tests run every one.
    pub(super) tier: u8,
}

impl std::fmt::Debug for ChannelTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl ChannelTile {
    /// The channel tiles this CPU runs, fastest instruction set first (AVX-512: 8×32 and 8×16;
    /// AVX2 with FMA: 4×16 and 8×8; none without them).
    pub fn available() -> &'static [ChannelTile] {
        static ALL: std::sync::OnceLock<Vec<ChannelTile>> = std::sync::OnceLock::new();
        ALL.get_or_init(super::x86::channel_tiles)
    }

    /// The tile for `og` output channels per group: of the fastest instruction set's, the one
    /// that pads the fewest channels, the widest on a tie.
    pub(super) fn for_channels(og: usize) -> Option<ChannelTile> {
        let pad = |t: &ChannelTile| og.div_ceil(t.nc) * t.nc - og;
        let all = Self::available();
        let tier = all.first()?.tier;
        let best = all.iter().filter(|t| t.tier == tier);
        let least = best.clone().map(pad).min()?;
        best.clone().find(|t| pad(t) == least).copied()
    }

    /// Its name, e.g. `"avx512f channels 8x32"`.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A convolution's weights packed for a [`ChannelTile`]: per group, `ceil(og / nc)` panels of
/// `k` rows of `nc` channels (zero past the group's channels) and a bias of `nc`.
#[derive(Clone, Debug)]
pub(super) struct ChannelPanels {
    tile: ChannelTile,
    og: usize,
    k: usize,
    blocks: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

/// Padded images per chunk: about this many values at most (a chunk's copy stays in L2).
const CHUNK_VALUES: usize = 1 << 16;

/// The images a convolution's tiles read: image `i` of a chunk starts at `base + i · stride`
/// in `src`, its rows `row` values apart.
struct Image<'a> {
    src: &'a [f32],
    base: usize,
    stride: usize,
    row: usize,
}

impl ChannelPanels {
    /// `weight` `[o, cg, kh, kw]` (standard layout, checked by the caller), `bias` `[o]`.
    pub(super) fn new(
        weight: &[f32],
        [o, cg, kh, kw]: [usize; 4],
        bias: &[f32],
        groups: usize,
        tile: ChannelTile,
    ) -> Self {
        let (og, k, nc) = (o / groups, cg * kh * kw, tile.nc);
        let blocks = og.div_ceil(nc);
        let mut panels = vec![0f32; groups * blocks * k * nc];
        let mut b = vec![0f32; groups * blocks * nc];
        for (ch, w) in weight.chunks_exact(k.max(1)).enumerate().take(o) {
            let (g, j) = (ch / og, ch % og);
            let blk = g * blocks + j / nc;
            for (r, &v) in w.iter().enumerate() {
                panels[(blk * k + r) * nc + j % nc] = v;
            }
            b[blk * nc + j % nc] = bias[ch];
        }
        ChannelPanels {
            tile,
            og,
            k,
            blocks,
            panels,
            bias: b,
        }
    }

    /// The tile it is packed for.
    pub(super) fn tile(&self) -> ChannelTile {
        self.tile
    }

    /// Panel `blk` (counted across groups: group `g`'s are `g · blocks..`) and its bias.
    fn block(&self, blk: usize) -> (&[f32], &[f32]) {
        let (k, nc) = (self.k, self.tile.nc);
        (
            &self.panels[blk * k * nc..][..k * nc],
            &self.bias[blk * nc..][..nc],
        )
    }

    /// Where output channel `ch`'s column starts: (its panel's first value, its bias's index).
    fn column(&self, ch: usize) -> (usize, usize) {
        let nc = self.tile.nc;
        let (g, j) = (ch / self.og, ch % self.og);
        let blk = g * self.blocks + j / nc;
        (blk * self.k * nc + j % nc, blk * nc + j % nc)
    }

    /// Multiplies output channel `i` by `s[i]` (weights and bias).
    pub(super) fn scale_channels(&mut self, s: &[f32]) {
        let nc = self.tile.nc;
        for (ch, &si) in s.iter().enumerate() {
            let (start, b) = self.column(ch);
            for v in self.panels[start..].iter_mut().step_by(nc).take(self.k) {
                *v *= si;
            }
            self.bias[b] *= si;
        }
    }

    /// Adds `t[i]` to output channel `i`'s bias.
    pub(super) fn shift_channels(&mut self, t: &[f32]) {
        for (ch, &ti) in t.iter().enumerate() {
            let b = self.column(ch).1;
            self.bias[b] += ti;
        }
    }

    /// The offset at which reduction row `(ci, ki, kj)` reads from its position's window origin
    /// in the images [`ChannelPanels::chunks`] hands the tiles (`cg` channels of `h × w`).
    fn offsets(win: Window, cg: usize, [h, w]: [usize; 2]) -> Vec<usize> {
        let Window {
            kernel: [kh, kw],
            padding: [ph, pw],
            dilation: [dh, dw],
            ..
        } = win;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let mut offsets = Vec::with_capacity(cg * kh * kw);
        for ci in 0..cg {
            for ki in 0..kh {
                for kj in 0..kw {
                    offsets.push(ci * hp * wp + ki * dh * wp + kj * dw);
                }
            }
        }
        offsets
    }

    /// Walks the images the tiles read, group by group and chunk by chunk: a zero-padded copy
    /// of a chunk of images' group (about [`CHUNK_VALUES`] values), or the input itself when the
    /// window has no padding; `f(g, img0, imgs, image)` for each.
    fn chunks(
        win: Window,
        groups: usize,
        x: &[f32],
        [c, h, w]: [usize; 3],
        n: usize,
        mut f: impl FnMut(usize, usize, usize, Image),
    ) {
        let [ph, pw] = win.padding;
        let cg = c / groups;
        let padded = ph > 0 || pw > 0;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let per_image = cg * hp * wp;
        let chunk = match padded {
            true => (CHUNK_VALUES / per_image.max(1)).clamp(1, n.max(1)),
            false => n.max(1),
        };
        let mut xp = if padded {
            vec![0f32; chunk * per_image]
        } else {
            Vec::new()
        };
        for g in 0..groups {
            for img0 in (0..n).step_by(chunk) {
                let imgs = chunk.min(n - img0);
                let image = if padded {
                    for (i, dst) in xp.chunks_exact_mut(per_image).take(imgs).enumerate() {
                        let from = &x[((img0 + i) * c + g * cg) * h * w..][..cg * h * w];
                        for (plane, src) in
                            dst.chunks_exact_mut(hp * wp).zip(from.chunks_exact(h * w))
                        {
                            for (row, s) in plane[ph * wp..]
                                .chunks_exact_mut(wp)
                                .zip(src.chunks_exact(w))
                            {
                                row[pw..pw + w].copy_from_slice(s);
                            }
                        }
                    }
                    Image {
                        src: &xp,
                        base: 0,
                        stride: per_image,
                        row: wp,
                    }
                } else {
                    Image {
                        src: x,
                        base: (img0 * c + g * cg) * h * w,
                        stride: c * h * w,
                        row: wp,
                    }
                };
                f(g, img0, imgs, image);
            }
        }
    }

    /// `out = relu?(conv(x) + bias + residual?)` for `x` `[n, c, h, w]` and output `dims`
    /// (checked by the caller: [`super::conv::checked_buffers`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        win: Window,
        groups: usize,
        x: &[f32],
        chw: [usize; 3],
        [n, o, oh, ow]: [usize; 4],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let [sh, sw] = win.stride;
        let ChannelTile { mr, nc, run, .. } = self.tile;
        let (og, p) = (self.og, oh * ow);
        let offsets = Self::offsets(win, chw[0] / groups, [chw[1], chw[2]]);
        let taps = Taps::new(&offsets);
        let mut bases = vec![0usize; mr];
        let mut scratch = vec![0f32; mr * nc];
        Self::chunks(win, groups, x, chw, n, |g, img0, imgs, im| {
            let total = imgs * p;
            // the position of q0, walked forward tile by tile
            let (mut img, mut oy, mut ox) = (0usize, 0usize, 0usize);
            for q0 in (0..total).step_by(mr) {
                let len = mr.min(total - q0);
                let first = (img, oy * ow + ox);
                for i in 0..mr {
                    if i < len {
                        bases[i] = im.base + img * im.stride + oy * sh * im.row + ox * sw;
                        ox += 1;
                        if ox == ow {
                            (ox, oy) = (0, oy + 1);
                            if oy == oh {
                                (oy, img) = (0, img + 1);
                            }
                        }
                    } else {
                        bases[i] = bases[len - 1];
                    }
                }
                for blk in 0..self.blocks {
                    let (panel, bias) = self.block(g * self.blocks + blk);
                    let o0 = g * og + blk * nc;
                    let chans = nc.min(og - blk * nc);
                    let (im0, pos) = (img0 + first.0, first.1);
                    if len == mr && pos + len <= p {
                        let at = (im0 * o + o0) * p + pos;
                        let dst = ChannelStore::Nchw {
                            out: &mut out[at..],
                            stride: p,
                            residual: residual.map(|r| &r[at..]),
                            relu,
                            chans,
                        };
                        run(panel, bias, im.src, &bases, taps, dst);
                        continue;
                    }
                    let dst = ChannelStore::Tile(&mut scratch);
                    run(panel, bias, im.src, &bases, taps, dst);
                    let at = [im0, pos, len];
                    self.store(&scratch, at, [o0, chans], [o, p], residual, relu, out);
                }
            }
        });
    }

    /// `out = max_pool_2x2(relu?(conv(x) + bias))` for `x` `[n, c, h, w]` and the convolution's
    /// output `dims` (checked by the caller), `out` `[n, o, oh / 2, ow / 2]`: each tile computes
    /// the four positions of `mr / 4` pooling windows and stores their maxima, so the positions
    /// no window covers (an odd last row or column) are never computed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_pooled(
        &self,
        win: Window,
        groups: usize,
        x: &[f32],
        chw: [usize; 3],
        [n, o, oh, ow]: [usize; 4],
        relu: bool,
        out: &mut [f32],
    ) {
        let [sh, sw] = win.stride;
        let ChannelTile { mr, nc, run, .. } = self.tile;
        let (og, qh, qw) = (self.og, oh / 2, ow / 2);
        let (p, per) = (qh * qw, mr / 4);
        let offsets = Self::offsets(win, chw[0] / groups, [chw[1], chw[2]]);
        let taps = Taps::new(&offsets);
        let mut bases = vec![0usize; mr];
        let mut scratch = vec![0f32; per * nc];
        Self::chunks(win, groups, x, chw, n, |g, img0, imgs, im| {
            let total = imgs * p;
            // the window of q0, walked forward tile by tile
            let (mut img, mut qy, mut qx) = (0usize, 0usize, 0usize);
            for q0 in (0..total).step_by(per) {
                let len = per.min(total - q0);
                let first = (img, qy * qw + qx);
                for i in 0..per {
                    if i < len {
                        let origin = im.base + img * im.stride + 2 * (qy * sh * im.row + qx * sw);
                        for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                            bases[4 * i + a] = origin + b.0 * sh * im.row + b.1 * sw;
                        }
                        qx += 1;
                        if qx == qw {
                            (qx, qy) = (0, qy + 1);
                            if qy == qh {
                                (qy, img) = (0, img + 1);
                            }
                        }
                    } else {
                        bases.copy_within(4 * (len - 1)..4 * len, 4 * i);
                    }
                }
                for blk in 0..self.blocks {
                    let (panel, bias) = self.block(g * self.blocks + blk);
                    let o0 = g * og + blk * nc;
                    let chans = nc.min(og - blk * nc);
                    let (im0, pos) = (img0 + first.0, first.1);
                    if len == per && pos + len <= p {
                        let at = (im0 * o + o0) * p + pos;
                        let dst = ChannelStore::Pooled {
                            out: &mut out[at..],
                            stride: p,
                            relu,
                            chans,
                        };
                        run(panel, bias, im.src, &bases, taps, dst);
                        continue;
                    }
                    let dst = ChannelStore::PooledTile {
                        out: &mut scratch,
                        relu,
                    };
                    run(panel, bias, im.src, &bases, taps, dst);
                    for i in 0..len {
                        let (img_i, ps) = (im0 + (pos + i) / p, (pos + i) % p);
                        for j in 0..chans {
                            out[(img_i * o + o0 + j) * p + ps] = scratch[i * nc + j];
                        }
                    }
                }
            }
        });
    }

    /// Stores a tile (`scratch`: `mr` rows of `nc`) transposed, one value at a time (a last
    /// partial tile, or one across images): `len` positions from position `pos` of image `img` on, channels `o0..o0 + chans`, in an NCHW output of `o` channels of `p`.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        scratch: &[f32],
        [img, pos, len]: [usize; 3],
        [o0, chans]: [usize; 2],
        [o, p]: [usize; 2],
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
    ) {
        let nc = self.tile.nc;
        for i in 0..len {
            let (im, ps) = (img + (pos + i) / p, (pos + i) % p);
            for j in 0..chans {
                let at = (im * o + o0 + j) * p + ps;
                out[at] = finish(scratch[i * nc + j], residual.map(|r| r[at]), relu);
            }
        }
    }
}

/// A Linear layer's weights (`[o, k]`, PyTorch's layout) packed for the channel tile, bias at
/// each panel's head: `out = relu?(x · wᵀ + bias)` for any number of rows, the rows as the tile's
/// positions (read in place) and the outputs in its vectors, stored row by row. x86-64 with
/// AVX-512 or AVX2+FMA only ([`PackedLinear::new`] is None elsewhere).
#[derive(Clone, Debug)]
pub struct PackedLinear {
    o: usize,
    k: usize,
    panels: ChannelPanels,
}

impl PackedLinear {
    /// Packs `weight` (`[o, k]` row-major) and an optional bias `[o]`; None when the CPU has no
    /// channel tile, or when the slices do not fit the shape.
    pub fn new(weight: &[f32], [o, k]: [usize; 2], bias: Option<&[f32]>) -> Option<Self> {
        if weight.len() != o * k || bias.is_some_and(|b| b.len() != o) || o == 0 {
            return None;
        }
        let tile = ChannelTile::for_channels(o)?;
        let zeros = vec![0f32; o];
        let panels = ChannelPanels::new(weight, [o, k, 1, 1], bias.unwrap_or(&zeros), 1, tile);
        Some(PackedLinear { o, k, panels })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.o
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `out = relu?(x · wᵀ + bias)`: `x` is `rows × k`, `out` `rows × o`, row-major.
    pub fn run(&self, x: &[f32], rows: usize, relu: bool, out: &mut [f32]) -> crate::Result<()> {
        let (o, k) = (self.o, self.k);
        if x.len() != rows * k || out.len() != rows * o {
            crate::shape_err!(
                "Linear: {} inputs and {} outputs do not fit {rows} rows of {k} → {o}",
                x.len(),
                out.len()
            );
        }
        let p = &self.panels;
        let ChannelTile { mr, nc, run, .. } = p.tile;
        let offsets: Vec<usize> = (0..k).collect();
        let taps = Taps::new(&offsets);
        let mut bases = vec![0usize; mr];
        let mut scratch = vec![0f32; mr * nc];
        for r0 in (0..rows).step_by(mr) {
            let len = mr.min(rows - r0);
            for (i, b) in bases.iter_mut().enumerate() {
                *b = (r0 + i.min(len - 1)) * k;
            }
            for blk in 0..p.blocks {
                let (panel, bias) = p.block(blk);
                let (c0, chans) = (blk * nc, nc.min(o - blk * nc));
                if len == mr && chans == nc {
                    let dst = ChannelStore::Rows {
                        out: &mut out[r0 * o + c0..],
                        stride: o,
                        relu,
                    };
                    run(panel, bias, x, &bases, taps, dst);
                    continue;
                }
                run(
                    panel,
                    bias,
                    x,
                    &bases,
                    taps,
                    ChannelStore::Tile(&mut scratch),
                );
                for i in 0..len {
                    let dst = &mut out[(r0 + i) * o + c0..][..chans];
                    for (d, &v) in dst.iter_mut().zip(&scratch[i * nc..]) {
                        *d = finish(v, None, relu);
                    }
                }
            }
        }
        Ok(())
    }
}
