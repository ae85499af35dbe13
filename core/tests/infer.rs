//! TractSession on small models built here with tract's protobuf types, and on the foreign
//! fixtures in tests/fixtures/foreign (written by onnx.helper, skl2onnx and onnxruntime's
//! quantizer; their expected outputs come from onnxruntime).
#![cfg(feature = "onnx")]

use kiln_core::onnx::tract::{DType, TensorData, TractSession};
use ndarray::{array, ArrayD, IxDyn};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{self, Value};
use tract_onnx::pb::*;

enum D {
    N(i64),
    P(&'static str),
    Free,
}

fn vi(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: match d {
                D::N(n) => Some(dimension::Value::DimValue(*n)),
                D::P(p) => Some(dimension::Value::DimParam(p.to_string())),
                D::Free => None,
            },
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: elem as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn init_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], name: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    meta: &[(&str, &str)],
) -> ModelProto {
    let opset = |domain: &str, version| OperatorSetIdProto {
        domain: domain.into(),
        version,
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![opset("", 17), opset("ai.onnx.ml", 3)],
        producer_name: "kiln-tests".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        metadata_props: meta
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

const W: [f32; 12] = [
    0.5, -1.0, 2.0, 1.5, 0.25, -0.5, -2.0, 1.0, 0.0, 0.75, -0.25, 1.0,
];
const B: [f32; 3] = [0.1, -0.2, 0.3];

/// y = relu(x @ W + b), x: [batch, 4] with a named batch dimension, y: [batch, 3].
fn dense_relu(batch: D, meta: &[(&str, &str)]) -> ModelProto {
    model(
        vec![
            node("MatMul", &["x", "W"], &["xw"], "matmul"),
            node("Add", &["xw", "b"], &["z"], "add"),
            node("Relu", &["z"], &["y"], "relu"),
        ],
        vec![vi("x", DataType::Float, &[batch, D::N(4)])],
        vec![vi("y", DataType::Float, &[D::P("batch"), D::N(3)])],
        vec![init_f32("W", &[4, 3], &W), init_f32("b", &[3], &B)],
        meta,
    )
}

fn dense_relu_reference(x: &ArrayD<f32>) -> ArrayD<f32> {
    let w = ndarray::Array2::from_shape_vec((4, 3), W.to_vec()).unwrap();
    let x2 = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let b = ndarray::Array1::from_vec(B.to_vec());
    (x2.dot(&w) + &b).mapv(|v| v.max(0.0)).into_dyn()
}

fn load(m: ModelProto) -> TractSession {
    TractSession::from_proto(m, None).expect("model loads")
}

fn load_err(m: ModelProto) -> String {
    match TractSession::from_proto(m, None) {
        Ok(_) => panic!("the model should have been refused"),
        Err(e) => e.to_string(),
    }
}

fn input(batch: usize, seed: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[batch, 4]), |ix| {
        ((ix[0] * 4 + ix[1]) as f32 * 0.37 + seed).sin()
    })
}

fn f32_out(out: &TensorData) -> &ArrayD<f32> {
    match out {
        TensorData::F32(a) => a,
        other => panic!("expected float32, got {:?}", other.dtype()),
    }
}

fn assert_close(got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) {
    assert_eq!(got.shape(), want.shape());
    let diff = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= tol,
        "max |diff| {diff} > {tol}\ngot {got}\nwant {want}"
    );
}

#[test]
fn runs_a_dense_model_at_any_batch_size() {
    let sess = load(dense_relu(D::P("batch"), &[]));
    assert_eq!(sess.inputs().len(), 1);
    assert_eq!(sess.inputs()[0].name, "x");
    assert_eq!(sess.inputs()[0].dims, vec![None, Some(4)]);
    assert_eq!(sess.inputs()[0].dtype, DType::F32);
    assert_eq!(sess.outputs()[0].name, "y");
    assert_eq!(sess.outputs()[0].dims, vec![None, Some(3)]);
    assert_eq!(sess.outputs()[0].dtype.name(), "float32");
    assert!(sess.is_optimized());
    // The same session, three batch sizes: the batch dimension is resolved per run.
    for batch in [1, 7, 2] {
        let x = input(batch, batch as f32);
        let out = sess.run(vec![TensorData::F32(x.clone())]).unwrap();
        assert_eq!(out.len(), 1);
        assert_close(f32_out(&out[0]), &dense_relu_reference(&x), 1e-5);
    }
}

