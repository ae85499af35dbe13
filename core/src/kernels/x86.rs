//! x86-64 microkernels for [`super::PackedConv`]: the same tile as `tile.rs` (output channels
//! splatted from a packed weight panel, positions in vectors, bias/residual/ReLU in the store), in
//! AVX-512F or AVX2+FMA intrinsics, chosen when the CPU has them ([`kernels`], detected once).
//!
//! Tiles sized for the register file, as MLAS and XNNPACK size theirs: AVX2 has 16 ymm registers,
//! so 6 channels × 16 positions (12 accumulators, two input vectors and a splat: 15); AVX-512 has
//! 32 zmm registers, so 8 channels × 32 positions (16 accumulators; 8 rather than MLAS's 12 rows
//! because kiln's convolutions have 8·2ⁿ channels: no zero rows). Per reduction step a tile makes
//! two vector loads, `mr` broadcasts from memory and `2·mr` fused multiply-adds.

use super::conv::Kernel;
use super::tile::{Store, Taps};
use core::arch::x86_64::*;

/// The kernels this CPU runs, fastest first.
pub(super) fn kernels() -> Vec<Kernel> {
    let mut all = Vec::new();
    if is_x86_feature_detected!("avx512f") {
        all.push(avx512::KERNEL);
    }
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        all.push(avx2::KERNEL);
    }
    all
}

/// The checks that make a tile's raw-pointer loop in bounds: `a` is `k` rows of `mr`, `bias`
/// holds the tile's rows (`1..=mr`: a tile may compute fewer rows than its panel holds), the
/// store holds that many rows of `nr` at its stride (and so does the residual).
fn check(a: &[f32], bias: &[f32], st: &Store, mr: usize, nr: usize) -> usize {
    let rows = bias.len();
    assert!(
        a.len().is_multiple_of(mr) && (1..=mr).contains(&rows),
        "a tile's panel"
    );
    let need = (rows - 1) * st.stride + nr;
    assert!(st.out.len() >= need, "a tile's output");
    assert!(
        st.residual.is_none_or(|r| r.len() >= need),
        "a tile's residual"
    );
    a.len() / mr
}

