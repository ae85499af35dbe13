"""Models: ``nn.Module`` (any architecture, traced into kiln's graph) and ``nn.Sequential`` (a chain),
with the same ``compile`` / ``fit`` / ``evaluate`` / ``predict`` / ``save`` / ``export_onnx``."""

from __future__ import annotations

import html
import inspect
import json
import os
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from . import _kiln, _trace
from . import drift as _drift
from ._arrays import as_input, as_targets
from ._seed import next_seed
from .callbacks import Callback, CallbackList, EarlyStopping, ModelCheckpoint, Pruning
from .errors import InvalidInputError, TracingError, user_facing
from .history import History
from .layers import Layer, from_spec
from .losses import Loss, loss_spec
from .optim import Optimizer, Schedule
from .preprocess import Preprocess
from .summary import ModelSummary

if TYPE_CHECKING:
    from .text import Tokenizer


class Parameter:
    """A trainable tensor of a module (``nn.Parameter(np.ones(3))`` in ``__init__``), or a view of
    one of a model's tensors by state-dict name: ``.data`` and ``.grad`` are numpy copies."""

    def __init__(self, data: Any = None, requires_grad: bool = True, *, owner: "Module | None" = None,
                 name: str = "") -> None:
        self._init = None if data is None else np.array(data, dtype=np.float32)
        self.requires_grad = requires_grad
        self.owner, self.name = owner, name

    @property
    def data(self) -> np.ndarray:
        if self.owner is None or self.owner._core is None:
            if self._init is None:
                raise InvalidInputError("this parameter has no value yet")
            return self._init.copy()
        return self.owner.state_dict()[self.name]

    @property
    def grad(self) -> np.ndarray | None:
        """The gradient accumulated since the last ``zero_grad()`` (None before any backward)."""
        if self.owner is None or self.owner._core is None:
            return None
        g = self.owner._core.grad(self.name)
        return None if g is None else np.asarray(g)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def numpy(self) -> np.ndarray:
        return self.data

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})" if self.name else f"Parameter(shape={self.shape})"


def _is_int(a: Any) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.integer)


def _is_bool(a: Any) -> bool:
    return np.asarray(a).dtype == np.bool_


