//! Matrix products: the one GEMM entry point, batched `matmul`, and the fused `linear` (x·Wᵀ + b).

#[cfg(target_arch = "wasm32")]
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, Ix2, IxDyn};

use super::elementwise::{broadcast_shape, sum_to};
use super::tape::{Tape, Tensor, Var};
use crate::{shape_err, Result};

/// `c = alpha · a·b + beta · c`: every matrix product in kiln goes through here, so the kernel can be
/// swapped in one place. Views may be transposed; the kernels handle strides.
pub fn gemm(
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ndarray::ArrayViewMut2<f32>,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
        assert!(
            b.nrows() == k && c.nrows() == m && c.ncols() == n,
            "gemm: shapes do not fit"
        );
        if m == 0 || n == 0 {
            return;
        }
        // Two threads only pay off on large products; splitting the output keeps results bit-identical.
        let parallelism = if m * n * k >= 1 << 24 {
            gemm::Parallelism::Rayon(2)
        } else {
            gemm::Parallelism::None
        };
        let (sa, sb) = (a.strides(), b.strides());
        let (sc0, sc1) = (c.strides()[0], c.strides()[1]);
        // SAFETY: the pointers and strides come from live ndarray views of the asserted shapes;
        // `c` is a unique mutable view, so the output does not alias the inputs.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                sc1,
                sc0,
                beta != 0.0,
                a.as_ptr(),
                sa[1],
                sa[0],
                b.as_ptr(),
                sb[1],
                sb[0],
                beta,
                alpha,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    #[cfg(target_arch = "wasm32")]
    if !few_rows(alpha, a, b, beta, c) {
        general_mat_mul(alpha, a, b, beta, c);
    }
}

/// Rows of `a` at most this many go through [`few_rows`] in wasm.
const FEW_ROWS: usize = 16;

/// `c = alpha·a·b + beta·c` for a few rows of `a` when `b`'s columns or rows are contiguous (a
/// recurrent step `h·W_hhᵀ`, a Linear at batch 1), as dot products or row updates that the wasm
/// build runs in simd128 lanes; `false` (nothing done) otherwise. matrixmultiply, wasm's GEMM, packs
/// all of `b` on every call, as much work as the product itself for one row, and runs it scalar: a
/// char-GRU's generation step was 9x slower in wasm than natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn few_rows(
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ndarray::ArrayViewMut2<f32>,
) -> bool {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(
        b.nrows() == k && c.nrows() == m && c.ncols() == n,
        "gemm: shapes do not fit"
    );
    if m > FEW_ROWS || m == 0 || n == 0 {
        return m == 0 || n == 0;
    }
    let scale = |old: f32| if beta == 0.0 { 0.0 } else { beta * old };
    if b.strides()[0] == 1 || k == 1 {
        // columns of b contiguous (b = Wᵀ of a row-major W): one dot product per output
        let cols: Vec<&[f32]> = (0..n).map_while(|j| b.column(j).to_slice()).collect();
        if cols.len() == n {
            for i in 0..m {
                let row = a.row(i).to_vec();
                for (j, col) in cols.iter().enumerate() {
                    let out = &mut c[[i, j]];
                    *out = alpha * dot(&row, col) + scale(*out);
                }
            }
            return true;
        }
    }
    if b.strides()[1] == 1 {
        // rows of b contiguous: c_i = Σ_k a_ik · b_k, row by row
        let mut acc = vec![0.0f32; n];
        for i in 0..m {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for (p, &aik) in a.row(i).iter().enumerate() {
                let brow = b.row(p).to_slice().expect("contiguous row");
                for (v, &bv) in acc.iter_mut().zip(brow) {
                    *v += aik * bv;
                }
            }
            for (j, v) in acc.iter().enumerate() {
                let out = &mut c[[i, j]];
                *out = alpha * v + scale(*out);
            }
        }
        return true;
    }
    false
}

/// `a·b` for 2-D views.
pub fn matmul2d(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm(1.0, a, b, 0.0, &mut c.view_mut());
    c
}

