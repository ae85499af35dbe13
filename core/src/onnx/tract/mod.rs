//! Native ONNX inference through tract: kiln's own exports and models written by other tools
//! (onnx.helper, skl2onnx, onnxruntime's quantizer, …).
//!
//! A session parses the model once and keeps free (batch, `dim_param`) dimensions symbolic;
//! [`plans`] turns that graph into optimised plans, one per value of the free dimensions (see
//! there why). Inputs are checked against the model before tract sees them, so a wrong shape or
//! dtype gets a message in kiln's words; a model tract cannot load gets one naming the node.

mod check;
mod ops;
mod plans;
mod pool;
mod tensor;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use tract_onnx::model::Onnx;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

pub use tensor::{DType, TensorData, TensorInfo};

use plans::Plans;

use crate::{KilnError, Result};

/// A loaded, optimised ONNX model, ready to run many times (from several threads at once).
pub struct TractSession {
    plans: Plans,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    /// Per input, per axis: the symbol naming a free dimension, so inputs sharing one (two
    /// inputs with batch `N`) are checked against each other.
    input_symbols: Vec<Vec<Option<String>>>,
    input_types: Vec<DatumType>,
    metadata: BTreeMap<String, String>,
}

/// tract's ONNX front end with kiln's extra operators registered, built once.
fn framework() -> &'static Onnx {
    static FRAMEWORK: OnceLock<Onnx> = OnceLock::new();
    FRAMEWORK.get_or_init(|| {
        #[cfg(target_family = "wasm")]
        run_static_constructors();
        let mut onnx = tract_onnx::onnx();
        ops::register(&mut onnx.op_register);
        onnx
    })
}

/// Runs the module's static constructors, once, before tract's first use.
///
/// tract registers its runtimes, graph transforms and knobs with `inventory`, i.e. static
/// constructors, which wasm-ld gathers into `__wasm_call_ctors`. When no code calls that function,
/// wasm-ld treats the module as a "command" and wraps *every* export in a call to it: each
/// `Session.run`, each `Feed` method, each output taken re-ran all the registrations (measured:
/// 15 % of a batch-1 run of the digits CNN in Node). A call from code reachable from the exports
/// turns the wrappers off. `framework()` is the first thing that touches tract (every session is
/// built through it), so its one-time initialiser is the place. inventory's constructors are
/// idempotent, so a second call (another crate doing the same) would be harmless.
#[cfg(target_family = "wasm")]
fn run_static_constructors() {
    extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: synthesised by wasm-ld for every module; it only runs the constructors, which
    // for this module are inventory's idempotent registrations.
    unsafe { __wasm_call_ctors() }
}

/// The message of a caught panic.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// tract's error chain in kiln's words: the node it concerns (when tract says) and the root
/// cause, minus the solver state tract appends to some messages.
fn describe(e: &TractError) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let mut root = chain.last().cloned().unwrap_or_default();
    if root.starts_with("Clashing resolution") {
        if let Some(ix) = root.find(". (") {
            root.truncate(ix);
        }
    }
    match chain.iter().find_map(|s| node_reference(s)) {
        Some((name, op)) => format!("node {name:?} ({op}): {root}"),
        None => {
            let mut parts: Vec<&str> = chain.iter().map(String::as_str).collect();
            parts.dedup();
            parts.pop();
            parts.push(&root);
            parts.join(": ")
        }
    }
}

/// The node named in a tract context message: `... #3 "name" OpName ...` (how tract prints a
/// node) or `Building node name (Op)` (the ONNX parser).
fn node_reference(s: &str) -> Option<(String, String)> {
    if let Some(rest) = s.strip_prefix("Building node ") {
        let open = rest.rfind(" (")?;
        let op = rest[open + 2..].trim_end_matches(')');
        return Some((rest[..open].to_string(), op.to_string()));
    }
    let hash = s
        .find(" #")
        .map(|i| i + 1)
        .or_else(|| s.starts_with('#').then_some(0))?;
    let after = &s[hash + 1..];
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let rest = after[digits..].strip_prefix(" \"")?;
    let close = rest.find('"')?;
    let op = rest[close + 1..].trim_start().split([' ', ':']).next()?;
    let op = op.strip_suffix("Inference").unwrap_or(op);
    Some((rest[..close].to_string(), op.to_string()))
}

