"""kiln.errors: bad input gives an exception of the right class whose message says what was wrong
(never a panic, never a bare RuntimeError). Each test asserts on the parts of the message a user needs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compiled, small_classifier

import kiln
from kiln import errors, nn
from kiln.errors import (
    CheckpointError,
    InvalidInputError,
    KilnError,
    KilnIOError,
    OnnxError,
    ShapeError,
    TrainingError,
)


@pytest.fixture
def data(rng):
    return rng.random((100, 64)).astype(np.float32), rng.integers(0, 10, 100)


@pytest.fixture
def model():
    return compiled(small_classifier())


def message(excinfo) -> str:
    return str(excinfo.value)


def test_exception_tree():
    for cls in (ShapeError, InvalidInputError, CheckpointError, OnnxError, TrainingError, KilnIOError):
        assert issubclass(cls, KilnError)
    # the Python classes users already catch
    assert issubclass(ShapeError, ValueError) and issubclass(InvalidInputError, ValueError)
    assert issubclass(KilnIOError, OSError)
    assert kiln.ShapeError is errors.ShapeError and kiln.KilnError is errors.KilnError


def test_errors_from_rust_are_the_kiln_errors_classes(model, data):
    # the binding maps the core's errors onto these very classes (not copies, not RuntimeError)
    x, y = data
    with pytest.raises(ShapeError) as e:
        model._core.fit([x], [y[:50].astype(np.int64)], "{}")
    assert type(e.value) is errors.ShapeError


def test_strings_as_input(model, data):
    _, y = data
    with pytest.raises(InvalidInputError) as e:
        model.fit(np.array([["a"] * 64] * 100), y, verbose=0)
    assert "x must be a numeric array" in message(e) and "<U1" in message(e)
    with pytest.raises(InvalidInputError, match="x must be a numeric array, got dtype object"):
        model.predict(np.array([None, 1.0], dtype=object))
    with pytest.raises(InvalidInputError, match="must be real-valued, got dtype complex128"):
        model.predict(np.zeros((2, 64), complex))


def test_strings_as_labels(model, data):
    x, _ = data
    with pytest.raises(InvalidInputError, match="y must hold integer class labels, got dtype <U"):
        model.fit(x, np.array(["cat"] * 100), verbose=0)
    with pytest.raises(InvalidInputError, match="whole-number class labels"):
        model.fit(x, np.full(100, 0.5), verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad, model, data):
    x, y = data
    x = x.copy()
    x[3, 5] = bad
    with pytest.raises(InvalidInputError) as e:
        model.fit(x, y, verbose=0)
    # names the call, the value and where it is (row 3, column 5 → flat index 3 * 64 + 5)
    assert message(e) == f"fit: the input contains {str(np.float32(bad)).replace('nan', 'NaN')} at flat index 197"
    with pytest.raises(InvalidInputError, match="predict: the input contains NaN or infinity"):
        model.predict(x)
    with pytest.raises(InvalidInputError, match="evaluate: the input contains"):
        model.evaluate(x, y)


def test_nan_in_regression_targets():
    model = compiled(nn.Sequential(nn.Linear(3, 1)), loss="mse", metrics=())
    with pytest.raises(InvalidInputError, match="fit: the targets contain NaN or infinity"):
        model.fit(np.zeros((4, 3)), np.array([[1.0], [np.nan], [0.0], [0.0]]), verbose=0)


def test_label_out_of_range(model, data):
    x, y = data
    y = y.copy()
    y[7] = 10
    with pytest.raises(InvalidInputError) as e:
        model.fit(x, y, verbose=0)
    assert message(e) == "cross_entropy: label 10 is out of range for 10 classes (labels must be 0..9)"
    with pytest.raises(InvalidInputError, match="label 10 is out of range"):
        model.evaluate(x, y)
    with pytest.raises(InvalidInputError, match="labels must be non-negative class indices, got -1"):
        model.fit(x, np.full(100, -1), verbose=0)


def test_empty_arrays(model):
    with pytest.raises(InvalidInputError, match=r"x is empty \(shape \(0, 64\)\)"):
        model.fit(np.zeros((0, 64)), np.zeros(0, int), verbose=0)
    with pytest.raises(InvalidInputError, match="x is empty"):
        model.predict(np.zeros((0, 64), np.float32))
    with pytest.raises(InvalidInputError, match="x must have a batch dimension, got a scalar"):
        model.predict(np.float32(1.0))
    with pytest.raises(ShapeError, match="fit: 4 input samples but 0 targets"):
        model.fit(np.zeros((4, 64)), np.zeros(0, int), verbose=0)


def test_used_before_compile(data):
    x, y = data
    model = small_classifier()
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y)):
        with pytest.raises(InvalidInputError) as e:
            call()
        assert "not compiled" in message(e) and "model.compile(" in message(e)


def test_mismatched_lengths(model, data):
    x, y = data
    with pytest.raises(ShapeError) as e:
        model.fit(x, y[:50], verbose=0)
    assert message(e) == "fit: 100 input samples but 50 targets"
    with pytest.raises(ShapeError, match="evaluate: 100 input samples but 99 targets"):
        model.evaluate(x, y[:99])
    with pytest.raises(ShapeError, match="validation data: 100 input samples but 3 targets"):
        model.fit(x, y, validation_data=(x, y[:3]), verbose=0)


def test_wrong_input_width_names_the_layer_and_both_shapes(model, data, rng):
    x, y = data
    with pytest.raises(ShapeError) as e:
        model.fit(rng.random((100, 63)).astype(np.float32), y, batch_size=32, verbose=0)
    msg = message(e)
    assert "layer 0 (Linear)" in msg and "[32, 63]" in msg and "[16, 64]" in msg and "expects [N, 64]" in msg
    fresh = small_classifier()
    with pytest.raises(ShapeError, match=r"layer 0 \(Linear\): input of shape \[5, 63\] does not fit weight "
                                         r"of shape \[16, 64\] \(expects \[N, 64\]\)"):
        fresh.predict(rng.random((5, 63)))


def test_wrong_width_after_training_names_both_shapes(model, data, rng):
    x, y = data
    model.fit(x, y, verbose=0)
    with pytest.raises(ShapeError) as e:
        model.predict(rng.random((5, 63)))
    assert "[63]" in message(e) and "trained on samples of shape [64]" in message(e)


def test_shape_errors_deep_in_a_cnn_name_the_layer(rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with pytest.raises(ShapeError, match=r"layer 3 \(Linear\): input of shape \[2, 196\]"):
        model.predict(rng.random((2, 1, 9, 9)))
    with pytest.raises(ShapeError, match=r"layer 0 \(Conv2d\): input with 2 channels"):
        model.predict(rng.random((2, 2, 8, 8)))
    with pytest.raises(ShapeError, match=r"layer 0 \(Conv2d\): expects input \[N, C, H, W\]"):
        model.predict(rng.random((2, 64)))
    with pytest.raises(ShapeError, match=r"layer 0 \(MaxPool2d\): a \[5, 5\] window does not fit input \[2, 1, 3, 3\]"):
        nn.Sequential(nn.MaxPool2d(5)).predict(np.zeros((2, 1, 3, 3)))


def test_loss_that_becomes_nan_names_epoch_and_batch():
    model = nn.Sequential(nn.Linear(4, 1))
    model.compile(optimizer=kiln.optim.SGD(lr=1e6), loss="mse")
    x = np.full((64, 4), 1000.0, np.float32)
    with pytest.raises(TrainingError) as e:
        model.fit(x, np.full((64, 1), 1e6, np.float32), epochs=5, batch_size=16, shuffle=False, verbose=0)
    assert "loss became" in message(e) and "at epoch 1, batch" in message(e) and "lower the learning rate" in message(e)


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(epochs=2.0), "epochs must be a positive integer, got 2.0"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(validation_split=1.5), r"validation_split must be in \[0, 1\), got 1.5"),
    (dict(validation_split=0.001), "leaves 0 of 100 samples for validation"),
    (dict(validation_data=(np.zeros((2, 64)),)), r"validation_data must be a pair \(x_val, y_val\)"),
])
def test_bad_fit_arguments(kw, match, model, data):
    x, y = data
    with pytest.raises(InvalidInputError, match=match):
        model.fit(x, y, verbose=0, **kw)


@pytest.mark.parametrize("call", ["predict", "evaluate"])
def test_bad_batch_size_outside_fit(call, model, data):
    # batch_size=0 made predict return an empty array (and evaluate a baffling class-weights error)
    x, y = data
    args = (x,) if call == "predict" else (x, y)
    with pytest.raises(InvalidInputError, match="batch_size must be a positive integer, got 0"):
        getattr(model, call)(*args, batch_size=0)


def test_bad_architectures():
    with pytest.raises(InvalidInputError, match="a model needs at least one layer"):
        nn.Sequential()
    # refused when the layer is made, before any model holds it (core/src/nn/net.rs checks that a
    # model built from specs names the layer: "layer 1 (Conv2d): ...")
    with pytest.raises(InvalidInputError, match=r"^Linear: in_features must be positive"):
        nn.Sequential(nn.Linear(0, 2))
    with pytest.raises(InvalidInputError, match=r"^Conv2d: stride must be positive"):
        nn.Sequential(nn.ReLU(), nn.Conv2d(1, 2, 3, stride=0))


def test_embedding_ids_must_be_indices():
    model = nn.Sequential(nn.Embedding(3, 2))
    with pytest.raises(InvalidInputError, match=r"layer 0 \(Embedding\): input -1 is not an index in 0..3"):
        model.predict(np.array([[-1.0]]))
    with pytest.raises(InvalidInputError, match="input 1.5 is not an index"):
        model.predict(np.array([[1.5]]))


def test_io_errors_are_oserrors(tmp_path):
    with pytest.raises(KilnIOError) as e:
        kiln.load(tmp_path)
    assert isinstance(e.value, OSError) and str(tmp_path) in message(e)
    with pytest.raises(KilnIOError, match="No such file or directory"):
        small_classifier().export_onnx(tmp_path / "no" / "m.onnx", input_shape=(64,))