#[test]
fn free_batch_dims_written_any_way_become_symbols() {
    // Writers leave the batch dimension empty, as "?", or as free text; all must run.
    for batch in [D::Free, D::P("?"), D::P("batch size"), D::P("N")] {
        let sess = load(dense_relu(batch, &[]));
        assert_eq!(sess.inputs()[0].dims, vec![None, Some(4)]);
        for n in [3, 1] {
            let x = input(n, 0.5);
            let out = sess.run(vec![x.clone().into()]).unwrap();
            assert_close(f32_out(&out[0]), &dense_relu_reference(&x), 1e-5);
        }
    }
}

#[test]
fn metadata_and_labels() {
    let sess = load(dense_relu(
        D::P("batch"),
        &[
            ("kiln.labels", r#"["cat", "dog", "eel"]"#),
            ("kiln.version", "0.1.0"),
        ],
    ));
    assert_eq!(
        sess.labels(),
        Some(vec!["cat".to_string(), "dog".into(), "eel".into()])
    );
    assert_eq!(
        sess.metadata().get("kiln.version").map(String::as_str),
        Some("0.1.0")
    );
    assert_eq!(sess.metadata().len(), 2);
    assert_eq!(load(dense_relu(D::P("batch"), &[])).labels(), None);
    // Not a JSON list of strings: no labels rather than an error.
    assert_eq!(
        load(dense_relu(D::P("batch"), &[("kiln.labels", "{oops")])).labels(),
        None
    );
}

#[test]
fn wrong_inputs_get_kiln_messages() {
    let sess = load(dense_relu(D::P("batch"), &[]));
    let wrong_shape = sess
        .run(vec![ArrayD::<f32>::zeros(IxDyn(&[1, 64])).into()])
        .unwrap_err();
    assert_eq!(
        wrong_shape.to_string(),
        "input \"x\": expected shape [?, 4] (float32), got [1, 64] (float32)"
    );
    let wrong_rank = sess
        .run(vec![ArrayD::<f32>::zeros(IxDyn(&[4])).into()])
        .unwrap_err();
    assert_eq!(
        wrong_rank.to_string(),
        "input \"x\": expected shape [?, 4] (float32), got [4] (float32)"
    );
    let wrong_dtype = sess
        .run(vec![ArrayD::<f64>::zeros(IxDyn(&[2, 4])).into()])
        .unwrap_err();
    assert_eq!(
        wrong_dtype.to_string(),
        "input \"x\": expected shape [?, 4] (float32), got [2, 4] (float64)"
    );
    let count = sess.run(vec![]).unwrap_err();
    assert_eq!(count.to_string(), "the model takes 1 input (\"x\"), got 0");
    // The session stays usable after an error.
    assert!(sess.run(vec![input(2, 0.0).into()]).is_ok());
}

/// s = a + b, a and b: [N, 3] sharing the free dimension N.
fn add_two() -> ModelProto {
    model(
        vec![node("Add", &["a", "b"], &["s"], "add")],
        vec![
            vi("a", DataType::Float, &[D::P("N"), D::N(3)]),
            vi("b", DataType::Float, &[D::P("N"), D::N(3)]),
        ],
        vec![vi("s", DataType::Float, &[D::P("N"), D::N(3)])],
        vec![],
        &[],
    )
}

#[test]
fn run_named_takes_inputs_in_any_order() {
    let sess = load(add_two());
    let a = array![[1.0f32, 2.0, 3.0]].into_dyn();
    let b = array![[10.0f32, 20.0, 30.0]].into_dyn();
    let out = sess.run_named(vec![
        ("b".into(), b.clone().into()),
        ("a".into(), a.clone().into()),
    ]);
    assert_close(f32_out(&out.unwrap()[0]), &(&a + &b), 0.0);

    let unknown = sess
        .run_named(vec![("c".into(), a.clone().into())])
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "the model has no input \"c\" (its inputs: \"a\", \"b\")"
    );
    let missing = sess
        .run_named(vec![("a".into(), a.clone().into())])
        .unwrap_err();
    assert_eq!(missing.to_string(), "missing input \"b\"");
    let twice = sess.run_named(vec![
        ("a".into(), a.clone().into()),
        ("a".into(), a.clone().into()),
    ]);
    assert_eq!(
        twice.unwrap_err().to_string(),
        "input \"a\" was given twice"
    );
}

