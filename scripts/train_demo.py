"""Train the web demo's digits model and export it where the page loads it (make demo runs this).

The same steps as notebooks/01-train-digits.ipynb, as a script: scikit-learn's digits (8x8, values
0..16) scaled by 1/16, a small CNN, Adam, early stopping; exported to web-demo/model/digits.onnx with the
labels and the input scaling in the ONNX metadata, plus a few held-out digits in digits.json and the
checkpoint digits.kiln that the page's "teach it" mode fine-tunes in the browser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kiln
from kiln import callbacks, nn, optim

SCALE = 1.0 / 16.0


def build() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "web-demo", "model"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] * SCALE
    x_train, x_test, y_train, y_test, raw_train, raw_test = train_test_split(
        x, digits.target, digits.data, test_size=0.2, random_state=0, stratify=digits.target)

    kiln.manual_seed(args.seed)
    model = build()
    model.compile(optimizer=optim.Adam(lr=2e-3), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.1,
                        callbacks=[callbacks.EarlyStopping(patience=5)], verbose=0)
    scores = model.evaluate(x_test, y_test)
    print(f"trained {len(history.epoch)} epochs at {np.median(history.samples_per_sec):,.0f} samples/s; "
          f"test accuracy {scores['accuracy']:.4f}")
    if scores["accuracy"] < 0.95:
        print("train_demo: test accuracy below 95%, not exporting", file=sys.stderr)
        return 1

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "digits.onnx")
    # reference: the training inputs' statistics (kiln.drift), which the page's drift meter compares with
    model.export_onnx(path, labels=[str(d) for d in range(10)], input_scale=SCALE, input_offset=0.0, reference=x_train)
    # the page and the browser tests must see what Python sees
    sess = kiln.InferenceSession(path)
    diff = float(np.abs(sess.run(x_test) - model.predict(x_test)).max())
    assert diff < 1e-4, f"exported model disagrees with model.predict by {diff}"
    per_class = [np.flatnonzero(y_train == c)[:20] for c in range(10)]
    replay = np.stack(per_class, axis=1).ravel()  # interleaved: 0, 1, ..., 9, 0, 1, ...
    replay_pixels, replay_labels = raw_train[replay].astype(int).tolist(), y_train[replay].tolist()
    samples = {"source": "scikit-learn load_digits, held-out test split (random_state=0), never trained on",
               "input_range": [0, 16], "pixels": raw_test[:24].astype(int).tolist(), "labels": y_test[:24].tolist(),
               # "teach it" rehearses these training digits alongside the user's corrections, so a
               # few new examples don't make the network forget the rest (catastrophic forgetting)
               "replay": {"source": "scikit-learn load_digits, training split, 20 per class",
                          "pixels": replay_pixels, "labels": replay_labels}}
    with open(os.path.join(args.out, "digits.json"), "w") as f:
        json.dump(samples, f)
    # The checkpoint the page's "teach it" mode fine-tunes (kiln-wasm's Trainer reads it).
    checkpoint = os.path.join(args.out, "digits.kiln")
    model.save(checkpoint)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes) and {checkpoint} "
          f"({os.path.getsize(checkpoint):,} bytes); max |InferenceSession - predict| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
