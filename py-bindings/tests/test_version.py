"""One version: the workspace Cargo.toml's is kiln.__version__, the npm package's and the kiln.version an
export records; a model from a newer kiln that this kiln cannot run asks for an update."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

import kiln
from kiln import nn

from future_model import future_model

ROOT = Path(__file__).resolve().parents[2]


def workspace_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'\[workspace\.package\][^\[]*?\nversion = "([^"]+)"', text).group(1)


def test_every_version_comes_from_the_workspace_cargo_toml():
    want = workspace_version()
    assert kiln.__version__ == want
    assert json.loads((ROOT / "wasm/pkg/package.json").read_text())["version"] == want
    assert f"export const version = '{want}';" in (ROOT / "wasm/pkg/version.js").read_text()
    m = nn.Sequential(nn.Linear(2, 1))
    m.input_shape = (2,)
    meta = {p.key: p.value for p in onnx.load_from_string(m.export_onnx()).metadata_props}
    assert meta["kiln.version"] == want
    assert kiln.InferenceSession(m.export_onnx()).metadata["kiln.version"] == want


def test_a_model_from_a_newer_kiln_that_fails_asks_for_an_update():
    with pytest.raises(kiln.OnnxError) as info:
        kiln.InferenceSession(future_model("99.0.0"))
    message = str(info.value)
    assert "SoftReluV2" in message, message  # what failed stays in the message
    assert f"exported by kiln 99.0.0, newer than this kiln ({kiln.__version__})" in message
    assert "pip install --upgrade kiln" in message
    with pytest.raises(kiln.OnnxError) as same:
        kiln.InferenceSession(future_model(kiln.__version__))
    assert "SoftReluV2" in str(same.value) and "newer" not in str(same.value)
