//! Checks an ONNX protobuf before tract sees it, so that a bad model gets an error naming the
//! node and what was wrong instead of a deep tract message (or, on wasm32 where panics abort,
//! a crash). Also the few rewrites kiln applies to foreign graphs before parsing.

use std::collections::{BTreeMap, HashMap, HashSet};

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use crate::{KilnError, Result};

fn err(msg: impl Into<String>) -> KilnError {
    KilnError::onnx(msg)
}

/// `"name" (OpType)`: how messages name a node. Unnamed nodes go by their first output, as
/// tract names them.
pub(crate) fn node_label(node: &NodeProto) -> String {
    format!("{:?} ({})", node_name(node), node.op_type)
}

fn node_name(node: &NodeProto) -> &str {
    if !node.name.is_empty() {
        node.name.as_str()
    } else {
        node.output
            .iter()
            .find(|o| !o.is_empty())
            .map_or("", String::as_str)
    }
}

/// The ONNX `metadata_props`, in key order.
pub(crate) fn metadata(proto: &ModelProto) -> BTreeMap<String, String> {
    proto
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect()
}

/// Everything kiln checks before parsing: a graph, supported operators, names that resolve,
/// initializers whose data fits their shape, and tensor-typed inputs.
pub(crate) fn validate(proto: &ModelProto, ops: &OnnxOpRegister, external_ok: bool) -> Result<()> {
    let graph = proto.graph.as_ref().ok_or_else(|| {
        err("not a valid ONNX model: the file holds no graph (is it an ONNX file?)")
    })?;
    if graph.output.is_empty() {
        return Err(err("not a valid ONNX model: the graph has no outputs"));
    }
    let ctx = Ctx {
        ops,
        opsets: opsets(proto),
        external_ok,
    };
    ctx.graph(graph, &HashSet::new(), true)
}

fn opsets(proto: &ModelProto) -> HashMap<String, i64> {
    proto
        .opset_import
        .iter()
        .map(|o| (o.domain.clone(), o.version))
        .collect()
}

struct Ctx<'a> {
    ops: &'a OnnxOpRegister,
    opsets: HashMap<String, i64>,
    external_ok: bool,
}

impl Ctx<'_> {
    fn graph(&self, graph: &GraphProto, outer: &HashSet<String>, top: bool) -> Result<()> {
        let mut known: HashSet<String> = outer.clone();
        for init in &graph.initializer {
            check_tensor(
                init,
                &format!("initializer {:?}", init.name),
                self.external_ok,
            )?;
            known.insert(init.name.clone());
        }
        let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        for input in &graph.input {
            known.insert(input.name.clone());
            if inits.contains(input.name.as_str()) || !top {
                continue;
            }
            match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(TypeValue::TensorType(t)) => {
                    let ok =
                        DataType::try_from(t.elem_type).is_ok_and(|dt| dt != DataType::Undefined);
                    if !ok {
                        return Err(err(format!(
                            "input {:?}: unknown element type {} in the model",
                            input.name, t.elem_type
                        )));
                    }
                }
                None => {
                    return Err(err(format!(
                        "input {:?} is not a tensor (sequence, map and optional inputs are not \
                         supported)",
                        input.name
                    )))
                }
            }
        }
        for node in &graph.node {
            known.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
        for node in &graph.node {
            self.node(node, &known)?;
        }
        for output in &graph.output {
            if !known.contains(&output.name) {
                return Err(err(format!(
                    "graph output {:?} is not produced by any node, input or initializer",
                    output.name
                )));
            }
        }
        Ok(())
    }

    fn node(&self, node: &NodeProto, known: &HashSet<String>) -> Result<()> {
        if !self.ops.0.contains_key(&node.op_type) {
            let domain = if node.domain.is_empty() {
                "ai.onnx"
            } else {
                node.domain.as_str()
            };
            let version = self.opsets.get(&node.domain).or_else(|| {
                (domain == "ai.onnx")
                    .then(|| self.opsets.get("ai.onnx"))
                    .flatten()
            });
            let version = version.map_or(String::new(), |v| format!(", opset {v}"));
            return Err(err(format!(
                "unsupported ONNX operator {:?} (domain {domain:?}{version}) in node {:?}",
                node.op_type,
                node_name(node)
            )));
        }
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !known.contains(input) {
                return Err(err(format!(
                    "node {} reads {input:?}, which no node, input or initializer defines",
                    node_label(node)
                )));
            }
        }
        for attr in &node.attribute {
            let what = format!("node {} attribute {:?}", node_label(node), attr.name);
            if let Some(t) = &attr.t {
                check_tensor(t, &what, false)?;
            }
            for t in &attr.tensors {
                check_tensor(t, &what, false)?;
            }
            // Subgraphs (If, Loop, Scan bodies) see every name of the enclosing scope.
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                self.graph(g, known, false)?;
            }
        }
        Ok(())
    }
}

