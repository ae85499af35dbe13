//! Activations, softmax and dropout.

use ndarray::{Axis, Zip};

use super::tape::{Tape, Tensor, Var};
use crate::{shape_err, value_err, Result};

/// The two GELU forms PyTorch offers: exact (erf) and the tanh approximation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluApprox {
    /// `x · Φ(x)` with the exact normal CDF (PyTorch `approximate="none"`).
    None,
    /// `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))` (PyTorch `approximate="tanh"`).
    Tanh,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

pub(super) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// GELU's value and derivative at `x`.
fn gelu(x: f32, approx: GeluApprox) -> (f32, f32) {
    match approx {
        GeluApprox::None => {
            let cdf = 0.5 * (1.0 + libm::erff(x * FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() * 0.398_942_3; // 1/√(2π)
            (x * cdf, cdf + x * pdf)
        }
        GeluApprox::Tanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            let th = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            (
                0.5 * x * (1.0 + th),
                0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du,
            )
        }
    }
}

fn check_axis(op: &str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        shape_err!("{op}: axis {axis} is out of range for shape {shape:?}");
    }
    Ok(())
}

/// Softmax of `x` along `axis`, computed stably.
pub fn softmax_values(x: &Tensor, axis: usize) -> Tensor {
    let mut y = x.clone();
    for mut lane in y.lanes_mut(Axis(axis)) {
        let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        lane.mapv_inplace(|v| (v - m).exp());
        let s = lane.sum();
        lane.mapv_inplace(|v| v / s);
    }
    y
}

impl Tape {
    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Var {
        // A comparison, not f32::max: on wasm32 `max` is a call to fmaxf per value (8% of a CNN's
        // inference time); NaN still maps to 0, as before.
        let y = self.value(x).mapv(|v| if v > 0.0 { v } else { 0.0 });
        self.push(y, &[x], |c, g| {
            vec![Some(Zip::from(g).and(c.input(0)).map_collect(|&g, &x| {
                if x > 0.0 {
                    g
                } else {
                    0.0
                }
            }))]
        })
    }

    /// `x` where positive, `slope · x` elsewhere.
    pub fn leaky_relu(&mut self, x: Var, slope: f32) -> Var {
        let y = self.value(x).mapv(|v| if v > 0.0 { v } else { slope * v });
        self.push(y, &[x], move |c, g| {
            vec![Some(Zip::from(g).and(c.input(0)).map_collect(|&g, &x| {
                if x > 0.0 {
                    g
                } else {
                    slope * g
                }
            }))]
        })
    }

    /// Gaussian error linear unit, exact or tanh-approximated.
    pub fn gelu(&mut self, x: Var, approx: GeluApprox) -> Var {
        let y = self.value(x).mapv(|v| gelu(v, approx).0);
        self.push(y, &[x], move |c, g| {
            vec![Some(
                Zip::from(g)
                    .and(c.input(0))
                    .map_collect(|&g, &x| g * gelu(x, approx).1),
            )]
        })
    }

    /// The error function, `erf(x)`; its derivative is `2/√π · e^(-x²)`. ONNX graphs spell GELU
    /// with it (`x · ½ · (1 + erf(x/√2))`, as PyTorch exports `F.gelu`).
    pub fn erf(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(libm::erff);
        self.push(y, &[x], |c, g| {
            vec![Some(Zip::from(g).and(c.input(0)).map_collect(|&g, &x| {
                g * std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp()
            }))]
        })
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(sigmoid);
        // σ' = σ(1 - σ)
        self.push(y, &[x], |c, g| {
            vec![Some(
                Zip::from(g)
                    .and(c.output())
                    .map_collect(|&g, &y| g * y * (1.0 - y)),
            )]
        })
    }

    /// Hyperbolic tangent.
    pub fn tanh(&mut self, x: Var) -> Var {
        let y = self.value(x).mapv(f32::tanh);
        // tanh' = 1 - tanh²
        self.push(y, &[x], |c, g| {
            vec![Some(
                Zip::from(g)
                    .and(c.output())
                    .map_collect(|&g, &y| g * (1.0 - y * y)),
            )]
        })
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: Var, axis: usize) -> Result<Var> {
        check_axis("softmax", axis, self.shape(x))?;
        let y = softmax_values(self.value(x), axis);
        // dx = y ⊙ (g - Σ g⊙y)
        Ok(self.push(y, &[x], move |c, g| {
            let y = c.output();
            let dot = (g * y).sum_axis(Axis(axis)).insert_axis(Axis(axis));
            vec![Some(y * &(g - &dot))]
        }))
    }

