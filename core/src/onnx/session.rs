//! One ONNX model on the engine the browser would pick: kiln's own engine ([`KilnSession`]) when
//! it runs the graph, tract ([`TractSession`]) for what it declines. The rule lives here, once;
//! `kiln.InferenceSession` in Python is a thin face over it, and kiln-wasm's `loadModel` follows
//! the same order across its two modules (the small one has no tract to fall back to in-process).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use super::engine::{slow_fallback_warning, IoInfo, KilnSession, Unsupported, Value};
use super::feeds;
use super::tract::{DType, TensorData, TensorInfo, TractSession};
use crate::{KilnError, Result};

/// Which engine runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// kiln's engine when it runs the model, tract otherwise (what the browser does).
    #[default]
    Auto,
    /// kiln's engine only: loading a model it declines is an error saying why.
    Kiln,
    /// tract only.
    Tract,
}

impl FromStr for EngineChoice {
    type Err = KilnError;

    /// `"auto"`, `"kiln"` or `"tract"`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "kiln" => Ok(EngineChoice::Kiln),
            "tract" => Ok(EngineChoice::Tract),
            other => Err(KilnError::value(format!(
                "engine must be \"auto\", \"kiln\" or \"tract\", not {other:?}"
            ))),
        }
    }
}

enum Engine {
    Kiln(Box<KilnSession>),
    Tract(Box<TractSession>),
}

/// A loaded ONNX model on one of the two engines, with one description of its inputs and
/// outputs whichever runs it.
pub struct InferenceSession {
    engine: Engine,
    declined: Option<String>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

impl InferenceSession {
    /// Loads the bytes of an `.onnx` file on the engine `choice` picks.
    ///
    /// ```no_run
    /// use kiln_core::onnx::session::{EngineChoice, InferenceSession};
    /// let bytes = std::fs::read("digits.onnx")?;
    /// let sess = InferenceSession::from_bytes(&bytes, EngineChoice::Auto)?;
    /// println!("{} ({:?})", sess.engine(), sess.declined());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_bytes(bytes: &[u8], choice: EngineChoice) -> Result<Self> {
        Self::load(bytes, None, choice, &mut |_| Ok(()))
    }

    /// [`Self::from_bytes`], telling `warn` before tract starts a load that will take seconds
    /// (the words of [`super::engine::slow_fallback_warning`], ending with `remedy`). An error
    /// from `warn` (Python's warnings filter set to "error") stops the load.
    pub fn from_bytes_warning(
        bytes: &[u8],
        choice: EngineChoice,
        remedy: &str,
        warn: &mut dyn FnMut(String) -> Result<()>,
    ) -> Result<Self> {
        Self::load(bytes, None, choice, &mut warning(remedy, warn))
    }

