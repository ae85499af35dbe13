//! `kiln.Tensor`: values on a tape, for hand-written training loops. Tensors created between two
//! `backward()` calls share one graph (a kiln-core `Tape`); `backward()` closes it and hands each
//! model that took part its parameters' gradients, so `opt.step()` can follow.

use std::sync::{Arc, Mutex, MutexGuard};

use kiln_core::train::{Loss, Targets};
use kiln_core::{KilnError, Tape, Var};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use crate::error::{to_py, IntoPy};
use crate::model::{PyModel, PyTargets};

/// One recording: the tape and the models whose parameters were bound on it.
pub struct Graph {
    tape: Tape,
    models: Vec<Py<PyModel>>,
    finished: bool,
}

/// The graph new tensors join; replaced after each `backward()`.
static CURRENT: Mutex<Option<Arc<Mutex<Graph>>>> = Mutex::new(None);

fn current_graph(seed: u64) -> Arc<Mutex<Graph>> {
    let mut cur = CURRENT.lock().unwrap();
    match cur.as_ref() {
        Some(g) if !g.lock().unwrap().finished => g.clone(),
        _ => {
            let g = Arc::new(Mutex::new(Graph {
                tape: Tape::new(true, seed),
                models: Vec::new(),
                finished: false,
            }));
            *cur = Some(g.clone());
            g
        }
    }
}

fn err(msg: impl Into<String>) -> PyErr {
    to_py(KilnError::value(msg))
}

/// A value on the current graph.
#[pyclass(module = "kiln._kiln", name = "Tensor", frozen)]
pub struct PyTensor {
    graph: Arc<Mutex<Graph>>,
    var: Var,
}

