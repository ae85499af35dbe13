"""Callbacks for ``fit``: early stopping and checkpoints (run inside the Rust loop), a learning-rate
scheduler, the tqdm progress bar, and a base class for your own."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .history import History
    from .model import Module


class Callback:
    """Subclass and override the hooks you need. Set ``self.model.stop_training = True`` to stop.

    Inside a hook ``self.model`` is the model as it stands: read its weights, ``save`` it. (Between
    hooks the weights are busy in Rust; another thread sees an empty model until ``fit`` returns.)
    """

    model: "Module"

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

    def __init__(self, callbacks: Sequence[Callback], model: "Module", epochs: int, verbose: int) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise InvalidInputError(f"fit: callbacks must be kiln.callbacks.Callback instances, got {cb!r}")
            cb.model = model
        # EarlyStopping and ModelCheckpoint run in the core; a subclass of one (kiln.ray.ReportCallback, which
        # has the core write its checkpoints) gets its Python hooks called as well.
        self.callbacks = [cb for cb in callbacks if type(cb) not in (EarlyStopping, ModelCheckpoint)]
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


class Pruning(Callback):
    """Gradual magnitude pruning while ``fit`` trains (Zhu & Gupta, 2017), the Keras-tfmot way::

        model.fit(X, y, epochs=8, callbacks=[kiln.callbacks.Pruning(0.8, end_epoch=4)])
        kiln.optimize.sparsity_report(model)        # real zeros per layer
        small = kiln.optimize.make_permanent(model)  # structured: dead channels cut out

    The sparsity rises from ``initial_sparsity`` at the first step of ``start_epoch`` to
    ``target_sparsity`` at the first step of ``end_epoch`` (default: the last epoch; epochs count from
    0), along ``s = s_f + (s_i - s_f)(1 - p)^power`` (``schedule="polynomial"``: fast while many
    redundant weights remain, then slowly), or at once (``"constant"``). Every ``frequency`` optimizer
    steps (default: once per epoch) the smallest weights are masked again, ranked over the whole model
    (``scope="global"``) or within each layer (``"layer"``); ``structured=True`` masks whole conv
    filters / linear units instead, every layer but the output one. After every optimizer step the
    masks are re-applied, so no pruned weight comes back. It all runs in the core; the epoch logs gain
    ``sparsity``, the real fraction of zero Linear/Conv weights. After ``fit`` the zeros are ordinary
    weights: a later ``fit`` without this callback may regrow them.
    """

    def __init__(self, target_sparsity: float, *, start_epoch: int = 0, end_epoch: int | None = None,
                 frequency: int | None = None, schedule: str = "polynomial", initial_sparsity: float = 0.0,
                 power: float = 3.0, structured: bool = False, scope: str = "global") -> None:
        for name, v in (("target_sparsity", target_sparsity), ("initial_sparsity", initial_sparsity)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
                raise InvalidInputError(f"Pruning: {name} must be a number in [0, 1), got {v!r}")
        for name, n, low in (("start_epoch", start_epoch, 0), ("end_epoch", end_epoch, 0), ("frequency", frequency, 1)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < low):
                raise InvalidInputError(f"Pruning: {name} must be an integer >= {low}, got {n!r}")
        if end_epoch is not None and end_epoch < start_epoch:
            raise InvalidInputError(f"Pruning: end_epoch ({end_epoch}) is before start_epoch ({start_epoch})")
        if schedule not in ("polynomial", "constant"):
            raise InvalidInputError(f'Pruning: schedule must be "polynomial" or "constant", got {schedule!r}')
        if scope not in ("global", "layer", "per_layer"):
            raise InvalidInputError(f'Pruning: scope must be "global" or "layer", got {scope!r}')
        self.target_sparsity, self.initial_sparsity = float(target_sparsity), float(initial_sparsity)
        self.start_epoch, self.end_epoch, self.frequency = start_epoch, end_epoch, frequency
        self.schedule, self.power, self.structured, self.scope = schedule, float(power), bool(structured), scope

    def spec(self) -> dict[str, Any]:
        """The core's ``PruningSchedule`` (``FitConfig.pruning``)."""
        return {"target_sparsity": self.target_sparsity, "initial_sparsity": self.initial_sparsity,
                "start_epoch": self.start_epoch, "end_epoch": self.end_epoch, "frequency": self.frequency,
                "schedule": self.schedule, "power": self.power, "structured": self.structured,
                "scope": "per_layer" if self.scope == "layer" else self.scope}

    def on_train_end(self, history: "History") -> None:
        # A fit that did not hand this callback to the core would leave the model dense, silently.
        if history.epoch and "sparsity" not in history.history:
            raise InvalidInputError("Pruning: this fit did not prune (the callback never reached the core)")

    def __repr__(self) -> str:
        return (f"Pruning(target_sparsity={self.target_sparsity}, start_epoch={self.start_epoch}, "
                f"end_epoch={self.end_epoch}, frequency={self.frequency}, schedule={self.schedule!r}, "
                f"structured={self.structured}, scope={self.scope!r})")
