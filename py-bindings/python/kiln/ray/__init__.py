"""kiln on Ray: hyperparameter sweeps (Tune), data-parallel training (Train) and batch scoring (Data).

    pip install "kiln[ray]"

    from kiln.ray import ReportCallback, KilnTrainer, prepare_model, Predictor

- Tune: pass ``ReportCallback()`` to ``fit`` inside a function trainable; every epoch's logs go to
  ``ray.tune.report`` with a kiln checkpoint, so ASHA and friends can stop bad trials early, and a
  resumed trial starts from the weights it had reached. ``load_checkpoint(result.checkpoint)`` gives the model.
- Train: ``KilnTrainer(loop, train_loop_config=..., scaling_config=..., datasets=...)``; inside ``loop``,
  ``prepare_model(model)`` makes ``fit`` average gradients across the workers every step (or, with
  ``sync_every=k``, parameters every k steps); ``get_shard()`` reads the worker's shard as numpy arrays.
- Data: ``ds.map_batches(Predictor, fn_constructor_kwargs={"path": "m.onnx"}, batch_size=..., concurrency=...)``.

``import kiln`` never imports Ray; only this module does.
"""

from __future__ import annotations

try:
    import ray  # noqa: F401
    import ray.train  # noqa: F401
    import ray.tune  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"kiln.ray needs Ray with its Tune, Train and Data libraries ({e}). Install them with: "
        "pip install 'kiln[ray]'   (or pip install 'ray[tune,train,data]')"
    ) from e

from ._data import Predictor
from ._exchange import measure as measure_exchange
from ._report import ReportCallback, checkpoint_epoch, load_checkpoint
from ._train import KilnConfig, KilnTrainer, exchange_stats, get_shard, prepare_model

__all__ = ["ReportCallback", "load_checkpoint", "checkpoint_epoch", "KilnTrainer", "KilnConfig", "prepare_model", "get_shard", "exchange_stats",
           "Predictor", "measure_exchange"]
