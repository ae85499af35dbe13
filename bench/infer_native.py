#!/usr/bin/env python3
"""Native inference: kiln.InferenceSession (tract) vs onnxruntime (Python), one engine and one model
per process; prints one JSON object as the last stdout line.

    .venv/bin/python bench/infer_native.py kiln|onnxruntime|onnxruntime-2t MODEL [--models DIR] [--quick]

The same measurement as the wasm side (bench/infer/measure.mjs): cold start in fresh processes
(engine import + session creation + first prediction at batch 1; median of --cold-runs processes, this one
included), then the median ms per call at batch 1 and 64 after a warm-up. tract runs a model on one
thread, so onnxruntime is measured with one intra-op thread ("onnxruntime") and, as users run it by
default on this 2-core machine, with two ("onnxruntime-2t").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np  # noqa: E402  (both engines need numpy; it is imported before the clock starts)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

ENGINES = ("kiln", "onnxruntime", "onnxruntime-2t")
SETTINGS = {
    "full": dict(warmup_s=1.0, min_warmup=10, groups=21, min_groups=7, group_s=0.025, budget_s=4.0),
    "quick": dict(warmup_s=0.2, min_warmup=3, groups=7, min_groups=3, group_s=0.01, budget_s=0.6),
}


def input_for(shape, batch: int) -> np.ndarray:
    """The same deterministic pixels as measure.mjs's inputFor: ((i * 7919) % 17) / 16."""
    n = batch * int(np.prod(shape))
    return (((np.arange(n, dtype=np.int64) * 7919) % 17) / 16).astype(np.float32).reshape(batch, *shape)


def start(engine: str, path: Path, marks: dict):
    """Import the engine, load the model; returns run(x) -> first output."""
    t = time.perf_counter()
    if engine == "kiln":
        import kiln
        marks["import"] = time.perf_counter() - t
        t = time.perf_counter()
        sess = kiln.InferenceSession(str(path))
        marks["load"] = time.perf_counter() - t
        return sess.run, kiln.__version__
    import onnxruntime as ort
    marks["import"] = time.perf_counter() - t
    t = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2 if engine == "onnxruntime-2t" else 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    marks["load"] = time.perf_counter() - t
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})[0]), ort.__version__


def latency(run, s: dict) -> dict:
    """Median ms per call over groups of back-to-back calls, after a warm-up (see measure.mjs)."""
    t0, calls = time.perf_counter(), 0
    while calls < s["min_warmup"] or time.perf_counter() - t0 < s["warmup_s"]:
        run()
        calls += 1
    per_group = max(1, round(s["group_s"] / ((time.perf_counter() - t0) / calls)))
    times, t1 = [], time.perf_counter()
    while len(times) < s["groups"] and (len(times) < s["min_groups"] or time.perf_counter() - t1 < s["budget_s"]):
        g = time.perf_counter()
        for _ in range(per_group):
            run()
        times.append((time.perf_counter() - g) / per_group * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "groups": len(times), "per_group": per_group}


def cold_only(engine: str, path: Path, shape) -> dict:
    marks: dict = {}
    run, _ = start(engine, path, marks)
    t = time.perf_counter()
    out = run(input_for(shape, 1))
    marks["first run"] = time.perf_counter() - t
    return {"total_ms": sum(marks.values()) * 1e3, "phases": {k: v * 1e3 for k, v in marks.items()},
            "sample": [float(v) for v in np.ravel(out)[:10]], "out_len": int(np.size(out))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine", choices=ENGINES)
    ap.add_argument("model")
    ap.add_argument("--models", type=Path, default=HERE / "out" / "models")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cold-runs", type=int, default=5, help="fresh processes for the cold start's median")
    ap.add_argument("--cold-only", action="store_true", help=argparse.SUPPRESS)  # a child of --cold-runs
    args = ap.parse_args()
    if args.engine != "kiln":  # onnxruntime reads these too; both engines get the same thread budget
        os.environ.setdefault("OMP_NUM_THREADS", "2" if args.engine == "onnxruntime-2t" else "1")
    models = json.loads((args.models / "models.json").read_text())
    if args.model not in models:
        raise SystemExit(f"infer_native: unknown model {args.model!r}; models.json has {', '.join(models)}")
    info = models[args.model]
    path, shape = args.models / info["file"], tuple(info["shape"])

    cold = cold_only(args.engine, path, shape)
    if args.cold_only:
        print(json.dumps(cold))
        return
    rss_after_load = common.current_rss_mb()
    marks: dict = {}
    run, version = start(args.engine, path, marks)  # already imported: this only reloads the model
    one, b64 = input_for(shape, 1), input_for(shape, 64)
    s = SETTINGS["quick" if args.quick else "full"]
    with common.Timer() as timer:
        lat = {"1": latency(lambda: run(one), s), "64": latency(lambda: run(b64), s)}
    out64 = run(b64)
    if np.size(out64) != 64 * cold["out_len"]:
        raise SystemExit(f"infer_native: batch 64 gave {np.size(out64)} outputs, expected {64 * cold['out_len']}")

    colds = [cold]
    for _ in range(1 if args.quick else args.cold_runs - 1):  # fresh processes: nothing imported or cached
        cmd = [sys.executable, __file__, args.engine, args.model, "--models", str(args.models), "--cold-only"]
        colds.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    print(json.dumps({
        "env": "native", "env_version": f"Python {platform.python_version()}", "engine": args.engine,
        "engine_version": version, "model": args.model, "threads": 2 if args.engine == "onnxruntime-2t" else 1,
        "cold": summarise_cold(colds), "latency": lat, "sample": cold["sample"],
        "memory": {"rss_after_load_mb": rss_after_load, "peak_rss_mb": common.peak_rss_mb()},
        "settings": s, "loadavg_start": os.getloadavg()[0], "other_cpu_share": round(timer.other_cpu_share, 3),
    }))


def summarise_cold(runs: list[dict]) -> dict:
    """Medians over the cold runs, phase by phase (the phases' medians need not add up to the total's)."""
    return {"total_ms": statistics.median(r["total_ms"] for r in runs),
            "phases": {k: statistics.median(r["phases"][k] for r in runs) for k in runs[0]["phases"]},
            "runs": len(runs), "total_ms_all": [round(r["total_ms"], 2) for r in runs]}


if __name__ == "__main__":
    main()
