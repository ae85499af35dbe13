//! `kiln._kiln.Model`: a thin wrapper over `kiln_core::Model`. Configuration crosses the border as
//! JSON (the core's serde types), arrays as numpy arrays; the fit loop runs with the GIL released.

use std::collections::BTreeMap;

use kiln_core::graph::{Graph, Tracer};
use kiln_core::nn::{GraphSpec, LayerSpec};
use kiln_core::onnx::export::{export_onnx, export_onnx_to, ExportOptions};
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{Control, Event, FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{Model, Tensor};
use numpy::{
    IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::IntoPy;

/// Targets as they arrive from Python: int64 class labels or float32 values.
#[derive(FromPyObject)]
pub enum PyTargets<'py> {
    Classes(PyReadonlyArray1<'py, i64>),
    Sequences(PyReadonlyArray2<'py, i64>),
    Values(PyReadonlyArrayDyn<'py, f32>),
}

pub(crate) fn targets(y: PyTargets) -> PyResult<Targets> {
    Ok(match y {
        PyTargets::Classes(c) => {
            let c = c.as_array();
            if let Some(bad) = c.iter().find(|&&v| v < 0) {
                return Err(crate::error::to_py(kiln_core::KilnError::value(format!(
                    "labels must be non-negative class indices, got {bad}"
                ))));
            }
            Targets::Classes(c.iter().map(|&v| v as usize).collect())
        }
        PyTargets::Sequences(c) => {
            let c = c.as_array();
            if let Some(bad) = c.iter().find(|&&v| v < 0) {
                return Err(crate::error::to_py(kiln_core::KilnError::value(format!(
                    "labels must be non-negative class indices, got {bad}"
                ))));
            }
            if c.ncols() == 0 {
                return Err(crate::error::to_py(kiln_core::KilnError::shape(format!(
                    "labels of shape {:?}: a sequence needs at least one position",
                    c.shape()
                ))));
            }
            Targets::Sequences {
                labels: c.iter().map(|&v| v as usize).collect(),
                steps: c.ncols(),
            }
        }
        PyTargets::Values(v) => Targets::Values(v.as_array().to_owned()),
    })
}

fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> PyResult<T> {
    serde_json::from_str(s).map_err(|e| {
        crate::error::to_py(kiln_core::KilnError::value(format!("invalid {what}: {e}")))
    })
}

fn logs_dict<'py>(py: Python<'py>, logs: &BTreeMap<String, f64>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in logs {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// An optimizer spec (JSON) with the core's defaults filled in, checked: what `compile` will use.
#[pyfunction]
pub fn optimizer_spec(spec_json: &str) -> PyResult<String> {
    let spec: OptimizerSpec = json("optimizer", spec_json)?;
    spec.build().py()?;
    Ok(serde_json::to_string(&spec).expect("specs serialise"))
}

/// Check a layer's arguments (its JSON spec) without drawing weights: bad ones are refused when the
/// layer is made, naming the argument.
#[pyfunction]
pub fn check_layer(spec_json: &str) -> PyResult<()> {
    LayerSpec::from_json(spec_json).py()?.check().py()
}

/// The trainable model.
#[pyclass(module = "kiln._kiln", name = "Model")]
pub struct PyModel {
    inner: Model,
}

impl PyModel {
    pub(crate) fn core_mut(&mut self) -> &mut Model {
        &mut self.inner
    }
}

#[pymethods]
impl PyModel {
    /// Build from a JSON list of layer specs, initialised from `seed`.
    #[new]
    fn new(layers_json: &str, seed: u64) -> PyResult<Self> {
        let layers = LayerSpec::list_from_json(layers_json).py()?;
        Ok(PyModel {
            inner: Model::new(&layers, seed).py()?,
        })
    }

    /// A graph model from its modules and parameters (JSON `GraphSpec`), initialised from `seed`.
    #[staticmethod]
    fn from_graph_spec(spec_json: &str, seed: u64) -> PyResult<Self> {
        let spec: GraphSpec = json("graph model", spec_json)?;
        Ok(PyModel {
            inner: Model::from_graph_spec(&spec, seed).py()?,
        })
    }

    /// The traced graph as JSON, or None before the first trace.
    fn graph_json(&self) -> Option<String> {
        self.inner
            .net
            .graph()
            .map(|g| serde_json::to_string(g).expect("graphs serialise"))
    }

    /// Install a graph (JSON), checked against the model's modules and tensors.
    fn set_graph(&mut self, graph_json: &str) -> PyResult<()> {
        let g: Graph = json("graph", graph_json)?;
        self.inner.net.set_graph(g).py()
    }

    /// Whether the model was built as a Sequential.
    #[getter]
    fn is_sequential(&self) -> bool {
        self.inner.net.layers().is_some()
    }

    /// `[(name, dtype, per-sample shape or None)]` of the graph's inputs (empty before tracing).
    fn input_info(&self) -> Vec<(String, String, Option<Vec<usize>>)> {
        self.inner
            .inputs()
            .into_iter()
            .map(|i| (i.name, i.dtype, i.shape))
            .collect()
    }

    /// How many outputs the model returns.
    #[getter]
    fn num_outputs(&self) -> usize {
        self.inner.num_outputs()
    }

    /// Overwrite some tensors by name (shapes must match); the rest stay as they are.
    fn set_tensors(&mut self, dict: BTreeMap<String, PyReadonlyArrayDyn<f32>>) -> PyResult<()> {
        let mut all = self.inner.net.state_dict();
        for (k, v) in dict {
            let v = v.as_array();
            match all.get(&k) {
                Some(old) if old.shape() == v.shape() => {
                    all.insert(k, v.to_owned());
                }
                Some(old) => {
                    return Err(crate::error::to_py(kiln_core::KilnError::Shape(format!(
                        "tensor {k:?} has shape {:?}, the model expects {:?}",
                        v.shape(),
                        old.shape()
                    ))))
                }
                None => {
                    return Err(crate::error::to_py(kiln_core::KilnError::value(format!(
                        "the model has no tensor {k:?}"
                    ))))
                }
            }
        }
        self.inner.net.load_state_dict(&all).py()
    }

    /// Set optimizer (JSON spec), loss (JSON spec) and metric names.
    fn compile(
        &mut self,
        optimizer_json: &str,
        loss_json: &str,
        metrics: Vec<String>,
    ) -> PyResult<()> {
        let opt: OptimizerSpec = json("optimizer", optimizer_json)?;
        let loss: Loss = json("loss", loss_json)?;
        let metrics = metrics
            .iter()
            .map(|m| Metric::from_name(m))
            .collect::<Result<Vec<_>, _>>()
            .py()?;
        self.inner.compile(&opt, loss, metrics).py()
    }

    /// Set only the optimizer (JSON spec), for hand-written loops.
    fn set_optimizer(&mut self, optimizer_json: &str) -> PyResult<()> {
        let opt: OptimizerSpec = json("optimizer", optimizer_json)?;
        self.inner.set_optimizer(&opt).py()
    }

    /// Apply the optimizer to the gradients accumulated since `zero_grad`.
    fn optimizer_step(&mut self) -> PyResult<()> {
        self.inner.optimizer_step().py()
    }

    /// Forget all gradients.
    fn zero_grad(&mut self) {
        self.inner.net.zero_grad()
    }

    /// Whether `compile` was called.
    #[getter]
    fn compiled(&self) -> bool {
        self.inner.loss().is_ok()
    }

    /// Whether the compiled loss wants integer class labels.
    #[getter]
    fn wants_classes(&self) -> PyResult<bool> {
        Ok(self.inner.loss().py()?.wants_classes())
    }

    /// Train. `on_batch(epoch, batch, batches, logs)` / `on_epoch(epoch, logs)` return True to stop.
    /// Returns the history as JSON. Ctrl-C stops within one batch, keeping the weights reached.
    #[pyo3(signature = (x, y, config_json, val_x=None, val_y=None, on_batch=None, on_epoch=None, on_gradient=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        x: Vec<PyReadonlyArrayDyn<f32>>,
        y: Vec<PyTargets>,
        config_json: &str,
        val_x: Option<Vec<PyReadonlyArrayDyn<f32>>>,
        val_y: Option<Vec<PyTargets>>,
        on_batch: Option<Py<PyAny>>,
        on_epoch: Option<Py<PyAny>>,
        on_gradient: Option<Py<PyAny>>,
    ) -> PyResult<String> {
        let cfg: FitConfig = json("fit configuration", config_json)?;
        let y = y.into_iter().map(targets).collect::<PyResult<Vec<_>>>()?;
        let val_y = val_y
            .map(|v| v.into_iter().map(targets).collect::<PyResult<Vec<_>>>())
            .transpose()?;
        let x: Vec<_> = x.iter().map(|a| a.as_array()).collect();
        let val_x: Option<Vec<_>> = val_x
            .as_ref()
            .map(|v| v.iter().map(|a| a.as_array()).collect());
        let validation = match (val_x.as_deref(), val_y.as_deref()) {
            (Some(vx), Some(vy)) => Some((vx, vy)),
            _ => None,
        };
        // The model trains outside the Python object (so Python threads are not blocked on its
        // borrow); each callback gets it lent back, so `model.state_dict()` or `model.save(...)`
        // inside a callback sees the weights reached. Between callbacks the object holds a stand-in
        // (one ReLU), and it gets the trained model back however fit ends.
        let owner: Py<Self> = slf.clone().unbind();
        let stand_in = Model::new(&[LayerSpec::ReLU], 0).py()?;
        let mut model = std::mem::replace(&mut slf.borrow_mut().inner, stand_in);
        // Skipped when another thread is inside the object (its own call sees the empty model).
        let lend = |py: Python<'_>, model: &mut Model| {
            if let Ok(mut o) = owner.bind(py).try_borrow_mut() {
                std::mem::swap(&mut o.inner, model);
            }
        };
        // The first Python exception raised inside a callback (KeyboardInterrupt included), re-raised after.
        let raised: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
        let result = py.detach(|| {
            let mut on_event = |e: &Event, model: &mut Model| -> Control {
                if raised.lock().unwrap().is_some() {
                    return Control::Stop;
                }
                Python::attach(|py| {
                    lend(py, model);
                    let control = fit_callback(py, e, &on_batch, &on_epoch, &raised);
                    lend(py, model);
                    control
                })
            };
            let mut on_grad = |g: &mut [f32]| {
                Python::attach(|py| {
                    if let Some(cb) = &on_gradient {
                        let arr = numpy::PyArray1::from_slice(py, g);
                        match cb.call1(py, (arr.clone(),)) {
                            Ok(_) => g.copy_from_slice(&arr.readonly().as_array().to_vec()),
                            Err(err) => {
                                raised.lock().unwrap().get_or_insert(err);
                            }
                        }
                    }
                })
            };
            let mut hooks = Hooks {
                on_event: Some(&mut on_event),
                after_step: None,
                on_gradient: if on_gradient.is_some() {
                    Some(&mut on_grad)
                } else {
                    None
                },
            };
            model.fit_multi(&x, &y, validation, &cfg, &mut hooks)
        });
        // Back into the object however fit ended, waiting out another thread's call on it.
        loop {
            if let Ok(mut o) = slf.try_borrow_mut() {
                std::mem::swap(&mut o.inner, &mut model);
                break;
            }
            py.detach(|| std::thread::sleep(std::time::Duration::from_millis(1)));
        }
        if let Some(err) = raised.into_inner().unwrap() {
            return Err(err);
        }
        let history = result.py()?;
        Ok(serde_json::to_string(&history).expect("history serialises"))
    }
    /// Loss and metrics on a data set (eval mode).
    #[pyo3(signature = (x, y, batch_size=256))]
    fn evaluate<'py>(
        &mut self,
        py: Python<'py>,
        x: Vec<PyReadonlyArrayDyn<f32>>,
        y: Vec<PyTargets>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let y = y.into_iter().map(targets).collect::<PyResult<Vec<_>>>()?;
        let x: Vec<_> = x.iter().map(|a| a.as_array()).collect();
        let model = &mut self.inner;
        let logs = py
            .detach(|| model.evaluate_multi(&x, &y, batch_size))
            .py()?;
        logs_dict(py, &logs)
    }

    /// Raw outputs (one array per output), batch by batch, in eval mode; the inputs are read in
    /// place (no extra copy).
    #[pyo3(signature = (x, batch_size=256))]
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        x: Vec<PyReadonlyArrayDyn<f32>>,
        batch_size: usize,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let x: Vec<_> = x.iter().map(|a| a.as_array()).collect();
        let model = &mut self.inner;
        let out = py.detach(|| model.predict_multi(&x, batch_size)).py()?;
        Ok(out.into_iter().map(|o| o.into_pyarray(py)).collect())
    }

    /// Parameters and buffers by PyTorch state-dict name, as numpy copies.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.net.state_dict() {
            d.set_item(k, v.into_pyarray(py))?;
        }
        Ok(d)
    }

    /// Replace parameters and buffers from a dict of arrays (every name, exact shapes).
    fn load_state_dict(&mut self, dict: BTreeMap<String, PyReadonlyArrayDyn<f32>>) -> PyResult<()> {
        let owned: BTreeMap<String, Tensor> = dict
            .into_iter()
            .map(|(k, v)| (k, v.as_array().to_owned()))
            .collect();
        self.inner.net.load_state_dict(&owned).py()
    }

    /// `[(name, shape, trainable, is_buffer)]` in state-dict order.
    fn tensor_info(&self) -> Vec<(String, Vec<usize>, bool, bool)> {
        self.inner
            .net
            .tensors()
            .into_iter()
            .map(|(n, p)| (n, p.value().shape().to_vec(), p.trainable(), p.is_buffer))
            .collect()
    }

    /// The gradient of a parameter from the last training step, if any.
    fn grad<'py>(&self, py: Python<'py>, name: &str) -> Option<Bound<'py, PyArrayDyn<f32>>> {
        self.inner
            .net
            .tensors()
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| p.grad.clone())
            .map(|g| g.into_pyarray(py))
    }

    /// Freeze or unfreeze parameters whose name starts with `prefix`; returns how many matched.
    fn set_trainable(&mut self, prefix: &str, trainable: bool) -> usize {
        self.inner.net.set_trainable(prefix, trainable)
    }

    /// Every trainable value in one flat float32 array (state-dict order).
    fn flat_params<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<f32>> {
        self.inner.flat_params().into_pyarray(py)
    }

    /// Overwrite every trainable value from one flat array.
    fn set_flat_params(&mut self, flat: PyReadonlyArray1<f32>) -> PyResult<()> {
        self.inner.set_flat_params(flat.as_slice()?).py()
    }

    /// Per-sample input shape, once known.
    #[getter]
    fn input_shape(&self) -> Option<Vec<usize>> {
        self.inner.input_shape()
    }

    #[setter]
    fn set_input_shape(&mut self, shape: Option<Vec<usize>>) -> PyResult<()> {
        self.inner.set_input_shape(shape).py()
    }

    /// The model's summary (kiln_core::nn::Summary as JSON) for one per-sample shape per input.
    fn summary(&mut self, input_shapes: Vec<Vec<usize>>) -> PyResult<String> {
        let s = self.inner.net.summary(&input_shapes).py()?;
        Ok(serde_json::to_string(&s).expect("a summary serialises"))
    }

    /// The architecture as JSON (layers and input shape).
    fn architecture_json(&self) -> String {
        serde_json::to_string(&self.inner.architecture()).expect("specs serialise")
    }

    /// The seed the weights were drawn from.
    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Number of trainable values.
    #[getter]
    fn num_parameters(&self) -> usize {
        self.inner.net.num_trainable()
    }

    /// Current learning rate of the compiled optimizer.
    #[getter]
    fn lr(&self) -> PyResult<f32> {
        Ok(self.inner.optimizer().py()?.lr())
    }

    #[setter]
    fn set_lr(&mut self, lr: f32) -> PyResult<()> {
        self.inner.optimizer_mut().py()?.set_lr(lr);
        Ok(())
    }

    /// Save atomically as a .kiln checkpoint (safetensors with the architecture in its metadata).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let model = &self.inner;
        py.detach(|| model.save(&path)).py()
    }

    /// The checkpoint as bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        Ok(pyo3::types::PyBytes::new(py, &self.inner.to_bytes().py()?))
    }

    /// Load a checkpoint from a path.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Self> {
        Ok(PyModel {
            inner: Model::load(&path).py()?,
        })
    }

    /// An ONNX file's graph and weights as a model that trains (kiln's engine's import).
    #[staticmethod]
    fn load_onnx(path: std::path::PathBuf, seed: u64) -> PyResult<Self> {
        let data = std::fs::read(&path)
            .map_err(|e| kiln_core::KilnError::io(&path, e))
            .py()?;
        Ok(PyModel {
            inner: kiln_core::onnx::engine::KilnSession::model_from_bytes(&data, seed).py()?,
        })
    }

    /// Load a checkpoint from bytes.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyModel {
            inner: Model::from_bytes(data).py()?,
        })
    }

    /// The model as ONNX: written atomically to `path` when given, else returned as bytes.
    #[pyo3(signature = (labels=None, input_scale=None, input_offset=None, opset=17, dynamic_batch=true, path=None, extra_metadata=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn export_onnx<'py>(
        &self,
        py: Python<'py>,
        labels: Option<Vec<String>>,
        input_scale: Option<f32>,
        input_offset: Option<f32>,
        opset: i64,
        dynamic_batch: bool,
        path: Option<std::path::PathBuf>,
        extra_metadata: Vec<(String, String)>,
    ) -> PyResult<Option<Bound<'py, pyo3::types::PyBytes>>> {
        let opts = ExportOptions {
            labels,
            input_scale,
            input_offset,
            opset,
            dynamic_batch,
            extra_metadata,
            ..ExportOptions::default()
        };
        match path {
            Some(p) => export_onnx_to(&self.inner, p, &opts).py().map(|_| None),
            None => Ok(Some(pyo3::types::PyBytes::new(
                py,
                &export_onnx(&self.inner, &opts).py()?,
            ))),
        }
    }

    /// Specs of a Sequential's layers, as JSON (empty for graph models).
    fn layers_json(&self) -> String {
        serde_json::to_string(&self.inner.net.specs()).expect("specs serialise")
    }
}

