//! A trainable model: the network, how it was compiled (optimizer, loss, metrics), its seed, and its
//! checkpoint format. A `.kiln` checkpoint *is* a safetensors file: the weights by state-dict name,
//! and the architecture as JSON in the safetensors metadata (`kiln.architecture`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::autograd::Tensor;
use crate::nn::{GraphSpec, LayerSpec, Net, Param};
use crate::optim::{Optimizer, OptimizerSpec};
use crate::train::{self, FitConfig, History, Hooks, Input, Logs, Loss, Metric, Targets};
use crate::{value_err, KilnError, Result};

/// kiln's version, written into checkpoints and ONNX metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The architecture as stored in a checkpoint: a Sequential's layer list, or a graph model's
/// modules, parameters and traced graph.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Architecture {
    /// The layers, in order (Sequential models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
    /// Modules, free parameters and the graph (graph models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphSpec>,
    /// The per-sample shape of the first input (without the batch dimension), once known. A graph
    /// model's graph holds every input's.
    #[serde(default)]
    pub input_shape: Option<Vec<usize>>,
}

/// A model (a Sequential or a traced graph), trained by [`Model::fit`].
pub struct Model {
    /// The network.
    pub net: Net,
    /// Seed that drew the initial weights; also seeds shuffling and dropout.
    pub seed: u64,
    /// Metrics reported by `fit` and `evaluate`.
    pub metrics: Vec<Metric>,
    pub(crate) loss: Option<Loss>,
    pub(crate) optimizer: Option<Optimizer>,
    pub(crate) fits_done: u64,
}

impl Model {
    /// A Sequential model with PyTorch's default initialisation drawn from `seed`.
    pub fn new(layers: &[LayerSpec], seed: u64) -> Result<Self> {
        let net = Net::sequential(layers, &mut ChaCha8Rng::seed_from_u64(seed))?;
        Ok(Self::with_net(net, seed))
    }

    /// A graph model: its modules drawn from `seed` (free parameters start at zero), its graph if traced.
    pub fn from_graph_spec(spec: &GraphSpec, seed: u64) -> Result<Self> {
        let net = Net::from_spec(spec, &mut ChaCha8Rng::seed_from_u64(seed))?;
        Ok(Self::with_net(net, seed))
    }

    fn with_net(net: Net, seed: u64) -> Self {
        Model {
            net,
            seed,
            metrics: Vec::new(),
            loss: None,
            optimizer: None,
            fits_done: 0,
        }
    }

    /// The per-sample shape of the first input, once known.
    pub fn input_shape(&self) -> Option<Vec<usize>> {
        self.net.graph()?.inputs.first()?.shape.clone()
    }

    /// Every input's per-sample shape (`None` where not yet known); empty before tracing.
    pub fn input_shapes(&self) -> Vec<Option<Vec<usize>>> {
        self.net
            .graph()
            .map(|g| g.inputs.iter().map(|i| i.shape.clone()).collect())
            .unwrap_or_default()
    }

    /// Set (or forget) the first input's per-sample shape, as export needs it.
    pub fn set_input_shape(&mut self, shape: Option<Vec<usize>>) -> Result<()> {
        let g = self.net.graph_mut().ok_or_else(|| {
            KilnError::value("the model has not been traced yet: call it on data first")
        })?;
        g.inputs[0].shape = shape;
        Ok(())
    }

    /// The graph's inputs (names, element types, shapes); empty before tracing.
    pub fn inputs(&self) -> Vec<crate::graph::GraphInput> {
        self.net
            .graph()
            .map(|g| g.inputs.clone())
            .unwrap_or_default()
    }

    /// How many outputs the model returns (1 before tracing).
    pub fn num_outputs(&self) -> usize {
        self.net.graph().map_or(1, |g| g.outputs.len())
    }

    /// Choose the optimizer, loss and metrics for `fit` and `evaluate`.
    pub fn compile(
        &mut self,
        optimizer: &OptimizerSpec,
        loss: Loss,
        metrics: Vec<Metric>,
    ) -> Result<()> {
        self.optimizer = Some(optimizer.build()?);
        self.loss = Some(loss);
        self.metrics = metrics;
        Ok(())
    }

    /// Set (or replace) only the optimizer, for hand-written training loops.
    pub fn set_optimizer(&mut self, optimizer: &OptimizerSpec) -> Result<()> {
        self.optimizer = Some(optimizer.build()?);
        Ok(())
    }

    /// The compiled loss.
    pub fn loss(&self) -> Result<&Loss> {
        self.loss.as_ref().ok_or_else(not_compiled)
    }

