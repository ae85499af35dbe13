//! Inference: the plumbing under index.js's `Model`.

use std::rc::Rc;

use kiln_core::onnx::tract::{TensorData, TensorInfo, TractSession};
use kiln_core::text::{Step, Windowed};
use kiln_core::{KilnError, Result};
use ndarray::ArrayD;
use wasm_bindgen::prelude::*;

use crate::error::{js, JsResult};
use crate::text::{options, start, Generator};

/// A loaded, optimised ONNX model.
#[wasm_bindgen]
pub struct Session {
    // shared with the generators started on it, which may outlive the JS object
    inner: Rc<TractSession>,
    last_dims: Vec<u32>,
}

#[wasm_bindgen]
impl Session {
    /// Parses and optimises the ONNX model in `bytes`.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> JsResult<Session> {
        js(TractSession::from_bytes(bytes).map(|inner| Session {
            inner: Rc::new(inner),
            last_dims: Vec::new(),
        }))
    }

    /// Runs a model whose first input and output are float32 on one input and returns the first
    /// output's values; the shape is then in `lastDims()`. Two calls into wasm per prediction
    /// instead of seven (a feed, an input, the run, count, dims, take, free).
    #[wasm_bindgen(js_name = runF32)]
    pub fn run_f32(&mut self, data: Vec<f32>, dims: Vec<u32>) -> JsResult<Vec<f32>> {
        let name = self.inner.inputs()[0].name.clone();
        let x = js(crate::array(&format!("input {name:?}"), data, &dims))?;
        match js(self.inner.run_named(vec![(name, x.into())]))?.swap_remove(0) {
            TensorData::F32(out) => {
                self.last_dims = out.shape().iter().map(|&d| d as u32).collect();
                Ok(crate::into_vec(out))
            }
            other => Err(js_sys::Error::new(&format!(
                "kiln-wasm: the first output is {}, not float32",
                other.dtype().name()
            ))),
        }
    }

    /// The shape of the output `runF32` returned last.
    #[wasm_bindgen(js_name = lastDims)]
    pub fn last_dims(&self) -> Vec<u32> {
        self.last_dims.clone()
    }

    /// The graph's inputs, outputs, metadata and labels as one JSON document (parsed once by
    /// index.js): `{"inputs": [{"name", "dims", "type"}], "outputs": [...], "metadata": {...},
    /// "labels": [...] | null}`, with `null` for a free dimension.
    pub fn describe(&self) -> String {
        describe(&self.inner)
    }

    /// Starts generating from `prompt` with the core's loop (`kiln_core::text`), the model rerun
    /// on the windowed prefix for every token; `tokenizer` is its JSON document.
    pub fn generator(
        &self,
        tokenizer: &str,
        prompt: &str,
        max_new_tokens: f64,
        temperature: f64,
        top_k: Option<f64>,
        seed: f64,
    ) -> JsResult<Generator> {
        let opts = options(max_new_tokens, temperature, top_k, seed);
        start(
            Windowed::for_tract(self.inner.clone()).map(|w| Box::new(w) as Box<dyn Step>),
            tokenizer,
            prompt,
            opts,
        )
    }

    /// Runs the model on the inputs in `feed` (which this consumes), matched by name.
    pub fn run(&self, feed: Feed) -> JsResult<Outputs> {
        js(self.inner.run_named(feed.inputs).map(Outputs::new))
    }
}

fn describe(session: &TractSession) -> String {
    let infos = |list: &[TensorInfo]| -> Vec<serde_json::Value> {
        let info = |t: &TensorInfo| serde_json::json!({ "name": t.name, "dims": t.dims, "type": t.dtype.name() });
        list.iter().map(info).collect()
    };
    serde_json::json!({
        "inputs": infos(session.inputs()),
        "outputs": infos(session.outputs()),
        "metadata": session.metadata(),
        "labels": session.labels(),
    })
    .to_string()
}

/// The inputs of one run, added one by one from their typed arrays.
#[wasm_bindgen]
#[derive(Default)]
pub struct Feed {
    inputs: Vec<(String, TensorData)>,
}

