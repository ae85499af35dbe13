//! Operators that stock tract-onnx 0.23.9 lacks and that real exports use, added through tract's
//! own registration (`OnnxOpRegister`) rather than a fork. Each builder reads the ONNX node and
//! returns an `Expansion` that wires existing tract ops, so the optimiser still sees plain
//! arithmetic it knows how to speed up.

mod guard;
mod legacy;
mod ml;
mod quant;
mod tree;

use tract_onnx::model::OnnxOpRegister;

/// Adds kiln's operators to a tract ONNX register.
pub(crate) fn register(reg: &mut OnnxOpRegister) {
    guard::register(reg);
    legacy::register(reg);
    ml::register(reg);
    tree::register(reg);
    quant::register(reg);
}
