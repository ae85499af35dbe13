//! `kiln._kiln.DriftMonitor` and the drift functions: thin wrappers over kiln_core::drift. The
//! statistics, defaults and checks are the core's; `kiln/drift.py` is the Pythonic face.

use std::borrow::Cow;

use kiln_core::drift::{model_version, DriftMonitor, Feedback, Reference};
use kiln_core::drift::{DEFAULT_ALPHA, DEFAULT_MIN_PSI, DEFAULT_WINDOW, METADATA_KEY};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::IntoPy;

/// The values of a numpy array in row-major order (a view when already contiguous).
fn values<'a>(a: &'a PyReadonlyArrayDyn<'_, f32>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// A sliding-window drift monitor against a model's `kiln.drift` summary.
#[pyclass(module = "kiln._kiln", name = "DriftMonitor")]
pub struct PyDriftMonitor {
    inner: DriftMonitor,
}

#[pymethods]
impl PyDriftMonitor {
    /// From the bytes of an ONNX model exported with a reference; `None` takes the core's default.
    #[staticmethod]
    #[pyo3(signature = (onnx, window=None, alpha=None, min_psi=None))]
    fn from_onnx(
        onnx: &[u8],
        window: Option<usize>,
        alpha: Option<f64>,
        min_psi: Option<f64>,
    ) -> PyResult<Self> {
        let reference = Reference::from_onnx(onnx).py()?;
        Ok(PyDriftMonitor {
            inner: DriftMonitor::with_thresholds(
                reference,
                window.unwrap_or(DEFAULT_WINDOW),
                alpha.unwrap_or(DEFAULT_ALPHA),
                min_psi.unwrap_or(DEFAULT_MIN_PSI),
            )
            .py()?,
        })
    }

    /// Checks a batch of inputs before the model runs on it (shape, finite values); a refused
    /// batch counts as rejected. Returns the number of examples.
    fn check(&mut self, x: PyReadonlyArrayDyn<'_, f32>) -> PyResult<usize> {
        self.inner.admit(&values(&x), x.shape()).py()
    }

    /// Adds a batch of inputs and the model's outputs on them, all or nothing.
    #[pyo3(signature = (x, outputs=None))]
    fn update(
        &mut self,
        x: PyReadonlyArrayDyn<'_, f32>,
        outputs: Option<PyReadonlyArrayDyn<'_, f32>>,
    ) -> PyResult<usize> {
        let out = outputs.as_ref().map(|o| (values(o), o.shape().to_vec()));
        let out = out.as_ref().map(|(v, s)| (v.as_ref(), s.as_slice()));
        self.inner.observe_batch(&values(&x), x.shape(), out).py()
    }

    /// The report on the window, as JSON.
    fn report_json(&self) -> String {
        self.inner.report().to_json()
    }

    /// The report as JSON when the verdict just turned to drift, else None.
    fn drift_started(&mut self) -> Option<String> {
        self.inner.drift_started().map(|r| r.to_json())
    }

    /// Empties the window.
    fn reset(&mut self) {
        self.inner.reset()
    }

    /// The window's length.
    #[getter]
    fn window(&self) -> usize {
        self.inner.window()
    }

    /// Shape of one input example.
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.inner.reference().input_shape.clone()
    }

    /// Examples the reference summarises.
    #[getter]
    fn reference_count(&self) -> u32 {
        self.inner.reference().count
    }
}

/// The `(key, value)` metadata entry summarising `x` and the model's `outputs` on it.
#[pyfunction]
#[pyo3(signature = (x, outputs=None))]
pub fn drift_reference(
    x: PyReadonlyArrayDyn<'_, f32>,
    outputs: Option<PyReadonlyArrayDyn<'_, f32>>,
) -> PyResult<(String, String)> {
    let shape = x.shape();
    let out = outputs.as_ref().map(|o| (values(o), o.shape().to_vec()));
    let out = out.as_ref().map(|(v, s)| (v.as_ref(), s.as_slice()));
    let r = Reference::build(shape.get(1..).unwrap_or(&[]), &values(&x), out).py()?;
    Ok((METADATA_KEY.to_string(), r.encode()))
}

/// Reads a feedback file's bytes: `(inputs, labels, model_version)`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn feedback_load<'py>(
    py: Python<'py>,
    data: &[u8],
) -> PyResult<(
    Bound<'py, PyArrayDyn<f32>>,
    Bound<'py, PyArrayDyn<i64>>,
    String,
)> {
    let f = Feedback::from_bytes(data).py()?;
    let x = ndarray::ArrayD::from_shape_vec(f.shape.clone(), f.inputs)
        .expect("checked by Feedback::new");
    let y = ndarray::ArrayD::from_shape_vec(vec![f.labels.len()], f.labels).expect("1-D");
    Ok((x.into_pyarray(py), y.into_pyarray(py), f.model_version))
}

/// A feedback file's bytes from inputs `[n, ...]`, `n` labels and a model version.
#[pyfunction]
pub fn feedback_save<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'_, f32>,
    labels: PyReadonlyArrayDyn<'_, i64>,
    model_version: String,
) -> PyResult<Bound<'py, PyBytes>> {
    let labels: Vec<i64> = labels.as_array().iter().copied().collect();
    let f = Feedback::new(
        values(&x).into_owned(),
        x.shape().to_vec(),
        labels,
        model_version,
    )
    .py()?;
    Ok(PyBytes::new(py, &f.to_bytes().py()?))
}

/// The fingerprint feedback records for a model's bytes.
#[pyfunction(name = "model_version")]
pub fn py_model_version(data: &[u8]) -> String {
    model_version(data)
}
