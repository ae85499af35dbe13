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
use super::tile::Store;
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

/// The checks that make a tile's raw-pointer loop in bounds: `a` is `k` rows of `mr`, the store
/// holds `mr` rows of `nr` at its stride (and so does the residual).
fn check(a: &[f32], bias: &[f32], st: &Store, mr: usize, nr: usize) -> usize {
    assert!(
        a.len().is_multiple_of(mr) && bias.len() == mr,
        "a tile's panel"
    );
    let need = (mr - 1) * st.stride + nr;
    assert!(st.out.len() >= need, "a tile's output");
    assert!(
        st.residual.is_none_or(|r| r.len() >= need),
        "a tile's residual"
    );
    a.len() / mr
}

macro_rules! x86_kernel {
    (
        $module:ident, $features:literal, $name:literal, mr = $mr:literal, lanes = $lanes:literal,
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
                name: $name,
            };

            /// `c = bias + Σ_r a[r] ⊗ row(r)` stored with residual and ReLU; `row(r)` gives the
            /// two runs of input row `r`.
            ///
            /// # Safety
            /// The CPU has the features; `a` holds `k · MR` values; each `row(r)` for `r < k`
            /// points at two runs of `RUN` readable values; the store passed [`check`].
            #[target_feature(enable = $features)]
            unsafe fn tile(
                k: usize,
                a: *const f32,
                row: impl Fn(usize) -> (*const f32, *const f32),
                bias: &[f32],
                st: Store,
            ) {
                let mut c = [[$zero(); 2]; MR];
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
                    tile(
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
                offsets: &[usize],
                bias: &[f32],
                st: Store,
            ) {
                let k = check(a, bias, &st, MR, NR);
                assert!(offsets.len() == k, "a tile's row offsets");
                // `offsets` increase (the kernel's contract), so the last row reads furthest;
                // each offset is clamped to it, so a caller that broke the contract gets wrong
                // values, never a read out of bounds
                let last = offsets.last().copied().unwrap_or(0);
                assert!(
                    k == 0 || bases[0].max(bases[1]) + last + RUN <= x.len(),
                    "a tile's input"
                );
                let x = x.as_ptr();
                // SAFETY: as `packed`'s; every row lies in `x` by the assert and the clamp.
                unsafe {
                    tile(
                        k,
                        a.as_ptr(),
                        |r| {
                            let o = (*offsets.get_unchecked(r)).min(last);
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
    lanes = 16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_max_ps
);
