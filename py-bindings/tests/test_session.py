"""kiln.InferenceSession (kiln's engine first, tract for what it declines): hand-built ONNX graphs,
scikit-learn models converted by skl2onnx (ai.onnx.ml operators), which engine runs what, and the
errors for bad models and bad inputs. onnxruntime is the referee."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln import InferenceSession, TensorInfo
from kiln.errors import InvalidInputError, OnnxError, ShapeError


def _model(nodes, inputs, outputs, opset=17, extra_opsets=(), metadata=None) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    if metadata:
        helper.set_model_props(m, metadata)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture(scope="module")
def two_in_two_out() -> bytes:
    f = TensorProto.FLOAT
    return _model([helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
                  [_vi("a", f, ["n", 3]), _vi("b", f, ["n", 3])], [_vi("sum", f, ["n", 3]), _vi("prod", f, ["n", 3])],
                  metadata={"author": "test", "kiln.labels": '["x", "y", "z"]'})


def _ort(data: bytes, feeds):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


# ---- hand-built graphs ------------------------------------------------------------------------------
def test_two_inputs_by_name(two_in_two_out, rng):
    sess = InferenceSession(two_in_two_out)
    assert sess.inputs == [TensorInfo("a", (None, 3), "float32"), TensorInfo("b", (None, 3), "float32")]
    assert [o.name for o in sess.outputs] == ["sum", "prod"]
    a, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    out = sess.run({"b": b, "a": a})  # order of the dict does not matter
    assert set(out) == {"sum", "prod"}
    ref_sum, ref_prod = _ort(two_in_two_out, {"a": a, "b": b})
    np.testing.assert_array_equal(out["sum"], ref_sum)
    np.testing.assert_array_equal(out["prod"], ref_prod)
    # the free dimension really is free
    assert sess.run({"a": a[:1], "b": b[:1]})["sum"].shape == (1, 3)


def test_metadata_and_labels(two_in_two_out):
    sess = InferenceSession(two_in_two_out)
    assert sess.metadata == {"author": "test", "kiln.labels": '["x", "y", "z"]'}
    assert sess.labels == ["x", "y", "z"]
    assert "inputs=[TensorInfo(name='a'" in repr(sess)


def test_from_a_path_or_bytes(two_in_two_out, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(two_in_two_out)
    for source in (path, str(path), bytearray(two_in_two_out), two_in_two_out):
        assert [i.name for i in InferenceSession(source).inputs] == ["a", "b"]


def test_missing_unknown_and_positional_inputs(two_in_two_out):
    sess = InferenceSession(two_in_two_out)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InvalidInputError, match=r"missing input 'b'; the model's inputs are \['a', 'b'\]"):
        sess.run({"a": x})
    with pytest.raises(InvalidInputError, match="unknown input 'c'"):
        sess.run({"a": x, "b": x, "c": x})
    with pytest.raises(InvalidInputError, match=r"the model has 2 inputs \['a', 'b'\]: pass a dict"):
        sess.run(x)


def test_wrong_input_shape_names_expected_and_got(two_in_two_out):
    sess = InferenceSession(two_in_two_out)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ShapeError) as e:
        sess.run({"a": x, "b": np.zeros((2, 4), np.float32)})
    assert str(e.value) == 'input "b": expected shape [?, 3] (float32), got [2, 4] (float32)'
    fixed = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [2, 3])],
                   [_vi("y", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(ShapeError, match=r"expected shape \[2, 3\] \(float32\), got \[3, 3\]"):
        InferenceSession(fixed).run(np.zeros((3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"got \[2, 3, 1\]"):
        InferenceSession(fixed).run(np.zeros((2, 3, 1), np.float32))
    # the session stays usable after an error
    assert InferenceSession(fixed).run(-np.ones((2, 3))).sum() == 0


def test_dtype_conversion(two_in_two_out):
    sess = InferenceSession(two_in_two_out)
    # float64 and int arrays, and nested lists, are converted to the model's float32
    out = sess.run({"a": np.ones((1, 3)), "b": [[1, 2, 3]]})
    assert out["sum"].dtype == np.float32
    np.testing.assert_array_equal(out["sum"], [[2, 3, 4]])
    with pytest.raises(InvalidInputError, match="input 'a': expected float32, got dtype <U"):
        sess.run({"a": np.array([["x", "y", "z"]]), "b": np.zeros((1, 3))})


def test_integer_inputs_and_outputs():
    i64 = TensorProto.INT64
    data = _model([helper.make_node("Neg", ["x"], ["y"])], [_vi("x", i64, ["n"])], [_vi("y", i64, ["n"])])
    sess = InferenceSession(data)
    assert sess.inputs[0].dtype == "int64"
    out = sess.run(np.array([1, 2, 3], np.int32))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [-1, -2, -3])
    np.testing.assert_array_equal(sess.run(np.array([4.0, 5.0])), [-4, -5])  # whole floats are fine


def test_fractional_floats_are_not_silently_truncated_to_integers():
    # astype(int64) would turn 1.7 into 1 without a word: ids and counts must be whole numbers
    i64 = TensorProto.INT64
    sess = InferenceSession(_model([helper.make_node("Neg", ["x"], ["y"])], [_vi("x", i64, ["n"])],
                                   [_vi("y", i64, ["n"])]))
    with pytest.raises(InvalidInputError, match="int64"):
        sess.run(np.array([1.7, 2.0]))


# ---- broken models -------------------------------------------------------------------------------
@pytest.mark.parametrize("data,match", [
    (b"", "not a valid ONNX model: the data is empty"),
    (b"\x00\x01garbage\xff" * 10, "not a valid ONNX model"),
])
def test_bad_bytes(data, match):
    with pytest.raises(OnnxError, match=match):
        InferenceSession(data)


def test_bad_sources(tmp_path):
    with pytest.raises(InvalidInputError, match="expected a path or bytes, got int"):
        InferenceSession(123)
    # one error family for every loader: kiln.load raises the same (and it is still an OSError)
    with pytest.raises(kiln.KilnIOError, match="missing.onnx.*No such file") as e:
        InferenceSession(tmp_path / "missing.onnx")
    assert isinstance(e.value, OSError)
    with pytest.raises(kiln.KilnIOError, match="missing.kiln"):
        kiln.load(tmp_path / "missing.kiln")


def test_unsupported_operator_is_named():
    f = TensorProto.FLOAT
    data = _model([helper.make_node("FooBarOp", ["x"], ["y"], domain="com.example")], [_vi("x", f, ["n", 3])],
                  [_vi("y", f, ["n", 3])], extra_opsets=[helper.make_opsetid("com.example", 1)])
    with pytest.raises(OnnxError) as e:
        InferenceSession(data)
    assert '"FooBarOp"' in str(e.value) and "com.example" in str(e.value)


# ---- scikit-learn models through skl2onnx ----------------------------------------------------------------
def _skl(estimator, x, zipmap=False):
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the tiny fits
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        options = None if zipmap else {id(final): {"zipmap": False}}
        return to_onnx(estimator, x[:1], options=options, target_opset=17).SerializeToString()


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def _check_classifier(data: bytes, x: np.ndarray, label="label", proba="probabilities"):
    try:
        sess = InferenceSession(data)
    except OnnxError as e:  # an ai.onnx.ml operator kiln's engine lacks: the message must name it
        ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
        assert any(op in str(e) for op in ops), str(e)
        pytest.fail(f"unsupported by kiln's engine: {e}")
    out = sess.run(x)
    ref_label, ref_proba = _ort(data, {"X": x})
    np.testing.assert_array_equal(out[label], ref_label)
    np.testing.assert_allclose(out[proba], ref_proba, atol=1e-5)
    return sess


def test_logistic_regression(iris):
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    sess = _check_classifier(_skl(LogisticRegression(max_iter=500).fit(x, y), x), x)
    assert sess.outputs[0] == TensorInfo("label", (None,), "int64")


def test_mlp_classifier_pipeline(iris):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 300 iterations are enough to agree, not to converge
        pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=300, random_state=0)).fit(x, y)
    _check_classifier(_skl(pipe, x), x)


def test_random_forest(iris):
    from sklearn.ensemble import RandomForestClassifier

    x, y = iris
    _check_classifier(_skl(RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y), x), x)


def test_zipmap_output_comes_back_as_a_probability_table(iris):
    # skl2onnx's default ZipMap turns probabilities into a list of dicts for onnxruntime; kiln's engine
    # hands back the underlying [N, classes] table
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    clf = LogisticRegression(max_iter=500).fit(x, y)
    out = InferenceSession(_skl(clf, x, zipmap=True)).run(x)
    np.testing.assert_array_equal(out["output_label"], clf.predict(x))
    np.testing.assert_allclose(out["output_probability"], clf.predict_proba(x), atol=1e-5)


def test_float64_features_are_converted(iris):
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    sess = InferenceSession(_skl(LogisticRegression(max_iter=500).fit(x, y), x))
    np.testing.assert_array_equal(sess.run(x.astype(np.float64))["label"], sess.run(x)["label"])


def test_kiln_model_runs_the_same_in_its_session(rng):
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Linear(5, 3), kiln.nn.Softmax())
    x = rng.standard_normal((6, 5)).astype(np.float32)
    data = model.export_onnx(input_shape=(5,), labels=["a", "b", "c"])
    sess = InferenceSession(data)
    assert sess.engine == "kiln"  # kiln's exports run on the ops that trained them, as in the browser
    np.testing.assert_allclose(sess.run(x), model.predict(x), atol=1e-6)
    np.testing.assert_allclose(InferenceSession(data, engine="tract").run(x), model.predict(x), atol=1e-6)
    assert sess.labels == ["a", "b", "c"]


# ---- which engine runs the model -------------------------------------------------------------------
def _sin_model() -> bytes:
    f = TensorProto.FLOAT  # Sin: an operator tract runs and kiln's engine does not
    return _model([helper.make_node("Sin", ["x"], ["y"])], [_vi("x", f, ["n", 3])], [_vi("y", f, ["n", 3])])


def test_kiln_engine_first_then_tract_with_the_reason(two_in_two_out):
    sess = InferenceSession(two_in_two_out)
    assert (sess.engine, sess.declined) == ("kiln", None)
    assert repr(sess).startswith("InferenceSession(engine='kiln', inputs=[TensorInfo(name='a'")
    fallback = InferenceSession(_sin_model())
    assert (fallback.engine, fallback.declined) == ("tract", "operator Sin")
    assert "engine='tract', declined='operator Sin'" in repr(fallback)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(fallback.run(x), np.sin(x), atol=1e-6)
    with pytest.raises(OnnxError, match=r"kiln's engine does not run this model \(operator Sin\)"):
        InferenceSession(_sin_model(), engine="kiln")
    forced = InferenceSession(two_in_two_out, engine="tract")
    assert (forced.engine, forced.declined) == ("tract", None)
    with pytest.raises(InvalidInputError, match='engine must be "auto", "kiln" or "tract", not \'lite\''):
        InferenceSession(two_in_two_out, engine="lite")  # type: ignore[arg-type]


def test_a_long_graph_that_falls_back_to_tract_warns_before_it_loads(tmp_path):
    f = TensorProto.FLOAT  # 2,000 Relus then a Sin: kiln's engine declines it, tract's load is slow
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}"]) for i in range(2000)]
    data = _model([*nodes, helper.make_node("Sin", ["t2000"], ["y"])], [_vi("x", f, ["n", 4])], [_vi("y", f, ["n", 4])])
    path = tmp_path / "long.onnx"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.warns(kiln.SlowLoadWarning, match=r"so tract loads it; its 2,001 nodes will take a while") as w:
            sess = InferenceSession(source)
        assert len(w) == 1 and "GIL is released" in str(w[0].message)
        assert sess.engine == "tract"
        np.testing.assert_allclose(sess.run(np.array([[-1, 0, 0.5, 2]], np.float32)),
                                   [[0, 0, np.sin(0.5), np.sin(2)]], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(kiln.SlowLoadWarning):  # a filter that turns warnings into errors stops the load
            InferenceSession(data)
        InferenceSession(data, engine="tract")  # asked for tract: nothing to warn about
        InferenceSession(_sin_model())  # a short declined graph loads without a word


def test_both_engines_describe_run_and_refuse_inputs_alike(two_in_two_out, rng):
    kiln_sess, tract_sess = InferenceSession(two_in_two_out, engine="kiln"), InferenceSession(two_in_two_out, engine="tract")
    assert kiln_sess.inputs == tract_sess.inputs and kiln_sess.outputs == tract_sess.outputs
    assert kiln_sess.metadata == tract_sess.metadata and kiln_sess.labels == tract_sess.labels
    a, b = rng.standard_normal((3, 3)).astype(np.float32), rng.standard_normal((3, 3)).astype(np.float32)
    for k, t in zip(kiln_sess.run({"a": a, "b": b}).values(), tract_sess.run({"a": a, "b": b}).values()):
        np.testing.assert_array_equal(k, t)
    messages = []
    for sess in (kiln_sess, tract_sess):
        with pytest.raises(ShapeError) as e:
            sess.run({"a": a, "b": b[:2]})
        messages.append(str(e.value))
    assert messages[0] == messages[1] == \
        'input "b": dimension 0 is 2 but input "a" sets the same free dimension to 3'


def _pytorch_resnet(opset: int) -> bytes:
    """What PyTorch's legacy exporter writes for a small ResNet (BatchNorm folded into the convs):
    Conv/Relu/Add, then ``x.view(x.size(0), -1)`` after GlobalAveragePool as Shape → Gather →
    Unsqueeze → Concat → Reshape, or ``x.mean(dim=(2, 3))`` as ReduceMean, then Gemm."""
    r = np.random.default_rng(1)
    w = lambda *s: numpy_helper.from_array((r.standard_normal(s) * 0.3).astype(np.float32))  # noqa: E731
    inits = []
    for name, shape in [("stem.w", (8, 1, 3, 3)), ("stem.b", (8,)), ("c1.w", (8, 8, 3, 3)), ("c1.b", (8,)),
                        ("c2.w", (8, 8, 3, 3)), ("c2.b", (8,)), ("fc.w", (10, 8)), ("fc.b", (10,))]:
        t = w(*shape)
        t.name = name
        inits.append(t)
    conv = lambda x, p, y: helper.make_node("Conv", [x, f"{p}.w", f"{p}.b"], [y], kernel_shape=[3, 3],  # noqa: E731
                                             pads=[1, 1, 1, 1], strides=[1, 1])
    nodes = [conv("x", "stem", "s"), helper.make_node("Relu", ["s"], ["s1"]), conv("s1", "c1", "a"),
             helper.make_node("Relu", ["a"], ["a1"]), conv("a1", "c2", "b"), helper.make_node("Add", ["b", "s1"], ["r"]),
             helper.make_node("Relu", ["r"], ["r1"])]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        nodes.append(helper.make_node("ReduceMean", ["r1", "axes"], ["p"], keepdims=0))
    else:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axis"))
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "minus_one"))
        nodes += [helper.make_node("GlobalAveragePool", ["r1"], ["g"]), helper.make_node("Shape", ["g"], ["shape"]),
                  helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
                  helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
                  helper.make_node("Unsqueeze", ["n", "zero_axis"], ["n1"]),
                  helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
                  helper.make_node("Reshape", ["g", "target"], ["p"])]
    nodes.append(helper.make_node("Gemm", ["p", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet", [_vi("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [_vi("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_a_pytorch_style_resnet_runs_on_kiln_engine(opset, rng):
    data = _pytorch_resnet(opset)
    sess = InferenceSession(data)
    assert (sess.engine, sess.declined) == ("kiln", None)
    tract = InferenceSession(data, engine="tract")
    for batch in (1, 5):
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        (ref,) = _ort(data, {"x": x})
        np.testing.assert_allclose(sess.run(x), ref, atol=1e-4)
        np.testing.assert_allclose(sess.run(x), tract.run(x), atol=1e-5)


def test_graph_models_kiln_exports_run_on_kiln_engine(rng):
    """Residual blocks with BatchNorm, reductions (mean, max, sum), slicing, squeeze/unsqueeze, a
    concat, and a two-input model with an embedding: what kiln exports, kiln's engine runs, to
    ``predict``'s numbers (the same ops) and to tract's."""
    import kiln.nn.functional as F
    from kiln import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.blocks, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Sequential(Block(8), Block(8)), nn.Linear(13, 10)

        def forward(self, x):
            x = self.blocks(F.relu(self.stem(x)))
            peak = x.max(dim=3).sum(dim=2, keepdim=True).squeeze(2)[:, 2:6]
            return self.head(F.cat([x.mean(dim=(2, 3)), peak, x.sum(dim=(1, 2, 3)).unsqueeze(1)], dim=1))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.num, self.out = nn.Embedding(5, 4), nn.Linear(8, 16), nn.Linear(20, 2)

        def forward(self, numeric, category):
            return self.out(F.cat([F.relu(self.num(numeric)), self.emb(category)], dim=1))

    kiln.manual_seed(0)
    net, two = Net(), TwoInputs()
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    num, cat = rng.standard_normal((6, 8)).astype(np.float32), rng.integers(0, 5, 6)
    for model, feeds, args in [(net, x, x), (two, {"numeric": num, "category": cat}, (num, cat))]:
        want = model.predict(args)  # traces the graph; export writes that graph
        data = model.export_onnx()
        sess = InferenceSession(data)
        assert (sess.engine, sess.declined) == ("kiln", None)
        np.testing.assert_allclose(sess.run(feeds), want, atol=1e-5)
        np.testing.assert_allclose(InferenceSession(data, engine="tract").run(feeds), want, atol=1e-4)


def test_load_onnx_gives_a_model_that_fine_tunes_and_ships_again(rng, tmp_path):
    """A PyTorch-style export into kiln: the same function, the file's weight names, trainable,
    saved and exported again; what the file's graph has that kiln's does not is named."""
    import kiln

    data = _pytorch_resnet(17)
    path = tmp_path / "resnet.onnx"
    path.write_bytes(data)
    model = kiln.load_onnx(path)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    (ref,) = _ort(data, {"x": x})
    np.testing.assert_allclose(model.predict(x), ref, atol=1e-4)
    assert {"stem.w", "c1.w", "fc.b"} <= set(model.state_dict())
    y = (np.arange(40) % 10).astype(np.int64)
    model.compile(optimizer=kiln.optim.Adam(lr=3e-2), loss="cross_entropy", metrics=["accuracy"])
    h = model.fit(x, y, epochs=40, batch_size=40, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    tuned = model.predict(x)
    assert not np.allclose(tuned, ref, atol=1e-3), "fit changed the weights"
    model.save(tmp_path / "tuned.kiln")
    np.testing.assert_array_equal(kiln.load(tmp_path / "tuned.kiln").predict(x), tuned)
    model.export_onnx(tmp_path / "tuned.onnx")
    (back,) = _ort((tmp_path / "tuned.onnx").read_bytes(), {"x": x})
    np.testing.assert_allclose(back, tuned, atol=1e-4)
    sin = helper.make_model(helper.make_graph([helper.make_node("Sin", ["x"], ["y"])], "sin",
                                              [_vi("x", TensorProto.FLOAT, ["batch", 3])],
                                              [_vi("y", TensorProto.FLOAT, ["batch", 3])]),
                            opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(sin, tmp_path / "sin.onnx")
    with pytest.raises(kiln.OnnxError, match=r"kiln cannot train this ONNX file \(operator Sin\)"):
        kiln.load_onnx(tmp_path / "sin.onnx")
    with pytest.raises(kiln.KilnIOError, match="missing.onnx"):
        kiln.load_onnx(tmp_path / "missing.onnx")