/// Records `forward` as a graph: each op runs as it is recorded (shapes and errors at the line that
/// made it), then `finish` installs the graph in the model.
#[pyclass(module = "kiln._kiln", name = "Tracer", unsendable)]
pub struct PyTracer {
    inner: Option<Tracer>,
    model: Py<PyModel>,
}

impl PyTracer {
    fn tracer(&mut self) -> PyResult<&mut Tracer> {
        self.inner.as_mut().ok_or_else(|| {
            crate::error::to_py(kiln_core::KilnError::value("this trace is finished"))
        })
    }
}

#[pymethods]
impl PyTracer {
    #[new]
    fn new(model: Py<PyModel>) -> Self {
        PyTracer {
            inner: Some(Tracer::new()),
            model,
        }
    }

    /// A graph input; returns (value id, shape with None on the batch axes).
    fn input(
        &mut self,
        name: &str,
        dtype: &str,
        shape: Vec<usize>,
    ) -> PyResult<(usize, Vec<Option<usize>>)> {
        let t = self.tracer()?;
        let id = t.input(name, dtype, &shape).py()?;
        Ok((id, t.shape(id)))
    }

    /// Record one op (the core's JSON `Op`) on earlier values; returns (value id, shape).
    #[pyo3(signature = (op_json, inputs, line=None))]
    fn op(
        &mut self,
        py: Python<'_>,
        op_json: &str,
        inputs: Vec<usize>,
        line: Option<String>,
    ) -> PyResult<(usize, Vec<Option<usize>>)> {
        let op = json("graph op", op_json)?;
        let model = self.model.clone_ref(py);
        let mut m = model.borrow_mut(py);
        let t = self.tracer()?;
        let id = t.op(&mut m.inner.net, op, inputs, line).py()?;
        Ok((id, t.shape(id)))
    }