fn as2d(t: &Tensor) -> ArrayView2<'_, f32> {
    t.view().into_dimensionality::<Ix2>().expect("2-D")
}

/// Batched matrix product with numpy's `matmul` broadcasting over the leading (batch) dimensions.
fn batched_matmul(a: &Tensor, b: &Tensor, batch: &[usize]) -> Tensor {
    let (m, k, n) = (
        a.shape()[a.ndim() - 2],
        a.shape()[a.ndim() - 1],
        b.shape()[b.ndim() - 1],
    );
    let mut full_a = batch.to_vec();
    full_a.extend([m, k]);
    let mut full_b = batch.to_vec();
    full_b.extend([k, n]);
    let a = a.broadcast(IxDyn(&full_a)).unwrap();
    let b = b.broadcast(IxDyn(&full_b)).unwrap();
    let count: usize = batch.iter().product();
    let a3 = a.to_shape((count, m, k)).unwrap();
    let b3 = b.to_shape((count, k, n)).unwrap();
    let mut out = ndarray::Array3::<f32>::zeros((count, m, n));
    for i in 0..count {
        let mut o = out.index_axis_mut(Axis(0), i);
        gemm(
            1.0,
            &a3.index_axis(Axis(0), i),
            &b3.index_axis(Axis(0), i),
            0.0,
            &mut o,
        );
    }
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    out.into_shape_with_order(IxDyn(&shape)).unwrap()
}

fn swap_last2(t: &Tensor) -> Tensor {
    let n = t.ndim();
    let mut v = t.view();
    v.swap_axes(n - 2, n - 1);
    v.to_owned()
}

