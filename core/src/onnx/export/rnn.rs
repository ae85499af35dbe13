//! `nn.GRU` / `nn.LSTM` as ONNX's `GRU` / `LSTM` operators, one node per layer (both directions in
//! it), time-major (`layout` 0, which every engine implements), with PyTorch's gate blocks
//! reordered into ONNX's and GRU's `linear_before_reset = 1` (PyTorch applies `r` to `W_hn h + b_hn`).

use ndarray::Axis;

use super::{attr_int, attr_ints, attr_str, f32_tensor, i64_tensor, Graph};
use crate::autograd::{RnnCell, RnnConfig, Tensor};
use crate::nn::Param;
use crate::onnx::pb::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use crate::{KilnError, Result};

/// Stack the directions' tensors on a new first axis: ONNX's `[num_directions, …]`.
fn stack(ts: &[Tensor]) -> Tensor {
    let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
    ndarray::stack(Axis(0), &views).expect("same shapes")
}

/// Emit the layer; `xs` are the names of x and, when given, h0 (and c0). Returns the names of
/// output, h_n (and c_n), shaped as [`crate::autograd::Tape::rnn`] returns them.
pub(super) fn emit_rnn(
    g: &mut Graph,
    cfg: &RnnConfig,
    tensors: &[(String, &Param)],
    prefix: &str,
    xs: &[String],
) -> Result<Vec<String>> {
    let scope = format!("/{}", prefix.trim_end_matches('.'));
    let t = |name: &str| -> Result<&Tensor> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.value())
            .ok_or_else(|| KilnError::onnx(format!("export: layer {prefix} has no tensor {name}")))
    };
    let (cell, dirs, hid) = (cfg.cell, cfg.directions(), cfg.hidden_size);
    let op = cell.name();
    let mut x = g.float(&xs[0]);
    if cfg.batch_first {
        x = g.node(
            &scope,
            "Transpose",
            &[&x],
            vec![attr_ints("perm", &[1, 0, 2])],
        );
    }
    let mut states: Vec<String> = xs[1..].iter().map(|s| g.float(s)).collect();
    // Zero initial states are spelled out, ConstantOfShape of [D, batch, H] (tract needs them to
    // run a symbolic batch). An LSTM's h0 and c0 are two slices of one [2·D, batch, H]: tract
    // mis-runs a bidirectional LSTM whose h0 and c0 are the same value (or two equal constants).
    let given = !states.is_empty();
    if !given {
        let count = cell.gates() - 2;
        let shape = g.node(&scope, "Shape", &[&x], vec![]);
        let starts = g.constant_i64(format!("{scope}/batch_starts"), &[1]);
        let ends = g.constant_i64(format!("{scope}/batch_ends"), &[2]);
        let batch = g.node(&scope, "Slice", &[&shape, &starts, &ends], vec![]);
        let d = g.constant_i64(format!("{scope}/states"), &[(count * dirs) as i64]);
        let hs = g.constant_i64(format!("{scope}/hidden"), &[hid as i64]);
        let dims = g.node(
            &scope,
            "Concat",
            &[&d, &batch, &hs],
            vec![attr_int("axis", 0)],
        );
        let zero = AttributeProto {
            name: "value".into(),
            r#type: AttributeType::Tensor as i32,
            t: Some(f32_tensor("", &Tensor::zeros(ndarray::IxDyn(&[1])))),
            ..Default::default()
        };
        let zeros = g.node(&scope, "ConstantOfShape", &[&dims], vec![zero]);
        states = if count == 1 {
            vec![zeros]
        } else {
            let axes = g.constant_i64(format!("{scope}/zeros_axes"), &[0]);
            (0..count)
                .map(|k| {
                    let s =
                        g.constant_i64(format!("{scope}/zeros{k}_starts"), &[(k * dirs) as i64]);
                    let e = g
                        .constant_i64(format!("{scope}/zeros{k}_ends"), &[((k + 1) * dirs) as i64]);
                    g.node(&scope, "Slice", &[&zeros, &s, &e, &axes], vec![])
                })
                .collect()
        };
    }
    // every layer's final states, concatenated at the end: h_n (and c_n)
    let mut finals: Vec<Vec<String>> = vec![Vec::new(); cell.gates() - 2];
    for l in 0..cfg.num_layers {
        let sfx = |d: usize| if d == 1 { "_reverse" } else { "" };
        let mut w = Vec::new();
        let mut r = Vec::new();
        let mut b = Vec::new();
        for d in 0..dirs {
            w.push(cell.to_onnx_gates(t(&format!("weight_ih_l{l}{}", sfx(d)))?));
            r.push(cell.to_onnx_gates(t(&format!("weight_hh_l{l}{}", sfx(d)))?));
            if cfg.bias {
                let bi = cell.to_onnx_gates(t(&format!("bias_ih_l{l}{}", sfx(d)))?);
                let bh = cell.to_onnx_gates(t(&format!("bias_hh_l{l}{}", sfx(d)))?);
                b.push(ndarray::concatenate(Axis(0), &[bi.view(), bh.view()]).expect("1-D"));
            }
        }
        let mut inputs = vec![x.clone()];
        for (name, ts) in [("W", &w), ("R", &r)] {
            let n = format!("{prefix}{name}_l{l}");
            g.initializers.push(f32_tensor(&n, &stack(ts)));
            inputs.push(n);
        }
        inputs.push(if cfg.bias {
            let n = format!("{prefix}B_l{l}");
            g.initializers.push(f32_tensor(&n, &stack(&b)));
            n
        } else {
            String::new()
        });
        inputs.push(String::new()); // sequence_lens: every sequence runs to the end
        if cfg.num_layers == 1 || !given {
            inputs.extend(states.iter().cloned());
        } else {
            // this layer's rows of the given [num_layers · D, batch, H] states
            let starts = g.constant_i64(format!("{scope}/l{l}_starts"), &[(l * dirs) as i64]);
            let ends = g.constant_i64(format!("{scope}/l{l}_ends"), &[((l + 1) * dirs) as i64]);
            let axes = g.constant_i64(format!("{scope}/l{l}_axes"), &[0]);
            for s in &states {
                inputs.push(g.node(&scope, "Slice", &[s, &starts, &ends, &axes], vec![]));
            }
        }
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        let mut attrs = vec![
            attr_int("hidden_size", hid as i64),
            attr_str(
                "direction",
                if dirs == 2 {
                    "bidirectional"
                } else {
                    "forward"
                },
            ),
        ];
        if cell == RnnCell::Gru {
            attrs.push(attr_int("linear_before_reset", 1));
        }
        g.counter += 1;
        let base = format!("{scope}/{op}_{}", g.counter);
        let outs: Vec<String> = ["Y", "Y_h", "Y_c"][..if cell == RnnCell::Lstm { 3 } else { 2 }]
            .iter()
            .map(|o| format!("{base}/{o}"))
            .collect();
        g.nodes.push(NodeProto {
            name: base.clone(),
            op_type: op.into(),
            input: inputs,
            output: outs.clone(),
            attribute: attrs,
            ..Default::default()
        });
        // Y [T, D, B, H] → [T, B, D·H]: the next layer's input and the layer's output
        let tb = g.node(
            &scope,
            "Transpose",
            &[&outs[0]],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let shape = format!("{scope}/l{l}_shape");
        g.initializers.push(i64_tensor(&shape, &[0, 0, -1]));
        x = g.node(&scope, "Reshape", &[&tb, &shape], vec![]);
        for (f, o) in finals.iter_mut().zip(&outs[1..]) {
            f.push(o.clone());
        }
    }
    let output = if cfg.batch_first {
        g.node(
            &scope,
            "Transpose",
            &[&x],
            vec![attr_ints("perm", &[1, 0, 2])],
        )
    } else {
        x
    };
    let mut names = vec![output];
    for parts in finals {
        names.push(if parts.len() == 1 {
            parts[0].clone()
        } else {
            let ins: Vec<&str> = parts.iter().map(String::as_str).collect();
            g.node(&scope, "Concat", &ins, vec![attr_int("axis", 0)])
        });
    }
    Ok(names)
}
