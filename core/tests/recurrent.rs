//! Recurrent graph models (nn.GRU, nn.LSTM inside a graph): their checkpoints round-trip, and their
//! ONNX export (the GRU / LSTM operators) runs on tract to the numbers `Model::predict` gives.
//! (The Python suite checks the same kind of files with onnx.checker and onnxruntime.)
#![cfg(feature = "onnx")]

use kiln_core::nn::GraphSpec;
use kiln_core::onnx::export::{export_onnx, ExportOptions};
use kiln_core::onnx::tract::{TensorData, TractSession};
use kiln_core::train::Input;
use kiln_core::{Model, Tensor};
use ndarray::IxDyn;
use rand::{Rng, SeedableRng};

fn random(shape: &[usize], seed: u64, ids: Option<usize>) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_simple_fn(IxDyn(shape), || match ids {
        Some(n) => rng.random_range(0..n) as f32,
        None => rng.random_range(-2.0f32..2.0),
    })
}

/// The fixtures' hand-written graphs (GRU with h0, time-major LSTM with (h0, c0)).
fn fixture_spec(name: &str) -> GraphSpec {
    let path = format!(
        "{}/../tests/fixtures/grad/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    serde_json::from_str(&meta.metadata().as_ref().unwrap()["graph"]).unwrap()
}

/// Token ids → Embedding → one-layer bidirectional GRU; returns the output sequence itself and a
/// head over the final states (h_n read through Item, permuted to batch first).
const CHAR_GRU: &str = r#"{
  "modules": [
    {"name": "emb", "spec": {"type": "Embedding", "num_embeddings": 7, "embedding_dim": 4}},
    {"name": "gru", "spec": {"type": "GRU", "input_size": 4, "hidden_size": 3, "batch_first": true, "bidirectional": true}},
    {"name": "head", "spec": {"type": "Linear", "in_features": 6, "out_features": 2}}
  ],
  "graph": {
    "inputs": [{"name": "ids", "dtype": "int64", "shape": [6]}],
    "nodes": [
      {"op": {"Call": {"module": "emb"}}, "inputs": [0]},
      {"op": {"Call": {"module": "gru"}}, "inputs": [1]},
      {"op": {"Item": {"index": 0}}, "inputs": [2]},
      {"op": {"Item": {"index": 1}}, "inputs": [2]},
      {"op": {"Permute": {"dims": [1, 0, 2]}}, "inputs": [4]},
      {"op": {"Reshape": {"shape": ["batch", 6]}}, "inputs": [5]},
      {"op": {"Call": {"module": "head"}}, "inputs": [6]}
    ],
    "outputs": [3, 7]
  }
}"#;

/// A bias-free bidirectional LSTM without initial states, its sequence as the output.
const PLAIN_LSTM: &str = r#"{
  "modules": [
    {"name": "lstm", "spec": {"type": "LSTM", "input_size": 3, "hidden_size": 4, "bias": false, "batch_first": true, "bidirectional": true}}
  ],
  "graph": {
    "inputs": [{"name": "x", "shape": [5, 3]}],
    "nodes": [
      {"op": {"Call": {"module": "lstm"}}, "inputs": [0]},
      {"op": {"Item": {"index": 0}}, "inputs": [1]}
    ],
    "outputs": [2]
  }
}"#;

fn inputs_of(model: &Model, batch: usize, seed: u64) -> Vec<Tensor> {
    model
        .inputs()
        .iter()
        .map(|i| {
            let mut shape = vec![batch];
            shape.extend(i.shape.as_ref().unwrap());
            random(&shape, seed, (i.dtype == "int64").then_some(7))
        })
        .collect()
}

fn predict(model: &mut Model, xs: &[Tensor]) -> Vec<Tensor> {
    let ins: Vec<Input> = xs.iter().map(|x| x.view()).collect();
    model.predict_multi(&ins, 4).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(spec: &GraphSpec) {
    let mut model = Model::from_graph_spec(spec, 3).unwrap();
    // checkpoint: graph JSON (with the Call's several inputs and the Items) and PyTorch-named weights
    let bytes = model.to_bytes().unwrap();
    let mut back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.net.graph(), model.net.graph());
    let onnx = export_onnx(&model, &ExportOptions::default()).unwrap();
    let sess = TractSession::from_bytes(&onnx).unwrap();
    for batch in [1, 5] {
        let xs = inputs_of(&model, batch, batch as u64);
        let want = predict(&mut model, &xs);
        for (w, b) in want.iter().zip(predict(&mut back, &xs)) {
            assert_eq!(max_diff(w, &b), 0.0, "the checkpoint predicts the same");
        }
        let feeds = model
            .inputs()
            .iter()
            .zip(&xs)
            .map(|(i, x)| {
                if i.dtype == "int64" {
                    TensorData::I64(x.mapv(|v| v as i64))
                } else {
                    TensorData::F32(x.clone())
                }
            })
            .collect();
        let got = sess.run(feeds).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let TensorData::F32(g) = g else {
                panic!("float output")
            };
            let d = max_diff(g, w);
            assert!(d < 1e-5, "batch {batch}: tract vs predict max |diff| {d}");
        }
    }
}

#[test]
fn gru_with_initial_state_exports_and_round_trips() {
    check(&fixture_spec("gru"));
}

#[test]
fn time_major_lstm_with_initial_states_exports_and_round_trips() {
    check(&fixture_spec("lstm"));
}

#[test]
fn char_gru_over_an_embedding_returning_its_sequence_exports() {
    check(&serde_json::from_str(CHAR_GRU).unwrap());
}

#[test]
fn bias_free_lstm_without_states_exports() {
    check(&serde_json::from_str(PLAIN_LSTM).unwrap());
}

#[test]
fn a_recurrent_layer_in_a_sequential_or_an_unpacked_tuple_is_a_clear_error() {
    let spec = kiln_core::nn::LayerSpec::list_from_json(
        r#"[{"type":"GRU","input_size":3,"hidden_size":2,"batch_first":true}]"#,
    )
    .unwrap();
    let e = Model::new(&spec, 0).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("GRU") && e.contains("nn.Module"), "{e}");
    let mut spec: GraphSpec = serde_json::from_str(CHAR_GRU).unwrap();
    spec.graph.as_mut().unwrap().outputs = vec![2];
    let mut model = Model::from_graph_spec(&spec, 0).unwrap();
    let ids = Tensor::zeros(IxDyn(&[2, 6]));
    let e = model.predict(ids.view(), 2).unwrap_err().to_string();
    assert!(
        e.contains("tuple") && e.contains("out, h = self.gru(x)"),
        "{e}"
    );
}
