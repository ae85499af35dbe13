#!/usr/bin/env python3
"""onnxruntime's own per-node times (one intra-op thread), to set beside kiln's per-step profile
(`core/examples/engine_profile`): which layers the gap between the two engines is in.

    .venv/bin/python bench/ort_profile.py bench/out/models/resnet.onnx 64 [--runs 200]

Each node's median kernel time over the runs after the first tenth (onnxruntime's profiler, which
times the optimised graph: NCHWc convolutions with their fused activations, reorders between
layouts), then the sum. Run it and `engine_profile` in separate processes, alternating, on an idle
host: two engines in one process read each other slower (bench/README.md).
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("batch", type=int)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = tempfile.mkdtemp() + "/ort"
    s = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    feed = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else args.batch for d in i.shape]
        feed[i.name] = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(args.runs):
        s.run(None, feed)
    with open(s.end_profiling()) as f:
        events = json.load(f)
    times: dict[str, list[float]] = collections.defaultdict(list)
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times[name].append(e["dur"] / 1000)
            ops[name] = e["args"].get("op_name", "?")
    total = 0.0
    for name, ms in times.items():
        m = statistics.median(ms[len(ms) // 10 :])
        total += m
        print(f"{m:9.4f} ms  {ops[name]:<14} {name}")
    print(f"{total:9.4f} ms  total (sum of medians), batch {args.batch}")


if __name__ == "__main__":
    main()
