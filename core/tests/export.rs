//! Every layer exports to ONNX, and both engines — tract and kiln's own (`lite`) — run the export
//! to the same numbers as `Model::predict`. (The Python suite checks the same files against
//! onnxruntime and onnx.checker.)
#![cfg(feature = "onnx")]

use kiln_core::nn::LayerSpec;
use kiln_core::onnx::engine::{KilnSession, Value};
use kiln_core::onnx::export::{export_onnx, ExportOptions};
use kiln_core::onnx::tract::{TensorData, TractSession};
use kiln_core::{Model, Tensor};
use ndarray::IxDyn;
use rand::{Rng, SeedableRng};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-2.0f32..2.0))
}

/// Export `layers_json` for per-sample input `sample`, run batches of 1 and 37 through tract, and compare.
fn round_trip(layers_json: &str, sample: &[usize], opts: ExportOptions) -> Model {
    let layers = LayerSpec::list_from_json(layers_json).unwrap();
    let mut model = Model::new(&layers, 5).unwrap();
    // non-trivial batch-norm statistics and affine parameters
    for (name, p) in model.net.state_dict() {
        if name.contains("running_var") || name.ends_with("weight") && p.ndim() == 1 {
            let v = p.mapv(|_| 0.0) + random(p.shape(), 9).mapv(|v| 1.0 + v.abs());
            let mut d = model.net.state_dict();
            d.insert(name.clone(), v);
            model.net.load_state_dict(&d).unwrap();
        } else if name.contains("running_mean") || name.ends_with("bias") && p.ndim() == 1 {
            let mut d = model.net.state_dict();
            d.insert(name.clone(), random(p.shape(), 10));
            model.net.load_state_dict(&d).unwrap();
        }
    }
    model.set_input_shape(Some(sample.to_vec())).unwrap();
    let bytes = export_onnx(&model, &opts).unwrap();
    let sess = TractSession::from_bytes(&bytes).unwrap_or_else(|e| panic!("{layers_json}: {e}"));
    assert_eq!(sess.inputs()[0].dims[0], None, "batch is symbolic");
    let lite = KilnSession::from_bytes(&bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("{layers_json}: kiln's engine declined it: {}", u.0));
    assert_eq!(lite.inputs()[0].dims[0], None, "batch is symbolic");
    for batch in [1, 37] {
        let mut shape = vec![batch];
        shape.extend(sample);
        let mut x = random(&shape, batch as u64);
        if layers_json.contains("Embedding") {
            x.mapv_inplace(|v| (v.abs() * 2.0).floor());
        }
        let want = model.predict(x.view(), 16).unwrap();
        let int_input = layers_json.starts_with(r#"[{"type":"Embedding""#);
        let lite_input = if int_input {
            Value::I64(x.mapv(|v| v as i64))
        } else {
            Value::F32(x.clone())
        };
        let name = lite.inputs()[0].name.clone();
        let from_lite = lite.run(vec![(name, lite_input)]).unwrap().remove(0);
        let lite_diff = from_lite
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert_eq!(from_lite.shape(), want.shape(), "{layers_json}");
        assert!(
            lite_diff < 1e-5,
            "{layers_json} batch {batch}: kiln's engine max |diff| {lite_diff}"
        );
        let input = if int_input {
            TensorData::I64(x.mapv(|v| v as i64))
        } else {
            TensorData::F32(x)
        };
        let got = match sess.run(vec![input]).unwrap().remove(0) {
            TensorData::F32(a) => a,
            other => panic!("unexpected output {:?}", other.dtype()),
        };
        assert_eq!(got.shape(), want.shape(), "{layers_json}");
        let diff = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < 1e-5,
            "{layers_json} batch {batch}: max |diff| {diff}"
        );
    }
    model
}

