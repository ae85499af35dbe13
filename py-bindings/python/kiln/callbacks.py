"""Callbacks for ``fit``: early stopping and checkpoints (run inside the Rust loop), a learning-rate
scheduler, the tqdm progress bar, and a base class for your own."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .history import History
    from .model import Sequential


class Callback:
    """Subclass and override the hooks you need. Set ``self.model.stop_training = True`` to stop.

    While ``fit`` runs, the model's weights are busy in Rust: read them after ``fit`` returns.
    """

    model: "Sequential"

    def on_train_begin(self) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch (counted from 0, as Keras); ``logs`` has loss, metrics, val_*, lr."""

    def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        """After each batch (counted from 0); ``logs`` has the epoch's running means."""

    def on_train_end(self, history: "History") -> None: ...

    # whether on_batch_end is overridden (a per-batch call into Python costs a few microseconds)
    def _wants_batches(self) -> bool:
        return type(self).on_batch_end is not Callback.on_batch_end


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best_weights`` (default) the best epoch's weights are put back. Runs in the core."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 restore_best_weights: bool = True) -> None:
        if patience < 0:
            raise InvalidInputError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.restore_best_weights = restore_best_weights

    def spec(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "patience": self.patience, "min_delta": self.min_delta,
                "restore_best_weights": self.restore_best_weights}

    def __repr__(self) -> str:
        return f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience})"


class ModelCheckpoint(Callback):
    """Save the model (a .kiln file, atomically) after each epoch, or only when ``monitor`` improves."""

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss", save_best_only: bool = True) -> None:
        self.filepath, self.monitor, self.save_best_only = os.fspath(filepath), monitor, save_best_only

    def spec(self) -> dict[str, Any]:
        return {"path": self.filepath, "monitor": self.monitor, "save_best_only": self.save_best_only}

    def __repr__(self) -> str:
        return f"ModelCheckpoint({self.filepath!r}, monitor={self.monitor!r}, save_best_only={self.save_best_only})"


class LearningRateScheduler(Callback):
    """Set the learning rate before each epoch to ``schedule(epoch, lr)`` (epochs from 0)."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        if not callable(schedule):
            raise InvalidInputError("LearningRateScheduler: schedule must be a function (epoch, lr) -> lr")
        self.schedule = schedule


class _ProgressBar:
    """A tqdm bar per epoch (``tqdm.auto``: a widget in Jupyter, text in a terminal)."""

    def __init__(self, epochs: int) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self._epochs = tqdm, epochs
        self._bar: Any = None  # the current epoch's tqdm bar

    def batch(self, epoch: int, batch: int, batches: int, logs: dict[str, float]) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=batches, desc=f"Epoch {epoch}/{self._epochs}", unit="batch", leave=True)
        self._bar.update(1)
        if batch == batches or batch % 16 == 0:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)

    def epoch(self, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "lr"}, refresh=True)
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CallbackList:
    """Drives the user's callbacks and the progress bar from the core's events."""

    def __init__(self, callbacks: Sequence[Callback], model: "Sequential", epochs: int, verbose: int) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise InvalidInputError(f"fit: callbacks must be kiln.callbacks.Callback instances, got {cb!r}")
            cb.model = model
        self.callbacks = [cb for cb in callbacks if not isinstance(cb, (EarlyStopping, ModelCheckpoint))]
        self.model = model
        self.bar = _ProgressBar(epochs) if verbose else None
        self.epochs = epochs
        self.wants_batches = self.bar is not None or any(cb._wants_batches() for cb in self.callbacks)
        self.schedulers = [cb for cb in self.callbacks if isinstance(cb, LearningRateScheduler)]

    def on_train_begin(self) -> None:
        for cb in self.callbacks:
            cb.on_train_begin()
        for s in self.schedulers:
            self.model._core.lr = float(s.schedule(0, float(self.model._core.lr)))

    def on_batch_end(self, epoch: int, batch: int, batches: int, logs: dict[str, float]) -> bool:
        if self.bar is not None:
            self.bar.batch(epoch, batch, batches, logs)
        for cb in self.callbacks:
            cb.on_batch_end(batch - 1, logs)
        return self.model.stop_training

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool | float:
        if self.bar is not None:
            self.bar.epoch(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch - 1, logs)
        if self.model.stop_training:
            return True
        if epoch >= self.epochs:  # `epoch` counts from 1: no epoch follows the last one to schedule
            return False
        lr = logs.get("lr")
        for s in self.schedulers:
            lr = float(s.schedule(epoch, float(lr if lr is not None else 0.0)))
        return lr if self.schedulers and lr is not None else False

    def on_train_end(self, history: "History") -> None:
        for cb in self.callbacks:
            cb.on_train_end(history)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
