//! Copies along one axis of an n-d array, by rows of contiguous memory.
//!
//! ndarray's `select` and `concatenate` walk n-d strides through its `append` machinery: ~35 kB of
//! wasm for each element type, and the browser's small module held them for f32 and i64 (~13 kB of
//! its gzip). These go through standard-layout slices, a few hundred bytes each, and are at least
//! as fast on the contiguous arrays kiln holds.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// `(outer, size of axis, inner)`: the row-major shape folded around `axis`.
fn fold(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// `x`'s entries `idx` along `axis`, in that order (repeats allowed), as `select` gives.
/// Every index must be below the axis's size (callers check, with their op's words).
pub(crate) fn take<T: Copy>(x: &ArrayD<T>, axis: usize, idx: &[usize]) -> ArrayD<T> {
    let x = x.as_standard_layout();
    let (outer, d, inner) = fold(x.shape(), axis);
    let src = x.as_slice().expect("standard layout");
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        let block = &src[o * d * inner..(o + 1) * d * inner];
        for &i in idx {
            out.extend_from_slice(&block[i * inner..(i + 1) * inner]);
        }
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = idx.len();
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("the sizes multiply out")
}

/// `parts` joined along `axis`, or `None` when they differ in rank or in another axis.
pub(crate) fn cat<T: Copy>(axis: usize, parts: &[ArrayViewD<T>]) -> Option<ArrayD<T>> {
    let first = parts.first()?.shape();
    if axis >= first.len() {
        return None;
    }
    let fits = |s: &[usize]| {
        s.len() == first.len()
            && s.iter()
                .zip(first)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b)
    };
    if !parts.iter().all(|p| fits(p.shape())) {
        return None;
    }
    let parts: Vec<_> = parts.iter().map(|p| p.as_standard_layout()).collect();
    let (outer, _, inner) = fold(first, axis);
    let total: usize = parts.iter().map(|p| p.shape()[axis]).sum();
    let mut out = Vec::with_capacity(outer * total * inner);
    for o in 0..outer {
        for p in &parts {
            let n = p.shape()[axis] * inner;
            let src = p.as_slice().expect("standard layout");
            out.extend_from_slice(&src[o * n..(o + 1) * n]);
        }
    }
    let mut shape = first.to_vec();
    shape[axis] = total;
    Some(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("the sizes multiply out"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Axis, Slice};

    fn arange(shape: &[usize]) -> ArrayD<i64> {
        let n = shape.iter().product::<usize>() as i64;
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).collect()).unwrap()
    }

    #[test]
    fn take_and_cat_agree_with_ndarray_on_every_axis_and_layout() {
        let x = arange(&[3, 4, 5]);
        // a transposed (non-standard) view too
        let xt = x.clone().permuted_axes(vec![2, 0, 1]);
        for a in [&x, &xt] {
            for axis in 0..3 {
                let d = a.shape()[axis];
                let idx: Vec<usize> = vec![d - 1, 0, d - 1, d / 2];
                assert_eq!(take(a, axis, &idx), a.select(Axis(axis), &idx));
                assert_eq!(take(a, axis, &[]), a.select(Axis(axis), &[]));
                let (lo, hi) = (
                    a.slice_axis(Axis(axis), Slice::from(..1)),
                    a.slice_axis(Axis(axis), Slice::from(1..)),
                );
                let parts = [hi.view(), lo.view(), hi.view()];
                assert_eq!(
                    cat(axis, &parts).unwrap(),
                    ndarray::concatenate(Axis(axis), &parts).unwrap()
                );
            }
        }
        // zero-sized axes elsewhere
        let e = arange(&[2, 0, 3]);
        assert_eq!(take(&e, 2, &[1, 1]).shape(), &[2, 0, 2]);
        assert_eq!(cat(0, &[e.view(), e.view()]).unwrap().shape(), &[4, 0, 3]);
    }

    #[test]
    fn cat_refuses_parts_that_do_not_fit() {
        let (a, b) = (arange(&[2, 3]), arange(&[2, 4]));
        assert!(cat(0, &[a.view(), b.view()]).is_none());
        assert!(cat(1, &[a.view(), b.view()]).is_some());
        assert!(cat(2, &[a.view()]).is_none());
        assert!(cat::<i64>(0, &[]).is_none());
        assert!(cat(0, &[a.view(), arange(&[2, 3, 1]).view()]).is_none());
    }
}
