//! `kiln._kiln.InferenceSession`: ONNX inference on kiln's engine or tract, chosen by
//! kiln_core::onnx::session (kiln's engine first, as in the browser), with numpy in and out.

use kiln_core::onnx::session::{EngineChoice, InferenceSession};
use kiln_core::onnx::tract::{TensorData, TensorInfo};
use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::IntoPy;

/// An input array of any dtype tract understands.
#[derive(FromPyObject)]
pub enum PyTensor<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    I64(PyReadonlyArrayDyn<'py, i64>),
    I32(PyReadonlyArrayDyn<'py, i32>),
    I8(PyReadonlyArrayDyn<'py, i8>),
    U8(PyReadonlyArrayDyn<'py, u8>),
    Bool(PyReadonlyArrayDyn<'py, bool>),
}

impl From<PyTensor<'_>> for TensorData {
    fn from(t: PyTensor) -> Self {
        match t {
            PyTensor::F32(a) => TensorData::F32(a.as_array().to_owned()),
            PyTensor::F64(a) => TensorData::F64(a.as_array().to_owned()),
            PyTensor::I64(a) => TensorData::I64(a.as_array().to_owned()),
            PyTensor::I32(a) => TensorData::I32(a.as_array().to_owned()),
            PyTensor::I8(a) => TensorData::I8(a.as_array().to_owned()),
            PyTensor::U8(a) => TensorData::U8(a.as_array().to_owned()),
            PyTensor::Bool(a) => TensorData::Bool(a.as_array().to_owned()),
        }
    }
}

fn to_numpy(py: Python<'_>, t: TensorData) -> Bound<'_, PyAny> {
    match t {
        TensorData::F32(a) => a.into_pyarray(py).into_any(),
        TensorData::F64(a) => a.into_pyarray(py).into_any(),
        TensorData::I64(a) => a.into_pyarray(py).into_any(),
        TensorData::I32(a) => a.into_pyarray(py).into_any(),
        TensorData::I8(a) => a.into_pyarray(py).into_any(),
        TensorData::U8(a) => a.into_pyarray(py).into_any(),
        TensorData::Bool(a) => a.into_pyarray(py).into_any(),
    }
}

fn describe<'py>(py: Python<'py>, infos: &[TensorInfo]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    infos
        .iter()
        .map(|i| {
            let d = PyDict::new(py);
            d.set_item("name", &i.name)?;
            d.set_item("shape", i.dims.clone())?;
            d.set_item("dtype", i.dtype.name())?;
            Ok(d)
        })
        .collect()
}

/// Loads a session without the GIL; when tract is about to load a long graph kiln's engine
/// declined, `kiln.errors.SlowLoadWarning` is issued first (a warnings filter set to "error" stops
/// the load with it).
fn with_slow_warning(
    py: Python<'_>,
    load: impl FnOnce(
            &str,
            &mut dyn FnMut(String) -> kiln_core::Result<()>,
        ) -> kiln_core::Result<InferenceSession>
        + Send,
) -> PyResult<PySession> {
    let mut raised: Option<PyErr> = None;
    let loaded = py.detach(|| {
        load(
            "The GIL is released while it loads, so other Python threads keep running.",
            &mut |words| {
                Python::attach(|py| {
                    let category = py.import("kiln.errors")?.getattr("SlowLoadWarning")?;
                    PyErr::warn(py, &category, &std::ffi::CString::new(words)?, 1)
                })
                .map_err(|e| {
                    raised = Some(e);
                    kiln_core::KilnError::onnx("the load was stopped by a warnings filter")
                })
            },
        )
    });
    match (loaded, raised) {
        (_, Some(e)) => Err(e),
        (loaded, None) => Ok(PySession {
            inner: loaded.py()?,
        }),
    }
}

/// A loaded ONNX model, run by kiln's engine or by tract.
#[pyclass(module = "kiln._kiln", name = "InferenceSession", frozen)]
pub struct PySession {
    pub(crate) inner: InferenceSession,
}

#[pymethods]
impl PySession {
    /// Load the model in `data` (the bytes of an .onnx file) on `engine`: "auto" (kiln's engine
    /// when it runs the model, tract otherwise), "kiln" or "tract".
    #[new]
    #[pyo3(signature = (data, engine = "auto"))]
    fn new(py: Python<'_>, data: &[u8], engine: &str) -> PyResult<Self> {
        let choice: EngineChoice = engine.parse().py()?;
        with_slow_warning(py, |remedy, warn| {
            InferenceSession::from_bytes_warning(data, choice, remedy, warn)
        })
    }

    /// Load an .onnx file (read by the core: a missing or unreadable file is the KilnIOError every
    /// kiln loader raises; tract finds external weights beside it).
    #[staticmethod]
    #[pyo3(signature = (path, engine = "auto"))]
    fn from_path(py: Python<'_>, path: std::path::PathBuf, engine: &str) -> PyResult<Self> {
        let choice: EngineChoice = engine.parse().py()?;
        with_slow_warning(py, |remedy, warn| {
            InferenceSession::from_path_warning(&path, choice, remedy, warn)
        })
    }

    /// "kiln" or "tract": the engine that runs the model.
    #[getter]
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    /// Why kiln's engine declined the model (then tract runs it), or None.
    #[getter]
    fn declined(&self) -> Option<String> {
        self.inner.declined().map(String::from)
    }

    /// `[{"name", "shape" (None = free), "dtype"}]` for each input.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        describe(py, self.inner.inputs())
    }

    /// The same for each output.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        describe(py, self.inner.outputs())
    }

    /// Class names from the `kiln.labels` metadata, if present.
    #[getter]
    fn labels(&self) -> Option<Vec<String>> {
        self.inner.labels()
    }

    /// The model's metadata_props.
    #[getter]
    fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.metadata().clone()
    }

    /// Run with inputs in the model's input order; returns one array per output.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyTensor<'py>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let data: Vec<TensorData> = inputs.into_iter().map(TensorData::from).collect();
        let sess = &self.inner;
        let outs = py.detach(|| sess.run(data)).py()?;
        Ok(outs.into_iter().map(|t| to_numpy(py, t)).collect())
    }
}
