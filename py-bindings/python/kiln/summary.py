"""``model.summary()``: every module with its output shape for a given input, its parameters and the
totals, as text (``print``) and as an HTML table (Jupyter). The numbers come from the core, which runs
the model once on zeros to get them."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Optional


def _shape(shape: Optional[tuple[int, ...]], batch: bool = True) -> str:
    if shape is None:
        return "not called"
    dims = (["None"] if batch else []) + [str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class SummaryRow:
    """One module (or free parameter): its path, type, per-sample output shape (``None`` when the
    graph never calls it; a free tensor's own shape), how often it is called, and its value counts."""

    name: str
    kind: str
    output_shape: Optional[tuple[int, ...]]
    calls: int
    trainable: int
    non_trainable: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


class ModelSummary:
    """What ``model.summary(input_shape)`` returns: ``rows`` (:class:`SummaryRow`), ``trainable``,
    ``non_trainable``, ``total`` values and ``bytes``; ``print`` it for the table (Keras style, the batch
    axis shown as ``None``), or let Jupyter show it as HTML."""

    def __init__(self, model_name: str, data: dict[str, Any]) -> None:
        self.model_name = model_name
        self.inputs: list[tuple[str, tuple[int, ...]]] = [(n, tuple(s)) for n, s in data["inputs"]]
        self.rows = [SummaryRow(r["name"], r["kind"], None if r["output_shape"] is None else tuple(r["output_shape"]),
                                int(r["calls"]), int(r["trainable"]), int(r["non_trainable"])) for r in data["rows"]]
        self.outputs: list[tuple[int, ...]] = [tuple(s) for s in data["outputs"]]
        self.trainable = int(data["trainable"])
        self.non_trainable = int(data["non_trainable"])
        self.bytes = int(data["bytes"])

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def _cells(self, row: SummaryRow) -> tuple[str, str, str]:
        name = f"{row.name} ({row.kind})"
        if row.calls > 1:
            name += f" ×{row.calls}"
        free = row.kind in ("Parameter", "Buffer")
        return name, _shape(row.output_shape, batch=not free), f"{row.params:,}"

    def _header(self) -> str:
        if len(self.inputs) == 1:
            return f"{self.model_name}: input shape {_shape(self.inputs[0][1])}"
        return f"{self.model_name}: inputs " + ", ".join(f"{n} {_shape(s)}" for n, s in self.inputs)

    def _totals(self) -> list[str]:
        return [f"Total params: {self.total:,} ({_size(self.bytes)} as float32)",
                f"Trainable params: {self.trainable:,}",
                f"Non-trainable params: {self.non_trainable:,} (frozen parameters and buffers)"]

    def __str__(self) -> str:
        cells = [("Layer (type)", "Output shape", "Param #")] + [self._cells(r) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(3)]
        line = "─" * (sum(widths) + 6)

        def fmt(c: tuple[str, str, str]) -> str:
            return f"{c[0]:<{widths[0]}}   {c[1]:<{widths[1]}}   {c[2]:>{widths[2]}}"

        body = [fmt(c) for c in cells[1:]]
        return "\n".join([self._header(), line, fmt(cells[0]), line, *body, line, *self._totals()])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><td style='text-align:left'>{esc(a)}</td><td style='text-align:left'>{esc(b)}</td>"
                       f"<td style='text-align:right'>{esc(c)}</td></tr>" for a, b, c in map(self._cells, self.rows))
        totals = "<br>".join(esc(t) for t in self._totals())
        return (f"<div><b>{esc(self._header())}</b><table><thead><tr><th style='text-align:left'>Layer (type)</th>"
                f"<th style='text-align:left'>Output shape</th><th style='text-align:right'>Param #</th></tr></thead>"
                f"<tbody>{rows}</tbody></table><p>{totals}</p></div>")
