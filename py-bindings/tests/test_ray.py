"""kiln.ray on a real local Ray cluster: Tune (ASHA), Train (data-parallel fit, local SGD, a killed
worker) and Data (batch scoring).

Ray probes public addresses when it starts, so this module runs only inside a network namespace with
nothing but loopback (`make test-ray`, i.e. `bash scripts/netns.sh python -m pytest tests/test_ray.py`):
outside one every test fails at once, before Ray starts. One Ray instance (2 CPUs) serves the module.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kiln
from conftest import compiled

HERE = Path(__file__).resolve().parent


def _network_isolated() -> str | None:
    """None inside a loopback-only network namespace; otherwise what gives the machine's network away."""
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        return f"network interfaces {names}"
    for address in ("8.8.8.8", "169.254.169.254", "10.0.0.1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((address, 53))
            return f"a route to {address}"
        except OSError:
            pass
        finally:
            s.close()
    return None


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    leak = _network_isolated()
    if leak is not None:
        pytest.fail(f"test_ray.py must run inside a loopback-only network namespace (found {leak}); run it with "
                    "`make test-ray` or `bash scripts/netns.sh python -m pytest tests/test_ray.py`", pytrace=False)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # Ray's workers unpickle this module's functions by name: let them import it (and conftest)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _watchdog():
    """A Ray run that hangs (a worker waiting at an exchange, a scheduler waiting for CPUs) ends the test
    process with every thread's traceback after 5 minutes, instead of holding `make test` forever."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def mlp() -> kiln.nn.Sequential:
    nn = kiln.nn
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def run_config(tmp_path: Path, name: str, **kwargs):
    import ray.train

    return ray.train.RunConfig(name=name, storage_path=str(tmp_path / "ray_results"), **kwargs)


# ---- kiln stays free of Ray -----------------------------------------------------------------------------
def test_kiln_never_imports_ray():
    code = ("import sys, numpy as np, kiln\n"
            "m = kiln.nn.Sequential(kiln.nn.Linear(4, 2)); m.compile(optimizer=kiln.optim.Adam(lr=1e-2))\n"
            "m.fit(np.zeros((8, 4), np.float32), np.zeros(8, np.int64), epochs=1, verbose=0)\n"
            "import kiln.callbacks, kiln.optimize\n"
            "assert 'ray' not in sys.modules, sorted(k for k in sys.modules if k.startswith('ray'))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_kiln_ray_without_ray_says_how_to_install():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'):\n"
            "            raise ImportError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import kiln\n"
            "try:\n"
            "    import kiln.ray\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    raise SystemExit('kiln.ray imported without ray')\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120).stdout
    assert "pip install 'kiln[ray]'" in out


# ---- the exchange -----------------------------------------------------------------------------------------
def test_both_exchanges_give_every_worker_the_same_mean(ray_cluster):
    ray = ray_cluster
    from kiln.ray import _exchange

    @ray.remote(num_cpus=0)
    def worker(rendezvous, rank, method, size):
        g = _exchange.Group(rendezvous, rank, 2, method)
        x = np.random.default_rng(rank).standard_normal(size).astype(np.float32)
        out = [g.mean_(x.copy()) for _ in range(2)]
        return out[0], out[1]

    size = 50_000
    parts = [np.random.default_rng(r).standard_normal(size).astype(np.float32) for r in range(2)]
    expected = (parts[0] + parts[1]) / np.float32(2)
    for method in ("actor", "object_store"):
        rendezvous = _exchange.Rendezvous.remote(2)
        (a0, a1), (b0, b1) = ray.get([worker.remote(rendezvous, r, method, size) for r in range(2)])
        for got in (a0, a1, b0, b1):
            assert got.tobytes() == expected.tobytes(), method
        ray.kill(rendezvous)


# ---- Tune ---------------------------------------------------------------------------------------------------
def test_asha_stops_bad_trials_early_and_the_best_checkpoint_loads(digits, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from kiln.ray import ReportCallback, load_checkpoint

    x, y = digits.x_train, digits.y_train
    epochs = 8

    def trainable(config):
        kiln.manual_seed(0)
        m = compiled(mlp(), lr=config["lr"])
        m.fit(x, y, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0, callbacks=[ReportCallback()])

    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.grid_search([1e-2, 3e-3, 1e-4, 3e-5, 1e-5, 3e-6])},  # good first: ASHA compares with the trials before
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", max_concurrent_trials=2,
                                    scheduler=ASHAScheduler(max_t=epochs, grace_period=2, reduction_factor=2)),
        run_config=tune.RunConfig(name="asha", storage_path=str(tmp_path / "ray_results"), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    iterations = [r.metrics["training_iteration"] for r in grid]
    assert max(iterations) == epochs
    assert min(iterations) < epochs, f"ASHA stopped no trial early: {iterations}"
    for r in grid:  # every report is one epoch
        assert r.metrics["epoch"] == r.metrics["training_iteration"]
    best = grid.get_best_result()
    assert best.config["lr"] >= 1e-3
    model = load_checkpoint(best.checkpoint)
    # the checkpoint holds the weights of the epoch it was reported with
    n_val = int(len(x) * 0.2)
    model.compile(optimizer=kiln.optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    val = model.evaluate(x[len(x) - n_val:], y[len(y) - n_val:])
    assert val["accuracy"] == pytest.approx(best.metrics["val_accuracy"], abs=1e-9)
    assert val["accuracy"] > 0.9


def test_a_resumed_trial_gets_its_weights_back(digits, tmp_path):
    from ray import tune

    from kiln.ray import ReportCallback, checkpoint_epoch, load_checkpoint

    x, y = digits.x_train[:640], digits.y_train[:640]
    marker, out = tmp_path / "killed", tmp_path

    def trainable(config):
        ckpt = tune.get_checkpoint()
        done = checkpoint_epoch(ckpt) if ckpt is not None else 0
        kiln.manual_seed(5)
        m = compiled(mlp(), lr=3e-3)

        class Record(kiln.callbacks.Callback):
            def on_train_begin(self):  # after ReportCallback restored the trial's checkpoint
                np.save(out / f"start-{done}.npy", self.model.get_flat_parameters())

            def on_epoch_end(self, epoch, logs):
                if done + epoch + 1 == 3 and not marker.exists():
                    marker.write_text("")
                    time.sleep(1.0)  # the epoch-2 report and checkpoint reach Tune first (sent at epoch 3's first batch)
                    os.kill(os.getpid(), signal.SIGKILL)

        m.fit(x, y, epochs=5 - done, batch_size=32, verbose=0,
              callbacks=[ReportCallback(metrics={"train_loss": "loss"}), Record()])

    grid = tune.Tuner(trainable, run_config=tune.RunConfig(
        name="resume", storage_path=str(tmp_path / "ray_results"), verbose=0,
        failure_config=tune.FailureConfig(max_failures=1),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None))).fit()
    assert not grid.errors, grid.errors
    result = grid[0]
    assert marker.exists(), "the trial was not killed"
    starts = sorted(int(p.stem.split("-")[1]) for p in out.glob("start-*.npy"))
    assert starts == [0, 2], starts
    by_epoch = {checkpoint_epoch(c): c for c, _ in result.best_checkpoints}
    assert load_checkpoint(by_epoch[2]).get_flat_parameters().tobytes() == np.load(out / "start-2.npy").tobytes()
    assert np.abs(np.load(out / "start-2.npy") - np.load(out / "start-0.npy")).max() > 1e-3
    assert result.metrics["epoch"] == 5
    assert "train_loss" in result.metrics and "loss" not in result.metrics and "accuracy" not in result.metrics


# ---- Train --------------------------------------------------------------------------------------------------
def _same_steps_loop(config):
    """Worker r trains on its half of the rows; batch b of the global run is both workers' batch b."""
    import ray.train

    from kiln.ray import ReportCallback, prepare_model

    rank = ray.train.get_context().get_world_rank()
    world = ray.train.get_context().get_world_size()
    x, y = np.asarray(config["x"]), np.asarray(config["y"])
    half = len(x) // world
    kiln.manual_seed(config["seed"] + rank)  # different initial weights: prepare_model must broadcast rank 0's
    m = prepare_model(mlp(), sync_every=config.get("sync_every"))
    m.compile(optimizer=kiln.optim.Adam(lr=config["lr"]), loss="cross_entropy", metrics=["accuracy"])
    m.fit(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half], epochs=config["epochs"],
          batch_size=config["batch_size"] // world, shuffle=config.get("shuffle", False), verbose=0,
          callbacks=[ReportCallback()])
    np.save(os.path.join(config["out"], f"rank{rank}.npy"), m.get_flat_parameters())
    from kiln.ray import exchange_stats

    Path(config["out"], f"stats{rank}.json").write_text(json.dumps(exchange_stats(m)))


