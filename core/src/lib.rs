#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod autograd;
pub mod error;
pub mod nn;
pub use error::{KilnError, Result};

#[cfg(feature = "onnx")]
pub mod infer;
