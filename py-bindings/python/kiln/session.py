"""``kiln.InferenceSession``: run an ONNX model natively on the engine kiln-wasm would pick in the
browser: kiln's own engine (the graph kiln trained, on kiln-core's ops) when it runs the model, tract
for the models it declines (other tools' operators, attributes, element types)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Union

import numpy as np

from . import _kiln
from .errors import InvalidInputError, user_facing

if TYPE_CHECKING:
    from .text import Tokenizer

_NUMPY = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32,
          "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of the graph; ``None`` in ``shape`` marks a free (batch) dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


Engine = Literal["auto", "kiln", "tract"]


class InferenceSession:
    """Load an ONNX model (a path, or the bytes) and run it natively.

    ``engine="auto"`` (the default) picks the way kiln-wasm's ``loadModel`` does: kiln's own engine
    when it runs the graph exactly (every model kiln exports, and plain CNNs, MLPs and ResNets from
    other tools), tract otherwise. ``"kiln"`` insists on kiln's engine (a model it declines is an
    :class:`~kiln.errors.OnnxError` saying why), ``"tract"`` on tract. ``.engine`` says which one
    runs the model and ``.declined`` why kiln's engine did not. Both engines take the same inputs,
    describe the model the same way and report wrong inputs with the same messages; what this
    predicts is what the browser predicts.
    """

    @user_facing
    def __init__(self, model: Union[str, os.PathLike[str], bytes, bytearray], engine: Engine = "auto") -> None:
        if engine not in ("auto", "kiln", "tract"):
            raise InvalidInputError(f'InferenceSession: engine must be "auto", "kiln" or "tract", not {engine!r}')
        if isinstance(model, (bytes, bytearray, memoryview)):
            self._core = _kiln.InferenceSession(bytes(model), engine)
        elif isinstance(model, (str, os.PathLike)):
            # read by the core, so a missing file is kiln.KilnIOError, as for kiln.load
            self._core = _kiln.InferenceSession.from_path(os.fspath(model), engine)
        else:
            raise InvalidInputError(f"InferenceSession: expected a path or bytes, got {type(model).__name__}")
        self.inputs = [TensorInfo(d["name"], tuple(d["shape"]), d["dtype"]) for d in self._core.inputs]
        self.outputs = [TensorInfo(d["name"], tuple(d["shape"]), d["dtype"]) for d in self._core.outputs]

    @property
    def engine(self) -> str:
        """``"kiln"`` (kiln's own engine) or ``"tract"``: which engine runs the model."""
        return self._core.engine

    @property
    def declined(self) -> str | None:
        """Why kiln's engine declined the model (``"operator Sin"``), when tract runs it in its
        place; ``None`` when kiln's engine runs it or ``engine="tract"`` was asked for."""
        return self._core.declined

    @property
    def labels(self) -> list[str] | None:
        """Class names from the model's ``kiln.labels`` metadata, if any."""
        return self._core.labels

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        return dict(self._core.metadata)

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The :mod:`kiln.text` tokenizer the model carries (``export_onnx(..., tokenizer=tok)``), or None."""
        from .text import Tokenizer
        data = self._core.metadata.get(_kiln.TOKENIZER_METADATA_KEY)
        return None if data is None else Tokenizer.from_json(data)

    def _convert(self, info: TensorInfo, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        want = _NUMPY.get(info.dtype)
        if want is None:
            raise InvalidInputError(f"input {info.name!r} has dtype {info.dtype}, which kiln cannot feed from numpy")
        if arr.dtype != want:
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise InvalidInputError(f"input {info.name!r}: expected {info.dtype}, got dtype {arr.dtype}")
            if np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.floating):
                if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                    raise InvalidInputError(
                        f"input {info.name!r}: expected {info.dtype}, got {arr.dtype} values that are not whole numbers")
            arr = arr.astype(want)
        return np.ascontiguousarray(arr)

    @user_facing
    def run(self, inputs: Union[Any, Mapping[str, Any]]) -> Union[np.ndarray, dict[str, np.ndarray]]:
        """Run on one array (models with one input) or a dict ``{input name: array}``. Returns the
        output array for single-output models, else a dict ``{output name: array}``."""
        if isinstance(inputs, Mapping):
            names = [i.name for i in self.inputs]
            unknown = [k for k in inputs if k not in names]
            if unknown:
                raise InvalidInputError(f"unknown input {unknown[0]!r}; the model's inputs are {names}")
            missing = [n for n in names if n not in inputs]
            if missing:
                raise InvalidInputError(f"missing input {missing[0]!r}; the model's inputs are {names}")
            arrays = [self._convert(i, inputs[i.name]) for i in self.inputs]
        else:
            if len(self.inputs) != 1:
                raise InvalidInputError(
                    f"the model has {len(self.inputs)} inputs {[i.name for i in self.inputs]}: pass a dict")
            arrays = [self._convert(self.inputs[0], inputs)]
        outs = self._core.run(arrays)
        if len(outs) == 1:
            return outs[0]
        return {o.name: v for o, v in zip(self.outputs, outs)}

    def __repr__(self) -> str:
        declined = f", declined={self.declined!r}" if self.declined else ""
        return f"InferenceSession(engine={self.engine!r}{declined}, inputs={self.inputs}, outputs={self.outputs})"
