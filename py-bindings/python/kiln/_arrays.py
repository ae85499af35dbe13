"""Turning user data into the arrays the core wants: converted once, checked, with clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError


def as_input(x: Any, what: str = "X") -> np.ndarray:
    """Any numeric array-like as a C-contiguous float32 array (no copy when it already is one)."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidInputError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidInputError(f"{what} must be real-valued, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise InvalidInputError(f"{what} must have a batch dimension, got a scalar")
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{what} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_labels(y: Any, what: str = "y") -> np.ndarray:
    """Integer class labels as an int64 array: 1-D (one per sample) or 2-D ``[N, T]`` (one per
    position, for logits ``[N, T, classes]``)."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (1, 2):
        raise InvalidInputError(
            f"{what} must be a 1-D array of integer class labels for cross_entropy (or [N, T], one per position), "
            f"got shape {arr.shape} (one-hot labels: pass y.argmax(axis=-1))"
        )
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidInputError(f"{what} must hold whole-number class labels, got non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{what} must hold integer class labels, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_targets(y: Any, wants_classes: bool, what: str = "y") -> np.ndarray:
    """Labels for classification losses, float32 values for the rest."""
    if wants_classes:
        return as_labels(y, what)
    return as_input(y, what)
