"""What ``fit`` returns: per-epoch logs, Keras style."""

from __future__ import annotations

import html
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

    def _repr_html_(self) -> str:
        """Jupyter shows the logs as a table: one row per epoch (the first and last five of a long run)."""
        keys = list(self.history)
        n = len(self.epoch)
        shown = list(range(n)) if n <= 12 else [*range(5), -1, *range(n - 5, n)]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        rows = []
        for e in shown:
            if e < 0:
                rows.append(f"<tr><td>…</td>{'<td>…</td>' * len(keys)}</tr>")
                continue
            vals = "".join(f"<td>{self.history[k][e]:.4g}</td>" if e < len(self.history[k]) else "<td></td>" for k in keys)
            rows.append(f"<tr><td>{e + 1}</td>{vals}</tr>")
        note = f"{n} epoch{'s' if n != 1 else ''}"
        if self.stopped_by:
            note += f", stopped by {html.escape(self.stopped_by)}"
        return (f"<div><b>History</b> ({note}; <code>.plot()</code> draws the curves)<table><thead><tr><th>epoch</th>"
                f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")

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
