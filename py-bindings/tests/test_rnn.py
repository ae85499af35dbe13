"""nn.GRU and nn.LSTM inside graph models: PyTorch's arguments, return values and parameter names (a
PyTorch state dict loads as it is and gives PyTorch's outputs and gradients), a character-level
classifier that learns, checkpoints, ONNX exports that onnx.checker, onnxruntime and tract agree with,
and a GRU exported by PyTorch itself running on tract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file

import kiln
import kiln.nn.functional as F
from kiln import nn, optim
from kiln.errors import InvalidInputError, ShapeError

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


class GRUNet(nn.Module):
    """tests/fixtures/grad/make_grad_fixtures.py's GRUNet, line for line."""

    def __init__(self) -> None:
        super().__init__()
        self.init = nn.Linear(3, 4 * 5)
        self.gru = nn.GRU(3, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(30, 4)

    def forward(self, x):
        h0 = F.tanh(self.init(x[:, 0])).reshape(-1, 4, 5).permute(1, 0, 2)
        out, h = self.gru(x, h0)
        top = h[2:4].permute(1, 0, 2).reshape(-1, 10)
        return self.head(F.cat([out.mean(dim=1), out[:, -1], top], dim=1))


class LSTMNet(nn.Module):
    """make_grad_fixtures.py's LSTMNet: time-major, (h0, c0) from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.init_h, self.init_c = nn.Linear(3, 4 * 4), nn.Linear(3, 4 * 4)
        self.lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x0 = x[:, 0]
        h0 = F.tanh(self.init_h(x0)).reshape(-1, 4, 4).permute(1, 0, 2)
        c0 = self.init_c(x0).reshape(-1, 4, 4).permute(1, 0, 2)
        out, (h, c) = self.lstm(x.permute(1, 0, 2), (h0, c0))
        return self.head(F.cat([out.mean(dim=0), h[3], c[2]], dim=1))


class CharClassifier(nn.Module):
    """Token ids → Embedding → a recurrent layer → the last layer's final state → logits."""

    def __init__(self, vocab: int, classes: int, cell: str = "GRU") -> None:
        super().__init__()
        self.cell = cell
        self.emb = nn.Embedding(vocab, 12)
        self.rnn = nn.GRU(12, 24, batch_first=True) if cell == "GRU" else nn.LSTM(12, 24, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, ids):
        if self.cell == "GRU":
            _, h = self.rnn(self.emb(ids))
        else:
            _, (h, _) = self.rnn(self.emb(ids))
        return self.head(h[-1])


def _fixture(name: str) -> dict[str, np.ndarray]:
    return load_file(FIXTURES / "grad" / f"{name}.safetensors")


@pytest.mark.parametrize("name, cls", [("gru", GRUNet), ("lstm", LSTMNet)])
def test_a_pytorch_state_dict_loads_and_gives_pytorchs_outputs_and_gradients(name, cls):
    ref = _fixture(name)
    model = cls()
    own = model.state_dict()
    assert set(own) == {k.removeprefix("grad.") for k in ref if k.startswith("grad.")}
    model.load_state_dict({k: ref[k] for k in own})
    x, y = ref["input.x"], ref["target.0"]
    np.testing.assert_allclose(model.predict(x), ref["output.0"], atol=1e-5, rtol=0)
    model.train()
    loss = kiln.losses.cross_entropy(model(kiln.Tensor(x)), y)
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        want = ref[f"grad.{p.name}"]
        err = np.abs(p.grad - want).max()
        assert err <= 1e-5 * np.abs(want).max() + 1e-6, (p.name, err)


def _three_languages(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Made-up words from three "languages" that share letters but not syllables, padded with id 0."""
    syllables = [["ka", "to", "mi", "ra", "nu"], ["ers", "ten", "berg", "lin", "sch"], ["ou", "eau", "ez", "ai", "le"]]
    alphabet = sorted({c for lang in syllables for s in lang for c in s})
    ids = {c: i + 1 for i, c in enumerate(alphabet)}
    X = np.zeros((n, 12), dtype=np.int64)
    y = rng.integers(0, 3, n)
    words = []
    for row, lang in enumerate(y):
        word = "".join(rng.choice(syllables[lang], rng.integers(2, 4)))[:12]
        words.append(word)
        X[row, : len(word)] = [ids[c] for c in word]
    return X, y, words


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_a_char_level_classifier_learns_which_language_a_word_is_from(cell, rng):
    X, y, _ = _three_languages(rng, 600)
    model = CharClassifier(int(X.max()) + 1, 3, cell)
    model.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    before = model.evaluate(X[400:], y[400:])["accuracy"]
    history = model.fit(X[:400], y[:400], epochs=12, batch_size=32, verbose=0)
    after = model.evaluate(X[400:], y[400:])["accuracy"]
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert after >= 0.9 > before + 0.3, (before, after)  # chance is 1/3


def _inputs(model: nn.Module, batch: int, rng) -> np.ndarray:
    if isinstance(model, CharClassifier):
        return rng.integers(0, 10, (batch, 12)).astype(np.int64)
    return rng.standard_normal((batch, 5, 3)).astype(np.float32)


MODELS = {
    "gru-h0": GRUNet,
    "lstm-h0-c0": LSTMNet,
    "char-gru": lambda: CharClassifier(10, 3),
    "char-lstm": lambda: CharClassifier(10, 3, "LSTM"),  # zero initial states, spelled out in the file
}


@pytest.mark.parametrize("name", MODELS)
def test_exports_agree_with_onnxruntime_tract_and_predict(name, rng, tmp_path):
    model = MODELS[name]()
    model.predict(_inputs(model, 2, rng))  # traced
    data = model.export_onnx()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert ops & {"GRU", "LSTM"}, ops
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    sessions = [kiln.InferenceSession(data), kiln.InferenceSession(data, engine="tract")]
    for batch in (1, 37):
        x = _inputs(model, batch, rng)
        want = model.predict(x)
        (got,) = ref.run(None, {ref.get_inputs()[0].name: x})
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        for s in sessions:
            np.testing.assert_allclose(s.run(x), want, atol=1e-5, rtol=0)
    model.save(tmp_path / "m.kiln")
    x = _inputs(model, 4, rng)
    np.testing.assert_array_equal(kiln.load(tmp_path / "m.kiln").predict(x), model.predict(x))


def test_a_gru_exported_by_pytorch_runs_on_both_engines_as_in_pytorch():
    path = FIXTURES / "foreign" / "torch_gru.onnx"
    onnx.checker.check_model(onnx.load(path), full_check=True)
    record = json.loads(path.with_suffix(".json").read_text())
    (ids,) = [np.array(i["data"], dtype=np.int64).reshape(i["shape"]) for i in record["inputs"]]
    for engine, runs_on in (("tract", "tract"), ("auto", "kiln"), ("kiln", "kiln")):
        sess = kiln.InferenceSession(path, engine=engine)
        assert sess.engine == runs_on
        got = sess.run(ids)
        for o in record["outputs"]:
            want = np.array(o["data"], dtype=np.float32).reshape(o["shape"])
            np.testing.assert_allclose(got[o["name"]], want, atol=1e-5, rtol=0)


def test_names_repr_and_weights_as_pytorch():
    gru = nn.GRU(3, 5, num_layers=2, batch_first=True, bidirectional=True)
    assert repr(gru) == "GRU(3, 5, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(nn.LSTM(4, 2, bias=False, dropout=0.25)) == "LSTM(4, 2, bias=False, dropout=0.25)"
    net = GRUNet()
    net.predict(np.zeros((2, 5, 3), np.float32))
    assert net.gru.weight_ih_l1_reverse.shape == (15, 10)
    bound = 1 / np.sqrt(5)
    assert all(np.abs(v).max() <= bound for k, v in net.state_dict().items() if k.startswith("gru."))


def test_bad_arguments_and_calls_are_clear_errors():
    with pytest.raises(InvalidInputError, match="hidden_size"):
        nn.GRU(3, 0)
    with pytest.raises(InvalidInputError, match="dropout"):
        nn.LSTM(3, 4, dropout=1.5)
    with pytest.raises(InvalidInputError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(InvalidInputError, match="Sequential"):
        nn.Sequential(nn.GRU(3, 4)).predict(np.zeros((2, 5, 3), np.float32))

    class PairWanted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            out, _ = self.lstm(x, x)
            return out[:, -1]

    with pytest.raises(InvalidInputError, match="pair"):
        PairWanted().predict(np.zeros((2, 5, 3), np.float32))

    class WrongSize(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 4, batch_first=True)

        def forward(self, x):
            out, _ = self.gru(x)
            return out[:, -1]

    with pytest.raises(ShapeError, match=r"gru \(GRU\) at test_rnn.py:\d+.*input_size 4"):
        WrongSize().predict(np.zeros((2, 5, 3), np.float32))


def test_generation_carries_a_grus_state_and_writes_the_windowed_reruns_text():
    """kiln.text.generate on a char-GRU language model runs one step per token from the state the
    last one left; kiln's engine reruns the window on the exported file. Same seeds, same text, past
    the window's end too (the state restarts on the last T ids, as the rerun sees them)."""

    class CharLM(nn.Module):
        def __init__(self, vocab: int) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, 8)
            self.gru = nn.GRU(8, 16, num_layers=2, batch_first=True)
            self.out = nn.Linear(16, vocab)

        def forward(self, x):
            out, _ = self.gru(self.emb(x))
            return self.out(out)

    tok = kiln.text.CharTokenizer.fit(["anna", "maria", "tom", "alan"])
    kiln.manual_seed(2)
    lm = CharLM(tok.vocab_size)
    lm.predict(np.zeros((1, 10), np.int64))
    sd = lm.state_dict()
    sd["out.bias"][3] = -30.0  # no <eos>: the text runs past the window
    lm.load_state_dict(sd)
    sess = kiln.InferenceSession(lm.export_onnx(tokenizer=tok))
    for seed, prompt in ((0, "ma"), (1, ""), (2, "tom a")):
        want = kiln.text.generate(sess, None, prompt, 20, 1.0, None, seed)
        assert len(want) == len(prompt) + 20
        assert kiln.text.generate(lm, tok, prompt, 20, 1.0, None, seed) == want
