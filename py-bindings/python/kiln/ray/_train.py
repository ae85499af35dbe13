"""Data-parallel ``fit`` on Ray Train: ``KilnTrainer``, ``prepare_model`` and ``get_shard``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import numpy as np
import ray
import ray.train
from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.constants import is_v2_enabled
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from .._seed import next_seed
from ..callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint, Pruning
from ..errors import InvalidInputError
from ..history import History
from . import _exchange
from ._report import ReportCallback

# Set in each worker process by the backend when its worker group starts (one rendezvous per group).
_worker_state: dict[str, Any] = {}


def _install(rendezvous: Any, world_size: int, method: str) -> None:
    _worker_state.update(rendezvous=rendezvous, world_size=world_size, method=method)


def _uninstall() -> None:
    _worker_state.clear()


class _KilnBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        n = len(worker_group)
        # A fresh rendezvous per worker group: after a failure the new group does not meet the old one's.
        rendezvous = _exchange.Rendezvous.options(num_cpus=0).remote(n)
        ray.get(rendezvous.ping.remote())
        self._rendezvous = rendezvous
        worker_group.execute(_install, rendezvous, n, getattr(backend_config, "exchange", "auto"))

    def on_shutdown(self, worker_group: Any, backend_config: BackendConfig) -> None:
        rendezvous = getattr(self, "_rendezvous", None)
        try:
            worker_group.execute(_uninstall)
        finally:
            if rendezvous is not None:
                ray.kill(rendezvous)
                self._rendezvous = None


@dataclasses.dataclass
class KilnConfig(BackendConfig):
    """How kiln's workers exchange gradients: ``"auto"`` (by size, see ``kiln.ray._exchange``),
    ``"actor"`` or ``"object_store"``."""

    exchange: str = "auto"

    @property
    def backend_cls(self) -> type:
        return _KilnBackend

    @property
    def framework(self) -> str:
        return "kiln"


class KilnTrainer(DataParallelTrainer):
    """Ray Train's data-parallel trainer for kiln: runs ``train_loop_per_worker(config)`` on every
    worker, with kiln's gradient exchange set up between them (see :func:`prepare_model`).

        def loop(config):
            model = kiln.ray.prepare_model(build(config)); model.compile(...)
            x, y = kiln.ray.get_shard("train")
            model.fit(x, y, epochs=5, callbacks=[kiln.ray.ReportCallback()])
        result = KilnTrainer(loop, train_loop_config={...}, datasets={"train": ds},
                             scaling_config=ray.train.ScalingConfig(num_workers=2)).fit()
        model = kiln.ray.load_checkpoint(result.checkpoint)

    Every other argument is Ray Train's (``run_config=RunConfig(failure_config=FailureConfig(...))``, ...).
    With ``datasets``, leave a CPU free for Ray Data's own tasks (on 2 CPUs:
    ``ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})``): workers that take every CPU
    wait forever for their shards.
    """

    def __init__(self, train_loop_per_worker: Callable[..., Any], *, train_loop_config: dict | None = None,
                 scaling_config: Any = None, run_config: Any = None, datasets: dict | None = None,
                 dataset_config: Any = None, exchange: str = "auto", **kwargs: Any) -> None:
        if not is_v2_enabled():
            raise RuntimeError("kiln.ray.KilnTrainer needs Ray Train V2 (unset RAY_TRAIN_V2_ENABLED=0)")
        if exchange not in ("auto", "actor", "object_store"):
            raise InvalidInputError(f'KilnTrainer: exchange must be "auto", "actor" or "object_store", got {exchange!r}')
        super().__init__(train_loop_per_worker, train_loop_config=train_loop_config,
                         backend_config=KilnConfig(exchange=exchange), scaling_config=scaling_config,
                         run_config=run_config, datasets=datasets, dataset_config=dataset_config, **kwargs)


def _group() -> _exchange.Group:
    if not _worker_state:
        raise RuntimeError("kiln.ray.prepare_model runs inside the train_loop_per_worker of a kiln.ray.KilnTrainer "
                           "(its workers are the ones that can exchange gradients)")
    ctx = ray.train.get_context()
    return _exchange.Group(_worker_state["rendezvous"], ctx.get_world_rank(), _worker_state["world_size"],
                           _worker_state["method"])


def get_shard(name: str = "train", columns: Sequence[str] = ("x", "y"), batch_size: int = 8192) -> tuple[np.ndarray, ...]:
    """This worker's shard of the dataset ``name`` (``KilnTrainer(datasets={name: ds})``) as numpy arrays,
    one per column, in memory (``fit`` trains on arrays). Ray Data's default split gives every worker
    the same number of rows, which the per-step exchange needs."""
    it = ray.train.get_dataset_shard(name)
    if it is None:
        raise InvalidInputError(f"kiln.ray.get_shard: the trainer has no dataset named {name!r}")
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in it.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for c in columns:
            if c not in batch:
                raise InvalidInputError(f"kiln.ray.get_shard: dataset {name!r} has no column {c!r} (it has {sorted(batch)})")
            parts[c].append(np.asarray(batch[c]))
    out = []
    for c in columns:
        a = np.concatenate(parts[c]) if parts[c] else np.zeros((0,), np.float32)
        out.append(a.astype(np.float32) if a.dtype.kind == "f" else a)
    return tuple(out)


# ---- prepare_model -------------------------------------------------------------------------------
def prepare_model(model: Any, sync_every: int | None = None) -> Any:
    """Make ``model.fit`` data-parallel across this KilnTrainer's workers; returns the model.

    Every worker starts from rank 0's weights. Then, by default, the flat gradient of every trainable
    parameter is averaged across the workers after each backward, before the optimizer step (the core's
    gradient hook): with equal shards, 2 workers at ``batch_size=b`` take the same steps as one worker
    at ``2b`` on the concatenated batches, to float rounding.

    With ``sync_every=k`` the workers instead take k local steps each and then average their parameters
    (local SGD): one message per k steps, for small models where a step costs less than a message. The
    fit then runs in slices of k batches (the core's loop between averages); its Python callbacks see
    every epoch, but EarlyStopping, ModelCheckpoint, Pruning, LearningRateScheduler and compile's
    lr_schedule are refused there. Buffers (batch-norm statistics) are not averaged in either mode.

    Every worker must make the same number of steps: give them equal shards (``get_shard`` does) and
    the same ``fit`` arguments; ``fit`` checks this before the first step.
    """
    if sync_every is not None and (isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1):
        raise InvalidInputError(f"prepare_model: sync_every must be a positive integer or None, got {sync_every!r}")
    if getattr(model, "_kiln_ray_group", None) is not None:
        raise InvalidInputError("prepare_model: this model is already prepared")
    for name in ("fit", "get_flat_parameters", "set_flat_parameters", "state_dict", "load_state_dict"):
        if not callable(getattr(model, name, None)):
            raise InvalidInputError(f"prepare_model: expects a kiln model (no {name}() on {type(model).__name__})")
    group = _group()
    model._kiln_ray_group = group
    _broadcast_state(model, group)
    original = type(model).fit.__get__(model)
    if sync_every is None:
        model._gradient_hook = group.mean_
        wrapped = functools.partial(_synced_fit, model, original, group)
    else:
        wrapped = functools.partial(_local_sgd_fit, model, original, group, sync_every)
    model.fit = functools.update_wrapper(wrapped, original)
    model._kiln_ray_sync_every = sync_every
    return model


def exchange_stats(model: Any) -> dict[str, Any]:
    """This worker's all-reduces so far for a model from :func:`prepare_model`: ``exchanges`` (one per
    step, or one per ``sync_every`` steps), the ``seconds`` spent in them and ``ms_per_exchange``."""
    group = getattr(model, "_kiln_ray_group", None)
    if group is None:
        raise InvalidInputError("kiln.ray.exchange_stats: the model did not go through kiln.ray.prepare_model")
    return {"exchanges": group.calls, "seconds": group.seconds,
            "ms_per_exchange": 1e3 * group.seconds / group.calls if group.calls else 0.0,
            "world_size": group.world_size, "sync_every": getattr(model, "_kiln_ray_sync_every", None)}


def _broadcast_state(model: Any, group: _exchange.Group) -> None:
    if group.world_size > 1:
        state = group.broadcast(model.state_dict() if group.rank == 0 else None, tag="state")
        model.load_state_dict(state)


def _bind(original: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = inspect.signature(original).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _agree(group: _exchange.Group, what: dict[str, Any]) -> None:
    everyone = group.gather(what, tag="agree")
    for rank, theirs in enumerate(everyone):
        if theirs != everyone[0]:
            diff = {k: (everyone[0][k], theirs.get(k)) for k in everyone[0] if everyone[0][k] != theirs.get(k)}
            raise InvalidInputError(f"kiln.ray: the workers' fit calls differ (rank 0 vs rank {rank}: {diff}); every "
                                    "worker must make the same steps: equal shards and the same fit arguments")


def _rows(a: Any) -> int:
    return int(len(a))


def _synced_fit(model: Any, original: Callable[..., Any], group: _exchange.Group, *args: Any, **kwargs: Any) -> History:
    a = _bind(original, args, kwargs)
    vx = a.get("validation_data")
    n = _rows(a["x"])
    n_train = n - int(np.float32(n) * np.float32(a.get("validation_split") or 0.0)) if vx is None else n
    _agree(group, {"train rows": n_train, "batch_size": a.get("batch_size"), "epochs": a.get("epochs")})
    _broadcast_state(model, group)
    return original(**a)


_REFUSED = (EarlyStopping, ModelCheckpoint, Pruning, LearningRateScheduler)


def _local_sgd_fit(model: Any, original: Callable[..., Any], group: _exchange.Group, k: int, x: Any, y: Any,
                   epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
                   validation_data: tuple[Any, Any] | None = None, shuffle: bool = True,
                   callbacks: Sequence[Callback] | None = None, verbose: int = 0) -> History:
    cbs = list(callbacks or [])
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise InvalidInputError(f"fit: callbacks must be kiln.callbacks.Callback instances, got {cb!r}")
        if isinstance(cb, _REFUSED) and not isinstance(cb, ReportCallback):
            raise InvalidInputError(f"fit: {type(cb).__name__} runs inside the core's loop, which a model prepared with "
                                    "sync_every leaves every k steps; use it without sync_every")
    compiled = getattr(model, "_compiled", None) or {}
    if compiled.get("lr_schedule") is not None:
        raise InvalidInputError("fit: compile(lr_schedule=...) is not supported with sync_every (the core's loop restarts "
                                "every k steps)")
    if not isinstance(epochs, int) or epochs < 1:
        raise InvalidInputError(f"fit: epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"fit: batch_size must be a positive integer, got {batch_size!r}")
    xs, ys = np.asarray(x), np.asarray(y)
    if validation_data is None and validation_split:
        n_val = int(np.float32(len(xs)) * np.float32(validation_split))
        if n_val <= 0 or n_val >= len(xs):
            raise InvalidInputError(f"fit: validation_split {validation_split} leaves {n_val} of {len(xs)} samples for validation")
        validation_data = (xs[len(xs) - n_val:], ys[len(ys) - n_val:])
        xs, ys = xs[: len(xs) - n_val], ys[: len(ys) - n_val]
    # Every worker makes the same number of steps: the smallest shard's (each epoch leaves out a different few).
    rows = min(group.gather(len(xs), tag="rows"))
    _agree(group, {"batch_size": batch_size, "epochs": epochs, "sync_every": k})
    _broadcast_state(model, group)
    rng = np.random.default_rng(next_seed())
    for cb in cbs:
        cb.model = model
    model.stop_training = False
    for cb in cbs:
        cb.on_train_begin()
    history: dict[str, list[float]] = {}
    span = k * batch_size
    done = 0
    for epoch in range(epochs):
        order = rng.permutation(len(xs))[:rows] if shuffle else np.arange(rows)
        sums: dict[str, float] = {}
        last: dict[str, float] = {}
        for start in range(0, rows, span):
            idx = order[start:start + span]
            h = original(xs[idx], ys[idx], epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
            for name, values in h.history.items():
                last[name] = values[-1]
                if name != "lr":
                    sums[name] = sums.get(name, 0.0) + values[-1] * len(idx)
            flat = np.ascontiguousarray(model.get_flat_parameters(), dtype=np.float32)
            model.set_flat_parameters(group.mean_(flat, tag="params"))
        logs = {name: s / rows for name, s in sums.items()}
        if validation_data is not None:
            for name, v in model.evaluate(validation_data[0], validation_data[1]).items():
                logs[f"val_{name}"] = float(v)
        if "lr" in last:
            logs["lr"] = last["lr"]
        for name, v in logs.items():
            history.setdefault(name, []).append(float(v))
        done = epoch + 1
        if verbose:
            print(f"Epoch {done}/{epochs} " + " ".join(f"{n}={v:.4f}" for n, v in logs.items()), flush=True)
        for cb in cbs:
            cb.on_epoch_end(epoch, dict(logs))
            if isinstance(cb, ReportCallback) and cb._pending is not None:
                model.save(cb.filepath)  # the weights are in Python between slices: checkpoint directly
                cb._flush(cb.filepath)
        # a stop must be agreed, or the others would wait at the next average
        if any(group.gather(bool(model.stop_training), tag="stop")):
            break
    result = History({"history": history, "epochs": done,
                      "stopped_by": "callback" if done < epochs else None})
    for cb in cbs:
        cb.on_train_end(result)
    return result
