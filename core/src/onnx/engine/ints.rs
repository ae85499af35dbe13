//! int64 values at import: the shapes, axes and indices an ONNX graph computes with
//! `Shape → Gather → Unsqueeze → Concat → Reshape` chains (PyTorch's flatten with a free batch) or
//! hands over as constants. They are evaluated while the graph is imported, once per trace run
//! (the free dimensions at two different sizes), never at run time: what reaches kiln's graph is
//! a reshape target with `Dim::Batch` in it, an axis list, a constant index list.

use ndarray::{ArrayD, IxDyn};

/// Axis `a` of a rank-`r` value, counted from the end when negative.
pub(super) fn axis(a: i64, r: usize) -> Result<usize, String> {
    let n = if a < 0 { a + r as i64 } else { a };
    if !(0..r as i64).contains(&n) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(n as usize)
}

/// Distinct axes, each normalised; a repeated axis is an error, as in ONNX.
pub(super) fn axes(list: &[i64], r: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, r)?;
        if out.contains(&a) {
            return Err(format!("axis {a} is given twice"));
        }
        out.push(a);
    }
    Ok(out)
}

/// The values as a list (a scalar is a list of one); `Err` for a value of rank 2 or more.
pub(super) fn list(a: &ArrayD<i64>) -> Result<Vec<i64>, String> {
    if a.ndim() > 1 {
        return Err(format!("a list of integers of shape {:?}", a.shape()));
    }
    Ok(a.iter().copied().collect())
}

pub(super) fn reshape(a: &ArrayD<i64>, shape: &[usize]) -> Result<ArrayD<i64>, String> {
    if a.len() != shape.iter().product::<usize>() {
        return Err(format!(
            "cannot view shape {:?} ({} values) as {shape:?}",
            a.shape(),
            a.len()
        ));
    }
    Ok(a.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("sizes checked"))
}

/// ONNX Reshape's target for an input of shape `input`: `0` copies the input's size on that axis,
/// one `-1` takes the rest.
pub(super) fn reshape_target(input: &[usize], shape: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            0 => out.push(*input.get(i).ok_or_else(|| {
                format!("Reshape: 0 at axis {i} of a rank-{} input", input.len())
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            d => return Err(format!("Reshape: size {d} in the target shape")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!(
                "Reshape: cannot infer -1 for {total} values into {out:?}"
            ));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "Reshape: {input:?} has {total} values, the target {out:?} holds {known}"
        ));
    }
    Ok(out)
}

/// Unsqueeze's output shape: size-1 axes inserted at `list` (positions in the output).
pub(super) fn unsqueezed(shape: &[usize], list: &[i64]) -> Result<Vec<usize>, String> {
    let inserted = axes(list, shape.len() + list.len())?;
    let mut rest = shape.iter();
    Ok((0..shape.len() + list.len())
        .map(|i| {
            if inserted.contains(&i) {
                1
            } else {
                *rest.next().expect("rank counted")
            }
        })
        .collect())
}

/// Squeeze's output shape: the size-1 axes in `list` removed (every size-1 axis for `None`).
pub(super) fn squeezed(shape: &[usize], list: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let removed = match list {
        Some(list) => {
            let removed = axes(list, shape.len())?;
            if let Some(&a) = removed.iter().find(|&&a| shape[a] != 1) {
                return Err(format!(
                    "Squeeze: axis {a} of shape {shape:?} is not of size 1"
                ));
            }
            removed
        }
        None => (0..shape.len()).filter(|&a| shape[a] == 1).collect(),
    };
    Ok((0..shape.len())
        .filter(|a| !removed.contains(a))
        .map(|a| shape[a])
        .collect())
}

/// Shape's output: the dims from `start` to `end` (negative counts from the end; clamped).
pub(super) fn shape_of(dims: &[usize], start: i64, end: Option<i64>) -> ArrayD<i64> {
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let picked: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
    ArrayD::from_shape_vec(IxDyn(&[picked.len()]), picked).expect("1-D")
}

/// Gather's indices normalised against an axis of size `n`.
pub(super) fn indices(ids: &ArrayD<i64>, n: usize, a: usize) -> Result<Vec<usize>, String> {
    ids.iter()
        .map(|&i| {
            let j = if i < 0 { i + n as i64 } else { i };
            if (0..n as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "index {i} is out of range for axis {a} of size {n}"
                ))
            }
        })
        .collect()
}

/// Gather along `a` on an int64 value.
pub(super) fn gather(x: &ArrayD<i64>, ids: &ArrayD<i64>, a: i64) -> Result<ArrayD<i64>, String> {
    let a = axis(a, x.ndim())?;
    let flat = indices(ids, x.shape()[a], a)?;
    let mut out = x.shape()[..a].to_vec();
    out.extend_from_slice(ids.shape());
    out.extend_from_slice(&x.shape()[a + 1..]);
    reshape(&crate::arrays::take(x, a, &flat), &out)
}

pub(super) fn concat(parts: &[&ArrayD<i64>], a: i64) -> Result<ArrayD<i64>, String> {
    let a = axis(a, parts[0].ndim())?;
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    crate::arrays::cat(a, &views).ok_or_else(|| {
        let shapes: Vec<&[usize]> = parts.iter().map(|p| p.shape()).collect();
        format!("Concat along axis {a}: shapes {shapes:?} do not fit")
    })
}

