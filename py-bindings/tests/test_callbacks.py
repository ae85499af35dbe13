"""kiln.callbacks: EarlyStopping, ModelCheckpoint, LearningRateScheduler, user callbacks, and
History.plot (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from conftest import compiled, digits_mlp, small_classifier

import kiln
from kiln import nn, optim
from kiln.callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint
from kiln.errors import InvalidInputError

matplotlib.use("Agg")


def _overfitting_run(digits, callbacks, epochs=40):
    """A run whose validation loss goes down, then up: 100 training samples, a large learning rate."""
    kiln.manual_seed(3)
    model = digits_mlp()
    model.compile(optimizer=optim.Adam(lr=1e-2), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(digits.x_train[:100], digits.y_train[:100], epochs=epochs, batch_size=16,
                        validation_data=(digits.x_test, digits.y_test), callbacks=callbacks, verbose=0)
    return model, history


# ---- EarlyStopping ------------------------------------------------------------------------------
def test_early_stopping_on_a_plateau_stops_after_patience(digits):
    model = compiled(small_classifier())
    model.freeze()  # nothing can improve
    h = model.fit(digits.x_train, digits.y_train, epochs=20, shuffle=False,
                  callbacks=[EarlyStopping(monitor="loss", patience=2)], verbose=0)
    # epoch 1 sets the best, epochs 2-4 fail to beat it, and the third failure (> patience) stops
    assert h.stopped_by == "early_stopping" and len(h.epoch) == 4


def test_early_stopping_restores_the_best_weights(digits):
    model, h = _overfitting_run(digits, [EarlyStopping(patience=3)])
    val = h.history["val_loss"]
    assert h.stopped_by == "early_stopping" and len(val) < 40
    best = int(np.argmin(val))
    assert len(val) == best + 1 + 4  # stopped 4 epochs after the best one
    assert val[-1] > val[best]
    assert model.evaluate(digits.x_test, digits.y_test)["loss"] == pytest.approx(val[best], rel=1e-6)


def test_early_stopping_without_restore_keeps_the_last_weights(digits):
    model, h = _overfitting_run(digits, [EarlyStopping(patience=3, restore_best_weights=False)])
    assert h.stopped_by == "early_stopping"
    assert model.evaluate(digits.x_test, digits.y_test)["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-6)


def test_early_stopping_on_accuracy_maximises_it(digits):
    # Keras' mode="auto": a monitored accuracy improves when it goes UP. Minimising it would stop a
    # steadily improving run after patience + 1 epochs and restore its worst weights.
    model = digits_mlp()
    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    h = model.fit(digits.x_train, digits.y_train, epochs=8, validation_data=(digits.x_test, digits.y_test),
                  callbacks=[EarlyStopping(monitor="val_accuracy", patience=2)], verbose=0)
    acc = h.history["val_accuracy"]
    assert model.evaluate(digits.x_test, digits.y_test)["accuracy"] == pytest.approx(max(acc))
    assert max(acc) > 0.9


def test_early_stopping_rejects_negative_patience():
    with pytest.raises(InvalidInputError, match="patience must be >= 0"):
        EarlyStopping(patience=-1)


# ---- ModelCheckpoint ------------------------------------------------------------------------------
def test_checkpoint_best_only_holds_the_best_epoch(digits, tmp_path):
    path = tmp_path / "best.kiln"
    _, h = _overfitting_run(digits, [ModelCheckpoint(path)], epochs=15)
    val = h.history["val_loss"]
    assert np.argmin(val) < len(val) - 1, "the run should overfit, so the last epoch is not the best"
    best = kiln.load(path)
    best.compile(loss="cross_entropy")
    assert best.evaluate(digits.x_test, digits.y_test)["loss"] == pytest.approx(min(val), rel=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["best.kiln"]  # atomic writes leave no temporary file


def test_checkpoint_best_only_on_accuracy_keeps_the_highest(digits, tmp_path):
    # as for EarlyStopping: a monitored accuracy is best when highest
    path = tmp_path / "best.kiln"
    model = digits_mlp()
    model.compile(optimizer=optim.Adam(lr=1e-3), loss="cross_entropy", metrics=["accuracy"])
    h = model.fit(digits.x_train, digits.y_train, epochs=6, validation_data=(digits.x_test, digits.y_test),
                  callbacks=[ModelCheckpoint(path, monitor="val_accuracy")], verbose=0)
    best = kiln.load(path)
    best.compile(loss="cross_entropy", metrics=["accuracy"])
    assert best.evaluate(digits.x_test, digits.y_test)["accuracy"] == pytest.approx(max(h.history["val_accuracy"]))


def test_checkpoint_every_epoch_holds_the_last(digits, tmp_path):
    path = tmp_path / "last.kiln"
    model, _ = _overfitting_run(digits, [ModelCheckpoint(str(path), save_best_only=False)], epochs=5)
    for name, value in kiln.load(path).state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[name])


def test_checkpoint_and_early_stopping_together(digits, tmp_path):
    path = tmp_path / "m.kiln"
    model, h = _overfitting_run(digits, [ModelCheckpoint(path), EarlyStopping(patience=2)])
    assert h.stopped_by == "early_stopping"
    x = digits.x_test[:20]
    np.testing.assert_array_equal(kiln.load(path).predict(x), model.predict(x))  # both hold the best epoch


def test_checkpoint_into_a_missing_folder_fails_clearly(digits, tmp_path):
    model = compiled(small_classifier())
    with pytest.raises(kiln.KilnIOError, match="nowhere"):
        model.fit(digits.x_train, digits.y_train, callbacks=[ModelCheckpoint(tmp_path / "nowhere" / "m.kiln")],
                  verbose=0)


# ---- LearningRateScheduler ------------------------------------------------------------------------
def test_scheduler_sets_the_rate_before_each_epoch(digits):
    model = small_classifier()
    model.compile(optimizer=optim.SGD(lr=0.1), loss="cross_entropy")
    h = model.fit(digits.x_train, digits.y_train, epochs=4, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)])
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_scheduler_is_called_once_per_epoch_with_the_rate_in_force(digits):
    # Keras calls schedule(epoch, lr) at the start of each epoch: epochs 0..n-1, never for an epoch n that
    # does not happen (a schedule read from a list, `lambda e, lr: rates[e]`, would raise IndexError).
    seen = []
    model = small_classifier()
    model.compile(optimizer=optim.SGD(lr=0.1), loss="cross_entropy")
    model.fit(digits.x_train, digits.y_train, epochs=3, verbose=0,
              callbacks=[LearningRateScheduler(lambda epoch, lr: seen.append((epoch, lr)) or lr / 2)])
    assert seen == [(0, pytest.approx(0.1)), (1, pytest.approx(0.05)), (2, pytest.approx(0.025))]
    rates = [0.1, 0.05, 0.01]
    h = model.fit(digits.x_train, digits.y_train, epochs=3, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: rates[epoch])])
    assert h.history["lr"] == pytest.approx(rates)


def test_scheduled_rate_is_the_one_training_uses(digits):
    # a rate of 0 after the first epoch: epochs 2 and 3 must leave the weights exactly where epoch 1 left them
    def run(epochs, callbacks):
        kiln.manual_seed(4)
        model = small_classifier()
        model.compile(optimizer=optim.SGD(lr=0.1), loss="cross_entropy")
        model.fit(digits.x_train, digits.y_train, epochs=epochs, callbacks=callbacks, verbose=0)
        return model.get_flat_parameters()
    frozen_later = run(3, [LearningRateScheduler(lambda e, lr: 0.1 if e == 0 else 0.0)])
    np.testing.assert_array_equal(frozen_later, run(1, []))


def test_scheduler_needs_a_function():
    with pytest.raises(InvalidInputError, match="schedule must be a function"):
        LearningRateScheduler(0.1)


# ---- user callbacks -----------------------------------------------------------------------------------
class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self):
        self.calls.append(("begin",))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch", epoch, sorted(logs)))

    def on_batch_end(self, batch, logs):
        self.calls.append(("batch", batch, sorted(logs)))

    def on_train_end(self, history):
        self.calls.append(("end", history))


def test_user_callback_sees_every_event(digits):
    rec = Recorder()
    model = compiled(small_classifier())
    h = model.fit(digits.x_train[:100], digits.y_train[:100], epochs=2, batch_size=40, validation_split=0.2,
                  callbacks=[rec], verbose=0)
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["begin", "batch", "batch", "epoch", "batch", "batch", "epoch", "end"]
    assert [c[1] for c in rec.calls if c[0] == "batch"] == [0, 1, 0, 1]  # batches from 0, as Keras
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == [0, 1]
    assert rec.calls[1][2] == ["accuracy", "loss"]
    assert rec.calls[3][2] == ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]
    assert rec.calls[-1][1] is h
    assert rec.model is model


def test_stop_training_from_a_callback(digits):
    class StopAfterTwo(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                self.model.stop_training = True

    h = compiled(small_classifier()).fit(digits.x_train, digits.y_train, epochs=10, callbacks=[StopAfterTwo()],
                                         verbose=0)
    assert h.stopped_by == "callback" and len(h.epoch) == 2


def test_a_callback_reads_and_saves_the_weights_mid_fit(digits, tmp_path):
    # Keras's habit: a callback that saves a checkpoint per epoch and watches a weight's norm.
    class Snapshot(Callback):
        def __init__(self):
            self.norms, self.paths = [], []

        def on_epoch_end(self, epoch, logs):
            self.norms.append(float(np.linalg.norm(self.model.state_dict()["0.weight"])))
            path = tmp_path / f"epoch{epoch}.kiln"
            self.model.save(path)
            self.paths.append(path)

        def on_batch_end(self, batch, logs):
            assert self.model.state_dict()["0.weight"].shape == (16, 64)

    snap = Snapshot()
    model = compiled(small_classifier())
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, callbacks=[snap], verbose=0)
    assert len(set(snap.norms)) == 3, "each epoch saw the weights it reached"
    last = kiln.load(snap.paths[-1])
    np.testing.assert_array_equal(last.predict(digits.x_test), model.predict(digits.x_test))
    first = kiln.load(snap.paths[0])
    assert not np.allclose(first.predict(digits.x_test), model.predict(digits.x_test))


def test_callbacks_must_be_callbacks(digits):
    with pytest.raises(InvalidInputError, match="must be kiln.callbacks.Callback instances"):
        compiled(small_classifier()).fit(digits.x_train, digits.y_train, callbacks=[lambda *a: None], verbose=0)


# ---- History.plot ------------------------------------------------------------------------------------------
def test_history_plot_draws_train_and_validation_curves(digits, tmp_path):
    model = compiled(small_classifier())
    h = model.fit(digits.x_train, digits.y_train, epochs=3, validation_split=0.2, verbose=0)
    axes = h.plot()
    assert [a.get_title() for a in axes] == ["accuracy", "loss"]
    loss_ax = axes[1]
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels == ["loss", "val_loss"]
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), h.history["loss"])
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    loss_ax.figure.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    (only,) = {id(a): a for a in h.plot(keys=["loss"], ax=ax)}.values()
    assert only is ax and len(ax.get_lines()) == 2
    plt.close("all")


def test_history_plot_without_validation(digits):
    import matplotlib.pyplot as plt
    h = compiled(nn.Sequential(nn.Linear(64, 10)), metrics=()).fit(digits.x_train, digits.y_train, epochs=2,
                                                                     verbose=0)
    (ax,) = h.plot()
    assert [line.get_label() for line in ax.get_lines()] == ["loss"]
    plt.close("all")
