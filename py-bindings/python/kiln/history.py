"""What ``fit`` returns: per-epoch logs, Keras style."""

from __future__ import annotations

from typing import Any


class History:
    """``history.history["val_accuracy"]`` is a list of floats, one per completed epoch."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.history: dict[str, list[float]] = {k: [float(v) for v in vs] for k, vs in data["history"].items()}
        self.epoch: list[int] = list(range(int(data["epochs"])))
        self.stopped_by: str | None = data.get("stopped_by")
        self.samples_per_sec: list[float] = [float(v) for v in data.get("samples_per_sec", [])]

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}])"

    def plot(self, keys: list[str] | None = None, ax: Any = None) -> Any:
        """Draw loss and metric curves with matplotlib (train and validation side by side)."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from e
        names = keys or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        if ax is None:
            _, grid = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
            axes = list(grid[0])
        else:
            axes = [ax] * len(names)
        epochs = [e + 1 for e in self.epoch]
        for a, name in zip(axes, names):
            a.plot(epochs, self.history[name], label=name)
            if f"val_{name}" in self.history:
                a.plot(epochs, self.history[f"val_{name}"], label=f"val_{name}")
            a.set_xlabel("epoch")
            a.set_title(name)
            a.legend()
        return axes
