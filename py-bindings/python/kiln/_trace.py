"""Tracing ``forward`` into kiln's graph.

``forward`` runs once on symbolic tensors (:class:`SymbolicTensor`). Every operation on them is sent
to the core's tracer, which records it and runs it on zeros at two batch sizes, so shapes are known
at each line and a mistake is reported at the line that made it. Python control flow that depends
on a tensor's *value* cannot be recorded: it raises :class:`kiln.TracingError` naming the line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterator, Sequence

from .errors import TracingError

_KILN_DIR = os.path.dirname(os.path.abspath(__file__))
_active: list["Trace"] = []


def user_line() -> str:
    """``file.py:12`` of the innermost frame outside the kiln package (the user's line)."""
    f: Any = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_KILN_DIR):
        f = f.f_back
    if f is None:
        return "forward"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}"


class BatchDim(int):
    """The batch size in a traced shape: pass it on (``x.reshape(x.shape[0], -1)``) and the graph
    keeps the batch free. Arithmetic on it gives a plain int, fixed into the graph."""

    def __repr__(self) -> str:
        return "batch"


class Trace:
    """One trace of a root module: the core's tracer and the module whose forward is recorded."""

    def __init__(self, tracer: Any, root: Any) -> None:
        self.tracer, self.root = tracer, root

    def op(self, op: dict[str, Any], inputs: Sequence["SymbolicTensor"]) -> "SymbolicTensor":
        for x in inputs:
            if not isinstance(x, SymbolicTensor) or x._trace is not self:
                raise TracingError(f"{user_line()}: {op['op']} got {type(x).__name__}, not a tensor of this forward")
        vid, shape = self.tracer.op(json.dumps(_core_op(op)), [x._id for x in inputs], user_line())
        return SymbolicTensor(self, vid, shape)

    def param(self, name: str) -> "SymbolicTensor":
        return self.op({"op": "Param", "name": name}, [])


def _core_op(op: dict[str, Any]) -> Any:
    """``{"op": "Softmax", "dim": -1}`` as the core's JSON: ``{"Softmax": {"dim": -1}}`` (``"Relu"`` alone)."""
    args = {k: v for k, v in op.items() if k != "op"}
    return {op["op"]: args} if args else op["op"]


