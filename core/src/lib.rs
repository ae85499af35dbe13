#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod arrays;
pub mod autograd;
pub mod datasets;
pub mod drift;
pub mod error;
pub mod graph;
mod json_args;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod optim;
pub mod preprocess;
pub mod text;
pub mod train;

pub use autograd::{Tape, Tensor, Var};
pub use error::{KilnError, Result};
pub use model::Model;

#[cfg(feature = "export")]
pub mod onnx;
// pruning, distillation and quantization need ONNX's types, not tract: the browser's Trainer has them
#[cfg(feature = "export")]
pub mod optimize;
