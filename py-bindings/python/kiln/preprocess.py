"""How an image becomes a model's input, declared at export and applied the same way everywhere:
``model.export_onnx(path, preprocess=kiln.Preprocess(mean=..., std=...))`` stores it in the ONNX
metadata (``kiln.preprocess``); kiln-wasm's ``model.run(image)`` applies it to an ``ImageData``, a
canvas, an ``<img>``…, and :meth:`Preprocess.apply` applies it in Python, through the same code in the
core (bilinear resize with half-pixel centres, channels, ``(v * scale + offset - mean) / std``), so the
same pixels give the same tensor."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from . import _kiln
from .errors import InvalidInputError, user_facing


class Preprocess:
    """``scale`` multiplies each 0–255 value (default 1/255), ``offset`` is added, then ``mean`` and
    ``std`` (one value per channel, optional) normalise; ``channels`` is ``"rgb"``, ``"bgr"`` or
    ``"gray"`` (0.299 R + 0.587 G + 0.114 B). The image is resized to the model's input size."""

    @user_facing
    def __init__(self, scale: float = 1 / 255, offset: float = 0.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, channels: str = "rgb") -> None:
        spec = {"scale": float(scale), "offset": float(offset), "mean": [float(m) for m in mean or []],
                "std": [float(s) for s in std or []], "channels": channels}
        self._json = _kiln.preprocess_check(json.dumps(spec))
        s = json.loads(self._json)
        self.scale, self.offset, self.mean, self.std, self.channels = (
            s["scale"], s["offset"], s["mean"], s["std"], s["channels"])

    @classmethod
    def from_onnx(cls, model: str | os.PathLike[str] | bytes) -> "Preprocess":
        """The preprocessing an exported model declares."""
        from .session import InferenceSession

        meta = InferenceSession(model).metadata
        if "kiln.preprocess" not in meta:
            raise InvalidInputError("this model declares no preprocessing: export it with "
                                    "export_onnx(..., preprocess=kiln.Preprocess(...))")
        return cls(**json.loads(meta["kiln.preprocess"]))

    def to_json(self) -> str:
        """The spec as the metadata stores it."""
        return self._json

    @property
    def channel_count(self) -> int:
        return 1 if self.channels == "gray" else 3

    @user_facing
    def apply(self, image: Any, size: Sequence[int]) -> np.ndarray:
        """``image`` (uint8: ``[H, W]`` gray, ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA, as PIL's
        ``np.asarray(img)`` gives) as the model's ``[1, C, height, width]`` float32 input for
        ``size=(height, width)``."""
        a = np.asarray(image)
        if a.dtype != np.uint8:
            raise InvalidInputError(f"Preprocess.apply: image must be uint8 pixels (0-255), got {a.dtype}")
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise InvalidInputError(f"Preprocess.apply: image must be [H, W], [H, W, 3] or [H, W, 4], got {list(a.shape)}")
        if a.shape[2] == 3:
            a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
        if len(size) != 2:
            raise InvalidInputError(f"Preprocess.apply: size is (height, width), got {size!r}")
        h, w = int(size[0]), int(size[1])
        out = _kiln.preprocess_apply(self._json, np.ascontiguousarray(a).ravel(), a.shape[1], a.shape[0], h, w)
        return np.asarray(out).reshape(1, self.channel_count, h, w)

    def __repr__(self) -> str:
        return (f"Preprocess(scale={self.scale:g}, offset={self.offset:g}, mean={self.mean}, std={self.std}, "
                f"channels={self.channels!r})")
