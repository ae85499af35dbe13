//! `nn.MultiheadAttention` as standard operators (opset 17: ONNX has no attention operator before
//! 23, and engines without one run these): Slice/Transpose/MatMul/Add projections, heads split by
//! Reshape/Transpose, MatMul, Add for the masks, Softmax, MatMul, the output projection. A boolean
//! mask (0/1) becomes additive as `log(1 − m)`: 0 where unset, −∞ where set, in two operators
//! every engine has.

use super::{attr_int, attr_ints, attr_ints_i64, f32_tensor, linear_nodes, Graph};
use crate::autograd::Tensor;
use crate::graph::Op;
use crate::nn::{Attention, MaskKind};
use crate::onnx::pb::{NodeProto, TensorProto};
use crate::{shape_err, Result};

/// The metadata key of the attention calls export wrote as standard operators.
pub(crate) const MARKS_KEY: &str = "kiln.attention";

/// One call of attention as export wrote it (metadata [`MARKS_KEY`], a JSON list), so kiln's
/// engine can import the operators back as the one op (what its key/value cache steps) after
/// checking that the file's nodes are exactly what [`emitted`] writes for it; other engines read
/// the operators and ignore the metadata.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Mark {
    /// The graph op (`{"MultiheadAttention": {...}}`; read back as nothing else).
    #[serde(deserialize_with = "crate::graph::op_json::deserialize_attention")]
    pub(crate) op: Op,
    /// The graph node it was (the `/node{k}` scope of its operators' names).
    pub(crate) node: usize,
    /// The exporter's name counter before its first operator.
    pub(crate) counter: usize,
    /// Its operators: `graph.node[nodes[0]..nodes[1]]`.
    pub(crate) nodes: [usize; 2],
    /// The op's inputs and output by ONNX name.
    pub(crate) inputs: Vec<String>,
    pub(crate) output: String,
}

/// The nodes and initializers export writes for the marked call on inputs of `shapes`.
pub(crate) fn emitted(
    mark: &Mark,
    shapes: &[Vec<usize>],
    opset: i64,
) -> Result<(Vec<NodeProto>, Vec<TensorProto>, String)> {
    let Op::MultiheadAttention(att) = &mark.op else {
        shape_err!("a kiln.attention mark of another op");
    };
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        counter: mark.counter,
        int_values: Default::default(),
    };
    let (o, _) = emit_attention(&mut g, att, mark.node, &mark.inputs, shapes, opset)?;
    Ok((g.nodes, g.initializers, o))
}

