//! kiln_core::preprocess for Python: check a spec, and turn an RGBA image into the model's input.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use kiln_core::preprocess::Preprocess;

use crate::error::IntoPy;

/// The spec, checked, as the metadata stores it.
#[pyfunction]
pub fn preprocess_check(spec_json: &str) -> PyResult<String> {
    Ok(Preprocess::from_json(spec_json).py()?.to_json())
}

/// `[C * height * width]` values (the `[1, C, H, W]` input) from `src_height` × `src_width` RGBA bytes.
#[pyfunction]
pub fn preprocess_apply<'py>(
    py: Python<'py>,
    spec_json: &str,
    rgba: PyReadonlyArray1<'py, u8>,
    src_width: usize,
    src_height: usize,
    height: usize,
    width: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let spec = Preprocess::from_json(spec_json).py()?;
    let out = spec
        .apply(rgba.as_slice()?, src_width, src_height, height, width)
        .py()?;
    Ok(out.into_pyarray(py))
}
