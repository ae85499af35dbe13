"""kiln.nn layers: PyTorch's names, shapes, reprs and initialisation, and each layer's forward pass
checked against a plain numpy reference (in evaluation mode, through ``model.predict``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import randomise

import kiln
from kiln import nn
from kiln.errors import InvalidInputError, ShapeError


# ---- numpy references ----------------------------------------------------------------------------
def conv_ref(x, w, b, stride, padding, dilation, groups):
    """N-d cross-correlation (1-D or 2-D), PyTorch's definition, by explicit loops over the kernel."""
    nd = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    k = w.shape[2:]
    out_sp = [(x.shape[2 + i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    out = np.zeros((n, o, *out_sp), np.float64)
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og]
        for kidx in np.ndindex(*k):
            sl = tuple(slice(kidx[i] * dilation[i], kidx[i] * dilation[i] + stride[i] * (out_sp[i] - 1) + 1, stride[i])
                       for i in range(nd))
            patch = xs[(slice(None), slice(None)) + sl]  # [N, cg, *out]
            wk = ws[(slice(None), slice(None)) + kidx]  # [og, cg]
            out[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", patch, wk)
    if b is not None:
        out += b.reshape((1, -1) + (1,) * nd)
    return out


def pool_ref(x, k, s, p, kind):
    """2-D max/avg pooling; average counts the padding (count_include_pad=True)."""
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])], constant_values=fill)
    oh, ow = (x.shape[2] - k[0]) // s[0] + 1, (x.shape[3] - k[1]) // s[1] + 1
    out = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


def gelu_ref(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def softmax_ref(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


# ---- forward passes against the references --------------------------------------------------------
def _run(layer: nn.Layer, x: np.ndarray, rng: np.random.Generator):
    model = nn.Sequential(layer)
    state = randomise(model, rng)
    return model.predict(x), state


def test_linear_matches_x_wt_plus_b(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    out, s = _run(nn.Linear(6, 4), x, rng)
    np.testing.assert_allclose(out, x @ s["0.weight"].T + s["0.bias"], rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32 and out.shape == (5, 4)


def test_linear_without_bias_has_no_bias_tensor(rng):
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    assert list(model.state_dict()) == ["0.weight"]
    assert model[0].bias is None
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), x @ model[0].weight.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=2),
    dict(kernel_size=3, padding=1, groups=2),
])
def test_conv2d_matches_reference(kw, rng):
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    layer = nn.Conv2d(4, 6, **kw)
    out, s = _run(layer, x, rng)
    spec = layer.spec()
    ref = conv_ref(x.astype(np.float64), s["0.weight"], s["0.bias"], spec["stride"], spec["padding"],
                   spec["dilation"], spec["groups"])
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert s["0.weight"].shape == (6, 4 // spec["groups"], *spec["kernel_size"])


def test_conv1d_matches_reference(rng):
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)
    out, s = _run(nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), x, rng)
    ref = conv_ref(x.astype(np.float64), s["0.weight"], s["0.bias"], [2], [1], [2], 1)
    assert out.shape == ref.shape == (2, 4, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,kind", [(nn.MaxPool2d, "max"), (nn.AvgPool2d, "avg")])
@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (0, 1))])
def test_pooling_matches_reference(cls, kind, k, s, p, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    out = nn.Sequential(cls(k, stride=s, padding=p)).predict(x)
    np.testing.assert_allclose(out, pool_ref(x, k, s, p, kind), rtol=1e-5, atol=1e-6)


def test_pool_stride_defaults_to_kernel():
    assert nn.MaxPool2d(3).spec()["stride"] == [3, 3]
    assert nn.AvgPool2d(2, stride=1).spec()["stride"] == [1, 1]


@pytest.mark.parametrize("start,end,shape", [(1, -1, (2, 60)), (2, 3, (2, 3, 20)), (1, 2, (2, 12, 5))])
def test_flatten(start, end, shape, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = nn.Sequential(nn.Flatten(start, end)).predict(x)
    np.testing.assert_array_equal(out, x.reshape(shape))


@pytest.mark.parametrize("layer,ref", [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.LeakyReLU(), lambda x: np.where(x > 0, x, 0.01 * x)),
    (nn.GELU(), gelu_ref),
    (nn.GELU(approximate="tanh"), lambda x: gelu_ref(x, "tanh")),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.Softmax(), lambda x: softmax_ref(x, -1)),
    (nn.Softmax(dim=1), lambda x: softmax_ref(x, 1)),
    (nn.Dropout(0.5), lambda x: x),  # identity in evaluation mode
], ids=lambda v: repr(v) if isinstance(v, nn.Layer) else "")
def test_elementwise_and_softmax(layer, ref, rng):
    x = (3 * rng.standard_normal((4, 3, 5))).astype(np.float32)
    out = nn.Sequential(layer).predict(x)
    np.testing.assert_allclose(out, ref(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_batchnorm_eval_uses_running_statistics(rng):
    x = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)
    out, s = _run(nn.BatchNorm2d(3), x, rng)
    shp = (1, 3, 1, 1)
    ref = ((x - s["0.running_mean"].reshape(shp)) / np.sqrt(s["0.running_var"].reshape(shp) + 1e-5)
           * s["0.weight"].reshape(shp) + s["0.bias"].reshape(shp))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    x1 = rng.standard_normal((6, 5)).astype(np.float32)
    out1, s1 = _run(nn.BatchNorm1d(5), x1, rng)
    ref1 = (x1 - s1["0.running_mean"]) / np.sqrt(s1["0.running_var"] + 1e-5) * s1["0.weight"] + s1["0.bias"]
    np.testing.assert_allclose(out1, ref1, rtol=1e-5, atol=1e-5)


def test_batchnorm_training_updates_running_stats_like_pytorch(rng):
    # one full-batch step: running = (1 - momentum) * running + momentum * batch statistic,
    # with the unbiased variance (PyTorch's rule); the learning rate plays no part in it.
    x = (2 + 3 * rng.standard_normal((20, 4))).astype(np.float32)
    model = nn.Sequential(nn.BatchNorm1d(4, momentum=0.1))
    model.compile(optimizer=kiln.optim.SGD(lr=1e-3), loss="mse")
    model.fit(x, np.zeros((20, 4), np.float32), epochs=1, batch_size=20, shuffle=False, verbose=0)
    np.testing.assert_allclose(model[0].running_mean, 0.1 * x.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model[0].running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-4)


@pytest.mark.parametrize("shape", [6, [3, 4]])
def test_layernorm_matches_reference(shape, rng):
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    x = (1 + 2 * rng.standard_normal((5, *dims))).astype(np.float32)
    out, s = _run(nn.LayerNorm(shape), x, rng)
    axes = tuple(range(-len(dims), 0))
    ref = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    ref = ref * s["0.weight"] + s["0.bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_embedding_looks_up_rows(rng):
    ids = rng.integers(0, 10, (4, 5))
    out, s = _run(nn.Embedding(10, 3), ids.astype(np.float32), rng)
    np.testing.assert_array_equal(out, s["0.weight"][ids])
    assert out.shape == (4, 5, 3)


def test_embedding_rejects_ids_out_of_range():
    model = nn.Sequential(nn.Embedding(10, 3))
    with pytest.raises(InvalidInputError, match="10"):
        model.predict(np.array([[1.0, 10.0]], np.float32))


# ---- names, reprs, initialisation ---------------------------------------------------------------
def test_state_dict_uses_pytorch_names():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 8),
                          nn.LayerNorm(8), nn.Linear(8, 3, bias=False))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {
        "0.weight": (4, 1, 3, 3), "0.bias": (4,),
        "1.weight": (4,), "1.bias": (4,), "1.running_mean": (4,), "1.running_var": (4,),
        "4.weight": (8, 36), "4.bias": (8,), "5.weight": (8,), "5.bias": (8,), "6.weight": (3, 8),
    }
    # buffers are not parameters
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.weight", "5.bias", "6.weight"]
    assert model.num_parameters() == 36 + 4 + 8 + 288 + 8 + 16 + 24