impl Tape {
    /// Matrix product of the last two axes, broadcasting the leading axes as numpy's `matmul` does.
    /// Both operands need at least two dimensions.
    ///
    /// # Shapes
    /// `a: [..., m, k]`, `b: [..., k, n]` → `[broadcast(...), m, n]`
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
            shape_err!(
                "matmul: shapes {sa:?} and {sb:?} do not fit (need [..., m, k] and [..., k, n])"
            );
        }
        let batch = broadcast_shape(
            "matmul (batch dimensions)",
            &sa[..sa.len() - 2],
            &sb[..sb.len() - 2],
        )?;
        let y = if sa.len() == 2 && sb.len() == 2 {
            matmul2d(&as2d(self.value(a)), &as2d(self.value(b))).into_dyn()
        } else {
            batched_matmul(self.value(a), self.value(b), &batch)
        };
        Ok(self.push(y, &[a, b], move |c, g| {
            let (a, b) = (c.input(0), c.input(1));
            if a.ndim() == 2 && b.ndim() == 2 {
                let g2 = as2d(g);
                return vec![
                    c.needs(0).then(|| matmul2d(&g2, &as2d(b).t()).into_dyn()),
                    c.needs(1).then(|| matmul2d(&as2d(a).t(), &g2).into_dyn()),
                ];
            }
            // dA = G·Bᵀ, dB = Aᵀ·G, then summed back over broadcast batch dimensions.
            vec![
                c.needs(0)
                    .then(|| sum_to(&batched_matmul(g, &swap_last2(b), &batch), a.shape())),
                c.needs(1)
                    .then(|| sum_to(&batched_matmul(&swap_last2(a), g, &batch), b.shape())),
            ]
        }))
    }

    /// `x·Wᵀ + b`, PyTorch's `Linear`: one GEMM forward, two backward. Leading axes beyond the
    /// first (a batch of sequences, `[B, T, in]`) are folded into the rows as a view (no copy, no
    /// reshape node on the tape).
    ///
    /// # Shapes
    /// `x: [..., in]`, `weight: [out, in]`, `bias: [out]` → `[..., out]`
    pub fn linear(&mut self, x: Var, weight: Var, bias: Option<Var>) -> Result<Var> {
        let (sx, sw) = (self.shape(x).to_vec(), self.shape(weight).to_vec());
        if sx.len() < 2 || sw.len() != 2 || sx[sx.len() - 1] != sw[1] {
            shape_err!("Linear: input of shape {sx:?} does not fit weight of shape {sw:?} (expects [N, {}])", sw.get(1).copied().unwrap_or(0));
        }
        if let Some(b) = bias {
            if self.shape(b) != [sw[0]] {
                shape_err!(
                    "Linear: bias of shape {:?} does not fit weight {sw:?}",
                    self.shape(b)
                );
            }
        }
        let (k, o) = (sw[1], sw[0]);
        let rows: usize = sx[..sx.len() - 1].iter().product();
        let mut y = match bias {
            Some(b) => {
                let bv = self.value(b);
                bv.broadcast((rows, o)).unwrap().to_owned()
            }
            None => Array2::zeros((rows, o)),
        };
        let (xv, wv) = (self.value(x).as_standard_layout(), self.value(weight));
        let x2 = rows2d(&xv, rows, k);
        match (x2.as_slice(), wv.as_slice()) {
            // A few rows (batch 1 in a page): one dot product per output, straight over W's
            // contiguous rows; a GEMM kernel spends most of such a call packing its tiles.
            (Some(xs), Some(ws)) if rows <= 4 && k > 0 => {
                for (xr, mut yr) in xs.chunks_exact(k).zip(y.rows_mut()) {
                    for (yj, wr) in yr.iter_mut().zip(ws.chunks_exact(k)) {
                        *yj += dot(xr, wr);
                    }
                }
            }
            _ => {
                let beta = if bias.is_some() { 1.0 } else { 0.0 };
                gemm(1.0, &x2, &as2d(wv).t(), beta, &mut y.view_mut());
            }
        }
        let mut out = sx[..sx.len() - 1].to_vec();
        out.push(o);
        let y = y.into_shape_with_order(IxDyn(&out)).expect("rows × out");
        let inputs: Vec<Var> = [x, weight].into_iter().chain(bias).collect();
        Ok(self.push(y, &inputs, move |c, g| {
            let g = g.as_standard_layout();
            let g2 = rows2d(&g, rows, o);
            let mut out = vec![
                c.needs(0).then(|| {
                    matmul2d(&g2, &as2d(c.input(1)))
                        .into_shape_with_order(c.input(0).raw_dim())
                        .expect("rows × in")
                }),
                c.needs(1).then(|| {
                    let xs = c.input(0).as_standard_layout();
                    matmul2d(&g2.t(), &rows2d(&xs, rows, k)).into_dyn()
                }),
            ];
            if c.inputs_len() == 3 {
                out.push(c.needs(2).then(|| g2.sum_axis(Axis(0)).into_dyn()));
            }
            out
        }))
    }
}

/// A row-major tensor of `rows · cols` values seen as `[rows, cols]`, without a copy.
fn rows2d<'a>(
    t: &'a ndarray::CowArray<'_, f32, IxDyn>,
    rows: usize,
    cols: usize,
) -> ArrayView2<'a, f32> {
    t.view()
        .into_shape_with_order((rows, cols))
        .expect("standard layout, rows · cols values")
}

