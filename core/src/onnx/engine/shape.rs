//! The operators that move, pick or reduce values rather than compute on them — Slice, Squeeze,
//! Unsqueeze, Shape, Gather, Concat, Expand, ConstantOfShape and the Reduce family — with ONNX's
//! index rules (negative axes, clamped slice bounds, `keepdims`, `noop_with_empty_axes`).
//!
//! Float values go through kiln-core's tape ops (reshape, slice, index_select, concat, sum, mean,
//! max), the ones training uses. int64 values are shapes and indices (PyTorch's
//! `Shape → Gather → Unsqueeze → Concat → Reshape` flatten with a free batch): a few numbers, moved
//! with ndarray's own indexing.

use ndarray::{ArrayD, Axis, IxDyn};

use super::ops::{var, Arg, Out};
use crate::autograd::{broadcast_shape, Tape, Var};
use crate::{shape_err, value_err, KilnError, Result};

/// The reductions kiln's engine runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Reduce {
    Sum,
    Mean,
    Max,
    Min,
}

/// Slice's `starts`, `ends` and `axes` when they are attributes (opset < 10).
#[derive(Clone, Debug)]
pub(super) struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

/// Input 0 of an operator that works on floats and int64 alike.
enum Data<'a> {
    F(Var),
    I(&'a ArrayD<i64>),
}

fn data<'a>(t: &mut Tape, args: &'a [Option<Arg<'a>>]) -> Result<Data<'a>> {
    match args.first() {
        Some(Some(Arg::I(a))) => Ok(Data::I(a)),
        _ => var(t, args, 0).map(Data::F),
    }
}

fn shape_of(t: &Tape, x: &Data) -> Vec<usize> {
    match x {
        Data::F(v) => t.shape(*v).to_vec(),
        Data::I(a) => a.shape().to_vec(),
    }
}

/// The int64 input `i` as a list (a scalar is a list of one); `None` when it is absent.
pub(super) fn int_list(args: &[Option<Arg>], i: usize) -> Result<Option<Vec<i64>>> {
    match args.get(i) {
        None | Some(None) => Ok(None),
        Some(Some(Arg::I(a))) if a.ndim() <= 1 => Ok(Some(a.iter().copied().collect())),
        Some(Some(Arg::I(a))) => value_err!("input {i} must be 1-D, got shape {:?}", a.shape()),
        Some(Some(_)) => value_err!("input {i} must be int64"),
    }
}

/// Axis `a` of a rank-`r` value, counted from the end when negative.
fn axis(a: i64, r: usize) -> Result<usize> {
    let n = if a < 0 { a + r as i64 } else { a };
    if !(0..r as i64).contains(&n) {
        value_err!("axis {a} is out of range for rank {r}");
    }
    Ok(n as usize)
}

/// Distinct axes, each normalised; a repeated axis is an error, as in ONNX.
fn axes(list: &[i64], r: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let a = axis(a, r)?;
        if out.contains(&a) {
            value_err!("axis {a} is given twice");
        }
        out.push(a);
    }
    Ok(out)
}

fn reshaped(t: &mut Tape, x: Data, shape: &[usize]) -> Result<Out> {
    Ok(match x {
        Data::F(v) => Out::F(t.reshape(v, shape)?),
        Data::I(a) => Out::I(int_reshape(a, shape)?),
    })
}

pub(super) fn int_reshape(a: &ArrayD<i64>, shape: &[usize]) -> Result<ArrayD<i64>> {
    if a.len() != shape.iter().product::<usize>() {
        shape_err!(
            "reshape: cannot view shape {:?} ({} values) as {shape:?}",
            a.shape(),
            a.len()
        );
    }
    Ok(a.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("sizes checked"))
}

/// Unsqueeze: size-1 axes inserted at `axes` (positions in the output).
pub(super) fn unsqueeze(
    t: &mut Tape,
    args: &[Option<Arg>],
    attr: &Option<Vec<i64>>,
) -> Result<Out> {
    let list = match attr {
        Some(a) => a.clone(),
        None => int_list(args, 1)?.ok_or_else(|| KilnError::value("Unsqueeze needs axes"))?,
    };
    let x = data(t, args)?;
    let shape = shape_of(t, &x);
    let inserted = axes(&list, shape.len() + list.len())?;
    let mut rest = shape.iter();
    let out: Vec<usize> = (0..shape.len() + list.len())
        .map(|i| {
            if inserted.contains(&i) {
                1
            } else {
                *rest.next().expect("rank counted")
            }
        })
        .collect();
    reshaped(t, x, &out)
}

