//! kiln's own engine (kiln_core::onnx::engine) for index.js: the models kiln exports run in the small
//! module, without tract. Same shape of API as `session.rs` (describe, a feed, outputs taken once),
//! plus `runF32`, one call for the common case of one float input.

use std::rc::Rc;

use kiln_core::onnx::compat::{newer_hint, with_newer_hint};
use kiln_core::onnx::engine::{slow_fallback_warning, IoInfo, KilnSession as Engine, Value};
use kiln_core::preprocess::Preprocess;
use kiln_core::text::{engine_step, Cached};
use kiln_core::Tensor;
use wasm_bindgen::prelude::*;

use crate::error::{js, JsResult};
use crate::text::{options, start, Generator};
use crate::{array, into_vec};

/// What loading gave: a session, or the reason kiln's engine declined the model (then index.js
/// loads it with tract).
#[wasm_bindgen]
pub struct EngineLoad {
    session: Option<KilnSession>,
    declined: Option<String>,
    newer: Option<String>,
    slow: Option<String>,
}

#[wasm_bindgen]
impl EngineLoad {
    /// Parses `bytes`; throws only for bytes that are not a valid ONNX model.
    pub fn parse(bytes: &[u8]) -> JsResult<EngineLoad> {
        let update = "npm install kiln-wasm@{version}";
        let parsed =
            Engine::from_bytes(bytes).map_err(|e| with_newer_hint(e, bytes, "kiln-wasm", update));
        Ok(match js(parsed)? {
            Ok(inner) => EngineLoad {
                session: Some(KilnSession {
                    inner: Rc::new(inner),
                    last_dims: Vec::new(),
                }),
                declined: None,
                newer: None,
                slow: None,
            },
            Err(why) => EngineLoad {
                session: None,
                declined: Some(why.0),
                newer: newer_hint(bytes, "kiln-wasm", update),
                slow: slow_fallback_warning(
                    bytes,
                    "Load it through kiln-wasm/worker to keep a page responsive.",
                ),
            },
        })
    }

    /// For a declined model that a newer kiln exported: what to say if tract fails on it too
    /// ("… exported by kiln X, newer than this kiln-wasm (Y): update it (npm install kiln-wasm@X)").
    #[wasm_bindgen(js_name = newerHint)]
    pub fn newer_hint(&self) -> Option<String> {
        self.newer.clone()
    }

    /// The session (once), or undefined when the model was declined.
    pub fn session(&mut self) -> Option<KilnSession> {
        self.session.take()
    }

    /// For a declined model whose graph is long enough that tract takes seconds to load it:
    /// what index.js warns before it starts (the core's rule and words).
    #[wasm_bindgen(js_name = slowFallback)]
    pub fn slow_fallback(&self) -> Option<String> {
        self.slow.clone()
    }

    /// Why kiln's engine declined the model, if it did.
    pub fn declined(&self) -> Option<String> {
        self.declined.clone()
    }
}

/// A model on kiln's engine.
#[wasm_bindgen]
pub struct KilnSession {
    // shared with the generators started on it, which may outlive the JS object
    inner: Rc<Engine>,
    last_dims: Vec<u32>,
}

#[wasm_bindgen]
impl KilnSession {
    /// The same JSON document as the tract session's `describe`.
    pub fn describe(&self) -> String {
        let infos = |list: &[IoInfo]| -> Vec<serde_json::Value> {
            let info =
                |t: &IoInfo| serde_json::json!({ "name": t.name, "dims": t.dims, "type": t.dtype });
            list.iter().map(info).collect()
        };
        serde_json::json!({
            "inputs": infos(self.inner.inputs()),
            "outputs": infos(self.inner.outputs()),
            "metadata": self.inner.metadata(),
            "labels": self.inner.labels(),
        })
        .to_string()
    }

    /// Runs a model with one float32 input and returns its first output's values; the shape is
    /// then in `lastDims()`. Two calls into wasm per prediction instead of seven.
    #[wasm_bindgen(js_name = runF32)]
    pub fn run_f32(&mut self, data: Vec<f32>, dims: Vec<u32>) -> JsResult<Vec<f32>> {
        let name = self.inner.inputs()[0].name.clone();
        let x = js(array(&format!("input {name:?}"), data, &dims))?;
        let out = js(self.inner.run(vec![(name, Value::F32(x))]))?.swap_remove(0);
        self.last_dims = out.shape().iter().map(|&d| d as u32).collect();
        Ok(into_vec(out))
    }

    /// The shape of the output `runF32` returned last.
    #[wasm_bindgen(js_name = lastDims)]
    pub fn last_dims(&self) -> Vec<u32> {
        self.last_dims.clone()
    }

