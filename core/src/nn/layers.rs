//! The layers that own parameters: Linear, Conv1d/Conv2d, BatchNorm1d/2d, LayerNorm, Embedding.

use ndarray::{Array1, ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;

use super::{standard_normal, uniform_fan_in, LayerSpec, Module, Param};
use crate::autograd::{Tape, Var};
use crate::{shape_err, value_err, Result};

/// `y = x·Wᵀ + b`.
///
/// # Shapes
/// `x: [N, in_features]` → `[N, out_features]`; `weight: [out, in]`, `bias: [out]`.
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Param,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Param>,
}

impl Linear {
    /// A Linear layer with PyTorch's default initialisation.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut ChaCha8Rng) -> Self {
        let weight = Param::new(uniform_fan_in(
            &[out_features, in_features],
            in_features,
            rng,
        ));
        let bias = bias.then(|| Param::new(uniform_fan_in(&[out_features], in_features, rng)));
        Linear { weight, bias }
    }
}

/// The (weight, bias) pair of layers that have one, listed under PyTorch's names.
macro_rules! weight_bias_tensors {
    () => {
        fn tensors(&self) -> Vec<(String, &Param)> {
            let mut v = vec![("weight".to_string(), &self.weight)];
            v.extend(self.bias.as_ref().map(|b| ("bias".to_string(), b)));
            v
        }
        fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
            let mut v = vec![("weight".to_string(), &mut self.weight)];
            v.extend(self.bias.as_mut().map(|b| ("bias".to_string(), b)));
            v
        }
    };
}

impl Module for Linear {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let w = self.weight.bind(t);
        let b = self.bias.as_ref().map(|b| b.bind(t));
        t.linear(x, w, b)
    }
    weight_bias_tensors!();
    fn spec(&self) -> LayerSpec {
        let s = self.weight.value().shape();
        LayerSpec::Linear {
            in_features: s[1],
            out_features: s[0],
            bias: self.bias.is_some(),
        }
    }
}

/// Conv1d or Conv2d (cross-correlation, as PyTorch), with stride, padding, dilation and groups.
///
/// # Shapes
/// Conv2d: `x: [N, C, H, W]` → `[N, O, H', W']`, `weight: [O, C/groups, kh, kw]`.
/// Conv1d: `x: [N, C, L]` → `[N, O, L']`, `weight: [O, C/groups, k]`.
pub struct Conv {
    spec: LayerSpec,
    /// The kernel.
    pub weight: Param,
    /// `[out_channels]`, when the layer has a bias.
    pub bias: Option<Param>,
}

impl Conv {
    /// The spec's channels, kernel, groups and bias, checked (no weights drawn).
    pub(crate) fn geometry(spec: &LayerSpec) -> Result<(usize, usize, Vec<usize>, usize, bool)> {
        let (cin, cout, kernel, groups, bias, name): (usize, usize, Vec<usize>, usize, bool, &str) =
            match spec {
                LayerSpec::Conv1d {
                    in_channels,
                    out_channels,
                    kernel_size,
                    groups,
                    bias,
                    stride,
                    ..
                } => {
                    if *stride == 0 {
                        value_err!("Conv1d: stride must be positive");
                    }
                    (
                        *in_channels,
                        *out_channels,
                        vec![*kernel_size],
                        *groups,
                        *bias,
                        "Conv1d",
                    )
                }
                LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    kernel_size,
                    groups,
                    bias,
                    stride,
                    ..
                } => {
                    if stride.contains(&0) {
                        value_err!("Conv2d: stride must be positive");
                    }
                    (
                        *in_channels,
                        *out_channels,
                        kernel_size.to_vec(),
                        *groups,
                        *bias,
                        "Conv2d",
                    )
                }
                other => value_err!("Conv: not a convolution spec: {}", other.type_name()),
            };
        if cin == 0 || cout == 0 || kernel.contains(&0) || groups == 0 {
            value_err!("{name}: channels, kernel_size and groups must be positive");
        }
        if cin % groups != 0 || cout % groups != 0 {
            value_err!("{name}: in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({groups})");
        }
        Ok((cin, cout, kernel, groups, bias))
    }

    /// Build from a `Conv1d` or `Conv2d` spec with PyTorch's default initialisation.
    pub fn new(spec: LayerSpec, rng: &mut ChaCha8Rng) -> Result<Self> {
        let (cin, cout, kernel, groups, bias) = Self::geometry(&spec)?;
        let mut wshape = vec![cout, cin / groups];
        wshape.extend(&kernel);
        let fan_in: usize = wshape[1..].iter().product();
        let weight = Param::new(uniform_fan_in(&wshape, fan_in, rng));
        let bias = bias.then(|| Param::new(uniform_fan_in(&[cout], fan_in, rng)));
        Ok(Conv { spec, weight, bias })
    }
}

