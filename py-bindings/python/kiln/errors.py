"""kiln's exceptions. Every error from the Rust core arrives as one of these, with a message that
names what was wrong (the layer, both shapes, the bad value)."""

from __future__ import annotations

__all__ = [
    "KilnError",
    "ShapeError",
    "InvalidInputError",
    "CheckpointError",
    "OnnxError",
    "TrainingError",
    "KilnIOError",
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


class KilnIOError(KilnError, OSError):
    """A file could not be read or written."""


class TracingError(KilnError):
    """``forward`` did something a traced graph cannot hold (control flow on a tensor's value, …);
    the message names the line and what to do instead."""
