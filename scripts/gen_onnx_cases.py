"""Writes the ONNX backend node conformance cases for kiln's runner (core/examples/onnx_conformance.rs).

The `onnx` wheel no longer ships the generated test data, but it ships the definitions:
`onnx.backend.test.case.node.collect_testcases()` builds every case (a one-node model and its
input/output arrays) in memory. This writes the ones whose inputs and outputs are all plain tensors
(numpy arrays or scalars: no TensorProto-only types, sequences or optionals) as

    <out>/<case>/model.onnx   the model
    <out>/<case>/data.onnx    a graph whose initializers are the arrays: input.0, input.1, ...,
                              output.0, ... (kiln reads them with the ONNX parser it already has)

and `<out>/cases.txt`, one case name a line. Skips the work when `<out>/stamp` says the same onnx
version and script wrote the folder already.

    python scripts/gen_onnx_cases.py [out_dir]      (default: target/onnx-node-cases)
"""

import hashlib
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def stamp_text() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"onnx {onnx.__version__} script {digest}\n"


def plain(values) -> bool:
    """numpy arrays and scalars; not TensorProto (float8/int4/bfloat16 data), lists or None."""
    return all(isinstance(v, (np.ndarray, np.generic)) for v in values)


def data_model(inputs, outputs) -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(np.asarray(a), f"input.{i}") for i, a in enumerate(inputs)]
    tensors += [numpy_helper.from_array(np.asarray(a), f"output.{i}") for i, a in enumerate(outputs)]
    graph = helper.make_graph([], "data", [], [], initializer=tensors)
    model = helper.make_model(graph, producer_name="kiln-conformance-data")
    model.ir_version = 8
    return model


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/onnx-node-cases")
    stamp = out / "stamp"
    if stamp.exists() and stamp.read_text() == stamp_text() and (out / "cases.txt").exists():
        count = len((out / "cases.txt").read_text().split())
        print(f"gen_onnx_cases: {count} cases already in {out}")
        return 0
    warnings.filterwarnings("ignore")
    from onnx.backend.test.case.node import collect_testcases

    cases = collect_testcases()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = []
    skipped = 0
    for case in cases:
        if case.model is None or len(case.data_sets) != 1:
            skipped += 1
            continue
        inputs, outputs = case.data_sets[0]
        if not (plain(inputs) and plain(outputs)):
            skipped += 1
            continue
        try:
            data = data_model(inputs, outputs).SerializeToString()
        except Exception:  # an array numpy_helper cannot store (e.g. object dtype)
            skipped += 1
            continue
        folder = out / case.name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        (folder / "data.onnx").write_bytes(data)
        names.append(case.name)
    (out / "cases.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    stamp.write_text(stamp_text())
    print(f"gen_onnx_cases: {len(cases)} cases, {len(names)} with plain tensors written to {out}, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
