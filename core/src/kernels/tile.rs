//! The register-blocked microkernel: one `MR × NR` tile of `C = A·B`, `A` a packed weight panel
//! (`k` rows of `MR` output channels) and `B` a packed input panel (`k` rows of `NR` output
//! positions), with bias, residual and ReLU applied in the store.
//!
//! The vectors run along the positions (NCHW keeps them contiguous), so `A`'s values are splatted:
//! per `k`, four `load32_splat`s, two vector loads and eight multiply-add pairs. Eight accumulators,
//! two `B` vectors, a splat and a product fit the 15 SIMD registers V8 leaves on x86-64 (XNNPACK
//! uses this 4×8 tile for its wasm simd128 x86 kernels for the same reason; 8×8 spills).

/// Output channels per tile.
pub const MR: usize = 4;
/// Output positions per tile.
pub const NR: usize = 8;

/// A direct tile's row offsets (row `r` of its input at `base + offsets[r]`) and the farthest of
/// them, measured where they are made ([`Taps::new`], the only way to make one): a tile checks
/// its reads once, against `reach`, and reads each row unchecked. Each row's offset used to be
/// clamped to the last one instead (a compare and a move per row in V8's code): 2-5% of the
/// ResNet-8 in wasm (int8 and float; none natively, where the integer ports are idle).
#[derive(Clone, Copy, Debug)]
pub struct Taps<'a> {
    offsets: &'a [usize],
    reach: usize,
}

impl<'a> Taps<'a> {
    /// `offsets` in any order, with their maximum.
    pub fn new(offsets: &'a [usize]) -> Self {
        let reach = offsets.iter().copied().max().unwrap_or(0);
        Taps { offsets, reach }
    }

    /// The offsets, in the rows' order.
    pub fn offsets(&self) -> &'a [usize] {
        self.offsets
    }

    /// The largest offset: every one is at most this.
    pub fn reach(&self) -> usize {
        self.reach
    }
}