macro_rules! x86_kernel {
    (
        $module:ident, $features:literal, $name:literal, mr = $mr:literal, rows = [$($m:literal),+],
        lanes = $lanes:literal,
        $zero:ident, $set1:ident, $loadu:ident, $storeu:ident, $fmadd:ident, $add:ident, $max:ident
    ) => {
        mod $module {
            use super::*;

            const MR: usize = $mr;
            /// Positions per vector: a tile is two runs of them.
            const RUN: usize = $lanes;
            const NR: usize = 2 * RUN;

            /// Only handed out by [`kernels`] once the CPU was seen to have the features.
            pub(super) const KERNEL: Kernel = Kernel {
                mr: MR,
                nr: NR,
                packed,
                direct,
                direct_blocks: false,
                name: $name,
                strided_1x1_in_place: false,
                partial_rows: true,
            };

            /// [`tile`] for `bias.len()` rows (`1..=MR`, which [`check`] asserted).
            ///
            /// # Safety
            /// As [`tile`]'s.
            #[inline(always)]
            unsafe fn rows(
                k: usize,
                a: *const f32,
                row: impl Fn(usize) -> (*const f32, *const f32),
                bias: &[f32],
                st: Store,
            ) {
                // SAFETY: the caller's.
                unsafe {
                    match bias.len() {
                        $($m => tile::<$m>(k, a, row, bias, st),)+
                        _ => unreachable!("check asserts 1..=MR rows"),
                    }
                }
            }

            /// `c = bias + Σ_r a[r][..M] ⊗ row(r)` (the first `M` of the panel's `MR` rows)
            /// stored with residual and ReLU; `row(r)` gives the two runs of input row `r`.
            /// Fewer rows than `MR` cost no more per row than a whole tile (a panel's last
            /// block: 32 channels are five tiles of 6 and one of 2).
            ///
            /// # Safety
            /// The CPU has the features; `M <= MR`; `a` holds `k · MR` values; each `row(r)`
            /// for `r < k` points at two runs of `RUN` readable values; the store passed
            /// [`check`] with `M` rows.
            #[target_feature(enable = $features)]
            unsafe fn tile<const M: usize>(
                k: usize,
                a: *const f32,
                row: impl Fn(usize) -> (*const f32, *const f32),
                bias: &[f32],
                st: Store,
            ) {
                let mut c = [[$zero(); 2]; M];
                for (ci, &b) in c.iter_mut().zip(bias) {
                    *ci = [$set1(b); 2];
                }
                for r in 0..k {
                    let (p0, p1) = row(r);
                    // SAFETY: the caller's contract on `row` and `a`.
                    let (b0, b1) = unsafe { ($loadu(p0), $loadu(p1)) };
                    let ar = unsafe { a.add(r * MR) };
                    for (i, ci) in c.iter_mut().enumerate() {
                        let av = $set1(unsafe { *ar.add(i) });
                        ci[0] = $fmadd(av, b0, ci[0]);
                        ci[1] = $fmadd(av, b1, ci[1]);
                    }
                }
                let zero = $zero();
                let out = st.out.as_mut_ptr();
                for (i, ci) in c.iter().enumerate() {
                    let at = i * st.stride;
                    let [mut v0, mut v1] = *ci;
                    if let Some(r) = st.residual {
                        // SAFETY: `check` saw `mr` rows of `nr` at the stride.
                        let r = unsafe { r.as_ptr().add(at) };
                        unsafe {
                            v0 = $add(v0, $loadu(r));
                            v1 = $add(v1, $loadu(r.add(RUN)));
                        }
                    }
                    if st.relu {
                        // max(v, 0) gives its second operand when v is NaN: 0, as Tape::relu
                        v0 = $max(v0, zero);
                        v1 = $max(v1, zero);
                    }
                    // SAFETY: as the residual's.
                    unsafe {
                        $storeu(out.add(at), v0);
                        $storeu(out.add(at + RUN), v1);
                    }
                }
            }

            fn packed(a: &[f32], b: &[f32], bias: &[f32], st: Store) {
                let k = check(a, bias, &st, MR, NR);
                assert!(b.len() >= k * NR, "a tile's input panel");
                let b = b.as_ptr();
                // SAFETY: KERNEL is only handed out on a CPU with the features; `b` holds `k`
                // rows of NR; `check` saw `a` and the store.
                unsafe {
                    rows(
                        k,
                        a.as_ptr(),
                        |r| (b.add(r * NR), b.add(r * NR + RUN)),
                        bias,
                        st,
                    )
                }
            }

            fn direct(
                a: &[f32],
                x: &[f32],
                bases: [usize; 2],
                taps: Taps,
                bias: &[f32],
                st: Store,
            ) {
                let k = check(a, bias, &st, MR, NR);
                let (offsets, last) = (taps.offsets(), taps.reach());
                assert!(offsets.len() == k, "a tile's row offsets");
                assert!(
                    k == 0 || bases[0].max(bases[1]) + last + RUN <= x.len(),
                    "a tile's input"
                );
                let x = x.as_ptr();
                // SAFETY: as `packed`'s; every row lies in `x` by the assert, as no offset passes
                // `last` (Taps).
                unsafe {
                    rows(
                        k,
                        a.as_ptr(),
                        |r| {
                            let o = *offsets.get_unchecked(r);
                            (x.add(bases[0] + o), x.add(bases[1] + o))
                        },
                        bias,
                        st,
                    )
                }
            }
        }
    };
}

x86_kernel!(
    avx2,
    "avx2,fma",
    "avx2+fma 6x16",
    mr = 6,
    rows = [1, 2, 3, 4, 5, 6],
    lanes = 8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_max_ps
);

x86_kernel!(
    avx512,
    "avx512f",
    "avx512f 8x32",
    mr = 8,
    rows = [1, 2, 3, 4, 5, 6, 7, 8],
    lanes = 16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_max_ps
);

/// The channel-vector tiles of [`super::channels`]: `mr` output positions × `nv` vectors of
/// output channels, the positions' inputs broadcast from wherever they lie (any image, row or
/// stride) and the weights' rows loaded as vectors. Per reduction step `nv` vector loads, `mr`
/// broadcasts and `mr · nv` fused multiply-adds; `mr = 8` keeps the positions' eight base
/// pointers in general registers.
pub(super) fn channel_tiles() -> Vec<super::channels::ChannelTile> {
    let mut all = Vec::new();
    if is_x86_feature_detected!("avx512f") {
        all.extend([avx512_channels_32::TILE, avx512_channels_16::TILE]);
    }
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        all.extend([avx2_channels_16::TILE, avx2_channels_8::TILE]);
    }
    all
}

