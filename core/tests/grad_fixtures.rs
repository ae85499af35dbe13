//! Gradients agree with PyTorch: one train-mode forward/backward of an MLP, two CNNs, graph models
//! (residual, two inputs, two outputs) and recurrent models (GRU, LSTM) against the
//! float64 PyTorch reference in tests/fixtures/grad (made by make_grad_fixtures.py; see its README).
//! Tolerance per tensor, as the README argues: max|kiln - ref| <= 1e-5 · max|ref| + 1e-6.

use std::collections::BTreeMap;

use kiln_core::nn::LayerSpec;
use kiln_core::train::{Loss, Targets};
use kiln_core::{Model, Tape, Tensor};
use safetensors::{Dtype, SafeTensors};

struct Fixture {
    f32s: BTreeMap<String, Tensor>,
    target: Vec<usize>,
    arch: Vec<LayerSpec>,
    loss: Loss,
}

/// A fixture file's float tensors, int64 tensors (shape, values) and metadata.
type Raw = (
    BTreeMap<String, Tensor>,
    BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    std::collections::HashMap<String, String>,
);

fn read(name: &str) -> Raw {
    let path = format!(
        "{}/../tests/fixtures/grad/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let mut f32s = BTreeMap::new();
    let mut ints = BTreeMap::new();
    for (k, v) in st.tensors() {
        match v.dtype() {
            Dtype::F32 => {
                let data = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                f32s.insert(k, Tensor::from_shape_vec(v.shape().to_vec(), data).unwrap());
            }
            Dtype::I64 => {
                let data = v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                ints.insert(k, (v.shape().to_vec(), data));
            }
            _ => {}
        }
    }
    (f32s, ints, meta)
}

fn load(name: &str) -> Fixture {
    // int64 tensors besides "target" are BatchNorm's num_batches_tracked counters
    let (f32s, ints, meta) = read(name);
    Fixture {
        f32s,
        target: ints["target"].1.iter().map(|&v| v as usize).collect(),
        arch: LayerSpec::list_from_json(&meta["arch"]).unwrap(),
        loss: serde_json::from_str(&meta["loss"]).unwrap(),
    }
}

/// Every tensor of the model after one pass: buffers against `after.<name>` (running statistics),
/// parameters' gradients against `grad.<name>`. Returns how many were compared.
fn compare_tensors(name: &str, model: &Model, f32s: &BTreeMap<String, Tensor>) -> usize {
    let mut checked = 0;
    for (pname, p) in model.net.tensors() {
        if p.is_buffer {
            let want = &f32s[&format!("after.{pname}")];
            assert_close(&format!("{name} running stat {pname}"), p.value(), want);
        } else {
            let g = p
                .grad
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            assert_close(
                &format!("{name} grad {pname}"),
                g,
                &f32s[&format!("grad.{pname}")],
            );
        }
        checked += 1;
    }
    checked
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 1e-5 * scale + 1e-6,
        "{what}: max |kiln - pytorch| = {err:e} (max |ref| = {scale:e})"
    );
}

fn check(name: &str) {
    let fx = load(name);
    let mut model = Model::new(&fx.arch, 0).unwrap();
    let own = model.net.state_dict();
    let weights: BTreeMap<String, Tensor> = own
        .keys()
        .map(|k| (k.clone(), fx.f32s[k].clone()))
        .collect();
    model.net.load_state_dict(&weights).unwrap();

    let mut t = Tape::new(true, 0);
    let x = t.constant(fx.f32s["input"].clone());
    let out = model.net.forward_all(&mut t, &[x]).unwrap()[0];
    assert_close(&format!("{name} output"), t.value(out), &fx.f32s["output"]);
    let loss = fx
        .loss
        .apply(&mut t, out, &Targets::Classes(fx.target.clone()))
        .unwrap();
    assert_close(
        &format!("{name} loss"),
        &t.value(loss)
            .clone()
            .into_shape_with_order(vec![1])
            .unwrap(),
        &fx.f32s["loss"],
    );
    t.backward(loss).unwrap();
    model.net.collect_grads(&mut t);

    let checked = compare_tensors(name, &model, &fx.f32s);
    assert_eq!(checked, own.len());
}

/// A graph model (kiln's `GraphSpec` in the metadata): inputs `input.<name>` (int64 ids become whole
/// numbers in f32, as the fit loop carries them), one target per output, loss summed over outputs.
fn check_graph(name: &str) {
    let (f32s, ints, meta) = read(name);
    let spec: kiln_core::nn::GraphSpec = serde_json::from_str(&meta["graph"]).unwrap();
    let loss: Loss = serde_json::from_str(&meta["loss"]).unwrap();
    let mut model = Model::from_graph_spec(&spec, 0).unwrap();
    let own = model.net.state_dict();
    let weights: BTreeMap<String, Tensor> =
        own.keys().map(|k| (k.clone(), f32s[k].clone())).collect();
    model.net.load_state_dict(&weights).unwrap();
    let graph = model.net.graph().unwrap().clone();
    let mut t = Tape::new(true, 0);
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .map(|i| {
            let key = format!("input.{}", i.name);
            let value = match ints.get(&key) {
                Some((shape, data)) => {
                    Tensor::from_shape_vec(shape.clone(), data.iter().map(|&v| v as f32).collect())
                        .unwrap()
                }
                None => f32s[&key].clone(),
            };
            t.constant(value)
        })
        .collect();
    let outs = model.net.forward_all(&mut t, &inputs).unwrap();
    let mut total = None;
    for (i, &o) in outs.iter().enumerate() {
        assert_close(
            &format!("{name} output {i}"),
            t.value(o),
            &f32s[&format!("output.{i}")],
        );
        let labels = ints[&format!("target.{i}")]
            .1
            .iter()
            .map(|&v| v as usize)
            .collect();
        let l = loss.apply(&mut t, o, &Targets::Classes(labels)).unwrap();
        total = Some(match total {
            Some(acc) => t.add(acc, l).unwrap(),
            None => l,
        });
    }
    let total = total.unwrap();
    assert_close(
        &format!("{name} loss"),
        &t.value(total)
            .clone()
            .into_shape_with_order(vec![1])
            .unwrap(),
        &f32s["loss"],
    );
    t.backward(total).unwrap();
    model.net.collect_grads(&mut t);
    compare_tensors(name, &model, &f32s);
}

#[test]
fn residual_block_with_batchnorm_matches_pytorch() {
    check_graph("resblock");
}

#[test]
fn two_inputs_with_embedding_and_concat_match_pytorch() {
    check_graph("two_inputs");
}

#[test]
fn two_outputs_with_a_summed_loss_match_pytorch() {
    check_graph("two_outputs");
}

/// The initial state comes from a Linear of the input, so that Linear's gradients check ∂h0;
/// the weights load under PyTorch's own state-dict names (`gru.weight_ih_l0_reverse`, …).
#[test]
fn bidirectional_two_layer_gru_with_initial_state_matches_pytorch() {
    check_graph("gru");
}

#[test]
fn bidirectional_two_layer_time_major_lstm_with_initial_states_matches_pytorch() {
    check_graph("lstm");
}

#[test]
fn mlp_with_batchnorm_layernorm_gelu_matches_pytorch() {
    check("mlp");
}

#[test]
fn cnn_with_batchnorm_pooling_matches_pytorch() {
    check("cnn");
}

#[test]
fn strided_grouped_dilated_cnn_with_label_smoothing_matches_pytorch() {
    check("cnn_s2");
}
