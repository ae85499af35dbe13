"""One seed for everything random: initial weights, shuffling, dropout."""

from __future__ import annotations

import hashlib

_state = {"seed": 0, "draws": 0}


def manual_seed(seed: int) -> None:
    """Fix kiln's randomness. Models built after this call, and their training, are reproducible:
    the same seed on the same machine gives bit-identical weights."""
    if not isinstance(seed, int) or seed < 0:
        from .errors import InvalidInputError

        raise InvalidInputError(f"manual_seed: the seed must be a non-negative integer, got {seed!r}")
    _state["seed"] = seed
    _state["draws"] = 0


def next_seed() -> int:
    """A new 64-bit seed from the global one (each model draws its own)."""
    _state["draws"] += 1
    digest = hashlib.sha256(f"{_state['seed']}:{_state['draws']}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
