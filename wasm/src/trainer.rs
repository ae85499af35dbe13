//! Training in the browser: the plumbing under index.js's `Trainer`.
//!
//! A [`TrainerCore`] is a kiln-core [`Model`] — the same autodiff, layers, optimizers and fit loop
//! that Python's `kiln.Sequential.fit` runs — loaded from a `.kiln` checkpoint. With the same
//! checkpoint, data, options and seed, a fine-tuning run here and in Python visit the batches in
//! the same order and end with the same weights (to float rounding: the GEMM kernels differ).

use kiln_core::onnx::export::{export_onnx, ExportOptions};
use kiln_core::optim::OptimizerSpec;
use kiln_core::train::{Control, Event, FitConfig, Hooks, Loss, Metric, Targets};
use kiln_core::{KilnError, Model, Result};
use wasm_bindgen::prelude::*;

use crate::error::{js, JsResult};
use crate::{array, into_vec};

/// A trainable model loaded from a `.kiln` checkpoint.
#[wasm_bindgen]
pub struct TrainerCore {
    model: Model,
}

#[wasm_bindgen]
impl TrainerCore {
    /// Rebuilds the model saved by Python's `model.save(...)` (or [`TrainerCore::save`]).
    #[wasm_bindgen(js_name = fromKiln)]
    pub fn from_kiln(bytes: &[u8]) -> JsResult<TrainerCore> {
        js(Model::from_bytes(bytes).map(|model| TrainerCore { model }))
    }

    /// An ONNX file kiln's engine imports (PyTorch's exports, kiln's own) as a model that trains:
    /// the file's weights under the file's names ([`kiln_core::onnx::engine::KilnSession::into_model`]).
    #[wasm_bindgen(js_name = fromOnnx)]
    pub fn from_onnx(bytes: &[u8]) -> JsResult<TrainerCore> {
        js(
            kiln_core::onnx::engine::KilnSession::model_from_bytes(bytes, 0)
                .map(|model| TrainerCore { model }),
        )
    }

    /// The model as JSON: `{"layers": [...], "parameters": [{"name", "shape", "trainable"}],
    /// "inputShape": [...] | null, "seed": "…", "compiled": bool}` (the seed as a string: it is
    /// a 64-bit integer).
    pub fn describe(&self) -> String {
        let parameters: Vec<serde_json::Value> = self
            .model
            .net
            .tensors()
            .into_iter()
            .filter(|(_, p)| !p.is_buffer)
            .map(|(name, p)| serde_json::json!({ "name": name, "shape": p.value().shape(), "trainable": p.trainable() }))
            .collect();
        serde_json::json!({
            "layers": self.model.net.specs(),
            "parameters": parameters,
            "inputShape": self.model.input_shape(),
            "seed": self.model.seed.to_string(),
            "compiled": self.model.loss().is_ok(),
        })
        .to_string()
    }

    /// Freezes (`trainable = false`) or unfreezes the parameters whose name starts with
    /// `prefix`; returns how many matched.
    #[wasm_bindgen(js_name = setTrainable)]
    pub fn set_trainable(&mut self, prefix: &str, trainable: bool) -> usize {
        self.model.net.set_trainable(prefix, trainable)
    }

    /// Chooses the optimizer (kiln-core's JSON spec, `{"type": "Adam", "lr": 0.001}`), the loss
    /// (`"cross_entropy"`, …) and the metrics. Starts a fresh optimizer state.
    pub fn compile(
        &mut self,
        optimizer_json: &str,
        loss: &str,
        metrics: Vec<String>,
    ) -> JsResult<()> {
        js((|| {
            let spec: OptimizerSpec = parse("optimizer", optimizer_json)?;
            let metrics = metrics
                .iter()
                .map(|m| Metric::from_name(m))
                .collect::<Result<Vec<_>>>()?;
            self.model.compile(&spec, Loss::from_name(loss)?, metrics)
        })())
    }