/// `a · b` for equally long slices, with four-lane SIMD on wasm (simd128) and eight independent
/// accumulators elsewhere.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use crate::kernels::madd;
        use core::arch::wasm32::*;
        let lanes = |x: &[f32]| f32x4(x[0], x[1], x[2], x[3]);
        // four accumulators, so the adds do not wait on each other (one chain was the limit)
        let mut acc = [f32x4_splat(0.0); 4];
        let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
        let (ra, rb) = (a16.remainder(), b16.remainder());
        for (x, y) in a16.zip(b16) {
            for (q, lane) in acc.iter_mut().enumerate() {
                let (xs, ys) = (&x[4 * q..4 * q + 4], &y[4 * q..4 * q + 4]);
                *lane = madd(lanes(xs), lanes(ys), *lane);
            }
        }
        let (a4, b4) = (ra.chunks_exact(4), rb.chunks_exact(4));
        let tail: f32 = a4
            .remainder()
            .iter()
            .zip(b4.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a4.zip(b4) {
            acc[0] = madd(lanes(x), lanes(y), acc[0]);
        }
        let v = f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3]));
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
            + tail
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let mut acc = [0f32; 8];
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8
            .remainder()
            .iter()
            .zip(b8.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a8.zip(b8) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn few_rows_is_the_general_product_for_every_layout_it_takes() {
        let fill = |r: usize, c: usize, s: f32| {
            Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f32 * s).sin())
        };
        for (m, k, n) in [
            (1, 128, 384),
            (3, 17, 9),
            (16, 33, 90),
            (1, 1, 5),
            (2, 8, 1),
        ] {
            let a = fill(m, k, 0.37);
            let w = fill(n, k, 0.11); // b = wᵀ: contiguous columns
            let b_rows = fill(k, n, 0.23); // contiguous rows
            for (b, label) in [(w.t(), "columns"), (b_rows.view(), "rows")] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
                    let start = fill(m, n, 0.05);
                    let mut want = start.clone();
                    ndarray::linalg::general_mat_mul(alpha, &a.view(), &b, beta, &mut want);
                    let mut got = start.clone();
                    assert!(
                        few_rows(alpha, &a.view(), &b, beta, &mut got.view_mut()),
                        "{label} {m}x{k}x{n}"
                    );
                    let diff = (&got - &want).iter().fold(0.0f32, |d, v| d.max(v.abs()));
                    assert!(
                        diff < 1e-4,
                        "{label} {m}x{k}x{n} alpha {alpha} beta {beta}: {diff}"
                    );
                }
            }
        }
        // too many rows, or neither layout: left to the general product
        let (a, b) = (fill(17, 4, 0.3), fill(4, 4, 0.2));
        assert!(!few_rows(
            1.0,
            &a.view(),
            &b.view(),
            0.0,
            &mut Array2::zeros((17, 4)).view_mut()
        ));
        let strided = fill(8, 8, 0.2);
        let b = strided.slice(ndarray::s![..;2, ..;2]);
        assert!(!few_rows(
            1.0,
            &fill(1, 4, 0.3).view(),
            &b,
            0.0,
            &mut Array2::zeros((1, 4)).view_mut()
        ));
    }

    #[test]
    fn matmul_gradients_2d_and_batched() {
        check(&[&[3, 4], &[4, 2]], |t, v| t.matmul(v[0], v[1]).unwrap());
        check(&[&[2, 3, 4], &[2, 4, 5]], |t, v| {
            t.matmul(v[0], v[1]).unwrap()
        });
        // batch dimensions broadcast: [2,1,3,4] x [3,4,2] -> [2,3,3,2]
        check(&[&[2, 1, 3, 4], &[3, 4, 2]], |t, v| {
            t.matmul(v[0], v[1]).unwrap()
        });
        check(&[&[2, 3, 4], &[4, 5]], |t, v| t.matmul(v[0], v[1]).unwrap());
    }

    #[test]
    fn linear_gradients_with_and_without_bias() {
        check(&[&[5, 3], &[4, 3], &[4]], |t, v| {
            t.linear(v[0], v[1], Some(v[2])).unwrap()
        });
        check(&[&[5, 3], &[4, 3]], |t, v| {
            t.linear(v[0], v[1], None).unwrap()
        });
        // a batch of sequences [B, T, in]
        check(&[&[2, 3, 4], &[5, 4], &[5]], |t, v| {
            t.linear(v[0], v[1], Some(v[2])).unwrap()
        });
    }

    #[test]
    fn matmul_values_and_errors() {
        let mut t = Tape::inference();
        let a = t.constant(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1., 2., 3., 4.]).unwrap());
        let b = t.constant(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![1., 1.]).unwrap());
        let y = t.matmul(a, b).unwrap();
        assert_eq!(t.value(y).as_slice().unwrap(), &[3., 7.]);
        let e = t.matmul(b, b).unwrap_err().to_string();
        assert!(e.contains("[2, 1]"), "{e}");
        let e = t.linear(a, b, None).unwrap_err().to_string();
        assert!(e.starts_with("Linear"), "{e}");
    }
}
