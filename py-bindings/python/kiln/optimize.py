"""Make a model small and fast for the edge: int8 quantization, magnitude pruning, distillation.

    import kiln
    kiln.optimize.quantize(model, X_train[:500], "digits-int8.onnx")          # static int8 (QDQ)
    kiln.optimize.quantize(model, None, "digits-w8.onnx", mode="dynamic")      # int8 weights only
    model.fit(X, y, epochs=8, callbacks=[kiln.optimize.Pruning(0.8, end_epoch=4)])  # gradual pruning
    kiln.optimize.sparsity_report(model)                                       # real zeros per layer
    small = kiln.optimize.make_permanent(model)                                # drop dead channels
    kiln.optimize.distill(teacher, student, X, y, temperature=4, alpha=0.9, epochs=20)

The work happens in the Rust core (``kiln_core::optimize``); this module only shapes arguments.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import _kiln
from ._arrays import as_input, as_labels
from .callbacks import Pruning
from .errors import InvalidInputError
from .history import History

if TYPE_CHECKING:
    from .model import Sequential

__all__ = ["quantize", "prune", "Pruning", "sparsity_report", "make_permanent", "strip_pruning",
           "PolynomialDecay", "fit_pruned", "distill", "LayerSparsity", "SparsityReport"]


def _core(model: Any, what: str) -> Any:
    core = getattr(model, "_core", None)
    if not isinstance(core, _kiln.Model):
        raise InvalidInputError(f"{what} must be a kiln.nn.Sequential, got {type(model).__name__}")
    return core


@dataclass(frozen=True)
class LayerSparsity:
    """Real sparsity of one Linear/Conv weight: zeros counted, not what was asked for."""

    name: str
    shape: tuple[int, ...]
    total: int
    zeros: int
    channels: int
    zero_channels: int

    @property
    def sparsity(self) -> float:
        """Fraction of the weights that are exactly zero."""
        return self.zeros / self.total if self.total else 0.0


class SparsityReport(list[LayerSparsity]):
    """One :class:`LayerSparsity` per Linear/Conv weight; prints as a table."""

    def as_dict(self) -> dict[str, float]:
        """``{"0.weight": 0.81, ...}``: the fraction of zeros of each weight."""
        return {r.name: r.sparsity for r in self}

    @property
    def overall(self) -> float:
        """The fraction of zeros over all Linear/Conv weights together."""
        total = sum(r.total for r in self)
        return sum(r.zeros for r in self) / total if total else 0.0

    def __repr__(self) -> str:
        lines = [f"{'weight':12s} {'shape':16s} {'zeros':>14s} {'sparsity':>9s} {'dead channels':>14s}"]
        for r in self:
            lines.append(f"{r.name:12s} {str(r.shape):16s} {f'{r.zeros}/{r.total}':>14s} {r.sparsity:9.1%} "
                         f"{f'{r.zero_channels}/{r.channels}':>14s}")
        lines.append(f"{'overall':12s} {'':16s} {'':>14s} {self.overall:9.1%}")
        return "\n".join(lines)

    __str__ = __repr__


def _report(rows: Sequence[tuple[Any, ...]]) -> SparsityReport:
    return SparsityReport(LayerSparsity(name, tuple(shape), total, zeros, ch, zch)
                          for name, shape, total, zeros, ch, zch in rows)


def quantize(model: Sequential, calibration_x: Any = None, path: str | os.PathLike[str] | None = None, *,
             per_channel: bool = True, method: str = "minmax", percentile: float = 99.99, mode: str = "static",
             labels: Sequence[str] | None = None, input_scale: float | None = None,
             input_offset: float | None = None, opset: int = 17) -> bytes | None:
    """Write ``model`` as int8 ONNX (QDQ form); returns the bytes when ``path`` is None.

    ``mode="static"`` calibrates activation ranges on ``calibration_x`` (a few hundred typical inputs,
    preprocessed as for ``fit``), by ``method="minmax"`` or ``"percentile"`` (the ``percentile``-th and
    ``100 - percentile``-th values). ``mode="dynamic"`` quantizes weights only and needs no data.
    ``per_channel`` gives each output channel its own weight scale (more accurate, a few bytes more).

    Size: about 3.1x smaller than fp32 on the 2.7k-weight digits CNN and 3.8x on a 33.8k-weight one.
    On the small model the payload (int8 weights, int32 biases, per-channel scales) is 2.9 kB of the
    3.8 kB file; the rest is the graph (QDQ nodes, metadata), which is why the ratio grows with the model.

    Speed: kiln's engine (kiln.InferenceSession and kiln-wasm pick it for these files) runs each QDQ
    convolution on integer kernels (int8 weights packed once at load, the input quantized once per
    layer, i32 sums, BatchNorm / residual / ReLU / a 2x2 max-pool fused) and each QDQ Linear layer on
    the same integer kernel, and agrees with onnxruntime to one step of the output grid; other layers
    stay float32 on the dequantized values.
    In kiln-wasm that makes conv-heavy int8 models faster than fp32 (BENCHMARKS.md, "int8 against
    float32 in kiln-wasm"). The integer form (``QLinearConv``, onnxruntime's QOperator format) goes
    to tract, 3-7x slower than fp32 there.
    """
    core = _core(model, "quantize: model")
    x = None if calibration_x is None else as_input(calibration_x, "calibration_x")
    if labels is not None:
        labels = [str(label) for label in labels]
    data = _kiln.optimize_quantize(core, x, bool(per_channel), str(method), float(percentile), str(mode), labels,
                                   input_scale, input_offset, int(opset),
                                   None if path is None else os.fspath(path))
    return None if data is None else bytes(data)


def prune(model: Sequential, sparsity: float, *, structured: bool = False,
          scope: str = "global") -> SparsityReport:
    """Zero the smallest-magnitude weights of every Linear/Conv layer, in place, to ``sparsity`` in [0, 1).

    Unstructured pruning ranks single weights over the whole model (``scope="global"``) or layer by
    layer (``"per_layer"``). ``structured=True`` zeros whole output channels (conv filters, linear
    units) of each layer but the last, ranked by L2 norm; :func:`make_permanent` then removes them.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise InvalidInputError(f"prune: sparsity must be a number in [0, 1), got {sparsity!r}")
    return _report(_kiln.optimize_prune(_core(model, "prune: model"), float(sparsity), bool(structured), str(scope)))


def sparsity_report(model: Sequential) -> SparsityReport:
    """Per Linear/Conv weight: how many values and whole output channels are exactly zero (counted, not
    what was asked for). ``.as_dict()`` gives ``{name: sparsity}``, ``.overall`` the total fraction."""
    return _report(_kiln.optimize_sparsity_report(_core(model, "sparsity_report: model")))


def make_permanent(model: Sequential) -> Sequential:
    """A new, smaller model without the all-zero output channels left by structured pruning (and the
    matching inputs of the next layer): same outputs, fewer parameters, a smaller ONNX file.
    Unstructured zeros stay as they are (they shrink the gzip size, not the file). The new model is
    compiled like the old one when the old one was compiled."""
    from .model import Sequential

    core = _core(model, "make_permanent: model")
    small = Sequential._from_core(_kiln.Model.from_bytes(_kiln.optimize_make_permanent(core)))
    compiled = getattr(model, "_compiled", None)
    if compiled is not None:
        small.compile(optimizer=compiled["optimizer"], loss=compiled["loss"], metrics=compiled["metrics"],
                      clip_grad_norm=compiled["clip_grad_norm"], lr_schedule=compiled["lr_schedule"])
    return small


def strip_pruning(model: Sequential) -> Sequential:
    """The name Keras' tfmot gives :func:`make_permanent`. kiln's pruning wraps no layer (the masks live
    in the fit loop only while :class:`Pruning` runs), so nothing else needs stripping."""
    return make_permanent(model)


class PolynomialDecay:
    """Sparsity schedule of Zhu & Gupta (2017), per epoch: ``initial_sparsity`` during ``begin_epoch``,
    ``target_sparsity`` from ``end_epoch`` on, and ``s_e = s_f + (s_i - s_f)(1 - p)^power`` between,
    ``p = (e - begin_epoch) / (end_epoch - begin_epoch)``. It prunes fast while many redundant weights
    remain, then slowly so training can recover. The pruning itself runs in the core
    (:class:`Pruning`, which this schedule turns into with :meth:`callback`)."""

    def __init__(self, target_sparsity: float, begin_epoch: int = 0, end_epoch: int = 5,
                 initial_sparsity: float = 0.0, power: float = 3.0) -> None:
        for name, v in (("target_sparsity", target_sparsity), ("initial_sparsity", initial_sparsity)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
                raise InvalidInputError(f"PolynomialDecay: {name} must be in [0, 1), got {v!r}")
        if end_epoch < begin_epoch:
            raise InvalidInputError(f"PolynomialDecay: end_epoch ({end_epoch}) is before begin_epoch ({begin_epoch})")
        self.target_sparsity, self.initial_sparsity = float(target_sparsity), float(initial_sparsity)
        self.begin_epoch, self.end_epoch, self.power = int(begin_epoch), int(end_epoch), float(power)

    def __call__(self, epoch: int) -> float:
        """The sparsity held during ``epoch`` (counted from 0), as the core computes it."""
        if epoch < self.begin_epoch:
            return 0.0
        span = self.end_epoch - self.begin_epoch
        p = 1.0 if span == 0 else min((epoch - self.begin_epoch) / span, 1.0)
        return self.target_sparsity + (self.initial_sparsity - self.target_sparsity) * (1.0 - p) ** self.power

    def callback(self, structured: bool = False, scope: str = "global") -> Pruning:
        """The :class:`Pruning` callback that follows this schedule, one mask update per epoch."""
        return Pruning(self.target_sparsity, start_epoch=self.begin_epoch, end_epoch=self.end_epoch,
                       initial_sparsity=self.initial_sparsity, power=self.power, structured=structured, scope=scope)

    def __repr__(self) -> str:
        return (f"PolynomialDecay(target_sparsity={self.target_sparsity}, begin_epoch={self.begin_epoch}, "
                f"end_epoch={self.end_epoch}, power={self.power})")


def fit_pruned(model: Sequential, x: Any, y: Any, *, epochs: int, schedule: PolynomialDecay | float,
               structured: bool = False, scope: str = "global", batch_size: int = 32) -> History:
    """``model.fit(x, y, callbacks=[schedule.callback(structured, scope)], verbose=0)``: train with
    gradual magnitude pruning (see :class:`Pruning`). A bare number as ``schedule`` reaches that
    sparsity at the start of the last epoch. ``history.history["sparsity"]`` is the real fraction of
    zeros after each epoch."""
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise InvalidInputError(f"fit_pruned: model must be a kiln.nn.Sequential, got {type(model).__name__}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise InvalidInputError(f"fit_pruned: epochs must be a positive integer, got {epochs!r}")
    if not isinstance(schedule, PolynomialDecay):
        schedule = PolynomialDecay(schedule, end_epoch=epochs - 1)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                     callbacks=[schedule.callback(structured=structured, scope=scope)])


def distill(teacher: Sequential, student: Sequential, x: Any, y: Any = None, *, temperature: float = 4.0,
            alpha: float = 0.9, epochs: int = 10, batch_size: int = 32, lr: float | None = 1e-3,
            seed: int = 0) -> dict[str, list[float]]:
    """Knowledge distillation (Hinton et al., 2015): train ``student`` on
    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)``.

    ``y`` (integer class labels) is needed when ``alpha < 1``. With ``lr`` the student gets a fresh Adam
    optimizer; with ``lr=None`` it keeps the optimizer it was compiled with. Teacher and student must
    produce outputs of the same shape. Returns ``{"loss": [...], "soft_loss": [...]}`` per epoch."""
    from . import optim

    t_core, s_core = _core(teacher, "distill: teacher"), _core(student, "distill: student")
    if t_core is s_core:
        raise InvalidInputError("distill: the teacher and the student are the same model")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidInputError(f"distill: {name} must be a positive integer, got {v!r}")
    if lr is not None:
        s_core.set_optimizer(json.dumps(optim.Adam(lr=lr).spec()))
    xs = as_input(x, "x")
    ys = None if y is None else np.ascontiguousarray(as_labels(y, "y"), dtype=np.int64)
    loss, soft = _kiln.optimize_distill(t_core, s_core, xs, ys, float(temperature), float(alpha), epochs,
                                        batch_size, int(seed))
    return {"loss": list(loss), "soft_loss": list(soft)}
