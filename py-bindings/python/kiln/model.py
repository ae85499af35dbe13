"""``nn.Sequential``: the model users build, compile, fit, evaluate, predict, save and export."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import numpy as np

from . import _kiln
from ._arrays import as_input, as_targets
from ._seed import next_seed
from .callbacks import Callback, CallbackList, EarlyStopping, ModelCheckpoint, Pruning
from .errors import InvalidInputError
from .history import History
from .layers import Layer, from_spec
from .losses import Loss, loss_spec
from .optim import Optimizer, Schedule


class Sequential:
    """Layers applied in order; also the trainable model (Keras-style ``compile`` / ``fit``).

    The weights are drawn when the model is built, from the seed set by :func:`kiln.manual_seed`.
    """

    def __init__(self, *layers: Layer) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InvalidInputError(f"Sequential: item {i} is {type(layer).__name__}, not a kiln.nn layer")
        self._layers: list[Layer] = list(layers)
        self._core = _kiln.Model(json.dumps([layer.spec() for layer in layers]), next_seed())
        self._adopt()
        self._compiled: dict[str, Any] | None = None
        self.stop_training = False
        self.training = True

    @classmethod
    def _from_core(cls, core: Any) -> "Sequential":
        model = cls.__new__(cls)
        model._core = core
        model._layers = [from_spec(s) for s in json.loads(core.architecture_json())["layers"]]
        model._adopt()
        model._compiled = None
        model.stop_training = False
        model.training = True
        return model

    def _adopt(self) -> None:
        for i, layer in enumerate(self._layers):
            layer._owner, layer._prefix = self, f"{i}."

    # ---- the container ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: int) -> Layer:
        return self._layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._layers)

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self._layers))
        return f"Sequential({body}\n)"

    # ---- hand-written loops ----------------------------------------------------------------------
    def __call__(self, x: Any) -> Any:
        """Run on a :class:`kiln.Tensor`, recording for ``backward()`` (train mode unless ``eval()``)."""
        from ._kiln import Tensor

        if not isinstance(x, Tensor):
            x = Tensor(x)
        return x.apply(self._core, training=self.training)

    def train(self, mode: bool = True) -> "Sequential":
        """Training behaviour (dropout on, batch-norm on batch statistics) for calls on tensors."""
        self.training = bool(mode)
        return self

    def eval(self) -> "Sequential":
        """Evaluation behaviour for calls on tensors."""
        return self.train(False)

    def parameters(self) -> list["Parameter"]:
        """The trainable parameters, for ``optim.Adam(model.parameters(), lr=...)``."""
        return [Parameter(self, name) for name, _, trainable, is_buffer in self._core.tensor_info()
                if trainable and not is_buffer]

    def zero_grad(self) -> None:
        """Forget the accumulated gradients."""
        self._core.zero_grad()

    # ---- weights ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by PyTorch state-dict name (``"0.weight"``, ``"1.running_mean"``)."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace every parameter and buffer (names and shapes must match exactly)."""
        self._core.load_state_dict({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()})

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """Trainable parameters (name, numpy copy), in state-dict order."""
        state = self.state_dict()
        return [(name, state[name]) for name, _, trainable, is_buffer in self._core.tensor_info() if not is_buffer]

    def num_parameters(self) -> int:
        """Number of trainable values."""
        return int(self._core.num_parameters)

    def freeze(self, prefix: str = "") -> int:
        """Stop training parameters whose name starts with ``prefix`` (e.g. ``"0."``); returns how many."""
        return int(self._core.set_trainable(prefix, False))

    def unfreeze(self, prefix: str = "") -> int:
        """Train parameters whose name starts with ``prefix`` again; returns how many."""
        return int(self._core.set_trainable(prefix, True))

    def get_flat_parameters(self) -> np.ndarray:
        """Every trainable value in one float32 vector (state-dict order)."""
        return np.asarray(self._core.flat_params())

    def set_flat_parameters(self, flat: Any) -> None:
        """Overwrite every trainable value from one vector (the layout of :meth:`get_flat_parameters`)."""
        self._core.set_flat_params(np.ascontiguousarray(flat, dtype=np.float32).ravel())

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape, known after the first ``fit``/``predict`` (or set it)."""
        s = self._core.input_shape
        return None if s is None else tuple(s)

    @input_shape.setter
    def input_shape(self, shape: Sequence[int] | None) -> None:
        self._core.input_shape = None if shape is None else [int(d) for d in shape]

    # ---- training --------------------------------------------------------------------------------
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
        self._core.compile(json.dumps(optimizer.spec()), json.dumps(loss_spec(loss)), metrics)
        self._compiled = {"optimizer": optimizer, "loss": loss, "metrics": metrics, "clip_grad_norm": clip_grad_norm,
                          "lr_schedule": lr_schedule}

    def _require_compiled(self) -> dict[str, Any]:
        if self._compiled is None:
            raise InvalidInputError("the model is not compiled: call model.compile(optimizer=..., loss=...) first")
        return self._compiled

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
        wants_classes = bool(self._core.wants_classes)
        xs = as_input(x, "x")
        ys = as_targets(y, wants_classes, "y")
        val_x = val_y = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise InvalidInputError("fit: validation_data must be a pair (x_val, y_val)")
            val_x = as_input(validation_data[0], "validation x")
            val_y = as_targets(validation_data[1], wants_classes, "validation y")
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
            history_json = self._core.fit(
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

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        """Loss and metrics on ``x``, ``y`` in evaluation mode: ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled()
        _check_batch_size("evaluate", batch_size)
        xs = as_input(x, "x")
        ys = as_targets(y, bool(self._core.wants_classes), "y")
        return dict(self._core.evaluate(xs, ys, batch_size))

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """The model's raw outputs (logits for classifiers) as float32, in evaluation mode."""
        _check_batch_size("predict", batch_size)
        return np.asarray(self._core.predict(as_input(x, "x"), batch_size))

    # ---- persistence and export ------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture and weights as one .kiln file (safetensors inside), written atomically."""
        self._core.save(os.fspath(path))

    def export_onnx(self, path: str | os.PathLike[str] | None = None, labels: Sequence[str] | None = None,
                    input_scale: float | None = None, input_offset: float | None = None, opset: int = 17,
                    dynamic_batch: bool = True, input_shape: Sequence[int] | None = None) -> bytes | None:
        """Write the model as ONNX (opset >= 17, symbolic batch). ``labels``, ``input_scale`` and
        ``input_offset`` go into the metadata for runtimes such as kiln-wasm. Without ``path``,
        returns the bytes."""
        if input_shape is not None:
            self.input_shape = input_shape
        if labels is not None:
            labels = [str(label) for label in labels]
        data = self._core.export_onnx(labels, input_scale, input_offset, opset, dynamic_batch,
                                      None if path is None else os.fspath(path))
        return None if data is None else bytes(data)


def _check_batch_size(call: str, batch_size: Any) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"{call}: batch_size must be a positive integer, got {batch_size!r}")


def load(path: str | os.PathLike[str]) -> Sequential:
    """Load a model saved with :meth:`Sequential.save` (or by kiln-wasm's trainer)."""
    return Sequential._from_core(_kiln.Model.load(os.fspath(path)))


class Parameter:
    """A trainable tensor of a model, by state-dict name: ``.data`` and ``.grad`` are numpy copies."""

    def __init__(self, owner: Sequential, name: str) -> None:
        self.owner, self.name = owner, name

    @property
    def data(self) -> np.ndarray:
        return self.owner.state_dict()[self.name]

    @property
    def grad(self) -> np.ndarray | None:
        """The gradient accumulated since the last ``zero_grad()`` (None before any backward)."""
        g = self.owner._core.grad(self.name)
        return None if g is None else np.asarray(g)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"
