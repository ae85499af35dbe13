//! Reverse-mode automatic differentiation on a tape.
//!
//! Every op is a method on [`Tape`] that computes its value and records, right beside it, the rule that
//! turns its output's gradient into its inputs' gradients. Each op's tests check that rule against
//! finite differences ([`gradcheck`]).

mod activation;
mod attention;
mod conv;
mod elementwise;
mod linalg;
mod loss;
mod norm;
mod quant;
mod rnn;
mod shape;
mod tape;
mod vmath;

#[cfg(test)]
pub(crate) mod gradcheck;

pub use activation::{softmax_values, GeluApprox};
pub use conv::Window;
pub use elementwise::{broadcast_shape, sum_to};
pub use linalg::{gemm, matmul2d};
pub use norm::BatchStats;
pub use quant::QuantGrid;
pub use rnn::{RnnCell, RnnConfig, RnnOutput};
pub use tape::{BackwardCtx, Tape, Tensor, Var};
