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


class WeightsOut(nn.Module):
    """A model returning attention's output and its per-head weights (several ONNX outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x, pad):
        out, w = self.attn(x, x, x, key_padding_mask=pad, average_attn_weights=False)
        return out, w


def _batch(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if name == "mha":
        a = rng.standard_normal((n, 5, 4)).astype(np.float32)
    elif name == "weights":
        a = rng.standard_normal((n, 5, 8)).astype(np.float32)
    else:
        a = rng.integers(0, 7, (n, 6))
    t = a.shape[1]
    pad = np.arange(t)[None, :] >= t - rng.integers(0, 3, n)[:, None]
    return a, pad


@pytest.mark.parametrize("name", list(CASES) + ["weights"])
def test_exports_agree_with_onnxruntime_kiln_engine_and_predict(name, rng, tmp_path):
    model = WeightsOut() if name == "weights" else CASES[name]()
    model.predict(_batch(name, 2, rng))  # traced; pad is bool
    data = model.export_onnx()
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert {"MatMul", "Softmax"} <= {n.op_type for n in proto.graph.node}
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    sess = kiln.InferenceSession(data, engine="kiln")
    assert sess.engine == "kiln"
    names = [i.name for i in ref.get_inputs()]
    for batch in (1, 9):
        a, pad = _batch(name, batch, rng)
        want = model.predict((a, pad))
        want = list(want) if isinstance(want, tuple) else [want]
        feeds = dict(zip(names, (a, pad.astype(np.float32))))
        for got, w in zip(ref.run(None, feeds), want):
            np.testing.assert_allclose(got, w, atol=1e-4, rtol=0)
        got = sess.run(feeds)
        got = list(got.values()) if isinstance(got, dict) else [got]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
    model.save(tmp_path / "m.kiln")
    a, pad = _batch(name, 3, rng)
    loaded = kiln.load(tmp_path / "m.kiln").predict((a, pad))
    np.testing.assert_array_equal(np.asarray(loaded[0] if name == "weights" else loaded),
                                  np.asarray(model.predict((a, pad))[0] if name == "weights" else model.predict((a, pad))))


def test_pytorch_names_init_and_repr():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = enc

        def forward(self, x):
            return self.encoder(x)

    m = Net()
    m.predict(np.zeros((1, 3, 8), np.float32))
    sd = m.state_dict()
    for k in ("encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.1.self_attn.out_proj.bias",
              "encoder.layers.0.linear1.weight", "encoder.layers.1.norm2.bias", "encoder.norm.weight"):
        assert k in sd, k
    w = sd["encoder.layers.0.self_attn.in_proj_weight"]
    assert w.shape == (24, 8) and np.abs(w).max() <= np.sqrt(6 / 32) and np.abs(w).max() > 0.5 * np.sqrt(6 / 32)
    assert not sd["encoder.layers.0.self_attn.in_proj_bias"].any()
    assert not sd["encoder.layers.0.self_attn.out_proj.bias"].any()
    assert np.abs(sd["encoder.layers.0.self_attn.out_proj.weight"]).max() <= 1 / np.sqrt(8)
    attn = enc.layers[0].self_attn
    assert attn.in_proj_weight.shape == (24, 8) and attn.out_proj.weight.shape == (8, 8)
    assert repr(attn) == "MultiheadAttention(embed_dim=8, num_heads=2, dropout=0.1, batch_first=True)"


class Attend(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x, mask):
        return self.mha(x, x, x, key_padding_mask=mask)[0]


def test_bad_arguments_and_shapes_are_clear_errors():
    with pytest.raises(KilnError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\)"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(InvalidInputError, match="kdim and vdim"):
        nn.MultiheadAttention(8, 2, kdim=4)
    with pytest.raises(InvalidInputError, match="activation"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    m = Attend(nn.MultiheadAttention(8, 2, batch_first=True))
    with pytest.raises(KilnError, match=r"query of shape \[2, 5, 6\] does not fit embed_dim 8"):
        m.predict((np.zeros((2, 5, 6), np.float32), np.zeros((2, 5), bool)))
    m = Attend(nn.MultiheadAttention(8, 2, batch_first=True))
    with pytest.raises(KilnError, match=r"key_padding_mask of shape \[2, 4\] must be \[batch, S\] = \[2, 5\]"):
        m.predict((np.zeros((2, 5, 8), np.float32), np.zeros((2, 4), bool)))
    with pytest.raises(KilnError, match="Sequential"):
        nn.Sequential(nn.MultiheadAttention(8, 2))


def test_a_small_causal_transformer_learns_to_copy_the_previous_token(rng):
    """Next-token prediction where the answer is the token before: learnable only by attending back."""

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.pos = nn.Embedding(6, 16), nn.Embedding(8, 16)
            layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1)
            self.head = nn.Linear(16, 6)

        def forward(self, ids):
            return self.head(self.encoder(self.emb(ids) + self.pos.weight, is_causal=True))

    kiln.manual_seed(0)
    X = rng.integers(0, 6, (256, 8))
    y = np.concatenate([X[:, :1], X[:, :-1]], axis=1)
    m = LM()
    m.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    m.fit(X, y, epochs=30, batch_size=32, verbose=0)
    assert m.evaluate(X, y)["accuracy"] > 0.9


@pytest.mark.parametrize("name", ["mha", "transformer"])
def test_load_onnx_turns_an_exported_transformer_back_into_a_model_that_trains(name, rng, tmp_path):
    model = CASES[name]()
    a, pad = _batch(name, 4, rng)
    want = model.predict((a, pad))
    model.export_onnx(tmp_path / "m.onnx")
    loaded = kiln.load_onnx(tmp_path / "m.onnx")
    first = "x" if name == "mha" else "ids"
    np.testing.assert_allclose(loaded.predict({first: a, "pad": pad.astype(np.float32)}), want, atol=1e-5, rtol=0)
    assert any(k.endswith("self_attn.in_proj_weight") or k.endswith("attn.in_proj_weight") for k in loaded.state_dict())
    loaded.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy")
    losses = loaded.fit((a, pad.astype(np.float32)), np.array([0, 1, 2, 0]), epochs=5, verbose=0).history["loss"]
    assert losses[-1] < losses[0]


def test_generation_with_the_key_value_cache_writes_the_windowed_reruns_text():
    """kiln.text.generate on a causal transformer keeps each attention's keys and values (one new
    position per token); on the exported file kiln's engine reruns the window. Same seeds, same text,
    past the window's end too (the cache restarts on the last T ids)."""

    class GPT(nn.Module):
        def __init__(self, vocab: int, steps: int) -> None:
            super().__init__()
            self.emb, self.pos = nn.Embedding(vocab, 16), nn.Embedding(steps, 16)
            layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.out = nn.Linear(16, vocab)

        def forward(self, x):
            return self.out(self.encoder(self.emb(x) + self.pos.weight, is_causal=True))

    tok = kiln.text.CharTokenizer.fit(["anna", "maria", "tom", "alan"])
    kiln.manual_seed(1)
    gpt = GPT(tok.vocab_size, 12)
    gpt.predict(np.zeros((1, 12), np.int64))
    sd = gpt.state_dict()
    sd["out.bias"][3] = -30.0  # no <eos>: the text runs past the window
    gpt.load_state_dict(sd)
    sess = kiln.InferenceSession(gpt.export_onnx(tokenizer=tok))
    for seed, prompt in ((0, "ma"), (1, ""), (2, "tom a")):
        want = kiln.text.generate(sess, None, prompt, 20, 1.0, None, seed)
        assert len(want) == len(prompt) + 20
        assert kiln.text.generate(gpt, tok, prompt, 20, 1.0, None, seed) == want