    /// Starts generating from `prompt` with the core's loop (`kiln_core::text`): position by
    /// position when the graph qualifies (a GRU's state carried, a causal transformer's keys and
    /// values cached), else the model rerun on the windowed prefix for every token.
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
        start(engine_step(self.inner.clone()), tokenizer, prompt, opts)
    }

    /// Whether `generator` runs this model position by position (its imported graph qualifies:
    /// a GRU's state carried, a causal transformer's keys and values cached) rather than
    /// rerunning the window for every token.
    #[wasm_bindgen(js_name = generatesCached)]
    pub fn generates_cached(&self) -> bool {
        matches!(Cached::for_engine(self.inner.clone()), Ok(Some(_)))
    }

    /// Runs the model on the inputs in `feed` (which this consumes).
    pub fn run(&self, feed: EngineFeed) -> JsResult<EngineOutputs> {
        let outputs = js(self.inner.run(feed.inputs))?;
        Ok(EngineOutputs {
            tensors: outputs.into_iter().map(Some).collect(),
        })
    }
}

/// The inputs of one run.
#[wasm_bindgen]
#[derive(Default)]
pub struct EngineFeed {
    inputs: Vec<(String, Value)>,
}

#[wasm_bindgen]
impl EngineFeed {
    /// An empty feed.
    #[wasm_bindgen(constructor)]
    pub fn new() -> EngineFeed {
        EngineFeed::default()
    }

    /// Adds a float32 input.
    #[wasm_bindgen(js_name = addF32)]
    pub fn add_f32(&mut self, name: String, data: Vec<f32>, dims: Vec<u32>) -> JsResult<()> {
        let a = js(array(&format!("input {name:?}"), data, &dims))?;
        self.inputs.push((name, Value::F32(a)));
        Ok(())
    }

    /// Adds an int64 input (`BigInt64Array`).
    #[wasm_bindgen(js_name = addI64)]
    pub fn add_i64(&mut self, name: String, data: Vec<i64>, dims: Vec<u32>) -> JsResult<()> {
        let a = js(array(&format!("input {name:?}"), data, &dims))?;
        self.inputs.push((name, Value::I64(a)));
        Ok(())
    }

    /// Adds an int32 input for an int64 graph input (token ids), widened.
    #[wasm_bindgen(js_name = addI32)]
    pub fn add_i32(&mut self, name: String, data: Vec<i32>, dims: Vec<u32>) -> JsResult<()> {
        self.add_i64(name, data.into_iter().map(i64::from).collect(), dims)
    }
}

/// The outputs of one run (all float32 on this engine), each taken out once.
#[wasm_bindgen]
pub struct EngineOutputs {
    tensors: Vec<Option<Tensor>>,
}

#[wasm_bindgen]
impl EngineOutputs {
    /// How many outputs there are.
    pub fn count(&self) -> usize {
        self.tensors.len()
    }

    /// The shape of output `index`.
    pub fn dims(&self, index: usize) -> JsResult<Vec<u32>> {
        Ok(self.get(index)?.shape().iter().map(|&d| d as u32).collect())
    }

    /// The element type of output `index`: always `"float32"` here.
    pub fn dtype(&self, index: usize) -> JsResult<String> {
        self.get(index).map(|_| "float32".to_string())
    }

    /// Moves output `index` out as a `Float32Array`.
    pub fn take(&mut self, index: usize) -> JsResult<Vec<f32>> {
        self.get(index)?;
        Ok(into_vec(self.tensors[index].take().expect("checked")))
    }
}

impl EngineOutputs {
    fn get(&self, index: usize) -> JsResult<&Tensor> {
        self.tensors
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                js_sys::Error::new(&format!(
                    "kiln-wasm: output {index} does not exist or was taken"
                ))
            })
    }
}

/// The `[1, C, height, width]` input for a `src_width` × `src_height` RGBA image, by the fields of
/// the `kiln.preprocess` spec an export declared (kiln_core::preprocess: what Python's
/// `kiln.Preprocess.apply` computes). The fields, not the JSON: parsing it here would link serde's
/// code for the struct into every page's module.
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen(js_name = preprocessImage)]
pub fn preprocess_image(
    rgba: &[u8],
    src_width: usize,
    src_height: usize,
    height: usize,
    width: usize,
    scale: f32,
    offset: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
    channels: &str,
) -> JsResult<Vec<f32>> {
    let spec = js(Preprocess::new(scale, offset, mean, std, channels))?;
    js(spec.apply(rgba, src_width, src_height, height, width))
}