/// Emit one call; `xs` are the op's input names, `shapes` their shapes from the dry run (batch 1).
/// Returns the output's name and, with `need_weights`, the weights'.
pub(super) fn emit_attention(
    g: &mut Graph,
    att: &Attention,
    k: usize,
    xs: &[String],
    shapes: &[Vec<usize>],
    opset: i64,
) -> Result<(String, Option<String>)> {
    let scope = format!("/node{k}");
    let sc = scope.as_str();
    if xs.len() != att.arity() || shapes.len() < xs.len() {
        shape_err!(
            "export: MultiheadAttention takes {} inputs, got {}",
            att.arity(),
            xs.len()
        );
    }
    let xs: Vec<String> = xs.iter().map(|x| g.float(x)).collect();
    let mut at = 3;
    let mut next = || {
        at += 1;
        at - 1
    };
    let in_w = next();
    let in_b = att.bias.then(&mut next);
    let out_w = next();
    let out_b = att.bias.then(&mut next);
    let kpm = (att.key_padding_mask != MaskKind::None).then(&mut next);
    let mask = (att.attn_mask != MaskKind::None).then(&mut next);

    let e = shapes[in_w][1];
    let (h, seq_axis) = (att.num_heads, if att.batch_first { 1 } else { 0 });
    let d = e / h.max(1);
    let (l, s) = (shapes[0][seq_axis], shapes[1][seq_axis]);
    // a constant once per name (the three projections share their slicing constants)
    let ints = |g: &mut Graph, name: &str, v: &[i64]| -> String {
        let name = format!("{sc}/{name}");
        if g.initializers.iter().any(|t| t.name == name) {
            return name;
        }
        g.constant_i64(name, v)
    };
    let batch_first = |g: &mut Graph, x: &str| -> String {
        if att.batch_first {
            x.to_string()
        } else {
            g.node(sc, "Transpose", &[x], vec![attr_ints("perm", &[1, 0, 2])])
        }
    };
    // rows part·E .. (part+1)·E of a packed weight or bias
    let part = |g: &mut Graph, w: &str, p: usize| -> String {
        let starts = ints(g, &format!("start{p}"), &[(p * e) as i64]);
        let ends = ints(g, &format!("end{p}"), &[((p + 1) * e) as i64]);
        let axes = ints(g, "axes0", &[0]);
        g.node(sc, "Slice", &[w, &starts, &ends, &axes], vec![])
    };
    let heads = |g: &mut Graph, x: usize, p: usize, n: usize, perm: &[usize]| -> String {
        let x = batch_first(g, &xs[x]);
        let w = part(g, &xs[in_w], p);
        let b = in_b.map(|b| part(g, &xs[b], p));
        let y = linear_nodes(g, sc, &x, &w, b.as_deref(), 3);
        let shape = ints(g, &format!("heads{p}"), &[0, n as i64, h as i64, d as i64]);
        let y = g.node(sc, "Reshape", &[&y, &shape], vec![]);
        g.node(sc, "Transpose", &[&y], vec![attr_ints("perm", perm)])
    };
    let q = heads(g, 0, 0, l, &[0, 2, 1, 3]);
    let kt = heads(g, 1, 1, s, &[0, 2, 3, 1]);
    let v = heads(g, 2, 2, s, &[0, 2, 1, 3]);
    let scale = g.constant_f32(format!("{sc}/scale"), 1.0 / (d as f32).sqrt());
    let q = g.node(sc, "Mul", &[&q, &scale], vec![]);
    let mut scores = g.node(sc, "MatMul", &[&q, &kt], vec![]);

    let additive = |g: &mut Graph, m: &str, kind: MaskKind| -> String {
        if kind != MaskKind::Bool {
            return m.to_string();
        }
        let one = g.constant_f32(format!("{sc}/one"), 1.0);
        let keep = g.node(sc, "Sub", &[&one, m], vec![]);
        g.node(sc, "Log", &[&keep], vec![])
    };
    if let Some(m) = mask {
        let mut am = additive(g, &xs[m], att.attn_mask);
        if shapes[m].len() == 3 {
            let shape = ints(g, "mask_shape", &[-1, h as i64, l as i64, s as i64]);
            am = g.node(sc, "Reshape", &[&am, &shape], vec![]);
        }
        scores = g.node(sc, "Add", &[&scores, &am], vec![]);
    } else if att.is_causal {
        let causal = Tensor::from_shape_fn(ndarray::IxDyn(&[l, s]), |ix| {
            if ix[1] > ix[0] {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        });
        let name = format!("{sc}/causal");
        g.initializers.push(f32_tensor(&name, &causal));
        scores = g.node(sc, "Add", &[&scores, &name], vec![]);
    }
    if let Some(m) = kpm {
        let am = additive(g, &xs[m], att.key_padding_mask);
        let shape = ints(g, "kpm_shape", &[0, 1, 1, s as i64]);
        let am = g.node(sc, "Reshape", &[&am, &shape], vec![]);
        scores = g.node(sc, "Add", &[&scores, &am], vec![]);
    }
    let attn = g.node(sc, "Softmax", &[&scores], vec![attr_int("axis", 3)]);
    let o = g.node(sc, "MatMul", &[&attn, &v], vec![]);
    let o = g.node(
        sc,
        "Transpose",
        &[&o],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
    );
    let shape = ints(g, "merged", &[0, l as i64, e as i64]);
    let o = g.node(sc, "Reshape", &[&o, &shape], vec![]);
    let mut o = linear_nodes(g, sc, &o, &xs[out_w], out_b.map(|b| xs[b].as_str()), 3);
    if !att.batch_first {
        o = g.node(sc, "Transpose", &[&o], vec![attr_ints("perm", &[1, 0, 2])]);
    }
    let weights = match (att.need_weights, att.average_attn_weights) {
        (false, _) => None,
        (true, false) => Some(attn),
        (true, true) => {
            let keep = attr_int("keepdims", 0);
            Some(if opset >= 18 {
                let axes = ints(g, "heads_axis", &[1]);
                g.node(sc, "ReduceMean", &[&attn, &axes], vec![keep])
            } else {
                g.node(
                    sc,
                    "ReduceMean",
                    &[&attn],
                    vec![attr_ints_i64("axes", &[1]), keep],
                )
            })
        }
    };
    Ok((o, weights))
}
