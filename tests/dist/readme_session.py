"""The README's Python session, run by the fresh virtualenv of tests/dist/run.sh (outside the repo).

    python readme_session.py README.md OUT_DIR

Checks that `kiln` is the installed wheel's (not the repo's sources), runs every ```python block of
the README in order, in one namespace, in the current folder (as tests/test_readme.py does in the
repo), then leaves for the JS installs: OUT_DIR/digits.onnx and digits-images.onnx, the README's exports, and
OUT_DIR/cases.json: five inputs with what `kiln.InferenceSession` predicts for them, the README's photo
(RGBA pixels, the tensor kiln.Preprocess makes of them, the scores) and the versions Python reports.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

readme, out = Path(sys.argv[1]), Path(sys.argv[2])
repo = readme.resolve().parent

import kiln  # noqa: E402

where = Path(kiln.__file__).resolve()
assert repo not in where.parents, f"kiln was imported from the repository ({where}), not from the installed wheel"
assert Path(sys.prefix) in where.parents, f"kiln comes from {where}, outside this virtualenv ({sys.prefix})"
print(f"kiln {kiln.__version__} from {where.parent}")

namespace: dict = {"__name__": "__readme__"}
blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)
assert blocks, f"no ```python block in {readme}"
for index, code in enumerate(blocks):
    exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)
print(f"README: {len(blocks)} python blocks ran")

X = namespace["X"]
session = kiln.InferenceSession("digits.onnx")
cases = X[:5]
out.mkdir(parents=True, exist_ok=True)
(out / "digits.onnx").write_bytes(Path("digits.onnx").read_bytes())
# The README's image export: the photo's pixels, the tensor Python makes of them, and the scores.
photo = namespace["photo"]
rgba = np.concatenate([np.repeat(photo[:, :, None], 3, axis=2), np.full(photo.shape + (1,), 255, np.uint8)], axis=2)
photo_x = kiln.Preprocess.from_onnx("digits-images.onnx").apply(photo, size=(8, 8))
(out / "digits-images.onnx").write_bytes(Path("digits-images.onnx").read_bytes())
(out / "cases.json").write_text(json.dumps({
    "photo": {"width": 8, "height": 8, "rgba": rgba.ravel().tolist(), "input": photo_x.ravel().tolist(),
              "outputs": kiln.InferenceSession("digits-images.onnx").run(photo_x).ravel().tolist()},
    "dims": list(cases.shape),
    "inputs": cases.ravel().tolist(),
    "outputs": session.run(cases).ravel().tolist(),
    "labels": [str(d) for d in range(10)],
    "version": kiln.__version__,
    "metadata_version": session.metadata.get("kiln.version"),
}))
print(f"wrote {out / 'digits.onnx'} and {out / 'cases.json'}")