#[wasm_bindgen]
impl Feed {
    /// An empty feed.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Feed {
        Feed::default()
    }

    /// Adds a float32 input (`Float32Array`). `data` arrives as an owned copy in wasm memory and
    /// becomes the tensor without another copy; so do the other `add*` methods.
    #[wasm_bindgen(js_name = addF32)]
    pub fn add_f32(&mut self, name: String, data: Vec<f32>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds a float64 input (`Float64Array`).
    #[wasm_bindgen(js_name = addF64)]
    pub fn add_f64(&mut self, name: String, data: Vec<f64>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds an int64 input (`BigInt64Array`).
    #[wasm_bindgen(js_name = addI64)]
    pub fn add_i64(&mut self, name: String, data: Vec<i64>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds an int32 input (`Int32Array`); kiln-core widens it when the model wants int64.
    #[wasm_bindgen(js_name = addI32)]
    pub fn add_i32(&mut self, name: String, data: Vec<i32>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds an int8 input (`Int8Array`).
    #[wasm_bindgen(js_name = addI8)]
    pub fn add_i8(&mut self, name: String, data: Vec<i8>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds a uint8 input (`Uint8Array`).
    #[wasm_bindgen(js_name = addU8)]
    pub fn add_u8(&mut self, name: String, data: Vec<u8>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data, &dims))
    }

    /// Adds a bool input, one byte a value (`Uint8Array`, non-zero is true).
    #[wasm_bindgen(js_name = addBool)]
    pub fn add_bool(&mut self, name: String, data: Vec<u8>, dims: Vec<u32>) -> JsResult<()> {
        js(self.add(name, data.into_iter().map(|b| b != 0).collect(), &dims))
    }
}

impl Feed {
    fn add<T>(&mut self, name: String, data: Vec<T>, dims: &[u32]) -> Result<()>
    where
        ArrayD<T>: Into<TensorData>,
    {
        let array = crate::array(&format!("input {name:?}"), data, dims)?;
        self.inputs.push((name, array.into()));
        Ok(())
    }
}

/// The outputs of one run, in the graph's output order, each taken out once.
#[wasm_bindgen]
pub struct Outputs {
    tensors: Vec<Option<TensorData>>,
}

#[wasm_bindgen]
impl Outputs {
    /// How many outputs there are.
    pub fn count(&self) -> usize {
        self.tensors.len()
    }

    /// The shape of output `index`.
    pub fn dims(&self, index: usize) -> JsResult<Vec<u32>> {
        js(self
            .get(index)
            .map(|t| t.shape().iter().map(|&d| d as u32).collect()))
    }

    /// The element type of output `index` (`"float32"`, `"int64"`, …).
    pub fn dtype(&self, index: usize) -> JsResult<String> {
        js(self.get(index).map(|t| t.dtype().name().to_string()))
    }

    /// Moves output `index` out as a typed array of its element type (bool as `Uint8Array`).
    /// This is the one copy out of wasm memory; the Rust buffer is freed right after.
    pub fn take(&mut self, index: usize) -> JsResult<JsValue> {
        js(self.take_tensor(index)).map(to_typed_array)
    }
}

impl Outputs {
    fn new(tensors: Vec<TensorData>) -> Outputs {
        Outputs {
            tensors: tensors.into_iter().map(Some).collect(),
        }
    }

    fn get(&self, index: usize) -> Result<&TensorData> {
        self.tensors
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| KilnError::value(format!("output {index} does not exist or was taken")))
    }

    fn take_tensor(&mut self, index: usize) -> Result<TensorData> {
        self.get(index)?;
        Ok(self.tensors[index].take().expect("checked by get"))
    }
}

/// Copies a tensor into a new JS typed array, reading the Rust buffer in place when it is
/// contiguous (it nearly always is).
fn to_typed_array(tensor: TensorData) -> JsValue {
    macro_rules! copy {
        ($array:expr, $js:ty) => {{
            let a = $array;
            match a.as_slice() {
                Some(s) => <$js>::from(s).into(),
                None => <$js>::from(a.as_standard_layout().as_slice().expect("standard")).into(),
            }
        }};
    }
    match tensor {
        TensorData::F32(a) => copy!(a, js_sys::Float32Array),
        TensorData::F64(a) => copy!(a, js_sys::Float64Array),
        TensorData::I64(a) => copy!(a, js_sys::BigInt64Array),
        TensorData::I32(a) => copy!(a, js_sys::Int32Array),
        TensorData::I8(a) => copy!(a, js_sys::Int8Array),
        TensorData::U8(a) => copy!(a, js_sys::Uint8Array),
        TensorData::Bool(a) => copy!(a.mapv(u8::from), js_sys::Uint8Array),
    }
}
