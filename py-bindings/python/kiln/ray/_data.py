"""``Predictor``: batch scoring with Ray Data, one ``kiln.InferenceSession`` per actor."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..session import Engine, InferenceSession


class Predictor:
    """A callable class for ``Dataset.map_batches``: loads the ONNX model once per actor and scores
    numpy batches with ``kiln.InferenceSession.run`` (the engine the browser runs)::

        scored = ds.map_batches(kiln.ray.Predictor, fn_constructor_kwargs={"path": "digits.onnx"},
                                batch_size=1024, concurrency=1, num_cpus=1)

    ``input_column``: the column holding the model's input (one tensor per row, as the model's
    per-sample shape; it is cast to float32), or a list of scalar columns stacked into ``[batch, k]``
    (a table's features), or for a model with several inputs a dict ``{onnx_input_name: column}``.
    ``output_column``: where the model's (first) output goes, or a dict ``{onnx_output_name: column}``.
    ``label_column``: also write the argmax class (the model's labels when it has them, else the index).
    ``keep_columns``: pass the batch's other columns through (default), or return only the outputs.
    ``engine``: as ``kiln.InferenceSession`` (kiln's engine first, tract for what it declines).
    """

    def __init__(self, path: str | os.PathLike[str], input_column: str | Sequence[str] | Mapping[str, str] = "x",
                 output_column: str | Mapping[str, str] = "scores", label_column: str | None = None,
                 keep_columns: bool = True, engine: Engine = "auto") -> None:
        self.session = InferenceSession(os.fspath(path), engine=engine)
        names = [i.name for i in self.session.inputs]
        if isinstance(input_column, Mapping):
            missing = sorted(set(names) - set(input_column))
            if missing:
                raise InvalidInputError(f"Predictor: input_column names no column for the model's input(s) {missing}")
        elif len(names) != 1:
            raise InvalidInputError(f"Predictor: the model has {len(names)} inputs {names}: pass input_column as a dict "
                                    "{input_name: column}")
        outs = [o.name for o in self.session.outputs]
        if isinstance(output_column, Mapping):
            unknown = sorted(set(output_column) - set(outs))
            if unknown:
                raise InvalidInputError(f"Predictor: the model has no output(s) {unknown} (it has {outs})")
        self.input_column, self.output_column = input_column, output_column
        self.label_column, self.keep_columns = label_column, bool(keep_columns)
        self._input_names, self._output_names = names, outs
        labels = self.session.labels
        self._labels = None if not labels else np.asarray(labels)

    def _column(self, batch: Mapping[str, Any], spec: str | Sequence[str]) -> np.ndarray:
        if isinstance(spec, str):
            if spec not in batch:
                raise InvalidInputError(f"Predictor: the batch has no column {spec!r} (it has {sorted(batch)})")
            a = np.asarray(batch[spec])
            if a.dtype == object:  # ragged or nested rows: stack them
                a = np.stack([np.asarray(v) for v in a])
            return np.ascontiguousarray(a, dtype=np.float32)
        cols = [self._column(batch, c) for c in spec]
        return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(self.input_column, Mapping):
            result = self.session.run({name: self._column(batch, self.input_column[name]) for name in self._input_names})
            outputs = result if isinstance(result, dict) else {self._output_names[0]: result}
        else:
            result = self.session.run(self._column(batch, self.input_column))
            outputs = result if isinstance(result, dict) else {self._output_names[0]: result}
        out: dict[str, Any] = dict(batch) if self.keep_columns else {}
        if isinstance(self.output_column, Mapping):
            for name, column in self.output_column.items():
                out[column] = outputs[name]
            first = outputs[next(iter(self.output_column))]
        else:
            first = outputs[self._output_names[0]]
            out[self.output_column] = first
        if self.label_column is not None:
            index = np.asarray(first).reshape(len(first), -1).argmax(axis=1)
            out[self.label_column] = self._labels[index] if self._labels is not None else index
        return out

    def __repr__(self) -> str:
        return f"Predictor(inputs={self._input_names}, outputs={self._output_names})"
