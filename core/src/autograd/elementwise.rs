//! Element-wise arithmetic with numpy broadcasting, and the unary math functions.

use ndarray::{Axis, IxDyn, Zip};

use super::tape::{Tape, Tensor, Var};
use crate::{KilnError, Result};

/// The numpy broadcast of two shapes, or an error naming the op and both shapes.
pub fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(KilnError::shape(format!(
                    "{op}: shapes {a:?} and {b:?} cannot be broadcast together"
                )))
            }
        };
    }
    Ok(out)
}

/// Sum a broadcast gradient back down to `shape` (the reverse of broadcasting).
pub fn sum_to(g: &Tensor, shape: &[usize]) -> Tensor {
    if g.shape() == shape {
        return g.clone();
    }
    let mut r = g.clone();
    while r.ndim() > shape.len() {
        r = r.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && r.shape()[i] != 1 {
            r = r.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    r
}

/// `f` over every element, as a new standard-layout tensor. The loop runs over slices, so each
/// op's copy of it is a few hundred bytes of code rather than ndarray's n-d iteration (~5 kB of
/// the browser's module per op).
pub(crate) fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let x = x.as_standard_layout();
    let y: Vec<f32> = x
        .as_slice()
        .expect("standard layout")
        .iter()
        .map(|&v| f(v))
        .collect();
    Tensor::from_shape_vec(x.raw_dim(), y).expect("same size")
}

/// `x` as row-major values of its own shape when that shape, left-padded with 1s, is the
/// trailing part of `shape` (then its values repeat every `len` outputs), else broadcast out to
/// all of `shape`. Not generic in the op, so every binary op shares it.
fn operand<'a>(x: &'a Tensor, shape: &[usize]) -> std::borrow::Cow<'a, [f32]> {
    let s = x.shape();
    let lead = shape.len() - s.len();
    let first = s.iter().position(|&d| d != 1).unwrap_or(s.len());
    let repeats = s[first..] == shape[lead + first..];
    match (repeats, x.as_slice()) {
        (true, Some(v)) => v.into(),
        (true, None) => x.iter().copied().collect::<Vec<_>>().into(),
        (false, _) => {
            let b = x
                .broadcast(shape)
                .expect("shapes checked by broadcast_shape");
            b.iter().copied().collect::<Vec<_>>().into()
        }
    }
}