impl TractSession {
    /// Loads a model from the bytes of an `.onnx` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let proto = decode(bytes)?;
        Self::from_proto(proto, None)
    }

    /// Loads a model from an `.onnx` file (weights in external files next to it are found).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| KilnError::io(path, e))?;
        let proto =
            decode(&bytes).map_err(|e| KilnError::onnx(format!("{}: {e}", path.display())))?;
        let dir = path.parent().map(|p| p.to_string_lossy().into_owned());
        Self::from_proto(proto, Some(dir.as_deref().unwrap_or(".")))
    }

    /// Builds a session from an already decoded protobuf (tests and tools build these directly).
    pub fn from_proto(mut proto: ModelProto, model_dir: Option<&str>) -> Result<Self> {
        let onnx = framework();
        check::validate(&proto, &onnx.op_register, model_dir.is_some())?;
        let metadata = check::metadata(&proto);
        check::symbolize_inputs(&mut proto);
        let output_names: Vec<String> = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();
        let built = catch_unwind(AssertUnwindSafe(|| build_plan(onnx, &proto, model_dir)))
            .map_err(|p| {
                KilnError::onnx(format!(
                    "tract panicked while loading the model: {}",
                    panic_message(p)
                ))
            })?;
        let plans = built?;
        let model = plans.model();
        let mut inputs = Vec::new();
        let mut input_symbols = Vec::new();
        let mut input_types = Vec::new();
        for outlet in model.input_outlets().map_err(load_error)? {
            let fact = model.outlet_fact(*outlet).map_err(load_error)?;
            let name = model.node(outlet.node).name.clone();
            let dims = fact
                .shape
                .iter()
                .map(|d| d.to_i64().ok().map(|v| v as usize))
                .collect();
            let symbols = fact
                .shape
                .iter()
                .map(|d| match d {
                    TDim::Sym(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect();
            inputs.push(TensorInfo {
                name,
                dims,
                dtype: DType::from_datum(fact.datum_type),
            });
            input_symbols.push(symbols);
            input_types.push(fact.datum_type);
        }
        let mut outputs = Vec::new();
        for (ix, outlet) in model
            .output_outlets()
            .map_err(load_error)?
            .iter()
            .enumerate()
        {
            let fact = model.outlet_fact(*outlet).map_err(load_error)?;
            let dtype = DType::from_datum(fact.datum_type);
            outputs.push(TensorInfo {
                name: output_names
                    .get(ix)
                    .cloned()
                    .unwrap_or_else(|| format!("output{ix}")),
                dims: fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().ok().map(|v| v as usize))
                    .collect(),
                dtype: dtype.carried().unwrap_or(dtype),
            });
        }
        Ok(TractSession {
            plans,
            inputs,
            outputs,
            input_symbols,
            input_types,
            metadata,
        })
    }

    /// The model's inputs, in the order [`run`](Self::run) takes them.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// The model's outputs, in the order `run` returns them. `dtype` is the type kiln returns:
    /// float16 comes back as float32, int16/uint16 as int32, uint32/uint64 as int64.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The ONNX `metadata_props` (kiln writes `kiln.labels`, `kiln.input_scale`, …).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The class labels stored by `export_onnx` (metadata `kiln.labels`, a JSON list of
    /// strings); `None` when absent or not such a list.
    pub fn labels(&self) -> Option<Vec<String>> {
        serde_json::from_str(self.metadata.get("kiln.labels")?).ok()
    }

    /// Whether tract's optimiser succeeds on this graph with its free dimensions symbolic;
    /// `false` when it fails and kiln falls back to the decluttered (unoptimised but correct)
    /// plan. Runs use plans specialised to their shapes when they can (see `plans.rs`); asking
    /// this makes the symbolic plan if no run needed it yet.
    pub fn is_optimized(&self) -> bool {
        self.plans.general_is_optimized()
    }

    /// Runs the model on one tensor per input, in [`inputs`](Self::inputs) order.
    pub fn run(&self, inputs: Vec<TensorData>) -> Result<Vec<TensorData>> {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        crate::onnx::feeds::check_count(&names, inputs.len())?;
        self.check_inputs(&inputs)?;
        let shapes: Vec<&[usize]> = inputs.iter().map(TensorData::shape).collect();
        let plan = self.plans.for_shapes(&shapes)?;
        let mut values: TVec<TValue> = tvec![];
        for (data, dt) in inputs.into_iter().zip(&self.input_types) {
            values.push(data.into_tract(*dt)?.into_tvalue());
        }
        let outputs = catch_unwind(AssertUnwindSafe(|| plan.run(values)))
            .map_err(|p| {
                KilnError::onnx(format!(
                    "tract panicked while running the model: {}",
                    panic_message(p)
                ))
            })?
            .map_err(|e| KilnError::onnx(format!("running the model failed: {}", describe(&e))))?;
        outputs
            .into_iter()
            .zip(&self.outputs)
            .map(|(v, info)| {
                TensorData::from_tract(v.into_tensor(), &format!("output {:?}", info.name))
            })
            .collect()
    }

    /// Runs the model on named inputs, in any order; every input is required.
    pub fn run_named(&self, inputs: Vec<(String, TensorData)>) -> Result<Vec<TensorData>> {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        self.run(crate::onnx::feeds::in_graph_order(&names, inputs)?)
    }

    /// dtype, rank, fixed dimensions, and free dimensions shared between inputs.
    fn check_inputs(&self, inputs: &[TensorData]) -> Result<()> {
        let mut free = crate::onnx::feeds::FreeDims::default();
        for ((data, info), symbols) in inputs.iter().zip(&self.inputs).zip(&self.input_symbols) {
            let expected = info.dtype.carried().unwrap_or_else(|| info.dtype.clone());
            let shape = data.shape();
            if data.dtype() != expected || !crate::onnx::feeds::fits(&info.dims, shape) {
                let want = if expected != info.dtype {
                    format!("{}, passed as {}", info.dtype, expected)
                } else {
                    info.dtype.to_string()
                };
                let got = data.dtype().to_string();
                return Err(crate::onnx::feeds::mismatch(
                    &info.name, &info.dims, &want, shape, &got,
                ));
            }
            free.bind(&info.name, symbols, shape)?;
        }
        Ok(())
    }
}

/// Protobuf bytes to a model, or kiln's message for bytes that are not one.
fn decode(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(KilnError::onnx("not a valid ONNX model: the data is empty"));
    }
    let proto = framework()
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| KilnError::onnx(format!("not a valid ONNX model: {}", describe(&e))))?;
    Ok(proto)
}

fn load_error(e: TractError) -> KilnError {
    KilnError::onnx(format!("cannot load the ONNX model: {}", describe(&e)))
}

/// Parse, type and declutter; [`Plans`] optimises (once per shape of the free dimensions).
fn build_plan(onnx: &Onnx, proto: &ModelProto, dir: Option<&str>) -> Result<Plans> {
    let parsed = onnx.parse(proto, dir).map_err(load_error)?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(KilnError::onnx(format!(
            "cannot load the ONNX model: names {:?} are read but never defined",
            parsed.unresolved_inputs
        )));
    }
    let typed = parsed.model.into_typed().map_err(load_error)?;
    let decluttered = typed.into_decluttered().map_err(load_error)?;
    Plans::new(decluttered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TractSession>();
    }
}