/// Eight rows of eight floats transposed: `r[i][j]` becomes `out[j][i]` (unpacks, shuffles and
/// lane swaps, as in every AVX 8×8 transpose).
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// The checks that keep a channel tile's raw-pointer loop (`mr` positions × `nc` channels) in
/// bounds, whatever its store: every base plus the largest offset ([`Taps`]) inside `x`. Panics
/// unless the slices fit.
fn check_channel_tile(
    w: &[f32],
    bias: &[f32],
    x: &[f32],
    bases: &[usize],
    taps: Taps,
    dst: &super::channels::ChannelStore,
    [mr, nc]: [usize; 2],
) {
    use super::channels::ChannelStore;
    let k = taps.offsets().len();
    let windows = mr / 4;
    assert!(bases.len() == mr, "a tile's bases");
    assert!(
        w.len() >= k * nc && bias.len() >= nc,
        "a channel tile's panel"
    );
    match dst {
        ChannelStore::Tile(out) => assert!(out.len() >= mr * nc, "a channel tile's output"),
        ChannelStore::Rows { out, stride, .. } => {
            assert!(
                out.len() >= (mr - 1) * stride + nc,
                "a channel tile's output"
            )
        }
        ChannelStore::PooledTile { out, .. } => {
            assert!(out.len() >= windows * nc, "a channel tile's output")
        }
        ChannelStore::Pooled {
            out, stride, chans, ..
        } => {
            let need = chans.saturating_sub(1) * stride + windows;
            assert!(*chans <= nc && out.len() >= need, "a channel tile's output");
        }
        ChannelStore::Nchw {
            out,
            stride,
            residual,
            chans,
            ..
        } => {
            let need = chans.saturating_sub(1) * stride + mr;
            assert!(*chans <= nc && out.len() >= need, "a channel tile's output");
            assert!(
                residual.is_none_or(|r| r.len() >= need),
                "a channel tile's residual"
            );
        }
    }
    let far = bases.iter().copied().max().unwrap_or(0);
    assert!(
        k == 0 || far + taps.reach() < x.len(),
        "a channel tile's input"
    );
}

/// The maximum of a 2×2 pooling window's four positions (each vector: one position's channels),
/// ReLU first (max(v, 0) gives 0 for NaN, as Tape::relu); max(v, best) = v > best ? v : best, so
/// a later position wins only when greater and ties and NaN resolve as in max_pool_2x2.
#[target_feature(enable = "avx2")]
#[inline]
fn window_max8(win: [__m256; 4], relu: bool) -> __m256 {
    let zero = _mm256_setzero_ps();
    let act = |v| if relu { _mm256_max_ps(v, zero) } else { v };
    let mut best = act(win[0]);
    for &v in &win[1..] {
        best = _mm256_max_ps(act(v), best);
    }
    best
}

/// A channel tile's microkernel: `tile(k, w, bias, x, bases, offsets, dst)`.
type ChannelTileBody<const MR: usize> = unsafe fn(
    usize,
    *const f32,
    *const f32,
    *const f32,
    &[usize; MR],
    *const usize,
    super::channels::ChannelStore,
);

/// A channel tile's `run` ([`super::ChannelTile`]): the checks, then `tile`. Panics unless the
/// slices fit.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_channel_tile<const MR: usize>(
    tile: ChannelTileBody<MR>,
    nc: usize,
    w: &[f32],
    bias: &[f32],
    x: &[f32],
    bases: &[usize],
    taps: Taps,
    dst: super::channels::ChannelStore,
) {
    check_channel_tile(w, bias, x, bases, taps, &dst, [MR, nc]);
    let bases: &[usize; MR] = bases.try_into().expect("a tile's bases");
    let (w, b, xp, offsets) = (w.as_ptr(), bias.as_ptr(), x.as_ptr(), taps.offsets());
    // SAFETY: each tile's module hands its TILE out only on a CPU with the tile's features; the
    // checks above (every base plus the largest offset, Taps) keep every access inside the slices.
    unsafe { tile(offsets.len(), w, b, xp, bases, offsets.as_ptr(), dst) }
}

