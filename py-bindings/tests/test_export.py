"""ONNX export: every layer of the catalogue alone and in whole models. Each export must pass
onnx.checker's full check, and onnxruntime, model.predict and kiln.InferenceSession must agree to
1e-5 at batch sizes 1 and 37 (the batch dimension is symbolic)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import compiled, digits_cnn, randomise

import kiln
from kiln import nn
from kiln.errors import InvalidInputError, ShapeError

ATOL = 1e-5

# name → (layers, per-sample input shape); ids are drawn from 0..9 for inputs of an Embedding
LAYERS = {
    "Linear": (lambda: [nn.Linear(6, 4)], (6,)),
    "Linear-nobias": (lambda: [nn.Linear(6, 4, bias=False)], (6,)),
    "Conv2d": (lambda: [nn.Conv2d(4, 6, 3)], (4, 9, 9)),
    "Conv2d-stride-pad-groups": (lambda: [nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)], (4, 9, 9)),
    "Conv2d-rect-dilation": (lambda: [nn.Conv2d(2, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2)], (2, 9, 9)),
    "Conv2d-nobias": (lambda: [nn.Conv2d(2, 3, 1, bias=False)], (2, 5, 5)),
    "Conv1d": (lambda: [nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2)], (3, 11)),
    "Conv1d-groups": (lambda: [nn.Conv1d(4, 4, 3, groups=4)], (4, 7)),
    "MaxPool2d": (lambda: [nn.MaxPool2d(2)], (3, 8, 8)),
    "MaxPool2d-pad": (lambda: [nn.MaxPool2d(3, stride=2, padding=1)], (3, 9, 9)),
    "AvgPool2d": (lambda: [nn.AvgPool2d(2)], (3, 8, 8)),
    "AvgPool2d-pad": (lambda: [nn.AvgPool2d(3, stride=2, padding=1)], (3, 9, 9)),
    "Flatten": (lambda: [nn.Flatten()], (3, 4, 5)),
    "Flatten-inner": (lambda: [nn.Flatten(2, 3)], (3, 4, 5)),
    "ReLU": (lambda: [nn.ReLU()], (7,)),
    "LeakyReLU": (lambda: [nn.LeakyReLU(0.2)], (7,)),
    "GELU": (lambda: [nn.GELU()], (7,)),
    "GELU-tanh": (lambda: [nn.GELU("tanh")], (7,)),
    "Sigmoid": (lambda: [nn.Sigmoid()], (7,)),
    "Tanh": (lambda: [nn.Tanh()], (7,)),
    "Softmax": (lambda: [nn.Softmax()], (7,)),
    "Softmax-dim1": (lambda: [nn.Softmax(dim=1)], (3, 4)),
    "Dropout": (lambda: [nn.Dropout(0.3)], (7,)),
    "BatchNorm1d": (lambda: [nn.BatchNorm1d(5)], (5,)),
    "BatchNorm1d-3d": (lambda: [nn.BatchNorm1d(5)], (5, 6)),
    "BatchNorm2d": (lambda: [nn.BatchNorm2d(3)], (3, 4, 4)),
    "LayerNorm": (lambda: [nn.LayerNorm(6)], (6,)),
    "LayerNorm-2d": (lambda: [nn.LayerNorm([3, 4])], (3, 4)),
    "Embedding": (lambda: [nn.Embedding(10, 4)], (5,)),
}

MODELS = {
    "mlp": (lambda: [nn.Linear(12, 32), nn.BatchNorm1d(32), nn.GELU(), nn.Linear(32, 16), nn.LayerNorm(16),
                     nn.GELU("tanh"), nn.Dropout(0.2), nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 5),
                     nn.Softmax()], (12,)),
    "mlp-classic": (lambda: [nn.Linear(12, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)], (12,)),
    "cnn": (lambda: [nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                     nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4), nn.ReLU(),
                     nn.AvgPool2d(2, stride=1), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)], (2, 12, 12)),
    "cnn1d": (lambda: [nn.Conv1d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 4, 3, stride=2), nn.Flatten(),
                       nn.Linear(4 * 7, 2)], (3, 16)),
    "embedding": (lambda: [nn.Embedding(20, 8), nn.Flatten(), nn.Linear(6 * 8, 16), nn.ReLU(), nn.Linear(16, 3)],
                  (6,)),
    "embedding-layernorm": (lambda: [nn.Embedding(20, 8), nn.LayerNorm(8), nn.GELU(), nn.Flatten(start_dim=1),
                                     nn.Linear(4 * 8, 2)], (4,)),
}


def realistic(model: nn.Sequential, rng: np.random.Generator) -> None:
    """Keep the initialised weight matrices and kernels (PyTorch's scale), and draw every vector (biases,
    norm scales and shifts, running statistics) away from its default. Outputs stay O(1-10), where 1e-5
    absolute is a meaningful bound for float32 (all-Gaussian weights give outputs in the hundreds)."""
    state = {}
    for name, value in model.state_dict().items():
        if value.ndim >= 2:
            state[name] = value
        elif name.endswith(("running_var",)):
            state[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif name.endswith(".weight"):  # BatchNorm / LayerNorm scale
            state[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        else:
            state[name] = (0.3 * rng.standard_normal(value.shape)).astype(np.float32)
    model.load_state_dict(state)


def _input(model: nn.Sequential, batch: int, shape, rng) -> np.ndarray:
    """float32 input for predict; for an Embedding first layer, whole-number ids."""
    if isinstance(model[0], nn.Embedding):
        return rng.integers(0, model[0].spec()["num_embeddings"], (batch, *shape)).astype(np.float32)
    return rng.standard_normal((batch, *shape)).astype(np.float32)


def _check_three_way(model: nn.Sequential, data: bytes, shape, rng) -> None:
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    sess = kiln.InferenceSession(data)
    int_input = isinstance(model[0], nn.Embedding)
    assert sess.inputs[0].dtype == ("int64" if int_input else "float32")
    assert sess.inputs[0].shape == (None, *shape), "the batch dimension is symbolic"
    for batch in (1, 37):
        x = _input(model, batch, shape, rng)
        feed = x.astype(np.int64) if int_input else x
        expected = model.predict(x)
        (got_ort,) = ref.run(None, {ref.get_inputs()[0].name: feed})
        got_kiln = sess.run(feed)
        assert got_ort.shape == got_kiln.shape == expected.shape
        np.testing.assert_allclose(got_ort, expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got_kiln, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", LAYERS)
def test_each_layer_alone(name, rng):
    build, shape = LAYERS[name]
    model = nn.Sequential(*build())
    randomise(model, rng)  # no layer may pass on its default weights (zero bias, unit variance)
    _check_three_way(model, model.export_onnx(input_shape=shape), shape, rng)


@pytest.mark.parametrize("name", MODELS)
def test_whole_models(name, rng):
    build, shape = MODELS[name]
    model = nn.Sequential(*build())
    realistic(model, rng)
    _check_three_way(model, model.export_onnx(input_shape=shape), shape, rng)


def test_every_layer_class_is_covered():
    covered = {type(layer).__name__ for build, _ in [*LAYERS.values(), *MODELS.values()] for layer in build()}
    from kiln.layers import _CLASSES

    # GRU, LSTM and MultiheadAttention return tuples, so they live in nn.Modules: test_rnn.py and
    # test_attention.py export them
    assert covered | {"GRU", "LSTM", "MultiheadAttention"} == set(_CLASSES)


def test_trained_digits_cnn_exports_with_its_metadata(digits, tmp_path):
    model = compiled(digits_cnn())
    x = digits.x_train.reshape(-1, 1, 8, 8)
    model.fit(x, digits.y_train, epochs=2, verbose=0)  # fit teaches the model its input shape
    path = tmp_path / "digits.onnx"
    labels = [str(d) for d in range(10)]
    assert model.export_onnx(path, labels=labels, input_scale=1 / 16) is None
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["kiln.labels"]) == labels
    assert meta["kiln.version"] == kiln.__version__
    assert float(meta["kiln.input_scale"]) == pytest.approx(1 / 16)
    assert "kiln.input_offset" not in meta
    sess = kiln.InferenceSession(path)
    assert sess.labels == labels and sess.metadata == meta
    xt = digits.x_test.reshape(-1, 1, 8, 8)
    np.testing.assert_allclose(sess.run(xt), model.predict(xt), atol=ATOL, rtol=0)
    # the bytes returned without a path are the file's bytes
    assert model.export_onnx(labels=labels, input_scale=1 / 16) == path.read_bytes()


def test_metadata_offset_and_label_types(rng):
    model = nn.Sequential(nn.Linear(3, 2))
    data = model.export_onnx(input_shape=(3,), labels=[0, 1], input_scale=2.0, input_offset=-0.5)
    meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert json.loads(meta["kiln.labels"]) == ["0", "1"]  # labels are strings
    assert float(meta["kiln.input_scale"]) == 2.0 and float(meta["kiln.input_offset"]) == -0.5
    plain = {p.key for p in onnx.load_from_string(model.export_onnx()).metadata_props}
    assert plain == {"kiln.version"}


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_opsets_and_gelu(opset, rng):
    model = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU("tanh"), nn.LayerNorm(8))
    randomise(model, rng)
    data = model.export_onnx(input_shape=(5,), opset=opset)
    proto = onnx.load_from_string(data)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    ops = [n.op_type for n in proto.graph.node]
    if opset >= 20:
        gelus = [n for n in proto.graph.node if n.op_type == "Gelu"]
        assert len(gelus) == 2 and "Erf" not in ops
        approx = [a.s.decode() for n in gelus for a in n.attribute if a.name == "approximate"]
        assert approx == ["tanh"] or approx == ["none", "tanh"]
    else:
        assert "Gelu" not in ops and "Erf" in ops  # decomposed: Gelu is an opset-20 operator
    _check_three_way(model, data, (5,), rng)


def test_fixed_batch_export(rng):
    model = nn.Sequential(nn.Linear(4, 2))
    proto = onnx.load_from_string(model.export_onnx(input_shape=(4,), dynamic_batch=False))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 4]
    onnx.checker.check_model(proto, full_check=True)


def test_export_needs_an_input_shape():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(InvalidInputError,
                       match="does not know its input shape yet: fit or predict once, or give input_shape"):
        model.export_onnx()
    model.predict(np.zeros((1, 4), np.float32))
    model.export_onnx()  # predict taught it (Sequential.input_shape's docstring)


def test_export_errors():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(InvalidInputError, match="opset must be 17 or later"):
        model.export_onnx(input_shape=(4,), opset=16)
    with pytest.raises(ShapeError, match=r"input of shape \[1, 5\] does not fit weight of shape \[2, 4\]"):
        model.export_onnx(input_shape=(5,))


def test_graph_names_and_types(rng):
    model = nn.Sequential(nn.Linear(4, 3))
    proto = onnx.load_from_string(model.export_onnx(input_shape=(4,)))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[0].dim_param  # a named free dimension
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [3]
    # parameters are initializers under their state-dict names, so tools can map them back
    assert {"0.weight", "0.bias"} <= {i.name for i in proto.graph.initializer}
