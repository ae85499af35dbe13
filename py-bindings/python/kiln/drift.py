"""``kiln.drift``: notice when a deployed model's inputs stop looking like its training data, and
bring back what users labelled where it runs.

    model.export_onnx("m.onnx", reference=X_train)       # training statistics in the metadata
    mon = kiln.drift.DriftMonitor.from_onnx("m.onnx", window=200)
    mon.update(X_live)
    mon.report()      # {"drifted": bool, "psi": float, "features": [...], "classes": {...}, ...}
    X, y = kiln.drift.load_feedback("feedback.kiln-data")  # what the page collected

The statistics are kiln-core's (``core/src/drift``), the same code kiln-wasm's ``model.monitor()``
runs, so the same stream of inputs gives the same report in Python and in the browser.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import _kiln
from ._arrays import as_input, as_labels
from .errors import InvalidInputError
from .session import InferenceSession

if TYPE_CHECKING:
    from .model import Module

__all__ = ["DriftMonitor", "load_feedback", "save_feedback", "model_version", "Feedback", "reference_metadata"]

_Path = Union[str, "os.PathLike[str]"]


def _read(source: Union[_Path, bytes, bytearray, memoryview], what: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    raise InvalidInputError(f"{what}: expected a path or bytes, got {type(source).__name__}")


def reference_metadata(model: "Module", x: Any) -> tuple[str, str]:
    """The ``("kiln.drift", summary)`` metadata entry for ``model`` and its training inputs ``x``:
    what ``export_onnx(..., reference=x)`` stores."""
    if isinstance(x, (tuple, list, dict)):
        raise InvalidInputError("reference: pass one array of training inputs (models with several inputs "
                                "are not summarised yet)")
    x = as_input(x, "reference")
    outputs = np.ascontiguousarray(model.predict(x), dtype=np.float32)
    return _kiln.drift_reference(x, outputs)


class DriftMonitor:
    """A sliding window over a deployed model's live inputs, compared with the training
    statistics its ONNX file carries. Build one with :meth:`from_onnx`."""

    def __init__(self, core: _kiln.DriftMonitor, session: InferenceSession | None) -> None:
        self._core = core
        self._session = session

    @classmethod
    def from_onnx(cls, model: Union[_Path, bytes], window: int | None = None, *, alpha: float | None = None,
                  min_psi: float | None = None) -> "DriftMonitor":
        """Monitor the model in ``model`` (a path or the bytes of an ONNX file exported with
        ``reference=``) over the last ``window`` examples (default 200). The verdict needs a
        test's p-value, Bonferroni-adjusted, below ``alpha`` (default 0.01) and its PSI at least
        ``min_psi`` (default 0.1). A model without the statistics raises InvalidInputError."""
        data = _read(model, "DriftMonitor.from_onnx")
        core = _kiln.DriftMonitor.from_onnx(data, window, alpha, min_psi)
        return cls(core, InferenceSession(data))

    @property
    def window(self) -> int:
        return self._core.window

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, as the model takes it (no batch axis)."""
        return tuple(self._core.input_shape)

    def update(self, x: Any, outputs: Any | None = None) -> int:
        """Add a batch of live inputs ``[n, ...]`` (what the model is fed) to the window; the model
        is run on them unless its ``outputs`` are given. All or nothing: a batch with a NaN or of
        the wrong shape raises and leaves the window as it was. Returns the number added."""
        x = as_input(x, "X")
        self._core.check(x)
        if outputs is None:
            if self._session is None:
                raise InvalidInputError("DriftMonitor.update: no model to run; pass outputs=")
            outputs = self._session.run(x)
        return self._core.update(x, as_input(outputs, "outputs"))

    def report(self) -> dict[str, Any]:
        """The window's report: ``drifted`` (the verdict), ``psi`` (the largest feature PSI),
        ``p_value``, ``moved`` (features that moved, most first), ``features`` (every feature:
        psi, ks, p_value), ``classes`` (predicted-class mix), ``confidence`` (top-1), ``observed``,
        ``window``, ``ready``, ``seen``, ``rejected``."""
        report: dict[str, Any] = json.loads(self._core.report_json())
        return report

    def reset(self) -> None:
        """Empty the window (after a retrain, say)."""
        self._core.reset()

    def __repr__(self) -> str:
        r = self.report()
        verdict = "drifted" if r["drifted"] else "quiet"
        return (f"DriftMonitor(window={r['window']}, observed={r['observed']}, {verdict}, psi={r['psi']:.3f}, "
                f"moved={r['moved'][:3]})")


class Feedback(tuple):  # type: ignore[type-arg]
    """``(X, y)`` as a tuple, plus the ``model_version`` the examples were collected against."""

    model_version: str

    def __new__(cls, x: np.ndarray, y: np.ndarray, version: str) -> "Feedback":
        self = super().__new__(cls, (x, y))
        self.model_version = version
        return self

    @property
    def X(self) -> np.ndarray:  # noqa: N802 (the name users write)
        return self[0]  # type: ignore[no-any-return]

    @property
    def y(self) -> np.ndarray:
        return self[1]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Feedback({len(self.y)} examples of shape {self.X.shape[1:]}, model_version={self.model_version!r})"


def load_feedback(path: Union[_Path, bytes]) -> Feedback:
    """Read a feedback file saved by kiln-wasm (``saveFeedback``, the demo's "download"): ``X, y``
    (float32 inputs, int64 labels), with ``.model_version``. A damaged or foreign file raises
    InvalidInputError."""
    x, y, version = _kiln.feedback_load(_read(path, "load_feedback"))
    return Feedback(x, y, version)


def save_feedback(path: _Path, x: Any, y: Any, model_version: str = "") -> None:
    """Write ``X, y`` as a feedback file (the format the page saves)."""
    data = _kiln.feedback_save(as_input(x, "X"), as_labels(y), model_version)
    with open(path, "wb") as f:
        f.write(data)


def model_version(model: Union[_Path, bytes]) -> str:
    """The fingerprint feedback files record for a model (its ONNX file or bytes)."""
    return _kiln.model_version(_read(model, "model_version"))
