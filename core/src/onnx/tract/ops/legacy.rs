//! Operators of early opsets that old exports (PyTorch / Keras through opset 9) still carry.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

pub(crate) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Upsample", upsample);
}

fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Upsample-9 (`X`, `scales`) is Resize with asymmetric coordinates and, for `nearest`, the
/// floor of the source coordinate: `y[i] = x[floor(i / scale)]`. Built by tract's own Resize.
fn upsample(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    ensure!(
        node.input.len() == 2,
        "Upsample with scales as an attribute (opset 7) is not supported; re-export with opset >= 9"
    );
    let mode = match node
        .get_attr_opt::<String>("mode")?
        .as_deref()
        .unwrap_or("nearest")
    {
        "nearest" => "nearest",
        "linear" | "bilinear" => "linear",
        other => bail!("Upsample mode {other:?} is not supported"),
    };
    let resize = NodeProto {
        op_type: "Resize".into(),
        domain: String::new(),
        input: vec![node.input[0].clone(), String::new(), node.input[1].clone()],
        attribute: vec![
            string_attr("mode", mode),
            string_attr("coordinate_transformation_mode", "asymmetric"),
            string_attr("nearest_mode", "floor"),
        ],
        ..node.clone()
    };
    // The opset-13 Resize layout: X, roi (absent), scales.
    let mut ctx = ctx.clone();
    ctx.onnx_operator_set_version = 13;
    let build = ctx
        .framework
        .op_register
        .0
        .get("Resize")
        .context("tract registers Resize")?;
    build(&ctx, &resize)
}
