//! kiln's engine against tract on the graphs graph models export and PyTorch's exporters write:
//! residual adds, ReduceMean (axes as attribute before opset 18, as input from 18), the
//! `Shape → Gather → Unsqueeze → Concat → Reshape` flatten with a free batch, Slice with negative
//! and clamped bounds, Squeeze/Unsqueeze in both opset forms, Pow, Sqrt, Reciprocal, Expand.
//! Graphs are built here with kiln's protobuf types; both engines run the same bytes, and
//! `InferenceSession` (the choice between them) is checked on the same graphs.
#![cfg(feature = "onnx")]

use kiln_core::graph::{Dim, Op as GraphOp};
use kiln_core::onnx::engine::{KilnSession, Value};
use kiln_core::onnx::pb::attribute_proto::AttributeType;
use kiln_core::onnx::pb::tensor_proto::DataType;
use kiln_core::onnx::pb::tensor_shape_proto::{dimension, Dimension};
use kiln_core::onnx::pb::type_proto;
use kiln_core::onnx::pb::*;
use kiln_core::onnx::session::{EngineChoice, InferenceSession};
use kiln_core::onnx::tract::{DType, TensorData, TractSession};
use ndarray::{ArrayD, Axis, IxDyn};
use prost::Message;

fn vi(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Some(n) => dimension::Value::DimValue(*n),
                None => dimension::Value::DimParam("batch".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32s(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let n: i64 = dims.iter().product();
    // Small deterministic weights in [-0.5, 0.5).
    let data = (0..n as u32)
        .map(|i| {
            ((i.wrapping_mul(2654435761).wrapping_add(seed * 40503)) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

fn i64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn scalar_i64(name: &str, v: i64) -> TensorProto {
    TensorProto {
        dims: vec![],
        ..i64s(name, &[v])
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn tensor_attr(t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: "value".into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "pytorch-like".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The largest absolute difference between two runs of numbers.
fn max_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f32 {
    a.zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max)
}

fn input(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(shape),
        (0..n)
            .map(|i| ((i * 37 + seed * 11) % 23) as f32 / 11.0 - 1.0)
            .collect(),
    )
    .unwrap()
}

/// Runs `bytes` on both engines with the one float input `x`; returns kiln's outputs after
/// checking they match tract's to 1e-5 (relative to the largest output, when that is past 1).
fn both(bytes: &[u8], x: &ArrayD<f32>) -> Vec<ArrayD<f32>> {
    let kiln = KilnSession::from_bytes(bytes)
        .unwrap()
        .unwrap_or_else(|u| panic!("kiln's engine declined: {}", u.0));
    let tract = TractSession::from_bytes(bytes).unwrap();
    let name = kiln.inputs()[0].name.clone();
    let got = kiln.run(vec![(name, Value::F32(x.clone()))]).unwrap();
    let want = tract.run(vec![TensorData::F32(x.clone())]).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let TensorData::F32(w) = w else {
            panic!("tract gave {}", w.dtype())
        };
        assert_eq!(g.shape(), w.shape());
        let diff = max_diff(g.iter(), w.iter());
        // relative past 1: the fine-tuned model's logits reach ~50, where 1e-5 is a few float32
        // ulps and the two engines sum in different orders
        let top = w.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        assert!(
            diff <= 1e-5 * top,
            "max |kiln - tract| = {diff} (largest output {top})"
        );
    }
    got
}

/// What PyTorch's legacy exporter (`dynamo=False`, eval mode, BatchNorm folded into Conv) writes
/// for a small ResNet: stem conv, one residual block, global average pooling as `ReduceMean`
/// (opset 17: axes attribute; 18: axes input) or as `GlobalAveragePool` followed by
/// `x.view(x.size(0), -1)`'s Shape/Gather/Unsqueeze/Concat/Reshape chain, then the Linear head.
fn pytorch_resnet(opset: i64, pool: &str) -> Vec<u8> {
    pytorch_resnet_of(opset, pool, 8)
}

/// [`pytorch_resnet`] on `side × side` images.
fn pytorch_resnet_of(opset: i64, pool: &str, side: i64) -> Vec<u8> {
    let conv = |x: &str, w: &str, b: &str, y: &str| {
        node(
            "Conv",
            &[x, w, b],
            y,
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
                ints_attr("strides", &[1, 1]),
                ints_attr("dilations", &[1, 1]),
                int_attr("group", 1),
            ],
        )
    };
    let mut nodes = vec![
        conv("x", "stem.w", "stem.b", "s"),
        node("Relu", &["s"], "s1", vec![]),
        conv("s1", "b.conv1.w", "b.conv1.b", "c1"),
        node("Relu", &["c1"], "r1", vec![]),
        conv("r1", "b.conv2.w", "b.conv2.b", "c2"),
        node("Add", &["c2", "s1"], "res", vec![]),
        node("Relu", &["res"], "r2", vec![]),
    ];
    let mut inits = vec![
        f32s("stem.w", &[8, 3, 3, 3], 1),
        f32s("stem.b", &[8], 2),
        f32s("b.conv1.w", &[8, 8, 3, 3], 3),
        f32s("b.conv1.b", &[8], 4),
        f32s("b.conv2.w", &[8, 8, 3, 3], 5),
        f32s("b.conv2.b", &[8], 6),
        f32s("fc.w", &[10, 8], 7),
        f32s("fc.b", &[10], 8),
    ];
    match pool {
        "mean" if opset < 18 => nodes.push(node(
            "ReduceMean",
            &["r2"],
            "pooled",
            vec![ints_attr("axes", &[-2, -1]), int_attr("keepdims", 0)],
        )),
        "mean" => {
            nodes.push(node(
                "Constant",
                &[],
                "axes",
                vec![tensor_attr(i64s("", &[2, 3]))],
            ));
            nodes.push(node(
                "ReduceMean",
                &["r2", "axes"],
                "pooled",
                vec![int_attr("keepdims", 0)],
            ));
        }
        _ => {
            nodes.push(node("GlobalAveragePool", &["r2"], "gap", vec![]));
            nodes.push(node("Shape", &["gap"], "shape", vec![]));
            nodes.push(node(
                "Constant",
                &[],
                "zero",
                vec![tensor_attr(scalar_i64("", 0))],
            ));
            nodes.push(node(
                "Gather",
                &["shape", "zero"],
                "n",
                vec![int_attr("axis", 0)],
            ));
            if opset < 13 {
                nodes.push(node(
                    "Unsqueeze",
                    &["n"],
                    "n1",
                    vec![ints_attr("axes", &[0])],
                ));
            } else {
                inits.push(i64s("unsq_axes", &[0]));
                nodes.push(node("Unsqueeze", &["n", "unsq_axes"], "n1", vec![]));
            }
            inits.push(i64s("minus_one", &[-1]));
            nodes.push(node(
                "Concat",
                &["n1", "minus_one"],
                "target",
                vec![int_attr("axis", 0)],
            ));
            nodes.push(node("Reshape", &["gap", "target"], "pooled", vec![]));
        }
    }
    nodes.push(node(
        "Gemm",
        &["pooled", "fc.w", "fc.b"],
        "logits",
        vec![int_attr("transB", 1)],
    ));
    let f = DataType::Float;
    model(
        opset,
        nodes,
        vec![vi("x", f, &[None, Some(3), Some(side), Some(side)])],
        vec![vi("logits", f, &[None, Some(10)])],
        inits,
    )
}

#[test]
fn a_pytorch_exported_resnet_runs_on_kiln_engine_as_on_tract() {
    for (opset, pool) in [
        (17, "mean"),
        (18, "mean"),
        (17, "flatten-chain"),
        (11, "flatten-chain"),
    ] {
        let bytes = pytorch_resnet(opset, pool);
        for batch in [1, 3] {
            let x = input(&[batch, 3, 8, 8], batch);
            let out = both(&bytes, &x);
            assert_eq!(out[0].shape(), &[batch, 10], "opset {opset} {pool}");
        }
        let sess = InferenceSession::from_bytes(&bytes, EngineChoice::Auto).unwrap();
        assert_eq!((sess.engine(), sess.declined()), ("kiln", None));
        // Imported into kiln's graph: the flatten chain's Shape/Gather/Unsqueeze/Concat are
        // worked out at import, leaving one Reshape to [batch, 8]; the convolutions
        // keep their weights by the file's names.
        let kiln = KilnSession::from_bytes(&bytes).unwrap().ok().unwrap();
        let (graph, weights) = kiln.graph();
        if pool == "flatten-chain" {
            let reshapes: Vec<&GraphOp> = graph
                .nodes
                .iter()
                .map(|n| &n.op)
                .filter(|op| matches!(op, GraphOp::Reshape { .. }))
                .collect();
            assert_eq!(
                reshapes,
                [&GraphOp::Reshape {
                    shape: vec![Dim::Batch, Dim::Size(8)]
                }],
                "opset {opset}"
            );
        }
        for n in &graph.nodes {
            if let GraphOp::Param { name } = &n.op {
                assert!(weights.contains_key(name), "{name}");
            }
        }
    }
    // The two pooling forms are the same function of the weights.
    let x = input(&[2, 3, 8, 8], 5);
    let a = both(&pytorch_resnet(17, "mean"), &x);
    let b = both(&pytorch_resnet(13, "flatten-chain"), &x);
    let diff = max_diff(a[0].iter(), b[0].iter());
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn a_batch_of_large_images_runs_in_chunks_that_give_what_each_image_gives_alone() {
    // 8 channels of 74 × 74 (43,808 values per sample): kiln's engine runs a batch of these in
    // chunks of 2, after a first run that sizes the chunk on one sample alone
    let bytes = pytorch_resnet_of(17, "flatten-chain", 74);
    let kiln = KilnSession::from_bytes(&bytes).unwrap().ok().unwrap();
    let feed = |x: &ArrayD<f32>| vec![("x".to_string(), Value::F32(x.clone()))];
    let run = |x: &ArrayD<f32>| kiln.run(feed(x)).unwrap().remove(0);
    let x = input(&[5, 3, 74, 74], 7);
    let alone: Vec<ArrayD<f32>> = (0..5)
        .map(|i| run(&x.slice_axis(Axis(0), (i..i + 1).into()).to_owned()))
        .collect();
    for round in 0..2 {
        let whole = run(&x);
        assert_eq!(whole.shape(), &[5, 10]);
        for (i, a) in alone.iter().enumerate() {
            let row = whole.slice_axis(Axis(0), (i..i + 1).into());
            assert_eq!(row, a.view(), "run {round}, sample {i}");
        }
    }
    // the profile's steps carry the first chunk's shapes
    let (_, steps) = kiln.profile(feed(&x), &|| 0.0, true).unwrap();
    assert!(
        steps.iter().any(|(s, _)| s.ends_with("→ [2, 10]")),
        "{steps:?}"
    );
    // and the whole batch matches tract
    both(&bytes, &x);
    // a batch of small images (8 × 8: 512 values per sample) runs whole once sized (the first
    // run sizes it on one sample alone)
    let small = pytorch_resnet(17, "flatten-chain");
    let kiln = KilnSession::from_bytes(&small).unwrap().ok().unwrap();
    let x = input(&[6, 3, 8, 8], 3);
    for first in ["→ [1, 10]", "→ [6, 10]"] {
        let (_, steps) = kiln.profile(feed(&x), &|| 0.0, true).unwrap();
        assert!(steps.iter().any(|(s, _)| s.ends_with(first)), "{steps:?}");
    }
}

/// x: [batch, 4, 6] through the shape operators in one graph, against tract.
fn shape_ops_graph(opset: i64) -> Vec<u8> {
    let f = DataType::Float;
    let mut inits = vec![
        f32s("w", &[1, 1, 6], 9),
        TensorProto {
            name: "two".into(),
            dims: vec![],
            data_type: DataType::Float as i32,
            float_data: vec![2.0],
            ..Default::default()
        },
    ];
    let mut nodes = vec![];
    let mut slice = |nodes: &mut Vec<NodeProto>,
                     x: &str,
                     y: &str,
                     s: &[i64],
                     e: &[i64],
                     a: &[i64],
                     st: &[i64]| {
        let tag = y.to_string();
        inits.push(i64s(&format!("{tag}.s"), s));
        inits.push(i64s(&format!("{tag}.e"), e));
        inits.push(i64s(&format!("{tag}.a"), a));
        inits.push(i64s(&format!("{tag}.st"), st));
        let names = [
            x.to_string(),
            format!("{tag}.s"),
            format!("{tag}.e"),
            format!("{tag}.a"),
            format!("{tag}.st"),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        nodes.push(node("Slice", &refs, y, vec![]));
    };
    // a = x[:, 1:-1, ::-2]: [batch, 2, 3]; b = x[:, -100:100, 3:] (clamped): [batch, 4, 3]
    slice(
        &mut nodes,
        "x",
        "a",
        &[1, i64::MAX],
        &[-1, i64::MIN],
        &[1, 2],
        &[1, -2],
    );
    slice(
        &mut nodes,
        "x",
        "b",
        &[-100, 3],
        &[100, 100],
        &[1, -1],
        &[1, 1],
    );
    let keep = || int_attr("keepdims", 1);
    if opset < 13 {
        nodes.push(node(
            "ReduceSum",
            &["b"],
            "bs",
            vec![ints_attr("axes", &[-2]), keep()],
        ));
    } else {
        inits.push(i64s("b_axes", &[-2]));
        nodes.push(node("ReduceSum", &["b", "b_axes"], "bs", vec![keep()]));
    }
    nodes.push(node("Mul", &["a", "w3"], "aw", vec![]));
    inits.push(f32s("w3", &[3], 10));
    if opset < 18 {
        nodes.push(node(
            "ReduceMax",
            &["aw"],
            "am",
            vec![ints_attr("axes", &[1]), keep()],
        ));
    } else {
        inits.push(i64s("am_axes", &[1]));
        nodes.push(node("ReduceMax", &["aw", "am_axes"], "am", vec![keep()]));
    }
    nodes.push(node(
        "Concat",
        &["aw", "am", "bs"],
        "cat",
        vec![int_attr("axis", 1)],
    ));
    // cat: [batch, 4, 3]; square, sqrt of (1 + ·), reciprocal
    nodes.push(node("Pow", &["cat", "two"], "sq", vec![]));
    nodes.push(node("Sqrt", &["sq"], "abs", vec![]));
    nodes.push(node("Reciprocal", &["w_pos"], "inv", vec![]));
    inits.push(TensorProto {
        name: "w_pos".into(),
        dims: vec![3],
        data_type: DataType::Float as i32,
        float_data: vec![0.5, 2.0, 4.0],
        ..Default::default()
    });
    nodes.push(node("Mul", &["abs", "inv"], "scaled", vec![]));
    if opset < 13 {
        nodes.push(node(
            "Unsqueeze",
            &["scaled"],
            "u",
            vec![ints_attr("axes", &[1, -1])],
        ));
        nodes.push(node(
            "Squeeze",
            &["u"],
            "sqz",
            vec![ints_attr("axes", &[-1])],
        ));
    } else {
        inits.push(i64s("u_axes", &[1, -1]));
        inits.push(i64s("s_axes", &[-1]));
        nodes.push(node("Unsqueeze", &["scaled", "u_axes"], "u", vec![]));
        nodes.push(node("Squeeze", &["u", "s_axes"], "sqz", vec![]));
    }
    // sqz: [batch, 1, 4, 3]; Expand over a new leading axis and ReduceMean it back.
    inits.push(i64s("e_shape", &[2, 1, 1, 1, 1]));
    nodes.push(node("Expand", &["sqz", "e_shape"], "ex", vec![]));
    if opset < 18 {
        nodes.push(node(
            "ReduceMean",
            &["ex"],
            "y",
            vec![ints_attr("axes", &[0, 2]), int_attr("keepdims", 0)],
        ));
    } else {
        inits.push(i64s("m_axes", &[0, 2]));
        nodes.push(node(
            "ReduceMean",
            &["ex", "m_axes"],
            "y",
            vec![int_attr("keepdims", 0)],
        ));
    }
    model(
        opset,
        nodes,
        vec![vi("x", f, &[None, Some(4), Some(6)])],
        vec![vi("y", f, &[None, Some(4), Some(3)])],
        inits,
    )
}

#[test]
fn shape_operators_agree_with_tract_in_both_opset_forms() {
    for opset in [11, 13, 18] {
        let bytes = shape_ops_graph(opset);
        for batch in [1, 2] {
            let out = both(&bytes, &input(&[batch, 4, 6], opset as usize));
            assert_eq!(out[0].shape(), &[batch, 4, 3]);
        }
    }
}

#[test]
fn int64_values_where_floats_are_computed_decline_at_load() {
    // An int64 input (ids, known only at run time) into Add: kiln's engine computes on float32
    // only, so it says so when loading instead of failing on the first run.
    let f = DataType::Float;
    let bytes = model(
        17,
        vec![node("Add", &["ids", "ids"], "y", vec![])],
        vec![vi("ids", DataType::Int64, &[None, Some(3)])],
        vec![vi("y", f, &[None, Some(3)])],
        vec![],
    );
    let why = KilnSession::from_bytes(&bytes)
        .unwrap()
        .err()
        .expect("declined")
        .0;
    assert!(why.contains("on int64 values"), "{why}");
    // Shape arithmetic is evaluated at import; a graph whose output is such an int64 value (here
    // declared float32) is declined for that, naming the output.
    let bytes = model(
        17,
        vec![
            node("Shape", &["x"], "s", vec![]),
            node("Add", &["s", "s"], "y", vec![]),
        ],
        vec![vi("x", f, &[None, Some(3)])],
        vec![vi("y", f, &[Some(2)])],
        vec![],
    );
    let why = KilnSession::from_bytes(&bytes)
        .unwrap()
        .err()
        .expect("declined")
        .0;
    assert!(why.contains("output \"y\" is not float32"), "{why}");
    // Pow with a tensor exponent is declined too (kiln-core's pow takes a constant).
    let bytes = model(
        17,
        vec![node("Pow", &["x", "x"], "y", vec![])],
        vec![vi("x", f, &[None, Some(3)])],
        vec![vi("y", f, &[None, Some(3)])],
        vec![],
    );
    let why = KilnSession::from_bytes(&bytes)
        .unwrap()
        .err()
        .expect("declined")
        .0;
    assert!(why.contains("Pow"), "{why}");
    let sess = InferenceSession::from_bytes(&bytes, EngineChoice::Auto).unwrap();
    assert_eq!(sess.engine(), "tract");
    assert!(sess.declined().is_some_and(|d| d.contains("Pow")));
}

#[test]
fn inference_session_picks_kiln_first_and_says_why_it_fell_back() {
    let f = DataType::Float;
    let resnet = pytorch_resnet(17, "mean");
    // A graph kiln's engine declines: Sin is not among its operators.
    let sin = model(
        17,
        vec![node("Sin", &["x"], "y", vec![])],
        vec![vi("x", f, &[None, Some(3)])],
        vec![vi("y", f, &[None, Some(3)])],
        vec![],
    );
    let auto = InferenceSession::from_bytes(&sin, EngineChoice::Auto).unwrap();
    assert_eq!(auto.engine(), "tract");
    assert_eq!(auto.declined(), Some("operator Sin"));
    let e = InferenceSession::from_bytes(&sin, EngineChoice::Kiln)
        .err()
        .expect("kiln declines")
        .to_string();
    assert!(e.contains("operator Sin") && e.contains("\"tract\""), "{e}");
    let forced = InferenceSession::from_bytes(&resnet, EngineChoice::Tract).unwrap();
    assert_eq!((forced.engine(), forced.declined()), ("tract", None));
    let kiln = InferenceSession::from_bytes(&resnet, EngineChoice::Kiln).unwrap();
    // One description of inputs and outputs, whichever engine runs the model.
    assert_eq!(kiln.inputs(), forced.inputs());
    assert_eq!(kiln.outputs(), forced.outputs());
    assert_eq!(kiln.inputs()[0].dtype, DType::F32);
    // The same outputs, and the same messages for wrong inputs.
    let x = input(&[2, 3, 8, 8], 1);
    let (a, b) = (
        kiln.run(vec![TensorData::F32(x.clone())]).unwrap(),
        forced.run(vec![TensorData::F32(x)]).unwrap(),
    );
    let (TensorData::F32(a), TensorData::F32(b)) = (&a[0], &b[0]) else {
        panic!("float outputs")
    };
    assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() <= 1e-5));
    for bad in [
        vec![],
        vec![TensorData::F32(input(&[2, 3, 4, 4], 0))],
        vec![TensorData::I64(ArrayD::zeros(IxDyn(&[2, 3, 8, 8])))],
    ] {
        let ek = kiln.run(bad.clone()).unwrap_err().to_string();
        let et = forced.run(bad).unwrap_err().to_string();
        assert_eq!(ek, et);
    }
    // Bytes that are no model: tract's message, as before there were two engines.
    let e = InferenceSession::from_bytes(b"", EngineChoice::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("not a valid ONNX model: the data is empty"),
        "{e}"
    );
}

#[test]
fn a_pytorch_export_becomes_a_kiln_model_that_trains_and_exports_again() {
    use kiln_core::onnx::export::{export_onnx, ExportOptions};
    use kiln_core::optim::OptimizerSpec;
    use kiln_core::train::{FitConfig, Hooks, Loss, Targets};
    let bytes = pytorch_resnet(17, "flatten-chain");
    let x = input(&[12, 3, 8, 8], 3);
    let session = both(&bytes, &x);
    let mut model = KilnSession::model_from_bytes(&bytes, 0).unwrap();
    // the same function: the file's weights by the file's names
    let ours = model.predict(x.view(), 5).unwrap();
    let diff = max_diff(ours.iter(), session[0].iter());
    assert!(diff < 1e-5, "{diff}");
    assert!(model
        .net
        .tensors()
        .iter()
        .any(|(n, p)| n == "b.conv1.w" && p.trainable()));
    // it trains: the loss on a fixed batch goes down
    model
        .compile(
            &OptimizerSpec::Adam {
                lr: 3e-2,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
                amsgrad: false,
            },
            Loss::from_name("cross_entropy").unwrap(),
            vec![],
        )
        .unwrap();
    let y = Targets::Classes((0..12).map(|i| i % 10).collect());
    let cfg = FitConfig {
        epochs: 60,
        batch_size: 12,
        ..FitConfig::default()
    };
    let h = model
        .fit(x.view(), &y, None, &cfg, &mut Hooks::default())
        .unwrap();
    let loss = &h.history["loss"];
    assert!(loss[loss.len() - 1] < 0.5 * loss[0], "{loss:?}");
    // and it goes back out: kiln's export of the fine-tuned model runs on both engines as predict
    let out = export_onnx(&model, &ExportOptions::default()).unwrap();
    let tuned = model.predict(x.view(), 12).unwrap();
    let back = both(&out, &x);
    let diff = max_diff(tuned.iter(), back[0].iter());
    assert!(diff < 1e-4, "{diff}");
    // a file kiln's graph cannot express says why
    let bad = model_bytes_with_op("Sin");
    let err = KilnSession::model_from_bytes(&bad, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("kiln cannot train this ONNX file (operator Sin)"),
        "{err}"
    );
}

fn model_bytes_with_op(op: &str) -> Vec<u8> {
    let f = DataType::Float;
    model(
        17,
        vec![node(op, &["x"], "y", vec![])],
        vec![vi("x", f, &[None, Some(3)])],
        vec![vi("y", f, &[None, Some(3)])],
        vec![],
    )
}

#[test]
fn pytorch_and_kiln_grus_run_on_kiln_engine() {
    // PyTorch's exporter: a 2-layer bidirectional char GRU with zero initial states sliced out of
    // one ConstantOfShape over the batch; expected outputs from PyTorch (tests/fixtures/foreign).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/foreign");
    let bytes = std::fs::read(dir.join("torch_gru.onnx")).unwrap();
    let kiln = match KilnSession::from_bytes(&bytes).unwrap() {
        Ok(s) => s,
        Err(why) => panic!("declined: {}", why.0),
    };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("torch_gru.json")).unwrap())
            .unwrap();
    let input = &expected["inputs"][0];
    let ids: Vec<i64> = input["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let shape: Vec<usize> = input["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let feed = Value::I64(ArrayD::from_shape_vec(IxDyn(&shape), ids).unwrap());
    let outs = kiln.run(vec![("ids".into(), feed)]).unwrap();
    for (k, want) in expected["outputs"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = want["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = max_diff(outs[k].iter(), want.iter());
        assert!(diff < 1e-5, "output {k}: {diff}");
    }
    let sess = InferenceSession::from_bytes(&bytes, EngineChoice::Auto).unwrap();
    assert_eq!((sess.engine(), sess.declined()), ("kiln", None));
    // as a kiln model it trains and re-exports (the GRU becomes kiln's nn.GRU layer)
    let model = KilnSession::model_from_bytes(&bytes, 0).unwrap();
    let names: Vec<String> = model.net.tensors().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n.ends_with(".weight_ih_l0_reverse")),
        "{names:?}"
    );
}

/// The benchmark's ResNet shape at a small size, as kiln's exporter writes it: convolutions
/// without bias, each followed by BatchNormalization; an identity block and a stride-2 block with
/// a 1×1 projection shortcut, the residual `Add` then `Relu`; plus a grouped convolution with a
/// bias whose output is also read by a second node (so nothing may be fused past it).
fn batchnorm_resnet() -> Vec<u8> {
    let conv = |x: &str, w: &str, y: &str, k: i64, stride: i64, group: i64, bias: Option<&str>| {
        let mut ins = vec![x, w];
        ins.extend(bias);
        node(
            "Conv",
            &ins,
            y,
            vec![
                ints_attr("kernel_shape", &[k, k]),
                ints_attr("pads", &[k / 2; 4]),
                ints_attr("strides", &[stride, stride]),
                int_attr("group", group),
            ],
        )
    };
    let mut inits = Vec::new();
    let mut bn = |x: &str, y: &str, c: i64, seed: u32| {
        let names = ["g", "b", "mean", "var"].map(|s| format!("{y}.{s}"));
        for (i, n) in names.iter().enumerate() {
            let mut t = f32s(n, &[c], seed * 7 + i as u32);
            if i == 3 {
                t.float_data.iter_mut().for_each(|v| *v += 1.0); // a variance is positive
            }
            inits.push(t);
        }
        let ins: Vec<&str> = std::iter::once(x)
            .chain(names.iter().map(|s| s.as_str()))
            .collect();
        node("BatchNormalization", &ins, y, vec![])
    };
    let nodes = vec![
        conv("x", "stem.w", "c0", 3, 1, 1, None),
        bn("c0", "n0", 8, 1),
        node("Relu", &["n0"], "s", vec![]),
        conv("s", "b1.w1", "c1", 3, 1, 1, None),
        bn("c1", "n1", 8, 2),
        node("Relu", &["n1"], "r1", vec![]),
        conv("r1", "b1.w2", "c2", 3, 1, 1, None),
        bn("c2", "n2", 8, 3),
        node("Add", &["n2", "s"], "a1", vec![]),
        node("Relu", &["a1"], "b1", vec![]),
        conv("b1", "b2.w1", "c3", 3, 2, 1, None),
        bn("c3", "n3", 16, 4),
        node("Relu", &["n3"], "r3", vec![]),
        conv("r3", "b2.w2", "c4", 3, 1, 1, None),
        bn("c4", "n4", 16, 5),
        conv("b1", "b2.proj", "c5", 1, 2, 1, None),
        bn("c5", "n5", 16, 6),
        node("Add", &["n4", "n5"], "a2", vec![]),
        node("Relu", &["a2"], "b2", vec![]),
        conv("b2", "dw.w", "d", 3, 1, 4, Some("dw.b")),
        node("Relu", &["d"], "dr", vec![]),
        node("Add", &["dr", "d"], "both", vec![]),
        node("GlobalAveragePool", &["both"], "gap", vec![]),
        node("Flatten", &["gap"], "flat", vec![]),
        node(
            "Gemm",
            &["flat", "fc.w", "fc.b"],
            "logits",
            vec![int_attr("transB", 1)],
        ),
    ];
    inits.extend([
        f32s("stem.w", &[8, 3, 3, 3], 11),
        f32s("b1.w1", &[8, 8, 3, 3], 12),
        f32s("b1.w2", &[8, 8, 3, 3], 13),
        f32s("b2.w1", &[16, 8, 3, 3], 14),
        f32s("b2.w2", &[16, 16, 3, 3], 15),
        f32s("b2.proj", &[16, 8, 1, 1], 16),
        f32s("dw.w", &[16, 4, 3, 3], 17),
        f32s("dw.b", &[16], 18),
        f32s("fc.w", &[10, 16], 19),
        f32s("fc.b", &[10], 20),
    ]);
    let f = DataType::Float;
    model(
        17,
        nodes,
        vec![vi("x", f, &[None, Some(3), Some(16), Some(16)])],
        vec![vi("logits", f, &[None, Some(10)])],
        inits,
    )
}

#[test]
fn fused_convolutions_give_what_the_nodes_give_one_by_one() {
    let bytes = batchnorm_resnet();
    let kiln = KilnSession::from_bytes(&bytes).unwrap().ok().unwrap();
    for batch in [1, 3, 64] {
        let x = input(&[batch, 3, 16, 16], batch);
        let feeds = || vec![("x".to_string(), Value::F32(x.clone()))];
        let fused = kiln.run(feeds()).unwrap();
        let (unfused, steps) = kiln.profile(feeds(), &|| 0.0, false).unwrap();
        let diff = max_diff(fused[0].iter(), unfused[0].iter());
        let scale = unfused[0].iter().fold(1f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= 1e-5 * scale,
            "batch {batch}: fused vs unfused {diff} (outputs up to {scale})"
        );
        assert!(steps.iter().all(|(n, _)| !n.contains('+')), "{steps:?}");
        both(&bytes, &x);
    }
    // What was fused: BatchNorm into every convolution, the residual adds and ReLUs into the
    // convolutions before them; the grouped convolution keeps its ReLU apart (its output is read twice).
    let x = input(&[1, 3, 16, 16], 1);
    let (_, steps) = kiln
        .profile(vec![("x".into(), Value::F32(x))], &|| 0.0, true)
        .unwrap();
    let convs: Vec<&str> = steps
        .iter()
        .map(|(n, _)| n.split(' ').next().unwrap())
        .filter(|n| n.starts_with("Conv2d"))
        .collect();
    assert_eq!(
        convs,
        [
            "Conv2d·s+b+relu",
            "Conv2d·s+b+relu",
            "Conv2d·s+b+residual+relu",
            "Conv2d·s+b+relu",
            "Conv2d·s+b",
            "Conv2d·s+b+residual+relu",
            "Conv2d",
        ]
    );
    assert!(
        !steps.iter().any(|(n, _)| n.starts_with("Mul")),
        "{steps:?}"
    );
}

#[test]
fn a_float_convolution_pools_its_output_in_its_step_as_the_nodes_do() {
    // Conv → Relu → MaxPool(2) twice, then Conv → MaxPool(2), on maps with odd sizes (the pooling
    // drops the last row and column)
    let conv = |x: &str, w: &str, b: &str, y: &str| {
        node(
            "Conv",
            &[x, w, b],
            y,
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
        )
    };
    let pool = |x: &str, y: &str| {
        node(
            "MaxPool",
            &[x],
            y,
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
            ],
        )
    };
    let nodes = vec![
        conv("x", "w1", "b1", "c1"),
        node("Relu", &["c1"], "r1", vec![]),
        pool("r1", "p1"),
        conv("p1", "w2", "b2", "c2"),
        node("Relu", &["c2"], "r2", vec![]),
        pool("r2", "p2"),
        conv("p2", "w3", "b3", "c3"),
        pool("c3", "p3"),
        node("Add", &["p3", "p3"], "y", vec![]),
    ];
    let inits = vec![
        f32s("w1", &[6, 2, 3, 3], 1),
        f32s("b1", &[6], 2),
        f32s("w2", &[5, 6, 3, 3], 3),
        f32s("b2", &[5], 4),
        f32s("w3", &[4, 5, 3, 3], 5),
        f32s("b3", &[4], 6),
    ];
    let f = DataType::Float;
    let bytes = model(
        17,
        nodes,
        vec![vi("x", f, &[None, Some(2), Some(15), Some(22)])],
        vec![vi("y", f, &[None, Some(4), Some(1), Some(2)])],
        inits,
    );
    let kiln = KilnSession::from_bytes(&bytes).unwrap().ok().unwrap();
    for batch in [1, 3] {
        let x = input(&[batch, 2, 15, 22], batch);
        let feeds = || vec![("x".to_string(), Value::F32(x.clone()))];
        let (fused, steps) = kiln.profile(feeds(), &|| 0.0, true).unwrap();
        let names: Vec<&str> = steps
            .iter()
            .map(|(n, _)| n.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            names[..3],
            ["Conv2d+relu+pool", "Conv2d+relu+pool", "Conv2d+pool"],
            "{names:?}"
        );
        let (unfused, _) = kiln.profile(feeds(), &|| 0.0, false).unwrap();
        let diff = max_diff(fused[0].iter(), unfused[0].iter());
        assert!(diff <= 1e-5, "batch {batch}: fused vs unfused {diff}");
        both(&bytes, &x);
    }
}
