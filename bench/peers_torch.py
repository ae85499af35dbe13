#!/usr/bin/env python3
"""PyTorch (CPU, 2 threads) side of the training benchmark: one case, one seed, one process.

    bench/.venv-peers/bin/python bench/peers_torch.py mlp --seed 0     # prints one JSON object
    bench/.venv-peers/bin/python bench/peers_torch.py step             # µs per train step, MLP b32

The loop is the idiomatic fast one (tensors already in memory, a fresh permutation per epoch, slices
per batch, last partial batch kept); no DataLoader, whose per-item overhead would measure Python and
flatter kiln. Initialisation is PyTorch's default, which kiln mirrors.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch loads its OpenMP runtime

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402


def build(case: str) -> nn.Module:
    return common.build(nn, case)


def train(model, Xtr, ytr, epochs, batch, seed):
    opt = torch.optim.Adam(model.parameters(), lr=common.LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    n = len(Xtr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()


def step_timing(repeats: int = 2000) -> None:
    """Forward + backward + Adam step of the MLP 64-128-64-10 at batch 32, in µs (data for the lead)."""
    torch.manual_seed(0)
    model = build("mlp")
    opt = torch.optim.Adam(model.parameters(), lr=common.LR)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(200):  # warm up allocator and Adam's state
        step()
    runs, shares = [], []
    for _ in range(5):
        with common.Timer() as timer:
            for _ in range(repeats):
                step()
        runs.append(timer.seconds / repeats * 1e6)
        shares.append(timer.other_cpu_share)
    print(json.dumps({"framework": "pytorch", "version": torch.__version__, "case": "step",
                      "what": "MLP 64-128-64-10, batch 32: zero_grad + forward + CE + backward + Adam",
                      "threads": torch.get_num_threads(), "us_per_step_runs": [round(r, 2) for r in runs],
                      "us_per_step": round(float(np.median(runs)), 2),
                      "other_cpu_share": round(max(shares), 3)}))


def main() -> None:
    torch.set_num_threads(common.THREADS)
    if len(sys.argv) > 1 and sys.argv[1] == "step":
        return step_timing()
    args = common.parse_args("PyTorch")
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in common.load_case(args.case))
    torch.manual_seed(args.seed)
    model = build(args.case)
    rss_before = common.current_rss_mb()
    with common.Timer() as timer:
        train(model, Xtr, ytr, args.epochs, args.batch, args.seed)
    model.eval()
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).double().mean().item()
    common.emit("pytorch", torch.__version__, args, len(Xtr), timer,
                None if args.case == "gemm" else acc, rss_before,
                torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