def test_a_bool_buffer_masks_as_pytorch_reads_a_bool_mask(rng):
    """An attn_mask registered from a bool array masks (True = may not attend), as is_causal does; the
    same mask as floats is added to the scores."""

    class Masked(nn.Module):
        def __init__(self, mask: np.ndarray | None) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.has_mask = mask is not None
            if mask is not None:
                self.register_buffer("mask", mask)

        def forward(self, x):
            if self.has_mask:
                return self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0]
            return self.attn(x, x, x, is_causal=True, need_weights=False)[0]

    future = np.triu(np.ones((5, 5), bool), 1)
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    causal, as_bool, as_float = Masked(None), Masked(future), Masked(future.astype(np.float32))
    for m in (causal, as_bool, as_float):
        m.predict(x)
    weights = {k: v for k, v in causal.state_dict().items()}
    as_bool.load_state_dict({**weights, "mask": future.astype(np.float32)})
    as_float.load_state_dict({**weights, "mask": future.astype(np.float32)})
    np.testing.assert_allclose(as_bool.predict(x), causal.predict(x), atol=1e-6, rtol=0)
    assert np.abs(as_float.predict(x) - causal.predict(x)).max() > 1e-3


def test_summary_lists_attention_with_its_output_shape():
    text = str(EncoderNet(False).summary(input_shape=[(6,), (6,)]))
    line = next(row for row in text.splitlines() if row.startswith("encoder.layers.0.self_attn"))
    assert "(None, 6, 8)" in line and "288" in line, line