#[test]
fn each_layer_alone() {
    let o = ExportOptions::default;
    round_trip(
        r#"[{"type":"Linear","in_features":6,"out_features":4}]"#,
        &[6],
        o(),
    );
    round_trip(
        r#"[{"type":"Linear","in_features":6,"out_features":4,"bias":false}]"#,
        &[6],
        o(),
    );
    round_trip(
        r#"[{"type":"Conv2d","in_channels":2,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]}]"#,
        &[2, 6, 6],
        o(),
    );
    round_trip(
        r#"[{"type":"Conv2d","in_channels":4,"out_channels":6,"kernel_size":[3,2],"stride":[2,1],"padding":[1,0],"dilation":[1,2],"groups":2,"bias":false}]"#,
        &[4, 7, 7],
        o(),
    );
    round_trip(
        r#"[{"type":"Conv1d","in_channels":3,"out_channels":5,"kernel_size":3,"stride":2,"padding":1}]"#,
        &[3, 10],
        o(),
    );
    round_trip(
        r#"[{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]}]"#,
        &[3, 6, 6],
        o(),
    );
    round_trip(
        r#"[{"type":"MaxPool2d","kernel_size":[3,3],"stride":[2,2],"padding":[1,1]}]"#,
        &[3, 7, 7],
        o(),
    );
    round_trip(
        r#"[{"type":"AvgPool2d","kernel_size":[3,3],"stride":[2,2],"padding":[1,1]}]"#,
        &[3, 7, 7],
        o(),
    );
    round_trip(r#"[{"type":"Flatten"}]"#, &[3, 4, 2], o());
    round_trip(r#"[{"type":"Flatten","start_dim":2}]"#, &[3, 4, 2], o());
    for act in [
        r#"{"type":"ReLU"}"#,
        r#"{"type":"LeakyReLU","negative_slope":0.2}"#,
        r#"{"type":"Sigmoid"}"#,
        r#"{"type":"Tanh"}"#,
        r#"{"type":"Softmax","dim":1}"#,
        r#"{"type":"Softmax"}"#,
        r#"{"type":"GELU"}"#,
        r#"{"type":"GELU","approximate":"tanh"}"#,
        r#"{"type":"Dropout","p":0.5}"#,
    ] {
        round_trip(&format!("[{act}]"), &[5], o());
    }
    round_trip(
        r#"[{"type":"GELU"},{"type":"GELU","approximate":"tanh"}]"#,
        &[5],
        ExportOptions { opset: 20, ..o() },
    );
    round_trip(r#"[{"type":"BatchNorm1d","num_features":5}]"#, &[5], o());
    round_trip(
        r#"[{"type":"BatchNorm2d","num_features":3}]"#,
        &[3, 4, 4],
        o(),
    );
    round_trip(
        r#"[{"type":"LayerNorm","normalized_shape":[5]}]"#,
        &[5],
        o(),
    );
    round_trip(
        r#"[{"type":"LayerNorm","normalized_shape":[2,5]}]"#,
        &[2, 5],
        o(),
    );
    round_trip(
        r#"[{"type":"Embedding","num_embeddings":5,"embedding_dim":3},{"type":"Flatten"}]"#,
        &[4],
        o(),
    );
}

#[test]
fn whole_models_and_metadata() {
    let cnn = r#"[{"type":"Conv2d","in_channels":1,"out_channels":8,"kernel_size":[3,3],"padding":[1,1]},{"type":"BatchNorm2d","num_features":8},
        {"type":"ReLU"},{"type":"MaxPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Conv2d","in_channels":8,"out_channels":16,"kernel_size":[3,3],"padding":[1,1]},
        {"type":"GELU"},{"type":"AvgPool2d","kernel_size":[2,2],"stride":[2,2]},{"type":"Flatten"},{"type":"Dropout","p":0.2},
        {"type":"Linear","in_features":64,"out_features":10}]"#;
    let labels: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let opts = ExportOptions {
        labels: Some(labels.clone()),
        input_scale: Some(1.0 / 16.0),
        input_offset: Some(0.0),
        ..Default::default()
    };
    let model = round_trip(cnn, &[1, 8, 8], opts.clone());
    let sess = TractSession::from_bytes(&export_onnx(&model, &opts).unwrap()).unwrap();
    assert_eq!(sess.labels(), Some(labels));
    assert_eq!(sess.metadata()["kiln.input_scale"], "0.0625");
    assert_eq!(sess.inputs()[0].dims, vec![None, Some(1), Some(8), Some(8)]);
    assert_eq!(sess.outputs()[0].dims, vec![None, Some(10)]);
    let mlp = r#"[{"type":"Linear","in_features":8,"out_features":16},{"type":"LayerNorm","normalized_shape":[16]},{"type":"LeakyReLU"},
        {"type":"Sequential","layers":[{"type":"Linear","in_features":16,"out_features":16},{"type":"Tanh"}]},{"type":"Linear","in_features":16,"out_features":3},{"type":"Softmax","dim":-1}]"#;
    round_trip(mlp, &[8], ExportOptions::default());
}

#[test]
fn export_errors() {
    let layers =
        LayerSpec::list_from_json(r#"[{"type":"Linear","in_features":2,"out_features":2}]"#)
            .unwrap();
    let mut m = Model::new(&layers, 0).unwrap();
    assert!(export_onnx(&m, &ExportOptions::default())
        .unwrap_err()
        .to_string()
        .contains("input shape"));
    m.set_input_shape(Some(vec![2])).unwrap();
    assert!(export_onnx(
        &m,
        &ExportOptions {
            opset: 13,
            ..Default::default()
        }
    )
    .is_err());
}

/// A graph model (`GraphSpec` JSON, inputs as (name, per-sample shape, integer ids?)) exports to
/// ONNX that tract and kiln's engine run to `predict`'s numbers, at batch 1 and 5. Returns whether
/// kiln's engine took it (the caller says whether it must).
fn graph_round_trip(spec_json: &str, inputs: &[(&str, &[usize], Option<usize>)]) -> bool {
    let spec: kiln_core::nn::GraphSpec = serde_json::from_str(spec_json).unwrap();
    let mut model = Model::from_graph_spec(&spec, 3).unwrap();
    let bytes = export_onnx(&model, &ExportOptions::default()).unwrap();
    let tract = TractSession::from_bytes(&bytes).unwrap_or_else(|e| panic!("tract: {e}"));
    let kiln = KilnSession::from_bytes(&bytes).unwrap().ok();
    for batch in [1, 5] {
        let xs: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, (_, shape, ids))| {
                let mut full = vec![batch];
                full.extend(*shape);
                let x = random(&full, 40 + i as u64);
                match ids {
                    Some(n) => {
                        x.mapv(|v| ((v + 2.0) / 4.0 * *n as f32).floor().min(*n as f32 - 1.0))
                    }
                    None => x,
                }
            })
            .collect();
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        let want = model.predict_multi(&views, 8).unwrap();
        let feeds = || -> Vec<(String, Value, TensorData)> {
            inputs
                .iter()
                .zip(&xs)
                .map(|((name, _, ids), x)| match ids {
                    Some(_) => (
                        name.to_string(),
                        Value::I64(x.mapv(|v| v as i64)),
                        TensorData::I64(x.mapv(|v| v as i64)),
                    ),
                    None => (
                        name.to_string(),
                        Value::F32(x.clone()),
                        TensorData::F32(x.clone()),
                    ),
                })
                .collect()
        };
        let got = tract
            .run_named(feeds().into_iter().map(|(n, _, t)| (n, t)).collect())
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            let TensorData::F32(g) = g else {
                panic!("float output")
            };
            assert_eq!(g.shape(), w.shape());
            let d = g
                .iter()
                .zip(w.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-5, "tract vs predict: {d}");
        }
        if let Some(k) = &kiln {
            let got = k
                .run(feeds().into_iter().map(|(n, v, _)| (n, v)).collect())
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.shape(), w.shape());
                let d = g
                    .iter()
                    .zip(w.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(d < 1e-5, "kiln's engine vs predict: {d}");
            }
        }
    }
    kiln.is_some()
}

