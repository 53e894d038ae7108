"""Replay of the chunks Stage 2 has already trained on: on-policy aggregation.

Without it every logged chunk is used for one update and forgotten, and a residual that takes
several optimizer steps on each new batch fits the last few episodes only: in the first full
run the upper bound taught by the scripted expert itself ended *below* the base (issue 17). The
DAgger-style remedy is to train on the union of everything the policy has visited so far. Each
update therefore mixes the new batch with a uniform sample of earlier chunks and their targets
(the world model is frozen, so a chunk's target latents never change and are kept, not fetched
again).

The buffer lives in memory and is not part of the checkpoint: it holds targets, which are
cheap to fetch again but large to persist on every update. After a restart it refills from new
entries; delivery guarantees (ack after checkpoint, exactly once) do not depend on it.
"""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    """A ring of (features [F], base chunk [M, A], target [...]) rows, sampled uniformly."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"replay capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._rng = np.random.default_rng(seed)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._size = 0
        self._next = 0  # the slot the next row overwrites once the ring is full

    def __len__(self) -> int:
        return self._size

    def add(self, features: np.ndarray, base: np.ndarray, target: np.ndarray) -> None:
        """Append rows (leading dimension = rows); the oldest are overwritten when full."""
        if self.capacity == 0:
            return
        rows = (np.asarray(features, np.float32), np.asarray(base, np.float32),
                np.asarray(target, np.float32))
        if len({len(a) for a in rows}) != 1:
            raise ValueError(f"replay rows disagree in count: {[len(a) for a in rows]}")
        if self._arrays is None:
            self._arrays = tuple(np.zeros((self.capacity, *a.shape[1:]), np.float32) for a in rows)
        for stored, new in zip(self._arrays, rows):
            if stored.shape[1:] != new.shape[1:]:
                raise ValueError(f"replay row shape {new.shape[1:]} differs from {stored.shape[1:]}")
        for i in range(len(rows[0])):
            for stored, new in zip(self._arrays, rows):
                stored[self._next] = new[i]
            self._next = (self._next + 1) % self.capacity
            self._size = min(self._size + 1, self.capacity)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``n`` rows drawn uniformly without replacement (all of them if fewer); None if empty."""
        if self._size == 0 or n <= 0:
            return None
        index = self._rng.choice(self._size, size=min(n, self._size), replace=False)
        return tuple(a[index] for a in self._arrays)

    def mixed(self, new: tuple[np.ndarray, ...], n: int) -> tuple[np.ndarray, ...]:
        """``new`` rows followed by ``n`` earlier rows drawn now (``new`` alone while empty)."""
        old = self.sample(n)
        if old is None:
            return tuple(new)
        return tuple(np.concatenate([a, b]) for a, b in zip(new, old))
