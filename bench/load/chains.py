#!/usr/bin/env python3
"""How loading scales with the graph: plain chains of Relu nodes, 2k to 200k of them, loaded (parsed,
planned, first prediction) by every engine. Part of `make bench` (bench/run.sh); prints one JSON
object with every row, which report.py turns into the "Load time against graph size" table.

    .venv/bin/python bench/load/chains.py OUT_DIR [--quick]

Native rows come from this process (kiln.InferenceSession with kiln's engine and with tract,
onnxruntime with one thread); the wasm rows from `node bench/load/chains.mjs` (kiln-wasm's
loadModel on kiln's engine and on tract, onnxruntime-web), one fresh Node process per engine and
size. Each row is the median of 3 loads (1 with --quick). tract's load grows faster than the graph
(7 s at 8k nodes, minutes at 32k, measured here), so tract is only timed up to TRACT_MAX nodes and
the table says so rather than waiting.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SIZES = [2_000, 8_000, 20_000, 50_000, 200_000]
TRACT_MAX = 8_000


def chain(n: int, path: Path) -> None:
    """x [batch, 16] → Relu → … → Relu (n nodes) → y."""
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}" if i + 1 < n else "y"])
             for i in range(n)]
    graph = helper.make_graph(nodes, f"relu_chain_{n}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def timed(load, repeats: int) -> float:
    """Median seconds of `load()` (parse + plan + one prediction)."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        load()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def native(path: Path, n: int, repeats: int) -> dict:
    import kiln
    import onnxruntime as ort

    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    out = {}

    def kiln_load(engine):
        def go():
            s = kiln.InferenceSession(str(path), engine=engine)
            y = s.run(x)
            assert np.array_equal(np.asarray(y[0] if isinstance(y, (list, tuple)) else y), np.maximum(x, 0))
        return go

    def ort_load():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        s.run(None, {"x": x})

    out["kiln"] = timed(kiln_load("kiln"), repeats)
    out["tract"] = timed(kiln_load("tract"), repeats) if n <= TRACT_MAX else None
    out["onnxruntime"] = timed(ort_load, repeats)
    return out


def wasm(path: Path, n: int, repeats: int) -> dict:
    out = {}
    for engine in ("kiln", "tract", "onnxruntime-web"):
        if engine == "tract" and n > TRACT_MAX:
            out[engine] = None
            continue
        res = subprocess.run(["node", str(HERE / "chains.mjs"), engine, str(path), str(repeats)],
                             capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise SystemExit(f"chains.mjs {engine} {n}: {res.stderr.strip()[-500:]}")
        out[engine] = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
    return out


def main() -> None:
    out_dir = Path(sys.argv[1])
    quick = "--quick" in sys.argv
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = SIZES[:2] if quick else SIZES
    repeats = 1 if quick else 3
    chain(1, out_dir / "relu_chain_1.onnx")  # chains.mjs starts onnxruntime-web's wasm on it
    rows = []
    for n in sizes:
        path = out_dir / f"relu_chain_{n}.onnx"
        if not path.exists():
            chain(n, path)
        row = {"nodes": n, "bytes": path.stat().st_size,
               "native": native(path, n, repeats), "wasm_node": wasm(path, n, repeats)}
        print(f"load scaling: {json.dumps(row)}", file=sys.stderr)
        rows.append(row)
    print(json.dumps({"case": "load_scaling", "tract_max": TRACT_MAX, "repeats": repeats,
                      "loadavg": os.getloadavg()[0], "rows": rows}))


if __name__ == "__main__":
    main()