#[test]
fn residual_and_two_input_graphs_export_and_run_on_both_engines() {
    let resnet = r#"{"modules":[{"name":"stem","spec":{"type":"Conv2d","in_channels":2,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]}},{"name":"block.bn","spec":{"type":"BatchNorm2d","num_features":4}},{"name":"block.conv","spec":{"type":"Conv2d","in_channels":4,"out_channels":4,"kernel_size":[3,3],"padding":[1,1]}},{"name":"head","spec":{"type":"Linear","in_features":4,"out_features":3}}],"params":[{"name":"gain","shape":[4,1,1]}],"graph":{"inputs":[{"name":"image","shape":[2,6,6]}],"nodes":[{"op":{"Call":{"module":"stem"}},"inputs":[0]},{"op":"Relu","inputs":[1]},{"op":{"Call":{"module":"block.conv"}},"inputs":[2]},{"op":{"Call":{"module":"block.bn"}},"inputs":[3]},{"op":"Add","inputs":[2,4]},{"op":{"Param":{"name":"gain"}},"inputs":[]},{"op":"Mul","inputs":[5,6]},{"op":{"Reduce":{"kind":"mean","dims":[2,3],"keepdim":false}},"inputs":[7]},{"op":{"Call":{"module":"head"}},"inputs":[8]},{"op":{"Softmax":{"dim":-1}},"inputs":[9]}],"outputs":[9,10]}}"#;
    assert!(
        graph_round_trip(resnet, &[("image", &[2, 6, 6], None)]),
        "kiln's engine runs a residual block with global pooling"
    );
    let two = r#"{"modules":[{"name":"emb","spec":{"type":"Embedding","num_embeddings":7,"embedding_dim":3}},{"name":"num","spec":{"type":"Linear","in_features":4,"out_features":5}},{"name":"out","spec":{"type":"Linear","in_features":8,"out_features":2}}],"graph":{"inputs":[{"name":"numeric","shape":[4]},{"name":"category","dtype":"int64","shape":[]}],"nodes":[{"op":{"Call":{"module":"num"}},"inputs":[0]},{"op":{"Scalar":{"kind":"rsub","value":1.0}},"inputs":[2]},{"op":{"Call":{"module":"emb"}},"inputs":[1]},{"op":{"Concat":{"dim":1}},"inputs":[3,4]},{"op":{"Call":{"module":"out"}},"inputs":[5]},{"op":{"Reshape":{"shape":["batch",2,1]}},"inputs":[6]},{"op":{"Flatten":{"start_dim":1,"end_dim":-1}},"inputs":[7]},{"op":{"Param":{"name":"num.weight"}},"inputs":[]},{"op":"Linear","inputs":[0,9]},{"op":{"Permute":{"dims":[1,0]}},"inputs":[9]},{"op":"MatMul","inputs":[0,11]}],"outputs":[8,12]}}"#;
    assert!(
        graph_round_trip(two, &[("numeric", &[4], None), ("category", &[], Some(7))]),
        "kiln's engine runs two inputs with an embedding, a concat and a tied weight"
    );
}

#[test]
fn slices_and_reductions_export_and_run_on_both_engines() {
    let g = r#"{"modules":[{"name":"fc","spec":{"type":"Linear","in_features":3,"out_features":2}}],"graph":{"inputs":[{"name":"x","shape":[4,3]}],"nodes":[{"op":{"Slice":{"dim":1,"start":1,"end":3}},"inputs":[0]},{"op":{"Reduce":{"kind":"max","dims":[1],"keepdim":false}},"inputs":[1]},{"op":{"Reduce":{"kind":"sum","dims":[-1],"keepdim":true}},"inputs":[0]},{"op":{"Call":{"module":"fc"}},"inputs":[2]},{"op":{"Gelu":{"approximate":"tanh"}},"inputs":[4]},{"op":{"LogSoftmax":{"dim":1}},"inputs":[5]},{"op":{"Reduce":{"kind":"mean","dims":[1,2],"keepdim":false}},"inputs":[3]}],"outputs":[6,7]}}"#;
    assert!(
        graph_round_trip(g, &[("x", &[4, 3], None)]),
        "kiln's engine runs slices and max/sum/mean reductions"
    );
}
