//! Layers without parameters: activations, pooling, flatten, dropout.

use super::{LayerSpec, Module};
use crate::autograd::{Tape, Var};
use crate::{shape_err, value_err, Result};

/// A parameter-free activation, described by its spec (ReLU, LeakyReLU, GELU, Sigmoid, Tanh, Softmax).
pub struct Activation(pub LayerSpec);

/// Resolve a possibly negative axis against a rank, PyTorch style.
pub(crate) fn resolve_axis(layer: &str, dim: isize, rank: usize) -> Result<usize> {
    let a = if dim < 0 { dim + rank as isize } else { dim };
    if a < 0 || a >= rank as isize {
        shape_err!("{layer}: dim {dim} is out of range for an input of rank {rank}");
    }
    Ok(a as usize)
}

impl Module for Activation {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        Ok(match self.0 {
            LayerSpec::ReLU => t.relu(x),
            LayerSpec::LeakyReLU { negative_slope } => t.leaky_relu(x, negative_slope),
            LayerSpec::GELU { approximate } => t.gelu(x, approximate),
            LayerSpec::Sigmoid => t.sigmoid(x),
            LayerSpec::Tanh => t.tanh(x),
            LayerSpec::Softmax { dim } => {
                let axis = resolve_axis("Softmax", dim, t.shape(x).len())?;
                t.softmax(x, axis)?
            }
            ref other => value_err!("not an activation: {}", other.type_name()),
        })
    }
    fn spec(&self) -> LayerSpec {
        self.0.clone()
    }
}

/// MaxPool2d or AvgPool2d.
pub struct Pool {
    is_max: bool,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
}

impl Pool {
    /// A pooling layer; `is_max` picks max over average.
    pub fn new(
        is_max: bool,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self> {
        if kernel.contains(&0) || stride.contains(&0) {
            value_err!(
                "{}: kernel_size and stride must be positive",
                if is_max { "MaxPool2d" } else { "AvgPool2d" }
            );
        }
        Ok(Pool {
            is_max,
            kernel,
            stride,
            padding,
        })
    }
}

impl Module for Pool {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        if self.is_max {
            t.max_pool2d(x, self.kernel, self.stride, self.padding)
        } else {
            t.avg_pool2d(x, self.kernel, self.stride, self.padding)
        }
    }
    fn spec(&self) -> LayerSpec {
        let (kernel_size, stride, padding) = (self.kernel, self.stride, self.padding);
        if self.is_max {
            LayerSpec::MaxPool2d {
                kernel_size,
                stride,
                padding,
            }
        } else {
            LayerSpec::AvgPool2d {
                kernel_size,
                stride,
                padding,
            }
        }
    }
}

/// Merge dimensions `start_dim..=end_dim` into one (by default all but the batch dimension).
pub struct Flatten {
    /// First dimension merged.
    pub start_dim: isize,
    /// Last dimension merged.
    pub end_dim: isize,
}

impl Flatten {
    /// The output shape for an input shape.
    pub fn output_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let s = resolve_axis("Flatten", self.start_dim, shape.len())?;
        let e = resolve_axis("Flatten", self.end_dim, shape.len())?;
        if s > e {
            shape_err!(
                "Flatten: start_dim {} comes after end_dim {}",
                self.start_dim,
                self.end_dim
            );
        }
        let mut out = shape[..s].to_vec();
        out.push(shape[s..=e].iter().product());
        out.extend(&shape[e + 1..]);
        Ok(out)
    }
}

impl Module for Flatten {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        let shape = self.output_shape(t.shape(x))?;
        t.reshape(x, &shape)
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec::Flatten {
            start_dim: self.start_dim,
            end_dim: self.end_dim,
        }
    }
}

/// Inverted dropout (identity in eval mode).
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f32,
}

impl Module for Dropout {
    fn forward(&self, t: &mut Tape, x: Var) -> Result<Var> {
        t.dropout(x, self.p)
    }
    fn spec(&self) -> LayerSpec {
        LayerSpec::Dropout { p: self.p }
    }
}