class Module:
    """Base class for models and their parts, as in PyTorch: assign layers, modules and
    ``nn.Parameter`` s in ``__init__`` and write ``forward``. The first ``fit``, ``predict``,
    ``export_onnx`` or call traces ``forward`` into a graph that then runs in Rust; state-dict names
    follow the attribute paths (``"blocks.0.conv1.weight"``).
    """

    _core: Any = None

    def __init__(self) -> None:
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_seed", next_seed())
        object.__setattr__(self, "_core", None)
        object.__setattr__(self, "_compiled", None)
        object.__setattr__(self, "stop_training", False)
        object.__setattr__(self, "training", True)

    # ---- the tree ------------------------------------------------------------------------------
    def _check_init(self) -> None:
        if "_modules" not in self.__dict__:
            raise InvalidInputError(f"{type(self).__name__}.__init__ must call super().__init__() first")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Module, Layer, Parameter)) or name in self.__dict__.get("_modules", {}) \
                or name in self.__dict__.get("_parameters", {}):
            self._check_init()
            if self._core is not None:
                raise InvalidInputError(
                    f"{type(self).__name__}.{name}: the model's weights already exist (it was built by its first "
                    "use); add modules and parameters in __init__")
            self._modules.pop(name, None)
            self._parameters.pop(name, None)
            if isinstance(value, (Module, Layer)):
                self._modules[name] = value
            elif isinstance(value, Parameter):
                self._parameters[name] = value
            else:
                object.__setattr__(self, name, value)
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if name in d.get("_modules", {}):
            return d["_modules"][name]
        for store in ("_parameters", "_buffers"):
            if name in d.get(store, {}):
                tr = _trace.current()
                root = self._root()
                if tr is not None and root is tr.root:
                    value = tr.param(self._path_of(name))
                    # a buffer registered from a bool array is held as 0/1: masks made of it read as bool
                    value._bool = name in d.get("_bool_buffers", ())
                    return value
                if root._core is not None:
                    return Parameter(owner=root, name=self._path_of(name))
                return d[store][name] if store == "_parameters" else Parameter(d[store][name], False)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, value: Any) -> None:
        """A tensor saved and exported with the model but never trained (``running_mean`` style)."""
        self._check_init()
        if self._core is not None:
            raise InvalidInputError("register_buffer: add buffers in __init__, before the model's first use")
        self._buffers[name] = np.array(value, dtype=np.float32)
        if np.asarray(value).dtype == np.bool_:
            self.__dict__.setdefault("_bool_buffers", set()).add(name)

    def _root(self) -> "Module":
        return self.__dict__.get("_owner") or self

    def _path_of(self, name: str) -> str:
        prefix = self.__dict__.get("_prefix", "")
        return prefix + name

    def named_children(self) -> Iterator[tuple[str, "Module | Layer"]]:
        yield from self._modules.items()

    def children(self) -> Iterator["Module | Layer"]:
        for _, m in self.named_children():
            yield m

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """(path, leaf) for every layer, then (path, Parameter/buffer) of every module, in order."""
        for name, m in self.named_children():
            if isinstance(m, Layer):
                if not m._stateless:
                    yield prefix + name, m
            else:
                yield from m._walk(prefix + name + ".")
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, b in self._buffers.items():
            yield prefix + name, ("buffer", b)

    def _adopt(self, root: "Module", prefix: str) -> None:
        for name, m in self.named_children():
            if isinstance(m, Layer):
                if m._owner is not root:  # a layer at two paths keeps its first
                    m._owner, m._prefix = root, prefix + name + "."
            else:
                object.__setattr__(m, "_owner", root)
                object.__setattr__(m, "_prefix", prefix + name + ".")
                m._adopt(root, prefix + name + ".")

    def _build(self) -> Any:
        """Create the core model: the layers and parameters, without a graph until traced."""
        self._check_init()
        modules: list[dict[str, Any]] = []
        params: list[dict[str, Any]] = []
        values: dict[str, np.ndarray] = {}
        seen: set[int] = set()
        for path, item in self._walk():
            if isinstance(item, Layer):
                if id(item) in seen:
                    continue  # a layer used at two paths is one layer (its first path), as in PyTorch
                seen.add(id(item))
                modules.append({"name": path, "spec": item.spec()})
            elif isinstance(item, Parameter):
                if item._init is None:
                    raise InvalidInputError(f"parameter {path} has no value")
                params.append({"name": path, "shape": list(item._init.shape)})
                values[path] = item._init
            else:
                params.append({"name": path, "shape": list(item[1].shape), "buffer": True})
                values[path] = item[1]
        if not modules and not params:
            raise InvalidInputError(f"{type(self).__name__} has no layers or parameters: assign them in __init__")
        core = _kiln.Model.from_graph_spec(json.dumps({"modules": modules, "params": params}), self._seed)
        if values:
            core.set_tensors({k: np.ascontiguousarray(v) for k, v in values.items()})
        return core

    def _ensure_core(self) -> Any:
        root = self._root()
        if root is not self:
            raise InvalidInputError(
                f"{type(self).__name__} is part of {type(root).__name__}: train and call the whole model")
        if self._core is None:
            object.__setattr__(self, "_core", self._build())
            self._adopt(self, "")
        return self._core

    # ---- tracing -------------------------------------------------------------------------------
    def _input_names(self, n: int) -> list[str]:
        try:
            sig = inspect.signature(self.forward)
        except (TypeError, ValueError):
            return [f"input_{i}" for i in range(n)]
        names = [p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()) or len(names) < n:
            names += [f"input_{i}" for i in range(len(names), n)]
        return names[:n] if n else names

    def _ensure_graph(self, samples: Sequence[tuple[Any, ...]]) -> None:
        """Trace forward once, from each input's per-sample shape, whether it holds integer ids and
        (optionally) whether it is boolean: a bool input arrives as 0/1 floats, and an attention
        mask made of one reads as PyTorch reads a bool mask (True = masked)."""
        core = self._ensure_core()
        if core.graph_json() is not None:
            return
        tracer = _kiln.Tracer(core)
        names = self._input_names(len(samples))
        trace = _trace.Trace(tracer, self)
        args = []
        for name, (shape, is_int, *is_bool) in zip(names, samples):
            vid, sh = tracer.input(name, "int64" if is_int else "float32", [int(d) for d in shape])
            args.append(_trace.SymbolicTensor(trace, vid, sh, bool(is_bool and is_bool[0])))
        with _trace.tracing(trace):
            out = self.forward(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        for i, o in enumerate(outs):
            if not isinstance(o, _trace.SymbolicTensor) or o._trace is not trace:
                raise TracingError(
                    f"{type(self).__name__}.forward must return tensors computed from its inputs "
                    f"(a tensor or a tuple of them); output {i} is {type(o).__name__}")
        tracer.finish([o._id for o in outs])

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, ...)")

    @user_facing
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tr = _trace.current()
        if tr is not None:
            return self.forward(*args, **kwargs)
        return self._call_on_tensors(args, kwargs)

    def _call_on_tensors(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run on :class:`kiln.Tensor` s, recording for ``backward()`` (train mode unless ``eval()``)."""
        from ._kiln import Tensor

        if kwargs:
            names = self._input_names(0)
            args = args + tuple(kwargs[n] for n in names[len(args):] if n in kwargs)
        if not args:
            raise InvalidInputError(f"{type(self).__name__}: call it on one tensor per input")
        ts = [a if isinstance(a, Tensor) else Tensor(a) for a in args]
        core = self._ensure_core()
        if core.graph_json() is None:
            self._ensure_graph([(tuple(t.shape[1:]), *((_is_int(a), _is_bool(a)) if not isinstance(a, Tensor)
                                                       else (False, False)))
                                for t, a in zip(ts, args)])
        outs = ts[0].apply(core, ts[1:], training=self.training)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _inputs(self, x: Any, what: str = "x") -> list[np.ndarray]:
        """``x`` as one float32 array per input: an array, a tuple/list, or a dict by forward's names."""
        core = self._ensure_core()
        if isinstance(x, dict):
            names = [n for n, _, _ in core.input_info()] or self._input_names(len(x))
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise InvalidInputError(f"{what}: the model's inputs are {names}; missing {missing}, unexpected {extra}")
            raw = [x[n] for n in names]
        elif isinstance(x, (tuple, list)) and not core.is_sequential and len(x) > 0 \
                and all(hasattr(a, "shape") or isinstance(a, (list, tuple)) for a in x) \
                and len(self._input_names(0)) > 1:
            raw = list(x)
        else:
            raw = [x]
        arrays = [as_input(a, what if len(raw) == 1 else f"{what}[{i}]") for i, a in enumerate(raw)]
        if core.graph_json() is None:
            self._ensure_graph([(a.shape[1:], _is_int(r), _is_bool(r)) for a, r in zip(arrays, raw)])
        info = core.input_info()
        if len(info) != len(arrays):
            names = [n for n, _, _ in info]
            raise InvalidInputError(f"{what}: the model takes {len(info)} input(s) {names}, got {len(arrays)}")
        return arrays

    def _targets(self, y: Any, what: str = "y") -> list[np.ndarray]:
        wants_classes = bool(self._core.wants_classes)
        n = int(self._core.num_outputs)
        if n > 1:
            if not isinstance(y, (tuple, list)) or len(y) != n:
                raise InvalidInputError(f"{what}: the model has {n} outputs: give one set of targets per output (a tuple)")
            return [as_targets(t, wants_classes, f"{what}[{i}]") for i, t in enumerate(y)]
        return [as_targets(y, wants_classes, what)]

    # ---- hand-written loops ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training behaviour (dropout on, batch-norm on batch statistics) for calls on tensors."""
        self.training = bool(mode)
        return self

    def eval(self) -> "Module":
        """Evaluation behaviour for calls on tensors."""
        return self.train(False)

    def parameters(self) -> list["Parameter"]:
        """The trainable parameters, for ``optim.Adam(model.parameters(), lr=...)``."""
        return [Parameter(owner=self, name=name) for name, _, trainable, is_buffer in self._ensure_core().tensor_info()
                if trainable and not is_buffer]

    def zero_grad(self) -> None:
        """Forget the accumulated gradients."""
        self._ensure_core().zero_grad()

    # ---- weights ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by PyTorch state-dict name (``"0.weight"``, ``"1.running_mean"``)."""
        return dict(self._ensure_core().state_dict())

    @user_facing
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace every parameter and buffer (names and shapes must match exactly)."""
        self._ensure_core().load_state_dict({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()})

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """Trainable parameters (name, numpy copy), in state-dict order."""
        state = self.state_dict()
        return [(name, state[name]) for name, _, trainable, is_buffer in self._ensure_core().tensor_info() if not is_buffer]

    def num_parameters(self) -> int:
        """Number of trainable values."""
        return int(self._ensure_core().num_parameters)

    def freeze(self, prefix: str = "") -> int:
        """Stop training parameters whose name starts with ``prefix`` (e.g. ``"0."``); returns how many."""
        return int(self._ensure_core().set_trainable(prefix, False))

    def unfreeze(self, prefix: str = "") -> int:
        """Train parameters whose name starts with ``prefix`` again; returns how many."""
        return int(self._ensure_core().set_trainable(prefix, True))

    def get_flat_parameters(self) -> np.ndarray:
        """Every trainable value in one float32 vector (state-dict order)."""
        return np.asarray(self._ensure_core().flat_params())

    def set_flat_parameters(self, flat: Any) -> None:
        """Overwrite every trainable value from one vector (the layout of :meth:`get_flat_parameters`)."""
        self._ensure_core().set_flat_params(np.ascontiguousarray(flat, dtype=np.float32).ravel())

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape, known after the first ``fit``/``predict`` (or set it)."""
        s = self._ensure_core().input_shape
        return None if s is None else tuple(s)

    @input_shape.setter
    def input_shape(self, shape: Sequence[int] | None) -> None:
        core = self._ensure_core()
        if core.graph_json() is None and shape is not None:
            self._ensure_graph([(tuple(int(d) for d in shape), False)])
        else:
            core.input_shape = None if shape is None else [int(d) for d in shape]

    # ---- training --------------------------------------------------------------------------------
    @user_facing
    def compile(self, optimizer: Optimizer | str = "adam", loss: Loss | str = "cross_entropy",
                metrics: Sequence[str] | None = None, clip_grad_norm: float | None = None,
                lr_schedule: Schedule | None = None) -> None:
        """Choose the optimizer, the loss and the metrics that ``fit`` and ``evaluate`` report."""
        from . import optim

        if isinstance(optimizer, str):
            optimizer = optim.from_name(optimizer)
        if not isinstance(optimizer, Optimizer):
            raise InvalidInputError(f"compile: optimizer must be a kiln.optim optimizer or a name, got {optimizer!r}")
        if lr_schedule is not None and not isinstance(lr_schedule, Schedule):
            raise InvalidInputError(f"compile: lr_schedule must be a kiln.optim schedule, got {lr_schedule!r}")
        metrics = list(metrics or [])
        self._ensure_core().compile(json.dumps(optimizer.spec()), json.dumps(loss_spec(loss)), metrics)
        self._compiled = {"optimizer": optimizer, "loss": loss, "metrics": metrics, "clip_grad_norm": clip_grad_norm,
                          "lr_schedule": lr_schedule}

    def _require_compiled(self) -> dict[str, Any]:
        if self._compiled is None:
            raise InvalidInputError("the model is not compiled: call model.compile(optimizer=..., loss=...) first")
        return self._compiled

    @user_facing
    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
            validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
            callbacks: Sequence[Callback] | None = None, verbose: int = 1) -> History:
        """Train on ``x``, ``y`` in Rust, batch after batch. Ctrl-C (or Jupyter's stop button) ends
        within one batch, keeps the weights reached and raises ``KeyboardInterrupt``."""
        compiled = self._require_compiled()
        if not isinstance(epochs, int) or epochs < 1:
            raise InvalidInputError(f"fit: epochs must be a positive integer, got {epochs!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
        xs = self._inputs(x, "x")
        ys = self._targets(y, "y")
        val_x = val_y = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise InvalidInputError("fit: validation_data must be a pair (x_val, y_val)")
            val_x = self._inputs(validation_data[0], "validation x")
            val_y = self._targets(validation_data[1], "validation y")
        cbs = list(callbacks or [])
        config: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
                                  "validation_split": float(validation_split)}
        if compiled["clip_grad_norm"] is not None:
            config["clip_grad_norm"] = float(compiled["clip_grad_norm"])
        if compiled["lr_schedule"] is not None:
            config["schedule"] = compiled["lr_schedule"].spec()
        # Early stopping and checkpointing run in the core (best-weights restore, atomic writes).
        for cb in cbs:
            if isinstance(cb, EarlyStopping):
                config["early_stopping"] = cb.spec()
            elif isinstance(cb, ModelCheckpoint):
                config["checkpoint"] = cb.spec()
            elif isinstance(cb, Pruning):  # gradual pruning runs in the core (masks held every step)
                config["pruning"] = cb.spec()
        runner = CallbackList(cbs, self, epochs, verbose)
        self.stop_training = False
        runner.on_train_begin()
        try:
            history_json = self._ensure_core().fit(
                xs, ys, json.dumps(config), val_x, val_y,
                on_batch=runner.on_batch_end if runner.wants_batches else None,
                on_epoch=runner.on_epoch_end,
                # kiln.ray.prepare_model sets this: it sees the flat gradient before each optimizer step
                on_gradient=getattr(self, "_gradient_hook", None),
            )
        finally:
            runner.close()
        history = History(json.loads(history_json))
        runner.on_train_end(history)
        return history

    @user_facing
    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        """Loss and metrics on ``x``, ``y`` in evaluation mode: ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled()
        _check_batch_size("evaluate", batch_size)
        xs = self._inputs(x, "x")
        ys = self._targets(y, "y")
        return dict(self._ensure_core().evaluate(xs, ys, batch_size))

    @user_facing
    def predict(self, x: Any, batch_size: int = 256) -> Any:
        """The model's raw outputs (logits for classifiers) as float32, in evaluation mode: an
        array, or a tuple of arrays for a model with several outputs. ``x`` is an array, a tuple
        of arrays (one per input of ``forward``) or a dict keyed by forward's argument names."""
        _check_batch_size("predict", batch_size)
        outs = [np.asarray(o) for o in self._ensure_core().predict(self._inputs(x, "x"), batch_size)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ---- persistence and export ------------------------------------------------------------------
    @user_facing
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture and weights as one .kiln file (safetensors inside), written atomically."""
        self._ensure_core().save(os.fspath(path))

    @user_facing
    def export_onnx(self, path: str | os.PathLike[str] | None = None, labels: Sequence[str] | None = None,
                    input_scale: float | None = None, input_offset: float | None = None, opset: int = 17,
                    dynamic_batch: bool = True, input_shape: Sequence[int] | None = None,
                    reference: np.ndarray | None = None, tokenizer: Tokenizer | None = None,
                    preprocess: Preprocess | None = None) -> bytes | None:
        """Write the model as ONNX (opset >= 17, symbolic batch). ``labels``, ``input_scale`` and
        ``input_offset`` go into the metadata for runtimes such as kiln-wasm. ``reference`` (the
        training inputs) adds their statistics and the model's outputs on them (``kiln.drift``),
        which :class:`kiln.drift.DriftMonitor` compares live inputs against. ``tokenizer`` (a
        :mod:`kiln.text` tokenizer) travels as ``kiln.tokenizer``: kiln-wasm's ``model.tokenizer``
        and ``model.generate`` use it. ``preprocess`` (:class:`kiln.Preprocess`) says how an image
        becomes the input: kiln-wasm's ``model.run(image)`` applies it. Without ``path``, returns
        the bytes."""
        if input_shape is not None:
            core = self._ensure_core()
            if core.graph_json() is None:
                self._ensure_graph([(tuple(input_shape), False)])
            else:
                self.input_shape = input_shape
        if labels is not None:
            labels = [str(label) for label in labels]
        extra = [] if reference is None else [_drift.reference_metadata(self, reference)]
        if tokenizer is not None:
            from .text import Tokenizer
            if not isinstance(tokenizer, Tokenizer):
                raise InvalidInputError(f"export_onnx: tokenizer must be a kiln.text tokenizer, got {type(tokenizer).__name__}")
            extra.append((_kiln.TOKENIZER_METADATA_KEY, tokenizer.to_json()))
        if preprocess is not None:
            if not isinstance(preprocess, Preprocess):
                raise InvalidInputError(f"export_onnx: preprocess must be a kiln.Preprocess, got {preprocess!r}")
            extra.append(("kiln.preprocess", preprocess.to_json()))
        data = self._ensure_core().export_onnx(labels, input_scale, input_offset, opset, dynamic_batch,
                                               None if path is None else os.fspath(path), extra)
        return None if data is None else bytes(data)



    @user_facing
    def summary(self, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> ModelSummary:
        """Every module with the shape it outputs for one sample of ``input_shape`` (``(1, 8, 8)``; a list
        of shapes for several inputs; by default the shape the model has seen), its parameter counts, and
        the totals with their size in bytes. ``print`` it, or let Jupyter show the table. The core runs the
        model once on zeros to get the shapes, so a shape that does not fit fails as ``predict`` would."""
        core = self._ensure_core()
        shapes = _shapes_arg(input_shape)
        if shapes is None:
            known = [s for _, _, s in core.input_info()] if core.graph_json() is not None else []
            if not known or any(s is None for s in known):
                raise InvalidInputError(
                    f"summary: {type(self).__name__} has not seen data yet: give the shape of one sample, "
                    "e.g. model.summary(input_shape=(1, 8, 8)) (a list of shapes for several inputs)")
            shapes = [tuple(s) for s in known]
        if core.graph_json() is None:
            self._ensure_graph([(s, False) for s in shapes])
        return ModelSummary(type(self).__name__, json.loads(core.summary([list(s) for s in shapes])))

    def _repr_html_(self) -> str:
        """Jupyter shows the summary table when the input shape is known, else the layers and a hint."""
        core = self._core
        if core is not None and core.graph_json() is not None and self._root() is self \
                and all(s is not None for _, _, s in core.input_info()):
            try:
                return self.summary()._repr_html_()
            except Exception:  # a display must never raise; the text form below still informs
                pass
        params = f"{core.num_parameters:,} trainable parameters" if core is not None else \
            "weights drawn at first use"
        return (f"<pre>{html.escape(repr(self))}</pre><p>{params}; <code>model.summary(input_shape=...)</code> "
                "lists each layer's output shape and parameters</p>")

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, m in self.named_children():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + "\n)" if len(lines) > 1 else f"{type(self).__name__}()"


class Sequential(Module):
    """Layers applied in order; also the trainable model (Keras-style ``compile`` / ``fit``).

    The weights are drawn when the model is built, from the seed set by :func:`kiln.manual_seed`.
    Inside an ``nn.Module`` it is a container whose children are named ``"0"``, ``"1"``, ….
    """

    def __init__(self, *layers: Layer | Module) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Layer, Module)):
                raise InvalidInputError(f"Sequential: item {i} is {type(layer).__name__}, not a kiln.nn layer or module")
            self._modules[str(i)] = layer
        object.__setattr__(self, "_layers", list(layers))
        if self._chain_only():  # a plain stack: its weights exist now, as they always have
            self._ensure_core()

    def _chain_only(self) -> bool:
        return all((isinstance(m, Layer) and not m._stateless) or (isinstance(m, Sequential) and m._chain_only())
                   for m in self._layers)

    def spec(self) -> dict[str, Any]:
        """A Sequential of layers as one layer spec (when nested in a Sequential)."""
        return {"type": "Sequential", "layers": [m.spec() for m in self._layers]}

    def _build(self) -> Any:
        if not self._chain_only():
            return super()._build()  # holds nn.Modules: a graph like any other
        if not self._layers:
            raise InvalidInputError("Sequential: a model needs at least one layer")
        return _kiln.Model(json.dumps([m.spec() for m in self._layers]), self._seed)

    def forward(self, x: Any) -> Any:
        for m in self._layers:
            x = m(x)
        return x

    @classmethod
    def _from_core(cls, core: Any) -> "Sequential":
        model = cls(*[_layer_from_spec(s) for s in json.loads(core.architecture_json())["layers"]])
        object.__setattr__(model, "_core", core)
        model._adopt(model, "")
        return model

    # ---- the container ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: int) -> Any:
        return self._layers[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._layers)

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self._layers))
        return f"Sequential({body}\n)"


def _layer_from_spec(spec: dict[str, Any]) -> Any:
    if spec.get("type") == "Sequential":
        return Sequential(*[_layer_from_spec(s) for s in spec["layers"]])
    return from_spec(spec)


class ModuleList(Module):
    """A list of modules, named ``"0"``, ``"1"``, … (iterate over it in ``forward``)."""

    def __init__(self, modules: Sequence[Layer | Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Layer | Module) -> "ModuleList":
        if not isinstance(m, (Layer, Module)):
            raise InvalidInputError(f"ModuleList: {type(m).__name__} is not a kiln.nn layer or module")
        self._modules[str(len(self._modules))] = m
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Any:
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._modules.values()))


class _Loaded(Module):
    """A graph model rebuilt from a checkpoint: its graph comes from the file, not from Python code."""

    def forward(self, *args: Any) -> Any:
        raise TracingError("a model loaded from a checkpoint runs its stored graph: call fit/predict on it, "
                           "not from another module's forward")

    @classmethod
    def _from_core(cls, core: Any) -> "_Loaded":
        model = cls()
        arch = json.loads(core.architecture_json())["graph"]
        for m in arch["modules"]:
            parts = m["name"].split(".")
            node: Module = model
            for p in parts[:-1]:
                if p not in node._modules:
                    node._modules[p] = Module()
                node = node._modules[p]
            node._modules[parts[-1]] = _layer_from_spec(m["spec"])
        object.__setattr__(model, "_core", core)
        model._adopt(model, "")
        names = [n for n, _, _ in core.input_info()]
        object.__setattr__(model, "_names", names)
        return model

    def _input_names(self, n: int) -> list[str]:
        return list(self.__dict__.get("_names", [])) or super()._input_names(n)

    def __repr__(self) -> str:
        names = ", ".join(self._input_names(0))
        return f"GraphModel(inputs=[{names}], parameters={self.num_parameters()})"

def _shapes_arg(shape: Any) -> list[tuple[int, ...]] | None:
    """``(1, 8, 8)`` → one input's shape; ``[(8,), (1,)]`` → one per input; ``None`` stays."""
    if shape is None:
        return None
    if isinstance(shape, (tuple, list)) and shape and all(isinstance(s, (tuple, list)) for s in shape):
        shapes = [tuple(s) for s in shape]
    elif isinstance(shape, (tuple, list)):
        shapes = [tuple(shape)]
    else:
        raise InvalidInputError(f"summary: input_shape must be a tuple of ints such as (1, 8, 8), got {shape!r}")
    for s in shapes:
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in s):
            raise InvalidInputError(f"summary: input_shape {s!r} must hold positive ints (one sample, no batch axis)")
    return [tuple(int(d) for d in s) for s in shapes]


def _check_batch_size(call: str, batch_size: Any) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"{call}: batch_size must be a positive integer, got {batch_size!r}")


@user_facing
def load_onnx(path: str | os.PathLike[str]) -> Module:
    """An ONNX file (exported by PyTorch, by kiln, ...) as a kiln model you can ``compile``, ``fit``,
    ``save`` and ``export_onnx`` again: kiln's engine imports it into kiln's graph, the file's
    initializers become its parameters (under the file's names; BatchNorm folded into a scale and a
    shift), the constants the import makes become buffers. A file whose graph kiln cannot express
    raises :class:`kiln.OnnxError` naming what (``kiln.InferenceSession`` can still run it on tract)."""
    return _Loaded._from_core(_kiln.Model.load_onnx(os.fspath(path), next_seed()))


@user_facing
def load(path: str | os.PathLike[str]) -> Module:
    """Load a model saved with ``model.save`` (or by kiln-wasm's trainer). A graph model comes back
    from its stored graph: the Python class that defined it need not be importable, and loading
    runs no code from the file (unlike a pickled PyTorch model)."""
    core = _kiln.Model.load(os.fspath(path))
    if core.is_sequential:
        return Sequential._from_core(core)
    return _Loaded._from_core(core)
