#!/usr/bin/env python3
"""Training speed of a char-level GRU classifier, kiln against PyTorch (2 threads each): one model
definition for both (kiln.nn mirrors torch.nn), the same data, batch, epochs and optimizer.

    .venv/bin/python bench/rnn_speed.py kiln
    bench/.venv-peers/bin/python bench/rnn_speed.py torch

Prints one JSON line: samples/s over the whole fit (after one warm-up epoch), final training loss,
and the load average when it started (the machine is shared: compare runs made back to back).
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

VOCAB, STEPS, EMB, HIDDEN, CLASSES = 30, 24, 32, 128, 4
SAMPLES, BATCH, EPOCHS, LR = 2048, 64, 3, 1e-3


def data() -> tuple[np.ndarray, np.ndarray]:
    """Random ids; the class is which of four marker tokens occurs most (order matters little)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, VOCAB, (SAMPLES, STEPS))
    y = np.stack([(X == k).sum(1) for k in range(1, 1 + CLASSES)], 1).argmax(1)
    return X.astype(np.int64), y.astype(np.int64)


def char_gru(nn):
    class CharGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, EMB)
            self.gru = nn.GRU(EMB, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, ids):
            _, h = self.gru(self.emb(ids))
            return self.head(h[-1])

    return CharGRU()


def run_kiln(X, y):
    import kiln
    from kiln import nn, optim

    kiln.manual_seed(0)
    model = char_gru(nn)
    model.compile(optimizer=optim.Adam(lr=LR), loss="cross_entropy")
    model.fit(X[:BATCH * 4], y[:BATCH * 4], epochs=1, batch_size=BATCH, verbose=0)  # warm-up
    start = time.perf_counter()
    hist = model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    return time.perf_counter() - start, hist.history["loss"][-1]


def run_torch(X, y):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = char_gru(nn)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()

    def epoch(n: int) -> float:
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        return total / n

    epoch(BATCH * 4)  # warm-up
    start = time.perf_counter()
    for _ in range(EPOCHS):
        last = epoch(SAMPLES)
    return time.perf_counter() - start, last


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "kiln"
    X, y = data()
    load = os.getloadavg()[0]
    seconds, loss = (run_kiln if which == "kiln" else run_torch)(X, y)
    print(json.dumps({"framework": which, "samples_per_s": round(SAMPLES * EPOCHS / seconds, 1),
                      "seconds": round(seconds, 2), "final_loss": round(float(loss), 4), "load_at_start": load}))


if __name__ == "__main__":
    main()