/// One channel's run of eight positions stored at `out[at..]`, the residual's at the same place
/// added, then ReLU (max(v, 0) gives 0 for NaN, as Tape::relu): a transposed (NCHW) store.
///
/// # Safety
/// The CPU has AVX2; `out` (and `residual`) hold eight values from `at`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_column8(
    out: &mut [f32],
    at: usize,
    residual: Option<&[f32]>,
    relu: bool,
    v: __m256,
) {
    let mut v = v;
    // SAFETY: the caller's.
    unsafe {
        if let Some(r) = residual {
            v = _mm256_add_ps(v, _mm256_loadu_ps(r.as_ptr().add(at)));
        }
        if relu {
            v = _mm256_max_ps(v, _mm256_setzero_ps());
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(at), v);
    }
}

macro_rules! x86_channel_tile {
    ($module:ident, $name:literal, nv = $nv:literal) => {
        mod $module {
            use super::super::channels::{ChannelStore, ChannelTile};
            use super::*;

            const MR: usize = 8;
            const NV: usize = $nv;
            const LANES: usize = 16;
            const NC: usize = NV * LANES;

            /// Only handed out by [`channel_tiles`] once the CPU was seen to have AVX-512F.
            pub(in super::super) const TILE: ChannelTile = ChannelTile {
                mr: MR,
                nc: NC,
                run,
                name: $name,
                tier: 2,
            };

            /// 2×2 pooling windows in a tile: four positions each.
            const WINDOWS: usize = MR / 4;

            /// The tile's windows pooled (see [`ChannelStore::Pooled`]): `WINDOWS` rows of `NC`.
            #[target_feature(enable = "avx512f")]
            fn pool(c: &[[__m512; NV]; MR], relu: bool) -> [f32; WINDOWS * NC] {
                let zero = _mm512_setzero_ps();
                // max(v, 0) gives 0 for NaN, as Tape::relu
                let act = |v| if relu { _mm512_max_ps(v, zero) } else { v };
                let mut out = [0f32; WINDOWS * NC];
                for (win, dst) in c.chunks_exact(4).zip(out.chunks_exact_mut(NC)) {
                    for j in 0..NV {
                        // max(v, best) = v > best ? v : best: a later position wins only when
                        // greater, so ties and NaN resolve as in max_pool_2x2
                        let mut best = act(win[0][j]);
                        for ci in &win[1..] {
                            best = _mm512_max_ps(act(ci[j]), best);
                        }
                        // SAFETY: `dst` holds NC values.
                        unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(j * LANES), best) };
                    }
                }
                out
            }

            /// # Safety
            /// The CPU has AVX-512F; `w` holds `k` rows of `NC`, `bias` `NC` values; every
            /// `x + bases[i] + offsets[r]` (`r < k`) is readable; `dst` passed `run`'s checks.
            #[target_feature(enable = "avx512f,avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn tile(
                k: usize,
                w: *const f32,
                bias: *const f32,
                x: *const f32,
                bases: &[usize; MR],
                offsets: *const usize,
                dst: ChannelStore,
            ) {
                let mut c = [[_mm512_setzero_ps(); NV]; MR];
                for j in 0..NV {
                    // SAFETY: `bias` holds NC values.
                    let b = unsafe { _mm512_loadu_ps(bias.add(j * LANES)) };
                    for ci in c.iter_mut() {
                        ci[j] = b;
                    }
                }
                // (wrapping: with k = 0 nothing is read through them)
                let p: [*const f32; MR] = core::array::from_fn(|i| x.wrapping_add(bases[i]));
                for r in 0..k {
                    // SAFETY: `offsets` holds `k` values and `w` `k` rows of NC; no offset passes
                    // the largest (Taps), which the caller checked for every base.
                    unsafe {
                        let off = *offsets.add(r);
                        let wr = w.add(r * NC);
                        let wv: [_; NV] =
                            core::array::from_fn(|j| _mm512_loadu_ps(wr.add(j * LANES)));
                        for (ci, pi) in c.iter_mut().zip(&p) {
                            let a = _mm512_set1_ps(*pi.add(off));
                            for j in 0..NV {
                                ci[j] = _mm512_fmadd_ps(a, wv[j], ci[j]);
                            }
                        }
                    }
                }
                let (out, stride, residual, relu, chans) = match dst {
                    ChannelStore::Tile(out) => {
                        for (i, ci) in c.iter().enumerate() {
                            for (j, &v) in ci.iter().enumerate() {
                                // SAFETY: `run` checked `out` holds MR rows of NC.
                                unsafe {
                                    _mm512_storeu_ps(out.as_mut_ptr().add(i * NC + j * LANES), v)
                                };
                            }
                        }
                        return;
                    }
                    ChannelStore::Rows { out, stride, relu } => {
                        let zero = _mm512_setzero_ps();
                        for (i, ci) in c.iter().enumerate() {
                            for (j, &v) in ci.iter().enumerate() {
                                let v = if relu { _mm512_max_ps(v, zero) } else { v };
                                // SAFETY: `run` checked MR rows of NC at the stride in `out`.
                                unsafe {
                                    _mm512_storeu_ps(
                                        out.as_mut_ptr().add(i * stride + j * LANES),
                                        v,
                                    )
                                };
                            }
                        }
                        return;
                    }
                    ChannelStore::Pooled {
                        out,
                        stride,
                        relu,
                        chans,
                    } => {
                        let pooled = pool(&c, relu);
                        for j in 0..chans {
                            for (i, row) in pooled.chunks_exact(NC).enumerate() {
                                out[j * stride + i] = row[j];
                            }
                        }
                        return;
                    }
                    ChannelStore::PooledTile { out, relu } => {
                        out[..WINDOWS * NC].copy_from_slice(&pool(&c, relu));
                        return;
                    }
                    ChannelStore::Nchw {
                        out,
                        stride,
                        residual,
                        relu,
                        chans,
                    } => (out, stride, residual, relu, chans),
                };
                // Transposed: channel `ch`'s eight positions are a run of `out` at `ch · stride`.
                for q in 0..2 * NV {
                    // eight channels of the eight positions, from the low or high half of a vector
                    let rows: [__m256; 8] = core::array::from_fn(|i| {
                        let v = _mm512_castps_pd(c[i][q / 2]);
                        _mm256_castpd_ps(match q % 2 {
                            0 => _mm512_castpd512_pd256(v),
                            _ => _mm512_extractf64x4_pd::<1>(v),
                        })
                    });
                    let cols = transpose8(rows);
                    for (j, &col) in cols.iter().enumerate() {
                        let ch = q * 8 + j;
                        if ch >= chans {
                            return;
                        }
                        // SAFETY: `run` checked `chans` rows of MR at the stride in `out` and
                        // the residual.
                        unsafe { store_column8(out, ch * stride, residual, relu, col) };
                    }
                }
            }

            /// See [`ChannelTile`]; panics unless the slices fit.
            fn run(
                w: &[f32],
                bias: &[f32],
                x: &[f32],
                bases: &[usize],
                taps: Taps,
                dst: ChannelStore,
            ) {
                run_channel_tile::<MR>(tile, NC, w, bias, x, bases, taps, dst)
            }
        }
    };
}

