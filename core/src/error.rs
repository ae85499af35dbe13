//! The one error type of kiln-core. Bindings map it to a Python exception or a JS `Error` in one place.

use thiserror::Error;

/// Everything that can go wrong in kiln-core, with a message that names what was wrong.
#[derive(Debug, Error)]
pub enum KilnError {
    /// Tensor shapes that do not fit together; the message names the op or layer and both shapes.
    #[error("{0}")]
    Shape(String),
    /// An argument or input value that cannot be used (a label out of range, NaN in the input, …).
    #[error("{0}")]
    Value(String),
    /// A layer, loss, optimizer or metric name that kiln does not know.
    #[error("unknown {kind} {name:?}{hint}")]
    Unknown {
        /// What kind of thing was named ("layer", "loss", …).
        kind: &'static str,
        /// The name that was not recognised.
        name: String,
        /// Extra text, such as the list of known names.
        hint: String,
    },
    /// A checkpoint (.kiln file) that cannot be read or does not fit the model.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An ONNX model that cannot be exported, parsed or run.
    #[error("{0}")]
    Onnx(String),
    /// The training loss became NaN or infinite.
    #[error("loss became {value} at epoch {epoch}, batch {batch}: lower the learning rate or check the input for extreme values")]
    NonFiniteLoss {
        /// Epoch, counted from 1.
        epoch: usize,
        /// Batch within the epoch, counted from 1.
        batch: usize,
        /// The non-finite loss value.
        value: f32,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// kiln-core's result type.
pub type Result<T, E = KilnError> = std::result::Result<T, E>;

impl KilnError {
    /// A shape error with a formatted message.
    pub fn shape(msg: impl Into<String>) -> Self {
        KilnError::Shape(msg.into())
    }
    /// A value error with a formatted message.
    pub fn value(msg: impl Into<String>) -> Self {
        KilnError::Value(msg.into())
    }
    /// An ONNX error with a formatted message.
    pub fn onnx(msg: impl Into<String>) -> Self {
        KilnError::Onnx(msg.into())
    }
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        KilnError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Return early with a [`KilnError::Shape`] built from a format string.
#[macro_export]
macro_rules! shape_err {
    ($($arg:tt)*) => { return Err($crate::KilnError::Shape(format!($($arg)*))) };
}

/// Return early with a [`KilnError::Value`] built from a format string.
#[macro_export]
macro_rules! value_err {
    ($($arg:tt)*) => { return Err($crate::KilnError::Value(format!($($arg)*))) };
}
