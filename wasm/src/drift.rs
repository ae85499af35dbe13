//! kiln_core::drift for drift.js (small module): the monitor behind `model.monitor()`, and the
//! feedback file the page saves. Thin: checks, defaults and statistics are the core's.

use kiln_core::drift::{
    missing, model_version, DriftMonitor as Monitor, Feedback, Reference, DEFAULT_ALPHA,
    DEFAULT_MIN_PSI, DEFAULT_WINDOW,
};
use kiln_core::KilnError;
use wasm_bindgen::prelude::*;

use crate::error::{js, JsResult};

fn dims(d: &[u32]) -> Vec<usize> {
    d.iter().map(|&v| v as usize).collect()
}

/// A sliding-window drift monitor against a model's `kiln.drift` metadata.
#[wasm_bindgen]
pub struct DriftMonitor {
    inner: Monitor,
}

#[wasm_bindgen]
impl DriftMonitor {
    /// From the model's `kiln.drift` metadata value (undefined when the model has none: a clear
    /// error); undefined options take the core's defaults.
    pub fn create(
        metadata: Option<String>,
        window: Option<u32>,
        alpha: Option<f64>,
        min_psi: Option<f64>,
    ) -> JsResult<DriftMonitor> {
        let reference = js(metadata
            .ok_or_else(missing)
            .and_then(|m| Reference::decode(&m)))?;
        let inner = js(Monitor::with_thresholds(
            reference,
            window.map_or(DEFAULT_WINDOW, |w| w as usize),
            alpha.unwrap_or(DEFAULT_ALPHA),
            min_psi.unwrap_or(DEFAULT_MIN_PSI),
        ))?;
        Ok(DriftMonitor { inner })
    }

    /// Checks inputs before the model runs on them; a refused batch counts as rejected.
    pub fn admit(&mut self, data: &[f32], shape: &[u32]) -> JsResult<u32> {
        js(self.inner.admit(data, &dims(shape))).map(|n| n as u32)
    }

    /// Adds inputs and the model's outputs on them (all or nothing).
    pub fn observe(
        &mut self,
        data: &[f32],
        shape: &[u32],
        outputs: &[f32],
        output_shape: &[u32],
    ) -> JsResult<u32> {
        let out = dims(output_shape);
        js(self
            .inner
            .observe_batch(data, &dims(shape), Some((outputs, &out))))
        .map(|n| n as u32)
    }

    /// The report as JSON.
    pub fn report(&self) -> String {
        self.inner.report().to_json()
    }

    /// The report as JSON when the verdict just turned to drift.
    #[wasm_bindgen(js_name = driftStarted)]
    pub fn drift_started(&mut self) -> Option<String> {
        self.inner.drift_started().map(|r| r.to_json())
    }

    /// Empties the window.
    pub fn reset(&mut self) {
        self.inner.reset()
    }

    /// The window's length.
    #[wasm_bindgen(getter)]
    pub fn window(&self) -> u32 {
        self.inner.window() as u32
    }

    /// Shape of one input example.
    #[wasm_bindgen(getter, js_name = inputShape)]
    pub fn input_shape(&self) -> Vec<u32> {
        self.inner
            .reference()
            .input_shape
            .iter()
            .map(|&d| d as u32)
            .collect()
    }
}

/// The bytes of a feedback file: inputs (`dims`, examples first), one label per example, and the
/// model version they were collected against.
#[wasm_bindgen(js_name = saveFeedback)]
pub fn save_feedback(
    inputs: Vec<f32>,
    shape: &[u32],
    labels: Vec<i32>,
    version: String,
) -> JsResult<Vec<u8>> {
    let labels = labels.into_iter().map(i64::from).collect();
    js(Feedback::new(inputs, dims(shape), labels, version).and_then(|f| f.to_bytes()))
}

/// A feedback file read back: `{ dims, labels, modelVersion }` as JSON; the inputs come from
/// `feedbackInputs`.
#[wasm_bindgen(js_name = loadFeedback)]
pub fn load_feedback(bytes: &[u8]) -> JsResult<FeedbackFile> {
    js(Feedback::from_bytes(bytes)).map(|inner| FeedbackFile { inner })
}

/// A parsed feedback file.
#[wasm_bindgen]
pub struct FeedbackFile {
    inner: Feedback,
}

#[wasm_bindgen]
impl FeedbackFile {
    /// The inputs, row-major.
    pub fn inputs(&self) -> Vec<f32> {
        self.inner.inputs.clone()
    }
    /// Their shape, examples first.
    pub fn dims(&self) -> Vec<u32> {
        self.inner.shape.iter().map(|&d| d as u32).collect()
    }
    /// One label per example.
    pub fn labels(&self) -> JsResult<Vec<i32>> {
        js(self
            .inner
            .labels
            .iter()
            .map(|&l| i32::try_from(l))
            .collect::<Result<_, _>>()
            .map_err(|_| KilnError::value("feedback: a label does not fit in 32 bits")))
    }
    /// The model version the examples were collected against.
    #[wasm_bindgen(js_name = modelVersion)]
    pub fn model_version(&self) -> String {
        self.inner.model_version.clone()
    }
}

/// The fingerprint a feedback file records for a model's bytes.
#[wasm_bindgen(js_name = modelVersion)]
pub fn version_of(bytes: &[u8]) -> String {
    model_version(bytes)
}