/// `f(a, b)` element-wise with numpy broadcasting; the loops run over slices (see [`map`]).
fn broadcast_binary(
    t: &Tape,
    op: &str,
    a: Var,
    b: Var,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor> {
    let (va, vb) = (t.value(a), t.value(b));
    let shape = broadcast_shape(op, va.shape(), vb.shape())?;
    let n: usize = shape.iter().product();
    let (xa, xb) = (operand(va, &shape), operand(vb, &shape));
    let mut y = Vec::with_capacity(n);
    if n > 0 {
        // the operand that repeats cycles through its values alongside the whole one's chunks
        match (xa.len() == n, xb.len() == n) {
            (true, true) => y.extend(xa.iter().zip(xb.iter()).map(|(&x, &z)| f(x, z))),
            (true, false) => {
                for c in xa.chunks_exact(xb.len()) {
                    y.extend(c.iter().zip(xb.iter()).map(|(&x, &z)| f(x, z)));
                }
            }
            (false, true) => {
                for c in xb.chunks_exact(xa.len()) {
                    y.extend(xa.iter().zip(c).map(|(&x, &z)| f(x, z)));
                }
            }
            (false, false) => {
                // both repeat: both are trailing parts of the output; the shorter repeats within
                // the longer, whose chunks repeat to fill the output
                let (long, short, a_long) = if xa.len() >= xb.len() {
                    (&xa, &xb, true)
                } else {
                    (&xb, &xa, false)
                };
                let mut one = Vec::with_capacity(long.len());
                for c in long.chunks_exact(short.len()) {
                    if a_long {
                        one.extend(c.iter().zip(short.iter()).map(|(&x, &z)| f(x, z)));
                    } else {
                        one.extend(short.iter().zip(c).map(|(&x, &z)| f(x, z)));
                    }
                }
                for _ in 0..n / one.len() {
                    y.extend_from_slice(&one);
                }
            }
        }
    }
    Ok(Tensor::from_shape_vec(IxDyn(&shape), y).expect("the broadcast's size"))
}

impl Tape {
    /// `a + b`, broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = broadcast_binary(self, "add", a, b, |x, y| x + y)?;
        Ok(self.push(y, &[a, b], |c, g| {
            vec![
                c.needs(0).then(|| sum_to(g, c.input(0).shape())),
                c.needs(1).then(|| sum_to(g, c.input(1).shape())),
            ]
        }))
    }

    /// `a - b`, broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = broadcast_binary(self, "sub", a, b, |x, y| x - y)?;
        Ok(self.push(y, &[a, b], |c, g| {
            vec![
                c.needs(0).then(|| sum_to(g, c.input(0).shape())),
                c.needs(1).then(|| -sum_to(g, c.input(1).shape())),
            ]
        }))
    }

    /// `a * b` element-wise, broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = broadcast_binary(self, "mul", a, b, |x, y| x * y)?;
        Ok(self.push(y, &[a, b], |c, g| {
            vec![
                c.needs(0)
                    .then(|| sum_to(&(g * c.input(1)), c.input(0).shape())),
                c.needs(1)
                    .then(|| sum_to(&(g * c.input(0)), c.input(1).shape())),
            ]
        }))
    }

    /// `a / b` element-wise, broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = broadcast_binary(self, "div", a, b, |x, y| x / y)?;
        Ok(self.push(y, &[a, b], |c, g| {
            let (a, b) = (c.input(0), c.input(1));
            vec![
                c.needs(0).then(|| sum_to(&(g / b), a.shape())),
                // d(a/b)/db = -a / b²  =  -(a/b) / b
                c.needs(1)
                    .then(|| sum_to(&(-(g * c.output()) / b), b.shape())),
            ]
        }))
    }

    /// `-x`.
    pub fn neg(&mut self, x: Var) -> Var {
        let y = map(self.value(x), |v| -v);
        self.push(y, &[x], |_, g| vec![Some(-g)])
    }

    /// `x * s` for a constant `s`.
    pub fn scale(&mut self, x: Var, s: f32) -> Var {
        let y = map(self.value(x), |v| v * s);
        self.push(y, &[x], move |_, g| vec![Some(g * s)])
    }

    /// `x + s` for a constant `s`.
    pub fn add_scalar(&mut self, x: Var, s: f32) -> Var {
        let y = map(self.value(x), |v| v + s);
        self.push(y, &[x], |_, g| vec![Some(g.clone())])
    }

    /// `e^x`.
    pub fn exp(&mut self, x: Var) -> Var {
        let y = map(self.value(x), f32::exp);
        // d/dx e^x = e^x
        self.push(y, &[x], |c, g| vec![Some(g * c.output())])
    }

    /// Natural logarithm.
    pub fn log(&mut self, x: Var) -> Var {
        let y = map(self.value(x), f32::ln);
        // d/dx ln x = 1/x
        self.push(y, &[x], |c, g| vec![Some(g / c.input(0))])
    }

    /// Square root.
    pub fn sqrt(&mut self, x: Var) -> Var {
        let y = map(self.value(x), f32::sqrt);
        // d/dx √x = 1 / (2√x)
        self.push(y, &[x], |c, g| {
            vec![Some(
                Zip::from(g)
                    .and(c.output())
                    .map_collect(|&g, &y| g / (2.0 * y)),
            )]
        })
    }

    /// `x^p` for a constant exponent `p`.
    pub fn pow(&mut self, x: Var, p: f32) -> Var {
        let y = map(self.value(x), |v| v.powf(p));
        // d/dx x^p = p x^(p-1)
        self.push(y, &[x], move |c, g| {
            vec![Some(
                Zip::from(g)
                    .and(c.input(0))
                    .map_collect(|&g, &x| g * p * x.powf(p - 1.0)),
            )]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::check;
    use super::*;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(
            broadcast_shape("t", &[3, 1, 5], &[4, 1]).unwrap(),
            vec![3, 4, 5]
        );
        assert_eq!(broadcast_shape("t", &[], &[2]).unwrap(), vec![2]);
        let e = broadcast_shape("add", &[3, 2], &[3])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add") && e.contains("[3, 2]") && e.contains("[3]"),
            "{e}"
        );
    }

    #[test]
    fn binary_ops_gradients_with_broadcasting() {
        let shapes: [(&[usize], &[usize]); 4] = [
            (&[2, 3], &[2, 3]),
            (&[2, 3], &[3]),
            (&[4, 1, 3], &[2, 1]),
            (&[1], &[2, 2]),
        ];
        for (sa, sb) in shapes {
            check(&[sa, sb], |t, v| t.add(v[0], v[1]).unwrap());
            check(&[sa, sb], |t, v| t.sub(v[0], v[1]).unwrap());
            check(&[sa, sb], |t, v| t.mul(v[0], v[1]).unwrap());
            check(&[sa, sb], |t, v| {
                // keep the divisor away from zero: b ↦ b² + 1
                let b2 = t.mul(v[1], v[1]).unwrap();
                let b = t.add_scalar(b2, 1.0);
                t.div(v[0], b).unwrap()
            });
        }
    }

    #[test]
    fn unary_ops_gradients() {
        check(&[&[3, 4]], |t, v| t.neg(v[0]));
        check(&[&[3, 4]], |t, v| t.scale(v[0], -2.5));
        check(&[&[3, 4]], |t, v| t.exp(v[0]));
        let positive = |t: &mut Tape, x: Var| {
            let sq = t.mul(x, x).unwrap();
            t.add_scalar(sq, 0.5)
        };
        check(&[&[3, 4]], |t, v| {
            let p = positive(t, v[0]);
            t.log(p)
        });
        check(&[&[3, 4]], |t, v| {
            let p = positive(t, v[0]);
            t.sqrt(p)
        });
        check(&[&[3, 4]], |t, v| {
            let p = positive(t, v[0]);
            t.pow(p, 1.7)
        });
        check(&[&[3, 4]], |t, v| t.pow(v[0], 3.0));
    }

    #[test]
    fn mismatched_shapes_are_errors_not_panics() {
        let mut t = Tape::new(true, 0);
        let a = t.leaf(Tensor::zeros(vec![2, 3]), true);
        let b = t.leaf(Tensor::zeros(vec![4]), true);
        assert!(t.mul(a, b).is_err());
        assert!(t.div(a, b).is_err());
    }
}
