"""kiln's own all-reduce between the workers of a Ray Train run.

Ray's collectives (``ray.util.collective``, Ray Train's process groups) need torch or cupy; kiln has
neither, so the workers exchange float32 vectors through Ray itself, in one of two ways:

``"actor"``
    every worker sends its vector to one async actor (the rendezvous), which sums them in rank order
    and hands the mean back to all. One message in and one out per worker; the actor does the sum.
``"object_store"``
    every worker ``ray.put``\\ s its vector and sends only the reference to the actor; once all have
    arrived each worker reads the others' vectors from the shared-memory object store (zero-copy on
    one node) and sums them itself, in rank order, so every worker ends with the same bits.

Which is faster depends on the size: small vectors travel inline inside the actor call (the object
store's puts and reference bookkeeping cost more than the copy), large ones are cheaper to read from
shared memory than to push through the actor twice. :func:`measure` times both;
:data:`OBJECT_STORE_FROM_BYTES` is the crossover measured on the reference machine (see the README).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import numpy as np
import ray

# Vectors of at least this many bytes go through the object store, smaller ones through the actor.
# Measured with `kiln.ray.measure_exchange()` on the reference 2-core machine (README, "Scale-out on Ray").
OBJECT_STORE_FROM_BYTES = 400_000  # 100k float32 parameters

# How long a worker waits for the others at one exchange before it gives up with an error.
TIMEOUT_S = 300.0


class _Round:
    __slots__ = ("parts", "done", "result", "fetched")

    def __init__(self) -> None:
        self.parts: dict[int, Any] = {}
        self.done = asyncio.Event()
        self.result: Any = None
        self.fetched = 0


class _Rendezvous:
    """One per worker group (a restarted group gets a fresh one): meets the workers at each exchange."""

    def __init__(self, world_size: int) -> None:
        self.world_size = int(world_size)
        self.rounds: dict[Any, _Round] = {}

    def _round(self, key: Any) -> _Round:
        r = self.rounds.get(key)
        if r is None:
            r = self.rounds[key] = _Round()
        return r

    async def _meet(self, key: Any, rank: int, part: Any, combine: Any) -> Any:
        r = self._round(key)
        if rank in r.parts:
            raise RuntimeError(f"kiln.ray: rank {rank} reached exchange {key!r} twice")
        r.parts[rank] = part
        if len(r.parts) == self.world_size:
            r.result = combine([r.parts[i] for i in range(self.world_size)])
            r.parts = {}
            r.done.set()
        else:
            await r.done.wait()
        r.fetched += 1
        if r.fetched == self.world_size:
            del self.rounds[key]
        return r.result

    async def mean(self, key: Any, rank: int, value: np.ndarray) -> np.ndarray:
        """The mean of every worker's ``value`` (summed in rank order, float32)."""
        return await self._meet(key, rank, value, _mean)

    async def gather(self, key: Any, rank: int, item: Any) -> list[Any]:
        """Every worker's ``item`` (object references, small values), in rank order."""
        return await self._meet(key, rank, item, list)

    def ping(self) -> int:
        return self.world_size


# an actor class (``Rendezvous.remote(world_size)``); typed Any since ray.remote's result is dynamic
Rendezvous: Any = ray.remote(num_cpus=0)(_Rendezvous)


def _mean(parts: Sequence[np.ndarray]) -> np.ndarray:
    total = np.array(parts[0], dtype=np.float32, copy=True)
    for p in parts[1:]:
        total += p
    total /= np.float32(len(parts))
    return total


class Group:
    """A worker's view of the exchange: its rank, the group's size and the rendezvous actor."""

    def __init__(self, rendezvous: Any, rank: int, world_size: int, method: str = "auto") -> None:
        if method not in ("auto", "actor", "object_store"):
            raise ValueError(f'kiln.ray: method must be "auto", "actor" or "object_store", got {method!r}')
        self.rendezvous, self.rank, self.world_size, self.method = rendezvous, int(rank), int(world_size), method
        self._calls = 0
        self.seconds = 0.0  # time spent exchanging, summed over calls
        self.calls = 0

    def _key(self, tag: str) -> tuple[str, int]:
        self._calls += 1
        return (tag, self._calls)

    def _wait(self, ref: Any, key: Any) -> Any:
        try:
            return ray.get(ref, timeout=TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"kiln.ray: worker {self.rank} waited {TIMEOUT_S:.0f} s at exchange {key!r} for the other "
                f"{self.world_size - 1} worker(s). Every worker must make the same number of steps: give each "
                "the same number of rows (Ray Data's shards are equal) and the same batch_size and epochs."
            ) from None

    def mean_(self, x: np.ndarray, tag: str = "grad") -> np.ndarray:
        """Replace ``x`` (float32, 1-D) in place by the mean over all workers; returns it."""
        start = time.perf_counter()
        key = self._key(tag)
        if self.world_size > 1:
            method = self.method
            if method == "auto":
                method = "object_store" if x.nbytes >= OBJECT_STORE_FROM_BYTES else "actor"
            if method == "actor":
                x[...] = self._wait(self.rendezvous.mean.remote(key, self.rank, x), key)
            else:
                mine = ray.put(x)
                refs = self._wait(self.rendezvous.gather.remote(key, self.rank, [mine]), key)
                parts = ray.get([r[0] for r in refs])  # zero-copy views of shared memory (read-only)
                total = np.array(parts[0], dtype=np.float32, copy=True)
                for p in parts[1:]:
                    total += p
                total /= np.float32(self.world_size)
                x[...] = total
                del parts, refs, mine
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return x

    def gather(self, item: Any, tag: str = "gather") -> list[Any]:
        """Every worker's ``item`` (small, picklable), in rank order."""
        key = self._key(tag)
        if self.world_size == 1:
            return [item]
        return self._wait(self.rendezvous.gather.remote(key, self.rank, item), key)

    def broadcast(self, item: Any, tag: str = "broadcast") -> Any:
        """Rank 0's ``item`` on every worker."""
        return self.gather(item if self.rank == 0 else None, tag)[0]


# ---- measuring the two ways ------------------------------------------------------------------------
class _BenchWorker:
    def __init__(self, rendezvous: Any, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.rendezvous = rank, world_size, rendezvous

    def run(self, size: int, method: str, steps: int) -> list[float]:
        group = Group(self.rendezvous, self.rank, self.world_size, method)
        x = np.random.default_rng(self.rank).standard_normal(size).astype(np.float32)
        times = []
        for _ in range(steps + 2):
            start = time.perf_counter()
            group.mean_(x)
            times.append(time.perf_counter() - start)
        return times[2:]  # the first calls warm the actor and the object store


_Bench: Any = ray.remote(num_cpus=0)(_BenchWorker)


def measure(sizes: Sequence[int] = (10_000, 100_000, 1_000_000), steps: int = 30, world_size: int = 2,
            methods: Sequence[str] = ("actor", "object_store")) -> list[dict[str, Any]]:
    """Median and 90th-percentile milliseconds per all-reduce, per method and vector size (float32),
    between ``world_size`` actors on this Ray cluster. Call after ``ray.init``."""
    rendezvous = Rendezvous.remote(world_size)
    workers = [_Bench.remote(rendezvous, r, world_size) for r in range(world_size)]
    rows = []
    try:
        for size in sizes:
            for method in methods:
                per_worker = ray.get([w.run.remote(int(size), method, steps) for w in workers])
                t = np.array(per_worker[0]) * 1e3
                rows.append({"parameters": int(size), "MB": size * 4 / 1e6, "method": method,
                             "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90))})
    finally:
        for a in [*workers, rendezvous]:
            ray.kill(a)
    return rows
