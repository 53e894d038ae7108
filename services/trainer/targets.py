"""Stage 2 targets: what the frozen world model says a chunk *should* look like.

For a logged chunk (first frame, skill, M actions) the target is the WM's imagined clip of M+1
frames from that frame under that skill, tapped the way Stage 1 tapped real demo clips
(latent frames 1 … M/4; frame 0 is the given observation). Same input, same seed → same target,
so re-delivered entries train on the same target.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np

from services.trainer.stage2 import StepSample


class TargetLatents(Protocol):
    def __call__(self, samples: list[StepSample]) -> np.ndarray:
        """-> float32 [B, M/4, D]."""
        ...


class WorldModelTargets:
    """``wm_generate`` over Triton, ``concurrency`` calls in flight so its dynamic batcher fills."""

    def __init__(self, client, chunk_size: int, seed: int = 0, concurrency: int = 8) -> None:
        if chunk_size % 4:
            raise ValueError(f"chunk size {chunk_size} must be a multiple of 4 (4 frames per latent)")
        self.client = client
        self.num_frames = chunk_size + 1
        self.seed = seed
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="wm-generate")

    def _one(self, sample: StepSample) -> np.ndarray:
        return self.client.generate(sample.frame, sample.skill, self.num_frames, self.seed).features[1:]

    def __call__(self, samples: list[StepSample]) -> np.ndarray:
        return np.stack(list(self.pool.map(self._one, samples))).astype(np.float32)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RealFutureTargets(WorldModelTargets):
    """Upper bound, not World2Act: the *real* future (the expert's, rendered by the simulator and
    logged in the record's oracle) through ``wm_encode`` — a perfect world model's targets."""

    def _one(self, sample: StepSample) -> np.ndarray:
        if sample.future is None:
            raise ValueError(f"{sample.entry_id}: no oracle future frames (robots need oracle='expert+future')")
        return self.client.encode(sample.future)[1:]  # latent frame 0 is the given observation


class InProcessTargets(WorldModelTargets):
    """The WorldModel called directly: unit tests only (production goes through Triton)."""

    def __init__(self, model, chunk_size: int, seed: int = 0) -> None:
        super().__init__(None, chunk_size, seed, concurrency=1)
        self.model = model

    def _one(self, sample: StepSample) -> np.ndarray:
        return self.model.generate(sample.frame, sample.skill, self.num_frames, self.seed).features[1:]


class TableTargets:
    """A fixed latent per skill (random, seeded): benchmarks that exclude WM calls, and tests."""

    def __init__(self, latent_frames: int, dim: int, seed: int = 0) -> None:
        self.shape = (latent_frames, dim)
        self.seed = seed
        self.table: dict[str, np.ndarray] = {}

    def __call__(self, samples: list[StepSample]) -> np.ndarray:
        out = []
        for s in samples:
            if s.skill not in self.table:
                rng = np.random.default_rng([self.seed, len(self.table)])
                self.table[s.skill] = rng.standard_normal(self.shape).astype(np.float32)
            out.append(self.table[s.skill])
        return np.stack(out)


class TargetError(RuntimeError):
    """The world model could not produce targets (down, slow, or wrong shape)."""


class TargetFetcher:
    """Targets of a batch, checked against the adapters' token size, with one batch fetched ahead
    on a worker thread (targets only: nothing is acked or applied early, so delivery guarantees
    are unchanged). Any failure is a ``TargetError``: the trainer keeps the batch and backs off."""

    def __init__(self, targets: TargetLatents, token_dim: int) -> None:
        self.targets, self.token_dim = targets, token_dim
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[tuple[str, ...], Future] | None = None  # (entry ids, their latents)

    def _fetch(self, samples: list[StepSample]) -> np.ndarray:
        latents = np.asarray(self.targets(samples), dtype=np.float32)
        if latents.ndim != 3 or latents.shape[0] != len(samples) or latents.shape[2] != self.token_dim:
            raise TargetError(f"world-model latents {latents.shape} do not fit the Stage 1 adapters "
                              f"([{len(samples)}, L, {self.token_dim}])")
        return latents

    def latents(self, samples: list[StepSample]) -> np.ndarray:
        """The batch's targets: the prefetched ones if they are for exactly these entries."""
        ids = tuple(s.entry_id for s in samples)
        ahead, self._ahead = self._ahead, None
        try:
            if ahead is not None and ahead[0] == ids:
                return ahead[1].result()
            return self._fetch(samples)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"world model: {type(exc).__name__}: {exc}") from exc

    def prefetch(self, samples: list[StepSample]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="stage2-prefetch")
        self._ahead = (tuple(s.entry_id for s in samples), self._pool.submit(self._fetch, samples))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._ahead = None
