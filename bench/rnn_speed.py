#!/usr/bin/env python3
"""Training speed of char-level GRUs, kiln against PyTorch (2 threads each): one model definition for
both (kiln.nn mirrors torch.nn), the same data, batch, epochs and optimizer.

    .venv/bin/python bench/rnn_speed.py kiln                 # random ids, 4 classes (the first case)
    bench/.venv-peers/bin/python bench/rnn_speed.py torch

The text page's two models on real names (notebooks/04-text.ipynb; Faker's surnames, which only kiln's
venv has, so kiln writes the data once for both):

    .venv/bin/python bench/rnn_speed.py prepare              # bench/out/names.npz: ids, labels, splits
    .venv/bin/python bench/rnn_speed.py kiln names           # the language classifier, T = 14
    bench/.venv-peers/bin/python bench/rnn_speed.py torch names
    .venv/bin/python bench/rnn_speed.py kiln names-lm        # the GRU language model, [B, 16] -> [B, 16, V]
    bench/.venv-peers/bin/python bench/rnn_speed.py torch names-lm
    .venv/bin/python bench/rnn_speed.py kiln names-gpt       # notebook 04's small causal transformer, same data
    bench/.venv-peers/bin/python bench/rnn_speed.py torch names-gpt

Prints one JSON line: samples/s over the whole fit (after one warm-up epoch; evaluation not timed),
final training loss, for the names cases the validation loss (and accuracy) on the held-out split
after training, and the load average when it started (the machine is shared: compare runs made back
to back).
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (bench/common.py: the Timer the training benchmarks share)

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


# ---- the names cases: the text page's models, same hyperparameters on both sides -----------------
NAMES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "names.npz")
NAMES = {  # case: epochs, batch, learning rate (scripts/train_text_demo.py's recipe, fixed epochs)
    "names": (10, 32, 2e-3),
    "names-lm": (4, 32, 3e-3),
    "names-gpt": (4, 32, 3e-3),
}
EMB_N, HIDDEN_N = 32, 128


def prepare() -> None:
    """Writes the two cases' data with kiln's tokenizer (scripts/train_text_demo.py's own functions)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    from collections import Counter

    from kiln.text import CharTokenizer
    from train_text_demo import LANGUAGES, LM_STEPS, PER_LANGUAGE, left_pad, surnames

    lists = surnames()
    seen_in = Counter(n for names in lists.values() for n in names)
    tok = CharTokenizer.fit(sorted(seen_in))
    rng = np.random.default_rng(0)
    names, labels = [], []
    for i, lang in enumerate(LANGUAGES):
        own = [str(n) for n in rng.permutation([n for n in lists[lang] if seen_in[n] == 1])[:PER_LANGUAGE]]
        names += own
        labels += [i] * len(own)
    order = rng.permutation(len(names))
    x, y = left_pad(tok, [names[i] for i in order]), np.array(labels)[order]
    ids, _ = tok.encode_batch([str(n) for n in rng.permutation(sorted(seen_in))], max_len=LM_STEPS + 1, bos=True, eos=True)
    os.makedirs(os.path.dirname(NAMES_FILE), exist_ok=True)
    np.savez(NAMES_FILE, x=x, y=y, lm=ids, vocab=tok.vocab_size, classes=len(LANGUAGES))
    print(json.dumps({"wrote": NAMES_FILE, "classifier": list(x.shape), "lm": list(ids.shape), "vocab": tok.vocab_size}))


def names_data(case: str):
    d = np.load(NAMES_FILE)
    vocab, classes = int(d["vocab"]), int(d["classes"])
    if case == "names":
        x, y = d["x"], d["y"]
    else:
        x, y = d["lm"][:, :-1], d["lm"][:, 1:]
    cut = int(0.8 * len(x)) if case == "names" else int(0.9 * len(x))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:]), vocab, classes


def names_model(nn, case: str, vocab: int, classes: int, F=None):
    class NameLanguage(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, EMB_N)
            self.drop = nn.Dropout(0.2)
            self.gru = nn.GRU(EMB_N, HIDDEN_N, batch_first=True)
            self.head = nn.Linear(HIDDEN_N, classes)

        def forward(self, ids):
            _, h = self.gru(self.drop(self.emb(ids)))
            return self.head(h[-1])

    class NameLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, EMB_N)
            self.gru = nn.GRU(EMB_N, HIDDEN_N, batch_first=True)
            self.head = nn.Linear(HIDDEN_N, vocab)

        def forward(self, ids):
            out, _ = self.gru(self.emb(ids))
            return self.head(out.reshape(-1, HIDDEN_N)).reshape(-1, ids.shape[1], vocab)

    class NameGPT(nn.Module):  # notebooks/04-text.ipynb's transformer: d 48, 4 heads, 2 pre-norm layers
        def __init__(self, steps=16, d=48, heads=4, layers=2):
            super().__init__()
            self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(steps, d)
            layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers)
            self.head = nn.Linear(d, vocab)
            # PyTorch wants the causal mask itself beside the is_causal hint; kiln builds it from the hint
            self.mask = None if nn.__name__.startswith("kiln") else nn.Transformer.generate_square_subsequent_mask(steps)

        def forward(self, ids):
            return self.head(self.encoder(self.emb(ids) + self.pos.weight, mask=self.mask, is_causal=True))

    return {"names": NameLanguage, "names-lm": NameLM, "names-gpt": NameGPT}[case]()


