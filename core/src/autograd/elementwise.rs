//! Element-wise arithmetic with numpy broadcasting, and the unary math functions.

use ndarray::{Axis, Zip};

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

fn broadcast_binary(
    t: &Tape,
    op: &str,
    a: Var,
    b: Var,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor> {
    let (va, vb) = (t.value(a), t.value(b));
    if va.shape() == vb.shape() {
        return Ok(Zip::from(va).and(vb).map_collect(|&x, &y| f(x, y)));
    }
    let shape = broadcast_shape(op, va.shape(), vb.shape())?;
    let (ba, bb) = (
        va.broadcast(shape.clone()).unwrap(),
        vb.broadcast(shape).unwrap(),
    );
    Ok(Zip::from(&ba).and(&bb).map_collect(|&x, &y| f(x, y)))
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
        let y = -self.value(x);
        self.push(y, &[x], |_, g| vec![Some(-g)])
    }

    /// `x * s` for a constant `s`.
    pub fn scale(&mut self, x: Var, s: f32) -> Var {
        let y = self.value(x) * s;
        self.push(y, &[x], move |_, g| vec![Some(g * s)])
    }

    /// `x + s` for a constant `s`.
    pub fn add_scalar(&mut self, x: Var, s: f32) -> Var {
        let y = self.value(x) + s;
        self.push(y, &[x], |_, g| vec![Some(g.clone())])
    }

    /// `e^x`.
    pub fn exp(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(f32::exp);
        // d/dx e^x = e^x
        self.push(y, &[x], |c, g| vec![Some(g * c.output())])
    }

    /// Natural logarithm.
    pub fn log(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(f32::ln);
        // d/dx ln x = 1/x
        self.push(y, &[x], |c, g| vec![Some(g / c.input(0))])
    }

    /// Square root.
    pub fn sqrt(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(f32::sqrt);
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
        let y = self.value(x).mapv(|v| v.powf(p));
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
