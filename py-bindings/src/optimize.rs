//! `kiln._kiln.optimize_*`: thin wrappers over `kiln_core::optimize` (quantization, pruning,
//! distillation). The Pythonic face (keyword arguments, schedules, result classes) is in
//! `python/kiln/optimize.py`. Heavy work runs with the GIL released.

use kiln_core::onnx::export::ExportOptions;
use kiln_core::optimize::{
    self, quantize_onnx, Calibration, DistillConfig, PruneOptions, PruneScope, QuantizeMode,
    QuantizeOptions,
};
use kiln_core::KilnError;
use numpy::{PyReadonlyArray1, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::IntoPy;
use crate::model::PyModel;

fn bad(msg: String) -> PyErr {
    crate::error::to_py(KilnError::value(msg))
}

/// One row per weighted layer: (name, shape, total, zeros, channels, zero_channels).
type SparsityRow = (String, Vec<usize>, usize, usize, usize, usize);

fn rows(report: Vec<optimize::LayerSparsity>) -> Vec<SparsityRow> {
    report
        .into_iter()
        .map(|l| {
            (
                l.name,
                l.shape,
                l.total,
                l.zeros,
                l.channels,
                l.zero_channels,
            )
        })
        .collect()
}

/// The model as an int8 ONNX graph (QDQ), written atomically to `path` or returned as bytes.
#[pyfunction]
#[pyo3(signature = (model, calibration, per_channel, method, percentile, mode, labels, input_scale, input_offset, opset, path))]
#[allow(clippy::too_many_arguments)]
pub fn optimize_quantize<'py>(
    py: Python<'py>,
    mut model: PyRefMut<'py, PyModel>,
    calibration: Option<PyReadonlyArrayDyn<'py, f32>>,
    per_channel: bool,
    method: &str,
    percentile: f32,
    mode: &str,
    labels: Option<Vec<String>>,
    input_scale: Option<f32>,
    input_offset: Option<f32>,
    opset: i64,
    path: Option<std::path::PathBuf>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let calibration_method = match method {
        "minmax" => Calibration::MinMax,
        "percentile" => Calibration::Percentile(percentile),
        other => {
            return Err(bad(format!(
                "quantize: method must be \"minmax\" or \"percentile\", got {other:?}"
            )))
        }
    };
    let mode = match mode {
        "static" => QuantizeMode::Static,
        "dynamic" => QuantizeMode::Dynamic,
        other => {
            return Err(bad(format!(
                "quantize: mode must be \"static\" or \"dynamic\", got {other:?}"
            )))
        }
    };
    let opts = QuantizeOptions {
        per_channel,
        calibration: calibration_method,
        mode,
        export: ExportOptions {
            labels,
            input_scale,
            input_offset,
            opset,
            ..ExportOptions::default()
        },
    };
    let x = calibration.as_ref().map(|c| c.as_array());
    let core = model.core_mut();
    let bytes = py.detach(|| quantize_onnx(core, x, &opts)).py()?;
    match path {
        Some(p) => {
            kiln_core::model::write_atomic(&p, &bytes).py()?;
            Ok(None)
        }
        None => Ok(Some(PyBytes::new(py, &bytes))),
    }
}

/// Magnitude pruning in place; returns the sparsity report afterwards.
#[pyfunction]
pub fn optimize_prune(
    mut model: PyRefMut<'_, PyModel>,
    sparsity: f32,
    structured: bool,
    scope: &str,
) -> PyResult<Vec<SparsityRow>> {
    let scope = match scope {
        "global" => PruneScope::Global,
        "layer" | "per_layer" => PruneScope::PerLayer,
        other => {
            return Err(bad(format!(
                "prune: scope must be \"global\" or \"per_layer\", got {other:?}"
            )))
        }
    };
    let opts = PruneOptions {
        sparsity,
        structured,
        scope,
    };
    optimize::prune(model.core_mut(), &opts).py().map(rows)
}

/// Real sparsity of every Linear/Conv weight.
#[pyfunction]
pub fn optimize_sparsity_report(mut model: PyRefMut<'_, PyModel>) -> PyResult<Vec<SparsityRow>> {
    optimize::sparsity_report(model.core_mut()).py().map(rows)
}

/// The model without its dead channels, as checkpoint bytes (Python rebuilds a model from them).
#[pyfunction]
pub fn optimize_make_permanent<'py>(
    py: Python<'py>,
    mut model: PyRefMut<'py, PyModel>,
) -> PyResult<Bound<'py, PyBytes>> {
    let small = optimize::make_permanent(model.core_mut()).py()?;
    Ok(PyBytes::new(py, &small.to_bytes().py()?))
}

/// Distil `teacher` into `student`; returns the per-epoch (loss, soft_loss).
#[pyfunction]
#[pyo3(signature = (teacher, student, x, y, temperature, alpha, epochs, batch_size, seed))]
#[allow(clippy::too_many_arguments)]
pub fn optimize_distill<'py>(
    py: Python<'py>,
    mut teacher: PyRefMut<'py, PyModel>,
    mut student: PyRefMut<'py, PyModel>,
    x: PyReadonlyArrayDyn<'py, f32>,
    y: Option<PyReadonlyArray1<'py, i64>>,
    temperature: f32,
    alpha: f32,
    epochs: usize,
    batch_size: usize,
    seed: u64,
) -> PyResult<(Vec<f32>, Vec<f32>)> {
    let labels: Option<Vec<usize>> = match &y {
        Some(y) => {
            let y = y.as_array();
            if let Some(bad_label) = y.iter().find(|&&v| v < 0) {
                return Err(bad(format!(
                    "distill: labels must be non-negative class indices, got {bad_label}"
                )));
            }
            Some(y.iter().map(|&v| v as usize).collect())
        }
        None => None,
    };
    let cfg = DistillConfig {
        temperature,
        alpha,
        epochs,
        batch_size,
        seed,
    };
    let x = x.as_array();
    let (t, s) = (teacher.core_mut(), student.core_mut());
    let report = py
        .detach(|| optimize::distill(t, s, x, labels.as_deref(), &cfg))
        .py()?;
    Ok((report.loss, report.soft_loss))
}
