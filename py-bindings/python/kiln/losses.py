"""Losses by name (``"cross_entropy"``) or as objects with options (label smoothing, class weights)."""

from __future__ import annotations

from typing import Any, Sequence, Union

from .errors import InvalidInputError

NAMES = ("mse", "mae", "huber", "cross_entropy", "binary_cross_entropy")


class Loss:
    """A loss and its options."""

    name = ""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name}

    def __call__(self, prediction: Any, target: Any) -> Any:
        """The loss of a :class:`kiln.Tensor` of predictions against ``target`` (a tensor to backprop)."""
        import json

        from ._arrays import as_targets

        return prediction.loss(json.dumps(self.spec()), as_targets(target, self.name == "cross_entropy", "target"))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({opts})"


class MSELoss(Loss):
    """Mean squared error."""

    name = "mse"


class L1Loss(Loss):
    """Mean absolute error."""

    name = "mae"


class HuberLoss(Loss):
    """Quadratic within ``delta``, linear beyond."""

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        if delta <= 0:
            raise InvalidInputError(f"HuberLoss: delta must be positive, got {delta}")
        self.delta = float(delta)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "delta": self.delta}


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits with integer labels; optional class ``weight`` and label
    smoothing. ``ignore_index``: labels equal to it count for nothing in the loss, its gradient and
    accuracy — the padding of a batch of sequences (``ignore_index=kiln.text.PAD``), as in PyTorch."""

    name = "cross_entropy"

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 ignore_index: int | None = None) -> None:
        if not 0.0 <= label_smoothing <= 1.0:
            raise InvalidInputError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)
                                         or ignore_index < 0):
            raise InvalidInputError(f"CrossEntropyLoss: ignore_index must be a class index (0 or more) or None, "
                                    f"got {ignore_index!r}")
        self.weight = None if weight is None else [float(w) for w in weight]
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "label_smoothing": self.label_smoothing, "class_weights": self.weight}
        if self.ignore_index is not None:
            spec["ignore_index"] = self.ignore_index
        return spec


class BCEWithLogitsLoss(Loss):
    """Sigmoid binary cross-entropy on logits, targets in {0, 1}."""

    name = "binary_cross_entropy"


def loss_spec(loss: Union[Loss, str]) -> dict[str, Any]:
    """A loss object or name as the core's JSON spec."""
    if isinstance(loss, Loss):
        return loss.spec()
    if isinstance(loss, str) and loss in NAMES:
        return {"name": loss}
    raise InvalidInputError(f"unknown loss {loss!r}; known losses: {', '.join(NAMES)}")


def mse(prediction: Any, target: Any) -> Any:
    """Mean squared error of a :class:`kiln.Tensor` against ``target``."""
    return MSELoss()(prediction, target)


def mae(prediction: Any, target: Any) -> Any:
    """Mean absolute error of a :class:`kiln.Tensor` against ``target``."""
    return L1Loss()(prediction, target)


def huber(prediction: Any, target: Any, delta: float = 1.0) -> Any:
    """Huber loss of a :class:`kiln.Tensor` against ``target``."""
    return HuberLoss(delta)(prediction, target)


def cross_entropy(logits: Any, labels: Any, weight: Sequence[float] | None = None, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy of logits (a :class:`kiln.Tensor`) against integer labels."""
    return CrossEntropyLoss(weight, label_smoothing)(logits, labels)


def binary_cross_entropy(logits: Any, target: Any) -> Any:
    """Binary cross-entropy of logits (a :class:`kiln.Tensor`) against 0/1 targets."""
    return BCEWithLogitsLoss()(logits, target)
