#!/usr/bin/env python3
"""The ResNet-8 as a PyTorch user ships it: bench/common.py's resnet8 built with torch.nn, given the
weights kiln trained (make_models.py saves them as resnet_state.npz: kiln's state_dict has PyTorch's
names), and written by PyTorch's legacy exporter (``torch.onnx.export(dynamo=False)``, eval mode, so
BatchNorm is folded into the convolutions and the flatten becomes Shape/Gather/Concat/Reshape).
Runs in bench/.venv-peers (torch); make_models.py calls it and checks the file like its own.

    bench/.venv-peers/bin/python bench/torch_export.py bench/out/models
"""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    state = dict(np.load(out / "resnet_state.npz"))
    model = common.build(torch.nn, "resnet")
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise SystemExit(f"torch_export: kiln's state_dict does not fit: missing {missing}, unexpected {unexpected}")
    model.eval()
    x = torch.from_numpy(np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    (out / "resnet-torch.onnx").write_bytes(buf.getvalue())
    print(f"torch_export: resnet-torch.onnx, {len(buf.getvalue()):,} bytes, PyTorch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