    /// Sets the compiled optimizer's learning rate (its state is kept).
    #[wasm_bindgen(js_name = setLearningRate)]
    pub fn set_learning_rate(&mut self, lr: f32) -> JsResult<()> {
        js((|| {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(KilnError::value(format!(
                    "the learning rate must be a positive number, got {lr}"
                )));
            }
            self.model.optimizer_mut()?.set_lr(lr);
            Ok(())
        })())
    }

    /// Whether the compiled loss wants integer class labels (`cross_entropy`).
    #[wasm_bindgen(js_name = wantsClasses)]
    pub fn wants_classes(&self) -> JsResult<bool> {
        js(self.model.loss().map(Loss::wants_classes))
    }

    /// Trains on `x` (shape `dims`, first axis the sample) against `targets`, with kiln-core's
    /// `FitConfig` as JSON. `on_event(kind, epoch, batch, batches, logsJson)` is called after
    /// every batch (`"batch"`) and epoch (`"epoch"`); returning `true` stops training, keeping the
    /// weights reached. An exception thrown by it stops training and is rethrown. Returns the
    /// history as JSON.
    pub fn fit(
        &mut self,
        x: Vec<f32>,
        dims: Vec<u32>,
        targets: Targets_,
        config_json: &str,
        on_event: Option<js_sys::Function>,
    ) -> JsResult<String> {
        let cfg: FitConfig = js(parse("fit options", config_json))?;
        let x = js(array("x", x, &dims))?;
        let targets = targets.take()?;
        let mut thrown: Option<JsValue> = None;
        let mut callback = |e: &Event, _: &mut kiln_core::Model| -> Control {
            let Some(f) = &on_event else {
                return Control::Continue;
            };
            let (kind, epoch, batch, batches, logs) = match e {
                Event::BatchEnd {
                    epoch,
                    batch,
                    batches,
                    logs,
                } => ("batch", *epoch, *batch, *batches, *logs),
                Event::EpochEnd { epoch, logs } => ("epoch", *epoch, 0, 0, *logs),
            };
            let args = js_sys::Array::of5(
                &kind.into(),
                &(epoch as u32).into(),
                &(batch as u32).into(),
                &(batches as u32).into(),
                &serde_json::to_string(logs).expect("logs serialise").into(),
            );
            match f.apply(&JsValue::NULL, &args) {
                Ok(answer) if answer.is_truthy() => Control::Stop,
                Ok(_) => Control::Continue,
                Err(error) => {
                    thrown.get_or_insert(error);
                    Control::Stop
                }
            }
        };
        let mut hooks = Hooks {
            on_event: Some(&mut callback),
            ..Hooks::default()
        };
        let result = self.model.fit(x.view(), &targets, None, &cfg, &mut hooks);
        if let Some(error) = thrown {
            return Err(error.into());
        }
        let history = js(result)?;
        Ok(serde_json::to_string(&history).expect("history serialises"))
    }

    /// Loss and metrics on `x` against `targets`, in evaluation mode, as JSON.
    pub fn evaluate(
        &mut self,
        x: Vec<f32>,
        dims: Vec<u32>,
        targets: Targets_,
        batch_size: usize,
    ) -> JsResult<String> {
        let x = js(array("x", x, &dims))?;
        let targets = targets.take()?;
        let logs = js(self.model.evaluate(x.view(), &targets, batch_size.max(1)))?;
        Ok(serde_json::to_string(&logs).expect("logs serialise"))
    }

    /// The model's raw outputs for `x`, in evaluation mode; the shape is in `lastDims`.
    pub fn predict(&mut self, x: Vec<f32>, dims: Vec<u32>) -> JsResult<Prediction> {
        let x = js(array("x", x, &dims))?;
        let out = js(self.model.predict(x.view(), 256))?;
        let dims = out.shape().iter().map(|&d| d as u32).collect();
        let data = into_vec(out);
        Ok(Prediction {
            data: Some(data),
            dims,
        })
    }

    /// The model as ONNX bytes, with optional metadata (labels as a JSON list, the input scale
    /// and offset the page's preprocessing reads).
    #[wasm_bindgen(js_name = exportOnnx)]
    pub fn export_onnx(
        &self,
        labels_json: Option<String>,
        input_scale: Option<f32>,
        input_offset: Option<f32>,
        opset: u32,
        statistics: Option<String>,
    ) -> JsResult<Vec<u8>> {
        js((|| {
            let labels = labels_json
                .map(|l| parse::<Vec<String>>("labels", &l))
                .transpose()?;
            // the training statistics a fine-tuned model carries on (`kiln.drift`), checked
            let extra_metadata = match statistics {
                Some(text) => {
                    kiln_core::drift::Reference::decode(&text)?;
                    vec![(kiln_core::drift::METADATA_KEY.to_string(), text)]
                }
                None => Vec::new(),
            };
            let opts = ExportOptions {
                labels,
                input_scale,
                input_offset,
                opset: opset.into(),
                extra_metadata,
                ..ExportOptions::default()
            };
            export_onnx(&self.model, &opts)
        })())
    }

    /// The model as a `.kiln` checkpoint (safetensors + architecture), which Python's
    /// `kiln.load` reads.
    pub fn save(&self) -> JsResult<Vec<u8>> {
        js(self.model.to_bytes())
    }

    /// Every trainable value in one flat array (state-dict order), as Python's
    /// `model.get_flat_parameters()`.
    #[wasm_bindgen(js_name = flatParameters)]
    pub fn flat_parameters(&self) -> Vec<f32> {
        self.model.flat_params()
    }
}

/// What a model is trained against: integer class labels or float values shaped like its output.
/// index.js builds one per call; it is consumed by the call.
#[wasm_bindgen(js_name = Targets)]
pub struct Targets_ {
    inner: Option<Targets>,
}

#[wasm_bindgen(js_class = Targets)]
impl Targets_ {
    /// Class indices (`Int32Array`; negative values are refused).
    pub fn classes(labels: Vec<i32>) -> JsResult<Targets_> {
        if let Some(bad) = labels.iter().find(|&&l| l < 0) {
            return js(Err(KilnError::value(format!(
                "labels must be non-negative class indices, got {bad}"
            ))));
        }
        Ok(Targets_ {
            inner: Some(Targets::Classes(
                labels.into_iter().map(|l| l as usize).collect(),
            )),
        })
    }

    /// Real-valued targets with their shape (first axis the sample).
    pub fn values(data: Vec<f32>, dims: Vec<u32>) -> JsResult<Targets_> {
        Ok(Targets_ {
            inner: Some(Targets::Values(js(array("targets", data, &dims))?)),
        })
    }
}

impl Targets_ {
    fn take(self) -> JsResult<Targets> {
        self.inner
            .ok_or_else(|| js_sys::Error::new("kiln-wasm: these targets were already used"))
    }
}

/// A prediction's values (taken once) and shape.
#[wasm_bindgen]
pub struct Prediction {
    data: Option<Vec<f32>>,
    dims: Vec<u32>,
}

#[wasm_bindgen]
impl Prediction {
    /// The output's shape.
    pub fn dims(&self) -> Vec<u32> {
        self.dims.clone()
    }

    /// The values, moved out into a `Float32Array` (once).
    pub fn take(&mut self) -> JsResult<Vec<f32>> {
        self.data
            .take()
            .ok_or_else(|| js_sys::Error::new("kiln-wasm: this prediction was already taken"))
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| KilnError::value(format!("invalid {what}: {e}")))
}
