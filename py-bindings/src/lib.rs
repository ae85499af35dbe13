//! kiln's Python bindings: the private module `kiln._kiln`. Every method is a thin wrapper over
//! kiln-core; the Pythonic face (keyword arguments, tqdm, `__repr__`) is in `python/kiln/`.

mod drift;
mod error;
mod model;
mod optimize;
mod preprocess;
mod session;
mod tensor;
mod text;

use pyo3::prelude::*;

/// Every Rust allocation of the module (the core's tensors, tapes, buffers) goes through mimalloc,
/// which keeps freed mid-sized blocks for the next training step instead of returning them to the
/// kernel (see Cargo.toml). numpy's and Python's own memory keep Python's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _kiln(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::PyModel>()?;
    m.add_class::<model::PyTracer>()?;
    m.add_class::<drift::PyDriftMonitor>()?;
    m.add_function(wrap_pyfunction!(drift::drift_reference, m)?)?;
    m.add_function(wrap_pyfunction!(drift::feedback_load, m)?)?;
    m.add_function(wrap_pyfunction!(drift::feedback_save, m)?)?;
    m.add_function(wrap_pyfunction!(drift::py_model_version, m)?)?;
    m.add_class::<session::PySession>()?;
    m.add_class::<tensor::PyTensor>()?;
    m.add_function(wrap_pyfunction!(optimize::optimize_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(optimize::optimize_prune, m)?)?;
    m.add_function(wrap_pyfunction!(optimize::optimize_sparsity_report, m)?)?;
    m.add_function(wrap_pyfunction!(optimize::optimize_make_permanent, m)?)?;
    m.add_function(wrap_pyfunction!(optimize::optimize_distill, m)?)?;
    m.add_function(wrap_pyfunction!(model::optimizer_spec, m)?)?;
    m.add_function(wrap_pyfunction!(model::check_layer, m)?)?;
    m.add_class::<text::PyTokenizer>()?;
    m.add_function(wrap_pyfunction!(text::generate_model, m)?)?;
    m.add_function(wrap_pyfunction!(text::generate_session, m)?)?;
    m.add("TEXT_SPECIALS", kiln_core::text::SPECIALS.to_vec())?;
    m.add("TOKENIZER_METADATA_KEY", kiln_core::text::METADATA_KEY)?;
    m.add_function(wrap_pyfunction!(preprocess::preprocess_check, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess::preprocess_apply, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