impl Module for Conv {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let w = self.weight.bind(t);
        let b = self.bias.as_ref().map(|b| b.bind(t));
        match self.spec {
            LayerSpec::Conv2d {
                stride,
                padding,
                dilation,
                groups,
                ..
            } => t.conv2d(x, w, b, stride, padding, dilation, groups),
            LayerSpec::Conv1d {
                stride,
                padding,
                dilation,
                groups,
                ..
            } => t.conv1d(x, w, b, stride, padding, dilation, groups),
            _ => unreachable!("Conv::new accepts only convolution specs"),
        }
    }
    weight_bias_tensors!();
    fn spec(&self) -> LayerSpec {
        self.spec.clone()
    }
}

/// Batch normalisation with running statistics: batch statistics in training, running ones in eval.
///
/// # Shapes
/// BatchNorm1d: `[N, C]` or `[N, C, L]`; BatchNorm2d: `[N, C, H, W]`; the output has the input's shape.
pub struct BatchNorm {
    /// Scale γ, `[C]`.
    pub weight: Param,
    /// Shift β, `[C]`.
    pub bias: Param,
    /// Running mean (buffer), `[C]`.
    pub running_mean: Param,
    /// Running (unbiased) variance (buffer), `[C]`.
    pub running_var: Param,
    eps: f32,
    momentum: f32,
    two_d: bool,
}

impl BatchNorm {
    /// γ = 1, β = 0, running mean 0 and variance 1, as PyTorch.
    pub fn new(num_features: usize, eps: f32, momentum: f32, two_d: bool) -> Result<Self> {
        if num_features == 0 || eps <= 0.0 || !(0.0..=1.0).contains(&momentum) {
            value_err!(
                "BatchNorm: num_features must be positive, eps positive and momentum in [0, 1]"
            );
        }
        let ones = ArrayD::ones(IxDyn(&[num_features]));
        let zeros = ArrayD::zeros(IxDyn(&[num_features]));
        Ok(BatchNorm {
            weight: Param::new(ones.clone()),
            bias: Param::new(zeros.clone()),
            running_mean: Param::buffer(zeros),
            running_var: Param::buffer(ones),
            eps,
            momentum,
            two_d,
        })
    }
}