def test_batchnorm_starts_at_identity_statistics():
    model = nn.Sequential(nn.BatchNorm1d(3))
    np.testing.assert_array_equal(model[0].running_mean, np.zeros(3))
    np.testing.assert_array_equal(model[0].running_var, np.ones(3))
    np.testing.assert_array_equal(model[0].weight, np.ones(3))
    np.testing.assert_array_equal(model[0].bias, np.zeros(3))


def test_default_initialisation_is_pytorch_uniform_fan_in():
    model = nn.Sequential(nn.Linear(100, 200), nn.Conv2d(3, 64, 5))
    lin, conv = model[0].weight, model[1].weight
    for w, fan_in in ((lin, 100), (conv, 75)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound
        # a uniform(-b, b) sample of this size has std b/sqrt(3) within a few percent
        assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(model[0].bias).max() <= 0.1


def test_reprs_follow_pytorch():
    assert repr(nn.Linear(3, 4)) == "Linear(in_features=3, out_features=4, bias=True)"
    assert repr(nn.Conv2d(1, 16, 3, padding=1)) == "Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.Conv1d(2, 3, 3, dilation=2)) == "Conv1d(2, 3, kernel_size=(3,), stride=(1,), dilation=(2,))"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.LayerNorm(8)) == "LayerNorm((8,), eps=1e-05, elementwise_affine=True)"
    assert repr(nn.Embedding(5, 3)) == "Embedding(5, 3)"
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert repr(model) == "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)"


def test_sequential_is_a_container():
    layers = [nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and model[1] is layers[1] and list(model) == layers
    assert len(nn.Sequential(layers)) == 3  # a list works too
    assert model[2].weight.shape == (2, 3)


def test_layer_weights_need_a_model():
    with pytest.raises(InvalidInputError, match="part of a model"):
        _ = nn.Linear(2, 3).weight


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Dropout(1.0), "p must be in"),
    (lambda: nn.GELU("fast"), "approximate"),
    (lambda: nn.Conv2d(1, 2, (3, 3, 3)), "kernel_size"),
    (lambda: nn.Sequential(nn.Linear(2, 3), "relu"), "item 1 is str"),
])
def test_bad_layer_arguments(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_bad_layer_configuration_is_caught_when_building():
    # channels that groups cannot divide: the core refuses with a clear error, not a panic
    with pytest.raises(kiln.KilnError, match="groups"):
        nn.Sequential(nn.Conv2d(3, 4, 3, groups=2))


def test_shapes_flow_through_a_cnn(rng):
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    out = model.predict(rng.standard_normal((7, 1, 12, 12)).astype(np.float32))
    assert out.shape == (7, 3)
    with pytest.raises(ShapeError):
        model.predict(rng.standard_normal((7, 1, 8, 8)).astype(np.float32))


def test_bad_layer_arguments_are_refused_when_the_layer_is_made():
    # the core's rules, applied at construction (a Module builds its weights later, at first use)
    with pytest.raises(kiln.InvalidInputError, match="Linear: in_features must be positive"):
        nn.Linear(0, 3)
    with pytest.raises(kiln.InvalidInputError, match="Embedding: embedding_dim must be positive"):
        nn.Embedding(5, 0)
    with pytest.raises(kiln.InvalidInputError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(kiln.InvalidInputError, match="BatchNorm"):
        nn.BatchNorm2d(0)
    nn.Linear(100_000, 100_000)  # checked without drawing 10^10 weights