/// Bytes per element of a fixed-size ONNX type; `None` for strings and the packed 4-bit types.
fn elem_size(dt: DataType) -> Option<usize> {
    use DataType::*;
    Some(match dt {
        Float | Int32 | Uint32 => 4,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz => 1,
        Uint16 | Int16 | Float16 | Bfloat16 => 2,
        Int64 | Double | Uint64 | Complex64 => 8,
        Complex128 => 16,
        _ => return None,
    })
}

/// A tensor's declared shape must match the amount of data it carries.
fn check_tensor(t: &TensorProto, what: &str, external_ok: bool) -> Result<()> {
    let dt = DataType::try_from(t.data_type)
        .ok()
        .filter(|dt| *dt != DataType::Undefined)
        .ok_or_else(|| err(format!("{what}: unknown element type {}", t.data_type)))?;
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| {
            err(format!(
                "{what}: negative dimension {d} in shape {:?}",
                t.dims
            ))
        })?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= isize::MAX as usize)
            .ok_or_else(|| err(format!("{what}: shape {:?} is too large", t.dims)))?;
    }
    if t.data_location == Some(DataLocation::External as i32) {
        if external_ok {
            return Ok(());
        }
        return Err(err(format!(
            "{what}: the weights are stored in an external file; load the model with \
             TractSession::from_path so kiln can find it"
        )));
    }
    let (have, unit) = if !t.raw_data.is_empty() {
        match (dt, elem_size(dt)) {
            (_, Some(size)) => (t.raw_data.len(), size),
            (DataType::Uint4 | DataType::Int4 | DataType::Float4e2m1, _) => {
                (t.raw_data.len(), 0) // two values a byte, checked below
            }
            _ => return Err(err(format!("{what}: raw data is not allowed for {dt:?}"))),
        }
    } else {
        use DataType::*;
        let n = match dt {
            Float => t.float_data.len(),
            Complex64 => t.float_data.len() / 2,
            Double => t.double_data.len(),
            Complex128 => t.double_data.len() / 2,
            Int64 => t.int64_data.len(),
            Uint32 | Uint64 => t.uint64_data.len(),
            String => t.string_data.len(),
            _ => t.int32_data.len(),
        };
        (n, 1)
    };
    let expected = match unit {
        0 => count.div_ceil(2),
        u => count.saturating_mul(u),
    };
    if have != expected {
        let got = if unit > 1 {
            format!("{have} bytes")
        } else {
            format!("{have} values")
        };
        let want = if unit > 1 {
            format!("{expected} bytes")
        } else {
            format!("{expected} values")
        };
        return Err(err(format!(
            "{what}: shape {:?} ({dt:?}) needs {want} of data, the file holds {got} (truncated \
             or corrupt model?)",
            t.dims
        )));
    }
    Ok(())
}

/// Gives every free input dimension a symbol tract can resolve per run. ONNX writers leave batch
/// dimensions empty, as `?`, or as free text ("batch size"); tract would treat those as unknown
/// and then fail to type the graph. Names that already are identifiers are kept, so two inputs
/// sharing `N` stay tied together.
pub(crate) fn symbolize_inputs(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let inits: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut fresh = 0usize;
    for input in graph.input.iter_mut().filter(|i| !inits.contains(&i.name)) {
        let Some(TypeValue::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        let Some(shape) = t.shape.as_mut() else {
            continue;
        };
        for dim in shape.dim.iter_mut() {
            let keep = match &dim.value {
                Some(DimValue::DimValue(v)) => *v >= 0,
                Some(DimValue::DimParam(p)) => is_identifier(p),
                None => false,
            };
            if keep {
                continue;
            }
            let name = match &dim.value {
                Some(DimValue::DimParam(p)) if !p.is_empty() && p != "?" => renamed
                    .entry(p.clone())
                    .or_insert_with(|| next_symbol(&mut fresh))
                    .clone(),
                _ => next_symbol(&mut fresh),
            };
            dim.value = Some(DimValue::DimParam(name));
        }
    }
}

fn next_symbol(fresh: &mut usize) -> String {
    *fresh += 1;
    format!("kiln_free_{}", *fresh)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("unk__")
}