    /// Loads an `.onnx` file; tract finds weights kept in external files next to it (kiln's
    /// engine declines such models).
    pub fn from_path(path: impl AsRef<Path>, choice: EngineChoice) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| KilnError::io(path, e))?;
        Self::load(&bytes, Some(path), choice, &mut |_| Ok(()))
    }

    /// [`Self::from_path`] with the warning of [`Self::from_bytes_warning`].
    pub fn from_path_warning(
        path: impl AsRef<Path>,
        choice: EngineChoice,
        remedy: &str,
        warn: &mut dyn FnMut(String) -> Result<()>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| KilnError::io(path, e))?;
        Self::load(&bytes, Some(path), choice, &mut warning(remedy, warn))
    }

    /// `before_tract` runs when kiln's engine declined the model in `"auto"`, before tract loads it.
    fn load(
        bytes: &[u8],
        path: Option<&Path>,
        choice: EngineChoice,
        before_tract: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Self> {
        Self::load_on(bytes, path, choice, before_tract).map_err(|e| {
            super::compat::with_newer_hint(e, bytes, "kiln", "pip install --upgrade kiln")
        })
    }

    fn load_on(
        bytes: &[u8],
        path: Option<&Path>,
        choice: EngineChoice,
        before_tract: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Self> {
        let declined = match choice {
            EngineChoice::Tract => None,
            EngineChoice::Kiln => match KilnSession::from_bytes(bytes)? {
                Ok(kiln) => return Ok(Self::on_kiln(kiln)),
                Err(Unsupported(why)) => {
                    return Err(KilnError::onnx(format!(
                        "kiln's engine does not run this model ({why}); load it with engine \
                         \"auto\" or \"tract\""
                    )))
                }
            },
            // Bytes kiln's decoder refuses go to tract too, whose message then stands.
            EngineChoice::Auto => match KilnSession::from_bytes(bytes) {
                Ok(Ok(kiln)) => return Ok(Self::on_kiln(kiln)),
                Ok(Err(Unsupported(why))) => Some(why),
                Err(e) => Some(e.to_string()),
            },
        };
        if declined.is_some() {
            before_tract(bytes)?;
        }
        let tract = match path {
            Some(p) => TractSession::from_path(p)?,
            None => TractSession::from_bytes(bytes)?,
        };
        Ok(InferenceSession {
            inputs: tract.inputs().to_vec(),
            outputs: tract.outputs().to_vec(),
            engine: Engine::Tract(Box::new(tract)),
            declined,
        })
    }

    fn on_kiln(kiln: KilnSession) -> Self {
        let describe = |list: &[IoInfo]| -> Vec<TensorInfo> {
            list.iter()
                .map(|i| TensorInfo {
                    name: i.name.clone(),
                    dims: i.dims.clone(),
                    dtype: if i.dtype == "int64" {
                        DType::I64
                    } else {
                        DType::F32
                    },
                })
                .collect()
        };
        InferenceSession {
            inputs: describe(kiln.inputs()),
            outputs: describe(kiln.outputs()),
            engine: Engine::Kiln(Box::new(kiln)),
            declined: None,
        }
    }

    /// `"kiln"` or `"tract"`: the engine that runs the model.
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Kiln(_) => "kiln",
            Engine::Tract(_) => "tract",
        }
    }

    /// kiln's engine's session, when it runs the model (generation steps its graph directly).
    pub fn kiln(&self) -> Option<&KilnSession> {
        match &self.engine {
            Engine::Kiln(s) => Some(s),
            Engine::Tract(_) => None,
        }
    }

    /// Why kiln's engine declined the model, when it was asked first and tract runs it.
    pub fn declined(&self) -> Option<&str> {
        self.declined.as_deref()
    }

    /// The model's inputs, in the order [`run`](Self::run) takes them.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// The model's outputs, in the order `run` returns them.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The ONNX `metadata_props`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        match &self.engine {
            Engine::Kiln(s) => s.metadata(),
            Engine::Tract(s) => s.metadata(),
        }
    }

    /// The class labels `export_onnx` stored (metadata `kiln.labels`), if any.
    pub fn labels(&self) -> Option<Vec<String>> {
        match &self.engine {
            Engine::Kiln(s) => s.labels(),
            Engine::Tract(s) => s.labels(),
        }
    }

    /// Runs the model on one tensor per input, in [`inputs`](Self::inputs) order. Wrong counts,
    /// shapes and element types get the same messages on both engines.
    pub fn run(&self, inputs: Vec<TensorData>) -> Result<Vec<TensorData>> {
        let kiln = match &self.engine {
            Engine::Tract(s) => return s.run(inputs),
            Engine::Kiln(s) => s,
        };
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        feeds::check_count(&names, inputs.len())?;
        let mut feed = Vec::with_capacity(inputs.len());
        for (info, data) in self.inputs.iter().zip(inputs) {
            let value = match data {
                TensorData::F32(a) if info.dtype == DType::F32 => Value::F32(a),
                TensorData::I64(a) if info.dtype == DType::I64 => Value::I64(a),
                other => {
                    return Err(feeds::mismatch(
                        &info.name,
                        &info.dims,
                        info.dtype.name(),
                        other.shape(),
                        other.dtype().name(),
                    ))
                }
            };
            feed.push((info.name.clone(), value));
        }
        Ok(kiln.run(feed)?.into_iter().map(TensorData::F32).collect())
    }

    /// Runs the model on named inputs, in any order; every input is required.
    pub fn run_named(&self, inputs: Vec<(String, TensorData)>) -> Result<Vec<TensorData>> {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        self.run(feeds::in_graph_order(&names, inputs)?)
    }
}

/// What runs before tract loads a declined model: `warn` gets the slow-load words when there are any.
fn warning<'a>(
    remedy: &'a str,
    warn: &'a mut dyn FnMut(String) -> Result<()>,
) -> impl FnMut(&[u8]) -> Result<()> + 'a {
    move |bytes| match slow_fallback_warning(bytes, remedy) {
        Some(w) => warn(w),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_choice_parses_its_three_names_only() {
        assert_eq!("auto".parse::<EngineChoice>().unwrap(), EngineChoice::Auto);
        assert_eq!("kiln".parse::<EngineChoice>().unwrap(), EngineChoice::Kiln);
        assert_eq!(
            "tract".parse::<EngineChoice>().unwrap(),
            EngineChoice::Tract
        );
        let e = "lite".parse::<EngineChoice>().unwrap_err().to_string();
        assert!(
            e.contains("\"auto\", \"kiln\" or \"tract\"") && e.contains("lite"),
            "{e}"
        );
    }

    #[test]
    fn session_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<InferenceSession>();
    }
}