/// Squeeze: the size-1 axes in `axes` removed (every size-1 axis when no axes are given).
pub(super) fn squeeze(t: &mut Tape, args: &[Option<Arg>], attr: &Option<Vec<i64>>) -> Result<Out> {
    let list = match attr {
        Some(a) => Some(a.clone()),
        None => int_list(args, 1)?,
    };
    let x = data(t, args)?;
    let shape = shape_of(t, &x);
    let removed = match list {
        Some(list) => {
            let removed = axes(&list, shape.len())?;
            if let Some(&a) = removed.iter().find(|&&a| shape[a] != 1) {
                shape_err!("Squeeze: axis {a} of shape {shape:?} is not of size 1");
            }
            removed
        }
        None => (0..shape.len()).filter(|&a| shape[a] == 1).collect(),
    };
    let out: Vec<usize> = (0..shape.len())
        .filter(|a| !removed.contains(a))
        .map(|a| shape[a])
        .collect();
    reshaped(t, x, &out)
}

/// Shape: the dims of input 0 from `start` to `end` (negative counts from the end; clamped).
pub(super) fn shape(t: &Tape, args: &[Option<Arg>], start: i64, end: Option<i64>) -> Result<Out> {
    let dims: Vec<usize> = match args.first() {
        Some(Some(Arg::F(v))) => t.shape(*v).to_vec(),
        Some(Some(Arg::C(c))) => c.shape().to_vec(),
        Some(Some(Arg::I(a))) => a.shape().to_vec(),
        _ => value_err!("input 0 is missing"),
    };
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let picked: Vec<i64> = dims[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Ok(Out::I(
        ArrayD::from_shape_vec(IxDyn(&[picked.len()]), picked).expect("1-D"),
    ))
}

/// Gather along `axis`: output shape `data[..axis] + indices + data[axis + 1..]`.
pub(super) fn gather(t: &mut Tape, args: &[Option<Arg>], a: i64) -> Result<Out> {
    let Some(Some(Arg::I(ids))) = args.get(1) else {
        value_err!("Gather needs int64 indices");
    };
    let x = data(t, args)?;
    let shape = shape_of(t, &x);
    let a = axis(a, shape.len())?;
    let n = shape[a] as i64;
    let mut flat = Vec::with_capacity(ids.len());
    for &i in ids.iter() {
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            value_err!("index {i} is out of range for axis {a} of size {n}");
        }
        flat.push(j as usize);
    }
    let mut out = shape[..a].to_vec();
    out.extend_from_slice(ids.shape());
    out.extend_from_slice(&shape[a + 1..]);
    Ok(match x {
        // An embedding table looked up by token ids: the op training uses.
        Data::F(v) if a == 0 && shape.len() == 2 => {
            let ids = ArrayD::from_shape_vec(ids.raw_dim(), flat).expect("same size");
            Out::F(t.embedding(v, &ids)?)
        }
        Data::F(v) => {
            let picked = t.index_select(v, a, &flat)?;
            Out::F(t.reshape(picked, &out)?)
        }
        Data::I(arr) => Out::I(int_reshape(&arr.select(Axis(a), &flat), &out)?),
    })
}

/// Concat of int64 values (shapes being assembled); float values go through the tape's concat.
pub(super) fn concat_ints(args: &[Option<Arg>], a: i64) -> Result<Out> {
    let mut parts = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        match arg {
            Some(Arg::I(v)) => parts.push(v.view()),
            _ => value_err!("Concat of int64 and float32 values (input {i})"),
        }
    }
    let r = parts[0].ndim();
    let a = axis(a, r)?;
    match ndarray::concatenate(Axis(a), &parts) {
        Ok(v) => Ok(Out::I(v)),
        Err(_) => {
            let shapes: Vec<&[usize]> = parts.iter().map(|p| p.shape()).collect();
            shape_err!("Concat along axis {a}: shapes {shapes:?} do not fit")
        }
    }
}

