#!/usr/bin/env python3
"""The .onnx files the inference benchmarks run, written to bench/out/models/ with a models.json index.

    .venv/bin/python bench/make_models.py bench/out/models

- cnn.onnx: kiln's digits CNN as the web demo ships it (web-demo/model/digits.onnx, copied).
- mlp.onnx: the training benchmark's MLP 64-128-64-10 (bench/common.py), trained 10 epochs on digits
  by kiln and exported by kiln's `export_onnx`.
- resnet-torch.onnx: the same ResNet-8 with the same weights, written by PyTorch's legacy exporter
  (bench/torch_export.py, run with bench/.venv-peers' torch): what a PyTorch user brings. No TF.js
  twin (tfjs_spec.py reads kiln's exports).
- resnet.onnx: the training benchmark's ResNet-8 at 3x32x32 (CIFAR-sized; bench/common.py `resnet8`,
  an nn.Module with residual adds and BatchNorm), trained by kiln as `kiln_train.py resnet --seed 0`
  trains it (digits blown up to 32x32 colour images) and exported by kiln's `export_onnx`: trained
  weights and BatchNorm statistics, so the engines run a model a user would ship.

- cnn_int8.onnx, resnet_int8.onnx: the same two models as int8 QDQ files by kiln's own
  `kiln.optimize.quantize` (static, per-channel, min-max calibration on 256 training images): int8
  weights, uint8 activations; kiln's engine runs their convolutions on integer kernels. models.json
  records each one's test accuracy next to its float model's, and the file sizes.

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import tfjs_spec  # noqa: E402


def mlp(path: Path) -> None:
    import kiln
    from kiln import nn, optim

    Xtr, ytr, _, _ = common.load_case("mlp")
    kiln.manual_seed(0)
    model = common.build(nn, "mlp")
    model.compile(optimizer=optim.Adam(lr=common.LR), loss="cross_entropy")
    model.fit(Xtr, ytr, epochs=10, batch_size=32, verbose=0)
    model.export_onnx(str(path), labels=[str(d) for d in range(10)])


def resnet(path: Path) -> dict:
    """The training benchmark's ResNet-8 (bench/common.py's resnet8, an nn.Module with residual adds),
    trained by kiln exactly as `kiln_train.py resnet --seed 0` trains it, and exported by kiln's
    `export_onnx`: trained weights and BatchNorm statistics, in the graph kiln's exporter writes."""
    import kiln
    from kiln import nn, optim

    Xtr, ytr, Xte, yte = common.load_case("resnet")
    kiln.manual_seed(0)
    model = common.build(nn, "resnet")
    model.compile(optimizer=optim.Adam(lr=common.LR), loss="cross_entropy")
    model.fit(Xtr, ytr, epochs=common.EPOCHS["resnet"], batch_size=common.BATCH["resnet"], verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(Xte), axis=1) == yte))
    model.export_onnx(str(path), labels=[str(d) for d in range(10)])
    int8(model, Xtr, path.with_name("resnet_int8.onnx"))
    # the same weights for torch_export.py (kiln's state_dict has PyTorch's names)
    np.savez(path.with_name("resnet_state.npz"), **model.state_dict())
    return {"test_accuracy": round(accuracy, 4),
            "trained": f"{common.EPOCHS['resnet']} epochs on {len(Xtr)} digits at 3x32x32, seed 0"}


def train_race(out: Path) -> None:
    """The in-browser training race (bench/peers-js/train_race.mjs): the training benchmark's digits
    CNN, freshly initialised by kiln (seed 0) and saved as a checkpoint for kiln-wasm's Trainer, the
    same initial weights as a TF.js layer list (through export_onnx and tfjs_spec), and the digits
    split as raw little-endian arrays: x_train/x_test float32 NCHW, y_train/y_test int32."""
    import kiln

    Xtr, ytr, Xte, yte = common.load_case("cnn")
    kiln.manual_seed(0)
    model = common.build(kiln.nn, "cnn")
    model.save(str(out / "race_cnn.kiln"))
    model.export_onnx(str(out / "race_cnn.onnx"), input_shape=Xtr.shape[1:])
    (out / "race_cnn.tfjs.json").write_text(json.dumps(tfjs_spec.spec(out / "race_cnn.onnx")))
    for name, a, dtype in (("x_train", Xtr, "<f4"), ("y_train", ytr, "<i4"), ("x_test", Xte, "<f4"), ("y_test", yte, "<i4")):
        (out / f"race_{name}.bin").write_bytes(np.ascontiguousarray(a, dtype=dtype).tobytes())
    (out / "race.json").write_text(json.dumps({"shape": list(Xtr.shape[1:]), "train": len(Xtr), "test": len(Xte),
                                               "batch": common.BATCH["cnn"], "lr": common.LR}))


def int8(model, x_train: np.ndarray, path: Path) -> None:
    """`model` as int8 QDQ by kiln's quantizer, calibrated on its first 256 training images."""
    import kiln

    kiln.optimize.quantize(model, x_train[:256], str(path), labels=[str(d) for d in range(10)])


