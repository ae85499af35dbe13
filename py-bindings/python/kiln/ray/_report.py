"""``ReportCallback``: ``fit``'s epoch logs (and a kiln checkpoint) to Ray Tune or Ray Train."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import ray.train
import ray.tune

from ..callbacks import ModelCheckpoint
from ..errors import InvalidInputError
from ..model import load as _load

if TYPE_CHECKING:
    from ..history import History

MODEL_FILE = "model.kiln"   # inside every checkpoint directory kiln.ray writes
STATE_FILE = "kiln_ray.json"  # {"epoch": epochs completed when the checkpoint was taken}

# Checkpoints already restored by this process: a second fit in the same trial must not go back to it.
_restored: set[str] = set()


def _where() -> str | None:
    """"train" in a Ray Train worker, "tune" in a Ray Tune function trainable, None elsewhere."""
    try:
        ray.train.get_context()
        return "train"
    except DeprecationWarning:  # Ray Train V2 says so inside a Tune trainable: use ray.tune's API there
        return "tune"
    except RuntimeError:
        return None


def _latest_checkpoint(where: str) -> Any:
    return ray.train.get_checkpoint() if where == "train" else ray.tune.get_checkpoint()


def load_checkpoint(checkpoint: Any) -> Any:
    """The kiln model inside a Ray checkpoint that :class:`ReportCallback` wrote
    (``result.checkpoint``, ``result_grid.get_best_result().checkpoint``)."""
    if checkpoint is None:
        raise InvalidInputError("kiln.ray.load_checkpoint: no checkpoint (did the run report one?)")
    with checkpoint.as_directory() as d:
        path = os.path.join(d, MODEL_FILE)
        if not os.path.exists(path):
            raise InvalidInputError(f"kiln.ray.load_checkpoint: {checkpoint} has no {MODEL_FILE}: not written by kiln.ray")
        return _load(path)


def checkpoint_epoch(checkpoint: Any) -> int:
    """How many epochs had been completed when ``checkpoint`` was taken."""
    with checkpoint.as_directory() as d:
        try:
            with open(os.path.join(d, STATE_FILE)) as f:
                return int(json.load(f)["epoch"])
        except FileNotFoundError:
            return 0


class ReportCallback(ModelCheckpoint):
    """Report every epoch's logs from ``fit`` to Ray Tune (``ray.tune.report``) or, in a Ray Train
    worker, to Ray Train (``ray.train.report``), with a kiln checkpoint when ``checkpoint`` is true.

    ``metrics``: None reports every log (``loss``, ``accuracy``, ``val_loss``, ``lr``, ...); a list of
    names reports those; a dict ``{reported_name: log_name}`` renames. Every report also carries
    ``epoch``, the epochs completed so far (counting those before a resume).

    When the trial (or the Train run) has a checkpoint to resume from, the model's weights are restored
    from it before the first epoch, once per process. A checkpoint is a directory holding ``model.kiln``
    (read it with :func:`load_checkpoint` or ``kiln.load``). In a Train run the logs are averaged over
    the workers (when the model went through :func:`prepare_model`) and only rank 0 checkpoints.

    While ``fit`` runs the weights live in the Rust loop, so the checkpoint is written by the core's
    own checkpoint writer (this callback is a :class:`~kiln.callbacks.ModelCheckpoint`: pass no other
    one to the same ``fit``) after each epoch, and an epoch is reported as soon as its checkpoint is on
    disk: at the next batch, or when ``fit`` returns.
    """

    def __init__(self, metrics: Sequence[str] | Mapping[str, str] | str | None = None, checkpoint: bool = True) -> None:
        if isinstance(metrics, str):
            metrics = [metrics]
        if metrics is not None and not isinstance(metrics, Mapping):
            metrics = {m: m for m in metrics}
        self.metrics: dict[str, str] | None = None if metrics is None else dict(metrics)
        self.checkpoint = bool(checkpoint)
        self._dir = tempfile.mkdtemp(prefix="kiln-ray-")
        super().__init__(os.path.join(self._dir, "epoch.kiln"), monitor="loss", save_best_only=False)
        self._where: str | None = None
        self._pending: dict[str, float] | None = None
        self._epoch = 0
        self._stamp: int | None = None

    def _wants_batches(self) -> bool:
        return self.checkpoint

    # ---- fit's hooks -----------------------------------------------------------------------------
    def on_train_begin(self) -> None:
        self._where = _where()
        if self._where is None:
            raise InvalidInputError("kiln.ray.ReportCallback: fit is not running inside a Ray Tune trial or a Ray "
                                    "Train worker (ray.tune.Tuner / kiln.ray.KilnTrainer)")
        self._pending = None
        latest = _latest_checkpoint(self._where)
        if latest is not None:
            key = latest.path
            self._epoch = max(self._epoch, checkpoint_epoch(latest))
            if key not in _restored:
                _restored.add(key)
                restored = load_checkpoint(latest)
                self.model.load_state_dict(restored.state_dict())

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._epoch += 1
        metrics = self._select(self._average(logs))
        metrics["epoch"] = self._epoch
        if self.checkpoint:
            self._pending = metrics  # the core writes this epoch's weights right after this call returns
        else:
            self._report(metrics, None)

    def on_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        if self._pending is not None:
            stamp = os.stat(self.filepath).st_mtime_ns if os.path.exists(self.filepath) else None
            if stamp is None or stamp == self._stamp:
                raise InvalidInputError("kiln.ray.ReportCallback: the core wrote no checkpoint for the last epoch: "
                                        "is another ModelCheckpoint in the same fit's callbacks?")
            self._stamp = stamp
            self._flush(self.filepath)

    def on_train_end(self, history: "History") -> None:
        if self._pending is not None:
            # After fit the weights are back in Python: save them as fit leaves them (the core may have
            # stopped before writing the last epoch's file, and early stopping may have restored the best).
            path = os.path.join(self._dir, "final.kiln")
            self.model.save(path)
            self._flush(path)
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = tempfile.mkdtemp(prefix="kiln-ray-")
        self.filepath = os.path.join(self._dir, "epoch.kiln")

    # ---- helpers ---------------------------------------------------------------------------------
    def _average(self, logs: Mapping[str, float]) -> dict[str, float]:
        logs = {k: float(v) for k, v in logs.items()}
        group = getattr(self.model, "_kiln_ray_group", None)
        if self._where == "train" and group is not None and group.world_size > 1:
            names = sorted(logs)
            everyone = group.gather([logs[k] for k in names], tag="logs")
            logs = {k: float(sum(v[i] for v in everyone) / len(everyone)) for i, k in enumerate(names)}
        return logs

    def _select(self, logs: dict[str, float]) -> dict[str, Any]:
        if self.metrics is None:
            return dict(logs)
        missing = [v for v in self.metrics.values() if v not in logs]
        if missing:
            raise InvalidInputError(f"kiln.ray.ReportCallback: no log named {missing} (fit logs {sorted(logs)})")
        return {k: logs[v] for k, v in self.metrics.items()}

    def _flush(self, model_path: str) -> None:
        metrics, self._pending = self._pending, None
        assert metrics is not None
        rank0 = self._where != "train" or ray.train.get_context().get_world_rank() == 0
        if not rank0:
            self._report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as d:
            shutil.copyfile(model_path, os.path.join(d, MODEL_FILE))
            with open(os.path.join(d, STATE_FILE), "w") as f:
                json.dump({"epoch": metrics["epoch"]}, f)
            self._report(metrics, d)

    def _report(self, metrics: dict[str, Any], directory: str | None) -> None:
        if self._where == "train":
            ckpt = None if directory is None else ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=ckpt)
        else:
            ckpt = None if directory is None else ray.tune.Checkpoint.from_directory(directory)
            ray.tune.report(metrics, checkpoint=ckpt)

    def __repr__(self) -> str:
        return f"ReportCallback(metrics={self.metrics!r}, checkpoint={self.checkpoint})"