    /// Finish with these output values and install the graph in the model.
    fn finish(&mut self, py: Python<'_>, outputs: Vec<usize>) -> PyResult<()> {
        let t = self.inner.take().ok_or_else(|| {
            crate::error::to_py(kiln_core::KilnError::value("this trace is finished"))
        })?;
        let graph = t.finish(outputs).py()?;
        self.model.borrow_mut(py).inner.net.set_graph(graph).py()
    }
}

/// One fit event through the user's callbacks: `Continue`, `Stop` or a new learning rate.
fn fit_callback(
    py: Python<'_>,
    e: &Event,
    on_batch: &Option<Py<PyAny>>,
    on_epoch: &Option<Py<PyAny>>,
    raised: &std::sync::Mutex<Option<PyErr>>,
) -> Control {
    // Ctrl-C / the Jupyter stop button: end within one batch.
    // A callback answers None/False (go on), True (stop) or a float (the new learning rate).
    let outcome: PyResult<Option<Py<PyAny>>> = py.check_signals().and_then(|_| match e {
        Event::BatchEnd {
            epoch,
            batch,
            batches,
            logs,
        } => match &on_batch {
            Some(cb) => cb
                .call1(py, (*epoch, *batch, *batches, logs_dict(py, logs)?))
                .map(Some),
            None => Ok(None),
        },
        Event::EpochEnd { epoch, logs } => match &on_epoch {
            Some(cb) => cb.call1(py, (*epoch, logs_dict(py, logs)?)).map(Some),
            None => Ok(None),
        },
    });
    let answer = outcome.and_then(|r| match r {
        None => Ok(Control::Continue),
        Some(v) if v.bind(py).is_instance_of::<pyo3::types::PyFloat>() => {
            Ok(Control::SetLr(v.extract::<f32>(py)?))
        }
        Some(v) => Ok(if v.is_truthy(py)? {
            Control::Stop
        } else {
            Control::Continue
        }),
    });
    match answer {
        Ok(control) => control,
        Err(err) => {
            raised.lock().unwrap().get_or_insert(err);
            Control::Stop
        }
    }
}
