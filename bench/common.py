"""What the training benchmarks share, so kiln and PyTorch see exactly the same cases.

Imported by peers_torch.py (PyTorch's venv) and kiln_train.py (kiln's venv): numpy, scikit-learn and
the standard library only, never torch or kiln.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

# Both frameworks train on 2 threads (the machine's cores); BENCH_THREADS=1 compares them at one
# thread each, the fairer race on a shared machine (PyTorch's 2 threads collapse when the other core
# is busy).
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# ResNet-8 at 3x32x32 costs ~700x the digits MLP per sample: 5 epochs on a subset of the training
# images (160 steps, as gemm: PyTorch's slow first steps amortised) keep its six runs (2 frameworks x
# 3 seeds) near a minute on 2 idle cores, and reach 95-98% test accuracy (10 epochs: ~99%).
RESNET_EPOCHS, RESNET_TRAIN = 5, 1024
BATCH = {"mlp": 32, "cnn": 32, "gemm": 256, "resnet": 32}
EPOCHS = {"mlp": 30, "cnn": 30, "gemm": 10, "resnet": RESNET_EPOCHS}  # gemm: 160 steps, so first-steps
# warm-up (allocator growth: PyTorch runs its first ~16 steps 3-4x slower) is amortised as in a real run
LR = 1e-3
# The GEMM-bound case trains on random data: only its speed means anything.
GEMM_SAMPLES, GEMM_IN, GEMM_HIDDEN, GEMM_CLASSES = 4096, 784, 1024, 10

# Layer lists in kiln's architecture JSON vocabulary; both scripts build their model from these, so
# the two frameworks cannot drift apart. ReLU after every hidden layer.
ARCH = {
    "mlp": [("Linear", 64, 128), ("ReLU",), ("Linear", 128, 64), ("ReLU",), ("Linear", 64, 10)],
    "cnn": [("Conv2d", 1, 16, 3, 1), ("ReLU",), ("MaxPool2d", 2),       # 16x8x8 -> 16x4x4
            ("Conv2d", 16, 32, 3, 1), ("ReLU",), ("MaxPool2d", 2),      # 32x4x4 -> 32x2x2
            ("Flatten",), ("Linear", 32 * 2 * 2, 10)],
    "gemm": [("Linear", GEMM_IN, GEMM_HIDDEN), ("ReLU",), ("Linear", GEMM_HIDDEN, GEMM_HIDDEN),
             ("ReLU",), ("Linear", GEMM_HIDDEN, GEMM_CLASSES)],
}


def resnet8(nn, F):
    """ResNet-8 for 3x32x32 images as an ``nn.Module`` class, from either framework's ``nn`` and
    ``nn.functional`` (kiln's mirror torch's names and arguments, so one definition serves both):
    a conv stem 3->16 + BatchNorm + ReLU, three stages of one basic block each (16 channels at 32x32,
    32 at 16x16 and 64 at 8x8; the stride-2 blocks get a 1x1 conv + BatchNorm projection shortcut),
    global average pooling and a 64 -> 10 classifier. 78k parameters, 12.5M multiply-adds per image.
    Convolutions followed by BatchNorm have no bias (the BatchNorm's shift makes it redundant)."""

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))
            else:
                self.shortcut = nn.Identity()

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet8(nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.layer1 = BasicBlock(16, 16, 1)
            self.layer2 = BasicBlock(16, 32, 2)
            self.layer3 = BasicBlock(32, 64, 2)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean(dim=(2, 3)))  # global average pooling

    return ResNet8


# Cases whose model is an nn.Module class rather than a layer list: factory(nn, F) -> class.
MODULES = {"resnet": resnet8}
CASES = sorted([*ARCH, *MODULES])


def build(nn, case: str):
    """The case's model from ARCH (or MODULES) with either framework's ``nn`` module (same names, same
    argument order); ``nn.functional`` is kiln.nn.functional or torch.nn.functional alike."""
    if case in MODULES:
        return MODULES[case](nn, nn.functional)()
    layers = []
    for kind, *a in ARCH[case]:
        if kind == "Linear":
            layers.append(nn.Linear(a[0], a[1]))
        elif kind == "Conv2d":
            layers.append(nn.Conv2d(a[0], a[1], kernel_size=a[2], padding=a[3]))
        elif kind == "MaxPool2d":
            layers.append(nn.MaxPool2d(a[0]))
        else:
            layers.append(getattr(nn, kind)())
    return nn.Sequential(*layers)


