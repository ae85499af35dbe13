//! A matrix product whose right-hand side is used many times: `B` packed once in panels of the
//! microkernel's width ([`PackedMatrix`]), then `C = A·B (+ R)` for any number of small `A`s on the
//! same tiles as the convolutions ([`Kernel`]). A recurrent layer's `W_hh` meets every time step's
//! hidden state this way: a general GEMM would repack it at every step, and at a batch chunk of 16
//! rows that packing costs more than the product.

use super::conv::Kernel;
use super::tile::Store;

/// `B` (`k × n`) in panels of `nr` columns: panel `p` holds columns `p·nr..` as `k` rows of `nr`
/// (zero-padded past `n`), the layout the tiles' `packed` entry reads.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    kernel: Kernel,
    panels: Vec<f32>,
}

impl PackedMatrix {
    /// `B[r][c] = at(r, c)` for `r < k`, `c < n`, packed for [`Kernel::best`].
    pub fn new(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> PackedMatrix {
        PackedMatrix::with_kernel(k, n, at, Kernel::best())
    }

    /// As [`PackedMatrix::new`], for a given kernel (tests compare every kernel the CPU has).
    pub fn with_kernel(
        k: usize,
        n: usize,
        at: impl Fn(usize, usize) -> f32,
        kernel: Kernel,
    ) -> PackedMatrix {
        let nr = kernel.nr;
        let count = n.div_ceil(nr);
        let mut panels = vec![0.0f32; count * k * nr];
        for (p, panel) in panels.chunks_exact_mut((k * nr).max(1)).enumerate() {
            let cols = nr.min(n - p * nr);
            for (r, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (c, v) in row[..cols].iter_mut().enumerate() {
                    *v = at(r, p * nr + c);
                }
            }
        }
        PackedMatrix {
            k,
            n,
            kernel,
            panels,
        }
    }

    /// Rows of `B` (the reduction length).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of `B` (the output's width).
    pub fn cols(&self) -> usize {
        self.n
    }

    /// `out = a·B + residual` (`a`: `m × k` row-major, `out` and `residual`: `m × n`). The sum
    /// over `k` runs in order for every output, so the result depends on `a`'s row only, never on
    /// `m` or on how the caller splits its rows. `scratch` keeps its allocation between calls.
    pub fn matmul(
        &self,
        a: &[f32],
        m: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (k, n) = (self.k, self.n);
        let (mr, nr) = (self.kernel.mr, self.kernel.nr);
        assert!(
            a.len() == m * k && out.len() == m * n && residual.is_none_or(|r| r.len() == m * n),
            "PackedMatrix::matmul: a is {} values for {m}×{k}, out {} for {m}×{n}",
            a.len(),
            out.len()
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            match residual {
                Some(r) => out.copy_from_slice(r),
                None => out.fill(0.0),
            }
            return;
        }
        let zeros = [0.0f32; 16];
        let bias = &zeros[..mr];
        scratch.clear();
        scratch.resize(k * mr + mr * nr, 0.0);
        let (panel_a, tile) = scratch.split_at_mut(k * mr);
        for i0 in (0..m).step_by(mr) {
            let rows = mr.min(m - i0);
            // A's rows i0.. as k rows of mr (zeros past m)
            for (r, dst) in panel_a.chunks_exact_mut(mr).enumerate() {
                for (i, v) in dst.iter_mut().enumerate() {
                    *v = if i < rows { a[(i0 + i) * k + r] } else { 0.0 };
                }
            }
            for (p, panel_b) in self.panels.chunks_exact(k * nr).enumerate() {
                let j0 = p * nr;
                let cols = nr.min(n - j0);
                let at = i0 * n + j0;
                if cols == nr && (rows == mr || self.kernel.partial_rows) {
                    let st = Store {
                        out: &mut out[at..],
                        stride: n,
                        residual: residual.map(|r| &r[at..]),
                        relu: false,
                    };
                    let m = if self.kernel.partial_rows { rows } else { mr };
                    (self.kernel.packed)(panel_a, panel_b, &bias[..m], st);
                    continue;
                }
                // a partial tile: computed whole into `tile`, its valid part copied out
                let st = Store {
                    out: tile,
                    stride: nr,
                    residual: None,
                    relu: false,
                };
                (self.kernel.packed)(panel_a, panel_b, bias, st);
                for i in 0..rows {
                    let row = at + i * n;
                    let dst = &mut out[row..row + cols];
                    dst.copy_from_slice(&tile[i * nr..i * nr + cols]);
                    if let Some(r) = residual {
                        for (d, &r) in dst.iter_mut().zip(&r[row..row + cols]) {
                            *d += r;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn packed_products_match_the_definition_on_every_kernel_and_ragged_shape() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (m, k, n) in [
            (16, 128, 384),
            (16, 384, 128),
            (1, 1, 1),
            (7, 5, 33),
            (9, 13, 17),
            (33, 2, 65),
            (3, 0, 4),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let res: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for &kernel in Kernel::available() {
                // B given transposed, as a recurrent layer hands W_hh
                let p = PackedMatrix::with_kernel(k, n, |r, c| b[c * k + r], kernel);
                let q = PackedMatrix::with_kernel(k, n, |r, c| b[r * n + c], kernel);
                assert_eq!((p.rows(), p.cols()), (k, n));
                let mut scratch = Vec::new();
                for residual in [None, Some(&res[..])] {
                    let mut got = vec![f32::NAN; m * n];
                    p.matmul(&a, m, residual, &mut got, &mut scratch);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|r| a[i * k + r] as f64 * b[j * k + r] as f64)
                                .sum::<f64>()
                                + residual.map_or(0.0, |r| r[i * n + j] as f64);
                            let d = (got[i * n + j] as f64 - want).abs();
                            assert!(d < 1e-4, "{kernel:?} {m}x{k}x{n} at {i},{j}: off by {d}");
                        }
                    }
                    // each output row depends on its input row only: row 2.. alone gives the same bits
                    if m > 2 {
                        let mut tail = vec![0.0; (m - 2) * n];
                        q.matmul(
                            &a[2 * k..],
                            m - 2,
                            residual.map(|r| &r[2 * n..]),
                            &mut tail,
                            &mut scratch,
                        );
                        let mut full = vec![0.0; m * n];
                        q.matmul(&a, m, residual, &mut full, &mut scratch);
                        assert_eq!(tail, full[2 * n..], "{kernel:?} {m}x{k}x{n}");
                    }
                }
            }
        }
    }
}
