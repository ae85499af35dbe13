"""An image and a model that declares how images become its input, with what Python's
kiln.Preprocess.apply makes of it: test_preprocess.py checks it in Python, wasm/tests/preprocess.test.mjs
in Node and tests/e2e/image.test.mjs in Chromium (every image type the page can make) against the same
tensor. ``python image_case.py OUT_DIR`` writes image.json (13 x 9 RGBA pixels, opaque), model.onnx
(input [N, 3, 8, 8], ImageNet mean/std, BGR) and expected.json (the input and the model's output).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import kiln
from kiln import nn

PREPROCESS = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], channels="bgr")


def image() -> np.ndarray:
    rgba = np.random.default_rng(7).integers(0, 256, size=(9, 13, 4), dtype=np.uint8)
    rgba[:, :, 3] = 255  # opaque: a canvas stores premultiplied alpha, which would change the colours
    return rgba


def model() -> nn.Sequential:
    kiln.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    m.input_shape = (3, 8, 8)
    return m


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    img, m, pre = image(), model(), kiln.Preprocess(**PREPROCESS)
    m.export_onnx(out / "model.onnx", labels=list("abcde"), preprocess=pre)
    x = pre.apply(img, size=(8, 8))
    (out / "image.json").write_text(json.dumps({"width": img.shape[1], "height": img.shape[0],
                                                "rgba": img.ravel().tolist()}))
    (out / "expected.json").write_text(json.dumps({"input": x.ravel().tolist(), "dims": list(x.shape),
                                                   "output": m.predict(x).ravel().tolist()}))


if __name__ == "__main__":
    write(Path(sys.argv[1]))