def current() -> Trace | None:
    """The trace in progress, if any."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def tracing(trace: Trace) -> Iterator[Trace]:
    _active.append(trace)
    try:
        yield trace
    finally:
        _active.pop()


def _value_error(what: str) -> TracingError:
    return TracingError(
        f"{user_line()}: {what} needs a tensor's value, but forward is traced once into a graph that is the "
        "same for every input. Write it with tensor operations (F.relu, F.softmax, arithmetic on tensors), or "
        "decide outside forward (a flag set in __init__, two models)."
    )


def _scalar(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        import numpy as np

        if isinstance(v, np.generic) and np.issubdtype(type(v), np.number):
            return float(v)
    except ImportError:  # pragma: no cover
        pass
    return None


def _dims(args: tuple[Any, ...]) -> list[Any]:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return list(args)


class SymbolicTensor:
    """A value inside ``forward`` while it is traced: supports the arithmetic, methods and slicing
    kiln can record, and refuses what needs actual values."""

    __array_priority__ = 1000  # numpy scalars on the left defer to us

    def __init__(self, trace: Trace, vid: int, shape: Sequence[int | None], is_bool: bool = False) -> None:
        self._trace, self._id = trace, vid
        self._shape = tuple(BatchDim(2) if d is None else int(d) for d in shape)
        # a graph input fed a bool array (0/1 on the tape): an attention mask of it reads as bool
        self._bool = is_bool

    # ---- shape ---------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The shape; the batch axis is a :class:`BatchDim`."""
        return self._shape

    def size(self, dim: int | None = None) -> Any:
        return self._shape if dim is None else self._shape[dim]

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def dim(self) -> int:
        return len(self._shape)

    def __repr__(self) -> str:
        dims = ", ".join("batch" if isinstance(d, BatchDim) else str(d) for d in self._shape)
        return f"SymbolicTensor(shape=[{dims}])"

    # ---- what tracing cannot do ----------------------------------------------------------------
    def __bool__(self) -> bool:
        raise _value_error("`if`/`while`/`and`/`or` on a tensor")

    def __len__(self) -> int:
        raise TracingError(f"{user_line()}: len() of a traced tensor: use x.shape[0] (the batch stays free)")

    def __iter__(self) -> Iterator[Any]:
        raise _value_error("iterating over a tensor")

    def __float__(self) -> float:
        raise _value_error("float()")

    def __int__(self) -> int:
        raise _value_error("int()")

    def __index__(self) -> int:
        raise _value_error("using a tensor as an index")

    def item(self) -> float:
        raise _value_error(".item()")

    def numpy(self) -> Any:
        raise _value_error(".numpy()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise _value_error("converting to a numpy array")

    def __gt__(self, other: Any) -> Any:
        raise _value_error("comparing tensors")

    __lt__ = __ge__ = __le__ = __gt__

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        raise _value_error("comparing tensors")

    __hash__ = object.__hash__

    # ---- arithmetic ----------------------------------------------------------------------------
    def _binary(self, other: Any, op: str, scalar: str, rscalar: str, reverse: bool = False) -> "SymbolicTensor":
        c = _scalar(other)
        if c is not None:
            return self._trace.op({"op": "Scalar", "kind": rscalar if reverse else scalar, "value": c}, [self])
        if not isinstance(other, SymbolicTensor):
            raise TracingError(
                f"{user_line()}: {op} with a {type(other).__name__}: inside forward, constants other than numbers "
                "must be parameters or buffers of the module (nn.Parameter, self.register_buffer)"
            )
        a, b = (other, self) if reverse else (self, other)
        return self._trace.op({"op": op}, [a, b])

    def __add__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Add", "add", "add")

    def __radd__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Add", "add", "add", True)

    def __sub__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Sub", "sub", "rsub")

    def __rsub__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Sub", "sub", "rsub", True)

    def __mul__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Mul", "mul", "mul")

    def __rmul__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Mul", "mul", "mul", True)

    def __truediv__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Div", "div", "rdiv")

    def __rtruediv__(self, o: Any) -> "SymbolicTensor":
        return self._binary(o, "Div", "div", "rdiv", True)

    def __matmul__(self, o: Any) -> "SymbolicTensor":
        return self._trace.op({"op": "MatMul"}, [self, o])

    def __rmatmul__(self, o: Any) -> "SymbolicTensor":
        return self._trace.op({"op": "MatMul"}, [o, self])

    def __pow__(self, p: Any) -> "SymbolicTensor":
        c = _scalar(p)
        if c is None:
            raise TracingError(f"{user_line()}: ** takes a number exponent inside forward")
        return self._trace.op({"op": "Scalar", "kind": "pow", "value": c}, [self])

    def __neg__(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Neg"}, [self])

    def __pos__(self) -> "SymbolicTensor":
        return self

    # ---- methods -------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> "SymbolicTensor":
        dims: list[Any] = []
        given = _dims(shape)
        for i, d in enumerate(given):
            if isinstance(d, BatchDim):
                # the core reads "batch" as the input's first axis; elsewhere -1 lets it follow
                # (only when this tensor's own axis 0 is the batch: a time-major [seq, batch, ...])
                if i == 0 and isinstance(self._shape[0], BatchDim):
                    dims.append("batch")
                elif -1 not in given:
                    dims.append(-1)
                else:
                    raise TracingError(f"{user_line()}: reshape with the batch size away from axis 0 and a -1 as well")
            elif isinstance(d, int):
                dims.append(int(d))
            else:
                raise TracingError(f"{user_line()}: reshape takes ints (and x.shape[0]), got {d!r}")
        return self._trace.op({"op": "Reshape", "shape": dims}, [self])

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "SymbolicTensor":
        return self._trace.op({"op": "Flatten", "start_dim": start_dim, "end_dim": end_dim}, [self])

    def permute(self, *dims: Any) -> "SymbolicTensor":
        return self._trace.op({"op": "Permute", "dims": [int(d) for d in _dims(dims)]}, [self])

    def transpose(self, dim0: int, dim1: int) -> "SymbolicTensor":
        n = self.ndim
        perm = list(range(n))
        a, b = dim0 % n, dim1 % n
        perm[a], perm[b] = perm[b], perm[a]
        return self.permute(perm)

    @property
    def T(self) -> "SymbolicTensor":  # noqa: N802
        return self.permute(list(reversed(range(self.ndim))))

    def _reduce(self, kind: str, dim: Any, keepdim: bool) -> "SymbolicTensor":
        if dim is None:
            dims = list(range(self.ndim))
        elif isinstance(dim, int):
            dims = [dim]
        else:
            dims = [int(d) for d in dim]
        return self._trace.op({"op": "Reduce", "kind": kind, "dims": dims, "keepdim": bool(keepdim)}, [self])

    def mean(self, dim: Any = None, keepdim: bool = False) -> "SymbolicTensor":
        return self._reduce("mean", dim, keepdim)

    def sum(self, dim: Any = None, keepdim: bool = False) -> "SymbolicTensor":
        return self._reduce("sum", dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> "SymbolicTensor":
        """The maximum over ``dim`` (values only: kiln's graphs have no index outputs)."""
        if dim is None:
            return self.flatten()._reduce("max", 0, keepdim) if self.ndim > 1 else self._reduce("max", 0, keepdim)
        if not isinstance(dim, int):
            out = self
            for d in sorted((int(d) % self.ndim for d in dim), reverse=True):
                out = out._reduce("max", d, keepdim)
            return out
        return self._reduce("max", dim, keepdim)

    def unsqueeze(self, dim: int) -> "SymbolicTensor":
        n = self.ndim + 1
        d = dim % n
        shape = list(self._shape)
        shape.insert(d, 1)
        return self.reshape(shape)

    def squeeze(self, dim: int | None = None) -> "SymbolicTensor":
        shape = list(self._shape)
        if dim is None:
            keep = [s for s in shape if isinstance(s, BatchDim) or s != 1]
        else:
            d = dim % self.ndim
            if shape[d] != 1 or isinstance(shape[d], BatchDim):
                return self
            keep = shape[:d] + shape[d + 1:]
        return self.reshape(keep)

    def contiguous(self) -> "SymbolicTensor":
        return self

    def relu(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Relu"}, [self])

    def sigmoid(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Sigmoid"}, [self])

    def tanh(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Tanh"}, [self])

    def exp(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Exp"}, [self])

    def log(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Log"}, [self])

    def sqrt(self) -> "SymbolicTensor":
        return self._trace.op({"op": "Sqrt"}, [self])

    def softmax(self, dim: int = -1) -> "SymbolicTensor":
        return self._trace.op({"op": "Softmax", "dim": dim}, [self])

    def __getitem__(self, key: Any) -> "SymbolicTensor":
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            fill = self.ndim - (len(key) - 1 - sum(k is None for k in key))
            key = key[:i] + (slice(None),) * (fill - i) + key[i + 1:]
        out, axis = self, 0
        squeeze: list[int] = []
        for k in key:
            if k is None:
                out = out.unsqueeze(axis)
                axis += 1
                continue
            size = out._shape[axis]
            if isinstance(k, slice):
                if k.step not in (None, 1):
                    raise TracingError(f"{user_line()}: slices with a step are not supported in forward")
                if isinstance(size, BatchDim) and (k.start, k.stop) != (None, None):
                    raise TracingError(f"{user_line()}: slicing the batch axis would fix the batch size into the graph")
                start, stop, _ = k.indices(int(size))
                if (start, stop) != (0, int(size)):
                    out = self._trace.op({"op": "Slice", "dim": axis, "start": start, "end": max(start, stop)}, [out])
                axis += 1
            elif isinstance(k, int) and not isinstance(k, bool):
                if isinstance(size, BatchDim):
                    raise TracingError(f"{user_line()}: indexing the batch axis would fix the batch size into the graph")
                i = k % int(size)
                out = self._trace.op({"op": "Slice", "dim": axis, "start": i, "end": i + 1}, [out])
                squeeze.append(axis)
                axis += 1
            else:
                raise TracingError(f"{user_line()}: index {k!r}: forward takes ints, slices, None and ... as indices")
        if squeeze:
            shape = [d for i, d in enumerate(out._shape) if i not in squeeze]
            out = out.reshape(shape)
        return out
