//! The one place where kiln-core's errors become Python exceptions. The exception classes live in
//! `kiln/errors.py` (so they can also derive from ValueError / OSError, as Python users expect).

use kiln_core::KilnError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Convert a core error into the matching `kiln.errors` exception.
pub fn to_py(e: KilnError) -> PyErr {
    let class = match &e {
        KilnError::Shape(_) => "ShapeError",
        KilnError::Value(_) | KilnError::Unknown { .. } => "InvalidInputError",
        KilnError::Checkpoint(_) => "CheckpointError",
        KilnError::Onnx(_) => "OnnxError",
        KilnError::NonFiniteLoss { .. } => "TrainingError",
        KilnError::Io { .. } => "KilnIOError",
    };
    let message = e.to_string();
    Python::attach(
        |py| match py.import("kiln.errors").and_then(|m| m.getattr(class)) {
            Ok(cls) => PyErr::from_type(
                cls.cast_into()
                    .expect("kiln.errors holds exception classes"),
                message,
            ),
            Err(_) => PyRuntimeError::new_err(message),
        },
    )
}

/// `Result<T, KilnError>` → `PyResult<T>`.
pub trait IntoPy<T> {
    /// Map the error with [`to_py`].
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for kiln_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