    /// The compiled optimizer.
    pub fn optimizer(&self) -> Result<&Optimizer> {
        self.optimizer.as_ref().ok_or_else(not_compiled)
    }

    /// The compiled optimizer, mutable (to change the learning rate).
    pub fn optimizer_mut(&mut self) -> Result<&mut Optimizer> {
        self.optimizer.as_mut().ok_or_else(not_compiled)
    }

    /// Apply the compiled optimizer to every trainable parameter that holds a gradient.
    pub fn optimizer_step(&mut self) -> Result<()> {
        let opt = self.optimizer.as_mut().ok_or_else(not_compiled)?;
        opt.step(
            self.net
                .tensors_mut()
                .into_iter()
                .filter(|(_, p)| p.trainable())
                .collect(),
        );
        Ok(())
    }

    /// Record (or check against) every input's per-sample shape.
    pub fn remember_inputs(&mut self, xs: &[Input]) -> Result<()> {
        let g = self.net.require_graph()?;
        if xs.len() != g.inputs.len() {
            value_err!(
                "the model takes {} input(s) ({}), got {}",
                g.inputs.len(),
                input_names(&g.inputs),
                xs.len()
            );
        }
        for (x, info) in xs.iter().zip(&g.inputs) {
            let per_sample = x.shape()[1..].to_vec();
            if let Some(s) = &info.shape {
                if *s != per_sample {
                    crate::shape_err!("{}input samples of shape {per_sample:?}, but the model was trained on samples of shape {s:?}", input_label(&g.inputs, &info.name));
                }
            }
        }
        let g = self.net.graph_mut().expect("checked above");
        for (x, info) in xs.iter().zip(g.inputs.iter_mut()) {
            info.shape = Some(x.shape()[1..].to_vec());
        }
        Ok(())
    }

    /// Train; see [`train::fit`]. One input and one output; [`Model::fit_multi`] for more.
    pub fn fit(
        &mut self,
        x: Input,
        y: &Targets,
        validation: Option<(Input, &Targets)>,
        cfg: &FitConfig,
        hooks: &mut Hooks,
    ) -> Result<History> {
        let val = validation.map(|(vx, vy)| (vec![vx], vec![vy.clone()]));
        self.fit_multi(
            &[x],
            std::slice::from_ref(y),
            val.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
            cfg,
            hooks,
        )
    }

    /// Train on one array per input and one set of targets per output (their losses are summed).
    pub fn fit_multi(
        &mut self,
        xs: &[Input],
        ys: &[Targets],
        validation: Option<(&[Input], &[Targets])>,
        cfg: &FitConfig,
        hooks: &mut Hooks,
    ) -> Result<History> {
        // A fit that fails (say, on the wrong input width at layer 0) must not leave the model
        // believing it was trained on that shape: later fits and predicts on the right data would fail.
        let before = self.input_shapes();
        let result = train::fit(self, xs, ys, validation, cfg, hooks);
        if result.is_err() {
            if let Some(g) = self.net.graph_mut() {
                for (info, s) in g.inputs.iter_mut().zip(before) {
                    info.shape = s;
                }
            }
        }
        result
    }

    /// Loss and metrics on a data set, in evaluation mode.
    pub fn evaluate(&mut self, x: Input, y: &Targets, batch_size: usize) -> Result<Logs> {
        train::evaluate(self, &[x], std::slice::from_ref(y), batch_size)
    }

    /// Loss and metrics with one array per input and one set of targets per output.
    pub fn evaluate_multi(
        &mut self,
        xs: &[Input],
        ys: &[Targets],
        batch_size: usize,
    ) -> Result<Logs> {
        train::evaluate(self, xs, ys, batch_size)
    }

    /// The model's raw outputs for `x` (the first output of a model with several), in evaluation mode.
    pub fn predict(&mut self, x: Input, batch_size: usize) -> Result<Tensor> {
        Ok(self.predict_multi(&[x], batch_size)?.swap_remove(0))
    }