/// Slice with ONNX's rules: negative starts and ends count from the end, both are clamped to the
/// axis, a negative step walks backwards.
pub(super) fn slice(t: &mut Tape, args: &[Option<Arg>], attrs: &Option<SliceAttrs>) -> Result<Out> {
    let (starts, ends, axes_list, steps) = match attrs {
        Some(s) => (s.starts.clone(), s.ends.clone(), s.axes.clone(), None),
        None => (
            int_list(args, 1)?.ok_or_else(|| KilnError::value("Slice needs starts"))?,
            int_list(args, 2)?.ok_or_else(|| KilnError::value("Slice needs ends"))?,
            int_list(args, 3)?,
            int_list(args, 4)?,
        ),
    };
    let x = data(t, args)?;
    let mut shape = shape_of(t, &x);
    let axes_list = axes_list.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes_list.len() != starts.len() || steps.len() != starts.len()
    {
        value_err!(
            "Slice: {} starts, {} ends, {} axes and {} steps",
            starts.len(),
            ends.len(),
            axes_list.len(),
            steps.len()
        );
    }
    let picked = axes(&axes_list, shape.len())?;
    let mut x = match x {
        Data::F(v) => Out::F(v),
        Data::I(a) => Out::I(a.clone()),
    };
    for (k, &a) in picked.iter().enumerate() {
        let (d, step) = (shape[a] as i64, steps[k]);
        if step == 0 {
            value_err!("Slice: step 0 on axis {a}");
        }
        let from_end = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (start, end) = if step > 0 {
            (
                from_end(starts[k]).clamp(0, d),
                from_end(ends[k]).clamp(0, d),
            )
        } else {
            (
                from_end(starts[k]).max(0).min(d - 1),
                from_end(ends[k]).max(-1).min(d - 1),
            )
        };
        let indices: Vec<usize> = if step > 0 {
            (start..end)
                .step_by(step as usize)
                .map(|i| i as usize)
                .collect()
        } else {
            let mut out = Vec::new();
            let mut i = start;
            while i > end {
                out.push(i as usize);
                i = i.saturating_add(step);
            }
            out
        };
        x = match x {
            Out::F(v) if step == 1 => {
                Out::F(t.slice(v, a, start as usize, end.max(start) as usize)?)
            }
            Out::F(v) => Out::F(t.index_select(v, a, &indices)?),
            Out::I(arr) => Out::I(arr.select(Axis(a), &indices)),
        };
        shape[a] = indices.len();
    }
    Ok(x)
}

/// Expand: input 0 broadcast (numpy's rules, both ways) with the shape in input 1.
pub(super) fn expand(t: &mut Tape, args: &[Option<Arg>]) -> Result<Out> {
    let target = int_list(args, 1)?.ok_or_else(|| KilnError::value("Expand needs a shape"))?;
    if let Some(&bad) = target.iter().find(|&&d| d < 0) {
        value_err!("Expand: size {bad} in the shape");
    }
    let target: Vec<usize> = target.iter().map(|&d| d as usize).collect();
    let x = data(t, args)?;
    let out = broadcast_shape("Expand", &shape_of(t, &x), &target)?;
    Ok(match x {
        Data::F(v) => {
            let y = t
                .value(v)
                .broadcast(IxDyn(&out))
                .expect("checked")
                .to_owned();
            Out::F(t.constant(y))
        }
        Data::I(a) => Out::I(a.broadcast(IxDyn(&out)).expect("checked").to_owned()),
    })
}

/// ConstantOfShape: the shape in input 0 filled with `value` (one element).
pub(super) fn constant_of_shape(
    t: &mut Tape,
    args: &[Option<Arg>],
    value: &super::Value,
) -> Result<Out> {
    let dims =
        int_list(args, 0)?.ok_or_else(|| KilnError::value("ConstantOfShape needs a shape"))?;
    if let Some(&bad) = dims.iter().find(|&&d| d < 0) {
        value_err!("ConstantOfShape: size {bad} in the shape");
    }
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    Ok(match value {
        super::Value::F32(v) => {
            let fill = *v.iter().next().expect("one element, checked at load");
            Out::F(t.constant(ArrayD::from_elem(IxDyn(&dims), fill)))
        }
        super::Value::I64(v) => {
            let fill = *v.iter().next().expect("one element, checked at load");
            Out::I(ArrayD::from_elem(IxDyn(&dims), fill))
        }
    })
}

