"""kiln's exceptions. Every error from the Rust core arrives as one of these, with a message that
names what was wrong (the layer, both shapes, the bad value)."""

from __future__ import annotations

import functools
import os
import types
from typing import Any, Callable, TypeVar

__all__ = [
    "KilnError",
    "ShapeError",
    "InvalidInputError",
    "CheckpointError",
    "OnnxError",
    "TrainingError",
    "KilnIOError",
    "SlowLoadWarning",
]


class KilnError(Exception):
    """Base class of every kiln error."""


class ShapeError(KilnError, ValueError):
    """Shapes that do not fit together (the message names the layer and both shapes)."""


class InvalidInputError(KilnError, ValueError):
    """An argument or input that cannot be used: a NaN in the data, a label out of range, an unknown name."""


class CheckpointError(KilnError):
    """A .kiln checkpoint that cannot be read or does not fit the model."""


class OnnxError(KilnError):
    """An ONNX model that cannot be exported, loaded or run."""


class TrainingError(KilnError):
    """Training went wrong, e.g. the loss became NaN (the message names the epoch and batch)."""


class SlowLoadWarning(UserWarning):
    """Issued before a load that will take seconds: kiln's engine declined a long graph
    (``kiln.InferenceSession``, thousands of nodes) and tract, whose load grows faster than the
    graph, takes it. The model still loads; the message says how long to expect."""


class KilnIOError(KilnError, OSError):
    """A file could not be read or written."""


class TracingError(KilnError):
    """``forward`` did something a traced graph cannot hold (control flow on a tensor's value, …);
    the message names the line and what to do instead."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_F = TypeVar("_F", bound=Callable[..., Any])


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without kiln's own frames: what is left is the caller's code (a ``forward``, a
    callback) below the public call."""
    kept = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            kept.append(tb)
        tb = tb.tb_next
    out = None
    for t in reversed(kept):
        out = types.TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


def user_facing(fn: _F) -> _F:
    """For kiln's public entry points (``fit``, ``predict``, ``load``, …): a :class:`KilnError` leaves
    with a traceback that ends at the user's line rather than in kiln's internals (the message already
    names the layer and the shapes). One frame of kiln stays, this wrapper's, which IPython and pytest
    hide (``__tracebackhide__``). ``KILN_FULL_TRACEBACK=1`` keeps every frame, for debugging kiln."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # noqa: F841 (read by IPython and pytest)
        try:
            return fn(*args, **kwargs)
        except KilnError as error:
            if os.environ.get("KILN_FULL_TRACEBACK"):
                raise
            raise error.with_traceback(_user_frames(error.__traceback__))  # the error is in the call above

    return call  # type: ignore[return-value]
