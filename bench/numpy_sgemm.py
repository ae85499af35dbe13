#!/usr/bin/env python3
"""OpenBLAS sgemm throughput through numpy, the yardstick for kiln's GEMM. Prints one JSON object.

Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (run.sh does, for this command only): some
machines here set them to dodge bugs in old OpenBLAS builds, and they slow a current one down. The
kernel OpenBLAS actually picked is reported from threadpoolctl, so the figure can be trusted.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import common

SIZES = (256, 512, 1024)
THREADS = (1, 2)


def gflops(n: int, min_seconds: float = 0.5) -> float:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm up: thread pool start, page faults
    best = float("inf")
    for _ in range(5):  # best of 5 batches: the least disturbed by other processes
        reps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < min_seconds / 5 or reps == 0:
            np.matmul(a, b, out=c)
            reps += 1
        best = min(best, elapsed / reps)
    return 2 * n**3 / best / 1e9


def main() -> None:
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    results = {}
    with common.Timer() as timer:
        for t in THREADS:
            with threadpool_limits(limits=t, user_api="blas"):
                results[str(t)] = {str(n): round(gflops(n), 1) for n in SIZES}
    print(json.dumps({
        "case": "sgemm", "framework": "numpy+openblas", "numpy": np.__version__,
        "openblas": [{k: i.get(k) for k in ("internal_api", "version", "architecture",
                                             "threading_layer", "num_threads")} for i in blas],
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "gflops": results, "other_cpu_share": round(timer.other_cpu_share, 3),
    }))


if __name__ == "__main__":
    main()
