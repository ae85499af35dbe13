"""kiln.losses: every loss and metric value against its formula (PyTorch's definitions), computed by
``evaluate`` on a model whose output is its input (a Linear with identity weights)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln import losses, nn
from kiln.errors import InvalidInputError, ShapeError


def identity_model(k: int, loss, metrics=()) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(k, k))
    model.load_state_dict({"0.weight": np.eye(k, dtype=np.float32), "0.bias": np.zeros(k, np.float32)})
    model.compile(optimizer="sgd", loss=loss, metrics=list(metrics))
    return model


@pytest.fixture
def regression(rng):
    out = rng.standard_normal((40, 3)).astype(np.float32) * 2
    target = rng.standard_normal((40, 3)).astype(np.float32)
    return out, target


def log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_mse(regression):
    out, t = regression
    logs = identity_model(3, "mse", ["mae", "mse"]).evaluate(out, t)
    assert logs["loss"] == pytest.approx(((out - t) ** 2).mean(), rel=1e-5)
    assert logs["mse"] == pytest.approx(((out - t) ** 2).mean(), rel=1e-5)
    assert logs["mae"] == pytest.approx(np.abs(out - t).mean(), rel=1e-5)


def test_mae(regression):
    out, t = regression
    assert identity_model(3, "mae").evaluate(out, t)["loss"] == pytest.approx(np.abs(out - t).mean(), rel=1e-5)
    l1 = identity_model(3, losses.L1Loss()).evaluate(out, t)["loss"]
    assert l1 == pytest.approx(np.abs(out - t).mean(), rel=1e-5)


@pytest.mark.parametrize("delta", [1.0, 0.5, 3.0])
def test_huber(delta, regression):
    out, t = regression
    r = np.abs(out - t).astype(np.float64)
    expected = np.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)).mean()
    loss = "huber" if delta == 1.0 else losses.HuberLoss(delta=delta)
    assert identity_model(3, loss).evaluate(out, t)["loss"] == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_and_accuracy(rng):
    logits = (3 * rng.standard_normal((50, 4))).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    logs = identity_model(4, "cross_entropy", ["accuracy"]).evaluate(logits, labels)
    assert logs["loss"] == pytest.approx(-log_softmax(logits)[np.arange(50), labels].mean(), rel=1e-5)
    assert logs["accuracy"] == pytest.approx((logits.argmax(axis=1) == labels).mean())


def test_cross_entropy_with_class_weights(rng):
    # PyTorch: sum_i w[y_i] * nll_i / sum_i w[y_i]
    logits = rng.standard_normal((50, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 50)
    w = np.array([1.0, 2.0, 0.5])
    nll = -log_softmax(logits)[np.arange(50), labels]
    expected = (w[labels] * nll).sum() / w[labels].sum()
    loss = losses.CrossEntropyLoss(weight=list(w))
    assert identity_model(3, loss).evaluate(logits, labels)["loss"] == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_with_label_smoothing(rng):
    # PyTorch: (1 - ε) · nll + ε · mean over classes of −log p_c
    logits = rng.standard_normal((50, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 50)
    ls = log_softmax(logits)
    eps = 0.1
    expected = ((1 - eps) * -ls[np.arange(50), labels] + eps * -ls.mean(axis=1)).mean()
    loss = losses.CrossEntropyLoss(label_smoothing=eps)
    assert identity_model(5, loss).evaluate(logits, labels)["loss"] == pytest.approx(expected, rel=1e-5)


def test_binary_cross_entropy_on_logits(rng):
    z = (4 * rng.standard_normal((60, 1))).astype(np.float32)
    t = rng.integers(0, 2, (60, 1)).astype(np.float32)
    zz = z.astype(np.float64)
    expected = (np.maximum(zz, 0) - zz * t + np.log1p(np.exp(-np.abs(zz)))).mean()
    logs = identity_model(1, "binary_cross_entropy", ["accuracy"]).evaluate(z, t)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["accuracy"] == pytest.approx(((z > 0) == (t > 0.5)).mean())
    # extreme logits stay finite (the log-sum-exp form, not log(sigmoid))
    big = identity_model(1, "binary_cross_entropy").evaluate(np.array([[80.0], [-80.0]]), np.array([[0.0], [1.0]]))
    assert big["loss"] == pytest.approx(80.0, rel=1e-5)


def test_evaluate_batches_do_not_change_the_mean(rng):
    out = rng.standard_normal((300, 2)).astype(np.float32)
    t = rng.standard_normal((300, 2)).astype(np.float32)
    model = identity_model(2, "mse")
    assert model.evaluate(out, t, batch_size=7)["loss"] == pytest.approx(model.evaluate(out, t)["loss"], rel=1e-5)


def test_loss_objects_describe_themselves():
    assert repr(losses.HuberLoss(2.0)) == "HuberLoss(delta=2.0)"
    assert losses.CrossEntropyLoss(label_smoothing=0.2).spec() == {
        "name": "cross_entropy", "label_smoothing": 0.2, "class_weights": None}
    assert losses.BCEWithLogitsLoss().spec() == {"name": "binary_cross_entropy"}
    assert losses.MSELoss().spec() == {"name": "mse"}


@pytest.mark.parametrize("make,match", [
    (lambda: losses.HuberLoss(delta=0), "delta must be positive"),
    (lambda: losses.CrossEntropyLoss(label_smoothing=1.5), "label_smoothing must be in"),
    (lambda: losses.loss_spec("hinge"), "unknown loss 'hinge'"),
])
def test_bad_loss_arguments(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_targets_that_do_not_fit_the_loss(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(ShapeError,
                       match=r"targets of shape \[4, 2\] do not match the model's output of shape \[4, 3\]"):
        identity_model(3, "mse").evaluate(x, np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match="2 class weights for 3 classes"):
        identity_model(3, losses.CrossEntropyLoss(weight=[1.0, 2.0])).evaluate(x, np.array([0, 1, 2, 0]))
    with pytest.raises(InvalidInputError, match="targets contain NaN"):
        identity_model(3, "mse").evaluate(x, np.full((4, 3), np.nan, np.float32))
    with pytest.raises(ShapeError, match=r"labels of shape \[4, 3\] \(one per position\).*one-hot rows"):
        identity_model(3, "cross_entropy").evaluate(x, np.zeros((4, 3)))
    with pytest.raises(InvalidInputError, match="1-D array of integer class labels"):
        identity_model(3, "cross_entropy").evaluate(x, np.zeros((4, 3, 1, 2)))
