"""The Python half of kiln's cross-language journey.

kiln trains a small CNN on scikit-learn's digits and exports it to ONNX; the same 100 held-out test
images then go through `model.predict`, onnxruntime (the outside referee) and `kiln.InferenceSession`.
Everything the JavaScript half needs is written to tests/out/journey/:
  digits.onnx    the exported model (labels and input scale/offset in its metadata)
  journey.json   the raw test images (ink counts 0..16), their true labels, the model's input
                 transform, and each Python runtime's outputs
The Node and Chromium halves (tests/e2e/agreement.test.mjs) then run the same images through kiln-wasm
and the demo page and check all of them agree to 1e-4.

Fails loudly (non-zero exit, the reason on stderr) whenever a runtime disagrees or a piece is missing.
    python tests/journey.py [--out DIR] [--epochs N]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TOLERANCE = 1e-4
N_IMAGES = 100
SCALE, OFFSET = 1.0 / 16.0, 0.0  # digits are ink counts 0..16; the network sees 0..1
LABELS = [str(d) for d in range(10)]


def fail(message):
    sys.exit(f"journey.py: FAILED: {message}")


def max_abs_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        fail(f"output shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "journey")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    try:
        import kiln
        from kiln import nn, optim
    except ImportError as e:
        fail(f"the Python package `kiln` is not importable ({e}); build it with `make py`")

    X, y = load_digits(return_X_y=True)
    images = X.reshape(-1, 1, 8, 8).astype(np.float32)  # ink counts 0..16, NCHW
    X_train, X_test, y_train, y_test = train_test_split(images, y, test_size=0.25, random_state=0, stratify=y)
    to_input = lambda raw: (raw * np.float32(SCALE) + np.float32(OFFSET)).astype(np.float32)

    kiln.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )
    model.compile(optimizer=optim.Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(to_input(X_train), y_train.astype(np.int64), epochs=args.epochs, batch_size=32, verbose=0)
    train_s = time.perf_counter() - t0
    accuracy = float(model.evaluate(to_input(X_test), y_test.astype(np.int64))["accuracy"])
    print(f"trained {args.epochs} epochs in {train_s:.1f} s; held-out accuracy {accuracy:.4f}")
    if accuracy < 0.9:
        fail(f"held-out accuracy {accuracy:.4f} < 0.9: training is broken, agreement would prove nothing")

    path = args.out / "digits.onnx"
    model.export_onnx(str(path), labels=LABELS, input_scale=SCALE, input_offset=OFFSET)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    if json.loads(meta.get("kiln.labels", "null")) != LABELS:
        fail(f"exported kiln.labels is {meta.get('kiln.labels')!r}, expected {LABELS}")
    for key, want in (("kiln.input_scale", SCALE), ("kiln.input_offset", OFFSET)):
        # Written from an f32, so compare as one.
        if key not in meta or abs(float(meta[key]) - want) > 1e-7 * max(1.0, abs(want)):
            fail(f"exported {key} is {meta.get(key)!r}, expected {want}: the page reads it to preprocess")

    raw = X_test[:N_IMAGES]
    x = to_input(raw)
    outputs = {"model_predict": np.asarray(model.predict(x), np.float32)}
    referee = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = referee.get_inputs()[0].name
    outputs["onnxruntime"] = referee.run(None, {input_name: x})[0]
    session = kiln.InferenceSession(str(path))
    outputs["kiln_inference_session"] = np.asarray(session.run(x), np.float32)

    diffs = {name: max_abs_diff(out, outputs["onnxruntime"]) for name, out in outputs.items() if name != "onnxruntime"}
    for name, d in diffs.items():
        print(f"max |{name} - onnxruntime| = {d:.3g}")
    bad = {k: d for k, d in diffs.items() if not d <= TOLERANCE}
    if bad:
        fail(f"outputs disagree with onnxruntime beyond {TOLERANCE}: {bad}")
    top1 = {k: v.argmax(1) for k, v in outputs.items()}
    if any((t != top1["onnxruntime"]).any() for t in top1.values()):
        fail("top-1 labels differ between Python runtimes")

    journey = {
        "tolerance": TOLERANCE,
        "labels": LABELS,
        "input_name": input_name,
        "input_dims": list(x.shape),
        "scale": SCALE,
        "offset": OFFSET,
        "accuracy": accuracy,
        "true_labels": y_test[:N_IMAGES].tolist(),
        "pixels": raw.reshape(N_IMAGES, 64).astype(int).tolist(),
        # float32 -> Python float is exact, and so is the way back in JS (Float32Array.from).
        "outputs": {k: v.astype(np.float32).tolist() for k, v in outputs.items()},
        "python_max_abs_diff": diffs,
    }
    (args.out / "journey.json").write_text(json.dumps(journey))
    print(f"wrote {path} ({path.stat().st_size} bytes) and {args.out / 'journey.json'}")


if __name__ == "__main__":
    main()