x86_channel_tile!(avx512_channels_32, "avx512f channels 8x32", nv = 2);
x86_channel_tile!(avx512_channels_16, "avx512f channels 8x16", nv = 1);

/// The AVX2 channel tile: 8 positions × 8 channels (one vector), 8 accumulators. AVX2's 16
/// registers leave no room for a second vector of channels (16 accumulators, a weight vector
/// and a broadcast), so per reduction step one vector load, eight broadcasts and eight fused
/// multiply-adds: more loads per multiply-add than the 6×16 tile, but every lane filled on the
/// maps and strides that tile fills poorly (a 4×4 map, pooled windows).
mod avx2_channels_8 {
    use super::super::channels::{ChannelStore, ChannelTile};
    use super::*;

    const MR: usize = 8;
    const NC: usize = 8;

    /// Only handed out by [`channel_tiles`] once the CPU was seen to have AVX2 and FMA.
    pub(in super::super) const TILE: ChannelTile = ChannelTile {
        mr: MR,
        nc: NC,
        run,
        name: "avx2+fma channels 8x8",
        tier: 1,
    };

    /// 2×2 pooling windows in a tile: four positions each.
    const WINDOWS: usize = MR / 4;

    /// The tile's windows pooled (see [`ChannelStore::Pooled`]): `WINDOWS` rows of `NC`.
    #[target_feature(enable = "avx2,fma")]
    fn pool(c: &[__m256; MR], relu: bool) -> [f32; WINDOWS * NC] {
        let mut out = [0f32; WINDOWS * NC];
        for (win, dst) in c.chunks_exact(4).zip(out.chunks_exact_mut(NC)) {
            let best = window_max8(win.try_into().expect("4 positions"), relu);
            // SAFETY: `dst` holds NC values.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), best) };
        }
        out
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `w` holds `k` rows of `NC`, `bias` `NC` values; every
    /// `x + bases[i] + offsets[r]` (`r < k`) is readable; `dst` passed
    /// [`check_channel_tile`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        k: usize,
        w: *const f32,
        bias: *const f32,
        x: *const f32,
        bases: &[usize; MR],
        offsets: *const usize,
        dst: ChannelStore,
    ) {
        // SAFETY: `bias` holds NC values.
        let mut c = [unsafe { _mm256_loadu_ps(bias) }; MR];
        // (wrapping: with k = 0 nothing is read through them)
        let p: [*const f32; MR] = core::array::from_fn(|i| x.wrapping_add(bases[i]));
        for r in 0..k {
            // SAFETY: `offsets` holds `k` values and `w` `k` rows of NC; no offset passes the
            // largest (Taps), which the caller checked for every base.
            unsafe {
                let off = *offsets.add(r);
                let wv = _mm256_loadu_ps(w.add(r * NC));
                for (ci, pi) in c.iter_mut().zip(&p) {
                    *ci = _mm256_fmadd_ps(_mm256_set1_ps(*pi.add(off)), wv, *ci);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        match dst {
            ChannelStore::Tile(out) => {
                for (i, &v) in c.iter().enumerate() {
                    // SAFETY: checked: `out` holds MR rows of NC.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i * NC), v) };
                }
            }
            ChannelStore::Rows { out, stride, relu } => {
                for (i, &v) in c.iter().enumerate() {
                    let v = if relu { _mm256_max_ps(v, zero) } else { v };
                    // SAFETY: checked: MR rows of NC at the stride in `out`.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i * stride), v) };
                }
            }
            ChannelStore::Pooled {
                out,
                stride,
                relu,
                chans,
            } => {
                let pooled = pool(&c, relu);
                for j in 0..chans {
                    for (i, row) in pooled.chunks_exact(NC).enumerate() {
                        out[j * stride + i] = row[j];
                    }
                }
            }
            ChannelStore::PooledTile { out, relu } => {
                out[..WINDOWS * NC].copy_from_slice(&pool(&c, relu));
            }
            ChannelStore::Nchw {
                out,
                stride,
                residual,
                relu,
                chans,
            } => {
                // transposed: channel `j`'s eight positions are a run of `out` at `j · stride`
                for (j, &col) in transpose8(c).iter().enumerate().take(chans) {
                    // SAFETY: checked: `chans` rows of MR at the stride in `out` and the
                    // residual.
                    unsafe { store_column8(out, j * stride, residual, relu, col) };
                }
            }
        }
    }

    /// See [`ChannelTile`]; panics unless the slices fit.
    fn run(w: &[f32], bias: &[f32], x: &[f32], bases: &[usize], taps: Taps, dst: ChannelStore) {
        run_channel_tile::<MR>(tile, NC, w, bias, x, bases, taps, dst)
    }
}

/// The AVX2 channel tile for 16 channels: 4 positions × 16 channels (two vectors), 8
/// accumulators; per reduction step two vector loads, four broadcasts and eight fused
/// multiply-adds, half the broadcasts per multiply-add of [`avx2_channels_8`]'s tile (measured
/// in L1, one thread: 94 GFLOP/s against 78; the 6×16 position tile 99). Eight positions of 16
/// channels would take 16 accumulators and leave no register for the weights.
mod avx2_channels_16 {
    use super::super::channels::{ChannelStore, ChannelTile};
    use super::*;

    const MR: usize = 4;
    const NV: usize = 2;
    const LANES: usize = 8;
    const NC: usize = NV * LANES;

    /// Only handed out by [`channel_tiles`] once the CPU was seen to have AVX2 and FMA.
    pub(in super::super) const TILE: ChannelTile = ChannelTile {
        mr: MR,
        nc: NC,
        run,
        name: "avx2+fma channels 4x16",
        tier: 1,
    };

    /// The tile's one 2×2 pooling window (its four positions, see [`ChannelStore::Pooled`]).
    #[target_feature(enable = "avx2,fma")]
    fn pool(c: &[[__m256; NV]; MR], relu: bool) -> [f32; NC] {
        let mut out = [0f32; NC];
        for j in 0..NV {
            let best = window_max8(c.map(|ci| ci[j]), relu);
            // SAFETY: `out` holds NC values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j * LANES), best) };
        }
        out
    }

    /// Four rows of eight channels transposed: channel `j`'s four positions, `j < 8` (the low
    /// half of `u[j % 4]` for `j < 4`, the high half for the rest).
    #[target_feature(enable = "avx2")]
    fn transpose4x8(r: [__m256; MR]) -> [__m128; LANES] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let u = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        core::array::from_fn(|j| match j < 4 {
            true => _mm256_castps256_ps128(u[j]),
            false => _mm256_extractf128_ps::<1>(u[j - 4]),
        })
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `w` holds `k` rows of `NC`, `bias` `NC` values; every
    /// `x + bases[i] + offsets[r]` (`r < k`) is readable; `dst` passed
    /// [`check_channel_tile`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        k: usize,
        w: *const f32,
        bias: *const f32,
        x: *const f32,
        bases: &[usize; MR],
        offsets: *const usize,
        dst: ChannelStore,
    ) {
        // SAFETY: `bias` holds NC values.
        let b: [__m256; NV] =
            core::array::from_fn(|j| unsafe { _mm256_loadu_ps(bias.add(j * LANES)) });
        let mut c = [b; MR];
        // (wrapping: with k = 0 nothing is read through them)
        let p: [*const f32; MR] = core::array::from_fn(|i| x.wrapping_add(bases[i]));
        for r in 0..k {
            // SAFETY: `offsets` holds `k` values and `w` `k` rows of NC; no offset passes the
            // largest (Taps), which the caller checked for every base.
            unsafe {
                let off = *offsets.add(r);
                let wr = w.add(r * NC);
                let wv: [__m256; NV] = core::array::from_fn(|j| _mm256_loadu_ps(wr.add(j * LANES)));
                for (ci, pi) in c.iter_mut().zip(&p) {
                    let a = _mm256_set1_ps(*pi.add(off));
                    for j in 0..NV {
                        ci[j] = _mm256_fmadd_ps(a, wv[j], ci[j]);
                    }
                }
            }
        }
        let zero = _mm256_setzero_ps();
        match dst {
            ChannelStore::Tile(out) => {
                for (i, ci) in c.iter().enumerate() {
                    for (j, &v) in ci.iter().enumerate() {
                        // SAFETY: checked: `out` holds MR rows of NC.
                        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i * NC + j * LANES), v) };
                    }
                }
            }
            ChannelStore::Rows { out, stride, relu } => {
                for (i, ci) in c.iter().enumerate() {
                    for (j, &v) in ci.iter().enumerate() {
                        let v = if relu { _mm256_max_ps(v, zero) } else { v };
                        // SAFETY: checked: MR rows of NC at the stride in `out`.
                        unsafe {
                            _mm256_storeu_ps(out.as_mut_ptr().add(i * stride + j * LANES), v)
                        };
                    }
                }
            }
            ChannelStore::Pooled {
                out,
                stride,
                relu,
                chans,
            } => {
                let pooled = pool(&c, relu);
                for (j, &v) in pooled.iter().enumerate().take(chans) {
                    out[j * stride] = v;
                }
            }
            ChannelStore::PooledTile { out, relu } => {
                out[..NC].copy_from_slice(&pool(&c, relu));
            }
            ChannelStore::Nchw {
                out,
                stride,
                residual,
                relu,
                chans,
            } => {
                // transposed: channel `ch`'s four positions are a run of `out` at `ch · stride`
                let zero = _mm_setzero_ps();
                for q in 0..NV {
                    let cols = transpose4x8(c.map(|ci| ci[q]));
                    for (j, &col) in cols.iter().enumerate() {
                        let ch = q * LANES + j;
                        if ch >= chans {
                            return;
                        }
                        let at = ch * stride;
                        let mut v = col;
                        // SAFETY: checked: `chans` rows of MR at the stride in `out` and the
                        // residual.
                        unsafe {
                            if let Some(r) = residual {
                                v = _mm_add_ps(v, _mm_loadu_ps(r.as_ptr().add(at)));
                            }
                            if relu {
                                // max(v, 0) gives 0 for NaN, as Tape::relu
                                v = _mm_max_ps(v, zero);
                            }
                            _mm_storeu_ps(out.as_mut_ptr().add(at), v);
                        }
                    }
                }
            }
        }
    }

    /// See [`ChannelTile`]; panics unless the slices fit.
    fn run(w: &[f32], bias: &[f32], x: &[f32], bases: &[usize], taps: Taps, dst: ChannelStore) {
        run_channel_tile::<MR>(tile, NC, w, bias, x, bases, taps, dst)
    }
}