    /// Every output for one array per input, in evaluation mode.
    pub fn predict_multi(&mut self, xs: &[Input], batch_size: usize) -> Result<Vec<Tensor>> {
        let g = self.net.require_graph()?;
        if xs.len() != g.inputs.len() {
            value_err!(
                "predict: the model takes {} input(s) ({}), got {}",
                g.inputs.len(),
                input_names(&g.inputs),
                xs.len()
            );
        }
        for (x, info) in xs.iter().zip(&g.inputs) {
            if x.ndim() >= 1 && x.iter().any(|v| !v.is_finite()) {
                value_err!(
                    "predict: {}the input contains NaN or infinity",
                    input_label(&g.inputs, &info.name)
                );
            }
            if let Some(s) = &info.shape {
                if x.ndim() >= 1 && x.shape()[1..] != s[..] {
                    crate::shape_err!("predict: {}input samples of shape {:?}, but the model was trained on samples of shape {s:?}", input_label(&g.inputs, &info.name), &x.shape()[1..]);
                }
            }
        }
        let out = train::predict(&mut self.net, xs, batch_size)?;
        // The first successful predict teaches the input shapes, as fit does (export needs them).
        let g = self.net.graph_mut().expect("checked above");
        for (x, info) in xs.iter().zip(g.inputs.iter_mut()) {
            if info.shape.is_none() {
                info.shape = x.shape().get(1..).map(<[usize]>::to_vec);
            }
        }
        Ok(out)
    }

    /// Every trainable value in one flat buffer, in state-dict order.
    pub fn flat_params(&self) -> Vec<f32> {
        self.flatten_trainable(|p| Some(p.value()))
    }

    /// Overwrite every trainable value from one flat buffer (the layout of [`Model::flat_params`]).
    pub fn set_flat_params(&mut self, flat: &[f32]) -> Result<()> {
        let n = self.net.num_trainable();
        if flat.len() != n {
            crate::shape_err!(
                "set_flat_params: got {} values, the model has {n} trainable values",
                flat.len()
            );
        }
        self.unflatten_trainable(flat, |p, t| p.set_value(t));
        Ok(())
    }

    /// One tensor per trainable parameter (state-dict order) in one flat buffer; `None` counts as zeros.
    /// The one layout behind flat parameters and the fit loop's flat gradients.
    pub(crate) fn flatten_trainable(&self, pick: impl Fn(&Param) -> Option<&Tensor>) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.net.num_trainable());
        for (_, p) in self
            .net
            .tensors()
            .into_iter()
            .filter(|(_, p)| p.trainable())
        {
            match pick(p) {
                Some(t) => flat.extend(t.iter()),
                None => flat.extend(std::iter::repeat_n(0.0, p.value().len())),
            }
        }
        flat
    }

    /// The reverse of [`Model::flatten_trainable`]: hands each trainable parameter its slice, shaped
    /// like the parameter. `flat` must hold exactly the trainable values.
    pub(crate) fn unflatten_trainable(
        &mut self,
        flat: &[f32],
        mut put: impl FnMut(&mut Param, Tensor),
    ) {
        let mut at = 0;
        for p in self.net.trainable_mut() {
            let len = p.value().len();
            let t = Tensor::from_shape_vec(p.value().raw_dim(), flat[at..at + len].to_vec())
                .expect("sizes agree");
            put(p, t);
            at += len;
        }
    }

    /// The architecture: a Sequential's layers, or a graph model's modules, parameters and graph.
    pub fn architecture(&self) -> Architecture {
        match self.net.layers() {
            Some(layers) => Architecture {
                layers: layers.to_vec(),
                graph: None,
                input_shape: self.input_shape(),
            },
            None => Architecture {
                layers: Vec::new(),
                graph: Some(self.net.graph_spec()),
                input_shape: self.input_shape(),
            },
        }
    }

    /// Rebuild a model from its architecture (weights drawn from `seed`).
    pub fn from_architecture(arch: &Architecture, seed: u64) -> Result<Self> {
        let mut model = match &arch.graph {
            Some(spec) => Model::from_graph_spec(spec, seed)?,
            None => Model::new(&arch.layers, seed)?,
        };
        if arch.graph.is_none() {
            model.set_input_shape(arch.input_shape.clone())?;
        }
        Ok(model)
    }

    /// The checkpoint as bytes: safetensors with the architecture in its metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let dict = self.net.state_dict();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = dict
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.shape().to_vec(),
                    v.iter().flat_map(|f| f.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (k.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| KilnError::Checkpoint(e.to_string()))?;
        let meta = HashMap::from([
            ("format".to_string(), "kiln".to_string()),
            ("kiln.version".to_string(), VERSION.to_string()),
            (
                "kiln.architecture".to_string(),
                serde_json::to_string(&self.architecture()).expect("specs serialise"),
            ),
            ("kiln.seed".to_string(), self.seed.to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).map_err(|e| KilnError::Checkpoint(e.to_string()))
    }

    /// Rebuild a model from checkpoint bytes (not compiled).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            KilnError::Checkpoint(format!("not a kiln checkpoint (safetensors): {e}"))
        })?;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| KilnError::Checkpoint(e.to_string()))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let Some(arch) = info.get("kiln.architecture") else {
            return Err(KilnError::Checkpoint("the file has no kiln.architecture metadata: it is safetensors, but not saved by kiln".into()));
        };
        let arch: Architecture = serde_json::from_str(arch).map_err(|e| {
            match LayerSpec::list_from_json(&unknown_layer_probe(arch)) {
                Err(inner @ KilnError::Unknown { .. }) => inner,
                _ => KilnError::Checkpoint(format!("bad architecture: {e}")),
            }
        })?;
        let seed = info
            .get("kiln.seed")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut model = Model::from_architecture(&arch, seed)?;
        let mut dict = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(KilnError::Checkpoint(format!(
                    "tensor {name:?} is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            dict.insert(
                name,
                Tensor::from_shape_vec(view.shape().to_vec(), data)
                    .map_err(|e| KilnError::Checkpoint(e.to_string()))?,
            );
        }
        model.net.load_state_dict(&dict)?;
        Ok(model)
    }

    /// Save atomically: write a temporary file beside `path`, flush it to disk, then rename over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// Load a checkpoint written by [`Model::save`] (or Python's `model.save`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let bytes = std::fs::read(path.as_ref()).map_err(|e| KilnError::io(path.as_ref(), e))?;
        Model::from_bytes(&bytes)
    }
}

