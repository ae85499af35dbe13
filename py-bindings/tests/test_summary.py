"""The first five minutes in Jupyter: model.summary(), the HTML reprs of models and History, and
errors whose tracebacks end at the user's line."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln import nn


def digits_cnn():
    kiln.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block(4)
        self.head = nn.Linear(4, 10)
        self.scale = nn.Parameter(np.ones(10))

    def forward(self, x):
        x = self.block(self.block(F.relu(self.stem(x))))  # the block twice: shared weights
        return self.head(x.mean(dim=(2, 3))) * self.scale


def test_sequential_summary_lists_each_layer_with_its_output_shape_and_parameters():
    s = digits_cnn().summary(input_shape=(1, 8, 8))
    assert [(r.name, r.kind, r.output_shape, r.params) for r in s.rows] == [
        ("0", "Conv2d", (16, 8, 8), 160), ("1", "ReLU", (16, 8, 8), 0), ("2", "MaxPool2d", (16, 4, 4), 0),
        ("3", "Flatten", (256,), 0), ("4", "Linear", (10,), 2570)]
    assert (s.trainable, s.non_trainable, s.total, s.bytes) == (2730, 0, 2730, 4 * 2730)
    text = str(s)
    assert "0 (Conv2d)" in text and "(None, 16, 8, 8)" in text and "2,570" in text
    assert "Total params: 2,730 (10.9 kB as float32)" in text
    # another input size, other shapes; a size the model cannot take fails as predict would, naming the layer
    convs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert [r.output_shape for r in convs.summary((1, 10, 10)).rows] == [(4, 8, 8), (4, 8, 8)]
    assert [r.output_shape for r in convs.summary((1, 5, 7)).rows] == [(4, 3, 5), (4, 3, 5)]
    with pytest.raises(kiln.ShapeError, match=r"layer 4 \(Linear\).*\[1, 1024\]"):
        digits_cnn().summary((1, 16, 16))


def test_summary_uses_the_shape_the_model_has_seen_and_asks_for_one_otherwise():
    model = digits_cnn()
    with pytest.raises(kiln.InvalidInputError, match=r"summary\(input_shape=\(1, 8, 8\)\)"):
        model.summary()
    model.predict(np.zeros((2, 1, 8, 8), np.float32))
    assert model.summary().inputs == [("input", (1, 8, 8))]
    with pytest.raises(kiln.InvalidInputError, match="positive ints"):
        model.summary((1, 0, 8))


def test_graph_model_summary_counts_shared_modules_once_and_lists_buffers_and_free_parameters():
    net = Net()
    s = net.summary((1, 8, 8))  # traces forward from the given shape
    rows = {r.name: r for r in s.rows}
    assert rows["stem"].output_shape == (4, 8, 8) and rows["stem"].params == 4 * 9 + 4
    assert rows["block.conv"].calls == 2 and rows["block.conv"].output_shape == (4, 8, 8)
    assert rows["block.bn"].trainable == 8 and rows["block.bn"].non_trainable >= 8  # running statistics
    assert rows["head"].output_shape == (10,)
    assert (rows["scale"].kind, rows["scale"].output_shape, rows["scale"].trainable) == ("Parameter", (10,), 10)
    assert s.trainable == net.num_parameters()
    assert "block.conv (Conv2d) ×2" in str(s)
    assert s.outputs == [(10,)]
    net.freeze("stem.")
    assert net.summary().trainable == net.num_parameters()
    assert {r.name: r for r in net.summary().rows}["stem"].non_trainable == 40


def test_html_reprs_for_models_and_history():
    model = digits_cnn()
    before = model._repr_html_()  # input shape unknown: the layers and a hint, no error
    assert "Conv2d" in before and "summary(input_shape" in before and "2,730 trainable parameters" in before
    assert "<script" not in before
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    X = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    y = np.arange(64) % 10
    history = model.fit(X, y, epochs=14, verbose=0, validation_split=0.25)
    table = model._repr_html_()
    assert "<table>" in table and "(None, 16, 4, 4)" in table and "Total params: 2,730" in table
    h = history._repr_html_()
    assert h.count("<tr>") == 1 + 11 and "…" in h and "val_accuracy" in h and "14 epochs" in h
    assert f"{history.history['loss'][-1]:.4g}" in h
    part = Net().block
    assert "Block" in part._repr_html_()  # a part of an unbuilt model shows its layers, draws nothing


def frames(error: BaseException) -> list[traceback.FrameSummary]:
    return traceback.extract_tb(error.__traceback__)


def test_errors_from_predict_and_fit_end_at_the_users_line_not_in_kiln():
    package = str(Path(kiln.__file__).parent)
    model = digits_cnn()
    model.compile()
    with pytest.raises(kiln.ShapeError) as info:
        model.predict(np.zeros((5, 3, 8, 8), np.float32))
    assert "layer 0 (Conv2d)" in str(info.value) and "3 channels" in str(info.value)
    stack = frames(info.value)
    assert stack[0].filename == __file__ and "model.predict" in stack[0].line
    inside = [f for f in stack if f.filename.startswith(package)]
    assert [f.name for f in inside] == ["call"], f"only the entry point's one frame is kiln's: {inside}"
    with pytest.raises(kiln.ShapeError) as info:
        model.fit(np.zeros((5, 1, 8, 7), np.float32), np.zeros(5, np.int64), verbose=0)
    assert "layer 4 (Linear)" in str(info.value) and "[5, 192]" in str(info.value)
    assert len([f for f in frames(info.value) if f.filename.startswith(package)]) == 1


class Mismatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(5, 2)

    def forward(self, x):
        return self.b(self.a(x))  # the line the traceback must end at


def test_a_tracing_error_ends_at_the_line_in_forward():
    m = Mismatch()
    with pytest.raises(kiln.ShapeError) as info:
        m.predict(np.zeros((3, 8), np.float32))
    last = frames(info.value)[-1]
    assert (last.filename, last.name) == (__file__, "forward") and "self.b(self.a(x))" in last.line
    assert "b (Linear)" in str(info.value) and "test_summary.py" in str(info.value)


def test_full_tracebacks_on_request(monkeypatch):
    monkeypatch.setenv("KILN_FULL_TRACEBACK", "1")
    with pytest.raises(kiln.ShapeError) as info:
        digits_cnn().predict(np.zeros((5, 3, 8, 8), np.float32))
    assert any(f.filename.endswith("model.py") for f in frames(info.value))


def test_errors_from_users_callbacks_keep_their_own_traceback():
    class Boom(kiln.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("from the callback")

    model = digits_cnn()
    model.compile()
    with pytest.raises(RuntimeError, match="from the callback") as info:
        model.fit(np.zeros((8, 1, 8, 8), np.float32), np.zeros(8, np.int64), verbose=0, callbacks=[Boom()])
    assert frames(info.value)[-1].name == "on_epoch_end"
