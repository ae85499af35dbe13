"""kiln.drift: the reference export stores, the monitor's verdicts on in-distribution and shifted
digits (false-alarm and detection rates measured here and printed), bad observations, and the
feedback file. The numbers are kiln-core's (core/src/drift); wasm/tests/drift.test.mjs checks that
kiln-wasm's monitor gives the same reports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import kiln
from kiln import nn, optim
from kiln.drift import DriftMonitor, load_feedback, model_version, save_feedback


def _images(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(-1, 1, 8, 8))


def thick(x: np.ndarray) -> np.ndarray:
    """Strokes one pixel wider: each pixel takes the brightest of itself and its right/lower neighbours."""
    p = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
    return np.maximum.reduce([p[:, :, :-1, :-1], p[:, :, 1:, :-1], p[:, :, :-1, 1:], p[:, :, 1:, 1:]])


def off_centre(x: np.ndarray) -> np.ndarray:
    """The digit moved two pixels right and one down (what falls off the edge is lost)."""
    out = np.zeros_like(x)
    out[:, :, 1:, 2:] = x[:, :, :-1, :-2]
    return out


def other_style(x: np.ndarray) -> np.ndarray:
    """A different hand: the digit mirrored left to right, drawn with a fainter pen."""
    return np.ascontiguousarray(x[:, :, :, ::-1] * 0.7)


SHIFTS = {"thick strokes": thick, "off-centre": off_centre, "other style": other_style}


@pytest.fixture(scope="module")
def deployed(digits, tmp_path_factory):
    """The README's digits CNN, trained briefly and exported with and without its reference."""
    xtr, xte = _images(digits.x_train), _images(digits.x_test)
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    model.compile(optimizer=optim.Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    model.fit(xtr, digits.y_train, epochs=8, batch_size=32, verbose=0)
    d = tmp_path_factory.mktemp("drift")
    plain, with_ref = d / "plain.onnx", d / "digits.onnx"
    model.export_onnx(plain, labels=[str(i) for i in range(10)])
    model.export_onnx(with_ref, labels=[str(i) for i in range(10)], reference=xtr)
    return model, plain, with_ref, xtr, xte


def _alarms(path, stream: np.ndarray, window: int, windows: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    mon = DriftMonitor.from_onnx(path, window=window)
    alarms = 0
    for _ in range(windows):
        mon.reset()
        mon.update(stream[rng.choice(len(stream), size=window, replace=False)])
        alarms += mon.report()["drifted"]
    return alarms / windows


def test_the_reference_is_small_and_runtimes_that_ignore_it_still_run_the_model(deployed):
    model, plain, with_ref, xtr, xte = deployed
    meta = {p.key: p.value for p in onnx.load(with_ref).metadata_props}
    summary = len(meta["kiln.drift"].encode())
    size, size_ref = plain.stat().st_size, with_ref.stat().st_size
    print(f"\ndigits CNN: model {size} B, kiln.drift {summary} B, file with it {size_ref} B")
    assert size_ref - size < 700 and summary < 0.1 * size
    onnx.checker.check_model(onnx.load(with_ref))
    ours = kiln.InferenceSession(with_ref).run(xte[:16])
    np.testing.assert_allclose(ours, kiln.InferenceSession(plain).run(xte[:16]), atol=0)


def test_a_784_feature_input_stays_under_the_model_size(tmp_path, rng):
    # MNIST-sized flat input: blank borders and 256 grey levels, as scanned digits have
    x = np.zeros((2000, 28, 28), np.float32)
    x[:, 4:24, 4:24] = np.round(rng.random((2000, 20, 20)) ** 3 * 255) / 255
    x = x.reshape(2000, 784)
    model = nn.Sequential(nn.Linear(784, 10))
    model.compile(optimizer="adam", loss="cross_entropy")
    model.predict(x[:1])
    path = tmp_path / "flat.onnx"
    model.export_onnx(path)
    size = path.stat().st_size
    model.export_onnx(path, reference=x)
    summary = len({p.key: p.value for p in onnx.load(path).metadata_props}["kiln.drift"].encode())
    print(f"\n784 features: Linear(784, 10) model {size} B, kiln.drift {summary} B")
    assert summary < 0.75 * size
    mon = DriftMonitor.from_onnx(path, window=100)
    mon.update(x[:100])
    assert len(mon.report()["features"]) == 784 and not mon.report()["drifted"]


def test_in_distribution_windows_stay_quiet(deployed):
    _, _, path, _, xte = deployed
    rate = _alarms(path, xte, window=200, windows=300, seed=1)
    rate50 = _alarms(path, xte, window=50, windows=300, seed=2)
    print(f"\nfalse alarms on held-back digits: {rate:.3f} of 300 windows of 200, {rate50:.3f} of 300 windows of 50")
    assert rate <= 0.02 and rate50 <= 0.02


@pytest.mark.parametrize("kind", list(SHIFTS))
def test_each_kind_of_shift_is_caught_within_a_window_of_25(deployed, kind):
    _, _, path, _, xte = deployed
    shifted = SHIFTS[kind](xte)
    rates = {w: _alarms(path, shifted, window=w, windows=100, seed=3) for w in (10, 25, 50)}
    print(f"\n{kind}: detected in " + ", ".join(f"{r:.2f} of windows of {w}" for w, r in rates.items()))
    assert rates[25] >= 0.95 and rates[50] >= 0.95
    mon = DriftMonitor.from_onnx(path, window=200)
    mon.update(shifted[:200])
    report = mon.report()
    assert report["drifted"] and report["moved"], report["moved"]


def fainter(x: np.ndarray) -> np.ndarray:
    """A pen 5% fainter."""
    return x * np.float32(0.95)


def some_moved(x: np.ndarray) -> np.ndarray:
    """30% of the digits moved one pixel right."""
    out = x.copy()
    pick = np.random.default_rng(2).random(len(x)) < 0.3
    out[pick, :, :, 1:] = x[pick, :, :, :-1]
    out[pick, :, :, 0] = 0
    return out


@pytest.mark.parametrize("kind,shift", [("5% fainter", fainter), ("30% moved one pixel", some_moved)])
def test_a_subtle_shift_is_caught_as_the_window_grows(deployed, kind, shift):
    _, _, path, _, xte = deployed
    shifted = shift(xte)
    rates = {w: _alarms(path, shifted, window=w, windows=100, seed=4) for w in (10, 25, 50, 100, 200)}
    print(f"\n{kind}: detected in " + ", ".join(f"{r:.2f} of windows of {w}" for w, r in rates.items()))
    assert rates[10] <= 0.2 and rates[200] >= 0.95
    assert rates[10] <= rates[50] <= rates[200]


def test_the_report_says_what_moved(deployed):
    _, _, path, _, xte = deployed
    mon = DriftMonitor.from_onnx(path, window=100)
    mon.update(off_centre(xte)[:100])
    r = mon.report()
    assert r["ready"] and r["observed"] == 100 and r["seen"] == 100
    names = [f["name"] for f in r["features"]]
    assert sorted(names) == sorted(["mean", "std", "top-left", "top", "top-right", "left", "centre", "right",
                                    "bottom-left", "bottom", "bottom-right"])
    # moved right and down: the top row and the left columns empty, so their regions lead the report
    assert {"top", "left", "top-left", "bottom-left", "top-right"} & set(r["moved"][:3]), r["moved"]
    assert r["psi"] == max(f["psi"] for f in r["features"]) > 0.25
    assert abs(sum(r["classes"]["live"]) - 1) < 1e-9 and len(r["classes"]["reference"]) == 10
    assert 0 < r["confidence"]["live_mean"] <= 1 and 0.5 < r["confidence"]["reference_mean"] <= 1
    assert "drifted" in repr(mon)


def test_a_model_without_the_reference_gives_a_clear_error(deployed):
    _, plain, _, _, _ = deployed
    with pytest.raises(kiln.InvalidInputError, match=r"no training statistics.*reference=X_train"):
        DriftMonitor.from_onnx(plain)
    with pytest.raises(kiln.OnnxError, match="not an ONNX model"):
        DriftMonitor.from_onnx(b"definitely not onnx")


def test_nan_and_wrongly_shaped_observations_are_refused_without_poisoning_the_window(deployed):
    _, _, path, _, xte = deployed
    mon = DriftMonitor.from_onnx(path, window=50)
    mon.update(xte[:30])
    before = mon.report()
    bad = xte[30:40].copy()
    bad[4, 0, 3, 5] = np.nan
    with pytest.raises(kiln.InvalidInputError, match=r"observation 4 .*position 29.*nothing of this batch"):
        mon.update(bad)
    with pytest.raises(kiln.ShapeError, match=r"\[10, 64\].*\[batch, 1, 8, 8\]"):
        mon.update(xte[30:40].reshape(10, 64))
    with pytest.raises(kiln.InvalidInputError):
        mon.update(np.full((3, 1, 8, 8), np.inf, np.float32))
    after = mon.report()
    assert after["rejected"] == 10 + 10 + 3 and after.pop("rejected") != before.pop("rejected")
    assert after == before
    with pytest.raises(kiln.InvalidInputError, match="window"):
        DriftMonitor.from_onnx(path, window=0)


def test_every_loader_survives_mutated_bytes(deployed, tmp_path):
    _, _, path, _, xte = deployed
    model_bytes = path.read_bytes()
    save_feedback(tmp_path / "f.kiln-data", xte[:5], np.arange(5), model_version(path))
    fb = (tmp_path / "f.kiln-data").read_bytes()
    rng = np.random.default_rng(7)
    outcomes = {"model": [0, 0], "feedback": [0, 0]}
    for trial in range(400):
        for name, data, load in (("model", model_bytes, DriftMonitor.from_onnx), ("feedback", fb, load_feedback)):
            b = bytearray(data)
            if trial % 2:
                b = b[: rng.integers(len(b))]
            else:
                for at in rng.integers(len(b), size=3):
                    b[at] = rng.integers(256)
            try:
                load(bytes(b))
                outcomes[name][0] += 1
            except kiln.KilnError:
                outcomes[name][1] += 1
    print(f"\nmutated bytes (loaded, refused): {outcomes}")
    assert outcomes["model"][1] > 100 and outcomes["feedback"][1] > 100


def test_feedback_round_trips_with_its_model_version(deployed, tmp_path):
    _, _, path, _, xte = deployed
    version = model_version(path)
    assert version == model_version(path.read_bytes()) and len(version) == 16
    f = tmp_path / "feedback.kiln-data"
    save_feedback(f, xte[:7], [3, 1, 4, 1, 5, 9, 2], version)
    X, y = load_feedback(f)
    np.testing.assert_array_equal(X, xte[:7])
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1, 5, 9, 2]
    assert load_feedback(f).model_version == version
    with pytest.raises(kiln.InvalidInputError, match="not a kiln feedback file"):
        load_feedback(path)  # an ONNX file is not feedback
    with pytest.raises(kiln.ShapeError, match="7 examples but 2 labels"):
        save_feedback(f, xte[:7], [1, 2])


def test_the_report_is_plain_json(deployed):
    _, _, path, _, xte = deployed
    mon = DriftMonitor.from_onnx(path, window=20)
    mon.update(xte[:20])
    assert json.loads(json.dumps(mon.report())) == mon.report()


def test_graph_models_carry_a_reference_too(digits, tmp_path):
    import kiln.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            return self.head(F.relu(self.stem(x)).mean(dim=(2, 3)))

    xtr, xte = _images(digits.x_train), _images(digits.x_test)
    kiln.manual_seed(0)
    net = Net()
    net.compile(optimizer="adam", loss="cross_entropy")
    net.fit(xtr, digits.y_train, epochs=2, verbose=0)
    net.export_onnx(tmp_path / "net.onnx", reference=xtr)
    mon = DriftMonitor.from_onnx(tmp_path / "net.onnx", window=100)
    mon.update(xte[:100])
    assert not mon.report()["drifted"]
    mon.update(thick(xte[100:200]))
    assert mon.report()["drifted"]

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(3, 2)

        def forward(self, a, b):
            return self.a(a) + self.b(b)

    two = TwoInputs()
    two.compile(optimizer="adam", loss="cross_entropy")
    xa, xb = np.zeros((20, 4), np.float32), np.zeros((20, 3), np.float32)
    two.fit((xa, xb), np.zeros(20, np.int64), epochs=1, verbose=0)
    with pytest.raises(kiln.InvalidInputError, match="one array of training inputs"):
        two.export_onnx(tmp_path / "two.onnx", reference=(xa, xb))
