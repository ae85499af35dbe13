#!/usr/bin/env python3
"""kiln side of the training benchmark: one case, one seed, one process, one JSON object on stdout.

    .venv/bin/python bench/kiln_train.py mlp --seed 0      # or cnn, gemm, resnet

Same cases, split, architecture, batch size, epochs, optimizer and thread count as peers_torch.py
(both read bench/common.py). The whole fit loop runs in Rust, so this measures kiln's core, not Python.
"""
from __future__ import annotations

import os

import common  # noqa: E402  (numpy only: kiln is not imported yet)

# kiln's parallel pieces read these when they start, so they must be set before kiln is imported:
# rayon (kiln's own parallel loops) and matrixmultiply's GEMM threads; as many as PyTorch gets.
os.environ.setdefault("RAYON_NUM_THREADS", str(common.THREADS))
os.environ.setdefault("MATMUL_NUM_THREADS", str(common.THREADS))

import numpy as np  # noqa: E402

import kiln  # noqa: E402
from kiln import nn, optim  # noqa: E402


def build(case: str):
    return common.build(nn, case)


def main() -> None:
    args = common.parse_args("kiln")
    Xtr, ytr, Xte, yte = common.load_case(args.case)
    kiln.manual_seed(args.seed)  # fixes initialisation and shuffling, as torch.manual_seed does
    model = build(args.case)
    model.compile(optimizer=optim.Adam(lr=common.LR), loss="cross_entropy", metrics=["accuracy"])
    rss_before = common.current_rss_mb()
    with common.Timer() as timer:
        model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch, verbose=0)
    acc = None
    if args.case != "gemm":  # random labels: accuracy means nothing there
        # argmax of the raw outputs, computed here so it does not depend on evaluate()'s key names
        acc = float(np.mean(np.argmax(model.predict(Xte), axis=1) == yte))
    common.emit("kiln", getattr(kiln, "__version__", "unknown"), args, len(Xtr), timer, acc,
                rss_before)


if __name__ == "__main__":
    main()