def load_case(case: str):
    """(X_train, y_train, X_test, y_test) as float32 / int64. Same split for every seed and framework."""
    if case == "gemm":
        rng = np.random.default_rng(12345)
        X = rng.standard_normal((GEMM_SAMPLES, GEMM_IN), dtype=np.float32)
        y = rng.integers(0, GEMM_CLASSES, GEMM_SAMPLES).astype(np.int64)
        return X, y, X[:512], y[:512]
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)  # pixels are 0..16
    if case == "cnn":
        X = X.reshape(-1, 1, 8, 8)
    if case == "resnet":
        X = digits_rgb32(X)
    Xtr, Xte, ytr, yte = train_test_split(X, y.astype(np.int64), test_size=0.25, random_state=0,
                                          stratify=y)
    if case == "resnet":  # the split's order is already shuffled (and near-stratified): a prefix
        Xtr, ytr = Xtr[:RESNET_TRAIN], ytr[:RESNET_TRAIN]
    return np.ascontiguousarray(Xtr), ytr, np.ascontiguousarray(Xte), yte


def digits_rgb32(X: np.ndarray) -> np.ndarray:
    """Digits (N, 64) in 0..1 as CIFAR-sized colour images (N, 3, 32, 32): each pixel blown up to a
    4x4 block, the strokes in a colour and the background in another, both drawn per image from a
    fixed seed (so a model must learn shape, not colour). No download: scikit-learn bundles digits."""
    rng = np.random.default_rng(8)
    img = np.kron(X.reshape(-1, 1, 8, 8), np.ones((1, 1, 4, 4), np.float32))  # (N, 1, 32, 32)
    fg = rng.uniform(0.5, 1.0, (len(X), 3, 1, 1)).astype(np.float32)
    bg = rng.uniform(0.0, 0.3, (len(X), 3, 1, 1)).astype(np.float32)
    return (img * fg + (1 - img) * bg).astype(np.float32)


def parse_args(framework: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=f"train one benchmark case with {framework}; "
                                             "prints one JSON object")
    ap.add_argument("case", choices=CASES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="override the case's epoch count (for a quick try)")
    args = ap.parse_args()
    args.epochs = args.epochs or EPOCHS[args.case]
    args.batch = BATCH[args.case]
    return args


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(max_seconds: float, busy_below: float = 0.1, window: float = 3.0) -> bool:
    """Block until the machine's busy share over a `window`-second sample drops below `busy_below`,
    or `max_seconds` pass. For shared machines (run.sh's BENCH_WAIT_IDLE); True if it got idle."""
    deadline = time.monotonic() + max_seconds
    while True:
        b0, t0 = _busy_cpu_seconds(), time.monotonic()
        time.sleep(window)
        share = (_busy_cpu_seconds() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if share < busy_below:
            return True
        if time.monotonic() > deadline:
            print(f"bench: machine still {share:.0%} busy; measuring anyway", file=sys.stderr)
            return False


class Timer:
    """Wall time of the training call alone (no imports, data loading or evaluation), and how much of
    the machine OTHER processes used meanwhile (a load average would count this benchmark itself)."""

    def __enter__(self):
        self.busy0, self.own0 = _busy_cpu_seconds(), sum(os.times()[:4])
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        other = (_busy_cpu_seconds() - self.busy0) - (sum(os.times()[:4]) - self.own0)
        wall = max(self.seconds, 1e-9)
        # share of all cores' time taken by other processes while the timer ran (0 = undisturbed)
        self.other_cpu_share = max(0.0, other / (wall * (os.cpu_count() or 1)))


def emit(framework: str, version: str, args, n_train: int, timer: Timer, accuracy: float | None,
         rss_before_mb: float, **extra) -> None:
    """Print the case's result as one JSON line on stdout (run.sh collects it)."""
    samples = n_train * args.epochs
    print(json.dumps({
        "framework": framework, "version": version, "case": args.case, "seed": args.seed,
        "epochs": args.epochs, "batch_size": args.batch, "threads": THREADS, "train_samples": n_train,
        "train_seconds": round(timer.seconds, 4),
        "samples_per_s": round(samples / timer.seconds, 1),
        "us_per_step": round(timer.seconds / (args.epochs * -(-n_train // args.batch)) * 1e6, 1),
        "test_accuracy": None if accuracy is None else round(float(accuracy), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_training_mb": round(rss_before_mb, 1),
        "other_cpu_share": round(timer.other_cpu_share, 3),
        "python": platform.python_version(),
        **extra,
    }))
    sys.stdout.flush()