def names_kiln(case: str) -> dict:
    import kiln
    from kiln import nn, optim

    (x, y), (xv, yv), vocab, classes = names_data(case)
    epochs, batch, lr = NAMES[case]
    kiln.manual_seed(0)
    model = names_model(nn, case, vocab, classes)
    loss = "cross_entropy" if case == "names" else kiln.losses.CrossEntropyLoss(ignore_index=0)
    model.compile(optimizer=optim.Adam(lr=lr), loss=loss, metrics=["accuracy"] if case == "names" else None)
    model.fit(x[:batch * 4], y[:batch * 4], epochs=1, batch_size=batch, verbose=0)  # warm-up
    kiln.manual_seed(0)
    model = names_model(nn, case, vocab, classes)
    model.compile(optimizer=optim.Adam(lr=lr), loss=loss, metrics=["accuracy"] if case == "names" else None)
    with common.Timer() as timer:
        hist = model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    scores = model.evaluate(xv, yv)
    return {"seconds": timer.seconds, "other_cpu_share": timer.other_cpu_share, "samples": len(x) * epochs, "final_loss": hist.history["loss"][-1],
            "val_loss": scores["loss"], "val_accuracy": scores.get("accuracy")}


def names_torch(case: str) -> dict:
    import warnings

    import torch
    from torch import nn

    warnings.filterwarnings("ignore", message="enable_nested_tensor")  # norm_first layers: nothing to fix
    # 2 threads, as every case; RNN_TORCH_THREADS=1 for context on a busy machine, where two OpenMP
    # threads that wait for each other at every op lose most when one core is taken
    torch.set_num_threads(int(os.environ.get("RNN_TORCH_THREADS", "2")))
    (x, y), (xv, yv), vocab, classes = names_data(case)
    epochs, batch, lr = NAMES[case]
    Xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss() if case == "names" else nn.CrossEntropyLoss(ignore_index=0)

    def flat(out, target):  # [B, T, V] against [B, T]: PyTorch wants the classes on axis 1
        return loss_fn(out.reshape(-1, out.shape[-1]), target.reshape(-1)) if out.dim() == 3 else loss_fn(out, target)

    def train(n: int, epochs: int):
        torch.manual_seed(0)
        model = names_model(nn, case, vocab, classes)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        last = 0.0
        for _ in range(epochs):
            perm = torch.randperm(n)
            total = 0.0
            for i in range(0, n, batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = flat(model(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            last = total / n
        return model, last

    train(batch * 4, 1)  # warm-up
    with common.Timer() as timer:
        model, last = train(len(x), epochs)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(xv))
        val_loss = float(flat(out, torch.from_numpy(yv)))
        acc = float((out.argmax(-1).numpy() == yv).mean()) if case == "names" else None
    return {"seconds": timer.seconds, "other_cpu_share": timer.other_cpu_share, "samples": len(x) * epochs, "final_loss": last, "val_loss": val_loss, "val_accuracy": acc}


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "kiln"
    case = sys.argv[2] if len(sys.argv) > 2 else "random"
    if which == "prepare":
        prepare()
        return
    load = os.getloadavg()[0]
    if case in NAMES:
        r = (names_kiln if which == "kiln" else names_torch)(case)
        epochs, batch, lr = NAMES[case]
        threads = int(os.environ.get("RNN_TORCH_THREADS", "2")) if which == "torch" else int(os.environ["RAYON_NUM_THREADS"])
        print(json.dumps({"framework": which, "case": case, "threads": threads, "samples_per_s": round(r["samples"] / r["seconds"], 1),
                          "seconds": round(r["seconds"], 2), "epochs": epochs, "batch": batch, "lr": lr,
                          "final_loss": round(float(r["final_loss"]), 4), "val_loss": round(float(r["val_loss"]), 4),
                          "val_accuracy": None if r["val_accuracy"] is None else round(float(r["val_accuracy"]), 4),
                          "other_cpu_share": round(r["other_cpu_share"], 3), "loadavg_start": load}))
        return
    X, y = data()
    seconds, loss = (run_kiln if which == "kiln" else run_torch)(X, y)
    print(json.dumps({"framework": which, "samples_per_s": round(SAMPLES * EPOCHS / seconds, 1),
                      "seconds": round(seconds, 2), "final_loss": round(float(loss), 4), "load_at_start": load}))


if __name__ == "__main__":
    main()
