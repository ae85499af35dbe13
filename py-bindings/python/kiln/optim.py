"""Optimizers with PyTorch's names, defaults and update rules, and learning-rate schedules.
They are descriptions; the optimizer state lives in the Rust core once ``compile`` is called."""

from __future__ import annotations

from typing import Any, Tuple

from .errors import InvalidInputError


def _num(v: Any) -> Any:
    return None if v is None else float(v)


class Optimizer:
    """Base class: a spec dict for the core. Given a model's ``parameters()`` it also drives a
    hand-written loop: ``loss.backward(); opt.step(); opt.zero_grad()``.

    Arguments left out take the core's defaults (PyTorch's), the same ones kiln-wasm's Trainer
    gets: the core fills them in and checks the values here, at construction."""

    _type = ""

    def __init__(self, params: Any = None, **spec: Any) -> None:
        import json

        from . import _kiln

        self._owner = None
        if params is not None:
            owners = {id(p.owner): p.owner for p in params}
            if len(owners) != 1:
                raise InvalidInputError("an optimizer takes the parameters of exactly one model (model.parameters())")
            self._owner = next(iter(owners.values()))
        self._bound = False
        given = {"type": self._type or type(self).__name__, **{k: v for k, v in spec.items() if v is not None}}
        self._spec: dict[str, Any] = json.loads(_kiln.optimizer_spec(json.dumps(given)))

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    @property
    def lr(self) -> float:
        return float(self._spec["lr"])

    def _model(self) -> Any:
        if self._owner is None:
            raise InvalidInputError(f"{type(self).__name__}: step() needs the parameters: {type(self).__name__}(model.parameters(), lr=...)")
        if not self._bound:
            import json

            self._owner._core.set_optimizer(json.dumps(self.spec()))
            self._bound = True
        return self._owner

    def step(self) -> None:
        """Update the parameters from the gradients of the last ``backward()`` calls."""
        self._model()._core.optimizer_step()

    def zero_grad(self) -> None:
        """Forget the accumulated gradients."""
        self._model()._core.zero_grad()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._spec.items() if k != "type")
        return f"{type(self).__name__}({opts})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay
    (defaults as PyTorch's: lr 1e-3)."""

    def __init__(self, params: Any = None, lr: float | None = None, momentum: float | None = None,
                 dampening: float | None = None, weight_decay: float | None = None,
                 nesterov: bool | None = None) -> None:
        super().__init__(params, lr=_num(lr), momentum=_num(momentum), dampening=_num(dampening),
                         weight_decay=_num(weight_decay), nesterov=nesterov)


class Adam(Optimizer):
    """Adam (L2 weight decay added to the gradient, as PyTorch's Adam; lr 1e-3, betas (0.9, 0.999))."""

    def __init__(self, params: Any = None, lr: float | None = None, betas: Tuple[float, float] | None = None,
                 eps: float | None = None, weight_decay: float | None = None, amsgrad: bool | None = None) -> None:
        super().__init__(params, lr=_num(lr), betas=None if betas is None else [float(b) for b in betas],
                         eps=_num(eps), weight_decay=_num(weight_decay), amsgrad=amsgrad)


class AdamW(Optimizer):
    """Adam with decoupled weight decay (lr 1e-3, weight_decay 1e-2, as PyTorch's)."""

    def __init__(self, params: Any = None, lr: float | None = None, betas: Tuple[float, float] | None = None,
                 eps: float | None = None, weight_decay: float | None = None, amsgrad: bool | None = None) -> None:
        super().__init__(params, lr=_num(lr), betas=None if betas is None else [float(b) for b in betas],
                         eps=_num(eps), weight_decay=_num(weight_decay), amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum (lr 1e-2, alpha 0.99, as PyTorch's)."""

    def __init__(self, params: Any = None, lr: float | None = None, alpha: float | None = None, eps: float | None = None,
                 weight_decay: float | None = None, momentum: float | None = None,
                 centered: bool | None = None) -> None:
        super().__init__(params, lr=_num(lr), alpha=_num(alpha), eps=_num(eps), weight_decay=_num(weight_decay),
                         momentum=_num(momentum), centered=centered)


def from_name(name: str) -> Optimizer:
    """An optimizer with default settings from its name ("sgd", "adam", "adamw", "rmsprop")."""
    table = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
    cls = table.get(name.lower())
    if cls is None:
        raise InvalidInputError(f"unknown optimizer {name!r}; known: {', '.join(table)}")
    return cls()


class Schedule:
    """A learning-rate schedule stepped once per epoch (pass to ``compile(lr_schedule=...)``)."""

    def __init__(self, **spec: Any) -> None:
        self._spec = {"type": type(self)._type, **spec}

    _type = ""

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._spec.items() if k != "type")
        return f"{type(self).__name__}({opts})"


class StepLR(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    _type = "Step"

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(step_size=int(step_size), gamma=float(gamma))


class CosineAnnealingLR(Schedule):
    """Cosine from the base rate down to ``eta_min`` over ``T_max`` epochs."""

    _type = "Cosine"

    def __init__(self, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803 (PyTorch's name)
        super().__init__(t_max=int(T_max), eta_min=float(eta_min))


class LinearWarmup(Schedule):
    """Grow linearly from ``start_factor`` × the base rate to the base rate over ``warmup_epochs``."""

    _type = "Warmup"

    def __init__(self, warmup_epochs: int, start_factor: float = 1.0 / 3.0) -> None:
        super().__init__(warmup_epochs=int(warmup_epochs), start_factor=float(start_factor))


class ReduceLROnPlateau(Schedule):
    """Multiply the rate by ``factor`` after ``patience`` epochs without improvement of ``monitor``."""

    _type = "ReduceOnPlateau"

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, min_lr: float = 0.0) -> None:
        super().__init__(monitor=monitor, factor=float(factor), patience=int(patience), min_lr=float(min_lr))
