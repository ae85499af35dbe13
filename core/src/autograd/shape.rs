//! Ops that move values without computing on them: reshape, permute, concat, slice, index-select;
//! and the reductions sum, mean and max over axes.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::tape::{Tape, Var};
use crate::{shape_err, KilnError, Result};

fn check_axis(op: &str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        shape_err!("{op}: axis {axis} is out of range for shape {shape:?}");
    }
    Ok(())
}

fn check_axes(op: &str, axes: &[usize], shape: &[usize]) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &a in &sorted {
        check_axis(op, a, shape)?;
    }
    Ok(sorted)
}

/// `x`'s shape with the reduced axes set to 1 (keepdim form).
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

impl Tape {
    /// The same values in a new shape with the same number of elements.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let v = self.value(x);
        if v.len() != shape.iter().product::<usize>() {
            shape_err!(
                "reshape: cannot view shape {:?} ({} values) as {shape:?}",
                v.shape(),
                v.len()
            );
        }
        let y = v
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .unwrap();
        Ok(self.push(y, &[x], |c, g| {
            let g = g.as_standard_layout().into_owned();
            vec![Some(g.into_shape_with_order(c.input(0).raw_dim()).unwrap())]
        }))
    }

    /// Reorder axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        let v = self.value(x);
        let mut seen = perm.to_vec();
        seen.sort_unstable();
        if seen != (0..v.ndim()).collect::<Vec<_>>() {
            shape_err!(
                "permute: {perm:?} is not a permutation of the axes of shape {:?}",
                v.shape()
            );
        }
        let y = v
            .view()
            .permuted_axes(perm.to_vec())
            .as_standard_layout()
            .into_owned();
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(self.push(y, &[x], move |_, g| {
            vec![Some(
                g.view()
                    .permuted_axes(inverse.clone())
                    .as_standard_layout()
                    .into_owned(),
            )]
        }))
    }

    /// Swap two axes.
    pub fn transpose(&mut self, x: Var, a: usize, b: usize) -> Result<Var> {
        let n = self.value(x).ndim();
        check_axis("transpose", a.max(b), self.shape(x))?;
        let mut perm: Vec<usize> = (0..n).collect();
        perm.swap(a, b);
        self.permute(x, &perm)
    }

    /// Join values along `axis`; all other dimensions must agree.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Result<Var> {
        if xs.is_empty() {
            shape_err!("concat: nothing to concatenate");
        }
        let first = self.shape(xs[0]).to_vec();
        check_axis("concat", axis, &first)?;
        for &x in xs {
            let s = self.shape(x);
            let fits = s.len() == first.len()
                && s.iter()
                    .zip(&first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                shape_err!("concat along axis {axis}: shapes {first:?} and {s:?} do not fit");
            }
        }
        let views: Vec<_> = xs.iter().map(|&x| self.value(x).view()).collect();
        let y = crate::arrays::cat(axis, &views).expect("shapes checked above");
        let sizes: Vec<usize> = xs.iter().map(|&x| self.shape(x)[axis]).collect();
        Ok(self.push(y, xs, move |_, g| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&n| {
                    let part = g
                        .slice_axis(Axis(axis), Slice::from(start..start + n))
                        .to_owned();
                    start += n;
                    Some(part)
                })
                .collect()
        }))
    }

    /// Elements `start..end` along `axis`.
    pub fn slice(&mut self, x: Var, axis: usize, start: usize, end: usize) -> Result<Var> {
        let shape = self.shape(x).to_vec();
        check_axis("slice", axis, &shape)?;
        if start > end || end > shape[axis] {
            shape_err!(
                "slice: range {start}..{end} is out of bounds for axis {axis} of shape {shape:?}"
            );
        }
        let y = self
            .value(x)
            .slice_axis(Axis(axis), Slice::from(start..end))
            .to_owned();
        Ok(self.push(y, &[x], move |c, g| {
            let mut gx = ArrayD::zeros(c.input(0).raw_dim());
            gx.slice_axis_mut(Axis(axis), Slice::from(start..end))
                .assign(g);
            vec![Some(gx)]
        }))
    }

    /// Pick `indices` along `axis` (repeats allowed; gradients of repeats add up).
    pub fn index_select(&mut self, x: Var, axis: usize, indices: &[usize]) -> Result<Var> {
        let shape = self.shape(x).to_vec();
        check_axis("index_select", axis, &shape)?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= shape[axis]) {
            return Err(KilnError::value(format!(
                "index_select: index {bad} is out of range for axis {axis} of size {}",
                shape[axis]
            )));
        }
        let y = crate::arrays::take(self.value(x), axis, indices);
        let indices = indices.to_vec();
        Ok(self.push(y, &[x], move |c, g| {
            let mut gx = ArrayD::<f32>::zeros(c.input(0).raw_dim());
            for (j, &i) in indices.iter().enumerate() {
                let mut dst = gx.index_axis_mut(Axis(axis), i);
                dst += &g.index_axis(Axis(axis), j);
            }
            vec![Some(gx)]
        }))
    }

    /// Sum over `axes` (all axes when empty); `keepdim` keeps them as size 1.
    pub fn sum(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Result<Var> {
        self.reduce_sum(x, axes, keepdim, false)
    }

    /// Mean over `axes` (all axes when empty); `keepdim` keeps them as size 1.
    pub fn mean(&mut self, x: Var, axes: &[usize], keepdim: bool) -> Result<Var> {
        self.reduce_sum(x, axes, keepdim, true)
    }

    fn reduce_sum(&mut self, x: Var, axes: &[usize], keepdim: bool, mean: bool) -> Result<Var> {
        let shape = self.shape(x).to_vec();
        let axes = if axes.is_empty() {
            (0..shape.len()).collect()
        } else {
            check_axes("sum", axes, &shape)?
        };
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        let factor = if mean { 1.0 / count.max(1) as f32 } else { 1.0 };
        let xv = self.value(x);
        let trailing = axes
            .iter()
            .enumerate()
            .all(|(i, &a)| a == shape.len() - axes.len() + i);
        let mut y = match (trailing, xv.as_slice()) {
            // the last axes of a standard-layout value (a global average pool's [H, W]): one
            // contiguous run per output, summed where it lies
            (true, Some(xs)) if count > 0 => {
                let outer = &shape[..shape.len() - axes.len()];
                // (ndarray's sum of a slice: eight interleaved partial sums, in SIMD lanes)
                let sums = xs
                    .chunks_exact(count)
                    .map(|r| ndarray::aview1(r).sum() * factor);
                ArrayD::from_shape_vec(IxDyn(outer), sums.collect()).expect("the kept axes")
            }
            _ => {
                let mut y = xv.clone();
                for &a in axes.iter().rev() {
                    y = y.sum_axis(Axis(a));
                }
                y * factor
            }
        };
        let kept = kept_shape(&shape, &axes);
        if keepdim {
            y = y.into_shape_with_order(IxDyn(&kept)).unwrap();
        }
        Ok(self.push(y, &[x], move |c, g| {
            let g = g.to_shape(IxDyn(&kept)).unwrap();
            vec![Some(
                g.broadcast(c.input(0).raw_dim())
                    .unwrap()
                    .mapv(|v| v * factor),
            )]
        }))
    }

    /// Maximum over one `axis`; the gradient flows to the first maximal element.
    pub fn max(&mut self, x: Var, axis: usize, keepdim: bool) -> Result<Var> {
        let shape = self.shape(x).to_vec();
        check_axis("max", axis, &shape)?;
        if shape[axis] == 0 {
            shape_err!("max: axis {axis} of shape {shape:?} is empty");
        }
        // Plain loops over [outer, n, inner] rather than ndarray's lanes: the same work in a
        // fraction of the code (this op ships in the browser's small module).
        let (outer, n) = (shape[..axis].iter().product::<usize>(), shape[axis]);
        let inner: usize = shape[axis + 1..].iter().product();
        let v = self.value(x).as_standard_layout();
        let data = v.as_slice().expect("standard layout");
        let mut argmax = vec![0usize; outer * inner];
        let mut y = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                let mut best = 0;
                for k in 1..n {
                    let (e, b) = (data[base + k * inner], data[base + best * inner]);
                    if e > b || (b.is_nan() && !e.is_nan()) {
                        best = k;
                    }
                }
                argmax[o * inner + i] = best;
                y.push(data[base + best * inner]);
            }
        }
        let mut out_shape = shape.clone();
        if keepdim {
            out_shape[axis] = 1;
        } else {
            out_shape.remove(axis);
        }
        let y = ArrayD::from_shape_vec(IxDyn(&out_shape), y).expect("sizes agree");
        Ok(self.push(y, &[x], move |_, g| {
            let g = g.as_standard_layout();
            let g = g.as_slice().expect("standard layout");
            let mut gx = vec![0.0f32; outer * n * inner];
            for (at, (&k, &gv)) in argmax.iter().zip(g).enumerate() {
                let (o, i) = (at / inner, at % inner);
                gx[o * n * inner + k * inner + i] = gv;
            }
            vec![Some(
                ArrayD::from_shape_vec(IxDyn(&shape), gx).expect("sizes agree"),
            )]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;

    #[test]
    fn shape_ops_gradients() {
        check(&[&[2, 3, 4]], |t, v| t.reshape(v[0], &[6, 4]).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.permute(v[0], &[2, 0, 1]).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.transpose(v[0], 1, 2).unwrap());
        check(&[&[2, 3], &[2, 5]], |t, v| {
            t.concat(&[v[0], v[1]], 1).unwrap()
        });
        check(&[&[4, 3]], |t, v| t.slice(v[0], 0, 1, 3).unwrap());
        check(&[&[4, 3]], |t, v| {
            t.index_select(v[0], 0, &[3, 0, 3]).unwrap()
        });
    }

    #[test]
    fn reductions_gradients() {
        check(&[&[2, 3, 4]], |t, v| t.sum(v[0], &[1], false).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.sum(v[0], &[0, 2], true).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.sum(v[0], &[], false).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.mean(v[0], &[2], false).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.mean(v[0], &[0, 1], true).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.max(v[0], 1, false).unwrap());
        check(&[&[2, 3, 4]], |t, v| t.max(v[0], 2, true).unwrap());
    }

    #[test]
    fn reductions_values() {
        let mut t = Tape::inference();
        let x =
            t.constant(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 5.0, 3.0, 2.0]).unwrap());
        let m = t.mean(x, &[0], false).unwrap();
        assert_eq!(t.value(m).as_slice().unwrap(), &[2.0, 3.5]);
        let mx = t.max(x, 1, false).unwrap();
        assert_eq!(t.value(mx).as_slice().unwrap(), &[5.0, 3.0]);
    }

    #[test]
    fn bad_axes_and_ranges_are_errors() {
        let mut t = Tape::inference();
        let x = t.constant(ArrayD::zeros(IxDyn(&[2, 3])));
        assert!(t.sum(x, &[2], false).is_err());
        assert!(t.slice(x, 1, 2, 4).is_err());
        assert!(t.index_select(x, 1, &[3]).is_err());
        assert!(t.reshape(x, &[4]).is_err());
        assert!(t.permute(x, &[0, 0]).is_err());
    }
}