/// One axis of a Slice, resolved with ONNX's rules against its size `d`: the indices it picks.
pub(super) fn slice_indices(
    d: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Vec<usize>, String> {
    if step == 0 {
        return Err("Slice: step 0".into());
    }
    let d = d as i64;
    let from_end = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    Ok(if step > 0 {
        let (s, e) = (from_end(start).clamp(0, d), from_end(end).clamp(0, d));
        (s..e).step_by(step as usize).map(|i| i as usize).collect()
    } else {
        let s = from_end(start).max(0).min(d - 1);
        let e = from_end(end).max(-1).min(d - 1);
        let mut out = Vec::new();
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
        out
    })
}

/// numpy's broadcast of two shapes (Expand's rule, both ways).
pub(super) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x} against {y})"
            )),
        })
        .collect()
}

/// Element-wise arithmetic on int64 values with broadcasting (the shape arithmetic exporters
/// write: `batch * channels`, `size - 1`). Division truncates, as ONNX's integer Div does.
pub(super) fn arith(op: &str, a: &ArrayD<i64>, b: &ArrayD<i64>) -> Result<ArrayD<i64>, String> {
    let shape = broadcast(a.shape(), b.shape())?;
    let (a, b) = (
        a.broadcast(IxDyn(&shape)).expect("checked"),
        b.broadcast(IxDyn(&shape)).expect("checked"),
    );
    let mut out = ArrayD::zeros(IxDyn(&shape));
    for ((o, &x), &y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
        *o = match op {
            "Add" => x.checked_add(y),
            "Sub" => x.checked_sub(y),
            "Mul" => x.checked_mul(y),
            // ONNX's integer Mod: the sign of the divisor (Python's %); with fmod=1, the dividend's
            "Mod" => x.checked_rem(y).map(|r| {
                if r != 0 && (r < 0) != (y < 0) {
                    r + y
                } else {
                    r
                }
            }),
            "Fmod" => x.checked_rem(y),
            _ => x.checked_div(y),
        }
        .ok_or_else(|| format!("{op} of int64 values {x} and {y} overflows or divides by 0"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(shape: &[usize], v: &[i64]) -> ArrayD<i64> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn slices_clamp_and_step_like_onnx() {
        assert_eq!(slice_indices(5, 1, 100, 1).unwrap(), [1, 2, 3, 4]);
        assert_eq!(slice_indices(5, -2, i64::MAX, 1).unwrap(), [3, 4]);
        assert_eq!(slice_indices(5, 0, 5, 2).unwrap(), [0, 2, 4]);
        assert_eq!(slice_indices(5, -1, i64::MIN, -1).unwrap(), [4, 3, 2, 1, 0]);
        assert_eq!(slice_indices(5, 3, 1, 1).unwrap(), Vec::<usize>::new());
        assert!(slice_indices(5, 0, 5, 0).is_err());
    }

    #[test]
    fn the_pytorch_flatten_chain_on_int64_shapes() {
        // Shape(x) → Gather(0) → Unsqueeze → Concat with [-1] → Reshape's target
        let s = shape_of(&[3, 16, 4, 4], 0, None);
        let n = gather(&s, &ints(&[], &[0]), 0).unwrap();
        let n = reshape(&n, &unsqueezed(n.shape(), &[0]).unwrap()).unwrap();
        let target = concat(&[&n, &ints(&[1], &[-1])], 0).unwrap();
        assert_eq!(list(&target).unwrap(), [3, -1]);
        assert_eq!(reshape_target(&[3, 16, 4, 4], &[3, -1]).unwrap(), [3, 256]);
        assert_eq!(
            reshape_target(&[3, 16, 4, 4], &[0, 0, -1]).unwrap(),
            [3, 16, 16]
        );
        assert!(reshape_target(&[3, 16], &[5, -1]).is_err());
        assert!(reshape_target(&[3, 16], &[-1, -1]).is_err());
    }

    #[test]
    fn squeeze_unsqueeze_gather_and_arithmetic() {
        assert_eq!(squeezed(&[1, 3, 1], None).unwrap(), [3]);
        assert_eq!(squeezed(&[1, 3, 1], Some(&[-1])).unwrap(), [1, 3]);
        assert!(squeezed(&[1, 3, 1], Some(&[1])).is_err());
        assert_eq!(unsqueezed(&[3], &[0, -1]).unwrap(), [1, 3, 1]);
        let x = ints(&[2, 3], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(
            gather(&x, &ints(&[1], &[-1]), 1).unwrap(),
            ints(&[2, 1], &[2, 5])
        );
        assert!(gather(&x, &ints(&[1], &[3]), 1).is_err());
        let a = ints(&[2], &[6, 7]);
        assert_eq!(
            arith("Mul", &a, &ints(&[], &[2])).unwrap(),
            ints(&[2], &[12, 14])
        );
        assert_eq!(
            arith("Div", &ints(&[1], &[-7]), &ints(&[1], &[2])).unwrap(),
            ints(&[1], &[-3])
        );
        assert!(arith("Div", &a, &ints(&[1], &[0])).is_err());
        let (x, y) = (ints(&[4], &[7, -7, 7, -7]), ints(&[4], &[3, 3, -3, -3]));
        assert_eq!(arith("Mod", &x, &y).unwrap(), ints(&[4], &[1, 2, -2, -1]));
        assert_eq!(arith("Fmod", &x, &y).unwrap(), ints(&[4], &[1, -1, 1, -1]));
        assert!(arith("Mod", &x, &ints(&[1], &[0])).is_err());
        assert_eq!(broadcast(&[3, 1], &[2, 1, 4]).unwrap(), [2, 3, 4]);
        assert!(broadcast(&[3], &[2]).is_err());
    }
}
