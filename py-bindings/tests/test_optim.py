"""kiln.optim: each optimizer's update rule against PyTorch's algorithm written out in numpy, and the
learning-rate schedules against their formulas, observed through ``history.history["lr"]``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import small_classifier

from kiln import nn, optim
from kiln.errors import InvalidInputError

N, D = 32, 3


def _problem():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    return x, y


def _grads(w, b, x, y):
    """Gradients of mean((x wᵀ + b − y)²) for a Linear(3, 1): the loss "mse" over a full batch."""
    r = x.astype(np.float64) @ w.T + b - y
    return 2.0 / N * r.T @ x, 2.0 / N * r.sum(axis=0)


def _kiln_steps(opt, steps):
    """`steps` full-batch updates through model.fit; returns the initial and final (weight, bias)."""
    x, y = _problem()
    model = nn.Sequential(nn.Linear(D, 1))
    model.compile(optimizer=opt, loss="mse")
    w0, b0 = model[0].weight.astype(np.float64), model[0].bias.astype(np.float64)
    model.fit(x, y, epochs=steps, batch_size=N, shuffle=False, verbose=0)
    return (w0, b0), (model[0].weight, model[0].bias)


class _Ref:
    """PyTorch's optimizer algorithms (torch.optim docs, "Algorithm" boxes), on a list of float64 arrays."""

    def __init__(self, kind, **h):
        self.kind, self.h, self.t, self.state = kind, h, 0, {}

    def step(self, params, grads):
        h, self.t = self.h, self.t + 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            s = self.state.setdefault(i, {})
            wd = h.get("weight_decay", 0.0)
            if self.kind == "sgd":
                g = g + wd * p
                if h.get("momentum", 0.0):
                    buf = g.copy() if "buf" not in s else h["momentum"] * s["buf"] + (1 - h.get("dampening", 0.0)) * g
                    s["buf"] = buf
                    g = g + h["momentum"] * buf if h.get("nesterov") else buf
                out.append(p - h["lr"] * g)
            elif self.kind in ("adam", "adamw"):
                b1, b2 = h.get("betas", (0.9, 0.999))
                if self.kind == "adamw":
                    p = p * (1 - h["lr"] * wd)
                else:
                    g = g + wd * p
                s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
                v = s["v"]
                if h.get("amsgrad"):
                    s["vmax"] = v = np.maximum(s.get("vmax", 0), v)
                denom = np.sqrt(v) / math.sqrt(1 - b2**self.t) + h.get("eps", 1e-8)
                out.append(p - h["lr"] / (1 - b1**self.t) * s["m"] / denom)
            elif self.kind == "rmsprop":
                a, eps = h.get("alpha", 0.99), h.get("eps", 1e-8)
                g = g + wd * p
                s["v"] = a * s.get("v", 0) + (1 - a) * g * g
                v = s["v"]
                if h.get("centered"):
                    s["gavg"] = a * s.get("gavg", 0) + (1 - a) * g
                    v = v - s["gavg"] ** 2
                denom = np.sqrt(v) + eps
                if h.get("momentum", 0.0):
                    s["buf"] = h["momentum"] * s.get("buf", 0) + g / denom
                    out.append(p - h["lr"] * s["buf"])
                else:
                    out.append(p - h["lr"] * g / denom)
        return out