    /// `log(softmax(x))` along `axis`, computed stably.
    pub fn log_softmax(&mut self, x: Var, axis: usize) -> Result<Var> {
        check_axis("log_softmax", axis, self.shape(x))?;
        let mut y = self.value(x).clone();
        for mut lane in y.lanes_mut(Axis(axis)) {
            let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = m + lane.fold(0.0, |a, &v| a + (v - m).exp()).ln();
            lane.mapv_inplace(|v| v - lse);
        }
        // dx = g - softmax ⊙ Σ g
        Ok(self.push(y, &[x], move |c, g| {
            let s = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
            let p = c.output().mapv(f32::exp);
            vec![Some(g - &(p * &s))]
        }))
    }

    /// Inverted dropout: in training, zero each element with probability `p` and scale the rest by
    /// `1/(1-p)`; in evaluation, the identity.
    pub fn dropout(&mut self, x: Var, p: f32) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            value_err!("Dropout: p must be in [0, 1), got {p}");
        }
        if !self.training || p == 0.0 {
            return Ok(x);
        }
        // a predict-only build (kiln-wasm's small module) has no tape that trains: no mask code
        #[cfg(not(feature = "train"))]
        value_err!("Dropout: training needs kiln-core's `train` feature");
        #[cfg(feature = "train")]
        self.dropout_mask(x, p)
    }

    #[cfg(feature = "train")]
    fn dropout_mask(&mut self, x: Var, p: f32) -> Result<Var> {
        use ndarray::ArrayD;
        use rand::Rng;
        let keep = 1.0 / (1.0 - p);
        let shape = self.value(x).raw_dim();
        let rng = self.rng();
        let mask: ArrayD<f32> =
            ArrayD::from_shape_simple_fn(
                shape,
                || if rng.random::<f32>() < p { 0.0 } else { keep },
            );
        let y = self.value(x) * &mask;
        Ok(self.push(y, &[x], move |_, g| vec![Some(g * &mask)]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{check, check_at, random_inputs};
    use super::*;

    /// Inputs kept at least 0.05 away from the kinks of relu-like functions.
    fn away_from_zero(shape: &[usize]) -> Vec<Tensor> {
        random_inputs(&[shape], 5)
            .into_iter()
            .map(|x| x.mapv(|v| if v.abs() < 0.05 { v + 0.1 } else { v }))
            .collect()
    }

    #[test]
    fn activation_gradients() {
        check_at(away_from_zero(&[4, 5]), |t, v| t.relu(v[0]));
        check_at(away_from_zero(&[4, 5]), |t, v| t.leaky_relu(v[0], 0.1));
        check(&[&[4, 5]], |t, v| t.gelu(v[0], GeluApprox::None));
        check(&[&[4, 5]], |t, v| t.gelu(v[0], GeluApprox::Tanh));
        check(&[&[4, 5]], |t, v| t.sigmoid(v[0]));
        check(&[&[4, 5]], |t, v| t.erf(v[0]));
        check(&[&[4, 5]], |t, v| t.tanh(v[0]));
        check(&[&[3, 4, 5]], |t, v| t.softmax(v[0], 1).unwrap());
        check(&[&[3, 5]], |t, v| t.softmax(v[0], 1).unwrap());
        check(&[&[3, 4, 5]], |t, v| t.log_softmax(v[0], 2).unwrap());
        check(&[&[3, 5]], |t, v| t.log_softmax(v[0], 0).unwrap());
    }

    #[test]
    fn gelu_matches_pytorch_values() {
        // torch.nn.functional.gelu(torch.tensor([-1.0, 0.5, 2.0]))  (and approximate="tanh")
        let exact = [-0.158_655_25, 0.345_731_14, 1.954_499_7];
        let tanh = [-0.158_808, 0.345_714_02, 1.954_597_7];
        for (i, x) in [-1.0f32, 0.5, 2.0].into_iter().enumerate() {
            assert!((gelu(x, GeluApprox::None).0 - exact[i]).abs() < 1e-6);
            assert!((gelu(x, GeluApprox::Tanh).0 - tanh[i]).abs() < 1e-5);
        }
    }

    #[test]
    fn dropout_masks_and_scales_in_training_only() {
        let x = ndarray::ArrayD::ones(vec![1000]);
        let mut t = Tape::new(true, 1);
        let v = t.leaf(x.clone(), true);
        let y = t.dropout(v, 0.25).unwrap();
        let kept = t.value(y).iter().filter(|&&e| e != 0.0).count();
        assert!((650..850).contains(&kept), "kept {kept} of 1000 at p=0.25");
        assert!(t
            .value(y)
            .iter()
            .all(|&e| e == 0.0 || (e - 1.0 / 0.75).abs() < 1e-6));
        // the gradient uses the same mask
        check_at(vec![x.clone().mapv(|v| v * 0.3)], |t, v| {
            t.dropout(v[0], 0.5).unwrap()
        });
        let mut eval = Tape::inference();
        let v = eval.constant(x.clone());
        let y = eval.dropout(v, 0.5).unwrap();
        assert_eq!(eval.value(y), &x);
        assert!(eval.dropout(v, 1.0).is_err());
    }
}
