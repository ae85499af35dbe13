"""kiln.Tensor and hand-written loops: gradients of tensor expressions against their formulas, a
model called on tensors, loss.backward() / opt.step() / opt.zero_grad() against model.fit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same_state

import kiln
from kiln import losses, nn, optim
from kiln.errors import InvalidInputError, ShapeError


def test_gradient_of_a_polynomial():
    # d/dx sum(3x² + 2x) = 6x + 2
    x = kiln.Tensor([[1.0, -2.0], [0.5, 4.0]], requires_grad=True)
    (3 * x**2 + x * 2).sum().backward()
    np.testing.assert_allclose(x.grad, 6 * x.numpy() + 2, rtol=1e-6)
    assert x.requires_grad and x.shape == [2, 2]


def test_gradients_of_matmul_and_softmax_cross_entropy(rng):
    a_np = rng.standard_normal((4, 3)).astype(np.float32)
    w_np = rng.standard_normal((3, 5)).astype(np.float32)
    a, w = kiln.Tensor(a_np), kiln.Tensor(w_np, requires_grad=True)
    logits = a @ w
    loss = -(logits.log_softmax(dim=1) * kiln.Tensor(np.eye(5)[[0, 1, 2, 3]])).sum() / 4
    loss.backward()
    # d loss / d logits = (softmax − onehot) / N, and d/dw = aᵀ · that
    z = a_np @ w_np
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = a_np.T @ ((p - np.eye(5)[[0, 1, 2, 3]]) / 4)
    np.testing.assert_allclose(w.grad, expected, rtol=1e-4, atol=1e-6)
    assert a.grad is None  # no requires_grad, no gradient kept


@pytest.mark.parametrize("expr,ref", [
    (lambda t: t.exp(), np.exp),
    (lambda t: t.log(), np.log),
    (lambda t: t.sqrt(), np.sqrt),
    (lambda t: t.tanh(), np.tanh),
    (lambda t: t.sigmoid(), lambda v: 1 / (1 + np.exp(-v))),
    (lambda t: t.relu(), lambda v: np.maximum(v, 0)),
    (lambda t: 1 - t, lambda v: 1 - v),
    (lambda t: 2 / t, lambda v: 2 / v),
    (lambda t: -t, lambda v: -v),
    (lambda t: t.softmax(), lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True)),
    (lambda t: t.mean(axis=[-1], keepdims=True), lambda v: v.mean(-1, keepdims=True)),
    (lambda t: t.max(1), lambda v: v.max(1)),
    (lambda t: t.reshape([3, 2]).permute([1, 0]), lambda v: v.reshape(3, 2).T),
])
def test_tensor_ops_match_numpy(expr, ref):
    v = np.array([[0.5, 1.5, 2.0], [0.25, 3.0, 1.0]], np.float32)
    np.testing.assert_allclose(expr(kiln.Tensor(v)).numpy(), ref(v.astype(np.float64)), rtol=1e-5)


def test_hand_written_loop_matches_fit(rng):
    x = rng.standard_normal((24, 4)).astype(np.float32)
    y = (x @ rng.standard_normal((4, 1))).astype(np.float32)

    kiln.manual_seed(9)
    by_fit = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    by_fit.compile(optimizer=optim.SGD(lr=0.05, momentum=0.9), loss="mse")
    by_fit.fit(x, y, epochs=5, batch_size=24, shuffle=False, verbose=0)

    kiln.manual_seed(9)
    by_hand = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = optim.SGD(by_hand.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        loss = losses.mse(by_hand(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    for name, value in by_fit.state_dict().items():
        np.testing.assert_allclose(by_hand.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_gradients_accumulate_until_zero_grad(rng):
    model = nn.Sequential(nn.Linear(3, 2))
    x, y = rng.standard_normal((5, 3)).astype(np.float32), rng.integers(0, 2, 5)
    (w,) = [p for p in model.parameters() if p.name == "0.weight"]
    assert w.grad is None and w.shape == (2, 3)
    losses.cross_entropy(model(x), y).backward()
    once = w.grad
    losses.cross_entropy(model(x), y).backward()
    np.testing.assert_allclose(w.grad, 2 * once, rtol=1e-6)
    model.zero_grad()
    assert w.grad is None or not np.any(w.grad)


def test_loss_functions_on_tensors_equal_evaluate(rng):
    model = nn.Sequential(nn.Linear(6, 4))
    model.compile(loss=losses.CrossEntropyLoss(label_smoothing=0.1))
    x, y = rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 4, 10)
    on_tensor = losses.cross_entropy(model.eval()(x), y, label_smoothing=0.1).numpy()
    assert float(on_tensor) == pytest.approx(model.evaluate(x, y)["loss"], rel=1e-5)


def test_train_and_eval_modes_for_calls(rng):
    kiln.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    x = rng.standard_normal((4, 8)).astype(np.float32)
    assert model.training
    np.testing.assert_allclose(model.eval()(x).numpy(), model.predict(x), rtol=1e-6)
    trained = model.train()(x).numpy()
    assert (trained == 0).mean() > 0.2  # dropout is on in training mode


def test_tensor_errors():
    done = kiln.Tensor([1.0, 2.0], requires_grad=True)
    (done * done).sum().backward()
    with pytest.raises(InvalidInputError, match="graph is finished"):
        done + 1
    with pytest.raises(InvalidInputError, match="different graphs"):
        kiln.Tensor([1.0]) + done
    with pytest.raises(InvalidInputError, match="cannot combine a Tensor with str"):
        kiln.Tensor([1.0]) + "a"
    with pytest.raises(ShapeError, match=r"matmul: shapes \[1, 2\] and \[1, 2\] do not fit"):
        kiln.Tensor([[1.0, 2.0]]) @ kiln.Tensor([[1.0, 2.0]])
    with pytest.raises(ShapeError, match="axis 3 is out of range for a tensor of rank 1"):
        kiln.Tensor([1.0, 2.0]).sum(axis=[3])
    with pytest.raises(ShapeError, match="the loss must be a single value, got shape"):
        kiln.Tensor([1.0, 2.0], requires_grad=True).backward()
    with pytest.raises(InvalidInputError, match=r"step\(\) needs the parameters"):
        optim.SGD(lr=0.1).step()
    with pytest.raises(InvalidInputError, match="exactly one model"):
        optim.Adam([*nn.Sequential(nn.Linear(1, 1)).parameters(), *nn.Sequential(nn.Linear(1, 1)).parameters()])


def test_hand_loop_then_fit_then_save(rng, tmp_path):
    # the two ways of training share one model
    model = nn.Sequential(nn.Linear(3, 1))
    x, y = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    opt = optim.Adam(model.parameters(), lr=0.01)
    losses.mse(model(x), y).backward()
    opt.step()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.kiln")
    assert_same_state(kiln.load(tmp_path / "m.kiln").state_dict(), model.state_dict())