#[test]
fn inputs_sharing_a_free_dimension_must_agree() {
    let sess = load(add_two());
    let a = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
    let b = ArrayD::<f32>::zeros(IxDyn(&[5, 3]));
    let e = sess.run(vec![a.into(), b.into()]).unwrap_err().to_string();
    assert_eq!(
        e,
        "input \"b\": dimension 0 is 5 but input \"a\" sets the same free dimension to 2"
    );
}

#[test]
fn integer_inputs_and_boolean_outputs() {
    // Gather rows of a table by int64 index, then compare with a threshold.
    let table = init_f32("table", &[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let half = init_f32("half", &[], &[2.5]);
    let m = model(
        vec![
            node("Gather", &["table", "idx"], &["rows"], "gather"),
            node("Greater", &["rows", "half"], &["big"], "gt"),
        ],
        vec![vi("idx", DataType::Int64, &[D::P("N")])],
        vec![
            vi("rows", DataType::Float, &[]),
            vi("big", DataType::Bool, &[]),
        ],
        vec![table, half],
        &[],
    );
    let sess = load(m);
    assert_eq!(sess.inputs()[0].dtype, DType::I64);
    assert_eq!(sess.outputs()[1].dtype, DType::Bool);
    let out = sess.run(vec![array![2i64, 0].into_dyn().into()]).unwrap();
    assert_eq!(
        f32_out(&out[0]),
        &array![[4.0f32, 5.0], [0.0, 1.0]].into_dyn()
    );
    assert_eq!(
        out[1],
        TensorData::Bool(array![[true, true], [false, false]].into_dyn())
    );
    // Negative indices count from the end; out-of-range ones are an error, not a crash.
    let out = sess.run(vec![array![-1i64].into_dyn().into()]).unwrap();
    assert_eq!(f32_out(&out[0]), &array![[4.0f32, 5.0]].into_dyn());
    let e = sess
        .run(vec![array![3i64].into_dyn().into()])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn unknown_operators_are_named() {
    let mut foo = node("Foo", &["x"], &["y"], "mystery");
    foo.domain = "com.example".into();
    let m = model(
        vec![foo],
        vec![vi("x", DataType::Float, &[D::N(2)])],
        vec![vi("y", DataType::Float, &[D::N(2)])],
        vec![],
        &[],
    );
    assert_eq!(
        load_err(m),
        "unsupported ONNX operator \"Foo\" (domain \"com.example\") in node \"mystery\""
    );
    let m = model(
        vec![node("Bar", &["x"], &["y"], "")],
        vec![vi("x", DataType::Float, &[D::N(2)])],
        vec![vi("y", DataType::Float, &[D::N(2)])],
        vec![],
        &[],
    );
    assert_eq!(
        load_err(m),
        "unsupported ONNX operator \"Bar\" (domain \"ai.onnx\", opset 17) in node \"y\""
    );
}

#[test]
fn broken_graphs_are_refused_with_the_place_named() {
    let mut m = dense_relu(D::P("batch"), &[]);
    m.graph.as_mut().unwrap().node[1].input[1] = "bias".into();
    assert_eq!(
        load_err(m),
        "node \"add\" (Add) reads \"bias\", which no node, input or initializer defines"
    );

    let mut m = dense_relu(D::P("batch"), &[]);
    m.graph.as_mut().unwrap().initializer[0]
        .float_data
        .truncate(7);
    assert_eq!(
        load_err(m),
        "initializer \"W\": shape [4, 3] (Float) needs 12 values of data, the file holds 7 values \
         (truncated or corrupt model?)"
    );

    let mut m = dense_relu(D::P("batch"), &[]);
    m.graph.as_mut().unwrap().output[0].name = "nothing".into();
    assert!(load_err(m).contains("graph output \"nothing\" is not produced"));

    let mut m = dense_relu(D::P("batch"), &[]);
    m.graph = None;
    assert!(load_err(m).starts_with("not a valid ONNX model"));
}

#[test]
fn shape_errors_inside_the_graph_name_the_node() {
    // W is [4, 3] but x declares 5 features: tract's analysis fails, kiln names the op.
    let mut m = dense_relu(D::P("batch"), &[]);
    let g = m.graph.as_mut().unwrap();
    g.input[0] = vi("x", DataType::Float, &[D::P("batch"), D::N(5)]);
    let e = load_err(m);
    eprintln!("{e}");
    assert!(e.starts_with("cannot load the ONNX model"), "{e}");
    assert!(e.contains("node \"matmul\" (MatMul): "), "{e}");
}

#[test]
fn bad_bytes_are_not_onnx() {
    for bytes in [&b""[..], b"hello, not a model", &[0xff; 64]] {
        let e = TractSession::from_bytes(bytes)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.starts_with("not a valid ONNX model"), "{e}");
    }
    let e = TractSession::from_path("/nonexistent/model.onnx")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/model.onnx"), "{e}");
}

#[test]
fn scaler_and_zipmap_from_scikit_learn() {
    let mut scaler = node("Scaler", &["x"], &["scaled"], "scaler");
    scaler.domain = "ai.onnx.ml".into();
    scaler.attribute = vec![
        attr_floats("offset", &[1.0, 2.0, 3.0, 4.0]),
        attr_floats("scale", &[0.5, 2.0, -1.0, 1.0]),
    ];
    let mut zip = node("ZipMap", &["scaled"], &["probs"], "zip");
    zip.domain = "ai.onnx.ml".into();
    let m = model(
        vec![scaler, zip],
        vec![vi("x", DataType::Double, &[D::Free, D::N(4)])],
        vec![vi("probs", DataType::Float, &[])],
        vec![],
        &[],
    );
    let sess = load(m);
    assert_eq!(sess.inputs()[0].dtype, DType::F64);
    let out = sess.run(vec![array![[3.0f64, 2.0, 1.0, 0.0], [1.0, 4.0, 5.0, 8.0]]
        .into_dyn()
        .into()]);
    let want = array![[1.0f32, 0.0, 2.0, -4.0], [0.0, 4.0, -2.0, 4.0]].into_dyn();
    assert_close(f32_out(&out.unwrap()[0]), &want, 0.0);
}

#[test]
fn one_session_serves_many_threads() {
    let sess = std::sync::Arc::new(load(dense_relu(D::P("batch"), &[])));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let sess = sess.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let x = input(1 + (t + i) % 5, t as f32 + i as f32);
                    let out = sess.run(vec![x.clone().into()]).unwrap();
                    assert_close(f32_out(&out[0]), &dense_relu_reference(&x), 1e-5);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

// ---- foreign models: tests/fixtures/foreign, expected outputs from onnxruntime ------------------

fn fixtures() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/foreign");
    let mut models: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/foreign exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 10, "fixtures missing in {}", dir.display());
    models
}

fn tensor_from_json(v: &serde_json::Value) -> (String, TensorData) {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"].as_array().unwrap();
    let f = |d: &serde_json::Value| d.as_f64().unwrap();
    let arr = |values: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap();
    let values: Vec<f64> = data.iter().map(f).collect();
    let t = match v["dtype"].as_str().unwrap() {
        "float32" => TensorData::F32(arr(values).mapv(|x| x as f32)),
        "float64" => TensorData::F64(arr(values)),
        "int64" => TensorData::I64(arr(values).mapv(|x| x as i64)),
        "int32" => TensorData::I32(arr(values).mapv(|x| x as i32)),
        "uint8" => TensorData::U8(arr(values).mapv(|x| x as u8)),
        "int8" => TensorData::I8(arr(values).mapv(|x| x as i8)),
        other => panic!("fixture dtype {other}"),
    };
    (v["name"].as_str().unwrap().to_string(), t)
}

/// Compares `outputs` with the fixture's: floats within its tolerance, integers (class labels)
/// exactly. The worst |diff|, or what was wrong.
fn compare_outputs(
    name: &str,
    outputs: &[TensorData],
    record: &serde_json::Value,
) -> Result<f32, String> {
    let tolerance = record["tolerance"].as_f64().unwrap() as f32;
    let mut worst = 0.0f32;
    for (got, want) in outputs.iter().zip(record["outputs"].as_array().unwrap()) {
        let (out_name, want) = tensor_from_json(want);
        if got.shape() != want.shape() {
            return Err(format!(
                "{name}/{out_name}: shape {:?} vs {:?}",
                got.shape(),
                want.shape()
            ));
        }
        let diff = got
            .to_f32()
            .iter()
            .zip(want.to_f32().iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let integral = !matches!(want, TensorData::F32(_) | TensorData::F64(_));
        if diff.is_nan() || diff > if integral { 0.0 } else { tolerance } {
            return Err(format!(
                "{name}/{out_name}: max |diff| {diff:e} > {tolerance:e}"
            ));
        }
        worst = worst.max(diff);
    }
    Ok(worst)
}

/// Runs every fixture as a user would (`InferenceSession`, engine "auto": kiln's engine when it
/// takes the file, tract otherwise) and on tract alone, and compares both with the recorded
/// outputs (onnxruntime's or PyTorch's). tract may fail on a file only where kiln's engine takes
/// it, so no user meets that failure (tract 0.23.9 cannot run PyTorch's 2-layer LSTM exports at
/// a free batch size: "Clashing resolution for expression"). Prints the max |diff| per model
/// (`--nocapture`).
#[test]
fn foreign_models_match_onnxruntime() {
    use kiln_core::onnx::session::{EngineChoice, InferenceSession};
    let mut failures = Vec::new();
    for path in fixtures() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path.with_extension("json")).unwrap())
                .unwrap();
        let inputs: Vec<(String, TensorData)> = record["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(tensor_from_json)
            .collect();
        let user = InferenceSession::from_path(&path, EngineChoice::Auto)
            .and_then(|s| Ok((s.engine(), s.run_named(inputs.clone())?)));
        let user = match user {
            Ok((engine, out)) => compare_outputs(&name, &out, &record).map(|d| (engine, d)),
            Err(e) => Err(format!("{name}: {e}")),
        };
        let tract = TractSession::from_path(&path)
            .and_then(|s| s.run_named(inputs))
            .map_err(|e| format!("{name}: tract: {e}"))
            .and_then(|out| compare_outputs(&name, &out, &record));
        match (&user, &tract) {
            (Err(e), _) => failures.push(e.clone()),
            (Ok((engine, _)), Err(e)) if *engine != "kiln" => failures.push(e.clone()),
            _ => {}
        }
        eprintln!(
            "{name:28} {} ; tract alone: {}",
            match &user {
                Ok((engine, d)) => format!("{engine:5} max |diff| {d:.3e}"),
                Err(e) => e.clone(),
            },
            match &tract {
                Ok(d) => format!("max |diff| {d:.3e}"),
                Err(e) => e.lines().next().unwrap_or("").to_string(),
            }
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Truncated and corrupted files: an error or a model, never a panic. kiln catches tract's
/// panics natively, but wasm32 aborts on them, so kiln's own checks must refuse these first: a
/// message saying tract panicked fails the test.
#[test]
fn damaged_bytes_never_panic() {
    let refuse_cleanly = |bytes: &[u8], what: &str| match TractSession::from_bytes(bytes) {
        Err(e) => {
            let e = e.to_string();
            assert!(!e.is_empty() && !e.contains("panicked"), "{what}: {e}");
        }
        Ok(sess) => {
            // A damaged model that still loads must still fail cleanly (or run) on some input.
            let inputs = sess
                .inputs()
                .iter()
                .map(|i| {
                    let dims: Vec<usize> = i.dims.iter().map(|d| d.unwrap_or(2)).collect();
                    TensorData::F32(ArrayD::zeros(IxDyn(&dims)))
                })
                .collect();
            if let Err(e) = sess.run(inputs) {
                assert!(!e.to_string().contains("panicked"), "{what}: run: {e}");
            }
        }
    };
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let step = (bytes.len() / 150).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            refuse_cleanly(&bytes[..cut], &format!("{name} cut at {cut}"));
        }
        // Deterministic byte flips (xorshift).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for trial in 0..60 {
            let mut damaged = bytes.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let ix = (state % damaged.len() as u64) as usize;
                damaged[ix] ^= (state >> 32) as u8 | 1;
            }
            refuse_cleanly(&damaged, &format!("{name} flip trial {trial}"));
        }
    }
    let bytes = std::fs::read(fixtures()[0].clone()).unwrap();
    let e = TractSession::from_bytes(&bytes[..bytes.len() / 2])
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("not a valid ONNX model"), "{e}");
}