/// The layer list of an architecture JSON, so an unknown layer type gets its own clear error.
fn unknown_layer_probe(arch: &str) -> String {
    serde_json::from_str::<serde_json::Value>(arch)
        .ok()
        .and_then(|v| v.get("layers").map(|l| l.to_string()))
        .unwrap_or_default()
}

/// The graph inputs' names, comma-separated (what a count mismatch lists).
pub(crate) fn input_names(inputs: &[crate::graph::GraphInput]) -> String {
    inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"input \"category\": "` when the model has several inputs, nothing when it has one.
fn input_label(inputs: &[crate::graph::GraphInput], name: &str) -> String {
    if inputs.len() > 1 {
        format!("input {name:?}: ")
    } else {
        String::new()
    }
}

fn not_compiled() -> KilnError {
    KilnError::value("the model is not compiled: call model.compile(optimizer=..., loss=...) first")
}

/// Temporary files of earlier saves to the same path whose writer is gone (a save killed mid-write
/// leaves `.NAME.tmp-PID`): removed, so crashes do not pile up copies beside a checkpoint. A file
/// whose process still runs is another save in progress and is left alone.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let proc = Path::new("/proc");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(prefix)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let alive = if proc.is_dir() {
            proc.join(pid.to_string()).exists()
        } else {
            // no process table to ask: only files an hour old count as abandoned
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age.as_secs() < 3600)
        };
        if pid != std::process::id() && !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| KilnError::value(format!("{}: not a file path", path.display())))?;
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    remove_stale_temporaries(dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(KilnError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tape, Var};

    /// A Linear(3, 2) model compiled with plain SGD.
    fn linear() -> Model {
        let specs =
            LayerSpec::list_from_json(r#"[{"type":"Linear","in_features":3,"out_features":2}]"#)
                .unwrap();
        let mut m = Model::new(&specs, 0).unwrap();
        let sgd = OptimizerSpec::SGD {
            lr: 0.5,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        m.compile(&sgd, Loss::Mse, vec![]).unwrap();
        m
    }

    /// `0.weight` bound on `t`: the variable, the value it holds, whether it takes a gradient.
    fn bound(m: &Model, t: &mut Tape) -> (Var, Tensor, bool) {
        let tensors = m.net.tensors();
        let (_, p) = tensors.iter().find(|(n, _)| n == "0.weight").unwrap();
        let v = p.bind(t);
        (v, t.value(v).clone(), t.requires_grad(v))
    }

    /// After a write, binding `0.weight` again on `t` gives a variable not handed out before,
    /// holding the weight's value now.
    fn rebinds(m: &Model, t: &mut Tape, seen: &mut Vec<Var>, what: &str) -> bool {
        let (v, value, grad) = bound(m, t);
        assert!(
            !seen.contains(&v),
            "after {what} the tape handed out an earlier variable"
        );
        assert_eq!(
            value,
            m.net.state_dict()["0.weight"],
            "after {what} the tape holds a stale copy"
        );
        seen.push(v);
        grad
    }

    /// A tape that outlives one call (Python's eager graph lives from `model(x)` to `backward()`)
    /// binds a parameter as it is now: after every path that writes one (a loaded state dict, a
    /// flat buffer, an optimizer step, pruning, a freeze and an unfreeze) the next bind is a new
    /// variable with the new value and flag; unchanged, the parameter stays one variable.
    #[test]
    fn a_tape_binds_a_parameter_as_the_last_write_left_it() {
        let mut m = linear();
        let mut t = Tape::new(true, 0);
        let (first, value, grad) = bound(&m, &mut t);
        assert_eq!(value, m.net.state_dict()["0.weight"]);
        assert!(grad);
        assert_eq!(bound(&m, &mut t).0, first, "unchanged, one variable");
        let mut seen = vec![first];

        let mut sd = m.net.state_dict();
        sd.get_mut("0.weight").unwrap().mapv_inplace(|w| w + 1.0);
        m.net.load_state_dict(&sd).unwrap();
        assert!(rebinds(&m, &mut t, &mut seen, "load_state_dict"));

        let flat: Vec<f32> = m.flat_params().iter().map(|w| 2.0 * w - 0.25).collect();
        m.set_flat_params(&flat).unwrap();
        assert!(rebinds(&m, &mut t, &mut seen, "set_flat_params"));

        for (_, p) in m.net.tensors_mut() {
            p.grad = Some(Tensor::ones(p.value().raw_dim()));
        }
        m.optimizer_step().unwrap();
        assert!(rebinds(&m, &mut t, &mut seen, "an optimizer step"));

        let mut mask = Tensor::ones(ndarray::IxDyn(&[2, 3]));
        mask[[0, 1]] = 0.0;
        let masks = BTreeMap::from([("0.weight".to_string(), mask)]);
        crate::optimize::prune::apply_masks(&mut m, &masks);
        assert!(rebinds(&m, &mut t, &mut seen, "pruning"));

        m.net.set_trainable("0.", false);
        assert!(
            !rebinds(&m, &mut t, &mut seen, "a freeze"),
            "frozen: no gradient"
        );
        m.net.set_trainable("0.", true);
        assert!(rebinds(&m, &mut t, &mut seen, "an unfreeze"));
        assert_eq!(
            bound(&m, &mut t).0,
            *seen.last().unwrap(),
            "unchanged again"
        );
    }

    /// On one tape, a forward pass after `load_state_dict` runs the loaded weights (as a fresh
    /// tape does), and backward gives each parameter the gradient of both passes.
    #[test]
    fn a_persistent_tape_runs_the_loaded_weights_and_collects_both_passes() {
        let mut m = linear();
        let x = Tensor::from_shape_vec(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap();
        let mut t = Tape::new(true, 0);
        let xv = t.constant(x.clone());
        let before = m.net.forward_all(&mut t, &[xv]).unwrap()[0];
        let mut sd = m.net.state_dict();
        for v in sd.values_mut() {
            v.mapv_inplace(|w| w + 1.0);
        }
        m.net.load_state_dict(&sd).unwrap();
        let after = m.net.forward_all(&mut t, &[xv]).unwrap()[0];
        let mut fresh = Tape::inference();
        let fx = fresh.constant(x);
        let want = m.net.forward_all(&mut fresh, &[fx]).unwrap()[0];
        assert_eq!(t.value(after), fresh.value(want));
        // each output moved by the loaded +1 on three weights of inputs 1, 2, 3 and on the bias
        for (a, b) in t.value(after).iter().zip(t.value(before).iter()) {
            assert!((a - b - 7.0).abs() < 1e-5, "{a} vs {b}");
        }
        let (sa, sb) = (
            t.sum(before, &[0, 1], false).unwrap(),
            t.sum(after, &[0, 1], false).unwrap(),
        );
        let s = t.add(sa, sb).unwrap();
        t.backward(s).unwrap();
        m.net.zero_grad();
        m.net.collect_grads(&mut t);
        let grads: BTreeMap<String, Tensor> = m
            .net
            .tensors()
            .into_iter()
            .map(|(n, p)| (n, p.grad.clone().expect("a gradient")))
            .collect();
        // d(sum of both outputs)/dW = x per output row, once per pass; the bias: 1 per pass
        assert_eq!(
            grads["0.weight"].as_slice().unwrap(),
            &[2.0, 4.0, 6.0, 2.0, 4.0, 6.0]
        );
        assert_eq!(grads["0.bias"].as_slice().unwrap(), &[2.0, 2.0]);
    }
}
