"""The wheel alone, in the fresh virtualenv of tests/dist/run.sh, before anything else is installed:

    python wheel_alone.py REPO

pip installed only what the wheel declares; kiln comes from site-packages, not from the repository; every
module imports (kiln.ray says what to install); a model trains, saves, loads, exports and runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import pkgutil
import sys
import tempfile
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
installed = sorted(d.metadata["Name"].lower() for d in md.distributions())
declared = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                  for r in md.requires("kiln") or [] if "extra ==" not in r)
extra = set(installed) - set(declared) - {"kiln", "pip", "setuptools"}
assert not extra, f"the wheel pulled in more than it declares ({declared}): {sorted(extra)}"
print(f"installed: {', '.join(installed)}")

import numpy as np  # noqa: E402

import kiln  # noqa: E402
from kiln import nn  # noqa: E402

where = Path(kiln.__file__).resolve()
assert repo not in where.parents and Path(sys.prefix) in where.parents, f"kiln imported from {where}"
assert kiln.__version__ == md.version("kiln"), f"kiln.__version__ {kiln.__version__}, the wheel {md.version('kiln')}"
assert (where.parent / "py.typed").exists() and (where.parent / "_kiln.pyi").exists(), "types missing from the wheel"

for info in pkgutil.walk_packages(kiln.__path__, "kiln."):
    if info.name.startswith("kiln.ray"):
        continue
    importlib.import_module(info.name)
try:
    importlib.import_module("kiln.ray")
except ImportError as e:
    assert "ray" in str(e), f"kiln.ray without Ray says: {e}"
    print(f"kiln.ray without Ray: {e}")

kiln.manual_seed(0)
X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
y = (X[:, 0] > 0).astype(np.int64)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
model.fit(X, y, epochs=3, verbose=0)
with tempfile.TemporaryDirectory() as scratch:
    model.save(Path(scratch) / "m.kiln")
    again = kiln.load(Path(scratch) / "m.kiln")
    assert np.allclose(again.predict(X), model.predict(X), atol=1e-6)
    onnx_bytes = model.export_onnx(labels=["no", "yes"])
    session = kiln.InferenceSession(onnx_bytes)
    assert np.allclose(session.run(X), model.predict(X), atol=1e-4)
    assert session.metadata["kiln.version"] == kiln.__version__
print(f"kiln {kiln.__version__} from {where.parent}: fit, save, load, export_onnx and InferenceSession work")