/// Where a tile goes: `MR` rows of `NR` values, `stride` apart in `out` (and in `residual`).
pub struct Store<'a> {
    pub out: &'a mut [f32],
    pub stride: usize,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::{Store, MR, NR};
    use core::arch::wasm32::*;

    #[inline(always)]
    fn load(src: &[f32]) -> v128 {
        let src: &[f32; 4] = src[..4].try_into().expect("4 values");
        // SAFETY: `src` is 4 readable f32s (16 bytes); v128.load takes unaligned addresses.
        unsafe { v128_load(src.as_ptr().cast()) }
    }

    #[inline(always)]
    fn store(dst: &mut [f32], v: v128) {
        let dst: &mut [f32; 4] = (&mut dst[..4]).try_into().expect("4 values");
        // SAFETY: `dst` is 4 writable f32s (16 bytes), borrowed uniquely; unaligned is fine.
        unsafe { v128_store(dst.as_mut_ptr().cast(), v) }
    }

    // ---- relaxed SIMD (the second small module, kiln_core_relaxed_bg.wasm) ----------------------
    /// `a·b + c` in four lanes. With relaxed SIMD one `f32x4.relaxed_madd`, which V8 runs as a
    /// fused multiply-add where the CPU has FMA (half the arithmetic of mul + add, and one rounding
    /// instead of two: results may differ from the simd128 module's in the last bits).
    #[cfg(target_feature = "relaxed-simd")]
    #[inline(always)]
    pub fn madd(a: v128, b: v128, c: v128) -> v128 {
        f32x4_relaxed_madd(a, b, c)
    }

    /// `a·b + c` in four lanes: a multiply, then an add.
    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    pub fn madd(a: v128, b: v128, c: v128) -> v128 {
        f32x4_add(f32x4_mul(a, b), c)
    }
    // ---- end of relaxed SIMD -------------------------------------------------------------------

    /// `a`: `k × MR`, `rows`: `k` rows of `NR`, `bias`: `MR`.
    #[inline(always)]
    pub fn tile<'a>(
        a: &[f32],
        rows: impl Iterator<Item = [&'a [f32; 4]; 2]>,
        bias: &[f32; MR],
        st: Store,
    ) {
        let mut c = [[f32x4_splat(0.0); 2]; MR];
        for (ci, &bi) in c.iter_mut().zip(bias) {
            *ci = [f32x4_splat(bi); 2];
        }
        for (ak, [h0, h1]) in a.chunks_exact(MR).zip(rows) {
            let (b0, b1) = (load(h0), load(h1));
            for (ci, &av) in c.iter_mut().zip(ak) {
                let av = f32x4_splat(av);
                ci[0] = madd(av, b0, ci[0]);
                ci[1] = madd(av, b1, ci[1]);
            }
        }
        let zero = f32x4_splat(0.0);
        for (i, ci) in c.iter().enumerate() {
            let row = i * st.stride;
            let (mut v0, mut v1) = (ci[0], ci[1]);
            if let Some(r) = st.residual {
                let r = &r[row..row + NR];
                v0 = f32x4_add(v0, load(&r[..4]));
                v1 = f32x4_add(v1, load(&r[4..]));
            }
            if st.relu {
                // pmax(0, v) = 0 < v ? v : 0, so NaN becomes 0 as in Tape::relu
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
    use super::{Store, MR, NR};

    /// `a`: `k × MR`, `rows`: `k` rows of `NR`, `bias`: `MR`. Fixed-size rows, so the
    /// compiler keeps the tile in vector registers.
    #[inline(always)]
    pub fn tile<'a>(
        a: &[f32],
        rows: impl Iterator<Item = [&'a [f32; 4]; 2]>,
        bias: &[f32; MR],
        st: Store,
    ) {
        let mut c = [[0f32; NR]; MR];
        for (ci, &bi) in c.iter_mut().zip(bias) {
            *ci = [bi; NR];
        }
        for (ak, [h0, h1]) in a.chunks_exact(MR).zip(rows) {
            for (ci, &av) in c.iter_mut().zip(ak) {
                for (cij, &bj) in ci.iter_mut().zip(h0.iter().chain(h1)) {
                    *cij += av * bj;
                }
            }
        }
        for (i, ci) in c.iter_mut().enumerate() {
            let row = i * st.stride;
            if let Some(r) = st.residual {
                for (v, &r) in ci.iter_mut().zip(&r[row..row + NR]) {
                    *v += r;
                }
            }
            if st.relu {
                for v in ci.iter_mut() {
                    *v = if *v > 0.0 { *v } else { 0.0 };
                }
            }
            st.out[row..row + NR].copy_from_slice(ci);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use simd::madd;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd::tile;

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use portable::tile;

/// Four values at `x[at..]`.
#[inline(always)]
fn quad(x: &[f32], at: usize) -> &[f32; 4] {
    x[at..at + 4].try_into().expect("4 values")
}

/// A tile over a packed input panel `b` (`k × NR`).
#[inline(never)]
pub fn tile_packed(a: &[f32], b: &[f32], bias: &[f32], st: Store) {
    let bias: &[f32; MR] = bias.try_into().expect("MR biases");
    let rows = b.chunks_exact(NR).map(|r| [quad(r, 0), quad(r, 4)]);
    tile(a, rows, bias, st)
}

/// Tiles reading their input rows in place, as two runs of four positions: row `r` is
/// `x[bases[0] + offsets[r]..][..4]` then `x[bases[1] + offsets[r]..][..4]` (a zero-padded
/// image, where four positions of an output row read contiguous inputs), for every block of a
/// group at once: `a` holds `bias.len() / MR` panels of `k × MR` (`k` the taps' rows) one after
/// another, and block `b`'s `MR` rows go to `st.out[b · MR · st.stride..]` (its residual at the
/// same place); one block is one tile. No offset passes `taps.reach()` ([`Taps`]), so the reads
/// are checked once per call, against it, and the choice of reads is made once for the blocks.
#[inline(never)]
pub fn tile_direct(a: &[f32], x: &[f32], bases: [usize; 2], taps: Taps, bias: &[f32], st: Store) {
    let (offsets, last) = (taps.offsets(), taps.reach());
    let panel = offsets.len() * MR;
    assert!(
        bias.len().is_multiple_of(MR) && a.len() == bias.len() / MR * panel,
        "tile_direct: a panel per block"
    );
    // Every read below lies in x[base..base + last + NR] for its base: checked once, here.
    assert!(
        bases[0].max(bases[1]) + last + NR <= x.len(),
        "tile_direct: rows reach past the image"
    );
    let Store {
        out,
        stride,
        residual,
        relu,
    } = st;
    let block = MR * stride;
    let blocks = a.chunks_exact(panel.max(1)).zip(bias.chunks_exact(MR));
    if bases[1] == bases[0] + 4 {
        // both runs in one row: eight contiguous values per row
        let x = &x[bases[0]..];
        for (b, (ab, bb)) in blocks.enumerate() {
            let rows = offsets.iter().map(|&o| {
                // SAFETY: o <= last (Taps), and bases[0] + last + NR <= the image's length (asserted
                // above), so the NR values at o are inside `x`; [f32; NR] has f32's alignment.
                let r: &[f32; NR] = unsafe { &*x.as_ptr().add(o).cast::<[f32; NR]>() };
                [quad(r, 0), quad(r, 4)]
            });
            let at = b * block;
            let st = Store {
                out: &mut out[at..],
                stride,
                residual: residual.map(|r| &r[at..]),
                relu,
            };
            tile(ab, rows, bb.try_into().expect("MR biases"), st);
        }
        return;
    }
    let (x0, x1) = (&x[bases[0]..], &x[bases[1]..]);
    for (b, (ab, bb)) in blocks.enumerate() {
        let rows = offsets.iter().map(|&o| {
            // SAFETY: o <= last (Taps) and each base + last + NR <= the image's length (asserted above).
            unsafe {
                [
                    &*x0.as_ptr().add(o).cast::<[f32; 4]>(),
                    &*x1.as_ptr().add(o).cast::<[f32; 4]>(),
                ]
            }
        });
        let at = b * block;
        let st = Store {
            out: &mut out[at..],
            stride,
            residual: residual.map(|r| &r[at..]),
            relu,
        };
        tile(ab, rows, bb.try_into().expect("MR biases"), st);
    }
}
