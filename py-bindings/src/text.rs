//! `kiln._kiln.Tokenizer` and the generation functions: thin wrappers over kiln_core::text. The
//! tokenizers, the sampling loop and every check are the core's; `kiln/text.py` is the face.

use kiln_core::text::{self, Cached, GenerateOptions, Generation, Step, Tokenizer, Windowed};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::error::IntoPy;
use crate::model::PyModel;
use crate::session::PySession;

/// A character or byte-level BPE tokenizer.
#[pyclass(module = "kiln._kiln", name = "Tokenizer", frozen)]
pub struct PyTokenizer {
    inner: Tokenizer,
}

fn wrap(inner: kiln_core::Result<Tokenizer>) -> PyResult<PyTokenizer> {
    Ok(PyTokenizer { inner: inner.py()? })
}

fn matrix(py: Python<'_>, ids: Vec<i64>, rows: usize, cols: usize) -> Bound<'_, PyArray2<i64>> {
    Array2::from_shape_vec((rows, cols), ids)
        .expect("sized by the core")
        .into_pyarray(py)
}

#[pymethods]
impl PyTokenizer {
    /// A character tokenizer over every character of `texts`.
    #[staticmethod]
    fn fit_char(py: Python<'_>, texts: Vec<String>) -> PyResult<Self> {
        wrap(py.detach(|| Tokenizer::fit_char(&texts)))
    }

    /// A byte-level BPE tokenizer of at most `vocab_size` ids learnt on `texts`.
    #[staticmethod]
    fn fit_bpe(py: Python<'_>, texts: Vec<String>, vocab_size: usize) -> PyResult<Self> {
        wrap(py.detach(|| Tokenizer::fit_bpe(&texts, vocab_size)))
    }

    /// The tokenizer in a JSON document written by `to_json`.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        wrap(Tokenizer::from_json(text))
    }

    /// The tokenizer in an ONNX model's `kiln.tokenizer` metadata, or None.
    #[staticmethod]
    fn from_onnx(data: &[u8]) -> PyResult<Option<Self>> {
        Ok(Tokenizer::from_onnx(data)
            .py()?
            .map(|inner| PyTokenizer { inner }))
    }

    /// The JSON document export stores.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// "char" or "bpe".
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// Ids, special tokens included.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// The ids of `text` as int64.
    fn encode<'py>(&self, py: Python<'py>, text: &str) -> Bound<'py, PyArray1<i64>> {
        let ids: Vec<i64> = self.inner.encode(text).into_iter().map(i64::from).collect();
        ids.into_pyarray(py)
    }

    /// The text of `ids` (int64).
    fn decode(&self, ids: PyReadonlyArray1<'_, i64>) -> PyResult<String> {
        let ids = ids.as_array();
        match ids.as_slice() {
            Some(s) => self.inner.decode(s),
            None => self.inner.decode(&ids.to_vec()),
        }
        .py()
    }

    /// How token `id` reads ("<eos>" for the specials).
    fn token(&self, id: i64) -> PyResult<String> {
        let id = self.inner.check_id(id).py()?;
        self.inner.token(id).py()
    }

    /// `(ids [rows, len], lengths [rows])`, padded on the right.
    #[pyo3(signature = (texts, max_len=None, bos=false, eos=false))]
    #[allow(clippy::type_complexity)]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        max_len: Option<usize>,
        bos: bool,
        eos: bool,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<i64>>)> {
        let b = self.inner.encode_batch(&texts, max_len, bos, eos).py()?;
        Ok((matrix(py, b.ids, b.rows, b.len), b.lengths.into_pyarray(py)))
    }

    /// `(contexts [n, size], next ids [n])` for a model with a window of `size` ids.
    #[allow(clippy::type_complexity)]
    fn windows<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        size: usize,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<i64>>)> {
        let (x, y) = self.inner.windows(&texts, size).py()?;
        let n = y.len();
        Ok((matrix(py, x, n, size), y.into_pyarray(py)))
    }
}

/// The core's loop, token by token, with `on_token(text, id)` called for each (its exceptions
/// propagate as they are) and Ctrl-C honoured between tokens.
fn run<S: Step>(
    py: Python<'_>,
    step: S,
    tok: &Tokenizer,
    prompt: &str,
    opts: GenerateOptions,
    on_token: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let mut g = Generation::new(step, tok, prompt, opts);
    while let Some(t) = g.next_token().py()? {
        if let Some(f) = &on_token {
            f.call1((t.text, t.id))?;
        }
        py.check_signals()?;
    }
    Ok(g.text().to_string())
}

/// Generates with a kiln model (its graph on the tape, in evaluation mode).
#[pyfunction]
#[pyo3(signature = (model, tokenizer, prompt, max_new_tokens, temperature, top_k, seed, on_token=None))]
#[allow(clippy::too_many_arguments)]
pub fn generate_model(
    py: Python<'_>,
    model: &mut PyModel,
    tokenizer: &PyTokenizer,
    prompt: &str,
    max_new_tokens: i64,
    temperature: f64,
    top_k: Option<i64>,
    seed: u64,
    on_token: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let opts = GenerateOptions::new(max_new_tokens, temperature, top_k, seed).py()?;
    // a causal transformer keeps its keys and values; any other model reruns its window
    if let Some(step) = Cached::for_model(model.core_mut()).py()? {
        return run(py, step, &tokenizer.inner, prompt, opts, on_token);
    }
    let step = Windowed::for_model(model.core_mut()).py()?;
    run(py, step, &tokenizer.inner, prompt, opts, on_token)
}

/// Generates with an ONNX model on its session's engine; the tokenizer defaults to the model's own.
#[pyfunction]
#[pyo3(signature = (session, tokenizer, prompt, max_new_tokens, temperature, top_k, seed, on_token=None))]
#[allow(clippy::too_many_arguments)]
pub fn generate_session(
    py: Python<'_>,
    session: &PySession,
    tokenizer: Option<&PyTokenizer>,
    prompt: &str,
    max_new_tokens: i64,
    temperature: f64,
    top_k: Option<i64>,
    seed: u64,
    on_token: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let opts = GenerateOptions::new(max_new_tokens, temperature, top_k, seed).py()?;
    let own;
    let tok = match tokenizer {
        Some(t) => &t.inner,
        None => {
            let json = session.inner.metadata().get(text::METADATA_KEY);
            own = json.map(|j| Tokenizer::from_json(j)).transpose().py()?;
            own.as_ref().ok_or_else(text::missing).py()?
        }
    };
    // on kiln's engine a GRU keeps its state and a causal transformer its keys and values
    let step = text::session_step(&session.inner).py()?;
    run(py, step, tok, prompt, opts, on_token)
}
