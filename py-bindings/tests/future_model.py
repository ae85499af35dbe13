"""A model "from a newer kiln": kiln's export of a small MLP whose ReLU became an operator no engine
here has, and whose metadata says another kiln version wrote it. test_version.py loads it in Python,
wasm/tests/version.test.mjs in kiln-wasm (``python future_model.py OUT_DIR`` writes future.onnx, from
kiln 99.0.0, and same.onnx, from this kiln).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

import kiln
from kiln import nn


def future_model(version: str) -> bytes:
    kiln.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    m.input_shape = (4,)
    proto = onnx.load_from_string(m.export_onnx())
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type = "SoftReluV2"  # an operator a later kiln might add
    for p in proto.metadata_props:
        if p.key == "kiln.version":
            p.value = version
    return proto.SerializeToString()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "future.onnx").write_bytes(future_model("99.0.0"))
    (out / "same.onnx").write_bytes(future_model(kiln.__version__))
