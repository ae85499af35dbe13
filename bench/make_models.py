#!/usr/bin/env python3
"""The .onnx files the inference benchmarks run, written to bench/out/models/ with a models.json index.

    .venv/bin/python bench/make_models.py bench/out/models

- cnn.onnx: kiln's digits CNN as the web demo ships it (web-demo/model/digits.onnx, copied).
- mlp.onnx: the training benchmark's MLP 64-128-64-10 (bench/common.py), trained 10 epochs on digits
  by kiln and exported by kiln's `export_onnx`.
- resnet.onnx: a small ResNet-style CNN at 3x32x32 (CIFAR-sized), written with onnx.helper. kiln's
  Sequential has no residual add, so kiln cannot express it; a ResNet is what a PyTorch user would
  bring to onnxruntime-web, so the graph is the one torch.onnx.export writes for such a net in eval
  mode (Conv, BatchNormalization, Relu, Add, GlobalAveragePool, Flatten, Gemm), weights He-initialised
  from a fixed seed and BatchNorm statistics made non-trivial so no engine can skip them.

Every model is checked by onnx.checker, and kiln.InferenceSession must agree with onnxruntime on it
(1e-4), so the engines are timed on models they both run correctly.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

OPSET = 17


def mlp(path: Path) -> None:
    import kiln
    from kiln import nn, optim

    Xtr, ytr, _, _ = common.load_case("mlp")
    kiln.manual_seed(0)
    model = common.build(nn, "mlp")
    model.compile(optimizer=optim.Adam(lr=common.LR), loss="cross_entropy")
    model.fit(Xtr, ytr, epochs=10, batch_size=32, verbose=0)
    model.export_onnx(str(path), labels=[str(d) for d in range(10)])


class ResNetBuilder:
    """ResNet-8 for 32x32 RGB: a conv stem and three stages of one basic block each
    (16 channels at 32x32, 32 at 16x16, 64 at 8x8; stride-2 blocks get a 1x1 projection shortcut),
    global average pooling and a 64 -> 10 classifier. About 78k parameters, 12.5M multiply-adds."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def _const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        name = self._name("conv")
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))  # He init
        self.nodes.append(helper.make_node(
            "Conv", [x, self._const(f"{name}.weight", w)], [name], kernel_shape=[k, k],
            strides=[stride, stride], pads=[k // 2] * 4))
        bn = self._name("bn")
        c = lambda v: self._const(f"{bn}.{v[0]}", v[1])  # noqa: E731
        self.nodes.append(helper.make_node("BatchNormalization", [
            name, c(("weight", 1 + 0.1 * self.rng.standard_normal(cout))),
            c(("bias", 0.1 * self.rng.standard_normal(cout))),
            c(("running_mean", 0.1 * self.rng.standard_normal(cout))),
            c(("running_var", 1 + 0.2 * self.rng.random(cout)))], [bn], epsilon=1e-5))
        if not relu:
            return bn
        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [bn], [out]))
        return out

    def block(self, x: str, cin: int, cout: int, stride: int) -> str:
        h = self.conv_bn(x, cin, cout, 3, stride, relu=True)
        h = self.conv_bn(h, cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv_bn(x, cin, cout, 1, stride, relu=False)
        add, out = self._name("add"), self._name("relu")
        self.nodes += [helper.make_node("Add", [h, shortcut], [add]), helper.make_node("Relu", [add], [out])]
        return out

    def build(self) -> onnx.ModelProto:
        x = self.conv_bn("input", 3, 16, 3, 1, relu=True)
        x = self.block(x, 16, 16, 1)
        x = self.block(x, 16, 32, 2)
        x = self.block(x, 32, 64, 2)
        self.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
                       helper.make_node("Flatten", ["gap"], ["flat"], axis=1)]
        w = self.rng.standard_normal((10, 64)) / np.sqrt(64)
        self.nodes.append(helper.make_node("Gemm", ["flat", self._const("fc.weight", w),
                                                    self._const("fc.bias", np.zeros(10))], ["output"], transB=1))
        graph = helper.make_graph(
            self.nodes, "resnet8",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="kiln bench (onnx.helper)")
        model.ir_version = 8
        return model


def agree(path: Path, shape: tuple[int, ...]) -> float:
    """Largest |kiln - onnxruntime| over a batch of 4; raises if they disagree beyond 1e-4."""
    import kiln
    import onnxruntime as ort

    x = np.random.default_rng(1).random((4, *shape), dtype=np.float32)
    ours = kiln.InferenceSession(str(path)).run(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(ours - theirs)))
    if not diff <= 1e-4 * max(1.0, float(np.max(np.abs(theirs)))):
        raise SystemExit(f"make_models: kiln and onnxruntime disagree on {path.name} by {diff:g}")
    return diff


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "out" / "models")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    demo = ROOT / "web-demo" / "model" / "digits.onnx"
    if not demo.exists():
        raise SystemExit(f"make_models: {demo} is missing (the web demo's model; `make demo` trains it)")
    shutil.copyfile(demo, out / "cnn.onnx")
    mlp(out / "mlp.onnx")
    resnet = ResNetBuilder(seed=0).build()
    onnx.save(resnet, out / "resnet.onnx")

    models = {
        "cnn": {"label": "digits CNN (web demo)", "shape": [1, 8, 8], "source": "web-demo/model/digits.onnx, exported by kiln"},
        "mlp": {"label": "digits MLP 64-128-64-10", "shape": [64], "source": "trained and exported by kiln"},
        "resnet": {"label": "ResNet-8, 3x32x32", "shape": [3, 32, 32], "source": "onnx.helper (kiln has no residual add)"},
    }
    for name, info in models.items():
        path = out / f"{name}.onnx"
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        info.update(
            file=path.name, bytes=path.stat().st_size,
            params=int(sum(np.prod(t.dims) for t in proto.graph.initializer)),
            ops=sorted({n.op_type for n in proto.graph.node}),
            kiln_vs_onnxruntime_max_diff=agree(path, tuple(info["shape"])))
    (out / "models.json").write_text(json.dumps(models, indent=1))
    summary = ", ".join(f"{k} ({v['params']:,} params)" for k, v in models.items())
    print(f"make_models: {summary} in {out} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