impl PyTensor {
    fn lock(&self) -> PyResult<MutexGuard<'_, Graph>> {
        let g = self.graph.lock().unwrap();
        if g.finished {
            return Err(err(
                "this tensor's graph is finished (backward() was called): build a new forward pass",
            ));
        }
        Ok(g)
    }

    fn same_graph(&self, other: &PyTensor) -> PyResult<()> {
        if !Arc::ptr_eq(&self.graph, &other.graph) {
            return Err(err("tensors from different graphs cannot be combined (one was made before the last backward())"));
        }
        Ok(())
    }

    fn wrap(&self, var: Var) -> PyTensor {
        PyTensor {
            graph: self.graph.clone(),
            var,
        }
    }

    fn unary(
        &self,
        f: impl FnOnce(&mut Tape, Var) -> kiln_core::Result<Var>,
    ) -> PyResult<PyTensor> {
        let mut g = self.lock()?;
        let v = f(&mut g.tape, self.var).py()?;
        Ok(self.wrap(v))
    }

    /// The other operand as a var on this graph: a tensor of the same graph or a number.
    fn operand(&self, g: &mut Graph, other: &Bound<'_, PyAny>) -> PyResult<Var> {
        if let Ok(t) = other.cast::<PyTensor>() {
            self.same_graph(t.get())?;
            return Ok(t.get().var);
        }
        let x: f32 = other.extract().map_err(|_| {
            err(format!(
                "cannot combine a Tensor with {}",
                other
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        Ok(g.tape
            .constant(kiln_core::Tensor::from_elem(ndarray::IxDyn(&[]), x)))
    }

    fn binary(
        &self,
        other: &Bound<'_, PyAny>,
        reverse: bool,
        f: impl FnOnce(&mut Tape, Var, Var) -> kiln_core::Result<Var>,
    ) -> PyResult<PyTensor> {
        let mut g = self.lock()?;
        let o = self.operand(&mut g, other)?;
        let (a, b) = if reverse {
            (o, self.var)
        } else {
            (self.var, o)
        };
        let v = f(&mut g.tape, a, b).py()?;
        Ok(self.wrap(v))
    }
}

/// Resolve a possibly negative axis.
fn axis(a: isize, rank: usize) -> PyResult<usize> {
    let r = if a < 0 { a + rank as isize } else { a };
    if r < 0 || r >= rank as isize {
        return Err(to_py(KilnError::shape(format!(
            "axis {a} is out of range for a tensor of rank {rank}"
        ))));
    }
    Ok(r as usize)
}

#[pymethods]
impl PyTensor {
    /// A tensor from any array-like (converted to float32); with `requires_grad` its gradient is
    /// kept by `backward()`. Dropout in a new graph draws from `kiln.manual_seed`'s sequence.
    #[new]
    #[pyo3(signature = (data, requires_grad=false))]
    fn new(py: Python<'_>, data: &Bound<'_, PyAny>, requires_grad: bool) -> PyResult<Self> {
        let np = py.import("numpy")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("dtype", np.getattr("float32")?)?;
        let arr = np.call_method("ascontiguousarray", (data,), Some(&kwargs))?;
        let arr: PyReadonlyArrayDyn<f32> = arr.extract()?;
        let seed: u64 = py
            .import("kiln._seed")?
            .call_method0("next_seed")?
            .extract()?;
        let graph = current_graph(seed);
        let var = graph
            .lock()
            .unwrap()
            .tape
            .leaf(arr.as_array().to_owned(), requires_grad);
        Ok(PyTensor { graph, var })
    }

    /// The values as a numpy array (a copy).
    fn numpy<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDyn<f32>> {
        self.graph
            .lock()
            .unwrap()
            .tape
            .value(self.var)
            .clone()
            .into_pyarray(py)
    }

    /// The shape.
    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.graph.lock().unwrap().tape.shape(self.var).to_vec()
    }

    /// Whether gradients flow to this tensor.
    #[getter]
    fn requires_grad(&self) -> bool {
        self.graph.lock().unwrap().tape.requires_grad(self.var)
    }

    /// The gradient (after `backward()`) of a tensor made with `requires_grad=True`.
    #[getter]
    fn grad<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArrayDyn<f32>>> {
        self.graph
            .lock()
            .unwrap()
            .tape
            .grad(self.var)
            .cloned()
            .map(|g| g.into_pyarray(py))
    }

    /// Back-propagate from this scalar; every model used in the graph receives its gradients.
    fn backward(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = self.lock()?;
        g.tape.backward(self.var).py()?;
        let Graph {
            tape,
            models,
            finished,
        } = &mut *g;
        for m in models.iter() {
            m.bind(py).borrow_mut().core_mut().net.collect_grads(tape);
        }
        *finished = true;
        Ok(())
    }

    /// Run `model` on this tensor and `others` (its further inputs, in order); one tensor per
    /// output (training mode unless `training=False`).
    #[pyo3(signature = (model, others=Vec::new(), training=true))]
    fn apply(
        &self,
        model: Bound<'_, PyModel>,
        others: Vec<PyRef<'_, PyTensor>>,
        training: bool,
    ) -> PyResult<Vec<PyTensor>> {
        for o in &others {
            self.same_graph(o)?;
        }
        let mut g = self.lock()?;
        let graph = &mut *g;
        graph.tape.training = training;
        let mut vars = vec![self.var];
        vars.extend(others.iter().map(|o| o.var));
        let outs = model
            .borrow_mut()
            .core_mut()
            .net
            .forward_all(&mut graph.tape, &vars)
            .py()?;
        if !graph.models.iter().any(|m| m.is(&model)) {
            graph.models.push(model.unbind());
        }
        Ok(outs.into_iter().map(|v| self.wrap(v)).collect())
    }

    /// A loss of this tensor (the predictions) against `target` (loss given as the core's JSON spec).
    fn loss(&self, loss_json: &str, target: PyTargets) -> PyResult<PyTensor> {
        let loss: Loss =
            serde_json::from_str(loss_json).map_err(|e| err(format!("invalid loss: {e}")))?;
        let target: Targets = crate::model::targets(target)?;
        self.unary(|t, v| loss.apply(t, v, &target))
    }

    fn __add__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, false, |t, a, b| t.add(a, b))
    }
    fn __radd__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, true, |t, a, b| t.add(a, b))
    }
    fn __sub__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, false, |t, a, b| t.sub(a, b))
    }
    fn __rsub__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, true, |t, a, b| t.sub(a, b))
    }
    fn __mul__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, false, |t, a, b| t.mul(a, b))
    }
    fn __rmul__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, true, |t, a, b| t.mul(a, b))
    }
    fn __truediv__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, false, |t, a, b| t.div(a, b))
    }
    fn __rtruediv__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, true, |t, a, b| t.div(a, b))
    }
    fn __matmul__(&self, o: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        self.binary(o, false, |t, a, b| t.matmul(a, b))
    }
    fn __neg__(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.neg(v)))
    }
    fn __pow__(&self, p: f32, _modulo: Option<Py<PyAny>>) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.pow(v, p)))
    }

    /// Sum over `axis` (all when None).
    #[pyo3(signature = (axis=None, keepdims=false))]
    fn sum(&self, axis: Option<Vec<isize>>, keepdims: bool) -> PyResult<PyTensor> {
        let rank = self.shape().len();
        let axes = axis
            .unwrap_or_default()
            .into_iter()
            .map(|a| self::axis(a, rank))
            .collect::<PyResult<Vec<_>>>()?;
        self.unary(|t, v| t.sum(v, &axes, keepdims))
    }

    /// Mean over `axis` (all when None).
    #[pyo3(signature = (axis=None, keepdims=false))]
    fn mean(&self, axis: Option<Vec<isize>>, keepdims: bool) -> PyResult<PyTensor> {
        let rank = self.shape().len();
        let axes = axis
            .unwrap_or_default()
            .into_iter()
            .map(|a| self::axis(a, rank))
            .collect::<PyResult<Vec<_>>>()?;
        self.unary(|t, v| t.mean(v, &axes, keepdims))
    }

    /// Maximum along one axis.
    #[pyo3(signature = (axis, keepdims=false))]
    fn max(&self, axis: isize, keepdims: bool) -> PyResult<PyTensor> {
        let a = self::axis(axis, self.shape().len())?;
        self.unary(|t, v| t.max(v, a, keepdims))
    }

    /// The same values in a new shape.
    fn reshape(&self, shape: Vec<usize>) -> PyResult<PyTensor> {
        self.unary(|t, v| t.reshape(v, &shape))
    }

    /// Reorder the axes.
    fn permute(&self, dims: Vec<usize>) -> PyResult<PyTensor> {
        self.unary(|t, v| t.permute(v, &dims))
    }

    /// Rectified linear unit.
    fn relu(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.relu(v)))
    }
    /// Logistic sigmoid.
    fn sigmoid(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.sigmoid(v)))
    }
    /// Hyperbolic tangent.
    fn tanh(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.tanh(v)))
    }
    /// e^x.
    fn exp(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.exp(v)))
    }
    /// Natural logarithm.
    fn log(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.log(v)))
    }
    /// Square root.
    fn sqrt(&self) -> PyResult<PyTensor> {
        self.unary(|t, v| Ok(t.sqrt(v)))
    }
    /// Softmax along `dim`.
    #[pyo3(signature = (dim=-1))]
    fn softmax(&self, dim: isize) -> PyResult<PyTensor> {
        let a = self::axis(dim, self.shape().len())?;
        self.unary(|t, v| t.softmax(v, a))
    }
    /// Log-softmax along `dim`.
    #[pyo3(signature = (dim=-1))]
    fn log_softmax(&self, dim: isize) -> PyResult<PyTensor> {
        let a = self::axis(dim, self.shape().len())?;
        self.unary(|t, v| t.log_softmax(v, a))
    }

    fn __repr__(&self) -> String {
        let g = self.graph.lock().unwrap();
        format!(
            "Tensor({}, requires_grad={})",
            g.tape.value(self.var),
            g.tape.requires_grad(self.var)
        )
    }
}