CASES = [
    ("sgd", optim.SGD(lr=0.1), dict(lr=0.1)),
    ("sgd", optim.SGD(lr=0.05, weight_decay=0.1), dict(lr=0.05, weight_decay=0.1)),
    ("sgd", optim.SGD(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9)),
    ("sgd", optim.SGD(lr=0.05, momentum=0.9, dampening=0.3), dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd", optim.SGD(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", optim.Adam(lr=0.01), dict(lr=0.01)),
    ("adam", optim.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
     dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("adam", optim.Adam(lr=0.01, amsgrad=True), dict(lr=0.01, amsgrad=True)),
    ("adamw", optim.AdamW(lr=0.01), dict(lr=0.01, weight_decay=0.01)),
    ("adamw", optim.AdamW(lr=0.01, weight_decay=0.5), dict(lr=0.01, weight_decay=0.5)),
    ("rmsprop", optim.RMSprop(lr=0.01), dict(lr=0.01)),
    ("rmsprop", optim.RMSprop(lr=0.01, momentum=0.5, centered=True), dict(lr=0.01, momentum=0.5, centered=True)),
    ("rmsprop", optim.RMSprop(lr=0.01, alpha=0.9, weight_decay=0.1), dict(lr=0.01, alpha=0.9, weight_decay=0.1)),
]


@pytest.mark.parametrize("kind,opt,hyper", CASES, ids=[repr(c[1]) for c in CASES])
def test_update_rule_matches_pytorch(kind, opt, hyper):
    steps = 4
    (w, b), (kw, kb) = _kiln_steps(opt, steps)
    ref = _Ref(kind, **hyper)
    x, y = _problem()
    for _ in range(steps):
        w, b = ref.step([w, b], list(_grads(w, b, x, y)))
    np.testing.assert_allclose(kw, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(kb, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("opt", [optim.SGD(lr=0.1, momentum=0.9), optim.Adam(lr=0.05), optim.AdamW(lr=0.05),
                                 optim.RMSprop(lr=0.03)], ids=repr)
def test_each_optimizer_fits_a_line(opt):
    x, y = _problem()
    model = nn.Sequential(nn.Linear(D, 1))
    model.compile(optimizer=opt, loss="mse")
    h = model.fit(x, y, epochs=60, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < 0.01 * h.history["loss"][0]
    np.testing.assert_allclose(model[0].weight, [[1.5, -2.0, 0.5]], atol=0.1)


def test_defaults_and_repr_follow_pytorch():
    assert optim.SGD().lr == 0.001 and optim.Adam().lr == 0.001 and optim.RMSprop().lr == 0.01  # torch 2.15: SGD 1e-3
    assert optim.AdamW().spec()["weight_decay"] == 0.01
    assert repr(optim.Adam(lr=0.1)) == "Adam(lr=0.1, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0, amsgrad=False)"
    assert optim.from_name("ADAMW").spec()["type"] == "AdamW"


@pytest.mark.parametrize("make,match", [
    (lambda: optim.SGD(lr=0), "learning rate must be a positive number"),
    (lambda: optim.Adam(lr=-1e-3), "learning rate must be a positive number"),
    (lambda: optim.Adam(weight_decay=-1), "weight_decay must be >= 0"),
    (lambda: optim.from_name("lbfgs"), "unknown optimizer 'lbfgs'"),
])
def test_bad_optimizer_arguments(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_lr_property_and_setter_reach_the_core():
    model = nn.Sequential(nn.Linear(2, 1))
    model.compile(optimizer=optim.SGD(lr=0.2), loss="mse")
    assert model._core.lr == pytest.approx(0.2)
    model._core.lr = 0.05
    assert model._core.lr == pytest.approx(0.05)


# ---- schedules --------------------------------------------------------------------------------------
def _lrs(schedule, epochs=7, freeze=False):
    x, y = _problem()
    model = nn.Sequential(nn.Linear(D, 1))
    model.compile(optimizer=optim.SGD(lr=0.1), loss="mse", lr_schedule=schedule)
    if freeze:
        model.freeze()  # a loss that cannot improve: a plateau by construction
    return model.fit(x, y, epochs=epochs, shuffle=False, verbose=0).history["lr"]


def _cos(e, t, lo=0.0, base=0.1):
    return lo + (base - lo) * (1 + math.cos(math.pi * min(e, t) / t)) / 2


@pytest.mark.parametrize("schedule,expected", [
    (optim.StepLR(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]),
    (optim.CosineAnnealingLR(T_max=4), [_cos(e, 4) for e in range(7)]),
    (optim.CosineAnnealingLR(T_max=4, eta_min=0.01), [_cos(e, 4, 0.01) for e in range(7)]),
    (optim.LinearWarmup(warmup_epochs=3), [0.1 / 3, 0.1 * 5 / 9, 0.1 * 7 / 9, 0.1, 0.1, 0.1, 0.1]),
], ids=repr)
def test_schedules_follow_their_formula(schedule, expected):
    assert _lrs(schedule) == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_reduce_on_plateau_halves_after_patience_epochs():
    # PyTorch's rule: reduce once more than `patience` epochs in a row failed to improve, then count afresh
    lrs = _lrs(optim.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1), freeze=True)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    lrs = _lrs(optim.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=0, min_lr=0.002), freeze=True)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.002, 0.002, 0.002, 0.002])


def test_reduce_on_plateau_leaves_an_improving_run_alone():
    assert _lrs(optim.ReduceLROnPlateau(monitor="loss", patience=0), epochs=5) == pytest.approx([0.1] * 5)


def test_reduce_on_plateau_watching_accuracy_wants_it_higher(digits):
    # a rising accuracy is progress (Keras' mode="auto"); treated as a loss it would cut the rate every epoch
    model = small_classifier()
    model.compile(optimizer=optim.SGD(lr=0.05), loss="cross_entropy", metrics=["accuracy"],
                  lr_schedule=optim.ReduceLROnPlateau(monitor="accuracy", factor=0.5, patience=0))
    h = model.fit(digits.x_train, digits.y_train, epochs=4, verbose=0)
    acc = h.history["accuracy"]
    assert all(b > a * 1.001 for a, b in zip(acc, acc[1:])), f"precondition: accuracy must rise, got {acc}"
    assert h.history["lr"] == pytest.approx([0.05] * 4)


def test_defaults_are_the_cores_and_pytorchs():
    # one place for them: the core (kiln-wasm's Trainer reads the same; wasm/tests/trainer.test.mjs)
    assert (optim.SGD().lr, optim.Adam().lr, optim.AdamW().lr, optim.RMSprop().lr) == pytest.approx((1e-3, 1e-3, 1e-3, 1e-2))
    assert optim.AdamW().spec()["weight_decay"] == pytest.approx(1e-2)
    assert optim.Adam().spec()["betas"] == pytest.approx([0.9, 0.999])
