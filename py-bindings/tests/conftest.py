"""Shared data sets and helpers. The scikit-learn data sets ship inside the wheel (no download), so the
suite runs offline. Each fixture is session-scoped: the arrays are built once and treated as read-only."""

from __future__ import annotations

import os

# Before anything imports pyplot: History.plot must work on a machine without a display.
os.environ.setdefault("MPLBACKEND", "Agg")

from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kiln  # noqa: E402


@dataclass(frozen=True)
class Split:
    """A train/test split: float32 inputs, targets as the loss wants them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # statistics from the training part only, as a user should
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


@pytest.fixture(scope="session")
def digits() -> Split:
    """8x8 digits scaled to [0, 1] (x / 16), 1347 train / 450 test, stratified; labels int64."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Split(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64))


@pytest.fixture(scope="session")
def breast_cancer() -> Split:
    """Standardised features; y as a float32 column (binary_cross_entropy wants values shaped like the output)."""
    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    xtr, xte = _standardise(xtr, xte)
    return Split(xtr, ytr.astype(np.float32)[:, None], xte, yte.astype(np.float32)[:, None])


@pytest.fixture(scope="session")
def diabetes() -> Split:
    """Standardised features and target (a float32 column). On this split (random_state=42) least squares
    reaches R² 0.49; a small MLP about 0.52."""
    x, y = load_diabetes(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=42)
    xtr, xte = _standardise(xtr, xte)
    ytr2, yte2 = _standardise(ytr[:, None], yte[:, None])
    return Split(xtr, ytr2, xte, yte2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_seed() -> None:
    """Every test starts from the same global seed, so a test's outcome does not depend on the order."""
    kiln.manual_seed(0)


def digits_mlp() -> kiln.nn.Sequential:
    """The MLP the issue measures: 64-128-64-10."""
    nn = kiln.nn
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def digits_cnn() -> kiln.nn.Sequential:
    """The CNN of DESIGN.md: Conv2d(1,16,3,padding=1)-ReLU-MaxPool2d(2)-Flatten-Linear(256,10)."""
    nn = kiln.nn
    return nn.Sequential(nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 10))


def small_classifier(in_features: int = 64, classes: int = 10) -> kiln.nn.Sequential:
    """A small MLP for tests that need a model, not accuracy."""
    nn = kiln.nn
    return nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, classes))


def compiled(model: kiln.nn.Sequential, loss: str = "cross_entropy", lr: float = 1e-3,
             metrics: tuple[str, ...] = ("accuracy",)) -> kiln.nn.Sequential:
    model.compile(optimizer=kiln.optim.Adam(lr=lr), loss=loss, metrics=list(metrics))
    return model


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-for-bit equality of two state dicts (same names, shapes and bytes)."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


def randomise(model: kiln.nn.Sequential, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Give every parameter and buffer random values (running variances positive), so a test
    cannot pass on default values such as a zero bias or unit variance."""
    state = {}
    for name, value in model.state_dict().items():
        v = rng.standard_normal(value.shape).astype(np.float32)
        state[name] = np.abs(v) + 0.5 if name.endswith("running_var") else v
    model.load_state_dict(state)
    return state
