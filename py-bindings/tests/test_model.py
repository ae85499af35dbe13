"""nn.Sequential as a model: compile, weights in and out, freezing, save/load and determinism."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from conftest import assert_same_state, compiled, digits_cnn, small_classifier
from safetensors import safe_open

import kiln
from kiln import nn, optim
from kiln.errors import CheckpointError, InvalidInputError, KilnError, KilnIOError


def _train(model, data, epochs=2, **kw):
    compiled(model)
    return model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0, **kw)


# ---- compile ------------------------------------------------------------------------------------
def test_compile_accepts_names_and_objects(digits):
    model = small_classifier()
    model.compile()  # defaults: adam, cross_entropy
    model.compile(optimizer="sgd", loss=kiln.losses.CrossEntropyLoss(label_smoothing=0.1), metrics=["acc"])
    assert model._core.compiled and model._core.lr == pytest.approx(1e-3)  # PyTorch's SGD default, from the core
    logs = model.evaluate(digits.x_test, digits.y_test)
    assert set(logs) == {"loss", "accuracy"}


@pytest.mark.parametrize("kw,match", [
    (dict(optimizer="adagrad"), "unknown optimizer 'adagrad'; known: sgd, adam, adamw, rmsprop"),
    (dict(optimizer=42), "optimizer must be a kiln.optim optimizer"),
    (dict(loss="hinge"), "unknown loss 'hinge'; known losses: mse"),
    (dict(metrics=["f1"]), 'unknown metric "f1". Known metrics: accuracy, mae, mse'),
    (dict(lr_schedule=lambda e: 0.1), "lr_schedule must be a kiln.optim schedule"),
])
def test_compile_rejects_unknown_names(kw, match):
    with pytest.raises(InvalidInputError) as e:
        small_classifier().compile(**kw)
    assert match in str(e.value)


def test_predict_needs_no_compile(digits):
    out = small_classifier().predict(digits.x_test[:5])
    assert out.shape == (5, 10) and out.dtype == np.float32 and np.isfinite(out).all()


# ---- weights in and out ---------------------------------------------------------------------------
def test_state_dict_is_a_copy():
    model = small_classifier()
    sd = model.state_dict()
    sd["0.weight"][:] = 123.0
    assert not np.any(model.state_dict()["0.weight"] == 123.0)


def test_load_state_dict_round_trip(rng):
    a, b = small_classifier(), small_classifier()
    x = rng.standard_normal((8, 64)).astype(np.float32)
    assert not np.array_equal(a.predict(x), b.predict(x))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    # any float array-like is accepted (converted to float32)
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert_same_state(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.pop("2.bias"), 'missing tensor "2.bias"'),
    (lambda sd: sd.update(extra=np.zeros(3)), 'unexpected tensor "extra"'),
    (lambda sd: sd.update({"0.weight": np.zeros((3, 3))}),
     'tensor "0.weight" has shape [3, 3], the model expects [16, 64]'),
])
def test_load_state_dict_names_what_does_not_fit(edit, match):
    model = small_classifier()
    sd = model.state_dict()
    edit(sd)
    with pytest.raises(CheckpointError) as e:
        model.load_state_dict(sd)
    assert match in str(e.value)


def test_flat_parameters_round_trip():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    flat = model.get_flat_parameters()
    # trainable values only (buffers excluded), in state-dict order
    sd = model.state_dict()
    expected = np.concatenate([sd[n].ravel() for n, _ in model.named_parameters()])
    np.testing.assert_array_equal(flat, expected)
    assert flat.dtype == np.float32 and flat.size == model.num_parameters() == 12
    model.set_flat_parameters(np.arange(12, dtype=np.float64))
    np.testing.assert_array_equal(model[0].weight, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(model[1].bias, [10, 11])
    with pytest.raises(KilnError, match="12"):
        model.set_flat_parameters(np.zeros(5))


def test_freeze_keeps_weights_and_unfreeze_trains_again(digits):
    model = compiled(small_classifier())
    assert model.freeze("0.") == 2
    assert model.num_parameters() == 16 * 10 + 10
    before = model.state_dict()
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    np.testing.assert_array_equal(after["0.bias"], before["0.bias"])
    assert not np.array_equal(after["2.weight"], before["2.weight"])
    assert model.unfreeze() == 4 and model.freeze("7.") == 0
    model.unfreeze()
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    assert not np.array_equal(model.state_dict()["0.weight"], before["0.weight"])


def test_input_shape_is_learned_by_fit_and_can_be_set(digits):
    model = small_classifier()
    assert model.input_shape is None
    _train(model, digits, epochs=1)
    assert model.input_shape == (64,)
    other = small_classifier()
    other.input_shape = [64]
    assert other.input_shape == (64,)


def test_input_shape_is_learned_by_predict(digits):
    # model.py documents it: "known after the first fit/predict"; export relies on it.
    model = small_classifier()
    model.predict(digits.x_test[:3])
    assert model.input_shape == (64,)


def test_failed_fit_does_not_poison_the_input_shape(digits, rng):
    # A fit on the wrong width fails at layer 0, and must not leave the model believing it was trained on
    # that width: the right data must still train and predict afterwards.
    model = compiled(small_classifier())
    with pytest.raises(kiln.ShapeError, match="layer 0"):
        model.fit(rng.standard_normal((40, 63)).astype(np.float32), digits.y_train[:40], verbose=0)
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    assert model.predict(digits.x_test[:2]).shape == (2, 10)


# ---- save and load --------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_predictions(digits, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))
    x = digits.x_train.reshape(-1, 1, 8, 8)
    compiled(model).fit(x, digits.y_train, epochs=1, verbose=0)
    path = tmp_path / "digits.kiln"
    model.save(path)  # a pathlib.Path works as well as a str
    loaded = kiln.load(str(path))
    assert repr(loaded) == repr(model)
    assert loaded.input_shape == (1, 8, 8)
    assert_same_state(model.state_dict(), loaded.state_dict())
    xt = digits.x_test.reshape(-1, 1, 8, 8)
    np.testing.assert_array_equal(loaded.predict(xt), model.predict(xt))
    # a loaded model trains on after compile
    with pytest.raises(InvalidInputError, match="not compiled"):
        loaded.evaluate(xt, digits.y_test)
    compiled(loaded).fit(x, digits.y_train, epochs=1, verbose=0)


def test_checkpoint_is_safetensors_with_the_architecture(tmp_path):
    model = small_classifier()
    model.save(tmp_path / "m.kiln")
    with safe_open(str(tmp_path / "m.kiln"), "np") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == sorted(model.state_dict())
        np.testing.assert_array_equal(f.get_tensor("0.weight"), model[0].weight)
    arch = json.loads(meta["kiln.architecture"])
    assert [layer["type"] for layer in arch["layers"]] == ["Linear", "ReLU", "Linear"]
    assert meta["kiln.version"] == kiln.__version__
    assert not list(tmp_path.glob("*.tmp*")), "the atomic write left a temporary file behind"


def test_load_errors(tmp_path):
    with pytest.raises(KilnIOError, match="missing.kiln") as e:
        kiln.load(tmp_path / "missing.kiln")
    assert isinstance(e.value, OSError)
    bad = tmp_path / "bad.kiln"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a kiln checkpoint"):
        kiln.load(bad)


def test_save_into_a_missing_folder_is_an_io_error(tmp_path):
    with pytest.raises(KilnIOError):
        small_classifier().save(pathlib.Path(tmp_path, "no", "such", "dir", "m.kiln"))


# ---- determinism ------------------------------------------------------------------------------------
def _seeded_run(seed, digits, build=digits_cnn):
    kiln.manual_seed(seed)
    model = build()
    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(digits.x_train[:400].reshape(-1, 1, 8, 8), digits.y_train[:400], epochs=2,
                        batch_size=32, validation_split=0.2, verbose=0)
    return model.state_dict(), history.history


def test_same_seed_gives_bit_identical_training(digits):
    sd1, h1 = _seeded_run(7, digits)
    sd2, h2 = _seeded_run(7, digits)
    assert_same_state(sd1, sd2)
    assert h1 == h2


def test_same_seed_with_dropout_and_shuffling_is_bit_identical(digits):
    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    sd1, _ = _seeded_run(3, digits, build)
    sd2, _ = _seeded_run(3, digits, build)
    assert_same_state(sd1, sd2)


def test_different_seeds_differ(digits):
    sd1, _ = _seeded_run(1, digits)
    sd2, _ = _seeded_run(2, digits)
    assert not np.array_equal(sd1["0.weight"], sd2["0.weight"])


def test_each_model_draws_its_own_seed():
    kiln.manual_seed(5)
    a, b = small_classifier(), small_classifier()
    assert not np.array_equal(a[0].weight, b[0].weight)
    kiln.manual_seed(5)
    np.testing.assert_array_equal(small_classifier()[0].weight, a[0].weight)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_manual_seed_rejects_bad_seeds(seed):
    with pytest.raises(InvalidInputError, match="non-negative integer"):
        kiln.manual_seed(seed)