def _interleave(x: np.ndarray, y: np.ndarray, batch: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows in the order one worker sees them when global batch b = every worker's batch b."""
    half = len(x) // world
    local = batch // world
    order = []
    for start in range(0, half, local):
        for r in range(world):
            order.extend(range(r * half + start, r * half + min(start + local, half)))
    return x[order], y[order]


def test_two_workers_take_the_steps_of_one_worker_on_the_global_batch(digits, tmp_path):
    import ray.train

    from kiln.ray import KilnTrainer, load_checkpoint

    x, y = digits.x_train[:1280], digits.y_train[:1280]
    cfg = {"x": x, "y": y, "epochs": 3, "batch_size": 64, "lr": 3e-3, "seed": 7, "out": str(tmp_path)}
    result = KilnTrainer(_same_steps_loop, train_loop_config=cfg,
                         scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                         run_config=run_config(tmp_path, "same-steps")).fit()
    assert result.error is None
    w0, w1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert w0.tobytes() == w1.tobytes(), "the workers ended with different weights"
    assert load_checkpoint(result.checkpoint).get_flat_parameters().tobytes() == w0.tobytes()

    # one process, same initial weights (rank 0's), the same global batches in the same order
    kiln.manual_seed(7)
    single = compiled(mlp(), lr=3e-3)
    start = single.get_flat_parameters()
    xs, ys = _interleave(x, y, 64, 2)
    single.fit(xs, ys, epochs=3, batch_size=64, shuffle=False, verbose=0)
    ws = single.get_flat_parameters()
    diff = float(np.abs(w0 - ws).max())
    moved = float(np.abs(ws - start).max())
    # float32 rounding: the mean of two half-batch means is not bit-equal to the full-batch mean, and Adam
    # carries the difference over the 60 steps (measured here: 7.5e-8; 1.5e-6 for a residual nn.Module)
    print(f"2 workers vs 1 process: max |dw| = {diff:.2e} (weights moved up to {moved:.2e})")
    assert diff < 1e-5, f"2 workers vs 1: max |dw| = {diff:.2e}"
    assert moved > 1e3 * diff, f"weights moved only {moved:.2e}"
    assert result.metrics["epoch"] == 3
    stats = json.loads((tmp_path / "stats0.json").read_text())
    assert stats["exchanges"] == 3 * 640 // 32 and stats["world_size"] == 2  # one all-reduce per step


def test_sync_every_reaches_single_process_accuracy(digits, tmp_path):
    import ray.train

    from kiln.ray import KilnTrainer, load_checkpoint

    x, y = digits.x_train[:1344], digits.y_train[:1344]
    epochs, batch = 20, 32
    cfg = {"x": x, "y": y, "epochs": epochs, "batch_size": batch, "lr": 3e-3, "seed": 3, "out": str(tmp_path),
           "sync_every": 4, "shuffle": True}
    result = KilnTrainer(_same_steps_loop, train_loop_config=cfg,
                         scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                         run_config=run_config(tmp_path, "sync-every")).fit()
    assert result.error is None
    w0, w1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert w0.tobytes() == w1.tobytes()  # the last step of the fit is an average
    parallel = load_checkpoint(result.checkpoint)
    parallel.compile(optimizer=kiln.optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    acc_parallel = parallel.evaluate(digits.x_test, digits.y_test)["accuracy"]

    kiln.manual_seed(3)
    single = compiled(mlp(), lr=3e-3)
    single.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    acc_single = single.evaluate(digits.x_test, digits.y_test)["accuracy"]
    assert acc_single > 0.9
    # measured over seeds 1-4: local SGD ends 0.45-0.67 points below one process after 20 epochs
    print(f"sync_every=4 on 2 workers: test accuracy {acc_parallel:.4f}, one process {acc_single:.4f}")
    assert acc_parallel >= acc_single - 0.01, f"sync_every=4: {acc_parallel:.4f} vs one process {acc_single:.4f}"
    assert result.metrics["epoch"] == epochs
    stats = json.loads((tmp_path / "stats0.json").read_text())
    assert stats["exchanges"] == epochs * -(-672 // (4 * 16))  # one parameter average per 4 steps


def _unequal_loop(config):
    import ray.train

    from kiln.ray import prepare_model

    rank = ray.train.get_context().get_world_rank()
    m = prepare_model(mlp())
    m.compile(optimizer=kiln.optim.Adam(lr=1e-3), loss="cross_entropy")
    n = 128 if rank == 0 else 96  # rank 1 would make fewer steps and leave rank 0 waiting at an exchange
    m.fit(np.zeros((n, 64), np.float32), np.zeros(n, np.int64), epochs=1, verbose=0)


def test_unequal_shards_fail_before_the_first_step_instead_of_hanging(tmp_path):
    import ray.train

    from kiln.ray import KilnTrainer, prepare_model

    with pytest.raises(RuntimeError, match="inside the train_loop_per_worker of a kiln.ray.KilnTrainer"):
        prepare_model(mlp())
    start = time.perf_counter()
    with pytest.raises(Exception, match="the workers' fit calls differ") as info:
        KilnTrainer(_unequal_loop, scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                    run_config=run_config(tmp_path, "unequal")).fit()
    assert "train rows" in str(info.value)
    assert time.perf_counter() - start < 60


class _KillOnce(kiln.callbacks.Callback):
    """On rank 1, in the first attempt only, SIGKILL the worker at the 5th batch of epoch `epoch` (from 0)."""

    def __init__(self, marker: str, epoch: int) -> None:
        self.marker, self.epoch, self.current = marker, epoch, 0

    def on_epoch_end(self, epoch, logs):
        self.current = epoch + 1

    def on_batch_end(self, batch, logs):
        import ray.train

        if (self.current == self.epoch and batch == 4 and ray.train.get_context().get_world_rank() == 1
                and not os.path.exists(self.marker)):
            Path(self.marker).write_text(str(os.getpid()))
            # Ray Train registers a reported checkpoint when its controller next polls the workers (every
            # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): let it see this epoch's report before the worker dies
            time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)


def _resumable_loop(config):
    import ray.train

    from kiln.ray import ReportCallback, checkpoint_epoch, get_shard, prepare_model

    ckpt = ray.train.get_checkpoint()
    done = checkpoint_epoch(ckpt) if ckpt is not None else 0
    kiln.manual_seed(11)
    m = prepare_model(mlp())
    m.compile(optimizer=kiln.optim.Adam(lr=3e-3), loss="cross_entropy", metrics=["accuracy"])
    x, y = get_shard("train")

    class Record(kiln.callbacks.Callback):  # after ReportCallback restored the checkpoint, before the first step
        def on_train_begin(self):
            if ray.train.get_context().get_world_rank() == 0:
                np.save(os.path.join(config["out"], f"start-{done}.npy"), self.model.get_flat_parameters())

    m.fit(x, y, epochs=config["epochs"] - done, batch_size=32, verbose=0,
          callbacks=[ReportCallback(), Record(), _KillOnce(config["marker"], config["kill_epoch"])])


def test_a_killed_worker_resumes_from_its_last_checkpoint(digits, tmp_path):
    import ray.data
    import ray.train

    from kiln.ray import KilnTrainer, checkpoint_epoch, load_checkpoint

    ds = ray.data.from_items([{"x": xi, "y": int(yi)} for xi, yi in zip(digits.x_train[:1024], digits.y_train[:1024])])
    marker = str(tmp_path / "killed")
    cfg = {"epochs": 5, "kill_epoch": 2, "marker": marker, "out": str(tmp_path)}
    result = KilnTrainer(
        _resumable_loop, train_loop_config=cfg, datasets={"train": ds},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=run_config(tmp_path, "killed", failure_config=ray.train.FailureConfig(max_failures=1),
                              checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None)),
    ).fit()
    assert result.error is None, result.error
    assert os.path.exists(marker), "no worker was killed"
    # killed during epoch 3: the restart began from the epoch-2 checkpoint, with its weights
    starts = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("start-*.npy"))
    assert starts == [0, 2], starts
    resumed_from = np.load(tmp_path / "start-2.npy")
    fresh = np.load(tmp_path / "start-0.npy")
    by_epoch = {checkpoint_epoch(c): c for c, _ in result.best_checkpoints}
    assert sorted(by_epoch) == [1, 2, 3, 4, 5]
    assert load_checkpoint(by_epoch[2]).get_flat_parameters().tobytes() == resumed_from.tobytes()
    assert np.abs(resumed_from - fresh).max() > 1e-3
    assert result.metrics["epoch"] == 5
    final = load_checkpoint(result.checkpoint)
    final.compile(optimizer=kiln.optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    assert final.evaluate(digits.x_test, digits.y_test)["accuracy"] > 0.85  # 5 epochs, Adam's moments restart


# ---- Data ---------------------------------------------------------------------------------------------------
def tract_scores(path, rows):
    """The Predictor's scores again with tract, whose results do not depend on the batch size."""
    import ray.data

    from kiln.ray import Predictor

    ds = ray.data.from_items([{"id": int(i), "pixels": p} for i, p in zip(rows["id"], rows["pixels"])])
    out = ds.map_batches(Predictor, fn_constructor_kwargs={"path": path, "input_column": "pixels", "engine": "tract"},
                         batch_size=256, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    return np.stack(out.to_pandas().sort_values("id")["scores"].to_numpy())


def test_predictor_scores_equal_run(digits, tmp_path):
    import ray.data

    from kiln.ray import Predictor

    m = compiled(mlp(), lr=3e-3)
    m.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
    path = str(tmp_path / "m.onnx")
    labels = [f"digit {d}" for d in range(10)]
    m.export_onnx(path, labels=labels)
    x = np.concatenate([digits.x_train, digits.x_test])
    ids = np.arange(len(x))
    ds = ray.data.from_items([{"id": int(i), "pixels": x[i]} for i in ids])
    scored = ds.map_batches(Predictor, fn_constructor_kwargs={"path": path, "input_column": "pixels",
                                                              "label_column": "label"},
                            batch_size=256, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    rows = scored.to_pandas().sort_values("id")
    assert list(rows["id"]) == list(ids)
    scores = np.stack(rows["scores"].to_numpy())
    expected = kiln.InferenceSession(path).run(x)
    assert scores.dtype == np.float32
    # kiln's engine (InferenceSession's default for kiln's exports) sums a batch of a few rows with a
    # dot-product kernel and larger batches with the GEMM: Ray Data's batch boundaries change the float
    # rounding, not the numbers (tract, batch-independent, matched bit for bit)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(tract_scores(path, rows), kiln.InferenceSession(path, engine="tract").run(x))
    assert list(rows["label"]) == [labels[i] for i in expected.argmax(axis=1)]
    # a table of scalar feature columns, stacked in the order given
    table = ray.data.from_items([{**{f"f{j}": float(x[i, j]) for j in range(64)}, "id": int(i)} for i in ids[:500]])
    out = table.map_batches(Predictor, fn_constructor_kwargs={"path": path, "input_column": [f"f{j}" for j in range(64)],
                                                              "output_column": "logits"},
                            batch_size=100, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1).to_pandas().sort_values("id")
    np.testing.assert_allclose(np.stack(out["logits"].to_numpy()), expected[:500], rtol=1e-6, atol=1e-6)
    # only the outputs, when asked
    alone = Predictor(path, input_column="pixels", keep_columns=False)({"pixels": x[:7], "id": ids[:7]})
    assert sorted(alone) == ["scores"] and np.array_equal(alone["scores"], kiln.InferenceSession(path).run(x[:7]))