def test_accuracy(path: Path, case: str) -> float:
    """Top-1 accuracy of the file on the case's held-out digits, by kiln.InferenceSession."""
    import kiln

    _, _, x_test, y_test = common.load_case(case)
    return round(float(np.mean(kiln.InferenceSession(str(path)).run(x_test).argmax(1) == y_test)), 4)


def agree_int8(path: Path, shape: tuple[int, ...]) -> float:
    """Largest |kiln - onnxruntime| on an int8 file over a batch of 4; raises beyond one quantisation
    step of the output (the last DequantizeLinear's scale): engines may round a value that lands on a
    rounding boundary either way. onnxruntime runs the file unfused (ORT_DISABLE_ALL: each QDQ pair
    as written, the file's meaning): its fused uint8 x int8 kernels saturate int16 pair sums on x86
    without VNNI (measured 1.42 off its own unfused run on cnn_int8.onnx on an AVX2-only host, where
    kiln agrees to 3e-6; ../shared/TOOLCHAIN.md). py-bindings/tests/test_optimize.py compares
    against the fused kernels where they are exact."""
    import kiln
    import onnxruntime as ort

    proto = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    # the step of the classifier's output: its input's step times its largest weight
    last_w = next(n for n in reversed(proto.graph.node) if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and inits[n.input[0]].ndim == 2)
    last_x = next(n for n in reversed(proto.graph.node) if n.op_type == "DequantizeLinear" and n.input[0] not in inits)
    w = np.abs(inits[last_w.input[0]].astype(np.float64)).max() * float(np.abs(inits[last_w.input[1]]).max())
    step = w * float(inits[last_x.input[1]])
    x = np.random.default_rng(1).random((4, *shape), dtype=np.float32)
    ours = kiln.InferenceSession(str(path)).run(x)
    unfused = ort.SessionOptions()
    unfused.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), unfused, providers=["CPUExecutionProvider"])
    theirs = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(ours - theirs)))
    if not diff <= step * 1.001 + 1e-5:
        raise SystemExit(f"make_models: kiln and onnxruntime disagree on {path.name} by {diff:g} (one step {step:g})")
    return diff


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
    import kiln

    cnn_model = kiln.load(str(demo.with_suffix(".kiln")))
    int8(cnn_model, common.load_case("cnn")[0], out / "cnn_int8.onnx")
    mlp(out / "mlp.onnx")
    resnet_info = resnet(out / "resnet.onnx")

    import subprocess
    subprocess.run([str(HERE / ".venv-peers" / "bin" / "python"), str(HERE / "torch_export.py"), str(out)], check=True)
    models = {
        "cnn": {"label": "digits CNN (web demo)", "shape": [1, 8, 8], "source": "web-demo/model/digits.onnx, exported by kiln"},
        "mlp": {"label": "digits MLP 64-128-64-10", "shape": [64], "source": "trained and exported by kiln"},
        "resnet": {"label": "ResNet-8, 3x32x32", "shape": [3, 32, 32],
                   "source": "bench/common.py resnet8 (nn.Module), trained and exported by kiln", **resnet_info},
        "resnet-torch": {"label": "ResNet-8, exported by PyTorch", "shape": [3, 32, 32],
                         "source": "the same ResNet-8 and weights in torch.nn, torch.onnx.export(dynamo=False), eval mode"},
        "cnn_int8": {"label": "digits CNN int8", "shape": [1, 8, 8], "fp32": "cnn", "case": "cnn",
                     "source": "cnn.onnx through kiln.optimize.quantize (QDQ, static, per channel)"},
        "resnet_int8": {"label": "ResNet-8 int8", "shape": [3, 32, 32], "fp32": "resnet", "case": "resnet",
                        "source": "resnet.onnx's model through kiln.optimize.quantize (QDQ, static, per channel)"},
    }
    for name, info in models.items():
        path = out / f"{name}.onnx"
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        info.update(
            file=path.name, bytes=path.stat().st_size,
            params=int(sum(np.prod(t.dims) for t in proto.graph.initializer)),
            ops=sorted({n.op_type for n in proto.graph.node}))
        if "fp32" in info:
            # int8: agreement to one quantisation step, and accuracy next to the float model's
            info["kiln_vs_onnxruntime_max_diff"] = agree_int8(path, tuple(info["shape"]))
            info["test_accuracy"] = test_accuracy(path, info["case"])
            info["fp32_test_accuracy"] = test_accuracy(out / f"{info['fp32']}.onnx", info["case"])
            info["fp32_bytes"] = (out / f"{info['fp32']}.onnx").stat().st_size
            continue  # no TF.js twin: the peer runs float32 models
        info["kiln_vs_onnxruntime_max_diff"] = agree(path, tuple(info["shape"]))
        if name == "resnet-torch":
            import kiln
            info["kiln_engine"] = kiln.InferenceSession(str(path)).engine  # "kiln": no tract download
            continue
        # the same model for the TF.js peer (bench/tfjs_spec.py, bench/infer/tfjs.mjs)
        (out / f"{name}.tfjs.json").write_text(json.dumps(tfjs_spec.spec(path)))
        info["tfjs_file"] = f"{name}.tfjs.json"
    (out / "models.json").write_text(json.dumps(models, indent=1))
    train_race(out)
    summary = ", ".join(f"{k} ({v['params']:,} params)" for k, v in models.items())
    print(f"make_models: {summary} in {out} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
