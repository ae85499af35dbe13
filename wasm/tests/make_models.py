"""Builds the ONNX models that wasm/tests run through kiln-wasm, and onnxruntime's outputs for them.

Usage: python make_models.py OUT_DIR

Writes OUT_DIR/*.onnx and OUT_DIR/cases.json: for each case the model file, the inputs and
onnxruntime's outputs (the referee kiln-wasm must match to 1e-4). The models come from kiln itself
(a digits CNN trained and exported by the Python package, with kiln.InferenceSession's outputs as a
second reference), onnx.helper (hand-built graphs covering every input and output element type
kiln-wasm passes) and skl2onnx (scikit-learn pipelines). Inputs are real data where it matters (scikit-learn's
bundled 8x8 digits), so the CNN sees the values a page would send it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
rng = np.random.default_rng(0)
DIGIT_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def weight(name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def tensor(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def save(out, name, graph, labels=None, opset=OPSET):
    model = helper.make_model(graph, opset_imports=opset, producer_name="kiln-wasm tests")
    model.ir_version = 8
    if labels is not None:
        helper.set_model_props(model, {"kiln.labels": json.dumps(labels), "kiln.version": "test"})
    onnx.checker.check_model(model, full_check=True)
    path = out / f"{name}.onnx"
    onnx.save(model, path)
    return path


def mlp(out):
    """Gemm → Relu → Gemm with a free batch dimension; labels in the metadata."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], transB=1),
    ]
    inits = [weight("w1", 32, 64), weight("b1", 32), weight("w2", 10, 32), weight("b2", 10)]
    graph = helper.make_graph(nodes, "mlp", [tensor("x", TensorProto.FLOAT, ["N", 64])],
                              [tensor("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return save(out, "mlp", graph, labels=DIGIT_LABELS)


def mlp_softmax(out):
    """The same shape ending in Softmax: classify must not softmax it twice. No labels."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "mlp_softmax", [tensor("x", TensorProto.FLOAT, ["N", 64])],
                              [tensor("probs", TensorProto.FLOAT, ["N", 10])],
                              [weight("w1", 10, 64, scale=0.1), weight("b1", 10)])
    return save(out, "mlp_softmax", graph)


def digits_cnn(out):
    """kiln's documented digits CNN: Conv(1→16, 3x3, pad 1) → Relu → MaxPool 2 → Flatten → Gemm → 10."""
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = [weight("cw", 16, 1, 3, 3), weight("cb", 16), weight("fw", 10, 256, scale=0.05), weight("fb", 10)]
    graph = helper.make_graph(nodes, "digits_cnn", [tensor("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [tensor("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    return save(out, "digits_cnn", graph, labels=[str(d) for d in range(10)])


def two_in_two_out(out):
    """Two inputs sharing the batch dimension N, two outputs."""
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("MatMul", ["a", "w"], ["aw"]),
        helper.make_node("Mul", ["aw", "b"], ["mixed"]),
    ]
    graph = helper.make_graph(nodes, "two_in_two_out",
                              [tensor("a", TensorProto.FLOAT, ["N", 4]), tensor("b", TensorProto.FLOAT, ["N", 4])],
                              [tensor("sum", TensorProto.FLOAT, ["N", 4]), tensor("mixed", TensorProto.FLOAT, ["N", 4])],
                              [weight("w", 4, 4)])
    return save(out, "two_in_two_out", graph)


def embedding(out):
    """Token ids (int64) → Gather from a table → mean over the sequence: the int input path."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "embedding", [tensor("ids", TensorProto.INT64, ["N", "T"])],
                              [tensor("pooled", TensorProto.FLOAT, ["N", 4])], [weight("table", 20, 4)],
                              )
    return save(out, "embedding", graph, opset=[helper.make_opsetid("", 17)])


def typed_outputs(out):
    """Float input → an int64 (ArgMax) and a bool (Greater) output: the typed output path."""
    nodes = [
        helper.make_node("ArgMax", ["x"], ["best"], axis=1, keepdims=0),
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
    ]
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    graph = helper.make_graph(nodes, "typed_outputs", [tensor("x", TensorProto.FLOAT, ["N", 3])],
                              [tensor("best", TensorProto.INT64, ["N"]), tensor("positive", TensorProto.BOOL, ["N", 3])],
                              [zero])
    return save(out, "typed_outputs", graph)


def doubles(out):
    """float64 in and out."""
    two = numpy_helper.from_array(np.array(2.5, dtype=np.float64), "two")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "doubles",
                              [tensor("x", TensorProto.DOUBLE, ["N", 2])], [tensor("y", TensorProto.DOUBLE, ["N", 2])], [two])
    return save(out, "doubles", graph)


def half_input(out):
    """A float16 input (kiln-wasm passes it as a Float32Array; kiln-core narrows it) → Cast → float32."""
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "half_input", [tensor("x", TensorProto.FLOAT16, ["N", 3])],
                              [tensor("y", TensorProto.FLOAT, ["N", 3])])
    return save(out, "half_input", graph)


def pixels_u8(out):
    """uint8 pixels → Cast → scale: the Uint8Array input path, fixed shape [1, 4]."""
    scale = numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale")
    nodes = [helper.make_node("Cast", ["px"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["f", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "pixels_u8", [tensor("px", TensorProto.UINT8, [1, 4])],
                              [tensor("y", TensorProto.FLOAT, [1, 4])], [scale])
    return save(out, "pixels_u8", graph)


def unsupported_op(out):
    """A valid ONNX model (onnxruntime runs it) using Col2Im, which tract does not implement."""
    shape = numpy_helper.from_array(np.array([4, 4], dtype=np.int64), "image_shape")
    block = numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "block_shape")
    graph = helper.make_graph([helper.make_node("Col2Im", ["x", "image_shape", "block_shape"], ["y"], name="fold")],
                              "unsupported", [tensor("x", TensorProto.FLOAT, [1, 4, 9])],
                              [tensor("y", TensorProto.FLOAT, [1, 1, 4, 4])], [shape, block])
    return save(out, "unsupported_op", graph, opset=[helper.make_opsetid("", 18)])


def long_chain(out, n=2000):
    """n Relu nodes then a Sin (kiln's engine has no Sin, so tract loads it): loadModel warns that
    tract takes seconds on a graph this long."""
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Sin", [f"t{n}"], ["y"]))
    graph = helper.make_graph(nodes, "long_chain", [tensor("x", TensorProto.FLOAT, ["batch", 4])],
                              [tensor("y", TensorProto.FLOAT, ["batch", 4])])
    return save(out, "long_chain", graph)


def sklearn_models(out):
    """scikit-learn pipelines through skl2onnx, on iris (bundled with scikit-learn)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    paths = {}
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    onx = to_onnx(logreg, X[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    paths["sk_logreg"] = out / "sk_logreg.onnx"
    onnx.save(onx, paths["sk_logreg"])
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    onx = to_onnx(tree, X[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    paths["sk_tree"] = out / "sk_tree.onnx"
    onnx.save(onx, paths["sk_tree"])
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X[:, :3], X[:, 3])
    onx = to_onnx(reg, X[:1, :3], target_opset={"": 17, "ai.onnx.ml": 3})
    paths["sk_mlp_regressor"] = out / "sk_mlp_regressor.onnx"
    onnx.save(onx, paths["sk_mlp_regressor"])
    return paths, X


def kiln_digits(out, images, targets):
    """kiln's own export: the documented digits CNN, trained briefly by kiln on scikit-learn's digits,
    exported with labels. Returns the path and kiln.InferenceSession (natively, on the engine the
    browser picks: kiln's own) as a callable."""
    import kiln
    from kiln import nn, optim

    kiln.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    model.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    model.fit(images[:1000], targets[:1000], epochs=3, batch_size=32, verbose=0)
    path = out / "kiln_digits.onnx"
    model.export_onnx(str(path), labels=[str(d) for d in range(10)])
    session = kiln.InferenceSession(str(path))
    assert session.engine == "kiln", session.declined
    # the same model in int8 (kiln's static QDQ): kiln's engine runs it too, as in Python
    int8 = out / "kiln_int8.onnx"
    kiln.optimize.quantize(model, images[:300], str(int8), labels=[str(d) for d in range(10)])
    assert kiln.InferenceSession(str(int8)).engine == "kiln"
    return path, lambda x: np.asarray(session.run(x))


def kiln_finetune(out, images, targets):
    """The Trainer's reference: a checkpoint saved by Python (conv, batch norm, dropout, two dense
    layers), and what Python's fit makes of it on 20 new examples, twice: the head alone (Adam) and
    the whole model (SGD with momentum). wasm/tests/trainer.test.mjs repeats both runs in wasm and
    compares the weights (1e-5). Written to finetune/ and finetune.json."""
    import kiln
    from kiln import nn, optim

    kiln.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    model.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    model.fit(images[:600], targets[:600], epochs=2, batch_size=32, verbose=0)
    (out / "finetune").mkdir(exist_ok=True)
    base = out / "finetune" / "base.kiln"
    model.save(str(base))
    x, y = images[1500:1520], targets[1500:1520]
    runs = {}
    for name, head_only, opt, lr in (("head", True, optim.Adam, 1e-2), ("all", False, optim.SGD, 5e-2)):
        m = kiln.load(str(base))
        if head_only:
            m.freeze()
            m.unfreeze("8.")
        m.compile(optimizer=opt(lr=lr, **({"momentum": 0.9} if opt is optim.SGD else {})),
                  loss="cross_entropy", metrics=["accuracy"])
        before = m.evaluate(x, y)
        m.fit(x, y, epochs=10, batch_size=8, verbose=0)
        runs[name] = {"before": before, "after": m.evaluate(x, y),
                      "flat": m.get_flat_parameters().tolist(),
                      "state": {k: v.ravel().tolist() for k, v in m.state_dict().items()},
                      "predict": m.predict(x[:3]).ravel().tolist()}
        m.save(str(out / "finetune" / f"{name}.kiln"))
    (out / "finetune.json").write_text(json.dumps({
        "x": x.ravel().tolist(), "dims": list(x.shape), "y": y.tolist(), "epochs": 10, "batch_size": 8,
        "runs": runs}))


def kiln_graphs(out, images, targets):
    """kiln graph models (nn.Module): a small ResNet (residual adds, BatchNorm, global mean) and a
    two-input model (an embedding of int64 ids beside float features, concatenated), trained briefly
    and exported; kiln's engine must run both. The ResNet's checkpoint and what Python's fit makes of
    it (SGD, every layer) go to finetune/resnet.kiln and finetune_graph.json for the Trainer's test."""
    import kiln
    import kiln.nn.functional as F
    from kiln import nn, optim

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.block = Block(8)
            self.head = nn.Linear(8, 10)

        def forward(self, image):
            return self.head(self.block(F.relu(self.stem(image))).mean(dim=(2, 3)))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.num = nn.Embedding(6, 3), nn.Linear(4, 8)
            self.out = nn.Linear(11, 2)

        def forward(self, numeric, category):
            return self.out(F.cat([F.relu(self.num(numeric)), self.emb(category)], dim=1))

    kiln.manual_seed(5)
    res = ResNet()
    res.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    res.fit(images[:600], targets[:600], epochs=2, batch_size=32, verbose=0)
    res_path = out / "kiln_resnet.onnx"
    res.export_onnx(str(res_path), labels=[str(d) for d in range(10)])
    (out / "finetune").mkdir(exist_ok=True)
    base = out / "finetune" / "resnet.kiln"
    res.save(str(base))
    x, y = images[1500:1520], targets[1500:1520]
    m = kiln.load(str(base))
    m.compile(optimizer=optim.SGD(lr=5e-2, momentum=0.9), loss="cross_entropy", metrics=["accuracy"])
    m.fit(x, y, epochs=5, batch_size=8, verbose=0)
    (out / "finetune_graph.json").write_text(json.dumps({
        "x": x.ravel().tolist(), "dims": list(x.shape), "y": y.tolist(), "epochs": 5, "batch_size": 8,
        "flat": m.get_flat_parameters().tolist(), "predict": m.predict(x[:3]).ravel().tolist()}))

    kiln.manual_seed(6)
    two = TwoInputs()
    num = rng.standard_normal((64, 4)).astype(np.float32)
    cat = rng.integers(0, 6, 64).astype(np.int64)
    two.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy")
    two.fit((num, cat), (num[:, 0] + cat * 0.3 > 0.8).astype(np.int64), epochs=3, verbose=0)
    two_path = out / "kiln_two_inputs.onnx"
    two.export_onnx(str(two_path))
    return (res_path, res), (two_path, two)


def kiln_drift(out, images, targets):
    """drift.test.mjs's material: the digits CNN exported with its training statistics
    (reference=) and without, held-back digits, the same digits under three shifts, and Python's
    kiln.drift reports on one stream (window 100), which kiln-wasm's monitor must repeat (1e-6).
    Written to drift_digits.onnx, drift_plain.onnx and drift.json."""
    import kiln
    from kiln import nn, optim

    kiln.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    model.compile(optimizer=optim.Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    order = np.random.default_rng(5).permutation(len(images))  # the file is in writer order
    images, targets = images[order], targets[order]
    train, held = images[:1300], np.ascontiguousarray(images[1300:])
    model.fit(train, targets[:1300], epochs=6, batch_size=32, verbose=0)
    path = out / "drift_digits.onnx"
    model.export_onnx(str(path), labels=[str(d) for d in range(10)], reference=train)
    model.export_onnx(str(out / "drift_plain.onnx"), labels=[str(d) for d in range(10)])
    p = np.pad(held, ((0, 0), (0, 0), (0, 1), (0, 1)))
    thick = np.maximum.reduce([p[:, :, :-1, :-1], p[:, :, 1:, :-1], p[:, :, :-1, 1:], p[:, :, 1:, 1:]])
    off = np.zeros_like(held)
    off[:, :, 1:, 2:] = held[:, :, :-1, :-2]
    style = np.ascontiguousarray(held[:, :, :, ::-1] * 0.7)
    stream = np.concatenate([held[:150], thick[150:300]])
    mon = kiln.drift.DriftMonitor.from_onnx(path, window=100)
    checkpoints = []
    for i in range(len(stream)):
        mon.update(stream[i:i + 1])
        if (i + 1) % 25 == 0:
            checkpoints.append({"after": i + 1, "report": mon.report()})
    flat = lambda a: a.astype(np.float32).ravel().tolist()  # noqa: E731
    (out / "drift.json").write_text(json.dumps({
        "held": flat(held), "dims": list(held.shape[1:]),
        "shifts": {"thick strokes": flat(thick), "off-centre": flat(off), "other style": flat(style)},
        "stream": flat(stream), "window": 100, "checkpoints": checkpoints,
        "model_version": kiln.drift.model_version(path)}))


TEXT_STRINGS = ["ma", "", "maria", "Marianne", "Zoë Ågren", "李娜", "😀 x", "a\u0301", "O'Neil-Smith", "\u0000\t\n ",
                "anna " * 40]


def kiln_text(out):
    """Tokenizers and generation across the border: a character-level next-character model over a
    fixed window (Embedding → Flatten → Linear), the same with a byte-level BPE tokenizer, and a
    model with a row of logits per position; Python's ids and generated texts (from the kiln model
    itself, checked against kiln.InferenceSession) go into text.json for Node to match."""
    import kiln
    from kiln import nn, optim

    names = ["anna", "maria", "marta", "mario", "martin", "anton", "antonia", "ada", "alan", "alina", "marina",
             "nina", "tina", "tim", "tom", "tamara", "amanda", "miranda", "zoë", "åsa"]
    window = 4

    def window_model(tok):
        X, y = tok.windows(names, window)
        kiln.manual_seed(0)
        m = nn.Sequential(nn.Embedding(tok.vocab_size, 8), nn.Flatten(), nn.Linear(window * 8, 32), nn.ReLU(),
                          nn.Linear(32, tok.vocab_size))
        m.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy")
        m.fit(X, y, epochs=25, batch_size=32, verbose=0)
        return m

    class PerPosition(nn.Module):
        def __init__(self, vocab, steps):
            super().__init__()
            self.vocab, self.steps = vocab, steps
            self.emb, self.out = nn.Embedding(vocab, 16), nn.Linear(16, vocab)

        def forward(self, x):
            return self.out(self.emb(x).reshape(-1, 16)).reshape(-1, self.steps, self.vocab)

    class TinyTransformer(nn.Module):
        """A causal character transformer: token and position embeddings, two encoder layers."""

        def __init__(self, vocab, steps):
            super().__init__()
            self.emb, self.pos = nn.Embedding(vocab, 16), nn.Embedding(steps, 16)
            layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.out = nn.Linear(16, vocab)

        def forward(self, x):
            return self.out(self.encoder(self.emb(x) + self.pos.weight, is_causal=True))

    char = kiln.text.CharTokenizer.fit(names)
    bpe = kiln.text.BPETokenizer.fit(names * 3 + ["anna maria", "tom tim"], vocab_size=300)
    ids, _ = char.encode_batch(names, bos=True, eos=True)
    kiln.manual_seed(2)
    lm = PerPosition(char.vocab_size, ids.shape[1] - 1)
    lm.compile(optimizer=optim.Adam(lr=2e-2), loss="cross_entropy")
    lm.fit(ids[:, :-1], ids[:, 1:], epochs=40, batch_size=8, verbose=0)
    kiln.manual_seed(3)
    gpt = TinyTransformer(char.vocab_size, ids.shape[1] - 1)
    gpt.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy")
    gpt.fit(ids[:, :-1], ids[:, 1:], epochs=40, batch_size=8, verbose=0)
    models = {"names": (window_model(char), char), "names_bpe": (window_model(bpe), bpe), "names_lm": (lm, char),
              "names_transformer": (gpt, char)}
    doc = {"strings": TEXT_STRINGS, "models": {}}
    for name, (model, tok) in models.items():
        path = out / f"{name}.onnx"
        model.export_onnx(path, tokenizer=tok)
        sess = kiln.InferenceSession(path)
        runs = []
        for prompt, temperature, top_k, seed in [("ma", 0.8, 5, 0), ("ma", 0.8, 5, 1), ("", 1.0, None, 2), ("t", 1.5, 3, 3),
                                                 ("Zoë?", 1.0, None, 4), ("ma", 0.0, None, 5), ("a", 1.2, None, 6),
                                                 # longer than any window (the model sees the last ids), and a
                                                 # lone surrogate, which both languages read as U+FFFD
                                                 ("x" * 3000 + "ma", 0.8, 5, 7), ("ma\ud800", 1.0, None, 8)]:
            pieces = []
            text = kiln.text.generate(model, tok, prompt, 12, temperature, top_k, seed,
                                      on_token=lambda t, i: pieces.append([t, i]))
            assert kiln.text.generate(sess, None, prompt, 12, temperature, top_k, seed) == text, (name, seed)
            runs.append({"prompt": prompt, "temperature": temperature, "topK": top_k, "seed": seed, "text": text,
                         "pieces": pieces})
        doc["models"][name] = {"file": path.name, "kind": "char" if tok is char else "bpe", "vocabSize": tok.vocab_size,
                               "ids": [tok.encode(s).tolist() for s in TEXT_STRINGS],
                               "decoded": [tok.decode(tok.encode(s)) for s in TEXT_STRINGS],
                               "json": tok.to_json(), "runs": runs}
    # a classifier that carries a tokenizer is not a language model: generate must say so
    X, _ = char.windows(names, window)
    kiln.manual_seed(0)
    classifier = nn.Sequential(nn.Embedding(char.vocab_size, 4), nn.Flatten(), nn.Linear(window * 4, 3))
    classifier.compile(optimizer="adam", loss="cross_entropy")
    classifier.fit(X, X[:, -1] % 3, epochs=1, verbose=0)
    classifier.export_onnx(out / "names_classifier.onnx", tokenizer=char, labels=["a", "b", "c"])
    doc["classifier"] = {"file": "names_classifier.onnx", "classes": 3, "vocabSize": char.vocab_size}
    (out / "text.json").write_text(json.dumps(doc))


def kiln_attention(out):
    """A transformer classifier over token ids with a key-padding mask (a bool input in Python, 0/1
    floats in the file) and the causal mask, and a model returning attention's per-head weights:
    kiln's predictions for Node to match on kiln's engine."""
    import kiln
    from kiln import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 8)
            layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8))
            self.head = nn.Linear(8, 3)

        def forward(self, ids, pad):
            h = self.encoder(self.emb(ids).permute(1, 0, 2), src_key_padding_mask=pad, is_causal=True)
            return self.head(h.mean(dim=0))

    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 4, batch_first=True)

        def forward(self, x, pad):
            return self.attn(x, x, x, key_padding_mask=pad, average_attn_weights=False)

    kiln.manual_seed(4)
    rng = np.random.default_rng(5)
    doc = {}
    for name, model, first in (("attention_classifier", Classifier(), rng.integers(0, 7, (5, 6))),
                               ("attention_weights", Weights(), rng.standard_normal((5, 6, 8)).astype(np.float32))):
        pad = np.arange(6)[None, :] >= 6 - rng.integers(0, 3, 5)[:, None]
        outs = model.predict((first, pad))
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        path = out / f"{name}.onnx"
        model.export_onnx(path)
        names = [i.name for i in kiln.InferenceSession(path).inputs]
        doc[name] = {"file": path.name,
                     "inputs": {names[0]: encode(names[0], first), names[1]: encode(names[1], pad.astype(np.float32))},
                     "outputs": [encode(f"output_{i}", o) for i, o in enumerate(outs)]}
    # a single-input transformer classifier for the Trainer: Python's fit from its checkpoint
    class Pooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.encoder(x, is_causal=True).mean(dim=1))

    from kiln import optim
    x = rng.standard_normal((24, 6, 8)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64) + (x[:, -1, 1] > 0.5)
    pooler = Pooler()
    pooler.predict(x[:2])
    (out / "finetune").mkdir(exist_ok=True)
    base = out / "finetune" / "transformer.kiln"
    pooler.save(str(base))
    m = kiln.load(str(base))
    m.compile(optimizer=optim.SGD(lr=5e-2, momentum=0.9), loss="cross_entropy")
    m.fit(x, y, epochs=4, batch_size=8, verbose=0)
    doc["trainer"] = {"checkpoint": "finetune/transformer.kiln", "x": x.ravel().tolist(), "dims": list(x.shape),
                      "y": y.tolist(), "epochs": 4, "batch_size": 8, "flat": m.get_flat_parameters().tolist(),
                      "predict": m.predict(x[:3]).ravel().tolist()}
    (out / "attention.json").write_text(json.dumps(doc))


def reference(path, inputs):
    """onnxruntime's outputs for `inputs` ({name: array}), in graph order, as JSON-able dicts."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, inputs)
    return [encode(n, v) for n, v in zip(names, values)]


def encode(name, array):
    array = np.asarray(array)
    dtype = {"bool": "bool"}.get(array.dtype.name, array.dtype.name)
    data = array.astype(np.uint8).ravel().tolist() if dtype == "bool" else array.ravel().tolist()
    return {"name": name, "type": dtype, "dims": list(array.shape), "data": data}


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(np.float32) / 16.0  # 8x8 images in [0, 1]
    cases = []

    def case(name, path, inputs, **extra):
        cases.append({"name": name, "model": path.name, "inputs": [encode(k, v) for k, v in inputs.items()],
                      "outputs": reference(path, inputs), **extra})

    p = mlp(out)
    case("mlp batch 1", p, {"x": digits[:1]})
    case("mlp batch 5", p, {"x": digits[:5]})
    p = mlp_softmax(out)
    case("softmax output", p, {"x": digits[7:8]})
    p = digits_cnn(out)
    case("digits cnn batch 1", p, {"x": digits[:1].reshape(1, 1, 8, 8)})
    case("digits cnn batch 64", p, {"x": digits[:64].reshape(64, 1, 8, 8)})
    p = two_in_two_out(out)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    case("two inputs two outputs", p, {"a": a, "b": b})
    p = embedding(out)
    case("int64 token ids", p, {"ids": rng.integers(0, 20, (2, 5)).astype(np.int64)})
    p = typed_outputs(out)
    case("int64 and bool outputs", p, {"x": rng.standard_normal((4, 3)).astype(np.float32)})
    p = doubles(out)
    case("float64", p, {"x": rng.standard_normal((3, 2))})
    p = half_input(out)
    case("float16 input", p, {"x": np.array([[0.5, -1.25, 1000.0], [3.0, 0.0, -2.0]], dtype=np.float16)})
    p = pixels_u8(out)
    case("uint8 input", p, {"px": np.array([[0, 64, 128, 255]], dtype=np.uint8)})
    unsupported_op(out)
    long_chain(out)

    images = digits.reshape(-1, 1, 8, 8)
    p, native = kiln_digits(out, images, load_digits().target.astype(np.int64))
    name = onnx.load(p).graph.input[0].name
    for n in (1, 64):
        x = images[1000:1000 + n]
        # kiln.InferenceSession runs the same engine natively (kiln's, picked as loadModel picks
        # it): kiln-wasm must agree with it even more closely than with onnxruntime.
        case(f"kiln export batch {n}", p, {name: x}, tool="kiln", labels=[str(d) for d in range(10)],
             native=[encode(onnx.load(p).graph.output[0].name, native(x))])

    import kiln

    int8 = out / "kiln_int8.onnx"
    x = images[1000:1064]
    case("kiln int8 (QDQ) batch 64", int8, {name: x}, tool="kiln", labels=[str(d) for d in range(10)],
         native=[encode(onnx.load(int8).graph.output[0].name, np.asarray(kiln.InferenceSession(str(int8)).run(x)))])
    kiln_finetune(out, images, load_digits().target.astype(np.int64))
    (res_path, res), (two_path, two) = kiln_graphs(out, images, load_digits().target.astype(np.int64))
    for n in (1, 7):
        x = images[1100:1100 + n]
        case(f"kiln residual graph batch {n}", res_path, {"image": x}, tool="kiln",
             labels=[str(d) for d in range(10)], native=[encode("output", res.predict(x))])
    num, cat = rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 6, 5).astype(np.int64)
    case("kiln two-input graph", two_path, {"numeric": num, "category": cat}, tool="kiln",
         native=[encode("output", two.predict((num, cat)))])
    kiln_drift(out, images, load_digits().target.astype(np.int64))
    kiln_text(out)
    kiln_attention(out)

    sk, iris = sklearn_models(out)
    case("skl2onnx logistic regression", sk["sk_logreg"], {"X": iris[45:55]}, tool="skl2onnx")
    case("skl2onnx decision tree", sk["sk_tree"], {"X": iris[::15]}, tool="skl2onnx")
    case("skl2onnx MLP regressor", sk["sk_mlp_regressor"], {"X": iris[:6, :3]}, tool="skl2onnx")

    (out / "cases.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"make_models: {len(cases)} cases, {len(list(out.glob('*.onnx')))} models in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