/// ReduceSum / ReduceMean / ReduceMax / ReduceMin over the axes of the attribute or of input 1;
/// no axes means every axis, or none with `noop_with_empty_axes`.
pub(super) fn reduce(
    t: &mut Tape,
    args: &[Option<Arg>],
    kind: Reduce,
    attr: &Option<Vec<i64>>,
    keepdims: bool,
    noop_empty: bool,
) -> Result<Out> {
    let x = var(t, args, 0)?;
    let list = match attr {
        Some(a) => Some(a.clone()),
        None => int_list(args, 1)?,
    };
    let shape = t.shape(x).to_vec();
    let reduced = match list {
        Some(l) if !l.is_empty() => axes(&l, shape.len())?,
        _ if noop_empty => return Ok(Out::F(x)),
        _ => (0..shape.len()).collect(),
    };
    if reduced.is_empty() {
        // A scalar reduced over all (none) of its axes is itself.
        return Ok(Out::F(x));
    }
    let out: Vec<usize> = (0..shape.len())
        .filter_map(|a| match (reduced.contains(&a), keepdims) {
            (false, _) => Some(shape[a]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    let count: usize = reduced.iter().map(|&a| shape[a]).product();
    // An empty set: ONNX's identity of the reduction (0 for a sum, ∓inf for max / min; NaN, 0/0,
    // for a mean).
    let empty = |t: &mut Tape, v: f32| Out::F(t.constant(ArrayD::from_elem(IxDyn(&out), v)));
    Ok(match kind {
        Reduce::Sum => Out::F(t.sum(x, &reduced, keepdims)?),
        Reduce::Mean if count == 0 => empty(t, f32::NAN),
        Reduce::Mean => Out::F(t.mean(x, &reduced, keepdims)?),
        Reduce::Max | Reduce::Min if count == 0 => empty(
            t,
            if kind == Reduce::Max {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            },
        ),
        Reduce::Max | Reduce::Min => {
            // min(x) = -max(-x), exactly; several axes one after another.
            let mut y = if kind == Reduce::Min { t.neg(x) } else { x };
            let mut sorted = reduced.clone();
            sorted.sort_unstable();
            for &a in sorted.iter().rev() {
                y = t.max(y, a, true)?;
            }
            if kind == Reduce::Min {
                y = t.neg(y);
            }
            if !keepdims {
                y = t.reshape(y, &out)?;
            }
            Out::F(y)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(shape: &[usize], v: &[i64]) -> ArrayD<i64> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }
    fn floats(shape: &[usize]) -> ArrayD<f32> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect()).unwrap()
    }
    fn f(out: Out, t: &Tape) -> (Vec<usize>, Vec<f32>) {
        match out {
            Out::F(v) => (t.shape(v).to_vec(), t.value(v).iter().copied().collect()),
            Out::I(_) => panic!("int64 output"),
        }
    }
    fn i(out: Out) -> (Vec<usize>, Vec<i64>) {
        match out {
            Out::I(a) => (a.shape().to_vec(), a.iter().copied().collect()),
            Out::F(_) => panic!("float output"),
        }
    }

    #[test]
    fn slice_clamps_and_steps_like_onnx() {
        // x = [[0 1 2 3], [4 5 6 7], [8 9 10 11]]
        let x = floats(&[3, 4]);
        let mut t = Tape::inference();
        let run = |t: &mut Tape, s: &[i64], e: &[i64], a: &[i64], st: &[i64]| {
            let (s, e, a, st) = (
                ints(&[s.len()], s),
                ints(&[e.len()], e),
                ints(&[a.len()], a),
                ints(&[st.len()], st),
            );
            let args = [
                Some(Arg::C(&x)),
                Some(Arg::I(&s)),
                Some(Arg::I(&e)),
                Some(Arg::I(&a)),
                Some(Arg::I(&st)),
            ];
            let out = slice(t, &args, &None).unwrap();
            f(out, t)
        };
        // x[:, 1:3]
        assert_eq!(
            run(&mut t, &[1], &[3], &[1], &[1]),
            (vec![3, 2], vec![1., 2., 5., 6., 9., 10.])
        );
        // x[-1:, :] with an end far past the axis (PyTorch writes INT64_MAX)
        assert_eq!(
            run(&mut t, &[-1], &[i64::MAX], &[0], &[1]),
            (vec![1, 4], vec![8., 9., 10., 11.])
        );
        // x[::-1, ::2]: a negative step from INT64_MAX down past INT64_MIN
        assert_eq!(
            run(&mut t, &[-1, 0], &[i64::MIN, 10], &[0, -1], &[-1, 2]),
            (vec![3, 2], vec![8., 10., 4., 6., 0., 2.])
        );
        // an empty range: start after end
        assert_eq!(run(&mut t, &[3], &[1], &[1], &[1]), (vec![3, 0], vec![]));
        // opset < 10: attributes, axes defaulting to 0..n
        let attrs = Some(SliceAttrs {
            starts: vec![1, -2],
            ends: vec![2, 100],
            axes: None,
        });
        let out = slice(&mut t, &[Some(Arg::C(&x))], &attrs).unwrap();
        assert_eq!(f(out, &t), (vec![1, 2], vec![6., 7.]));
        // int64 values slice the same way
        let shape = ints(&[4], &[2, 3, 8, 8]);
        let (s, e) = (ints(&[1], &[2]), ints(&[1], &[i64::MAX]));
        let out = slice(
            &mut t,
            &[Some(Arg::I(&shape)), Some(Arg::I(&s)), Some(Arg::I(&e))],
            &None,
        );
        assert_eq!(i(out.unwrap()), (vec![2], vec![8, 8]));
        let zero = ints(&[1], &[0]);
        let args = [
            Some(Arg::C(&x)),
            Some(Arg::I(&s)),
            Some(Arg::I(&e)),
            None,
            Some(Arg::I(&zero)),
        ];
        assert!(slice(&mut t, &args, &None)
            .unwrap_err()
            .to_string()
            .contains("step 0"));
    }

    #[test]
    fn the_pytorch_flatten_chain_on_int64_shapes() {
        // Shape → Gather(0) → Unsqueeze(0) → Concat([-1]) → Reshape, for x of shape [5, 2, 3, 4].
        let x = floats(&[5, 2, 3, 4]);
        let mut t = Tape::inference();
        let dims = i(shape(&t, &[Some(Arg::C(&x))], 0, None).unwrap());
        assert_eq!(dims, (vec![4], vec![5, 2, 3, 4]));
        let dims = ints(&[4], &dims.1);
        let zero = ints(&[], &[0]);
        let batch = i(gather(&mut t, &[Some(Arg::I(&dims)), Some(Arg::I(&zero))], 0).unwrap());
        assert_eq!(batch, (vec![], vec![5]));
        let batch = ints(&[], &batch.1);
        let axes = ints(&[1], &[0]);
        let b1 = i(unsqueeze(&mut t, &[Some(Arg::I(&batch)), Some(Arg::I(&axes))], &None).unwrap());
        assert_eq!(b1, (vec![1], vec![5]));
        let (b1, minus1) = (ints(&[1], &b1.1), ints(&[1], &[-1]));
        let target = i(concat_ints(&[Some(Arg::I(&b1)), Some(Arg::I(&minus1))], 0).unwrap());
        assert_eq!(target, (vec![2], vec![5, -1]));
        // Shape with start / end, negative and clamped
        assert_eq!(
            i(shape(&t, &[Some(Arg::C(&x))], -3, Some(-1)).unwrap()).1,
            vec![2, 3]
        );
        assert_eq!(
            i(shape(&t, &[Some(Arg::C(&x))], -10, Some(10)).unwrap()).1,
            vec![5, 2, 3, 4]
        );
        assert_eq!(
            i(shape(&t, &[Some(Arg::C(&x))], 3, Some(1)).unwrap()).1,
            Vec::<i64>::new()
        );
    }

    #[test]
    fn squeeze_unsqueeze_and_gather() {
        let x = floats(&[2, 1, 3]);
        let mut t = Tape::inference();
        let out = squeeze(&mut t, &[Some(Arg::C(&x))], &None).unwrap();
        assert_eq!(f(out, &t).0, vec![2, 3]);
        let out = squeeze(&mut t, &[Some(Arg::C(&x))], &Some(vec![-2])).unwrap();
        assert_eq!(f(out, &t).0, vec![2, 3]);
        let e = squeeze(&mut t, &[Some(Arg::C(&x))], &Some(vec![0])).unwrap_err();
        assert!(e.to_string().contains("not of size 1"), "{e}");
        let out = unsqueeze(&mut t, &[Some(Arg::C(&x))], &Some(vec![0, -1])).unwrap();
        assert_eq!(f(out, &t).0, vec![1, 2, 1, 3, 1]);
        assert!(unsqueeze(&mut t, &[Some(Arg::C(&x))], &Some(vec![1, 1])).is_err());
        // Gather on axis 2 with a [2, 2] index array: out[a, b, i, j] = x[a, b, idx[i, j]]
        let idx = ints(&[2, 2], &[2, 0, -1, 1]);
        let out = gather(&mut t, &[Some(Arg::C(&x)), Some(Arg::I(&idx))], -1).unwrap();
        assert_eq!(
            f(out, &t),
            (vec![2, 1, 2, 2], vec![2., 0., 2., 1., 5., 3., 5., 4.])
        );
        let bad = ints(&[1], &[3]);
        let e = gather(&mut t, &[Some(Arg::C(&x)), Some(Arg::I(&bad))], 2).unwrap_err();
        assert!(e.to_string().contains("index 3 is out of range"), "{e}");
    }

    #[test]
    fn reductions_follow_keepdims_and_empty_axes() {
        // x = [[0 1 2], [3 4 5]]
        let x = floats(&[2, 3]);
        let mut t = Tape::inference();
        let mut run = |kind, axes: Option<&[i64]>, keep, noop| {
            let a = axes.map(|a| ints(&[a.len()], a));
            let args = [Some(Arg::C(&x)), a.as_ref().map(Arg::I)];
            let out = reduce(&mut t, &args, kind, &None, keep, noop).unwrap();
            f(out, &t)
        };
        assert_eq!(
            run(Reduce::Mean, Some(&[1]), true, false),
            (vec![2, 1], vec![1., 4.])
        );
        assert_eq!(
            run(Reduce::Sum, Some(&[-2]), false, false),
            (vec![3], vec![3., 5., 7.])
        );
        assert_eq!(
            run(Reduce::Max, Some(&[0, 1]), false, false),
            (vec![], vec![5.])
        );
        assert_eq!(
            run(Reduce::Min, Some(&[1]), false, false),
            (vec![2], vec![0., 3.])
        );
        assert_eq!(run(Reduce::Sum, None, true, false), (vec![1, 1], vec![15.]));
        assert_eq!(
            run(Reduce::Sum, Some(&[]), false, false),
            (vec![], vec![15.])
        );
        // noop_with_empty_axes: no axes, no reduction
        assert_eq!(run(Reduce::Max, None, true, true).0, vec![2, 3]);
        // the empty set: ONNX's identities
        let empty = ArrayD::<f32>::zeros(IxDyn(&[2, 0]));
        let args = [Some(Arg::C(&empty))];
        let out = reduce(&mut t, &args, Reduce::Max, &Some(vec![1]), false, false).unwrap();
        assert_eq!(f(out, &t), (vec![2], vec![f32::NEG_INFINITY; 2]));
        let out = reduce(&mut t, &args, Reduce::Sum, &Some(vec![1]), true, false).unwrap();
        assert_eq!(f(out, &t), (vec![2, 1], vec![0.; 2]));
        let e = reduce(&mut t, &args, Reduce::Sum, &Some(vec![2]), true, false).unwrap_err();
        assert!(e.to_string().contains("axis 2 is out of range"), "{e}");
    }

    #[test]
    fn expand_and_constant_of_shape() {
        let x = floats(&[3, 1]);
        let mut t = Tape::inference();
        let s = ints(&[3], &[2, 1, 2]);
        let out = expand(&mut t, &[Some(Arg::C(&x)), Some(Arg::I(&s))]).unwrap();
        assert_eq!(
            f(out, &t),
            (
                vec![2, 3, 2],
                vec![0., 0., 1., 1., 2., 2., 0., 0., 1., 1., 2., 2.]
            )
        );
        let bad = ints(&[2], &[2, 2]);
        assert!(expand(&mut t, &[Some(Arg::C(&x)), Some(Arg::I(&bad))])
            .unwrap_err()
            .to_string()
            .contains("Expand"));
        let dims = ints(&[2], &[2, 3]);
        let seven = super::super::Value::I64(ints(&[1], &[7]));
        let out = constant_of_shape(&mut t, &[Some(Arg::I(&dims))], &seven).unwrap();
        assert_eq!(i(out), (vec![2, 3], vec![7; 6]));
    }
}
