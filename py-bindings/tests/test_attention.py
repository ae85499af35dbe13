"""nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerEncoder: PyTorch's arguments,
masks, return values and parameter names (a PyTorch state dict loads as it is and gives PyTorch's
outputs, loss and gradients, tests/fixtures/grad), clear errors, and ONNX exports that onnx.checker,
onnxruntime and kiln's own engine agree with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file

import kiln
from kiln import nn, optim
from kiln.errors import InvalidInputError, KilnError

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "grad"


class MHANet(nn.Module):
    """make_grad_fixtures.py's MHANet: kiln's causal mask from is_causal alone, a bool key-padding
    mask (a bool input), head-averaged and per-head weights, a float mask held as a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(8, 4)
        self.head = nn.Linear(8 + 5 + 5, 3)
        self.register_buffer("bias_mask", np.zeros((5, 5), np.float32))

    def forward(self, x, pad):
        h = self.embed(x)
        out, w = self.attn(h, h, h, key_padding_mask=pad, is_causal=True)
        q, kv = out.permute(1, 0, 2), h.permute(1, 0, 2)
        out2, w2 = self.cross(q, kv, kv, attn_mask=self.bias_mask, average_attn_weights=False)
        o = out2.permute(1, 0, 2)
        return self.head(kiln.nn.functional.cat([o.mean(dim=1), w[:, -1], w2[:, 1, -1]], dim=1))


class EncoderNet(nn.Module):
    """make_grad_fixtures.py's EncoderNet."""

    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.emb = nn.Embedding(7, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                           activation="gelu" if norm_first else "relu",
                                           batch_first=not norm_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=None if norm_first else nn.LayerNorm(8))
        self.head = nn.Linear(8, 3)

    def forward(self, ids, pad):
        h = self.emb(ids)
        if self.norm_first:
            h = h.permute(1, 0, 2)
        h = self.encoder(h, src_key_padding_mask=pad, is_causal=True)
        return self.head(h.mean(dim=0 if self.norm_first else 1))


CASES = {"mha": MHANet, "transformer": lambda: EncoderNet(False), "transformer_prenorm": lambda: EncoderNet(True)}


def _inputs(ref: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    first = ref["input.x"] if name == "mha" else ref["input.ids"]
    return first, ref["input.pad"].astype(bool)


@pytest.mark.parametrize("name", list(CASES))
def test_a_pytorch_state_dict_loads_and_gives_pytorchs_outputs_loss_and_gradients(name):
    ref = load_file(FIXTURES / f"{name}.safetensors")
    model = CASES[name]()
    a, pad = _inputs(ref, name)
    out = model(a, pad)  # traces forward: pad is a bool array, so it reads as PyTorch's bool mask
    own = model.state_dict()
    grads = {k.removeprefix("grad.") for k in ref if k.startswith("grad.")}
    assert set(own) - {"bias_mask"} == grads
    model.load_state_dict({k: ref[k] for k in own})
    np.testing.assert_allclose(model.predict((a, pad)), ref["output.0"], atol=1e-5, rtol=0)
    model.train()
    out = model(a, pad)
    loss = kiln.losses.cross_entropy(out, ref["target.0"])
    assert abs(float(np.asarray(loss.numpy()).reshape(-1)[0]) - ref["loss"][0]) <= 1e-5 * abs(ref["loss"][0])
    model.zero_grad()
    loss.backward()
    checked = 0
    for p in model.parameters():
        want = ref[f"grad.{p.name}"]
        err = np.abs(p.grad - want).max()
        assert err <= 1e-5 * np.abs(want).max() + 1e-6, (p.name, err)
        checked += 1
    assert checked == len(grads)