impl Module for BatchNorm {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let rank = t.shape(x).len();
        let ok = if self.two_d {
            rank == 4
        } else {
            rank == 2 || rank == 3
        };
        if !ok {
            let (name, want) = if self.two_d {
                ("BatchNorm2d", "[N, C, H, W]")
            } else {
                ("BatchNorm1d", "[N, C] or [N, C, L]")
            };
            shape_err!("{name}: expects input {want}, got {:?}", t.shape(x));
        }
        let w = self.weight.bind(t);
        let b = self.bias.bind(t);
        let to1 = |p: &Param, t: &Tape| -> Array1<f32> { p.current(t).iter().copied().collect() };
        if !t.training {
            let (m, v) = (to1(&self.running_mean, t), to1(&self.running_var, t));
            return Ok(t.batch_norm(x, w, b, Some((&m, &v)), self.eps)?.0);
        }
        let (y, stats) = t.batch_norm(x, w, b, None, self.eps)?;
        let stats = stats.expect("training-mode batch_norm returns statistics");
        let m = self.momentum;
        let unbias = stats.count as f32 / (stats.count as f32 - 1.0);
        // the running statistics are recorded on the tape; the Net running this layer stores them
        let mut mean = self.running_mean.current(t).clone();
        for (r, s) in mean.iter_mut().zip(stats.mean.iter()) {
            *r = (1.0 - m) * *r + m * s;
        }
        let mut var = self.running_var.current(t).clone();
        for (r, s) in var.iter_mut().zip(stats.var.iter()) {
            *r = (1.0 - m) * *r + m * s * unbias;
        }
        self.running_mean.update(t, mean);
        self.running_var.update(t, var);
        Ok(y)
    }
    fn tensors(&self) -> Vec<(String, &Param)> {
        vec![
            ("weight".into(), &self.weight),
            ("bias".into(), &self.bias),
            ("running_mean".into(), &self.running_mean),
            ("running_var".into(), &self.running_var),
        ]
    }
    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
            ("running_mean".into(), &mut self.running_mean),
            ("running_var".into(), &mut self.running_var),
        ]
    }
    fn spec(&self) -> LayerSpec {
        let (num_features, eps, momentum) = (self.weight.value().len(), self.eps, self.momentum);
        if self.two_d {
            LayerSpec::BatchNorm2d {
                num_features,
                eps,
                momentum,
            }
        } else {
            LayerSpec::BatchNorm1d {
                num_features,
                eps,
                momentum,
            }
        }
    }
}

/// Layer normalisation over the trailing `normalized_shape` dimensions.
pub struct LayerNorm {
    /// γ, shaped `normalized_shape`.
    pub weight: Param,
    /// β, shaped `normalized_shape`.
    pub bias: Param,
    eps: f32,
}

impl LayerNorm {
    /// γ = 1, β = 0, as PyTorch.
    pub fn new(normalized_shape: Vec<usize>, eps: f32) -> Result<Self> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) || eps <= 0.0 {
            value_err!("LayerNorm: normalized_shape must be non-empty and positive, eps positive");
        }
        Ok(LayerNorm {
            weight: Param::new(ArrayD::ones(IxDyn(&normalized_shape))),
            bias: Param::new(ArrayD::zeros(IxDyn(&normalized_shape))),
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let w = self.weight.bind(t);
        let b = self.bias.bind(t);
        t.layer_norm(x, w, b, self.eps)
    }
    fn tensors(&self) -> Vec<(String, &Param)> {
        vec![("weight".into(), &self.weight), ("bias".into(), &self.bias)]
    }
    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
        ]
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec::LayerNorm {
            normalized_shape: self.weight.value().shape().to_vec(),
            eps: self.eps,
        }
    }
}

/// A lookup table: integer ids (carried as exact whole numbers in the f32 input) to vectors.
///
/// # Shapes
/// `ids: [...]` → `[..., embedding_dim]`; `weight: [num_embeddings, embedding_dim]`.
pub struct Embedding {
    /// The table.
    pub weight: Param,
}

impl Embedding {
    /// A table drawn from N(0, 1), as PyTorch.
    pub fn new(num_embeddings: usize, embedding_dim: usize, rng: &mut ChaCha8Rng) -> Self {
        Embedding {
            weight: Param::new(standard_normal(&[num_embeddings, embedding_dim], rng)),
        }
    }
}

impl Module for Embedding {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let n = self.weight.value().shape()[0];
        let mut ids = ArrayD::<usize>::zeros(t.value(x).raw_dim());
        for (id, &v) in ids.iter_mut().zip(t.value(x).iter()) {
            if v.fract() != 0.0 || v < 0.0 || v >= n as f32 {
                value_err!("Embedding: input {v} is not an index in 0..{n}");
            }
            *id = v as usize;
        }
        let w = self.weight.bind(t);
        t.embedding(w, &ids)
    }
    fn tensors(&self) -> Vec<(String, &Param)> {
        vec![("weight".into(), &self.weight)]
    }
    fn tensors_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![("weight".into(), &mut self.weight)]
    }
    fn spec(&self) -> LayerSpec {
        let s = self.weight.value().shape();
        LayerSpec::Embedding {
            num_embeddings: s[0],
            embedding_dim: s[1],
        }
    }
}
